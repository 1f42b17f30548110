"""The scheduler: spread start times, counts of missed and skipped runs, and wall-clock steps
answered by rescheduling.

Every test runs on virtual time (`tests/virtualtime.py`): the event loop, APScheduler and the
scheduler read one injected clock, which jumps to the next timer instead of waiting, so the
tests count exact runs, skips and misses and never read the system clock.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from itertools import pairwise

import pytest

from exporter.scheduler import (
    BATCH,
    SLOT,
    WINDOW,
    Scheduler,
    StepDetector,
    first_run,
    first_start,
    offset_in_window,
    phase,
    window_of,
)
from tests.virtualtime import EPOCH, VirtualClock, run

KEYS = [f"k{i}" for i in range(20)]


async def _noop(key: str) -> None:
    pass


def test_phase_is_stable_and_in_range() -> None:
    assert phase("a", 10) == phase("a", 10)
    assert phase("a", 10) != phase("b", 10)
    assert all(0 <= phase(f"check-{i}", 10) < 10 for i in range(1000))


@pytest.mark.parametrize("interval", [30.0, 2.5, 0.5])
def test_a_key_starts_on_its_slot_in_its_window_after_now(interval: float) -> None:
    now = 1_700_000_000.123
    for key in (f"web-{i}" for i in range(50)):
        interval_, number = window_of(key, interval)
        width = min(WINDOW, interval)
        assert number * width <= phase(key, interval) < (number + 1) * width
        # Its slot: the 50 ms its phase falls in, at its offset in the window.
        slot = number * width + offset_in_window(key, interval)
        assert slot <= phase(key, interval) < slot + SLOT
        assert 0 <= offset_in_window(key, interval) < width
        # The window's job first runs after now on the window's place in the grid, the key
        # on its slot's place within the interval.
        job = first_run(interval_, number, now)
        assert now < job <= now + interval
        assert abs((job - number * width) / interval - round((job - number * width) / interval)
                   ) < 1e-6
        start = first_start(key, interval, now)
        assert now < start <= now + interval
        cycles = (start - slot) / interval
        assert abs(cycles - round(cycles)) < 1e-6


def test_start_times_spread_over_the_interval() -> None:
    now = 1_700_000_000.0
    seconds = Counter(int(first_start(f"check-{i}", 10, now) - now) for i in range(10_000))
    assert set(seconds) == set(range(10))
    assert all(800 < count < 1200 for count in seconds.values()), seconds


def test_step_detector() -> None:
    clock = VirtualClock()
    steps = StepDetector(clock)
    assert steps.step() == 0.0
    clock.advance(5)  # time passing is no step
    assert steps.step() == 0.0
    clock.step(0.1)  # below the threshold: reading two clocks is not atomic
    assert steps.step() == 0.0
    clock.step(3600)
    assert steps.step() == pytest.approx(3600, abs=1e-6)
    assert steps.step() == 0.0  # reported once
    clock.step(-7200)
    assert steps.step() == pytest.approx(-7200, abs=1e-6)


def _stepped_schedule(step: float) -> tuple[dict[str, float], dict[str, float], float, float]:
    """Next run times of a paused scheduler before and after `check_clock` answers a step;
    the wall time then; the step it saw."""
    clock = VirtualClock()

    async def scenario() -> tuple[dict[str, float], dict[str, float], float, float]:
        scheduler = Scheduler(_noop, clock=clock)
        scheduler.start(paused=True)
        scheduler.update({f"check-{i}": 10.0 for i in range(100)})
        before = scheduler.next_run_times()
        clock.step(step)
        seen = scheduler.check_clock()
        after = scheduler.next_run_times()
        assert scheduler.steps == 1
        scheduler.shutdown()
        return before, after, clock.time(), seen

    return run(scenario, clock)


def test_forward_step_shifts_every_job_forward() -> None:
    before, after, now, seen = _stepped_schedule(+3600)
    assert seen == pytest.approx(3600, abs=1e-6)
    # Unanswered, every job would be an hour overdue and due at once.
    assert all(t < now - 3590 for t in before.values())
    assert all(after[k] - before[k] == pytest.approx(3600, abs=1e-5) for k in before)
    assert all(now < t <= now + 10 for t in after.values())


def test_backward_step_shifts_every_job_back() -> None:
    before, after, now, seen = _stepped_schedule(-3600)
    assert seen == pytest.approx(-3600, abs=1e-6)
    # Unanswered, every job would wait an hour.
    assert all(t > now + 3590 for t in before.values())
    assert all(after[k] - before[k] == pytest.approx(-3600, abs=1e-5) for k in before)
    assert all(now < t <= now + 10 for t in after.values())


def _runs_across_step(step: float, *, answered: bool = True
                      ) -> tuple[dict[str, list[float]], float, Scheduler]:
    """KEYS every second: 3 s, then the wall clock steps by `step`, then 5 s more. Returns each
    key's run starts (monotonic time), the moment of the step, and the scheduler."""
    clock = VirtualClock()
    starts: defaultdict[str, list[float]] = defaultdict(list)
    stepped = clock.monotonic() + 3.0

    async def record(key: str) -> None:
        starts[key].append(clock.monotonic())

    async def scenario() -> Scheduler:
        scheduler = Scheduler(record, clock=clock)
        if not answered:  # a detector that never fires: the scheduler as if it had none
            scheduler._steps = StepDetector(clock, threshold=math.inf)
        scheduler.start()
        scheduler.update(dict.fromkeys(KEYS, 1.0))
        await asyncio.sleep(3.0)
        clock.step(step)
        await asyncio.sleep(5.0)
        scheduler.shutdown()
        return scheduler

    scheduler = run(scenario, clock)
    return dict(starts), stepped, scheduler


