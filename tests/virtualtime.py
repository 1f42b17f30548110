"""Virtual time for asyncio tests: an event loop whose clock moves only when the loop would wait.

`run(main)` runs `main()` on a `VirtualLoop`: whenever the loop has nothing ready and would
sleep until its next timer, the `VirtualClock` jumps to that timer instead, so a test of an
hour of schedule takes milliseconds and counts exact numbers of runs. The same clock is the
scheduler's (`Scheduler(run, clock=clock)`), so the loop's timers, APScheduler's decisions,
the step detector and the lag all read one time. Wall time starts in 2033, far from any real
now: a component that read the system clock instead would see nothing come due.

A coroutine that blocks the loop for a while (as a CPU-bound run would) calls
`clock.advance(seconds)`; a step of the wall clock (as `date -s` would make) is
`clock.step(seconds)`, which leaves monotonic time alone.

Only for code that waits on the loop's own timers: a real socket's or thread's answer takes
real time, which virtual time would skip past.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EPOCH = 2_000_000_000.049  # wall time at the start: in 2033, 1 ms before a 50 ms slot begins
START = 1000.0  # monotonic time at the start
LIMIT = 100_000.0  # virtual seconds a test may run at most: a loop that never ends fails


class VirtualTimeError(RuntimeError):
    pass


class VirtualClock:
    """Monotonic time that moves only by `advance`; wall time is monotonic + an offset that
    `step` changes."""

    def __init__(self, wall: float = EPOCH, monotonic: float = START,
                 limit: float = LIMIT) -> None:
        self._monotonic = monotonic
        self._offset = wall - monotonic
        self._end = monotonic + limit

    def time(self) -> float:
        return self._monotonic + self._offset

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass (both clocks move)."""
        if seconds < 0:
            raise ValueError(f"time does not go back: {seconds}")
        self._monotonic += seconds
        if self._monotonic > self._end:
            raise VirtualTimeError("the test ran past its limit of virtual time")

    def step(self, seconds: float) -> None:
        """Step the wall clock by `seconds`; monotonic time stays."""
        self._offset += seconds


class _Selector(selectors.DefaultSelector):
    """Polls without waiting; a wait for a timer becomes a jump of the clock."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        events: list[tuple[Any, int]] = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise VirtualTimeError("the loop would wait forever: nothing is ready or scheduled")
        self._clock.advance(timeout)
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_Selector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.monotonic()


def run(main: Callable[[], Coroutine[Any, Any, T]], clock: VirtualClock | None = None) -> T:
    """`main()` run to completion on a VirtualLoop of `clock` (a fresh one by default)."""
    clock = clock or VirtualClock()
    with asyncio.Runner(loop_factory=lambda: VirtualLoop(clock)) as runner:
        return runner.run(main())
