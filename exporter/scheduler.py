"""When checks run: APScheduler 3.11, wrapped so its traps cannot hurt.

This is the only module that imports APScheduler, and it knows nothing of protocols: it starts
`run(key)` coroutines on the event loop at each key's interval. What it adds on top:

- Keys are spread over their interval by a stable hash (as Prometheus spreads scrapes), so
  10,000 checks never fire at once and a restart keeps each check's phase: a key starts at
  the beginning of the 50 ms `SLOT` its phase falls in.
- Keys whose phases fall in the same second (`WINDOW`) of the same interval share one
  APScheduler job, which starts each of its slots' keys on the event loop at the slot's time
  (`loop.call_at`). APScheduler's bookkeeping per job run (datetime arithmetic, job-store
  updates, events: hundreds of µs on a VM, where it runs cold) is then paid once a second per
  interval, not once per slot or per check: at 1,000 checks every 10 s, a job per 50 ms slot
  cost 117 µs of scheduling per run, a job per second 37 (docs/performance.md). A slot holds
  few keys unless the agent runs hundreds of checks a second; then its keys start in groups
  of `BATCH`, spread over the slot: runs started together share the loop, and each one's
  timings would include the others' work.
- UTC everywhere; `max_instances=1`, `coalesce=False` and `misfire_grace_time` are set
  explicitly on every job. Coalescing happens here: of the overdue run times APScheduler hands
  over, the newest runs and the older ones are counted as missed, per key.
- A key whose previous run is still in flight skips its turn, and the skip is counted.
- A wall-clock step, forward or back, is detected against the monotonic clock before every
  wakeup and answered by shifting every job by the step. APScheduler plans in wall-clock time:
  unanswered, a step forward would make every job due at once (a burst) and a step back would
  stall every job for the size of the step.
- One clock, injectable (`clock=`, the system's by default): APScheduler reads it too, so a
  test that runs the event loop on a clock of its own drives every decision here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import types
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING, BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.metrics import LAG_BUCKETS, Histogram

log = logging.getLogger(__name__)
# APScheduler logs every job it adds; netsentry logs what matters itself.
logging.getLogger("apscheduler").setLevel(logging.ERROR)

EXECUTOR = "netsentry"
SLOT = 0.05  # seconds: keys whose phases fall this close together start together
WINDOW = 1.0  # seconds: keys whose phases fall this close together share an APScheduler job
BATCH = 10  # keys started at the same moment, at most; a fuller slot starts in groups
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


def width(interval: float) -> float:
    """The seconds of an interval that one job covers (all of it, for an interval under one)."""
    return min(WINDOW, interval)


def window_of(key: str, interval: float) -> tuple[float, int]:
    """The (interval, window number) whose job runs `key`."""
    return interval, int(phase(key, interval) / width(interval))


def offset_in_window(key: str, interval: float) -> float:
    """When `key` starts, in seconds after its window's start: the start of its slot."""
    _, number = window_of(key, interval)
    return max(int(phase(key, interval) / SLOT) * SLOT - number * width(interval), 0.0)


def _on_grid(offset: float, interval: float, now: float) -> float:
    """The first time after `now` that lies `offset` seconds into a turn of `interval`."""
    return offset + math.ceil((now - offset) / interval) * interval


def first_run(interval: float, window: int, now: float) -> float:
    """The first time after `now` that lies on the window's place in the interval grid: when
    its job first runs."""
    return _on_grid(window * width(interval), interval, now)


