"""A targets_file glob's files, read again when they change; and the checks a discoverer makes
of the groups it found (in-process: the agent's part is in test_agent.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from exporter.codecs.target_groups import TargetGroup
from exporter.config.load import load_text
from exporter.config.model import TargetSource
from exporter.discovery import files
from exporter.discovery.discoverer import Discoverer
from exporter.discovery.files import FileTargets
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner


def write(path: Path, groups: object) -> None:
    """Write and make the change visible to the fingerprint (size or mtime must differ)."""
    path.write_text(json.dumps(groups))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def source(tmp_path: Path, pattern: str = "sd/*.json") -> FileTargets:
    return FileTargets(TargetSource("file", pattern, base_dir=str(tmp_path)))


def test_changed_files_are_read_and_bad_ones_keep_their_targets(tmp_path: Path) -> None:
    (tmp_path / "sd").mkdir()
    write(tmp_path / "sd" / "b.json", [{"targets": ["b:1"]}])
    (tmp_path / "sd" / "a.yml").write_text("- targets: [a:1]\n")  # not matched by *.json
    watched = source(tmp_path)
    first = watched.poll()
    assert first.changed and first.groups == [(str(tmp_path / "sd" / "b.json"),
                                              TargetGroup(("b:1",)))]
    assert not watched.poll().changed  # nothing new: nothing read
    write(tmp_path / "sd" / "a.json", [{"targets": ["a:1"], "labels": {"team": "x"}}])
    second = watched.poll()
    assert second.changed and [g.targets for _, g in second.groups] == [("a:1",), ("b:1",)]
    # A file that breaks keeps what it had, says so once, and is listed as failing.
    (tmp_path / "sd" / "b.json").write_text('[{"targets": ["b:1", "b:2"]')
    broken = watched.poll()
    assert [g.targets for _, g in broken.groups] == [("a:1",), ("b:1",)]
    assert len(broken.problems) == 1 and "b.json: not JSON" in broken.problems[0]
    assert broken.failing == [str(tmp_path / "sd" / "b.json")]
    again = watched.poll()
    assert not again.changed and not again.problems and again.failing == broken.failing
    # A removed file takes its targets along.
    (tmp_path / "sd" / "a.json").unlink()
    gone = watched.poll()
    assert gone.changed and [g.targets for _, g in gone.groups] == [("b:1",)]


def test_a_fifo_or_an_oversized_file_is_refused_at_once(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(tmp_path / "pipe.json")  # opening it for reading would wait for a writer
    (tmp_path / "big.json").write_text(json.dumps([{"targets": ["x:1"] * 100}]))
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 200)
    poll = source(tmp_path, "*.json").poll()
    assert poll.groups == []
    assert sorted(p.split(": ", 1)[1] for p in poll.problems) == [
        "larger than 200 bytes, the most a targets file may have",
        "not a regular file"]


TEXT = """
[[checks]]
name = "fleet"
kind = "tcp"
targets_file = "sd/*.json"
labels = { team = "net" }
max_labels = 2
"""


def discoverer(owns: object = lambda key: True) -> Discoverer:
    [discovered] = load_text(TEXT, "t.toml").discovered
    return Discoverer(discovered, Runner(Resolver(BlockingPool(1))), owns)  # type: ignore[arg-type]


def test_unchanged_targets_keep_their_very_check_and_bad_ones_are_refused() -> None:
    d = discoverer()
    groups = [("a.json", TargetGroup(("10.0.0.1:80", "10.0.0.2:80"),
                                     (("zone", "a"), ("__meta_x", "dropped"))))]
    assert d._adopt(groups)
    first = d.checks
    assert [(c.target, c.labels, c.key) for c in first] == [
        ("10.0.0.1:80", (("zone", "a"), ("team", "net")), "fleet\t10.0.0.1:80"),
        ("10.0.0.2:80", (("zone", "a"), ("team", "net")), "fleet\t10.0.0.2:80")]
    more = [*groups,
            ("b.json", TargetGroup(("10.0.0.1:80", "10.0.0.3:80", "no-port"))),  # one repeated
            ("c.json", TargetGroup(("10.0.0.4:80",), (("job", "x"),))),  # a reserved label
            ("d.json", TargetGroup(("10.0.0.5:80",), (("team", "db"), ("a", "1"), ("b", "2"))))]
    assert d._adopt(more)
    assert [c.target for c in d.checks] == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    assert d.checks[0] is first[0] and d.checks[1] is first[1]  # kept, state and all
    assert d.refused == 3  # no-port, the reserved label's group, the group over max_labels
    assert not d._adopt(more)  # the same groups again: no change
    assert d.status.targets == 3 and d.status.refused == 3


def test_a_shard_makes_checks_of_its_own_targets_only() -> None:
    d = discoverer(owns=lambda key: key.endswith(("1:80", "3:80")))
    d._adopt([("a.json", TargetGroup(("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")))])
    assert [c.target for c in d.checks] == ["10.0.0.1:80", "10.0.0.3:80"]