@pytest.mark.parametrize("step", [+3600, -3600])
def test_a_step_under_a_running_scheduler_neither_bursts_nor_stalls(step: float) -> None:
    starts, _, scheduler = _runs_across_step(step)
    assert scheduler.steps == 1
    # Every key keeps its beat in monotonic time: 8 runs, one a second, 3 before the step
    # and 5 after; none missed, skipped or late.
    assert set(starts) == set(KEYS)
    for times in starts.values():
        assert [b - a for a, b in pairwise(times)] == pytest.approx([1.0] * 7, abs=1e-5)
    assert not scheduler.missed and not scheduler.skipped
    assert scheduler.lag.counts[0] == 8 * len(KEYS)  # every lag under the first bound


def test_unanswered_steps_would_burst_and_stall() -> None:
    """The control of the test above: without the detector, the same scenario goes wrong in
    exactly the ways the detector prevents."""
    starts, stepped, scheduler = _runs_across_step(+3600, answered=False)
    # Forward: an hour of runs falls due at once. Every key runs in the turn of the first
    # wakeup after the step; the rest of the hour counts as missed.
    firsts = {min(t for t in times if t > stepped) for times in starts.values()}
    assert max(firsts) - stepped < 1.0, firsts
    assert all(scheduler.missed[k] >= 3599 for k in KEYS), scheduler.missed
    starts, stepped, scheduler = _runs_across_step(-3600, answered=False)
    # Back: every job waits for the hour to come again; after the step, nothing runs but the
    # slots of the window's turn that was under way (they wait on the loop's clock).
    assert all(max(times) < stepped + WINDOW for times in starts.values())
    assert sum(len(times) for times in starts.values()) <= 4 * len(KEYS)
    assert scheduler.steps == 0


def test_runs_on_schedule_and_counts_lag() -> None:
    clock = VirtualClock()
    starts: defaultdict[str, list[float]] = defaultdict(list)

    async def record(key: str) -> None:
        starts[key].append(clock.time())

    async def scenario() -> Scheduler:
        scheduler = Scheduler(record, clock=clock)
        scheduler.start()
        scheduler.update({f"k{i}": 1.0 for i in range(50)})
        await asyncio.sleep(3.0)
        scheduler.shutdown()
        return scheduler

    scheduler = run(scenario, clock)
    # Each key's first run falls in the first second, on its own phase: three runs in three
    # seconds, exactly one second apart.
    assert {k: len(v) for k, v in starts.items()} == {f"k{i}": 3 for i in range(50)}
    for key, times in starts.items():
        assert times[0] - EPOCH == pytest.approx(first_start(key, 1.0, EPOCH) - EPOCH, abs=1e-5)
        assert [b - a for a, b in pairwise(times)] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert sum(scheduler.lag.counts) == 150 and scheduler.lag.counts[0] == 150
    assert not scheduler.missed and not scheduler.skipped


