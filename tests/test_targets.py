"""One check, many targets (`targets = [...]`): one check per target, each with its own
series (told apart by a `target` label), schedule phase, state and shard."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import shard
from exporter.config.load import load_text
from exporter.config.targets import HostPort
from exporter.errors import ConfigError, Reason
from exporter.exposition import render
from exporter.scheduler import phase
from exporter.store import Result, Store
from tests.support.agent import Agent
from tests.support.servers import AcceptServer, closed_port
from tests.test_exposition import agent as agent_snapshot

FLEET = """
[[checks]]
name = "fleet"
kind = "tcp"
targets = [
  "127.0.0.1:1001",
  "127.0.0.1:1002",  # a comment
  "127.0.0.1:1003",
]
timeout = "2s"
labels = { team = "net" }

[[checks]]
name = "single"
kind = "tcp"
target = "127.0.0.1:1004"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.toml")
    return info.value.problems


def test_one_check_per_target_with_the_lists_keys() -> None:
    config = load_text(FLEET, "f.toml")
    fleet = [c for c in config.checks if c.name == "fleet"]
    assert [c.target for c in fleet] == ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]
    assert [c.settings.target for c in fleet] == [HostPort("127.0.0.1", 1001 + i)
                                                  for i in range(3)]
    assert {(c.timeout, c.labels, c.per_target) for c in fleet} == {
        (2.0, (("team", "net"),), True)}
    assert len({c.key for c in config.checks}) == 4  # one key per (name, target)
    single = config.check("single")
    assert single is not None and not single.per_target and single.key == "single"
    assert config.check("fleet", "127.0.0.1:1002") is fleet[1]
    assert config.targets("fleet") == tuple(c.target for c in fleet)
    assert config.targets("single") == ()
    # Each target has its own place in the interval, as its own check would.
    assert len({phase(c.key, 30.0) for c in fleet}) == 3


