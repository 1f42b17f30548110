"""What a wake-up costs this process: CPU per `asyncio.sleep(gap)` for a few gaps.

    .venv/bin/python bench/wakeups.py [--seconds 4]

An event loop that sleeps between runs pays, on each wake-up, for whatever the machine does
to resume it (timer interrupts, a virtual CPU brought back by its host, cold caches). On the
2-core CI VMs this costs more than a tcp check, which is why the scheduler starts the checks
of one 50 ms slot together, and why paced probes cost blackbox_exporter more than probes at
full speed. Nothing is sent anywhere; it prints µs of CPU (user + system) per wake-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

GAPS = (0.0, 0.001, 0.01, 0.05)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def per_wakeup(gap: float, seconds: float) -> tuple[float, int]:
    """CPU µs per wake-up over about `seconds` of sleeping `gap` at a time."""
    rounds = 200_000 if gap == 0 else max(int(seconds / gap), 20)
    started = cpu_seconds()
    deadline = time.monotonic() + seconds * 2  # bounded even if sleeps overrun
    done = 0
    for done in range(1, rounds + 1):  # noqa: B007 - the count is the result
        await asyncio.sleep(gap)
        if time.monotonic() > deadline:
            break
    return (cpu_seconds() - started) / done * 1e6, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per gap, about")
    args = parser.parse_args()
    if not 0.5 <= args.seconds <= 60:
        parser.error("--seconds in [0.5, 60]")
    print(f"{'sleep':>9}  {'wake-ups':>9}  {'CPU per wake-up':>16}")
    for gap in GAPS:
        cost, count = asyncio.run(per_wakeup(gap, args.seconds))
        print(f"{gap * 1000:7g} ms  {count:9d}  {cost:13.1f} µs")
    print(f"(CPU from os.times(), clock ticks of 1/{os.sysconf('SC_CLK_TCK')} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
