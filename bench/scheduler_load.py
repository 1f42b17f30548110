"""Scheduler load: N tcp checks every second in a real agent, counted over wall-clock windows.

    .venv/bin/python bench/scheduler_load.py [--checks 1000] [--window 10] [--rounds 3]

tests/test_scheduler.py proves on virtual time that 1,000 keys every second each run once a
second; this measures what the same load does to a real agent with real tcp checks, all on
loopback: an accept-and-close listener child on 127.0.0.2 (a few ports, so TIME_WAIT tuples
spread out), a config of --checks checks every 1 s with a 500 ms timeout, the agent started,
its first run of every check awaited, then --window seconds between two /metrics scrapes.

Per round: runs per check in the window (min, median, max, and how many checks fall outside
[⌊window⌋ - 1, ⌊window⌋ + 2], the bounds the unit test once asserted), missed, skipped and
failed runs, scheduler lag p50/p99 over the window's bucket deltas, and the agent's CPU. The
agent starts afresh each round; the figures printed are each round's and their median.

It is a benchmark, not a test: it exits 0 whatever the figures (1 on a harness error). Every
wait is bounded, and the children die with it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parent.parent
LISTEN_ADDRESS = "127.0.0.2"
PORTS = 8
INTERVAL = 1.0
TIMEOUT = "500ms"
STARTUP_TIMEOUT = 120.0  # for the agent to listen, load the config and run every check once


def write_config(path: Path, n: int, endpoints: list[str]) -> list[str]:
    names = [f"c{i:05d}" for i in range(n)]
    lines = ["[defaults]", f'interval = "{INTERVAL:g}s"', f'timeout = "{TIMEOUT}"', ""]
    for i, name in enumerate(names):
        lines += ["[[checks]]", f'name = "{name}"', 'kind = "tcp"',
                  f'target = "{endpoints[i % len(endpoints)]}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return names


def one_round(children: common.Children, python: str, config: Path, names: list[str],
              window: float, number: int) -> dict[str, Any]:
    argv = common.agent_argv(python, config)
    proc = children.start(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    log = common.StreamLog(proc.stderr, str(config.with_suffix(f".{number}.stderr")))
    try:
        port = int(log.wait_for(r"msg=listening address=127\.0\.0\.1:(\d+)", STARTUP_TIMEOUT,
                                proc).group(1))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # until every check has run once
            first = common.scrape(port)
            if all(first.runs.get(n, 0) >= 1 for n in names):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every check ran within {STARTUP_TIMEOUT:g} s")
            common.sleep_until(time.monotonic() + 0.5, [proc], "the agent")
        cpu0, t0 = common.cpu_seconds(proc.pid), time.monotonic()
        common.sleep_until(first.at + window, [proc], "the agent")
        cpu1, t1 = common.cpu_seconds(proc.pid), time.monotonic()
        last = common.scrape(port)
    finally:
        children.stop(proc)
        log.join(5.0)
    seconds = last.at - first.at  # the scrapes themselves take time: this is the window
    per_check = sorted(last.runs[n] - first.runs[n] for n in names)
    low, high = int(seconds) - 1, int(seconds) + 2
    lag = sorted((le, v - first.lag_buckets.get(le, 0.0)) for le, v in last.lag_buckets.items())
    runs = sum(per_check)
    return {
        "window_s": seconds,
        "runs_min": per_check[0],
        "runs_median": common.median(per_check),
        "runs_max": per_check[-1],
        "outside": sum(1 for d in per_check if not low <= d <= high),
        "completion": runs / (len(names) * seconds / INTERVAL),
        "missed": last.missed - first.missed,
        "skipped": last.skipped - first.skipped,
        "failures": sum(last.failures.values()) - sum(first.failures.values()),
        "lag_p50_ms": common.histogram_quantile(0.5, lag) * 1000,
        "lag_p99_ms": common.histogram_quantile(0.99, lag) * 1000,
        "cpu_core": (cpu1 - cpu0) / (t1 - t0),
        "cpu_us_per_run": (cpu1 - cpu0) / runs * 1e6 if runs else math.nan,
    }


ROWS = [  # (label, key, format, unit)
    ("window between scrapes", "window_s", ".2f", " s"),
    ("runs per check, min", "runs_min", ".0f", ""),
    ("runs per check, median", "runs_median", ".0f", ""),
    ("runs per check, max", "runs_max", ".0f", ""),
    ("checks outside [⌊w⌋-1, ⌊w⌋+2]", "outside", ".0f", ""),
    ("completion (runs / scheduled)", "completion", ".4f", ""),
    ("missed runs", "missed", ".0f", ""),
    ("skipped runs", "skipped", ".0f", ""),
    ("failed runs", "failures", ".0f", ""),
    ("scheduler lag p50", "lag_p50_ms", ".2f", " ms"),
    ("scheduler lag p99", "lag_p99_ms", ".2f", " ms"),
    ("agent CPU (cores)", "cpu_core", ".3f", ""),
    ("agent CPU per run", "cpu_us_per_run", ".1f", " µs"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="interpreter that runs the agent")
    args = parser.parse_args()
    if not 1 <= args.checks <= 20_000 or not 2 <= args.window <= 600 \
            or not 1 <= args.rounds <= 20:
        parser.error("--checks in [1, 20000], --window in [2, 600] s, --rounds in [1, 20]")
    common.sigterm_as_keyboard_interrupt()
    machine = common.machine()
    print(f"{args.checks} tcp checks every {INTERVAL:g} s, {args.rounds} rounds of "
          f"{args.window:g} s; nproc {machine['nproc']}, {machine['cpu_model']}, "
          f"python {machine['python']}", flush=True)
    budget = STARTUP_TIMEOUT + args.window + 60
    results: list[dict[str, Any]] = []
    try:
        with common.Children() as children, TemporaryDirectory(prefix="scheduler-load-") as tmp:
            listeners = common.start_listeners(children, [LISTEN_ADDRESS], PORTS,
                                               max_seconds=budget * args.rounds)
            config = Path(tmp) / "netsentry.toml"
            names = write_config(config, args.checks, listeners.endpoints)
            for number in range(1, args.rounds + 1):
                results.append(one_round(children, args.python, config, names, args.window,
                                         number))
                print(f"round {number}: {results[-1]['runs_median']:.0f} runs per check in "
                      f"{results[-1]['window_s']:.2f} s, {results[-1]['missed']:.0f} missed",
                      flush=True)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"benchmark error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    table = common.Table(["figure", *[f"round {i + 1}" for i in range(len(results))],
                          "median"])
    for label, key, spec, unit in ROWS:
        values = [r[key] for r in results]
        table.add(label, *[common.fmt(v, spec, unit) for v in values],
                  common.fmt(common.median(values), spec, unit))
    print()
    print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