def first_start(key: str, interval: float, now: float) -> float:
    """When `key` first starts once scheduled at `now`: the first time after `now` on its
    slot's place in the interval grid (in its window's turn under way, if its slot is still
    ahead in it: `Scheduler.update`)."""
    _, window = window_of(key, interval)
    return _on_grid(window * width(interval) + offset_in_window(key, interval), interval, now)


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
    """Starts the runs of a due window, slot by slot, as tasks on the loop and keeps track of
    them."""

    def __init__(self, owner: Scheduler) -> None:
        super().__init__()
        self._owner = owner
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopped = False  # groups of a window still waiting to start then start nothing

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        owner = self._owner
        # A window job has no work of its own: it is done as soon as its runs are started.
        # (submit_job counts the instance once this returns; give it back on the next turn.)
        owner.loop.call_soon(self._run_job_success, job.id, [])
        now = owner.clock.time()
        planned = run_times[-1].timestamp()
        missed = len(run_times) - 1
        late = now - planned > job.misfire_grace_time
        if missed or late:
            for key in owner.windows.get(job.id, ()):
                owner.missed[key] += missed + late
        if late:
            return
        # The window's start in event-loop time, which wall-clock steps leave alone: each group
        # is planned and started from it, and a window that starts late catches up.
        start = owner.loop.time() - (now - planned)
        for offset, keys in owner.plan(job.id):
            self.start_slot(job.id, keys, start + offset)

    def start_slot(self, job_id: str, keys: list[str], when: float) -> None:
        """Start `keys` at `when` (event-loop time): in groups of BATCH spread over the slot."""
        loop = self._owner.loop
        groups = [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]
        spacing = SLOT / len(groups)
        for number, group in enumerate(groups):
            at = when + number * spacing
            loop.call_at(at, self._start, job_id, group, at)

    def _start(self, job_id: str, keys: list[str], planned: float) -> None:
        """Start `keys`' runs, planned for `planned` (event-loop time)."""
        owner = self._owner
        if self.stopped:
            return
        for key in keys:
            if owner.job_of(key) != job_id:  # unscheduled or re-planned meanwhile
                continue
            if key in self.tasks:
                owner.skipped[key] += 1
                continue
            # The run takes itself out of `tasks` when it ends (Scheduler.start_run): a done
            # callback would cost a handle and a turn of the loop per run.
            self.tasks[key] = owner.loop.create_task(owner.start_run(key, planned))

    def shutdown(self, wait: bool = True) -> None:
        self.stopped = True
        for task in self.tasks.values():
            task.cancel()


class _APScheduler(AsyncIOScheduler):  # type: ignore[misc]
    def __init__(self, clock: Clock, before_wakeup: Callable[[], object],
                 **options: Any) -> None:
        super().__init__(**options)
        self._before_wakeup = before_wakeup
        self._process = _reading(clock, BaseScheduler._process_jobs)

    def _process_jobs(self) -> float | None:
        self._before_wakeup()
        return self._process(self)  # type: ignore[no-any-return]