def test_a_thousand_checks_every_second_each_run_once_a_second() -> None:
    """1,000 keys every second for ten seconds, each run taking 5 ms: every key runs exactly
    once in every second, nothing is missed or skipped, and no run starts late.

    (What the same load costs a real agent, with real tcp checks: bench/scheduler_load.py.)"""
    names = [f"c{i:04d}" for i in range(1000)]
    # Groups are in play: slots with more than BATCH keys.
    assert max(Counter(int(phase(n, 1.0) / SLOT) for n in names).values()) > BATCH
    clock = VirtualClock()
    starts: defaultdict[str, list[float]] = defaultdict(list)

    async def connect(key: str) -> None:
        starts[key].append(clock.time())
        await asyncio.sleep(0.005)

    async def scenario() -> Scheduler:
        scheduler = Scheduler(connect, clock=clock)
        scheduler.start()
        scheduler.update(dict.fromkeys(names, 1.0))
        await asyncio.sleep(10.0)
        assert scheduler.in_flight <= BATCH  # only runs of the current slot
        scheduler.shutdown()
        return scheduler

    begun = clock.time()
    scheduler = run(scenario, clock)
    assert set(starts) == set(names)
    seconds = {name: [math.floor(t - begun) for t in times] for name, times in starts.items()}
    assert all(s == list(range(10)) for s in seconds.values()), (
        [(n, s) for n, s in seconds.items() if s != list(range(10))][:5])
    assert not scheduler.missed and not scheduler.skipped
    assert sum(scheduler.lag.counts) == 10_000 and scheduler.lag.counts[0] == 10_000


def test_a_full_slot_starts_in_groups_spread_over_it() -> None:
    """Keys sharing a slot start at most BATCH at a time, the groups spread over the slot, so
    that no run's timings include forty others' work; each group's lag is from its own
    planned start."""
    names = [f"c{i}" for i in range(2000)]
    crowd = [n for n in names if int(phase(n, 1.0) / SLOT) == 3][:3 * BATCH + 2]
    assert len(crowd) == 3 * BATCH + 2
    clock = VirtualClock()
    planned: dict[str, float] = {}
    started: dict[str, float] = {}

    async def scenario() -> None:
        scheduler = Scheduler(_noop, clock=clock)

        async def start_run(key: str, when: float) -> None:  # `when` is event-loop time
            planned.setdefault(key, when)
            started.setdefault(key, clock.monotonic())

        scheduler.start_run = start_run  # type: ignore[method-assign]
        scheduler.start()
        scheduler.update({name: 1.0 for name in crowd})
        await asyncio.sleep(1.3)
        scheduler.shutdown()

    run(scenario, clock)
    assert set(planned) == set(crowd)
    groups = Counter(planned.values())
    assert sorted(groups.values(), reverse=True) == [BATCH, BATCH, BATCH, 2]
    starts = sorted(groups)
    assert starts[-1] - starts[0] == pytest.approx(SLOT * 3 / 4, abs=1e-6)
    assert [b - a for a, b in pairwise(starts)] == pytest.approx([SLOT / 4] * 3, abs=1e-6)
    # Each group starts when it is planned to.
    assert all(started[k] == pytest.approx(planned[k], abs=1e-5) for k in crowd)


def test_update_keeps_unchanged_and_removes_dropped() -> None:
    clock = VirtualClock()

    async def scenario() -> None:
        scheduler = Scheduler(_noop, clock=clock)
        scheduler.start(paused=True)
        scheduler.update({"a": 10.0, "b": 10.0})
        first = scheduler.next_run_times()
        scheduler.update({"a": 10.0, "c": 20.0})
        second = scheduler.next_run_times()
        assert second["a"] == first["a"]
        assert set(second) == {"a", "c"}
        assert scheduler.keys() == ["a", "c"]
        assert scheduler.jobs == len({scheduler.job_of("a"), scheduler.job_of("c")})
        scheduler.shutdown()

    run(scenario, clock)


def test_overlapping_run_is_skipped_and_counted() -> None:
    """A run of 2.5 s every second: the two turns that fall while it runs are skipped, the
    third starts."""
    clock = VirtualClock()
    starts: list[float] = []

    async def slow(key: str) -> None:
        starts.append(clock.time())
        await asyncio.sleep(2.5)

    async def scenario() -> Scheduler:
        scheduler = Scheduler(slow, clock=clock)
        scheduler.start()
        scheduler.update({"slow": 1.0})
        first = scheduler.next_run_times()["slow"]
        await asyncio.sleep(first + 3.2 - clock.time())
        assert scheduler.in_flight == 1
        scheduler.shutdown()
        return scheduler

    scheduler = run(scenario, clock)
    assert [t - starts[0] for t in starts] == pytest.approx([0.0, 3.0], abs=1e-5)
    assert scheduler.skipped["slow"] == 2
    assert not scheduler.missed


