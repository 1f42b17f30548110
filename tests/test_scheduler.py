"""The scheduler: spread start times, counts of missed and skipped runs, and wall-clock steps
answered by rescheduling — tested with an injected clock, never the system clock."""

import asyncio
import time
from collections import Counter
from itertools import pairwise

import pytest

from exporter.scheduler import (
    BATCH,
    SLOT,
    Scheduler,
    StepDetector,
    first_run,
    phase,
    slot_of,
)


class FakeClock:
    """Wall time = real time + offset; the test steps the offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


async def _noop(key: str) -> None:
    pass


def test_phase_is_stable_and_in_range() -> None:
    assert phase("a", 10) == phase("a", 10)
    assert phase("a", 10) != phase("b", 10)
    assert all(0 <= phase(f"check-{i}", 10) < 10 for i in range(1000))


def test_first_run_is_on_the_keys_slot_after_now() -> None:
    now = 1_700_000_000.123
    interval, number = slot_of("web", 30)
    assert number * SLOT <= phase("web", 30) < (number + 1) * SLOT
    start = first_run(interval, number, now)
    assert now < start <= now + 30
    cycles = (start - number * SLOT) / 30
    assert abs(cycles - round(cycles)) < 1e-9


def test_start_times_spread_over_the_interval() -> None:
    now = 1_700_000_000.0
    seconds = Counter(int(first_run(*slot_of(f"check-{i}", 10), now) - now)
                      for i in range(10_000))
    assert set(seconds) == set(range(10))
    assert all(800 < count < 1200 for count in seconds.values()), seconds


def test_step_detector() -> None:
    clock = FakeClock()
    steps = StepDetector(clock)
    assert steps.step() == 0.0
    clock.offset += 0.1  # below the threshold: reading two clocks is not atomic
    assert steps.step() == 0.0
    clock.offset += 3600
    assert abs(steps.step() - 3600) < 0.01
    assert steps.step() == 0.0  # reported once
    clock.offset -= 7200
    assert abs(steps.step() + 7200) < 0.01


def _stepped_schedule(step: float) -> tuple[dict[str, float], dict[str, float], float, int]:
    async def scenario() -> tuple[dict[str, float], dict[str, float], float, int]:
        clock = FakeClock()
        scheduler = Scheduler(_noop, clock=clock)
        scheduler.start(paused=True)
        scheduler.update({f"check-{i}": 10.0 for i in range(100)})
        before = scheduler.next_run_times()
        clock.offset += step
        seen = scheduler.check_clock()
        after = scheduler.next_run_times()
        steps = scheduler.steps
        scheduler.shutdown()
        return before, after, clock.time(), steps if abs(seen - step) < 0.01 else -1

    return asyncio.run(scenario())


def test_forward_step_does_not_burst() -> None:
    before, after, now, steps = _stepped_schedule(+3600)
    assert steps == 1
    # Unanswered, every job would be an hour overdue and run at once.
    assert all(t < now for t in before.values())
    assert all(abs(after[k] - before[k] - 3600) < 0.01 for k in before)
    # (`now` is read at the end: a slot may have come due while the paused test ran.)
    assert all(now - 1 < t <= now + 10 for t in after.values())


def test_backward_step_does_not_stall() -> None:
    before, after, now, steps = _stepped_schedule(-3600)
    assert steps == 1
    # Unanswered, every job would wait an hour.
    assert all(t > now + 3000 for t in before.values())
    assert all(now - 1 < t <= now + 10 for t in after.values())  # (as above)


def test_runs_on_schedule_and_counts_lag() -> None:
    runs: Counter[str] = Counter()

    async def run(key: str) -> None:
        runs[key] += 1

    async def scenario() -> Scheduler:
        scheduler = Scheduler(run)
        scheduler.start()
        scheduler.update({f"k{i}": 1.0 for i in range(50)})
        await asyncio.sleep(3.2)
        scheduler.shutdown()
        return scheduler

    scheduler = asyncio.run(scenario())
    assert set(runs) == {f"k{i}" for i in range(50)}
    assert all(3 <= n <= 4 for n in runs.values()), runs
    assert sum(scheduler.lag.counts) == sum(runs.values())
    assert not scheduler.missed and not scheduler.skipped


def test_a_full_slot_starts_in_groups_spread_over_it() -> None:
    """Keys sharing a slot start at most BATCH at a time, the groups spread over the slot, so
    that no run's timings include forty others' work; each group's lag is from its own
    planned start."""
    names = [f"c{i}" for i in range(2000)]
    crowd = [n for n in names if slot_of(n, 1.0) == (1.0, 3)][:3 * BATCH + 2]
    assert len(crowd) == 3 * BATCH + 2
    planned: dict[str, float] = {}

    async def scenario() -> None:
        scheduler = Scheduler(_noop)

        async def start_run(key: str, when: float) -> None:
            planned.setdefault(key, when)

        scheduler.start_run = start_run  # type: ignore[method-assign]
        scheduler.start()
        scheduler.update({name: 1.0 for name in crowd})
        await asyncio.sleep(1.3)
        scheduler.shutdown()

    asyncio.run(scenario())
    assert set(planned) == set(crowd)
    groups = Counter(planned.values())
    assert sorted(groups.values(), reverse=True) == [BATCH, BATCH, BATCH, 2]
    starts = sorted(groups)
    assert starts[-1] - starts[0] == pytest.approx(SLOT * 3 / 4, abs=1e-6)
    assert [b - a for a, b in pairwise(starts)] == pytest.approx([SLOT / 4] * 3, abs=1e-6)


def test_update_keeps_unchanged_and_removes_dropped() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(_noop)
        scheduler.start(paused=True)
        scheduler.update({"a": 10.0, "b": 10.0})
        first = scheduler.next_run_times()
        scheduler.update({"a": 10.0, "c": 20.0})
        second = scheduler.next_run_times()
        assert second["a"] == first["a"]
        assert set(second) == {"a", "c"}
        assert scheduler.keys() == ["a", "c"]
        scheduler.shutdown()

    asyncio.run(scenario())


def test_overlapping_run_is_skipped_and_counted() -> None:
    async def slow(key: str) -> None:
        await asyncio.sleep(2.5)

    async def scenario() -> Scheduler:
        scheduler = Scheduler(slow)
        scheduler.start()
        scheduler.update({"slow": 1.0})
        await asyncio.sleep(3.5)
        scheduler.shutdown()
        return scheduler

    scheduler = asyncio.run(scenario())
    assert scheduler.skipped["slow"] >= 1


def test_blocked_loop_counts_missed_runs() -> None:
    blocked = []

    async def run(key: str) -> None:
        if key == "blocker" and not blocked:
            blocked.append(True)
            time.sleep(3.5)  # hold the event loop hostage: the others' runs fall due

    async def scenario() -> Scheduler:
        scheduler = Scheduler(run)
        scheduler.start()
        scheduler.update({"blocker": 1.0, "victim": 1.0})
        await asyncio.sleep(6)
        scheduler.shutdown()
        return scheduler

    scheduler = asyncio.run(scenario())
    assert scheduler.missed["victim"] >= 2


def test_unschedule_cancels_the_run_in_flight() -> None:
    cancelled = []
    started = []

    async def run(key: str) -> None:
        started.append(key)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(key)
            raise

    async def scenario() -> None:
        scheduler = Scheduler(run)
        scheduler.start()
        scheduler.update({"gone": 1.0})
        # Until the run is under way: a task counted in flight but not yet stepped would be
        # cancelled before its first line (CI once caught it in that instant).
        for _ in range(80):
            await asyncio.sleep(0.05)
            if started:
                break
        assert scheduler.in_flight == 1
        scheduler.update({})
        await asyncio.sleep(0.05)
        scheduler.shutdown()

    asyncio.run(scenario())
    assert cancelled == ["gone"]
