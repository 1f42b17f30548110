"""When checks run: APScheduler 3.11, wrapped so its traps cannot hurt.

This is the only module that imports APScheduler, and it knows nothing of protocols: it starts
`run(key)` coroutines on the event loop at each key's interval. What it adds on top:

- UTC everywhere, and `max_instances=1`, `coalesce=False`, `misfire_grace_time` set explicitly
  on every job. Coalescing happens here instead of in APScheduler, so that every overdue run
  time is seen, the newest is run and the older ones are counted as missed.
- Start times spread over the interval by a stable hash of the key (as Prometheus spreads
  scrapes), so 10,000 checks never fire at once and a restart keeps each check's phase.
- Runs skipped because the previous one is still in flight are counted.
- A wall-clock step, forward or back, is detected against the monotonic clock before every
  wakeup and answered by shifting every job by the step. APScheduler plans in wall-clock time:
  unanswered, a step forward would make every job due at once (a burst) and a step back would
  stall every job for the size of the step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger

from exporter.metrics import LAG_BUCKETS, Histogram

log = logging.getLogger(__name__)
# APScheduler logs every job added and every skipped run; netsentry counts those instead.
logging.getLogger("apscheduler").setLevel(logging.ERROR)

EXECUTOR = "netsentry"
# Steps smaller than this are left alone: reading two clocks is not atomic, and NTP slews
# (which move both clocks together on Linux) must not count.
STEP_THRESHOLD = 0.25

RunFunc = Callable[[str], Coroutine[Any, Any, None]]


class Clock(Protocol):
    def time(self) -> float: ...
    def monotonic(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def phase(key: str, interval: float) -> float:
    """A stable offset in [0, interval) for `key`: the same across restarts and hosts."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


def first_run(key: str, interval: float, now: float) -> float:
    """The first time after `now` that lies on the key's phase of the interval grid."""
    offset = phase(key, interval)
    return offset + math.ceil((now - offset) / interval) * interval


class StepDetector:
    """Notices when wall-clock time jumps relative to monotonic time."""

    def __init__(self, clock: Clock, threshold: float = STEP_THRESHOLD) -> None:
        self._clock = clock
        self._threshold = threshold
        self._offset = clock.time() - clock.monotonic()

    def step(self) -> float:
        """Seconds the wall clock stepped since the last call (0.0 when it did not)."""
        offset = self._clock.time() - self._clock.monotonic()
        delta = offset - self._offset
        self._offset = offset
        return delta if abs(delta) >= self._threshold else 0.0


class _Executor(BaseExecutor):  # type: ignore[misc]
    """Starts each due run as a task on the loop and keeps track of it."""

    def __init__(self, owner: Scheduler) -> None:
        super().__init__()
        self._owner = owner
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        owner = self._owner
        now = owner.clock.time()
        newest = run_times[-1].timestamp()
        missed = len(run_times) - 1
        late = now - newest > job.misfire_grace_time
        if missed or late:
            owner.missed[job.id] += missed + late
        if late:
            # submit_job counts an instance once this returns; give it back on the next turn.
            owner.loop.call_soon(self._run_job_success, job.id, [])
            return
        task: asyncio.Task[None] = owner.loop.create_task(owner.start_run(job.id, newest))
        self.tasks[job.id] = task
        task.add_done_callback(lambda _: self._finished(job.id, task))

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]
        self._run_job_success(key, [])

    def shutdown(self, wait: bool = True) -> None:
        for task in self.tasks.values():
            task.cancel()


class _APScheduler(AsyncIOScheduler):  # type: ignore[misc]
    def __init__(self, before_wakeup: Callable[[], object], **options: Any) -> None:
        super().__init__(**options)
        self._before_wakeup = before_wakeup

    def _process_jobs(self) -> float | None:
        self._before_wakeup()
        return super()._process_jobs()  # type: ignore[no-any-return]


class Scheduler:
    """Runs `run(key)` for every scheduled key at its interval."""

    def __init__(self, run: RunFunc, *, clock: Clock | None = None) -> None:
        self.run = run
        self.clock: Clock = clock or SystemClock()
        self.missed: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.steps = 0
        self.lag = Histogram(LAG_BUCKETS)  # actual start - planned start
        self._steps = StepDetector(self.clock)
        self._executor = _Executor(self)
        self._aps = _APScheduler(self.check_clock, timezone=timezone.utc)
        self._aps.add_executor(self._executor, EXECUTOR)
        self._aps.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)
        self._intervals: dict[str, float] = {}
        self.loop: asyncio.AbstractEventLoop

    def start(self, paused: bool = False) -> None:
        """Start on the running event loop."""
        self.loop = asyncio.get_running_loop()
        self._aps.start(paused=paused)

    def shutdown(self) -> None:
        """Stop planning and cancel every run in flight."""
        if self._aps.running:
            self._aps.shutdown(wait=False)
        self._executor.shutdown()

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    @property
    def in_flight(self) -> int:
        return len(self._executor.tasks)

    async def start_run(self, key: str, planned: float) -> None:
        self.lag.observe(max(self.clock.time() - planned, 0.0))
        await self.run(key)

    def keys(self) -> list[str]:
        return list(self._intervals)

    def update(self, schedule: dict[str, float]) -> None:
        """Make `schedule` (key → interval) the plan: add, re-plan and remove jobs as needed.

        A key whose interval is unchanged keeps its job and its place in time.
        """
        with self._quietly():
            for key in [k for k in self._intervals if k not in schedule]:
                self.unschedule(key)
            now = self.clock.time()
            for key, interval in schedule.items():
                if self._intervals.get(key) == interval:
                    continue
                self._intervals[key] = interval
                start = datetime.fromtimestamp(first_run(key, interval, now), timezone.utc)
                self._aps.add_job(
                    self.run,
                    trigger=IntervalTrigger(
                        seconds=interval, start_date=start, timezone=timezone.utc
                    ),
                    args=(key,),
                    id=key,
                    name=key,
                    executor=EXECUTOR,
                    replace_existing=True,
                    max_instances=1,
                    coalesce=False,
                    # A run that starts more than half an interval late is counted as missed.
                    misfire_grace_time=max(int(interval / 2), 1),  # APScheduler: an int
                    next_run_time=start,
                )

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Pause around bulk changes: a running APScheduler wakes up once per changed job."""
        running = self._aps.state == STATE_RUNNING
        if running:
            self._aps.pause()
        try:
            yield
        finally:
            if running:
                self._aps.resume()

    def unschedule(self, key: str) -> None:
        """Remove `key`'s job, cancel its run in flight and forget its counts."""
        if self._intervals.pop(key, None) is not None:
            self._aps.remove_job(key)
        task = self._executor.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.missed.pop(key, None)
        self.skipped.pop(key, None)

    def next_run_times(self) -> dict[str, float]:
        return {job.id: job.next_run_time.timestamp() for job in self._aps.get_jobs()}

    def check_clock(self) -> float:
        """Detect a wall-clock step and shift every job by it; return the step (0.0 if none)."""
        step = self._steps.step()
        if not step:
            return 0.0
        self.steps += 1
        log.warning("wall clock stepped; rescheduling checks", extra={"step_seconds": step})
        shift = timedelta(seconds=step)
        with self._quietly():
            for job in self._aps.get_jobs():
                if job.next_run_time is not None:
                    self._aps.modify_job(job.id, next_run_time=job.next_run_time + shift)
        return step

    def _on_skipped(self, event: JobSubmissionEvent) -> None:
        self.skipped[event.job_id] += 1
