"""Hostile service-discovery input: target groups (JSON and YAML, random and mutated), random
groups adopted by a discoverer (reserved and invalid label names, huge values, bad targets), and
targets_file entries that are not files of target groups at all, under a real agent.

The parser raises TargetGroupError and nothing else; a discoverer never raises and counts what it
refused, so that every target is either a check or a refusal; and a hostile file fails its own
source, with the reason in the log, while the agent and its other checks run on.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from exporter.codecs.target_groups import TargetGroup, TargetGroupError, parse
from exporter.config.labels import reserved_names
from exporter.config.load import load_text
from exporter.discovery.discoverer import Discoverer
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.shard import Shard
from tests.reliability.test_hostile import FUZZ, mutated
from tests.support.agent import Agent
from tests.support.servers import AcceptServer

# --- the parser ---------------------------------------------------------------------------------

SEED = [{"targets": ["10.0.0.1:80", "[::1]:443"], "labels": {"team": "db", "__meta_x": "y"}},
        {"targets": ["host.test:22"]}]
SEED_YAML = ("- targets: ['10.0.0.1:80', '[::1]:443']\n  labels:\n    team: db\n"
             "    __meta_x: y\n- targets: [host.test:22]\n")

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=12), st.sampled_from(("10.0.0.1:80", "", " ", "targets"))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.one_of(st.sampled_from(("targets", "labels", "team", "__meta_x")),
                  st.text(max_size=6)), inner, max_size=3),
    max_leaves=12)
YAML_TOKENS = ("- ", "targets: ", "labels: ", "[", "]", "{", "}", ", ", ": ", "\n", "  ",
               "'10.0.0.1:80'", "&a ", "*a", "!!python/object:os.system ", "!!binary ", "~",
               "? ", "|", ">", "#", "%YAML 1.1\n", "---\n", "...\n", "9" * 5000, "\t")


def _parse(text: str, form: str) -> None:
    with contextlib.suppress(TargetGroupError):
        groups = parse(text, form)
        assert all(isinstance(g, TargetGroup) and all(isinstance(t, str) for t in g.targets)
                   for g in groups)


def test_the_seeds_parse() -> None:
    assert parse(json.dumps(SEED), "json") == parse(SEED_YAML, "yaml")


@FUZZ
@given(st.one_of(json_values.map(json.dumps),
                 mutated(json.dumps(SEED).encode()).map(lambda b: b.decode("utf-8", "replace")),
                 st.text(max_size=200)))
def test_target_groups_from_hostile_json(text: str) -> None:
    _parse(text, "json")


@FUZZ
@given(st.one_of(st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=6)),
                          max_size=30).map("".join),
                 mutated(SEED_YAML.encode()).map(lambda b: b.decode("utf-8", "replace"))))
def test_target_groups_from_hostile_yaml(text: str) -> None:
    _parse(text, "yaml")


# --- a discoverer adopting random groups ----------------------------------------------------

TEXT = ('[[checks]]\nname = "fleet"\nkind = "tcp"\ntargets_file = "sd/*.json"\n'
        'labels = { team = "net" }\nmax_labels = 4\n')
BIG = "v" * (1 << 20)
names = st.one_of(st.sampled_from(("team", "zone", "rack", "check", "kind", "target", "job",
                                   "instance", "le", "reason", "phase", "__meta_x",
                                   "__address__", "1abc", "a-b", "", "é", "a" * 300)),
                  st.text(max_size=8))
values = st.one_of(st.text(max_size=12), st.sampled_from(("", "x" * 257, "a\nb", BIG)))
targets = st.one_of(st.sampled_from(("127.0.0.1:80", "[::1]:443", "host.test:22", "no-port",
                                     "host:99999", ":80", "a b:1", "127.0.0.1:domain",
                                     "[::1", "x" * 300 + ":1")),
                    st.text(max_size=16))
groups = st.lists(st.tuples(
    st.sampled_from(("a.json", "b.yml")),
    st.builds(TargetGroup, st.lists(targets, max_size=6).map(tuple),
              st.dictionaries(names, values, max_size=6).map(lambda d: tuple(d.items())))),
    max_size=6)
[DISCOVERED] = load_text(TEXT, "t.toml").discovered
RUNNER = Runner(Resolver(BlockingPool(1)))
RESERVED = reserved_names()


@FUZZ
@given(groups, st.sampled_from((Shard(0, 1), Shard(0, 3), Shard(2, 3))))
def test_a_discoverer_adopts_any_groups_without_raising(found: list[tuple[str, TargetGroup]],
                                                        shard: Shard) -> None:
    d = Discoverer(DISCOVERED, RUNNER, shard.owns)
    d._adopt(found)
    owned = {t for _, g in found for t in g.targets if shard.owns(f"fleet\t{t}")}
    assert len(d.checks) + d.refused == len(owned)  # each target a check or a refusal
    assert len({c.key for c in d.checks}) == len(d.checks)
    for check in d.checks:
        names_ = [name for name, _ in check.labels]
        assert len(names_) <= 4 and ("team", "net") in check.labels
        assert not any(n.startswith("__") or n in RESERVED for n in names_)
        assert all(len(v) <= 256 for _, v in check.labels)
    assert len(d._logged) <= 20
    first = d.checks
    assert not d._adopt(found)  # the same groups again: nothing changes
    assert all(a is b for a, b in zip(first, d.checks, strict=True))


# --- targets_file entries that are not target groups, under a real agent ------------------------

HOSTILE: dict[str, Any] = {  # file name -> how to make it, and the reason the log must give
    "fifo.json": (lambda p: os.mkfifo(p), "not a regular file"),
    "dir.json": (lambda p: p.mkdir(), "cannot read it: Is a directory"),
    "loop.json": (lambda p: p.symlink_to(p.name), "Too many levels of symbolic links"),
    "sparse.json": (lambda p: p.open("wb").truncate(100 << 20),
                    "larger than 67,108,864 bytes"),
    "binary.json": (lambda p: p.write_bytes(b"\x00\xff\xfe\x80 garbage \x1b[31m" * 100),
                    "not UTF-8"),
    "deep.json": (lambda p: p.write_text("[" * 100_000), "nested too deeply"),
    "deep.yml": (lambda p: p.write_text("- " * 50_000 + "x"), "nested too deeply"),
    "garbage.json": (lambda p: p.write_bytes(b"x" * (10 << 20)), "not JSON: Expecting value"),
}


def check(name: str, source: str) -> str:
    return f'\n[[checks]]\nname = "{name}"\nkind = "tcp"\n{source}\n'


def test_hostile_targets_files_fail_their_source_only(tmp_path: Path) -> None:
    for name, (make, _) in HOSTILE.items():
        make(tmp_path / name)
    with AcceptServer() as up:
        (tmp_path / "good.json").write_text(json.dumps([{"targets": [up.target]}]))
        (tmp_path / "turns.json").write_text(json.dumps([{"targets": [up.target]}]))
        path = tmp_path / "c.toml"
        path.write_text('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'
                        + check("static", f'target = "{up.target}"')
                        + check("good", 'targets_file = "good.json"')
                        + check("turns", 'targets_file = "turns.json"')
                        + "".join(check(f"h{i}", f'targets_file = "{name}"')
                                  for i, name in enumerate(HOSTILE)))
        with Agent(path) as agent:
            def runs(name: str) -> float:
                return sum(v for (metric, labels), v in agent.metrics().items()
                           if metric == "netsentry_check_runs_total"
                           and ("check", name) in labels)

            def ok(name: str, spec: str) -> float | None:
                return agent.value("netsentry_discovery_last_refresh_successful", check=name,
                                   source=f"file:{spec}")

            agent.wait_for(lambda: runs("static") >= 2 and runs("good") >= 2
                           and runs("turns") >= 2, what="the healthy checks to run")
            # A good file that turns into 10 MiB of garbage keeps its target, which runs on.
            (tmp_path / "turns.json").write_bytes(b"\x01" * (10 << 20))
            agent.wait_for(lambda: ok("turns", "turns.json") == 0, what="the garbage")
            before = {n: runs(n) for n in ("static", "good", "turns")}
            agent.wait_for(lambda: all(runs(n) >= before[n] + 2 for n in before),
                           what="every healthy check to run on")
            assert agent.value("netsentry_check_success", check="static", kind="tcp") == 1
            assert agent.value("netsentry_check_success", check="turns", kind="tcp",
                               target=up.target) == 1
            assert ok("good", "good.json") == 1
            for i, (name, (_, reason)) in enumerate(HOSTILE.items()):
                assert ok(f"h{i}", name) == 0, name
                assert agent.value("netsentry_discovery_targets", check=f"h{i}",
                                   source=f"file:{name}") == 0
                assert sum(f"{tmp_path / name}: " in line and reason in line
                           for line in agent.lines) == 1, (name, reason)
            assert agent.value("netsentry_scheduler_missed_runs_total", check="static",
                               kind="tcp") == 0
            assert agent.proc.poll() is None
            assert not [line for line in agent.lines if "Traceback" in line or "level=error"
                        in line]


def test_megabyte_targets_and_label_names_are_refused_in_a_few_words() -> None:
    # A discovered target is the `target` label of every series of its check, and a problem
    # is logged: neither may carry a megabyte an http_sd server sent.
    huge = "x" * (1 << 20)
    d = Discoverer(DISCOVERED, RUNNER, lambda key: True)
    d._adopt([("a.json", TargetGroup((f"{huge}:80", "127.0.0.1:80"))),
              ("b.json", TargetGroup(("127.0.0.2:80",), ((f"{huge}-", "v"),)))])
    assert [c.target for c in d.checks] == ["127.0.0.1:80"]
    assert d.refused == 2
    assert sorted(d._logged) == [
        "a.json: target: 1,048,579 characters, more than the 2,048 a target may have",
        "b.json: labels." + "x" * 60 + "...: is not a Prometheus label name "
        "([a-zA-Z_][a-zA-Z0-9_]*)"]