def _named(prefix: str, interval: float, window: int) -> str:
    """A key of `interval` whose slot opens its window `window`."""
    return next(name for name in (f"{prefix}-{i}" for i in range(100_000))
                if window_of(name, interval) == (interval, window)
                and offset_in_window(name, interval) == 0)


def test_blocked_loop_counts_missed_runs() -> None:
    """The blocker's first run holds the event loop for 23 s of a 10 s interval (as CPU-bound
    work would): the runs that fell due meanwhile are counted as missed, the newest of each key
    runs at once, and its lag is how late it started."""
    interval, block = 10.0, 23.0
    blocker, victim = _named("blocker", interval, 0), _named("victim", interval, 1)
    clock = VirtualClock()
    starts: defaultdict[str, list[float]] = defaultdict(list)

    async def work(key: str) -> None:
        starts[key].append(clock.time())
        if key == blocker and len(starts[key]) == 1:
            clock.advance(block)  # time passes, the loop does not turn

    plan: dict[str, float] = {}

    async def scenario() -> Scheduler:
        scheduler = Scheduler(work, clock=clock)
        scheduler.start()
        scheduler.update({blocker: interval, victim: interval})
        plan.update(scheduler.next_run_times())
        await asyncio.sleep(plan[blocker] + block + 0.01 - clock.time())
        scheduler.shutdown()
        return scheduler

    scheduler = run(scenario, clock)
    blocked, resumed = plan[blocker], plan[blocker] + block
    # The victim's turns in (blocked, resumed], a second after each of the blocker's: the
    # newest ran when the loop came back, less than half an interval late.
    due = [t for k in range(-1, 5)
           if blocked < (t := plan[victim] + k * interval) <= resumed]
    assert len(due) == 3
    assert scheduler.missed == {blocker: 1, victim: 2}
    assert starts[blocker] == pytest.approx([blocked, resumed], abs=1e-5)
    assert starts[victim][-1] == pytest.approx(resumed, abs=1e-5)
    # Late by 3 s (the blocker's turn at blocked + 20) and by resumed - due[-1].
    assert scheduler.lag.sum == pytest.approx(3.0 + resumed - due[-1], abs=1e-4)


def test_a_blocked_turn_later_than_half_an_interval_is_missed_not_run() -> None:
    """Past misfire_grace_time (half the interval) a late turn is counted as missed, and
    nothing starts for it."""
    interval = 10.0
    key = _named("late", interval, 0)
    other = _named("blocker", interval, 4)
    clock = VirtualClock()
    starts: defaultdict[str, list[float]] = defaultdict(list)

    async def work(name: str) -> None:
        starts[name].append(clock.time())
        if name == other and len(starts[name]) == 1:
            clock.advance(12.0)  # to 6 s past `key`'s turn

    plan: dict[str, float] = {}

    async def scenario() -> Scheduler:
        scheduler = Scheduler(work, clock=clock)
        scheduler.start()
        scheduler.update({key: interval, other: interval})
        plan.update(scheduler.next_run_times())
        await asyncio.sleep(plan[other] + 13.0 - clock.time())
        scheduler.shutdown()
        return scheduler

    scheduler = run(scenario, clock)
    turn = next(t for k in range(3) if (t := plan[key] + k * interval) > plan[other])
    assert turn + interval / 2 < plan[other] + 12.0  # due, and more than 5 s late when seen
    assert scheduler.missed == {key: 1}
    assert [t for t in starts[key] if t >= turn] == []
    assert len(starts[other]) == 2  # its own turn, 2 s late, ran


def test_unschedule_cancels_the_run_in_flight() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    runs: list[str] = []

    async def hang(key: str) -> None:
        runs.append(key)
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    clock = VirtualClock()

    async def scenario() -> Scheduler:
        scheduler = Scheduler(hang, clock=clock)
        scheduler.start()
        scheduler.update({"gone": 1.0})
        # Until the run is under way: a task counted in flight but not yet stepped would be
        # cancelled before its first line.
        await asyncio.wait_for(started.wait(), 2)  # (virtual seconds: it is due within one)
        assert scheduler.in_flight == 1
        scheduler.update({})
        await asyncio.wait_for(cancelled.wait(), 1)
        assert scheduler.in_flight == 0
        await asyncio.sleep(5)  # and it never runs again
        scheduler.shutdown()
        return scheduler

    scheduler = run(scenario, clock)
    assert runs == ["gone"]
    assert scheduler.keys() == [] and scheduler.jobs == 0
