"""`--shard I/N`: rendezvous hashing of check names over agents, and agents running their share."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from exporter import shard
from exporter.config.load import load_text
from exporter.shard import Shard
from tests.support.agent import ROOT, Agent, tcp_checks
from tests.support.servers import AcceptServer

NAMES = [f"check-{i}" for i in range(10_000)]
SIGMAS = 6  # tolerances: six standard deviations of the binomial count


def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize(("text", "expected"), [
    ("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), ("0/3", Shard(0, 3)), ("99/100", Shard(99, 100)),
])
def test_parse(text: str, expected: Shard) -> None:
    assert shard.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(("text", "message"), [
    ("3/3", "'3/3': want 0 <= I < N, e.g. 0/3, 1/3 and 2/3 for three agents"),
    ("0/0", "'0/0': want 0 <= I < N, e.g. 0/3, 1/3 and 2/3 for three agents"),
    ("1", "'1' is not I/N (this agent's shard I of N, from 0), e.g. 0/3"),
    ("-1/3", "'-1/3' is not I/N (this agent's shard I of N, from 0), e.g. 0/3"),
    ("a/b", "'a/b' is not I/N (this agent's shard I of N, from 0), e.g. 0/3"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        shard.parse(text)
    assert str(caught.value) == message


def test_every_check_has_exactly_one_shard_and_the_split_is_even() -> None:
    for count in (1, 3, 4):
        owners: Counter[int] = Counter()
        for name in NAMES:
            mine = [i for i in range(count) if Shard(i, count).owns(name)]
            assert len(mine) == 1, (name, mine)
            owners[mine[0]] += 1
        assert sum(owners.values()) == len(NAMES)
        for index in range(count):
            assert within_binomial(owners[index], len(NAMES), 1 / count), owners


def test_from_3_to_4_shards_a_quarter_moves_all_to_the_new_one() -> None:
    before = {name: shard.assign(name, 3) for name in NAMES}
    after = {name: shard.assign(name, 4) for name in NAMES}
    moved = [name for name in NAMES if before[name] != after[name]]
    assert within_binomial(len(moved), len(NAMES), 1 / 4), len(moved)
    assert {after[name] for name in moved} == {3}  # none between the old shards
    assert set(after) == set(NAMES)  # none dropped


def test_the_split_is_the_same_in_every_process() -> None:
    # Not Python's salted hash(): another interpreter with another hash seed agrees.
    names = NAMES[:200]
    script = ("import sys; from exporter.shard import assign; "
              "print(' '.join(str(assign(n, 5)) for n in sys.argv[1:]))")
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.stdout.split() == [str(shard.assign(n, 5)) for n in names]


def test_agents_run_only_their_share(tmp_path: Path) -> None:
    names = [f"svc-{i}" for i in range(30)]
    path = tmp_path / "netsentry.toml"
    with AcceptServer() as server:
        path.write_text(tcp_checks(names, server.target))
        seen: list[set[str]] = []
        for index in range(3):
            with Agent(path, "--shard", f"{index}/3") as agent:
                mine = {n for n in names if shard.assign(n, 3) == index}
                assert agent.checks() == mine
                assert agent.value("netsentry_shard_checks", shard=str(index),
                                   shards="3") == len(mine)
                agent.wait_for(lambda a=agent, m=mine: all(
                    (a.value("netsentry_check_runs_total", check=n, kind="tcp") or 0) >= 1
                    for n in m), what="every check of the shard to run")
                seen.append(agent.checks())
        assert set().union(*seen) == set(names)
        assert sum(map(len, seen)) == len(names)  # disjoint


def test_an_agent_without_shard_runs_everything(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text(tcp_checks(["a", "b", "c"], "127.0.0.1:1"))
    with Agent(path) as agent:
        assert agent.checks() == {"a", "b", "c"}
        assert agent.value("netsentry_shard_checks", shard="0", shards="1") == 3


def test_bad_shard_flag() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "--shard", "3/3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ("netsentry: --shard: '3/3': want 0 <= I < N, e.g. 0/3, 1/3 and 2/3 "
                           "for three agents\n")


def test_the_kubernetes_example() -> None:
    path = ROOT / "deploy" / "kubernetes" / "statefulset-sharded.yaml"
    documents = {d["kind"]: d for d in yaml.safe_load_all(path.read_text())}
    statefulset = documents["StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    (flag,) = [a for a in container["args"] if a.startswith("--shard=")]
    match = re.fullmatch(r"--shard=\$\((\w+)\)/(\d+)", flag)
    assert match, flag
    assert int(match[2]) == statefulset["spec"]["replicas"]  # N agrees with the replicas
    (env,) = [e for e in container["env"] if e["name"] == match[1]]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']")
    loaded_config = load_text(documents["ConfigMap"]["data"]["netsentry.toml"], "cm")
    assert len(loaded_config.checks) == 3
