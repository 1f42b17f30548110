"""`--storage.path`: each check's availability and latency history kept across restarts, in
one small append-only file (the format is `codecs/availability.py`'s).

Once a minute (`flush_seconds`) the agent appends each check's minute that has just ended: its
runs, successful runs and slowest run (12 bytes a check and minute, written in one batch);
at a clean stop it appends the minute under way too. The file's first use of a check's key
(its name, and a target list's target) names it. On start the file is read up to its last
good record: a file cut off mid-record (a crash, a full disk) or garbage is recovered up to
there and the rest dropped, counted in a log line, the damaged file kept beside as
`availability.nsav.damaged`; the agent never refuses to start over it. Each check then starts
from the hour and day it had, as far as they are still within an hour and a day of now;
a check that appears later (discovered targets) gets its own when it is first loaded.

So that the file never grows without bound, it is compacted — rewritten whole and renamed
over the old one — at every start and whenever it grows to four times the size its last
compaction left (at least `min_compact_bytes`): a compacted file holds, per check, its day
as 15-minute quarters and the minutes of its last hour, about 2 KB a check; checks gone from
the config are left out. Between compactions it grows by about 17 KB a check a day.

The event loop only copies the histories (about a microsecond a check, in slices); encoding
and every write, rename and fsync happen on one thread of the storage's own, so they never
hold up a run. A write that fails is logged, the file cut back to its last whole record, and
the history kept in memory; the next flush tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from exporter.codecs import availability as codec
from exporter.history import DAY_POINTS, DAY_STEP, POINTS, STEP, LatencyHistory

log = logging.getLogger(__name__)

FILE = "availability.nsav"
LOCK = "lock"
MAX_READ_BYTES = 256 << 20  # read at start, at most; the rest counts as dropped
_COPY_SLICE = 250  # histories copied per turn of the event loop (under a millisecond)
_QUARTER_MINUTES = int(DAY_STEP // STEP)

Snapshot = list[tuple[str, LatencyHistory]]


class Storage:
    """The availability file of one directory, locked against a second agent."""

    def __init__(self, directory: str, flush_seconds: float = STEP,
                 min_compact_bytes: int = 256 << 10,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.flush_seconds = flush_seconds
        self.min_compact_bytes = min_compact_bytes
        self._clock = clock
        self._fd = -1
        self._lock = -1
        self._ids: dict[str, int] = {}
        self.size = 0  # bytes of the file, all of them whole records
        self._limit = min_compact_bytes
        self._through = 0  # the last minute written
        self._failing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="netsentry-storage")
        # Recovered histories of checks not loaded yet (a discovered target found later).
        self.recovered: dict[str, LatencyHistory] = {}
        self.dropped = 0  # bytes dropped at start
        self.records = 0  # good records read at start
        self.compactions = 0
        self.written = 0  # bytes appended since start
        self.write_seconds = 0.0  # spent on the storage thread encoding and writing

    # --- start ----------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, recover the file and compact it; raises OSError when the
        directory cannot be used (not when the file is damaged)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = -1
            raise OSError(f"{self.directory}: in use by another netsentry (it holds "
                          f"{self.directory / LOCK})") from None
        now = self._clock()
        data, total = self._read()
        decoded = codec.decode(data)
        self.records = len(decoded.records)
        self.dropped = decoded.dropped + total - len(data)
        self.recovered = _histories(decoded.records, now)
        if self.dropped:
            log.warning("storage file damaged: recovered up to its last good record, the rest "
                        "dropped", extra={"path": str(self.path), "records": self.records,
                                          "dropped_bytes": self.dropped,
                                          "kept_as": f"{self.path}.damaged"})
            os.replace(self.path, f"{self.path}.damaged")
        # The minute under way is written again by the first flush, with the runs since.
        self._through = int(now // STEP) - 1
        self._compact(list(self.recovered.items()), now, through=int(now // STEP))
        log.info("storage opened", extra={"path": str(self.path), "records": self.records,
                                          "checks": len(self.recovered), "bytes": self.size})

    async def start(self) -> None:
        """`open()` on the storage thread: a large file takes a while to read (about half a
        second per 1,000 checks' day), and the agent answers /-/healthy meanwhile."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.open)

    def _read(self) -> tuple[bytes, int]:
        try:
            with open(self.path, "rb") as file:
                total = os.fstat(file.fileno()).st_size
                return file.read(MAX_READ_BYTES), total
        except FileNotFoundError:
            return b"", 0

    def adopt(self, histories: dict[str, LatencyHistory]) -> None:
        """Give checks loaded for the first time since start the history the file kept of
        them; call right after the store loaded them, before any of their runs."""
        if not self.recovered:
            return
        for key in self.recovered.keys() & histories.keys():
            histories[key] = self.recovered.pop(key)

    # --- while running --------------------------------------------------------------------

    async def run(self, histories: Callable[[], Mapping[str, LatencyHistory]]) -> None:
        """Flush each minute just after it ends, until cancelled."""
        while True:
            await asyncio.sleep(self.flush_seconds - self._clock() % self.flush_seconds + 1.0)
            await self.flush(histories())

    async def flush(self, histories: Mapping[str, LatencyHistory], final: bool = False) -> None:
        """Append the minutes ended since the last flush (and with `final`, the one under
        way) of every check."""
        snapshot = await _copies(histories)
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._append, snapshot, self._clock(), final)

    async def close(self, histories: Mapping[str, LatencyHistory]) -> None:
        """The last flush (the minute under way included), then let go of the directory."""
        if self._fd >= 0:
            await self.flush(histories, final=True)
        self._executor.shutdown(wait=True)
        for fd in (self._fd, self._lock):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock = -1

    # --- on the storage thread -------------------------------------------------------------

    def _append(self, snapshot: Snapshot, now: float, final: bool) -> None:
        started = time.perf_counter()
        minute = int(now // STEP)
        first, last = self._through + 1, minute if final else minute - 1
        if last < first and not self._failing:
            return
        records: list[codec.Record] = []
        slots: dict[int, list[tuple[int, int, int, int]]] = {}
        for key, history in snapshot:
            for slot, runs, ok, slowest in history.minutes(first, last):
                slots.setdefault(slot, []).append((self._id(key, records), runs, ok, slowest))
        for slot in sorted(slots):
            records += codec.minutes(slot, slots[slot])
        self._through = max(self._through, last)
        try:
            if self._failing:  # a failed write may have left a torn record: write anew
                self._compact(snapshot + list(self.recovered.items()), now)
            else:
                data = codec.encode(records)
                _write_all(self._fd, data)
                self.size += len(data)
                self.written += len(data)
                if self.size > self._limit:
                    self._compact(snapshot + list(self.recovered.items()), now)
            if self._failing:
                log.info("storage writes work again", extra={"path": str(self.path)})
            self._failing = False
        except OSError as exc:
            if not self._failing:
                log.error("storage write failed; the history is kept in memory and written "
                          "when writes work again", extra={"path": str(self.path),
                                                           "error": str(exc)})
            self._failing = True
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
        finally:
            self.write_seconds += time.perf_counter() - started

    def _id(self, key: str, records: list[codec.Record]) -> int:
        id_ = self._ids.get(key)
        if id_ is None:
            id_ = self._ids[key] = len(self._ids) + 1
            records.append(codec.Name(id_, key))
        return id_

    def _compact(self, sources: Snapshot, now: float, through: int | None = None) -> None:
        """Write the file anew from `sources`: each one's complete quarters, and the minutes
        of its hour up to `through` (the last one written); rename it over the old one."""
        quarter = int(now // DAY_STEP)
        first = int(now // STEP) - POINTS + 1  # the hour: the quarter under way is within it
        through = self._through if through is None else through
        ids: dict[str, int] = {}
        names: list[codec.Record] = []
        minutes: dict[int, list[tuple[int, int, int, int]]] = {}
        quarters: dict[int, list[tuple[int, int, int]]] = {}
        for key, history in sources:
            if key in ids:
                continue
            # A check's slots within the day, and of the hour's minutes those written: a
            # check gone for a day (removed while the agent was down) leaves no trace.
            kept_quarters = [q for q in history.quarters() if quarter - DAY_POINTS < q[0] < quarter]
            kept_minutes = list(history.minutes(first, through))
            if not kept_quarters and not kept_minutes:
                continue
            id_ = ids[key] = len(ids) + 1
            names.append(codec.Name(id_, key))
            for slot, runs, ok in kept_quarters:
                quarters.setdefault(slot, []).append((id_, runs, ok))
            for slot, runs, ok, slowest in kept_minutes:
                minutes.setdefault(slot, []).append((id_, runs, ok, slowest))
        records = names
        for slot in sorted(quarters):
            records += codec.quarters(slot, quarters[slot])
        for slot in sorted(minutes):
            records += codec.minutes(slot, minutes[slot])
        data = codec.HEADER + codec.encode(records)
        temporary = f"{self.path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._ids = ids
        self.size = len(data)
        self._limit = max(self.min_compact_bytes, 4 * self.size)
        self.compactions += 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def _copies(histories: Mapping[str, LatencyHistory]) -> Snapshot:
    """Copies of the histories, taken in slices between runs."""
    snapshot: Snapshot = []
    items = list(histories.items())
    for first in range(0, len(items), _COPY_SLICE):
        snapshot += [(key, history.copy()) for key, history in items[first:first + _COPY_SLICE]]
        await asyncio.sleep(0)
    return snapshot


def _histories(records: tuple[codec.Record, ...], now: float) -> dict[str, LatencyHistory]:
    """Each key's history from a file's records: a later entry for a slot replaces an earlier
    one; a quarter without a record of its own is the sum of its minutes."""
    keys: dict[int, str] = {}
    minutes: dict[str, dict[int, tuple[int, int, int, int]]] = {}
    quarters: dict[str, dict[int, tuple[int, int, int]]] = {}
    for record in records:
        if isinstance(record, codec.Name):
            keys[record.id] = record.key
            minutes.setdefault(record.key, {})
            quarters.setdefault(record.key, {})
        elif isinstance(record, codec.Minutes):
            slot = record.slot
            for id_, runs, ok, slowest in record.entries:
                minutes[keys[id_]][slot] = (slot, runs, ok, slowest)
        else:
            slot = record.slot
            for id_, runs, ok in record.entries:
                quarters[keys[id_]][slot] = (slot, runs, ok)
    histories = {}
    for key, kept_minutes in minutes.items():
        kept_quarters = quarters[key]
        if not kept_minutes and not kept_quarters:
            continue
        summed: dict[int, list[int]] = {}
        for slot, runs, ok, _ in kept_minutes.values():
            quarter = slot // _QUARTER_MINUTES
            if quarter not in kept_quarters:
                counts = summed.setdefault(quarter, [0, 0])
                counts[0] += runs
                counts[1] += ok
        for quarter, (runs, ok) in summed.items():
            kept_quarters[quarter] = (quarter, runs, ok)
        history = LatencyHistory()
        history.restore(kept_minutes.values(), kept_quarters.values(), now)
        if next(history.quarters(), None) is not None:  # else all older than a day
            histories[key] = history
    return histories
