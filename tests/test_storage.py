"""`--storage.path`'s file: the hour and day of every check kept across a restart, the file
recovered whatever a crash or a disk left of it, and never growing without bound."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import pytest

from exporter import storage as storage_module
from exporter.codecs import availability as codec
from exporter.history import DAY_STEP, STEP, Availability, LatencyHistory
from exporter.storage import FILE, Storage

T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY_STEP  # the start of a quarter


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(histories: dict[str, LatencyHistory], clock: Clock, seconds: int,
        success: object = lambda t: True, every: float = 10.0) -> None:
    """Runs of every check every `every` seconds for `seconds` from the clock's now."""
    start = clock.now
    t = start
    while t < start + seconds:
        for history in histories.values():
            history.add(t, 0.002, bool(success(t)))  # type: ignore[operator]
        t += every
    clock.now = start + seconds


def reopen(directory: Path, clock: Clock, **kwargs: object) -> Storage:
    storage = Storage(str(directory), clock=clock, **kwargs)  # type: ignore[arg-type]
    storage.open()
    return storage


def figures(history: LatencyHistory, now: float) -> tuple[Availability, Availability]:
    return history.hour(now), history.last_day(now)


def test_a_restart_keeps_the_hour_and_the_day(tmp_path: Path) -> None:
    clock = Clock(T0)
    storage = reopen(tmp_path, clock)
    histories = {"a": LatencyHistory(), "fleet\t10.0.0.1": LatencyHistory()}
    storage.adopt(histories)
    for _ in range(90):  # an hour and a half, flushed each minute, one run in 6 failing
        run(histories, clock, 60, success=lambda t: int(t) % 60 != 0)
        asyncio.run(storage.flush(histories))
    clock.now += 25  # and part of a minute, written at the stop
    histories["a"].add(clock.now - 1, 0.004, False)
    before = {key: figures(h, clock.now) for key, h in histories.items()}
    windows = {key: h.window(clock.now) for key, h in histories.items()}
    asyncio.run(storage.close(histories))

    clock.now += 5
    again = reopen(tmp_path, clock)
    fresh = {"a": LatencyHistory(), "fleet\t10.0.0.1": LatencyHistory(), "new": LatencyHistory()}
    again.adopt(fresh)
    assert {key: figures(h, clock.now) for key, h in fresh.items() if key != "new"} == before
    # 6 runs a minute, the one at :00 failing: 59 whole minutes in the hour, and the last run
    assert before["a"][0] == Availability(355, 295)
    assert before["a"][1] == Availability(541, 450)
    assert {key: fresh[key].window(clock.now) for key in windows} == windows
    assert figures(fresh["new"], clock.now) == (Availability(0, 0), Availability(0, 0))
    assert again.dropped == 0
    asyncio.run(again.close(fresh))


def test_a_check_loaded_later_gets_its_history_when_it_comes(tmp_path: Path) -> None:
    clock = Clock(T0)
    storage = reopen(tmp_path, clock)
    histories = {"found": LatencyHistory()}
    run(histories, clock, 300)
    asyncio.run(storage.close(histories))
    again = reopen(tmp_path, clock)
    again.adopt({})  # the first config has no such check yet (a discovered target)
    asyncio.run(again.flush({}))
    later = {"found": LatencyHistory()}
    again.adopt(later)
    assert later["found"].last_day(clock.now) == Availability(30, 30)
    asyncio.run(again.close(later))