CHECK = '[[checks]]\nname = "fleet"\nkind = "tcp"\n'


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(
        CHECK + 'targets = [\n  "127.0.0.1:1",\n  "127.0.0.1:99999",\n  3,\n  "127.0.0.1:1",\n]\n',
        ['f.toml:7: checks[0] "fleet".targets[2]: expected a target string, got a number (3)',
         'f.toml:8: checks[0] "fleet".targets[3]: \'127.0.0.1:1\' is listed already, as '
         "targets[0]",
         'f.toml:6: checks[0] "fleet".targets[1]: port 99999 is out of range 1-65535'],
        id="each-target-at-its-line"),
    pytest.param(
        CHECK + 'targets = ["127.0.0.1:1", "127.0.0.1"]\nfamily = "ipv5"\n',
        ['f.toml:5: checks[0] "fleet".family: must be one of \'any\', \'ipv4\', \'ipv6\', '
         "got 'ipv5'",
         "f.toml:4: checks[0] \"fleet\".targets[1]: invalid target '127.0.0.1': expected "
         "host:port"],
        id="a-bad-key-told-once-and-the-targets-still-checked"),
    pytest.param(
        CHECK + 'targets = ["127.0.0.1:1", "127.0.0.1:2"]\ntls = true\n'
        'dialog = [{ starttls = true }]\n',
        ['f.toml:6: checks[0] "fleet".dialog: starttls with tls = true: the connection is TLS '
         "already"],
        id="a-problem-of-every-target-told-once"),
    pytest.param(
        CHECK + 'target = "127.0.0.1:1"\ntargets = ["127.0.0.1:2"]\n',
        ['f.toml:5: checks[0] "fleet".targets: give one of target, targets, targets_file, '
         "targets_url, targets_srv; this table has target and targets"],
        id="target-and-targets"),
    pytest.param(
        CHECK + f'targets = ["127.0.0.1:1", "{"a" * 2049}:1"]\n',
        ['f.toml:4: checks[0] "fleet".targets[1]: 2,051 characters, more than the 2,048 a '
         "target may have"],
        id="a-target-too-long"),
    pytest.param(
        CHECK + "targets = []\n",
        ['f.toml:4: checks[0] "fleet".targets: expected an array of targets, like targets = '
         '["10.0.0.1", "10.0.0.2"], got []'],
        id="empty-list"),
    pytest.param(
        CHECK + 'targets = "127.0.0.1:1"\n',
        ['f.toml:4: checks[0] "fleet".targets: expected an array of targets, like targets = '
         "[\"10.0.0.1\", \"10.0.0.2\"], got a string ('127.0.0.1:1')"],
        id="not-a-list"),
    pytest.param(
        '[[checks]]\nname = "c"\nkind = "clock"\ntargets = ["a"]\n',
        ['f.toml:4: checks[0] "c".targets: a clock check takes no target: it checks this host; '
         "remove the key"],
        id="a-kind-without-targets"),
])
def test_problems(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_every_series_of_a_target_carries_its_target() -> None:
    store = Store()
    checks = load_text(FLEET, "f.toml").checks
    store.load(checks)
    first = checks[0]
    store.record(first.key, first, Result(False, Reason.REFUSED, "refused", 0.001, 1.0))
    text = render(store.snapshot(), agent_snapshot(missed={first.key: 3}))
    got = {(s.name, frozenset(s.labels.items())): s.value
           for family in text_string_to_metric_families(text) for s in family.samples}
    fleet = [labels for _, labels in got if ("check", "fleet") in labels]
    assert fleet and all(("team", "net") in labels for labels in fleet)
    targets = Counter(dict(labels).get("target") for labels in fleet)
    assert set(targets) == {"127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"}
    # The same series for each target, and those of the run for the target that ran.
    assert targets["127.0.0.1:1002"] == targets["127.0.0.1:1003"] < targets["127.0.0.1:1001"]
    labels = frozenset({("check", "fleet"), ("kind", "tcp"), ("target", "127.0.0.1:1001"),
                        ("team", "net")})
    assert got[("netsentry_check_failures_total", labels | {("reason", "refused")})] == 1
    assert got[("netsentry_check_runs_total", labels)] == 1
    assert got[("netsentry_scheduler_missed_runs_total", labels)] == 3
    assert got[("netsentry_check_info", labels)] == 1  # its target once, as everywhere
    # A single-target check keeps its series as they were: target on the info metric only.
    single = frozenset({("check", "single"), ("kind", "tcp")})
    assert got[("netsentry_check_runs_total", single)] == 0
    assert got[("netsentry_check_info", single | {("target", "127.0.0.1:1004")})] == 1


def test_shards_split_the_targets_of_one_check() -> None:
    targets = ", ".join(f'"10.0.{i // 250}.{i % 250 + 1}:80"' for i in range(2000))
    checks = load_text(f'{CHECK}targets = [{targets}]\n', "f.toml").checks
    owners = Counter(shard.assign(c.key, 4) for c in checks)
    assert set(owners) == {0, 1, 2, 3}
    assert all(400 <= n <= 600 for n in owners.values()), owners  # 500 each, ±9 σ


def test_the_agent_runs_each_target_and_a_reload_keeps_the_unchanged_ones(
        tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    closed = closed_port()
    with AcceptServer() as up, AcceptServer() as other:
        def config(*targets: str) -> str:
            listed = ", ".join(f'"{t}"' for t in targets)
            return ('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n\n[[checks]]\n'
                    f'name = "fleet"\nkind = "tcp"\ntargets = [{listed}]\n')

        def value(name: str, target: str) -> float | None:
            return agent.value(name, check="fleet", kind="tcp", target=target)

        def runs(target: str) -> float:
            return value("netsentry_check_runs_total", target) or 0

        dead = f"127.0.0.1:{closed}"
        path.write_text(config(up.target, dead))
        with Agent(path) as agent:
            agent.wait_for(lambda: runs(up.target) >= 2 and runs(dead) >= 1,
                           what="both targets to run")
            assert value("netsentry_check_success", up.target) == 1
            assert value("netsentry_check_success", dead) == 0
            assert up.accepted >= 2 and other.accepted == 0
            before = runs(up.target)
            path.write_text(config(up.target, other.target))
            agent.signal(signal.SIGHUP)
            agent.wait_for(lambda: runs(other.target) >= 1, what="the added target to run")
            assert not any(dict(labels).get("target") == dead for _, labels in agent.metrics())
            assert runs(up.target) >= before  # unchanged: its counters go on
            assert other.accepted >= 1
            assert any("added=1" in line and "removed=1" in line for line in agent.lines)
