"""Scale benchmark: N scheduled TCP checks in netsentry vs. blackbox_exporter's /probe.

    .venv/bin/python bench/scale.py [--checks 1000,10000] [--interval 10] [--window 30]
                                    [--blackbox-probes 3000] [--json PATH]
                                    [--loop asyncio,uvloop] [--rounds 3]

What it does, all on loopback (127.0.0.0/8) only:

1. Starts accept-and-close TCP listeners in a child process on 127.0.0.2..127.0.0.9 (a few
   ports each, so TIME_WAIT tuples spread out); targets are spread over them.
2. blackbox_exporter 0.23: --blackbox-probes `/probe?module=tcp_connect` requests against the
   same listeners with a small fixed client concurrency; its CPU (from /proc) per probe.
3. For each N in --checks: a config of N tcp checks, the agent started, one interval of
   warm-up, then a window of --window seconds measured between two /metrics scrapes and two
   /proc readings: completed runs/s, failures, missed and skipped runs, scheduler lag p50/p99
   (histogram_quantile over the window's bucket deltas), CPU per check, peak RSS, threads;
   then /metrics render time (median of 5, plain and gzip) and the time SIGTERM takes.
   Before them, the floor: a bare asyncio client (`scale.py floor`, a child of its own) that
   connects and closes at each N / interval per second against the same listeners, started
   as the scheduler starts checks (each 50 ms slot's together, in groups of 10), with
   nothing else; its CPU per connect is what any asyncio client pays for the connect at that
   rate, and netsentry's CPU per check beyond it is the agent's own.
   With several --loop values the agent runs once per loop per N in each of --rounds rounds,
   the loops' order alternating from round to round; a last table gives each loop's medians.
4. A table with the goals of DESIGN.md ("Goals the benchmarks measure") and whether the
   figures meet them.

It is a benchmark, not a test: it exits 0 whether or not goals are met (1 on a harness error).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import math
import os
import shlex
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common

from exporter.scheduler import BATCH, SLOT

LISTEN_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 10)]
TIMEOUT = "2s"
RENDER_SAMPLES = 5
BLACKBOX_ROUNDS = 5
STARTUP_TIMEOUT = 300.0  # seconds for the agent to load N checks and log "config loaded"
AGENT_EXITED = "{what} exited with {code} while being measured"  # sleep_until's error

GOAL_LAG_P99 = 0.100
GOAL_RENDER = 0.250
GOAL_CPU_RATIO = 0.5
GOAL_CHECKS = 10_000
GOAL_INTERVAL = 10.0
MIN_COMPLETION = 0.99  # below this, runs went missing whether or not the agent counted them


# --- /metrics renders ---------------------------------------------------------------------------


def time_renders(port: int, encoding: str | None) -> tuple[list[float], int]:
    """Client-timed /metrics scrapes (full body read): the seconds of each, and the size."""
    headers = {"Accept-Encoding": encoding} if encoding else {}
    times, size = [], 0
    for _ in range(RENDER_SAMPLES):
        status, response_headers, body, seconds = common.http_get("127.0.0.1", port, "/metrics",
                                                                  headers)
        if status != 200:
            raise RuntimeError(f"/metrics ({encoding or 'plain'}) answered {status}")
        if encoding == "gzip":
            if response_headers.get("content-encoding") != "gzip":
                raise RuntimeError("asked for gzip, /metrics did not send gzip")
            gzip.decompress(body)  # must be valid
        times.append(seconds)
        size = len(body)
    return times, size


# --- machine-wide CPU ---------------------------------------------------------------------------


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else math.nan


# --- the agent ----------------------------------------------------------------------------------


def write_config(path: Path, n: int, interval: float, endpoints: list[str]) -> None:
    interval_text = f"{round(interval * 1000)}ms"
    timeout = TIMEOUT if interval > 2.0 else f"{round(interval * 500)}ms"  # must be < interval
    lines = ["[defaults]", f'interval = "{interval_text}"', f'timeout = "{timeout}"', ""]
    for i in range(n):
        lines += ["[[checks]]", f'name = "tcp-{i + 1:05d}"', 'kind = "tcp"',
                  f'target = "{endpoints[i % len(endpoints)]}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def bench_agent(children: common.Children, n: int, args: argparse.Namespace, endpoints: list[str],
                listener_pid: int, workdir: Path, loop: str | None = None,
                tag: str = "") -> dict[str, Any]:
    config = workdir / f"netsentry-{n}{tag}.toml"
    write_config(config, n, args.interval, endpoints)
    argv = common.agent_argv(args.python, config, loop)
    print(f"\n== netsentry, {n} checks: {shlex.join(argv)}", flush=True)
    spawned = time.monotonic()
    proc = children.start(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    stderr_file = str(workdir / f"netsentry-{n}{tag}.stderr")
    log = common.StreamLog(proc.stderr, stderr_file)
    out: dict[str, Any] = {"checks": n, "interval_s": args.interval, "window_s": args.window,
                           "loop": loop or "default", "pid": proc.pid,
                           "stderr_file": stderr_file}
    try:
        match = log.wait_for(r"msg=listening address=127\.0\.0\.1:(\d+)", STARTUP_TIMEOUT, proc)
        port = int(match.group(1))
        log.wait_for(r'msg="config loaded"', STARTUP_TIMEOUT, proc)
        loaded = time.monotonic()
        out["startup_s"] = loaded - spawned
        print(f"   listening on 127.0.0.1:{port}; config loaded after {out['startup_s']:.2f} s; "
              f"warming up {args.interval:g} s", flush=True)
        common.sleep_until(loaded + args.interval + 1.0, [proc], "the agent", exited=AGENT_EXITED)

        # The window: scrape, then /proc; ...; /proc, then scrape. The scrapes' own render
        # CPU stays outside the CPU window; rates are taken over each one's own interval.
        first = common.scrape(port)
        cpu0, t_cpu0 = common.cpu_seconds(proc.pid), time.monotonic()
        ticks0 = common.machine_ticks()
        lcpu0, self0 = common.cpu_seconds(listener_pid), common.cpu_seconds(os.getpid())
        print(f"   window start: {sum(first.runs.values()):.0f} runs so far; "
              f"measuring {args.window:g} s", flush=True)
        extra_scrapes = 0
        if args.scrape_every > 0:  # like a Prometheus server scraping during the window
            next_scrape = t_cpu0 + args.scrape_every
            while next_scrape < t_cpu0 + args.window - 1.0:
                common.sleep_until(next_scrape, [proc], "the agent", exited=AGENT_EXITED)
                common.scrape(port)
                extra_scrapes += 1
                next_scrape += args.scrape_every
        common.sleep_until(t_cpu0 + args.window, [proc], "the agent", exited=AGENT_EXITED)
        cpu1, t_cpu1 = common.cpu_seconds(proc.pid), time.monotonic()
        ticks1 = common.machine_ticks()
        lcpu1, self1 = common.cpu_seconds(listener_pid), common.cpu_seconds(os.getpid())
        status_end = common.proc_status(proc.pid)
        fds_end = common.open_fds(proc.pid)
        last = common.scrape(port)

        scrape_window = last.at - first.at
        cpu_window = t_cpu1 - t_cpu0
        runs = sum(last.runs.values()) - sum(first.runs.values())
        runs_per_s = runs / scrape_window
        cpu = cpu1 - cpu0
        cpu_per_s = cpu / cpu_window
        cpu_per_check = cpu_per_s / runs_per_s if runs_per_s > 0 else math.nan
        listener_cpu_per_conn = ((lcpu1 - lcpu0) / cpu_window) / runs_per_s if runs_per_s else 0
        lag_delta = sorted((le, last.lag_buckets.get(le, 0) - first.lag_buckets.get(le, 0))
                           for le in last.lag_buckets)
        lag_count = last.lag_count - first.lag_count
        before = first.failures_by_reason()
        failures = {r: v - before.get(r, 0) for r, v in last.failures_by_reason().items()}
        failures = {r: v for r, v in failures.items() if v}
        scheduled = n / args.interval
        zero_runs = [c for c, v in last.runs.items() if v - first.runs.get(c, 0) == 0]
        out.update({
            "listen_port": port,
            "never_run_at_window_start": sum(1 for v in first.runs.values() if v == 0),
            "checks_in_scrape": len(last.runs),
            "window_scrape_s": scrape_window,
            # The window-start scrape renders inside the window (the agent snapshots first).
            "scrapes_rendered_in_window": 1 + extra_scrapes,
            "window_cpu_s": cpu_window,
            "runs_delta": runs,
            "runs_per_s": runs_per_s,
            "scheduled_per_s": scheduled,
            "completion_ratio": runs_per_s / scheduled,
            "checks_without_run_in_window": len(zero_runs),
            "failures_delta": sum(failures.values()),
            "failures_by_reason": failures,
            "failing_checks_at_end": sum(1 for v in last.success.values() if v == 0),
            "missed_delta": last.missed - first.missed,
            "skipped_delta": last.skipped - first.skipped,
            "missed_total_at_end": last.missed,
            "skipped_total_at_end": last.skipped,
            "lag_observations": lag_count,
            "lag_p50_s": common.histogram_quantile(0.5, lag_delta),
            "lag_p99_s": common.histogram_quantile(0.99, lag_delta),
            "lag_mean_s": (last.lag_sum - first.lag_sum) / lag_count if lag_count else math.nan,
            "lag_buckets_delta": {("+Inf" if math.isinf(le) else repr(le)): v
                                  for le, v in lag_delta},
            "in_flight_at_end": last.in_flight,
            "cpu_s": cpu,
            "cpu_core_fraction": cpu_per_s,
            "cpu_s_per_1000_checks": cpu_per_check * 1000,
            "cpu_us_per_check": cpu_per_check * 1e6,
            "machine_busy_fraction": busy_fraction(ticks0, ticks1),
            # Busy CPU of everything else on the machine (other users' processes), in cores:
            # the figures above are only as good as this is small.
            "other_load_cores": common.other_load(ticks0, ticks1, cpu_window,
                                                  cpu + (lcpu1 - lcpu0) + (self1 - self0)),
            "listener_cpu_us_per_conn": listener_cpu_per_conn * 1e6,
            "rss_end_kib": status_end.get("VmRSS"),
            "threads": status_end.get("Threads"),
            "fds": fds_end,
            "window_scrape_render_s": [first.seconds, last.seconds],
        })
        print(f"   window done: {runs_per_s:.1f} runs/s of {scheduled:.1f} scheduled, "
              f"CPU {cpu_per_check * 1e6:.1f} µs/check; timing /metrics", flush=True)

        plain, plain_size = time_renders(port, None)
        gz, gz_size = time_renders(port, "gzip")
        status_peak = common.proc_status(proc.pid)
        out.update({
            "render_plain_s": plain,
            "render_gzip_s": gz,
            "render_plain_median_s": common.median(plain),
            "render_gzip_median_s": common.median(gz),
            "metrics_bytes_plain": plain_size,
            "metrics_bytes_gzip": gz_size,
            "peak_rss_kib": status_peak.get("VmHWM"),
            "peak_rss_kib_before_render_timing": status_end.get("VmHWM"),
            "threads_after_render": status_peak.get("Threads"),
        })
    finally:
        exit_s = children.stop(proc, timeout=30.0)
        log.join(5.0)
        out["sigterm_exit_s"] = exit_s
        out["exit_code"] = proc.returncode
        notable = common.interesting_lines(log.lines)
        out["stderr_notable_count"] = len(notable)
        out["stderr_notable"] = notable[:40]
        out["stderr_lines"] = len(log.lines)
    shown = "killed after 30 s" if exit_s is None else f"{exit_s:.3f} s"
    print(f"   SIGTERM → exit {shown} (code {proc.returncode}); "
          f"{len(notable)} warn/error stderr line(s)", flush=True)
    return out


# --- blackbox_exporter --------------------------------------------------------------------------


def bench_blackbox(children: common.Children, args: argparse.Namespace, endpoints: list[str],
                   listener_pid: int, workdir: Path) -> dict[str, Any]:
    proc, log, port = common.start_blackbox(
        children, "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 2s\n", workdir)
    out: dict[str, Any] = {"pid": proc.pid, "port": port, "concurrency": args.blackbox_clients}
    try:
        warm = common.run_probes(port, "tcp_connect", endpoints, min(100, args.blackbox_probes),
                                 args.blackbox_clients,
                                 60.0)
        if warm["ok"] == 0:
            raise RuntimeError(f"blackbox warm-up probes all failed: {warm['examples']}")
        cpu0, t0, ticks0 = common.cpu_seconds(proc.pid), time.monotonic(), common.machine_ticks()
        lcpu0, self0 = common.cpu_seconds(listener_pid), common.cpu_seconds(os.getpid())
        # In rounds, to show the spread; the overall figure is over all probes.
        result: dict[str, Any] = {"ok": 0, "failed": 0, "errors": 0, "examples": [],
                                  "hit_time_limit": False}
        rounds: list[float] = []
        deadline = t0 + args.blackbox_max_seconds
        for r in range(BLACKBOX_ROUNDS):
            count = (args.blackbox_probes * (r + 1) // BLACKBOX_ROUNDS
                     - args.blackbox_probes * r // BLACKBOX_ROUNDS)
            left = deadline - time.monotonic()
            if count == 0 or left <= 0:
                result["hit_time_limit"] |= left <= 0
                continue
            round_cpu0 = common.cpu_seconds(proc.pid)
            one = common.run_probes(port, "tcp_connect", endpoints, count,
                                    args.blackbox_clients, left)
            done_round = one["ok"] + one["failed"]
            if done_round:
                rounds.append((common.cpu_seconds(proc.pid) - round_cpu0) / done_round * 1e6)
            for key in ("ok", "failed", "errors"):
                result[key] += one[key]
            result["examples"] += one["examples"][:5 - len(result["examples"])]
            result["hit_time_limit"] |= one["hit_time_limit"]
        cpu1, t1, ticks1 = common.cpu_seconds(proc.pid), time.monotonic(), common.machine_ticks()
        lcpu1, self1 = common.cpu_seconds(listener_pid), common.cpu_seconds(os.getpid())
        status = common.proc_status(proc.pid)
        # CPU per probe depends on the rate (caches, wakeups): also measure blackbox at the
        # rate netsentry runs its checks, N / interval, for a like-for-like ratio.
        paced: dict[int, dict[str, float]] = {}
        for n in args.check_counts:
            rate = n / args.interval
            seconds = min(args.window, common.PACED_SECONDS)
            paced_cpu0 = common.cpu_seconds(proc.pid)
            one = common.run_probes(port, "tcp_connect", endpoints, max(int(rate * seconds), 1),
                                    args.blackbox_clients,
                                    seconds * 3 + 10, rate=rate)
            done_paced = one["ok"] + one["failed"]
            paced[n] = {"rate_per_s": rate, "probes": done_paced, "failed": one["failed"],
                        "cpu_us_per_probe": (common.cpu_seconds(proc.pid) - paced_cpu0) / done_paced
                        * 1e6 if done_paced else math.nan}
            print(f"   paced at {rate:g}/s: {done_paced} probes, "
                  f"{paced[n]['cpu_us_per_probe']:.0f} µs/probe", flush=True)
        done = result["ok"] + result["failed"]
        out.update({
            "probes": done,
            "probes_ok": result["ok"],
            "probes_failed": result["failed"],
            "http_errors": result["errors"],
            "failure_examples": result["examples"],
            "seconds": t1 - t0,
            "probes_per_s": done / (t1 - t0),
            "cpu_s": cpu1 - cpu0,
            "cpu_core_fraction": (cpu1 - cpu0) / (t1 - t0),
            "cpu_us_per_probe": (cpu1 - cpu0) / done * 1e6 if done else math.nan,
            "cpu_us_per_probe_rounds": rounds,
            "paced": paced,
            "peak_rss_kib": status.get("VmHWM"),
            "threads": status.get("Threads"),
            "hit_time_limit": result["hit_time_limit"],
            "machine_busy_fraction": busy_fraction(ticks0, ticks1),
            "client_cpu_s": self1 - self0,
            "other_load_cores": common.other_load(ticks0, ticks1, t1 - t0, (cpu1 - cpu0)
                                                  + (lcpu1 - lcpu0) + (self1 - self0)),
        })
    finally:
        common.stop_blackbox(children, proc, log, out)
    print(f"   {out['probes']} probes ({out['probes_failed']} failed) at "
          f"{out['probes_per_s']:.0f}/s, CPU {out['cpu_us_per_probe']:.0f} µs/probe", flush=True)
    return out


# --- the floor: a bare asyncio client at the same rate ------------------------------------------


async def _floor_client(endpoints: list[tuple[str, int]], rate: float, seconds: float
                        ) -> tuple[int, float]:
    """Connect and close at `rate` per second for `seconds`, as the agent's scheduler starts its
    checks (every 50 ms slot's connects together, in groups of 10), with nothing else: no
    scheduler, runner, store or metrics. (connects done, CPU seconds)"""
    loop = asyncio.get_running_loop()

    async def one(host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
        finally:
            sock.close()

    per_slot = rate * SLOT
    started = loop.time()
    cpu0, done, owed, n = common.own_cpu_seconds(), 0, 0.0, 0
    for slot in range(int(seconds / SLOT)):
        await asyncio.sleep(max(started + slot * SLOT - loop.time(), 0.0))
        owed += per_slot
        batch, owed = int(owed), owed - int(owed)
        for first in range(0, batch, BATCH):
            group = [one(*endpoints[(n + i) % len(endpoints)])
                     for i in range(min(BATCH, batch - first))]
            n += len(group)
            results = await asyncio.gather(*group, return_exceptions=True)
            done += sum(1 for r in results if r is None)
    return done, common.own_cpu_seconds() - cpu0


def _floor_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scale.py floor")
    parser.add_argument("--endpoints", required=True, help="comma-separated HOST:PORT")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args(argv)
    endpoints = [(e.rsplit(":", 1)[0], int(e.rsplit(":", 1)[1]))
                 for e in options.endpoints.split(",")]
    if not all(common.loopback_target(f"{h}:{p}") for h, p in endpoints):
        raise SystemExit("loopback endpoints only")
    if not 1 <= options.rate <= 20_000 or not 1 <= options.seconds <= 120:
        raise SystemExit("--rate in [1, 20000], --seconds in [1, 120]")
    common.report_done(*asyncio.run(_floor_client(endpoints, options.rate, options.seconds)))
    return 0


def asyncio_floor(endpoints: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """The bare asyncio client's CPU per connect at `rate` (a child of its own)."""
    argv = [sys.executable, os.path.abspath(__file__), "floor", "--endpoints",
            ",".join(endpoints), "--rate", f"{rate:g}", "--seconds", f"{seconds:g}"]
    finished = common.run_counting_child(argv, seconds + 60)
    if isinstance(finished, str):
        return {"error": finished}
    done, cpu = finished
    print(f"   asyncio floor at {rate:g}/s: {done} connects, {cpu / done * 1e6:.0f} µs/connect",
          flush=True)
    return {"rate_per_s": rate, "connects": done, "cpu_us_per_connect": cpu / done * 1e6}


# --- the report ---------------------------------------------------------------------------------


def evaluate(results: list[dict[str, Any]], bb: dict[str, Any] | None,
             interval: float) -> list[dict[str, Any]]:
    goals = []
    at_goal = next((r for r in results if r["checks"] == GOAL_CHECKS), None)
    sched_ok = at_goal is not None and interval == GOAL_INTERVAL
    goal: dict[str, Any] = {
        "goal": f"{GOAL_CHECKS:,} checks at a {GOAL_INTERVAL:g} s interval: lag p99 < "
                f"{GOAL_LAG_P99 * 1000:g} ms, no missed run",
        "criterion": f"lag p99 < {GOAL_LAG_P99 * 1000:g} ms, missed = 0, skipped = 0, "
                     f"completion >= {MIN_COMPLETION}"}
    if not sched_ok or at_goal is None:
        goal.update(measured="not measured (needs --checks including 10000 and --interval 10)",
                    met=None)
    else:
        p99 = at_goal["lag_p99_s"]
        met = (not math.isnan(p99) and p99 < GOAL_LAG_P99 and at_goal["missed_delta"] == 0
               and at_goal["skipped_delta"] == 0 and at_goal["completion_ratio"] >= MIN_COMPLETION)
        goal.update(measured=f"p99 {common.fmt(p99 * 1000, '.1f', ' ms')}, missed "
                             f"{at_goal['missed_delta']:.0f}, skipped "
                             f"{at_goal['skipped_delta']:.0f}, completion "
                             f"{at_goal['completion_ratio']:.3f} "
                             f"({at_goal['scrapes_rendered_in_window']} scrape(s) in window)",
                    met=met)
    goals.append(goal)

    goal = {"goal": f"/metrics of {GOAL_CHECKS:,} checks rendered < {GOAL_RENDER * 1000:g} ms",
            "criterion": "client-timed median of 5, both plain and gzip"}
    if at_goal is None or "render_plain_median_s" not in at_goal:
        goal.update(measured="not measured (needs --checks including 10000)", met=None)
    else:
        plain, gz = at_goal["render_plain_median_s"], at_goal["render_gzip_median_s"]
        goal.update(measured=f"plain {plain * 1000:.0f} ms, gzip {gz * 1000:.0f} ms",
                    met=plain < GOAL_RENDER and gz < GOAL_RENDER)
    goals.append(goal)

    for r in results:
        goal = {"goal": f"CPU per check ≤ {GOAL_CPU_RATIO} × blackbox CPU per probe "
                        f"({r['checks']:,} checks)",
                "criterion": "netsentry CPU µs per completed check / blackbox CPU µs per probe"}
        if bb is None or not bb.get("probes_ok") or "cpu_us_per_check" not in r:
            goal.update(measured="not measured", met=None)
        else:
            paced = bb.get("paced", {}).get(r["checks"])
            same_rate = paced is not None and paced["probes"] and not paced["failed"]
            reference = paced["cpu_us_per_probe"] if same_rate else bb["cpu_us_per_probe"]
            ratio = r["cpu_us_per_check"] / reference
            r["cpu_ratio_vs_blackbox"] = ratio
            r["cpu_ratio_vs_blackbox_full_speed"] = r["cpu_us_per_check"] / bb["cpu_us_per_probe"]
            clean = r["failures_delta"] == 0 and bb["probes_failed"] == 0
            goal.update(measured=f"{r['cpu_us_per_check']:.1f} / {reference:.1f} = {ratio:.2f}"
                                 + (" (blackbox at the same rate)" if same_rate
                                    else " (blackbox at full speed)")
                                 + ("" if clean else " (with failures)"),
                        met=ratio <= GOAL_CPU_RATIO and clean)
        goals.append(goal)
    return goals


# The rows of the netsentry table: label, key of bench_agent's figures, format, scale, unit.
FIGURES: list[common.Figure] = [
    ("interval", "interval_s", "g", 1.0, " s"),
    ("start-up until config loaded", "startup_s", ".2f", 1.0, " s"),
    ("checks never run at window start", "never_run_at_window_start", ".0f"),
    ("window (between scrapes)", "window_scrape_s", ".1f", 1.0, " s"),
    ("/metrics scrapes rendered in window", "scrapes_rendered_in_window", ".0f"),
    ("completed runs/s", "runs_per_s", ".1f"),
    ("scheduled runs/s (N / interval)", "scheduled_per_s", ".1f"),
    ("completion ratio", "completion_ratio", ".3f"),
    ("checks with no run in window", "checks_without_run_in_window", ".0f"),
    ("failures Δ", "failures_delta", ".0f"),
    ("missed runs Δ", "missed_delta", ".0f"),
    ("skipped runs Δ", "skipped_delta", ".0f"),
    ("scheduler lag p50", "lag_p50_s", ".2f", 1000, " ms"),
    ("scheduler lag p99", "lag_p99_s", ".2f", 1000, " ms"),
    ("scheduler lag mean", "lag_mean_s", ".2f", 1000, " ms"),
    ("agent CPU (share of one core)", "cpu_core_fraction", ".1f", 100, " %"),
    ("machine CPU busy (all cores)", "machine_busy_fraction", ".1f", 100, " %"),
    ("other processes' load (cores)", "other_load_cores", ".2f"),
    ("CPU s per 1,000 checks", "cpu_s_per_1000_checks", ".4f", 1.0, " s"),
    ("CPU µs per check", "cpu_us_per_check", ".1f", 1.0, " µs"),
    ("listener child CPU µs per conn", "listener_cpu_us_per_conn", ".1f", 1.0, " µs"),
    ("peak RSS (VmHWM)", "peak_rss_kib", ".1f", 1 / 1024, " MiB"),
    ("threads", "threads", ".0f"),
    ("open fds", "fds", ".0f"),
    ("/metrics render, plain (median)", "render_plain_median_s", ".1f", 1000, " ms"),
    ("/metrics render, gzip (median)", "render_gzip_median_s", ".1f", 1000, " ms"),
    ("/metrics size, plain", "metrics_bytes_plain", ".2f", 1 / 2**20, " MiB"),
    ("/metrics size, gzip", "metrics_bytes_gzip", ".1f", 1 / 1024, " KiB"),
    ("SIGTERM → exit", "sigterm_exit_s", ".3f", 1.0, " s"),
    ("exit code", "exit_code", ""),
    ("stderr warn/error lines", "stderr_notable_count", ".0f"),
]


def report(info: dict[str, Any], results: list[dict[str, Any]], bb: dict[str, Any] | None,
           goals: list[dict[str, Any]]) -> str:
    lines = common.report_head(
        "netsentry scale benchmark", info,
        f"listeners: {len(info['endpoints'])} accept-and-close endpoints on "
        f"{LISTEN_ADDRESSES[0]}..{LISTEN_ADDRESSES[-1]} (child pid {info['listener_pid']})",
        f"logs:     {info['workdir']}")
    if results:
        t = common.Table(["netsentry", *[f"{r['checks']:,} checks" for r in results]])
        t.figures(results, FIGURES)
        lines += [t.render(), ""]
        for r in results:
            if r.get("failures_by_reason"):
                lines.append(f"failures in window, {r['checks']:,} checks: "
                             f"{r['failures_by_reason']}")
            if r.get("stderr_notable"):
                lines.append(f"stderr of the {r['checks']:,}-check agent (first "
                             f"{len(r['stderr_notable'])} of {r['stderr_notable_count']} "
                             f"warn/error lines):")
                lines += [f"  {ln[:300]}" for ln in r["stderr_notable"][:10]]
        lines.append("")
    if bb is not None:
        t = common.Table(["blackbox_exporter 0.23 (tcp_connect)", "value"])
        t.add("probes (ok / failed)", f"{bb.get('probes_ok', 0)} / {bb.get('probes_failed', 0)}")
        t.add("client concurrency (keep-alive)", bb["concurrency"])
        t.add("probes/s", common.fmt(bb.get("probes_per_s"), ".0f"))
        t.add("CPU (share of one core)", common.fmt(bb.get("cpu_core_fraction", math.nan) * 100,
                                                    ".1f", " %"))
        t.add("machine CPU busy (all cores)", common.fmt(bb.get("machine_busy_fraction", math.nan)
                                                         * 100, ".1f", " %"))
        t.add("other processes' load (cores)", common.fmt(bb.get("other_load_cores"), ".2f"))
        t.add("CPU µs per probe", common.fmt(bb.get("cpu_us_per_probe"), ".1f", " µs"))
        per_round = bb.get("cpu_us_per_probe_rounds") or []
        if per_round:
            t.add(f"  … per round of ~{bb['probes'] // max(len(per_round), 1)} (min/med/max)",
                  f"{min(per_round):.0f} / {common.median(per_round):.0f} / "
                  f"{max(per_round):.0f} µs")
        for n, paced in sorted((bb.get("paced") or {}).items()):
            t.add(f"CPU µs per probe at {paced['rate_per_s']:g}/s (as {n:,} checks)",
                  common.fmt(paced["cpu_us_per_probe"], ".1f", " µs"))
        t.add("peak RSS (VmHWM)", common.fmt((bb.get("peak_rss_kib") or math.nan) / 1024, ".1f",
                                             " MiB"))
        t.add("threads", common.fmt(bb.get("threads"), ".0f"))
        lines += [t.render(), ""]
        if bb.get("failure_examples"):
            lines.append("blackbox failures: " + "; ".join(bb["failure_examples"]))
            lines.append("")
    t = common.Table(["goal (DESIGN.md)", "measured", "met"])
    for g in goals:
        t.add(g["goal"], g["measured"], common.verdict(g["met"]))
    lines += [t.render(), ""]
    lines += [f"  criterion: {g['goal'].split(':')[0]} — {g['criterion']}" for g in goals[:2]]
    if len(goals) > 2:
        lines.append(f"  criterion: CPU ratio — {goals[2]['criterion']}")
    lines += [
        "  notes: lag and runs are deltas between the window's two scrapes, so the window-start",
        "  scrape's /metrics render happens inside the window (as one Prometheus scrape per",
        "  window would); agent CPU excludes the two boundary scrapes' renders but includes any",
        "  --scrape-every scrapes. CPU is from /proc (clock ticks of 1/"
        f"{common.CLK_TCK} s).",
    ]
    lines.append("=" * 78)
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", default="1000,10000",
                        help="comma-separated numbers of checks (default 1000,10000)")
    parser.add_argument("--ports-per-address", type=int, default=2)
    parser.add_argument("--loop", default="",
                        help="comma-separated event loops to run the agent on, alternating "
                        "(asyncio, uvloop, auto; default: the agent's default only)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of every N on every --loop (default 1); medians over them")
    common.agent_arguments(parser)
    args = parser.parse_args(argv)
    args.loops = [x.strip() for x in args.loop.split(",") if x.strip()] or [None]
    if any(x not in (None, "asyncio", "uvloop", "auto") for x in args.loops):
        parser.error("--loop: asyncio, uvloop or auto, comma-separated")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds in [1, 20]")
    try:
        args.check_counts = [int(x) for x in args.checks.split(",") if x.strip()]
    except ValueError:
        parser.error("--checks: want comma-separated integers, e.g. 1000,10000")
    if not args.check_counts or min(args.check_counts) < 1 or max(args.check_counts) > 100_000:
        parser.error("--checks: each between 1 and 100000")
    if not 1 <= args.ports_per_address <= 16:
        parser.error("--ports-per-address in [1, 16]")
    common.check_agent_arguments(parser, args)
    return args


