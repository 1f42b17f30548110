"""`--storage.path`'s cost: what a flush costs the event loop and the storage thread, what the
file holds per check per day, and how long a start takes to recover it.

    .venv/bin/python bench/storage.py [--checks 10000] [--hours 24] [--interval 10]

Simulates N checks running every `--interval` seconds for `--hours` (a clock of its own,
no sleeping), flushing every minute as the agent does, into a temporary directory; then
reports, in this process:
- per flush: the event loop's share (copying the histories, in its slices; the median and the
  longest slice) and the storage thread's (encoding, writing, and compacting when due);
- the bytes appended per check per day, the file's size after each compaction and at most,
  and how many compactions there were;
- the time a start takes to read, recover and compact the file, and the memory of the
  histories (tracemalloc) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter import app
from exporter import storage as storage_module
from exporter.history import DAY_STEP, STEP, LatencyHistory
from exporter.storage import FILE, Storage


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--interval", type=float, default=10.0)
    args = parser.parse_args()
    start = 1_800_000_000.0 - 1_800_000_000.0 % DAY_STEP
    clock = Clock(start)
    directory = tempfile.mkdtemp(prefix="netsentry-storage-")
    storage = Storage(directory, clock=clock)
    storage.open()
    tracemalloc.start()
    histories = {f"check-{i}\t10.0.{i // 256 % 256}.{i % 256}:443": LatencyHistory()
                 for i in range(args.checks)}
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    app._tune_gc()  # as the agent runs: what exists now is out of the collector's passes
    runs_per_minute = max(1, round(STEP / args.interval))
    loop_times: list[float] = []
    slices: list[float] = []
    thread_times: list[float] = []
    sizes: list[int] = []
    real_copies = storage_module._copies

    async def timed_copies(items: object) -> storage_module.Snapshot:
        # The loop's share as the agent pays it: each slice between two turns of the loop.
        snapshot: storage_module.Snapshot = []
        listed = list(histories.items())
        began = time.perf_counter()
        for first in range(0, len(listed), storage_module._COPY_SLICE):
            t = time.perf_counter()
            snapshot += [(k, h.copy()) for k, h in listed[first:first + storage_module._COPY_SLICE]]
            slices.append(time.perf_counter() - t)
            await asyncio.sleep(0)
        loop_times.append(time.perf_counter() - began)
        return snapshot

    storage_module._copies = timed_copies  # type: ignore[assignment]
    minutes = int(args.hours * 60)

    async def simulate() -> None:
        for minute in range(minutes):
            base = start + minute * STEP
            for k in range(runs_per_minute):
                t = base + k * args.interval + 0.5
                for i, history in enumerate(histories.values()):
                    history.add(t, 0.0002 + (i % 50) * 1e-5, (i + minute) % 97 != 0)
            clock.now = base + STEP + 1
            before = storage.write_seconds
            await storage.flush(histories)
            thread_times.append(storage.write_seconds - before)
            sizes.append(storage.size)

    asyncio.run(simulate())
    storage_module._copies = real_copies
    appended = storage.written
    compactions = storage.compactions - 1  # the one at start
    asyncio.run(storage.close(histories))
    size = (Path(directory) / FILE).stat().st_size
    t = time.perf_counter()
    again = Storage(directory, clock=clock)
    again.open()
    recovery = time.perf_counter() - t
    asyncio.run(again.close({}))
    shutil.rmtree(directory)
    days = minutes / 1440
    ms = 1e3
    print(f"{args.checks} checks every {args.interval:g} s for {args.hours:g} h "
          f"({minutes} flushes)")
    per_check = statistics.median(loop_times) / args.checks * 1e6
    slices.sort()
    print(f"per flush, event loop: median {statistics.median(loop_times) * ms:.1f} ms in "
          f"slices of {storage_module._COPY_SLICE} (slice p99 "
          f"{slices[len(slices) * 99 // 100] * ms:.2f} ms, longest {slices[-1] * ms:.2f} ms); "
          f"per check {per_check:.2f} µs")
    print(f"per flush, storage thread: median {statistics.median(thread_times) * ms:.1f} ms, "
          f"longest {max(thread_times) * ms:.1f} ms (with a compaction); per check "
          f"{statistics.median(thread_times) / args.checks * 1e6:.2f} µs")
    print(f"appended: {appended / args.checks / days:,.0f} bytes per check per day; "
          f"{compactions} compactions; file at most {max(sizes) / args.checks:,.0f} bytes "
          f"per check, {size / args.checks:,.0f} at the end ({size / 2**20:.1f} MiB)")
    print(f"start: read, recover and compact in {recovery * ms:.0f} ms; histories in memory "
          f"{memory / args.checks:,.0f} bytes per check")


if __name__ == "__main__":
    main()
