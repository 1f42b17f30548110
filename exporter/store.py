"""The results store: the latest immutable state of every check, replaced whole on each run.

States are immutable, so a scrape takes a snapshot by copying references on the event loop and
renders it elsewhere without ever seeing half a run. A state and a result are named tuples
rather than frozen dataclasses: a new one of each is made at every run of every check, and a
tuple is made in a fifth of the time (a frozen dataclass sets each field through
object.__setattr__; figures in docs/performance.md). A removed check's state is dropped, and
with it every series it had.

Beside each state the store keeps the check's latency history of the last hour (`history.py`),
the one mutable, bounded thing a check accumulates: it lives exactly as long as the state it
belongs to, so a changed check starts a fresh hour and a removed one takes its hour along.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from exporter.checks import KINDS
from exporter.checks.base import UNTIL_RELOAD, Observation
from exporter.config.model import CheckConfig
from exporter.errors import Reason
from exporter.history import LatencyHistory
from exporter.metrics import DURATION_BUCKETS, Series
from exporter.native_histograms import DEFAULT_FACTOR, Native, schema_for

DEFAULT_SCHEMA = schema_for(DEFAULT_FACTOR)
EMPTY_NATIVE = Native(DEFAULT_SCHEMA)


class Result(NamedTuple):
    """What one run found. Its gauges, and its counts likewise, are two tuples in the shape the
    run recorded them (`metrics.Series`), which series and their values:
    a check records the same series run after run, so its results share one `series` tuple
    (the runner reuses the previous result's), and `values`, all numbers, is a tuple CPython
    stops tracking. So a run leaves no new tuples for the cyclic collector to scan, whose passes
    hold up the event loop at scale (figures in docs/performance.md), and the exposition reuses
    a check's plan of where each gauge goes while its `series` is the same object."""

    success: bool
    reason: Reason | None
    message: str
    duration: float  # seconds
    finished: float  # Unix time
    series: Series = ()
    values: tuple[float, ...] = ()
    counted: Series = ()  # the counters this run added to, and by how much
    increments: tuple[float, ...] = ()
    details: tuple[tuple[str, str], ...] = ()
    observed: Series = ()  # the histograms this run added samples to, and the samples
    samples: tuple[float, ...] = ()

    @property
    def observations(self) -> tuple[Observation, ...]:
        """The gauges as (metric, label values, value): a view for people and tests."""
        return tuple((spec, labels, value)
                     for (spec, labels), value in zip(self.series, self.values, strict=True))

    @property
    def counts(self) -> tuple[Observation, ...]:
        """The counts as (metric, label values, increment): a view for people and tests."""
        return tuple((spec, labels, n)
                     for (spec, labels), n in zip(self.counted, self.increments, strict=True))


def split(observations: Iterable[Observation]) -> tuple[Series, tuple[float, ...]]:
    """(series, values) of samples written as (metric, label values, value): for results made
    by hand (tests, benchmarks)."""
    recorded = tuple(observations)
    return (tuple((spec, labels) for spec, labels, _ in recorded),
            tuple(value for _, _, value in recorded))


class CheckState(NamedTuple):
    """A check and everything its runs have accumulated since it was loaded."""

    check: CheckConfig
    reasons: tuple[Reason, ...]
    # The check's own memory from run to run (`Run.memory`), for as long as it is loaded: the
    # one mutable part, the same dict in every state of the check.
    memory: dict[str, Any]
    runs: int = 0
    failures: tuple[int, ...] = ()
    last: Result | None = None
    last_success: float | None = None  # Unix time of the last successful run
    buckets: tuple[int, ...] = ()  # cumulative counts of run durations per bucket, +Inf last
    duration_sum: float = 0.0
    counter_series: Series = ()  # the counters its runs added to, and their totals
    counter_values: tuple[float, ...] = ()
    histogram_series: Series = ()  # the histograms of its runs' samples, and their `Buckets`
    histogram_values: tuple[Buckets, ...] = ()
    # When it was loaded: the created timestamp of its counters and histograms (OpenMetrics'
    # _created, protobuf's created_timestamp), so that rate() knows where they started.
    created: float = 0.0
    native: Native = EMPTY_NATIVE  # the run durations' native histogram

    @classmethod
    def new(cls, check: CheckConfig, schema: int = DEFAULT_SCHEMA,
            created: float | None = None) -> CheckState:
        reasons = KINDS[check.kind].reasons
        return cls(check, reasons, {}, failures=(0,) * len(reasons),
                   buckets=(0,) * (len(DURATION_BUCKETS) + 1),
                   created=time.time() if created is None else created,
                   native=Native(schema))

    def after(self, result: Result) -> CheckState:
        """The state once `result` is added."""
        failures = self.failures
        if result.reason is not None:
            index = self.reasons.index(result.reason) if result.reason in self.reasons else -1
            if index < 0:  # a reason the kind did not declare: keep it, it is still true
                return self._with_reason(result.reason).after(result)
            failures = (*failures[:index], failures[index] + 1, *failures[index + 1:])
        first = bisect_left(DURATION_BUCKETS, result.duration)
        buckets = (*self.buckets[:first], *(n + 1 for n in self.buckets[first:]))
        counter_series, counter_values = self.counter_series, self.counter_values
        if result.counted:
            counter_series, counter_values = _add_counts(self, result)
        histogram_series, histogram_values = self.histogram_series, self.histogram_values
        if result.observed:
            histogram_series, histogram_values = _add_samples(self, result)
        return CheckState(self.check, self.reasons, self.memory, self.runs + 1, failures, result,
                          result.finished if result.success else self.last_success, buckets,
                          self.duration_sum + result.duration, counter_series, counter_values,
                          histogram_series, histogram_values, self.created,
                          self.native.add(result.duration))

    def _with_reason(self, reason: Reason) -> CheckState:
        return self._replace(reasons=(*self.reasons, reason), failures=(*self.failures, 0))


def _add_counts(state: CheckState, result: Result) -> tuple[Series, tuple[float, ...]]:
    totals = dict(zip(state.counter_series, state.counter_values, strict=True))
    for key, n in zip(result.counted, result.increments, strict=True):
        totals[key] = totals.get(key, 0) + n
    return tuple(totals), tuple(totals.values())


def _add_samples(state: CheckState, result: Result) -> tuple[Series, tuple[Buckets, ...]]:
    totals = dict(zip(state.histogram_series, state.histogram_values, strict=True))
    for (spec, labels), value in zip(result.observed, result.samples, strict=True):
        before = totals.get((spec, labels))
        totals[(spec, labels)] = (before or Buckets.empty(spec.buckets, state.native.schema)
                                  ).add(spec.buckets, value)
    return tuple(totals), tuple(totals.values())


@dataclass(frozen=True, slots=True)
class Buckets:
    """One histogram's samples so far: how many fell in each bucket (not cumulative; the
    last is +Inf) and their sum."""

    counts: tuple[int, ...]
    sum: float = 0.0
    native: Native = EMPTY_NATIVE  # the same samples in native buckets

    @classmethod
    def empty(cls, bounds: tuple[float, ...], schema: int = DEFAULT_SCHEMA) -> Buckets:
        return cls((0,) * (len(bounds) + 1), native=Native(schema))

    def add(self, bounds: tuple[float, ...], value: float) -> Buckets:
        index = bisect_left(bounds, value)
        counts = self.counts
        return Buckets((*counts[:index], counts[index] + 1, *counts[index + 1:]), self.sum + value,
                       self.native.add(value))

    def cumulative(self) -> list[int]:
        return list(itertools.accumulate(self.counts))


class Store:
    """Check key (`CheckConfig.key`: its name, and a target list's target) → latest state, in
    config order."""

    def __init__(self, schema: int = DEFAULT_SCHEMA) -> None:
        self.states: dict[str, CheckState] = {}
        self.histories: dict[str, LatencyHistory] = {}
        self.schema = schema  # of the native histograms; a change starts every check afresh

    def load(self, checks: tuple[CheckConfig, ...]) -> None:
        """Adopt a config: unchanged checks keep their state, changed ones start afresh.

        Unchanged checks forget only what they memorised for "until the next reload"
        (`Run.memory[UNTIL_RELOAD]`)."""
        states = {}
        histories = {}
        now = time.time()
        for check in checks:
            key = check.key
            old = self.states.get(key)
            if (old is not None and (old.check is check or old.check == check)
                    and old.native.schema == self.schema):
                old.memory.pop(UNTIL_RELOAD, None)
                states[key] = old
                histories[key] = self.histories[key]
            else:
                states[key] = CheckState.new(check, self.schema, now)
                histories[key] = LatencyHistory()
        self.states = states
        self.histories = histories

    def record(self, key: str, check: CheckConfig, result: Result) -> CheckState | None:
        """Add a run's result; ignored if the check was changed or removed meanwhile."""
        state = self.states.get(key)
        if state is None or state.check is not check:
            return None
        new = state.after(result)
        self.states[key] = new
        self.histories[key].add(result.finished, result.duration, result.success)
        return new

    def snapshot(self) -> tuple[CheckState, ...]:
        return tuple(self.states.values())