LOOP_FIGURES = (("cpu_us_per_check", "CPU µs/check", 1.0), ("lag_p99_s", "lag p99 ms", 1000.0),
                ("lag_p50_s", "lag p50 ms", 1000.0), ("missed_delta", "missed", 1.0),
                ("rss_end_kib", "RSS MiB", 1 / 1024))


def loop_table(results: list[dict[str, Any]], bb: dict[str, Any] | None) -> str:
    """Each (N, loop)'s medians over the rounds, and CPU per check as a ratio to blackbox's
    per probe at the same rate (blackbox measured once, in the same run)."""
    paced = (bb or {}).get("paced", {})
    lines = ["", "== event loops, medians over rounds; blackbox paced at N / interval: "
             + ", ".join(f"{n}: {v['cpu_us_per_probe']:.1f} µs/probe" for n, v in paced.items()),
             f"{'checks':>7} {'loop':>8} {'rounds':>6} "
             + " ".join(f"{label:>13}" for _, label, _ in LOOP_FIGURES) + "  ratio to blackbox"]
    keys = sorted({(r["checks"], r["loop"]) for r in results})
    for n, loop in keys:
        rows = [r for r in results if (r["checks"], r["loop"]) == (n, loop) and "cpu_s" in r]
        medians = [statistics.median(r[k] for r in rows) * scale if rows and
                   all(isinstance(r.get(k), (int, float)) for r in rows) else math.nan
                   for k, _, scale in LOOP_FIGURES]
        bb_cpu = paced.get(n, {}).get("cpu_us_per_probe")
        ratio = f"{medians[0] / bb_cpu:.3f}" if bb_cpu and rows else "-"
        per_round = " ".join(f"{r['cpu_us_per_check']:.1f}" for r in rows)
        lines.append(f"{n:>7} {loop:>8} {len(rows):>6} "
                     + " ".join(f"{m:>13.2f}" for m in medians) + f"  {ratio:>8}  "
                     f"(CPU per round: {per_round})")
    return "\n".join(lines)


