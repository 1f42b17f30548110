"""What the status page (`pages.py`) and `/api/v1/checks` show, and the JSON of it.

Both are views of one snapshot (`Overview`): each check's state and a copy of its last hour
and day (`history.py`: latency, and availability — successful runs / runs), taken on the
event loop in one go (about 20 ms for 10,000 checks) and rendered in parts between runs, so
that a page never shows half a run and never holds runs up long. The filter (`Filter`) is
the reader's: `?q=` words that must all appear in the check's name, group, kind, target,
state, reason or message, and `?failing=1` for failing checks only. The page marks what the
filter hides, so that it works without its script too; the JSON leaves it out.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.history import (
    DAY_POINTS,
    DAY_STEP,
    POINTS,
    STEP,
    Availability,
    LatencyHistory,
    Window,
)
from exporter.store import CheckState, Store

UP, DOWN, PENDING = "up", "down", "pending"

_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class CheckView:
    state: CheckState
    history: LatencyHistory  # a copy, taken with the state
    now: float

    @property
    def hour(self) -> Window:
        return self.history.window(self.now)

    @property
    def last_hour(self) -> Availability:
        return self.history.hour(self.now)

    @property
    def last_day(self) -> Availability:
        return self.history.last_day(self.now)

    @property
    def status(self) -> str:
        last = self.state.last
        if last is None:
            return PENDING
        return UP if last.success else DOWN

    @property
    def search_text(self) -> str:
        """What the filter searches, lower-cased; the page's script searches the same text."""
        check, last = self.state.check, self.state.last
        reason = last.reason.value if last is not None and last.reason is not None else ""
        message = last.message if last is not None else ""
        labels = (f"{name}={value}" for name, value in check.labels)
        return " ".join((check.name, check.section, check.kind, check.target, *labels,
                         self.status, reason, message)).lower()


@dataclass(frozen=True, slots=True)
class Overview:
    version: str
    config_source: str
    reload_ok: bool
    now: float  # Unix time of the snapshot
    checks: tuple[CheckView, ...]  # in config order
    counts: Mapping[str, int]  # checks by status

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)


def overview(store: Store, now: float, version: str, config_source: str,
             reload_ok: bool) -> Overview:
    """A consistent snapshot; take it on the event loop, render it anywhere."""
    histories = store.histories
    views = tuple(CheckView(state, histories[state.check.key].copy(), now)
                  for state in store.snapshot())
    return Overview(version, config_source, reload_ok, now, views,
                    Counter(view.status for view in views))


@dataclass(frozen=True, slots=True)
class Filter:
    text: str = ""  # as typed
    failing_only: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filter:
        return cls(query.get("q", "").strip(), query.get("failing", "") not in ("", "0", "false"))

    def matches(self, view: CheckView) -> bool:
        return self.accepts(view.status, view.search_text)

    def accepts(self, status: str, search_text: str) -> bool:
        if self.failing_only and status != DOWN:
            return False
        return all(word in search_text for word in self.text.lower().split())


def checks_json(overview: Overview, only: Filter) -> str:
    """The document of `/api/v1/checks` (its shape is in the README's "Status page")."""
    return "".join(checks_json_parts(overview, only))


def checks_json_parts(overview: Overview, only: Filter, checks_per_part: int = 100,
                      ) -> Iterator[str]:
    """The same document in parts of at most `checks_per_part` checks."""
    head = _encode({
        "version": overview.version,
        "generated_at": overview.now,
        "config": {"source": overview.config_source,
                   "last_reload_successful": overview.reload_ok},
        "summary": {"checks": len(overview.checks), UP: overview.count(UP),
                    DOWN: overview.count(DOWN), PENDING: overview.count(PENDING)},
        "history": {"step_seconds": STEP, "points": POINTS, "day_step_seconds": DAY_STEP,
                    "day_points": DAY_POINTS},
        "checks": [],
    })
    yield head[:-2]  # the document up to its list of checks: ...,"checks":[
    views = overview.checks
    separator = ""
    for first in range(0, len(views), checks_per_part):
        chosen = [_check(view) for view in views[first:first + checks_per_part]
                  if only.matches(view)]
        if chosen:
            yield separator + _encode(chosen)[1:-1]  # the list's items, without its brackets
            separator = ","
        else:
            yield ""  # still a turn of the event loop
    yield "]}"


def _check(view: CheckView) -> dict[str, Any]:
    state, hour = view.state, view.hour
    check, last = state.check, state.last
    return {
        "name": check.name,
        "group": check.section,
        "kind": check.kind,
        "target": check.target,
        "labels": dict(check.labels),
        "interval_seconds": check.interval,
        "timeout_seconds": check.timeout,
        "state": view.status,
        "runs": state.runs,
        "failures": {reason.value: n
                     for reason, n in zip(state.reasons, state.failures, strict=True) if n},
        "last_success_at": state.last_success,
        "last": None if last is None else {
            "success": last.success,
            "reason": None if last.reason is None else last.reason.value,
            "message": last.message,
            "duration_seconds": last.duration,
            "finished_at": last.finished,
            "details": dict(last.details),
        },
        "availability": {"hour": _availability(view.last_hour),
                         "day": _availability(view.last_day)},
        "latency": {
            "start": hour.start,
            "slowest_seconds": [None if v is None else v / 1e6 for v in hour.slowest],
            "failed": [bool(b) for b in hour.failed],
        },
    }


def _availability(counted: Availability) -> dict[str, Any]:
    return {"runs": counted.runs, "successful": counted.successful, "ratio": counted.ratio}


def percent(ratio: float | None) -> str:
    """An availability for people: rounded down to two decimals, so that a check that failed
    at all never shows 100%; "–" when nothing ran."""
    if ratio is None:
        return "–"
    if ratio >= 1:
        return "100%"
    return f"{math.floor(ratio * 10000) / 100:g}%"
