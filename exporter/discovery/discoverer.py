"""One discovered check: its source refreshed, its last good targets kept, and the checks made
of them (one per target this agent's shard owns).

The checks of targets that stay are the very objects of the previous refresh: the store sees
them unchanged, so they keep their counters, history and phase; a target that is gone takes its
check along, and a new one starts. A target listed twice (two groups, two files) is one check,
the first one's. What is refused — a target its kind cannot take, a group whose labels break
the rules — is counted and logged once per distinct problem, never per refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.codecs.target_groups import TargetGroup, TargetGroupError
from exporter.config.expand import MAX_TARGET_LENGTH, group_labels, target_check
from exporter.config.model import CheckBase, CheckConfig, DiscoveredCheck
from exporter.config.problems import Problems
from exporter.discovery.files import FileTargets
from exporter.discovery.requests import ask_srv, fetch_url
from exporter.errors import CheckError
from exporter.exposition import SourceStatus
from exporter.runner import Runner

log = logging.getLogger(__name__)

FILE_POLL = 1.0  # seconds between polls of a targets_file glob, as --config.watch polls
MAX_LOGGED = 20  # distinct problems logged per refresh; the rest are counted only
# A target is the `target` label of each of its check's series: a discovered one of 1 MiB
# would put a megabyte into every one of them, at every scrape.

MadeBy = dict[tuple[str, tuple[tuple[str, str], ...]], CheckConfig]  # (target, labels) → check


@dataclass(frozen=True, slots=True)
class Made:
    """The checks made of a refresh's groups, and what was refused."""

    checks: tuple[CheckConfig, ...]
    made: MadeBy  # for the next refresh: the checks by (target, group labels)
    refused: int
    problems: list[str]  # distinct, each naming where its target came from
    others: set[str] = field(default_factory=set)  # for the next refresh: other shards' targets


def make_checks(base: CheckBase, groups: list[tuple[str, TargetGroup]],
                owns: Callable[[str], bool], before: MadeBy | None = None,
                others: set[str] | frozenset[str] = frozenset()) -> Made:
    """One check per target of `groups` ((origin, group) pairs) that `owns` says is this
    shard's: the very check of `before` where it has one of the same target and labels.

    A target of `before`, or of `others` (the previous refresh's targets of other shards), is
    not hashed again: with --shard I/10, asking `owns` of each of 100,000 targets is ten hashes
    each, a second of the loop at every refresh."""
    before = before or {}
    made: MadeBy = {}
    checks: list[CheckConfig] = []
    refused = 0
    problems_now: list[str] = []
    seen: set[str] = set()  # targets taken (or refused) in this refresh
    theirs: set[str] = set()  # this refresh's targets of other shards
    ours = {target for target, _ in before}  # this shard's, as a previous refresh found
    # Each distinct set of group labels judged once: a group of 10,000 labels over 1,000
    # targets is one judgement, not 1,000 (it took 10 s of the loop when it was per target).
    judged: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...] | list[str]] = {}
    for origin, group in groups:
        mine = []
        for target in group.targets:
            if target in seen or target in theirs:
                continue
            if target not in ours and (target in others
                                       or not owns(f"{base.name}\t{target}")):  # its key
                theirs.add(target)
                continue
            seen.add(target)
            mine.append(target)
        if not mine:
            continue
        labels = judged.get(group.labels)
        if labels is None:
            problems = Problems("", None)
            labels = (group_labels(base, dict(group.labels), problems, ())
                      if group.labels else base.labels)
            judged[group.labels] = labels if labels is not None else problems.lines
            labels = judged[group.labels]
        if isinstance(labels, list):  # the group's labels break the rules: all refused
            refused += len(mine)
            problems_now += [f"{origin}: {line}" for line in labels]
            continue
        for target in mine:
            cached = (target, group.labels)
            check = before.get(cached) or made.get(cached)
            if check is None:
                if len(target) > MAX_TARGET_LENGTH:
                    refused += 1
                    problems_now.append(f"{origin}: target: {len(target):,} characters, more "
                                        f"than the {MAX_TARGET_LENGTH:,} a target may have")
                    continue
                problems = Problems("", None)
                check = target_check(base, target, problems, (), ("target",), labels)
                if check is None:
                    refused += 1
                    problems_now += [f"{origin}: {line}" for line in problems.lines]
                    continue
            made[cached] = check
            checks.append(check)
    return Made(tuple(checks), made, refused, list(dict.fromkeys(problems_now)), theirs)


