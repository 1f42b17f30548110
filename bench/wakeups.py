"""What a wake-up costs this process: CPU per `asyncio.sleep(gap)` for a few gaps.

    .venv/bin/python bench/wakeups.py [--seconds 4] [--loop asyncio,uvloop] [--rounds 3]

An event loop that sleeps between runs pays, on each wake-up, for whatever the machine does
to resume it (timer interrupts, a virtual CPU brought back by its host, cold caches). On the
2-core CI VMs this costs more than a tcp check, which is why the scheduler starts the checks
of one 50 ms slot together, and why paced probes cost blackbox_exporter more than probes at
full speed. Nothing is sent anywhere; it prints µs of CPU (user + system) per wake-up.
With several --loop values (exporter/loop.py's names) each gap is measured on each loop in
each of --rounds rounds, the loops' order alternating, and the medians are printed.

    .venv/bin/python bench/wakeups.py --per-run tcp,tcp-tls,http,https [--checks 1000]
                                      [--window 10] [--rounds 3]

counts instead what a real agent's runs cost in wake-ups: for each case (bench/tls_http.py's
servers and check configs, on 127.0.0.1), an agent with --checks checks at a 10 s interval,
warmed up one interval, then over --window seconds from /proc of its event loop's thread
(the main thread): CPU per run, wake-ups per run (voluntary context switches: each is the
loop asleep in epoll_wait, or a blocking call, and woken again), wake-ups per second beside
the scheduler's slots per second (one wake-up per slot is the least a paced agent can do),
preemptions per run (involuntary switches: the loop made to wait for another process, here
mostly the server child woken on the same core), and, over a second window under
`strace -c -e trace=epoll_wait` (which slows the agent, not the counts), the loop's turns per
run (each turn is one epoll_wait, asleep or not).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import tls_http

from exporter import loop
from exporter.scheduler import SLOT

GAPS = (0.0, 0.001, 0.01, 0.05)


async def per_wakeup(gap: float, seconds: float) -> tuple[float, int]:
    """CPU µs per wake-up over about `seconds` of sleeping `gap` at a time."""
    rounds = 200_000 if gap == 0 else max(int(seconds / gap), 20)
    started = common.own_cpu_seconds()
    deadline = time.monotonic() + seconds * 2  # bounded even if sleeps overrun
    done = 0
    for done in range(1, rounds + 1):  # noqa: B007 - the count is the result
        await asyncio.sleep(gap)
        if time.monotonic() > deadline:
            break
    return (common.own_cpu_seconds() - started) / done * 1e6, done


INTERVAL = 10.0
PER_RUN_CASES = ("tcp", "tcp-tls", "http", "https")
STRACE = "/usr/bin/strace"


def switches(pid: int) -> dict[str, int]:
    """The voluntary and involuntary context switches of thread `pid` (the loop's)."""
    found = {}
    with open(f"/proc/{pid}/task/{pid}/status", encoding="ascii") as status:
        for line in status:
            if "ctxt_switches" in line:
                name, value = line.split(":")
                found[name.split("_")[0]] = int(value)
    return found


def epoll_waits(pid: int, seconds: float) -> int | None:
    """epoll_wait calls of thread `pid` over `seconds`, counted by strace -c; None without it."""
    if not os.access(STRACE, os.X_OK):
        return None
    with subprocess.Popen([STRACE, "-c", "-q", "-e", "trace=epoll_wait,epoll_pwait", "-p",
                           str(pid)], stderr=subprocess.PIPE, text=True) as tracer:
        time.sleep(seconds)
        tracer.send_signal(signal.SIGINT)
        _, report = tracer.communicate(timeout=30)
    calls = [int(m.group(1)) for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)"
                                                   r"(?:\s+\d+)?\s+epoll_p?wait\s*$",
                                                   report, re.MULTILINE)]
    return sum(calls) if calls else None


