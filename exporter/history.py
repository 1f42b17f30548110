"""The last hour of one check's runs, for the status page's sparkline: bounded and compact.

The hour is cut into `POINTS` slots of `STEP` seconds of wall-clock time, whatever the check's
interval: a check every second fills each slot 60 times and keeps the slowest, a check every
five minutes fills one slot in five. Per slot a check keeps the slowest successful run in whole
microseconds (an unsigned 32-bit integer: exact, and a duration up to 71 minutes) and whether
any run failed (a byte): about 540 bytes a check in all, and never more, however long it runs.
Slots are a ring indexed by the slot number modulo `POINTS`; the slots a check skipped over are
cleared when it moves on, so nothing older than an hour shows.

Failed runs do not count as latency: a timeout's duration is its deadline, a refusal's is
near zero, neither says how fast the target answers. They mark their slot instead.

The clock is the wall clock of `Result.finished`, so that a point's place on the page matches
the time a reader sees. A step back of up to one slot adds to the newest slot; a longer step
back starts the hour afresh rather than mixing two timelines.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

STEP = 60.0  # seconds per slot
POINTS = 60  # slots kept: one hour

_NONE = 0xFFFFFFFF  # no successful run in the slot
_LONGEST = _NONE - 1


@dataclass(frozen=True, slots=True)
class Window:
    """The hour ending with the slot of `now`, oldest slot first."""

    start: float  # Unix time at which the first slot begins
    slowest: tuple[int | None, ...]  # microseconds; None where no run succeeded in the slot
    failed: bytes  # 1 where a run failed in the slot, else 0


EMPTY = Window(0.0, (None,) * POINTS, bytes(POINTS))


class LatencyHistory:
    __slots__ = ("_failed", "_slot", "_slowest")

    def __init__(self) -> None:
        self._slowest = array("I", [_NONE]) * POINTS
        self._failed = bytearray(POINTS)
        self._slot: int | None = None  # the newest slot written

    def add(self, finished: float, duration: float, success: bool) -> None:
        """Count a run that ended at Unix time `finished` after `duration` seconds."""
        slot = int(finished // STEP)
        newest = self._slot
        if newest is None or slot < newest - 1:  # the first run, or the clock stepped back
            self._clear(0, POINTS)
            newest = self._slot = slot
        elif slot > newest:
            for skipped in range(newest + 1, min(slot, newest + POINTS) + 1):
                self._clear(skipped % POINTS, skipped % POINTS + 1)
            newest = self._slot = slot
        index = newest % POINTS
        if success:
            micros = min(max(round(duration * 1e6), 0), _LONGEST)
            slowest = self._slowest[index]
            if slowest == _NONE or micros > slowest:
                self._slowest[index] = micros
        else:
            self._failed[index] = 1

    def copy(self) -> LatencyHistory:
        """A snapshot that later runs leave alone (a quarter of a microsecond)."""
        twin = LatencyHistory.__new__(LatencyHistory)
        twin._slowest, twin._failed, twin._slot = self._slowest[:], self._failed[:], self._slot
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
        failed = bytes(self._failed[oldest:] + self._failed[:oldest])[after:] + bytes(after)
        return Window((end - POINTS + 1) * STEP,
                      (*(None if v == _NONE else v for v in slowest), *(None,) * after), failed)

    def _clear(self, first: int, stop: int) -> None:
        for index in range(first, stop):
            self._slowest[index] = _NONE
            self._failed[index] = 0