class Discoverer:
    def __init__(self, discovered: DiscoveredCheck, runner: Runner,
                 owns: Callable[[str], bool]) -> None:
        self.discovered = discovered
        self.source = discovered.source
        self._runner = runner
        self._owns = owns
        self._files = FileTargets(self.source) if self.source.type == "file" else None
        self.checks: tuple[CheckConfig, ...] = ()
        self._made: MadeBy = {}  # the checks of the last refresh
        self._others: set[str] = set()  # the last refresh's targets of other shards
        self.refused = 0
        self.ok: bool | None = None
        self.last_success: float | None = None
        self.failures = 0
        self._logged: set[str] = set()

    @property
    def status(self) -> SourceStatus:
        return SourceStatus(self.discovered.base.name, self.source.label, len(self.checks),
                            self.refused, self.ok, self.last_success, self.failures)

    def poll_files(self) -> bool:
        """Read the files that changed; whether the checks changed."""
        assert self._files is not None
        poll = self._files.poll()
        for problem in poll.problems:
            self.failures += 1
            self._warn("a targets_file does not parse; keeping its previous targets", problem)
        self.ok = not poll.failing
        if not poll.failing:
            self.last_success = time.time()
        return poll.changed and self._adopt(poll.groups)

    async def refresh(self) -> bool:
        """Ask the URL or the SRV name once; whether the checks changed."""
        try:
            if self.source.type == "http":
                groups = await fetch_url(self.source, self._runner)
            else:
                groups = await ask_srv(self.source, self._runner)
        except (CheckError, TargetGroupError) as exc:
            self.ok = False
            self.failures += 1
            reason = f"{exc.reason}: " if isinstance(exc, CheckError) else ""
            self._warn("service discovery failed; keeping the last good targets",
                       f"{reason}{exc}")
            return False
        self.ok = True
        self.last_success = time.time()
        return self._adopt([(self.source.spec, group) for group in groups])

    async def run(self, on_change: Callable[[], object]) -> None:
        """Refresh until cancelled, calling `on_change` when the checks changed."""
        every = FILE_POLL if self._files is not None else self.source.refresh
        first = self._files is None  # files were read once already, when the config loaded
        while True:
            if not first:
                await asyncio.sleep(every)
            first = False
            try:
                changed = self.poll_files() if self._files is not None else await self.refresh()
                if changed:
                    on_change()
            except Exception:  # a bug here must not end the discovery of this check
                log.exception("service discovery of check %s failed",
                              self.discovered.base.name)

    def _adopt(self, groups: list[tuple[str, TargetGroup]]) -> bool:
        made = make_checks(self.discovered.base, groups, self._owns, self._made, self._others)
        for problem in made.problems:
            self._warn("refused a discovered target", problem)
        if not made.problems:
            self._logged.clear()
        self.refused = made.refused
        self._made = made.made
        self._others = made.others
        changed = len(made.checks) != len(self.checks) or any(
            a is not b for a, b in zip(made.checks, self.checks, strict=True))
        self.checks = made.checks
        return changed

    def _warn(self, what: str, problem: str) -> None:
        """Log `problem` once (until the source is clean again), at most MAX_LOGGED of them."""
        if problem in self._logged or len(self._logged) >= MAX_LOGGED:
            return
        self._logged.add(problem)
        log.warning(what, extra={"check": self.discovered.base.name,
                                 "source": self.source.label, "problem": problem})
