"""One check's runs over the last hour and the last day: latency for the status page's
sparkline, availability for its figures and badges; bounded and compact.

Two rings of wall-clock slots, whatever the check's interval:

- the hour: `POINTS` slots of `STEP` (60) seconds. Per slot a check keeps the slowest
  successful run in whole microseconds (an unsigned 32-bit integer: exact, and a duration up
  to 71 minutes), and how many runs ended in it and how many of them succeeded (16 bits each,
  saturating at 65,535 runs a minute);
- the day: `DAY_POINTS` (96) slots of `DAY_STEP` (15 minutes), each with its runs and
  successful runs (32 bits each).

About 1.3 KB a check in all, and never more, however long it runs. Each ring is indexed by
the slot number modulo its length; the slots a check skipped over are cleared when it moves
on, so nothing older than its span shows. Availability is successful runs / runs, so a
check every second weighs a minute 60 times as much as a check every minute does: each
check's figure is its own runs'.

Failed runs do not count as latency: a timeout's duration is its deadline, a refusal's is
near zero, neither says how fast the target answers. They count against availability and
mark their minute.

The clock is the wall clock of `Result.finished`, so that a point's place on the page matches
the time a reader sees. A step back of up to one slot adds to the newest slot; a longer step
back starts the ring afresh rather than mixing two timelines.

`minutes()`, `quarters()` and `restore()` are what `storage.py` keeps across restarts.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

STEP = 60.0  # seconds per slot of the hour
POINTS = 60  # slots kept: one hour
DAY_STEP = 900.0  # seconds per slot of the day
DAY_POINTS = 96  # one day

_NONE = 0xFFFFFFFF  # no successful run in the slot
_LONGEST = _NONE - 1
_MINUTE_RUNS = 0xFFFF  # runs counted in one minute slot, at most
_QUARTER_RUNS = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Availability:
    """Runs and successful runs over a span; `ratio` is None when nothing ran."""

    runs: int
    successful: int

    @property
    def ratio(self) -> float | None:
        return self.successful / self.runs if self.runs else None

    def __add__(self, other: Availability) -> Availability:
        return Availability(self.runs + other.runs, self.successful + other.successful)


NO_RUNS = Availability(0, 0)


@dataclass(frozen=True, slots=True)
class Window:
    """The hour ending with the slot of `now`, oldest slot first."""

    start: float  # Unix time at which the first slot begins
    slowest: tuple[int | None, ...]  # microseconds; None where no run succeeded in the slot
    failed: bytes  # 1 where a run failed in the slot, else 0


EMPTY = Window(0.0, (None,) * POINTS, bytes(POINTS))


@dataclass(frozen=True, slots=True)
class Day:
    """The day ending with the quarter of `now`, oldest quarter first."""

    start: float
    runs: tuple[int, ...]
    successful: tuple[int, ...]


class LatencyHistory:
    __slots__ = ("_day_ok", "_day_runs", "_day_slot", "_ok", "_runs", "_slot", "_slowest")

    def __init__(self) -> None:
        self._slowest = array("I", [_NONE]) * POINTS
        self._runs = array("H", [0]) * POINTS
        self._ok = array("H", [0]) * POINTS
        self._slot: int | None = None  # the newest minute written
        self._day_runs = array("I", [0]) * DAY_POINTS
        self._day_ok = array("I", [0]) * DAY_POINTS
        self._day_slot: int | None = None  # the newest quarter written

    def add(self, finished: float, duration: float, success: bool) -> None:
        """Count a run that ended at Unix time `finished` after `duration` seconds."""
        newest = self._slot = _advance(self._slot, int(finished // STEP), POINTS,
                                       self._clear_minute)
        index = newest % POINTS
        if self._runs[index] < _MINUTE_RUNS:
            self._runs[index] += 1
            self._ok[index] += success
        if success:
            micros = min(max(round(duration * 1e6), 0), _LONGEST)
            slowest = self._slowest[index]
            if slowest == _NONE or micros > slowest:
                self._slowest[index] = micros
        quarter = self._day_slot = _advance(self._day_slot, int(finished // DAY_STEP),
                                            DAY_POINTS, self._clear_quarter)
        index = quarter % DAY_POINTS
        if self._day_runs[index] < _QUARTER_RUNS:
            self._day_runs[index] += 1
            self._day_ok[index] += success

    def copy(self) -> LatencyHistory:
        """A snapshot that later runs leave alone (about a microsecond)."""
        twin = LatencyHistory.__new__(LatencyHistory)
        twin._slowest, twin._runs, twin._ok = self._slowest[:], self._runs[:], self._ok[:]
        twin._day_runs, twin._day_ok = self._day_runs[:], self._day_ok[:]
        twin._slot, twin._day_slot = self._slot, self._day_slot
        return twin

    def window(self, now: float) -> Window:
        """The last hour as of `now`; slots after the newest run are empty."""
        end = int(now // STEP)
        newest = self._slot
        if newest is None or newest <= end - POINTS:
            return Window((end - POINTS + 1) * STEP, EMPTY.slowest, EMPTY.failed)
        end = max(end, newest)  # a clock stepped back a little: still show the newest
        # The ring from its oldest slot (newest - POINTS + 1) to the newest, then the slots
        # since the newest run, empty.
        oldest = (newest + 1) % POINTS
        after = end - newest
        slowest = (self._slowest[oldest:] + self._slowest[:oldest])[after:]
        runs = (self._runs[oldest:] + self._runs[:oldest])[after:]
        ok = (self._ok[oldest:] + self._ok[:oldest])[after:]
        failed = bytes(r > o for r, o in zip(runs, ok, strict=True)) + bytes(after)
        return Window((end - POINTS + 1) * STEP,
                      (*(None if v == _NONE else v for v in slowest), *(None,) * after), failed)

    def hour(self, now: float) -> Availability:
        """Runs and successful runs in the minutes of the hour ending with `now`'s."""
        end = int(now // STEP)
        runs = successful = 0
        for _, n, ok, _ in self.minutes(end - POINTS + 1, end):
            runs += n
            successful += ok
        return Availability(runs, successful)

    def day(self, now: float) -> Day:
        """The last day as of `now`, by quarter; quarters after the newest run are empty."""
        end = int(now // DAY_STEP)
        runs = [0] * DAY_POINTS
        ok = [0] * DAY_POINTS
        for slot, n, good in self.quarters():
            if end - DAY_POINTS < slot <= end:
                runs[slot - end + DAY_POINTS - 1] = n
                ok[slot - end + DAY_POINTS - 1] = good
        return Day((end - DAY_POINTS + 1) * DAY_STEP, tuple(runs), tuple(ok))

    def last_day(self, now: float) -> Availability:
        """Runs and successful runs in the quarters of the day ending with `now`'s."""
        end = int(now // DAY_STEP)
        runs = successful = 0
        for slot, n, ok in self.quarters():
            if end - DAY_POINTS < slot <= end:
                runs += n
                successful += ok
        return Availability(runs, successful)

    # --- what storage keeps -----------------------------------------------------------------

    def minutes(self, first: int, last: int) -> Iterator[tuple[int, int, int, int]]:
        """(minute, runs, successful, slowest µs or 0xFFFFFFFF) of the minutes numbered
        `first` to `last` (Unix time // 60) that the ring holds and in which something ran."""
        newest = self._slot
        if newest is None:
            return
        for slot in range(max(first, newest - POINTS + 1), min(last, newest) + 1):
            index = slot % POINTS
            if self._runs[index]:
                yield slot, self._runs[index], self._ok[index], self._slowest[index]

    def quarters(self) -> Iterator[tuple[int, int, int]]:
        """(quarter, runs, successful) of the quarters the ring holds in which something ran."""
        newest = self._day_slot
        if newest is None:
            return
        for slot in range(newest - DAY_POINTS + 1, newest + 1):
            index = slot % DAY_POINTS
            if self._day_runs[index]:
                yield slot, self._day_runs[index], self._day_ok[index]

    def restore(self, minutes: Iterable[tuple[int, int, int, int]],
                quarters: Iterable[tuple[int, int, int]], now: float) -> None:
        """Start from what storage kept: the minutes and quarters (as `minutes()` and
        `quarters()` give them, counts within their fields' bounds: the file's codec sees to
        that) within an hour and a day of `now`; the rest is ignored."""
        end = int(now // STEP)
        kept = [m for m in minutes if end - POINTS < m[0] <= end]
        if kept:
            self._clear_minute(0, POINTS)
            self._slot = max(m[0] for m in kept)
            runs, ok, slowest = self._runs, self._ok, self._slowest
            for slot, n, good, micros in kept:
                index = slot % POINTS
                runs[index], ok[index], slowest[index] = n, good, micros
        end = int(now // DAY_STEP)
        held = [q for q in quarters if end - DAY_POINTS < q[0] <= end]
        if held:
            self._clear_quarter(0, DAY_POINTS)
            self._day_slot = max(q[0] for q in held)
            runs, ok = self._day_runs, self._day_ok
            for slot, n, good in held:
                index = slot % DAY_POINTS
                runs[index], ok[index] = n, good

    def _clear_minute(self, first: int, stop: int) -> None:
        for index in range(first, stop):
            self._slowest[index] = _NONE
            self._runs[index] = self._ok[index] = 0

    def _clear_quarter(self, first: int, stop: int) -> None:
        for index in range(first, stop):
            self._day_runs[index] = self._day_ok[index] = 0


def _advance(newest: int | None, slot: int, points: int,
             clear: Callable[[int, int], None]) -> int:
    """The newest slot of a ring of `points` once a run lands in `slot`, clearing what the
    ring moves past (all of it after a step back of more than one slot)."""
    if newest is None or slot < newest - 1:  # the first run, or the clock stepped back
        clear(0, points)
        return slot
    if slot > newest:
        for skipped in range(newest + 1, min(slot, newest + points) + 1):
            clear(skipped % points, skipped % points + 1)
        return slot
    return newest

