"""The files of a `targets_file` glob (Prometheus' file_sd), read again when they change.

Each poll globs the pattern and takes every file's fingerprint (`watch.fingerprint`, as
`--config.watch` does): only a new or changed file is read. A file that does not parse keeps
the targets it had (none, if it never parsed), and its problem is told once, when it changes;
a file that is gone takes its targets along. A file is read with a cap (`MAX_FILE_BYTES`): a
FIFO or a runaway log named by mistake cannot hang or flood the agent.
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass, field

from exporter.codecs.target_groups import TargetGroup, TargetGroupError, parse
from exporter.config.model import TargetSource
from exporter.watch import Fingerprint, fingerprint

MAX_FILE_BYTES = 64 << 20
MAX_FILES = 10_000  # a glob that matches more is refused: it is a mistake


@dataclass
class _File:
    seen: Fingerprint
    groups: list[TargetGroup]
    problem: str = ""  # why the file's latest version was not taken ("" if it was)


@dataclass
class Poll:
    """What one poll found: the groups of every file, and the problems of this poll."""

    changed: bool
    groups: list[tuple[str, TargetGroup]]  # (file, group), files in sorted order
    problems: list[str] = field(default_factory=list)  # new this poll: to log, once each
    failing: list[str] = field(default_factory=list)  # every file whose last version is bad


class FileTargets:
    def __init__(self, source: TargetSource) -> None:
        pattern = source.spec
        self.pattern = pattern if os.path.isabs(pattern) else os.path.join(source.base_dir,
                                                                           pattern)
        self._files: dict[str, _File] = {}

    def poll(self) -> Poll:
        paths = sorted(glob.glob(self.pattern))
        problems: list[str] = []
        if len(paths) > MAX_FILES:
            problems.append(f"{self.pattern} matches {len(paths)} files, more than "
                            f"{MAX_FILES}; only the first {MAX_FILES} are read")
            paths = paths[:MAX_FILES]
        changed = set(self._files) != set(paths)
        files = {}
        for path in paths:
            now = fingerprint(path)
            old = self._files.get(path)
            if old is not None and (now is None or now == old.seen):
                files[path] = old  # unchanged, or gone for a moment (an editor's rename)
                continue
            changed = True
            groups, problem = _read(path)
            if problem:
                problems.append(f"{path}: {problem}")
                files[path] = _File(now or (0, 0, 0, 0), old.groups if old else [], problem)
            else:
                files[path] = _File(now or (0, 0, 0, 0), groups)
        self._files = files
        return Poll(changed, [(path, group) for path, file in files.items()
                              for group in file.groups], problems,
                    [path for path, file in files.items() if file.problem])


def _read(path: str) -> tuple[list[TargetGroup], str]:
    """The groups of the file at `path`, or a problem."""
    form = "json" if path.endswith(".json") else "yaml"
    try:
        # Non-blocking: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return [], "not a regular file"
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return [], f"cannot read it: {exc.strerror or exc}"
    if len(data) > MAX_FILE_BYTES:
        return [], f"larger than {MAX_FILE_BYTES:,} bytes, the most a targets file may have"
    try:
        return parse(data.decode("utf-8"), form), ""
    except UnicodeDecodeError as exc:
        return [], f"not UTF-8: {exc.reason}"
    except TargetGroupError as exc:
        return [], str(exc)
