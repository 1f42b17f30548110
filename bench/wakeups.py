"""What a wake-up costs this process: CPU per `asyncio.sleep(gap)` for a few gaps.

    .venv/bin/python bench/wakeups.py [--seconds 4] [--loop asyncio,uvloop] [--rounds 3]

An event loop that sleeps between runs pays, on each wake-up, for whatever the machine does
to resume it (timer interrupts, a virtual CPU brought back by its host, cold caches). On the
2-core CI VMs this costs more than a tcp check, which is why the scheduler starts the checks
of one 50 ms slot together, and why paced probes cost blackbox_exporter more than probes at
full speed. Nothing is sent anywhere; it prints µs of CPU (user + system) per wake-up.
With several --loop values (exporter/loop.py's names) each gap is measured on each loop in
each of --rounds rounds, the loops' order alternating, and the medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from exporter import loop

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
    parser.add_argument("--loop", default="asyncio",
                        help="comma-separated event loops: asyncio, uvloop (default asyncio)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not 0.5 <= args.seconds <= 60:
        parser.error("--seconds in [0.5, 60]")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds in [1, 20]")
    loops = [x.strip() for x in args.loop.split(",") if x.strip()]
    try:
        for name in loops:
            loop.resolve(name)
    except ValueError as exc:
        parser.error(f"--loop: {exc}")
    costs: dict[tuple[str, float], list[float]] = {}
    print(f"{'round':>5}  {'loop':>8}  {'sleep':>9}  {'wake-ups':>9}  {'CPU per wake-up':>16}")
    for round_ in range(args.rounds):
        for name in loops if round_ % 2 == 0 else loops[::-1]:
            for gap in GAPS:
                cost, count = loop.run(per_wakeup(gap, args.seconds), name)
                costs.setdefault((name, gap), []).append(cost)
                print(f"{round_ + 1:>5}  {name:>8}  {gap * 1000:7g} ms  {count:9d}  "
                      f"{cost:13.1f} µs", flush=True)
    if args.rounds > 1 or len(loops) > 1:
        print("\nmedians over rounds, µs of CPU per wake-up")
        print(f"{'sleep':>9}  " + "  ".join(f"{name:>8}" for name in loops))
        for gap in GAPS:
            print(f"{gap * 1000:7g} ms  " + "  ".join(
                f"{statistics.median(costs[name, gap]):8.1f}" for name in loops))
    print(f"(CPU from os.times(), clock ticks of 1/{os.sysconf('SC_CLK_TCK')} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