def _reading(clock: Clock, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, APScheduler's own code, with its `datetime.now()` reading `clock`.

    APScheduler 3 asks `datetime.now()` which jobs are due and how long to sleep, and takes no
    clock. This is the very same code object, with one global name, `datetime`, bound to a
    subclass whose `now()` reads `clock`: nothing is patched, and with the system clock it
    reads what `datetime.now()` would.
    """

    class ClockDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> ClockDatetime:
            return cls.fromtimestamp(clock.time(), tz)

    names = {**function.__globals__, "datetime": ClockDatetime}
    return types.FunctionType(function.__code__, names, function.__name__,
                              function.__defaults__, function.__closure__)


class Scheduler:
    """Runs `run(key)` for every scheduled key at its interval."""

    def __init__(self, run: RunFunc, *, clock: Clock | None = None) -> None:
        self.run = run
        self.clock: Clock = clock or SystemClock()
        self.missed: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.steps = 0
        self.lag = Histogram(LAG_BUCKETS)  # actual start - planned start, per run
        # job id -> its keys (in insertion order) and their offsets in the window
        self.windows: dict[str, dict[str, float]] = {}
        self._plans: dict[str, list[tuple[float, list[str]]]] = {}  # see plan()
        self._job_of: dict[str, str] = {}  # key -> job id
        self._interval_of: dict[str, float] = {}  # key -> the interval its window was planned for
        self._steps = StepDetector(self.clock)
        self._executor = _Executor(self)
        self._aps = _APScheduler(self.clock, self.check_clock, timezone=timezone.utc)
        self._aps.add_executor(self._executor, EXECUTOR)
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

    @property
    def jobs(self) -> int:
        """APScheduler jobs planned: one per occupied window, however many reloads came before."""
        return len(self._aps.get_jobs())

    def plan(self, job_id: str) -> list[tuple[float, list[str]]]:
        """A window's occupied slots in time order: each one's offset in the window and its
        keys. Made when the window first runs after a change."""
        plan = self._plans.get(job_id)
        if plan is None:
            plan = self._plans[job_id] = sorted(_by_value(self.windows.get(job_id, {})).items())
        return plan

    async def start_run(self, key: str, planned: float) -> None:
        """Run `key`, planned to start at `planned` (event-loop time)."""
        self.lag.observe(max(self.loop.time() - planned, 0.0))
        try:
            await self.run(key)
        finally:
            # A run cancelled before its first step never gets here: Scheduler.cancel takes it
            # out itself, and after shutdown nothing is started again.
            tasks = self._executor.tasks
            if tasks.get(key) is asyncio.current_task():
                del tasks[key]

    def keys(self) -> list[str]:
        return list(self._job_of)

    def job_of(self, key: str) -> str | None:
        """The id of the APScheduler job (the window) that runs `key`."""
        return self._job_of.get(key)

    def update(self, schedule: dict[str, float]) -> None:
        """Make `schedule` (key → interval) the plan: add, re-plan and remove keys as needed.

        A key whose interval is unchanged keeps its place in time. A key added while its window
        is under way, with its slot still ahead, starts in it: every key first runs within one
        interval of being added.
        """
        added: dict[str, list[str]] = {}  # job id -> the keys just placed in it
        with self._quietly():
            for key in [k for k in self._job_of if k not in schedule]:
                self.unschedule(key)
            planned = self._interval_of
            for key, interval in schedule.items():
                if planned.get(key) == interval and key in self._job_of:
                    continue  # unchanged: its place in time stays (and its hash is not redone)
                planned[key] = interval
                interval_, number = window_of(key, interval)
                job_id = f"{interval_:g}s/{number}"
                current = self._job_of.get(key)
                if current == job_id:
                    continue
                if current is not None:
                    self._leave(key, current)
                self._job_of[key] = job_id
                members = self.windows.get(job_id)
                if members is None:
                    members = self.windows[job_id] = {}
                    self._add_job(job_id, interval, number)
                members[key] = offset_in_window(key, interval)
                self._plans.pop(job_id, None)
                added.setdefault(job_id, []).append(key)
        if self._aps.state == STATE_RUNNING:
            self._join_under_way(added)

    def _join_under_way(self, added: dict[str, list[str]]) -> None:
        """Start the keys just placed in a window whose turn has begun (its next run is an
        interval away) at their slots still ahead in this turn; the others wait for the next."""
        now, loop_now = self.clock.time(), self.loop.time()
        for job_id, keys in added.items():
            job = self._aps.get_job(job_id)
            if job is None or job.next_run_time is None:
                continue
            turn = job.next_run_time.timestamp() - self._interval_of[keys[0]]
            members = self.windows[job_id]
            ahead = {key: turn + members[key] for key in keys if turn + members[key] > now}
            for at, slot in _by_value(ahead).items():
                self._executor.start_slot(job_id, slot, loop_now + at - now)

    def _add_job(self, job_id: str, interval: float, number: int) -> None:
        start = datetime.fromtimestamp(first_run(interval, number, self.clock.time()),
                                       timezone.utc)
        self._aps.add_job(
            _unused,
            trigger=IntervalTrigger(seconds=interval, start_date=start, timezone=timezone.utc),
            id=job_id,
            name=job_id,
            executor=EXECUTOR,
            max_instances=1,
            coalesce=False,
            # A run that starts more than half an interval late is counted as missed.
            misfire_grace_time=max(int(interval / 2), 1),  # APScheduler wants an int
            next_run_time=start,
        )

    def _leave(self, key: str, job_id: str) -> None:
        members = self.windows[job_id]
        del members[key]
        self._plans.pop(job_id, None)
        if not members:
            del self.windows[job_id]
            self._aps.remove_job(job_id)

    def unschedule(self, key: str) -> None:
        """Remove `key`, cancel its run in flight and forget its counts."""
        job_id = self._job_of.pop(key, None)
        self._interval_of.pop(key, None)
        if job_id is not None:
            self._leave(key, job_id)
        self.cancel(key)
        self.missed.pop(key, None)
        self.skipped.pop(key, None)

    def cancel(self, key: str) -> None:
        """Cancel `key`'s run in flight, if any (its result would be stale)."""
        task = self._executor.tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def next_run_times(self) -> dict[str, float]:
        """Each key's next planned start (Unix time)."""
        now = self.clock.time()
        jobs = {job.id: job.next_run_time.timestamp() for job in self._aps.get_jobs()}
        starts = {}
        for key, job_id in self._job_of.items():
            start = jobs[job_id] + self.windows[job_id][key]
            # In the window's turn under way, if its slot is still ahead in it.
            earlier = start - self._interval_of[key]
            starts[key] = earlier if earlier > now else start
        return starts

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


def _by_value(offsets: dict[str, float]) -> dict[float, list[str]]:
    """Keys grouped by their value (a slot's offset or time), in insertion order."""
    groups: dict[float, list[str]] = {}
    for key, value in offsets.items():
        groups.setdefault(value, []).append(key)
    return groups


def _unused() -> None:
    """APScheduler wants a callable per job; the executor starts the window's runs instead."""