def floor_table(results: list[dict[str, Any]], info: dict[str, Any],
                bb: dict[str, Any] | None) -> str:
    """netsentry's CPU per check (median over rounds and loops) beside the bare asyncio
    client's per connect at the same rate: what the agent adds to the connect itself."""
    paced = (bb or {}).get("paced", {})
    lines = ["", "== the floor: a bare asyncio client's connect and close at the same rate "
             "(no scheduler, runner, store or metrics)"]
    for key, floor in (info.get("asyncio_floor") or {}).items():
        n = int(key)
        rows = [r["cpu_us_per_check"] for r in results
                if r["checks"] == n and isinstance(r.get("cpu_us_per_check"), (int, float))]
        base = floor.get("cpu_us_per_connect")
        if not rows or base is None:
            lines.append(f"{n:>7} checks: {floor.get('error', 'no figures')}")
            continue
        ours = statistics.median(rows)
        bb_cpu = paced.get(n, {}).get("cpu_us_per_probe")
        versus = (f"; floor / blackbox paced {base / bb_cpu:.2f}, netsentry {ours / bb_cpu:.2f}"
                  if bb_cpu else "")
        lines.append(f"{n:>7} checks: netsentry {ours:.1f} µs per check = floor {base:.1f} µs "
                     f"per connect + {ours - base:.1f} µs{versus}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, info = common.start_run("netsentry-bench-scale-", argv)
    results: list[dict[str, Any]] = []
    bb: dict[str, Any] | None = None
    error: str | None = None
    # Bound the listener child's life by the longest the whole run could take.
    runs = len(args.check_counts) * len(args.loops) * args.rounds
    budget = (runs * (STARTUP_TIMEOUT + args.interval + args.window + 120)
              + args.blackbox_max_seconds + 300)
    try:
        with common.Children() as children:
            listeners = common.start_listeners(children, LISTEN_ADDRESSES, args.ports_per_address,
                                               budget)
            info["endpoints"] = listeners.endpoints
            info["listener_pid"] = listeners.proc.pid
            print(f"listeners: {' '.join(listeners.endpoints)}", flush=True)
            try:
                if not args.no_blackbox:
                    bb = bench_blackbox(children, args, listeners.endpoints,
                                        listeners.proc.pid, workdir)
                print("\n== the floor: a bare asyncio client, connect and close, at each rate",
                      flush=True)
                info["asyncio_floor"] = {
                    str(n): asyncio_floor(listeners.endpoints, n / args.interval,
                                          min(args.window, common.PACED_SECONDS))
                    for n in args.check_counts}
                for round_ in range(args.rounds):
                    order = args.loops if round_ % 2 == 0 else args.loops[::-1]
                    for n in args.check_counts:
                        for loop in order:
                            time.sleep(2.0)  # let the previous phase's sockets settle
                            tag = (f"-{loop}-r{round_ + 1}"
                                   if len(args.loops) > 1 or args.rounds > 1 else "")
                            result = bench_agent(children, n, args, listeners.endpoints,
                                                 listeners.proc.pid, workdir, loop, tag)
                            results.append({**result, "round": round_ + 1})
            except (RuntimeError, TimeoutError, OSError) as exc:
                error = common.harness_error(exc)
    except KeyboardInterrupt:
        print("\ninterrupted; children stopped", file=sys.stderr)
        return 130
    goals = evaluate(results, bb, args.interval)
    print(report(info, results, bb, goals), flush=True)
    if len(results) > len(args.check_counts):
        print(loop_table(results, bb), flush=True)
    print(floor_table(results, info, bb), flush=True)
    return common.finish(args.json, {**info, "args": vars(args), "netsentry": results,
                                     "blackbox": bb, "goals": goals, "error": error}, error)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "floor":
        raise SystemExit(_floor_main(sys.argv[2:]))
    raise SystemExit(main())
