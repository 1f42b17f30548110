"""Discovery at fleet scale, in-process: what a refresh of many targets costs is bounded by what
it found (a group's labels judged once, not once per target), and N shards → N + 1 over
discovered (check, target) keys moves about 1/(N + 1) of them, all to the new shard."""

from __future__ import annotations

import math
from typing import Any

import pytest

from exporter import shard
from exporter.codecs.target_groups import TargetGroup
from exporter.config import expand
from exporter.config.load import load_text
from exporter.discovery.discoverer import Discoverer
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.shard import Shard

TEXT = '[[checks]]\nname = "fleet"\nkind = "tcp"\ntargets_file = "sd/*.json"\n'
SIGMAS = 6  # tolerances: six standard deviations of the binomial count


def discoverer(owns: Any = lambda key: True) -> Discoverer:
    [discovered] = load_text(TEXT, "t.toml").discovered
    return Discoverer(discovered, Runner(Resolver(BlockingPool(1))), owns)


def addresses(n: int, port: int = 80) -> tuple[str, ...]:
    return tuple(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:{port}" for i in range(n))


def test_a_groups_labels_are_judged_once_not_once_per_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counted(labels: Any, max_labels: int) -> list[tuple[str, str]]:
        calls.append(len(labels))
        return real(labels, max_labels)

    real = expand.label_problems
    monkeypatch.setattr(expand, "label_problems", counted)
    d = discoverer()
    many = tuple((f"l{i}", "v") for i in range(10_000))  # over max_labels: refused
    bad = tuple((f"{i}bad", "v") for i in range(10_000))  # 10,000 invalid names
    good = (("zone", "a"),)
    groups = [("a.json", TargetGroup(addresses(1000), many)),
              ("b.json", TargetGroup(addresses(100, 81), bad)),
              ("c.json", TargetGroup(addresses(500, 82), good)),
              ("d.json", TargetGroup(addresses(500, 83), good))]  # the same labels as c's
    assert d._adopt(groups)
    assert sorted(calls) == [1, 10_000, 10_000]  # once per distinct labels, not 2,100 times
    assert d.refused == 1100 and len(d.checks) == 1000
    assert {c.labels for c in d.checks} == {good}
    assert len(d._logged) <= 20  # the problems of the 10,000 bad names: logged at most 20


def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("count", [1, 3, 9])
def test_one_more_shard_takes_a_share_of_the_discovered_targets_from_each(count: int) -> None:
    targets = addresses(20_000)
    keys = [f"fleet\t{t}" for t in targets]
    before = {k: shard.assign(k, count) for k in keys}
    after = {k: shard.assign(k, count + 1) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert within_binomial(len(moved), len(keys), 1 / (count + 1)), len(moved)
    assert {after[k] for k in moved} == {count}  # all to the new shard, none between old ones
    # Through the discoverers themselves: each shard's checks are its keys, and together the
    # N + 1 shards make every target's check exactly once.
    groups = [("all.json", TargetGroup(targets))]
    made: dict[int, set[str]] = {}
    for index in range(count + 1):
        d = discoverer(Shard(index, count + 1).owns)
        d._adopt(groups)
        made[index] = {c.key for c in d.checks}
        assert made[index] == {k for k in keys if after[k] == index}
    assert sum(map(len, made.values())) == len(keys)


def test_a_refresh_hashes_only_the_targets_it_has_not_seen() -> None:
    # With --shard I/N, owns() is N hashes; a refresh of 100,000 unchanged targets must not
    # ask it 100,000 times again (a second of the loop at --shard I/10).
    three = Shard(1, 3)
    asked: list[str] = []

    def owns(key: str) -> bool:
        asked.append(key)
        return three.owns(key)

    d = discoverer(owns)
    targets = addresses(3000)
    d._adopt([("a.json", TargetGroup(targets))])
    assert len(asked) == 3000
    first = {c.key for c in d.checks}
    assert first == {f"fleet\t{t}" for t in targets if three.owns(f"fleet\t{t}")}
    asked.clear()
    new = "10.99.0.1:80"
    assert d._adopt([("a.json", TargetGroup((*targets[1:], new)))]) == (
        three.owns(f"fleet\t{targets[0]}") or three.owns(f"fleet\t{new}"))
    assert asked == [f"fleet\t{new}"]  # the one target not seen before
    assert {c.key for c in d.checks} == {
        f"fleet\t{t}" for t in (*targets[1:], new) if three.owns(f"fleet\t{t}")}