def agent_runs(children: common.Children, case: Any, checks: int, window: float,
               workdir: Path) -> dict[str, Any]:
    """One agent with `checks` checks of `case`: its loop thread's figures per run."""
    config = workdir / f"{case.name}.toml"
    tls_http.write_config(config, case, checks, INTERVAL)
    proc = children.start(common.agent_argv(sys.executable, config),
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    log = common.StreamLog(proc.stderr, str(workdir / f"{case.name}.stderr"))
    try:
        log.wait_for(r'msg="config loaded"', 300, proc)
        common.sleep_until(time.monotonic() + INTERVAL + 1, [proc], "the agent")
        cpu0, at0, count0 = common.cpu_seconds(proc.pid), time.monotonic(), switches(proc.pid)
        common.sleep_until(at0 + window, [proc], "the agent")
        cpu1, at1, count1 = common.cpu_seconds(proc.pid), time.monotonic(), switches(proc.pid)
        turns_at = time.monotonic()
        turns = epoll_waits(proc.pid, window)
        turns_seconds = time.monotonic() - turns_at
    finally:
        children.stop(proc)
        log.join(5.0)
    runs_per_s = checks / INTERVAL
    runs = runs_per_s * (at1 - at0)
    return {"case": case.name, "cpu_us_per_run": (cpu1 - cpu0) / runs * 1e6,
            "wakeups_per_run": (count1["voluntary"] - count0["voluntary"]) / runs,
            "wakeups_per_s": (count1["voluntary"] - count0["voluntary"]) / (at1 - at0),
            "preemptions_per_run": (count1["nonvoluntary"] - count0["nonvoluntary"]) / runs,
            "turns_per_run": None if turns is None else turns / (runs_per_s * turns_seconds)}


def per_run(cases: list[str], checks: int, window: float, rounds: int) -> int:
    figures: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    with TemporaryDirectory(prefix="netsentry-bench-wakeups-") as tmp, \
            common.Children() as children:
        workdir = Path(tmp)
        certs = tls_http.make_certs(workdir / "certs")
        budget = rounds * len(cases) * (INTERVAL + 2 * window + 330) + 60
        servers = tls_http.start_servers(children, certs, workdir, budget)
        known = {case.name: case for case in tls_http.make_cases(servers, certs, None)}
        print(f"{'round':>5}  {'case':>8}  {'CPU/run':>9}  {'wake-ups/run':>12}  "
              f"{'wake-ups/s':>10}  {'preempted/run':>13}  {'turns/run':>9}")
        for round_ in range(rounds):
            for name in cases if round_ % 2 == 0 else cases[::-1]:
                one = agent_runs(children, known[name], checks, window, workdir)
                figures[name].append(one)
                turns = one["turns_per_run"]
                print(f"{round_ + 1:>5}  {name:>8}  {one['cpu_us_per_run']:6.0f} µs  "
                      f"{one['wakeups_per_run']:12.2f}  {one['wakeups_per_s']:10.1f}  "
                      f"{one['preemptions_per_run']:13.2f}  "
                      f"{'n/a' if turns is None else f'{turns:.2f}':>9}", flush=True)
        assert servers.proc.stdin is not None
        servers.proc.stdin.close()
        children.stop(servers.proc)
    print(f"\nmedians over {rounds} round(s); {checks:,} checks at {INTERVAL:g} s = "
          f"{checks / INTERVAL:g} runs/s; the scheduler's slots: {1 / SLOT:g} per second")
    print(f"{'case':>8}  {'CPU/run':>9}  {'wake-ups/run':>12}  {'wake-ups/s':>10}  "
          f"{'preempted/run':>13}  {'turns/run':>9}")
    def med(name: str, key: str) -> float | None:
        values = [f[key] for f in figures[name] if f[key] is not None]
        return statistics.median(values) if values else None

    for name in cases:
        turns = med(name, "turns_per_run")
        print(f"{name:>8}  {med(name, 'cpu_us_per_run'):6.0f} µs  "
              f"{med(name, 'wakeups_per_run'):12.2f}  {med(name, 'wakeups_per_s'):10.1f}  "
              f"{med(name, 'preemptions_per_run'):13.2f}  "
              f"{'n/a' if turns is None else f'{turns:.2f}':>9}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-run", default="", metavar="CASES",
                        help=f"count a real agent's wake-ups per run for these cases "
                             f"({','.join(PER_RUN_CASES)}) instead")
    parser.add_argument("--checks", type=int, default=1000, help="with --per-run")
    parser.add_argument("--window", type=float, default=10.0, help="with --per-run, seconds")
    parser.add_argument("--seconds", type=float, default=4.0, help="per gap, about")
    parser.add_argument("--loop", default="asyncio",
                        help="comma-separated event loops: asyncio, uvloop (default asyncio)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not 0.5 <= args.seconds <= 60:
        parser.error("--seconds in [0.5, 60]")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds in [1, 20]")
    if args.per_run:
        cases = [c.strip() for c in args.per_run.split(",") if c.strip()]
        if not cases or any(c not in PER_RUN_CASES for c in cases):
            parser.error(f"--per-run: choose from {','.join(PER_RUN_CASES)}")
        if not 10 <= args.checks <= 20_000 or not 2 <= args.window <= 120:
            parser.error("--checks in [10, 20000], --window in [2, 120]")
        return per_run(cases, args.checks, args.window, args.rounds)
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