@pytest.mark.parametrize("damage", ["truncated", "garbage-after", "garbage-only", "zeros"])
def test_a_damaged_file_is_recovered_up_to_its_last_good_record(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    storage = reopen(tmp_path, clock)
    histories = {"a": LatencyHistory(), "b": LatencyHistory()}
    for _ in range(5):
        run(histories, clock, 60)
        asyncio.run(storage.flush(histories))
    asyncio.run(storage.close(histories))
    path = tmp_path / FILE
    data = path.read_bytes()
    good = codec.decode(data)
    last_record = len(codec.encode(good.records[-1:]))
    damaged, kept = {
        "truncated": (data[:-5], good.records[:-1]),
        "garbage-after": (data + os.urandom(3000), good.records),
        "garbage-only": (os.urandom(3000), ()),
        "zeros": (bytes(4096), ()),
    }[damage]
    path.write_bytes(damaged)
    caplog.set_level(logging.INFO, logger="exporter.storage")
    again = reopen(tmp_path, clock)
    dropped = len(damaged) - len(codec.HEADER + codec.encode(kept)) if kept else len(damaged)
    assert again.dropped == dropped > 0
    if damage == "truncated":
        assert dropped == last_record - 5
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.dropped_bytes == dropped and warning.records == len(kept)  # type: ignore[attr-defined]
    assert (tmp_path / f"{FILE}.damaged").read_bytes() == damaged
    fresh = {"a": LatencyHistory(), "b": LatencyHistory()}
    again.adopt(fresh)
    # 5 minutes of 6 runs each a check; cut short, the last record (b's name, or the last
    # minute of both) is lost; garbage costs nothing before it.
    runs = {key: h.last_day(clock.now).runs for key, h in fresh.items()}
    assert runs == {"truncated": {"a": 24, "b": 24}, "garbage-after": {"a": 30, "b": 30},
                    "garbage-only": {"a": 0, "b": 0}, "zeros": {"a": 0, "b": 0}}[damage]
    # The file is whole again: appends after it are read back.
    run(fresh, clock, 60)
    asyncio.run(again.close(fresh))
    assert codec.decode(path.read_bytes()).dropped == 0


def test_the_file_stays_bounded(tmp_path: Path) -> None:
    """Three days of 50 checks every 10 s: compaction keeps the file within four times the
    size a compaction leaves, and only the checks still loaded."""
    clock = Clock(T0)
    storage = reopen(tmp_path, clock, min_compact_bytes=16 << 10)
    histories = {f"check-{i}": LatencyHistory() for i in range(50)}
    sizes = []
    for minute in range(3 * 1440):
        run(histories, clock, 60, every=10)
        if minute == 1440:
            del histories["check-0"]  # removed from the config
        asyncio.run(storage.flush(histories))
        sizes.append(storage.size)
        assert storage.size == (tmp_path / FILE).stat().st_size
    compacted = 50 * (12 * 60 + 12 * 96)  # about what a compaction leaves, at most
    print(f"file sizes: at most {max(sizes)} bytes, after the last compaction "
          f"{storage._limit // 4}")
    assert max(sizes) <= 4 * compacted + 12 * 50  # the limit, and one minute's batch past it
    assert storage.compactions >= 3
    keys = {r.key for r in codec.decode((tmp_path / FILE).read_bytes()).records
            if isinstance(r, codec.Name)}
    assert "check-0" not in keys and len(keys) == 49
    asyncio.run(storage.close(histories))
    again = reopen(tmp_path, clock)
    fresh = {key: LatencyHistory() for key in histories}
    again.adopt(fresh)
    # The last day is 95 whole quarters and the one under way, empty: it has just begun.
    assert fresh["check-1"].last_day(clock.now) == Availability(8550, 8550)
    assert fresh["check-1"].hour(clock.now) == Availability(354, 354)
    assert figures(fresh["check-9"], clock.now) == figures(histories["check-9"], clock.now)
    asyncio.run(again.close(fresh))


def test_a_second_agent_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    clock = Clock(T0)
    first = reopen(tmp_path, clock)
    with pytest.raises(OSError, match="in use by another netsentry"):
        reopen(tmp_path, clock)
    asyncio.run(first.close({}))
    asyncio.run(reopen(tmp_path, clock).close({}))  # free again once the first let go


def test_a_failed_write_is_retried_and_leaves_no_torn_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills up: each write gets half its bytes out, then ENOSPC."""
    clock = Clock(T0)
    storage = reopen(tmp_path, clock)
    histories = {"a": LatencyHistory()}
    real_write = storage_module._write_all

    def full_disk(fd: int, data: bytes) -> None:
        real_write(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_module, "_write_all", full_disk)
    caplog.set_level(logging.INFO, logger="exporter.storage")
    for _ in range(3):
        run(histories, clock, 60)
        asyncio.run(storage.flush(histories))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "No space left" in errors[0].error  # type: ignore[attr-defined]
    # Cut back to its last whole record: what is on disk still reads whole.
    assert codec.decode((tmp_path / FILE).read_bytes()).dropped == 0
    monkeypatch.setattr(storage_module, "_write_all", real_write)
    run(histories, clock, 60)
    asyncio.run(storage.flush(histories))  # works again: the file is written anew, whole
    assert any(r.getMessage() == "storage writes work again" for r in caplog.records)
    asyncio.run(storage.close(histories))
    again = reopen(tmp_path, clock)
    fresh = {"a": LatencyHistory()}
    again.adopt(fresh)
    assert again.dropped == 0 and fresh["a"].hour(clock.now) == Availability(24, 24)
    asyncio.run(again.close(fresh))


def test_the_write_cost(tmp_path: Path) -> None:
    """A flush of 10,000 checks: the loop's share is the copies; the rest is on the storage
    thread. Printed, not asserted against a time (figures in docs/performance.md)."""
    clock = Clock(T0)
    storage = reopen(tmp_path, clock)
    histories = {f"check-{i}": LatencyHistory() for i in range(10_000)}
    run(histories, clock, 60, every=30)
    asyncio.run(storage.flush(histories))
    assert storage.written >= 10_000 * 12  # one minute of each, and its name
    print(f"flush of 10,000 checks: {storage.written} bytes, "
          f"{storage.write_seconds * 1e3:.1f} ms on the storage thread")
    asyncio.run(storage.close(histories))
    assert STEP == 60


def test_a_check_gone_for_a_day_leaves_no_trace(tmp_path: Path) -> None:
    """Removed while the agent was down: its history is in the file, never adopted; a day
    later it is dropped, so that such checks cannot pile up in the file."""
    clock = Clock(T0)
    storage = reopen(tmp_path, clock)
    histories = {"gone": LatencyHistory(), "stays": LatencyHistory()}
    run(histories, clock, 300)
    asyncio.run(storage.close(histories))
    clock.now += 3600
    again = reopen(tmp_path, clock)
    assert set(again.recovered) == {"gone", "stays"}  # within the day: kept for its return
    stays = {"stays": LatencyHistory()}
    again.adopt(stays)
    run(stays, clock, 60)
    asyncio.run(again.close(stays))
    clock.now += 86_400
    later = reopen(tmp_path, clock)
    assert later.recovered == {}
    names = [r for r in codec.decode((tmp_path / FILE).read_bytes()).records
             if isinstance(r, codec.Name)]
    assert names == []
    asyncio.run(later.close({}))
