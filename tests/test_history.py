"""The latency history behind the status page's sparklines: one hour, bounded, compact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exporter.config.load import load_text
from exporter.history import DAY_POINTS, DAY_STEP, POINTS, STEP, Availability, LatencyHistory
from exporter.store import Result, Store

T0 = 1_700_000_000.0 - 1_700_000_000.0 % STEP  # the start of a slot


def us(seconds: float) -> int:
    return round(seconds * 1e6)


def test_a_slot_keeps_its_slowest_success_and_whether_any_run_failed() -> None:
    history = LatencyHistory()
    history.add(T0 + 1, 0.002, True)
    history.add(T0 + 2, 0.005, True)
    history.add(T0 + 3, 0.003, True)
    history.add(T0 + 4, 4.0, False)  # a timeout: marks the slot, is not latency
    history.add(T0 + STEP + 1, 0.001, True)
    window = history.window(T0 + STEP + 2)
    assert len(window.slowest) == len(window.failed) == POINTS
    assert window.start == T0 + 2 * STEP - POINTS * STEP
    assert window.slowest[-2:] == (us(0.005), us(0.001))
    assert window.failed[-2:] == b"\x01\x00"
    assert window.slowest[:-2] == (None,) * (POINTS - 2)


def test_a_slot_with_only_failures_has_no_latency() -> None:
    history = LatencyHistory()
    history.add(T0, 0.5, False)
    window = history.window(T0)
    assert window.slowest[-1] is None and window.failed[-1] == 1


def test_the_window_ends_now_and_forgets_what_is_older_than_an_hour() -> None:
    history = LatencyHistory()
    history.add(T0, 0.001, True)
    history.add(T0 + 10 * STEP, 0.002, True)
    # Twenty minutes without a run: the window moves on, the old points move left.
    window = history.window(T0 + 30 * STEP)
    assert window.slowest[-31] == us(0.001) and window.slowest[-21] == us(0.002)
    assert sum(v is not None for v in window.slowest) == 2
    assert history.window(T0 + (POINTS - 1) * STEP).slowest[0] == us(0.001)
    assert history.window(T0 + POINTS * STEP).slowest[0] is None
    assert history.window(T0 + (POINTS + 10) * STEP).slowest == (None,) * POINTS


def test_skipped_slots_are_cleared_when_the_ring_comes_round() -> None:
    history = LatencyHistory()
    for minute in range(POINTS):
        history.add(T0 + minute * STEP, 0.001, minute % 2 == 0)
    history.add(T0 + (POINTS + 5) * STEP, 0.009, True)  # wraps past six old slots
    window = history.window(T0 + (POINTS + 5) * STEP)
    assert window.slowest[-6:] == (None,) * 5 + (us(0.009),)
    assert window.failed[-6:] == bytes(6)
    assert window.slowest[-7] is None and window.failed[-7] == 1  # minute 59 failed


def test_a_small_clock_step_back_adds_to_the_newest_slot_a_large_one_starts_afresh() -> None:
    history = LatencyHistory()
    history.add(T0 + STEP + 1, 0.001, True)
    history.add(T0 + STEP - 1, 0.004, True)  # one slot back: still the newest slot
    window = history.window(T0 + STEP - 1)  # and the page, asked at the stepped-back time
    assert window.slowest[-1] == us(0.004) and window.slowest[-2] is None
    history.add(T0 - 3600, 0.002, True)  # an hour back: a fresh start there
    window = history.window(T0 - 3600)
    assert window.slowest[-1] == us(0.002)
    assert sum(v is not None for v in window.slowest) == 1


runs = st.lists(st.tuples(st.floats(0, 400), st.floats(0, 10), st.booleans()), max_size=200)


@given(runs, st.floats(0, 4000))
def test_matches_a_model_that_keeps_every_run(steps: list[tuple[float, float, bool]],
                                              later: float) -> None:
    history = LatencyHistory()
    kept: list[tuple[float, float, bool]] = []
    now = T0
    for gap, duration, success in steps:
        now += gap
        history.add(now, duration, success)
        kept.append((now, duration, success))
    now += later
    window = history.window(now)
    end = int(now // STEP)
    for i, slot in enumerate(range(end - POINTS + 1, end + 1)):
        runs_in_slot = [(d, ok) for t, d, ok in kept if int(t // STEP) == slot]
        ok_durations = [d for d, ok in runs_in_slot if ok]
        assert window.slowest[i] == (us(max(ok_durations)) if ok_durations else None)
        assert window.failed[i] == any(not ok for _, ok in runs_in_slot)


day_runs = st.lists(st.tuples(st.floats(0, 4000), st.booleans()), max_size=120)


@given(day_runs, st.floats(0, 100_000))
def test_availability_matches_a_model_that_keeps_every_run(
        steps: list[tuple[float, bool]], later: float) -> None:
    history = LatencyHistory()
    kept: list[tuple[float, bool]] = []
    now = T0
    for gap, success in steps:
        now += gap
        history.add(now, 0.001, success)
        kept.append((now, success))
    now += later

    def counted(step: float, points: int) -> Availability:
        end = int(now // step)
        runs = [ok for t, ok in kept if end - points < int(t // step) <= end]
        return Availability(len(runs), sum(runs))

    assert history.hour(now) == counted(STEP, POINTS)
    assert history.last_day(now) == counted(DAY_STEP, DAY_POINTS)
    day = history.day(now)
    assert (sum(day.runs), sum(day.successful)) == (history.last_day(now).runs,
                                                    history.last_day(now).successful)
    # What storage keeps of it gives the same figures back.
    again = LatencyHistory()
    again.restore(history.minutes(int(now // STEP) - POINTS + 1, int(now // STEP)),
                  history.quarters(), now)
    assert (again.hour(now), again.last_day(now)) == (history.hour(now), history.last_day(now))
    assert again.window(now) == history.window(now)


def test_a_minute_counts_at_most_65535_runs_and_stays_right() -> None:
    history = LatencyHistory()
    for i in range(70_000):
        history.add(T0 + i / 2000, 0.0, i % 2 == 0)
    hour = history.hour(T0 + 30)
    assert hour.runs == 65_535 and hour.successful == 32_768
    assert history.last_day(T0 + 30) == Availability(70_000, 35_000)


TEXT = """
[[checks]]
name = "a"
kind = "tcp"
target = "127.0.0.1:80"

[[checks]]
name = "b"
kind = "tcp"
target = "127.0.0.1:81"
"""


def test_the_store_keeps_a_history_as_long_as_the_check_is_unchanged() -> None:
    store = Store()
    store.load(load_text(TEXT, "t.toml").checks)
    for name in ("a", "b"):
        store.record(name, store.states[name].check, Result(True, None, "", 0.003, T0))
    assert store.histories["a"].window(T0).slowest[-1] == us(0.003)
    # b changes and starts a fresh hour; a is unchanged and keeps its hour.
    store.load(load_text(TEXT.replace(":81", ":82"), "t.toml").checks)
    assert store.histories["a"].window(T0).slowest[-1] == us(0.003)
    assert store.histories["b"].window(T0).slowest == (None,) * POINTS
    # A run of the old b, finishing after the reload, is not counted.
    old_b = load_text(TEXT, "t.toml").checks[1]
    assert store.record("b", old_b, Result(True, None, "", 0.003, T0)) is None
    assert store.histories["b"].window(T0).slowest == (None,) * POINTS
    # A removed check takes its hour along.
    store.load(load_text(TEXT.split("[[checks]]\nname = \"b\"")[0], "t.toml").checks)
    assert set(store.histories) == {"a"}
