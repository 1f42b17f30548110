"""Ping benchmark: N `ping` checks at one echo a second vs. smokeping_prober, per echo.

    .venv/bin/python bench/ping.py [--checks 1000] [--rounds 3] [--warmup 10] [--window 30]
                                   [--mode dgram|raw|both] [--scrapes 5] [--commit REV]
                                   [--json PATH]

With --commit, the agent runs from that commit's tree (`git archive`, unpacked in the run's
work directory) instead of the working tree, which others may be editing meanwhile.

Needs root (a network namespace of its own, raw sockets). What it does:

1. Moves itself into a new network namespace (unshare(CLONE_NEWNET)): only a loopback
   interface, brought up, so every echo goes to 127.0.0.0/8 and no other process's ICMP
   (tests running beside it with raw sockets) is seen by either exporter, nor theirs by
   ours. The namespace ends with the benchmark's processes.
2. The targets: --checks consecutive addresses from 127.0.1.1 (1,000: 127.0.1.1 …
   127.0.4.232); all of 127/8 answers on Linux's loopback.
3. Per --mode, the socket both exporters use:
   - dgram (default): `net.ipv4.ping_group_range` of the namespace opened ("0 2147483647"),
     so netsentry opens unprivileged ping sockets, and smokeping_prober's targets say
     `protocol: udp` (go-ping's name for the same unprivileged ICMP socket: SOCK_DGRAM +
     IPPROTO_ICMP, one per target);
   - raw: the range closed ("1 0"), so netsentry falls back to raw sockets (root has
     CAP_NET_RAW), and smokeping_prober's targets say `protocol: icmp` (one raw socket per
     target; --privileged too, which only its command-line hosts read).
   Which sockets each really had open is read from /proc/net/icmp and /proc/net/raw.
4. --rounds rounds, each measuring both exporters one after the other (the order alternating
   between rounds, each started afresh, never both at once):
   - prometheus-smokeping-prober (Debian's, 0.6.1) with a config file of one target group:
     the N hosts, `interval: 1s`, `network: ip4`, `protocol` as above, `size: 56`, listening on
     127.0.0.1 and a free port;
   - netsentry with N checks `kind = "ping"`, `interval = "1s"`, `timeout = "900ms"`,
     `count = 1` (size 56 by default): smokeping_prober's continuous mode.
   Each is warmed up --warmup seconds after it is ready, then measured over --window seconds
   between two /metrics scrapes and two /proc readings: echoes sent and replies received
   from its own counters (smokeping_requests_total and smokeping_response_duration_seconds_
   count; netsentry_ping_packets_sent_total and _received_total), its CPU (utime + stime of
   every thread) per echo sent, RSS, threads, the ICMP sockets open in the namespace at the
   window's end (/proc/net/icmp and /proc/net/raw), and what the rest of the machine did
   meanwhile; then --scrapes client-timed scrapes of /metrics, plain and gzip (medians), and
   the exporter's CPU per scrape.
5. A table per mode with the medians of the rounds, the rounds' CPU per echo side by side,
   and the issue's goal: netsentry's CPU per echo no more than smokeping_prober's (ratio ≤
   1), on the medians.

It is a benchmark, not a test: it exits 0 whether or not the goal is met (1 on a harness error).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gzip
import ipaddress
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SMOKEPING = "/usr/bin/prometheus-smokeping-prober"
FIRST_TARGET = ipaddress.IPv4Address("127.0.1.1")
INTERVAL = "1s"
TIMEOUT = "900ms"
SIZE = 56
STARTUP_TIMEOUT = 120.0  # for either exporter to be ready with every target going
GOAL_RATIO = 1.0
PING_GROUP_RANGE = {"dgram": "0 2147483647", "raw": "1 0"}
# smokeping_prober's `protocol` of a target: go-ping's "udp" is the unprivileged ICMP socket.
SMOKEPING_PROTOCOL = {"dgram": "udp", "raw": "icmp"}
_CLONE_NEWNET = 0x40000000

# --- the namespace ------------------------------------------------------------------------------


def enter_namespace(mode: str | None = None) -> None:
    """This process (and every child it starts from now on) into a new network namespace with
    its loopback up. Must run before any thread is started (unshare applies to the caller)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise RuntimeError(f"unshare(CLONE_NEWNET): {os.strerror(err)} (the benchmark needs "
                           "root: a network namespace of its own and raw sockets)")
    ip = shutil.which("ip") or "/usr/sbin/ip"
    subprocess.run([ip, "link", "set", "lo", "up"], check=True, timeout=10)
    if mode:
        set_ping_group_range(mode)


def set_ping_group_range(mode: str) -> None:
    """The namespace's ping_group_range (a per-namespace sysctl): open for dgram, closed for
    raw."""
    with open("/proc/sys/net/ipv4/ping_group_range", "w", encoding="ascii") as f:
        f.write(PING_GROUP_RANGE[mode] + "\n")


def icmp_sockets() -> dict[str, int]:
    """ICMP sockets open in this namespace: ping sockets (/proc/net/icmp) and raw ICMP sockets
    (/proc/net/raw, protocol 1 — the "port" column of a raw socket is its protocol)."""
    out = {"ping": 0, "raw": 0}
    with contextlib.suppress(OSError), open("/proc/net/icmp", encoding="ascii") as f:
        out["ping"] = max(sum(1 for _ in f) - 1, 0)
    with contextlib.suppress(OSError), open("/proc/net/raw", encoding="ascii") as f:
        next(f, None)
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].endswith(":0001"):
                out["raw"] += 1
    return out


def targets(n: int) -> list[str]:
    hosts = [str(FIRST_TARGET + i) for i in range(n)]
    assert all(ipaddress.IPv4Address(h).is_loopback for h in hosts)
    return hosts


# --- one exporter's readings ----------------------------------------------------------------


@dataclass
class Reading:
    """One /metrics scrape, reduced to the counters the benchmark compares."""

    at: float  # monotonic, when the request was sent
    seconds: float  # until the body was read
    size: int
    sent: float
    received: float
    extra: dict[str, float] = field(default_factory=dict)


def read_smokeping(port: int) -> Reading:
    at = time.monotonic()
    status, _, body, seconds = common.http_get("127.0.0.1", port, "/metrics")
    if status != 200:
        raise RuntimeError(f"smokeping_prober /metrics answered {status}")
    sent = received = duplicates = 0.0
    hosts_going = 0
    for name, _, value in common.parse_samples(body.decode(), ("smokeping_",)):
        if name == "smokeping_requests_total":
            sent += value
            hosts_going += value > 0
        elif name == "smokeping_response_duration_seconds_count":
            received += value
        elif name == "smokeping_response_duplicates_total":
            duplicates += value
    return Reading(at, seconds, len(body), sent, received,
                   {"duplicates": duplicates, "targets_going": hosts_going})


NETSENTRY_PREFIXES = ("netsentry_ping_packets_", "netsentry_ping_duplicates_total",
                      "netsentry_check_runs_total", "netsentry_check_failures_total",
                      "netsentry_scheduler_missed_runs_total",
                      "netsentry_scheduler_skipped_runs_total",
                      "netsentry_scheduler_lag_seconds_bucket", "netsentry_ping_ignored_total")


def read_netsentry(port: int) -> Reading:
    at = time.monotonic()
    status, _, body, seconds = common.http_get("127.0.0.1", port, "/metrics")
    if status != 200:
        raise RuntimeError(f"netsentry /metrics answered {status}")
    totals: dict[str, float] = {}
    lag: dict[float, float] = {}
    going = 0
    for name, labels, value in common.parse_samples(body.decode(), NETSENTRY_PREFIXES):
        if name == "netsentry_scheduler_lag_seconds_bucket":
            lag[float(labels["le"])] = value
            continue
        if name == "netsentry_check_failures_total":
            name = f"failures:{labels.get('reason', '')}"
        elif name == "netsentry_ping_ignored_total":
            name = f"ignored:{labels.get('why', '')}"
        elif name == "netsentry_ping_packets_sent_total":
            going += value > 0
        totals[name] = totals.get(name, 0.0) + value
    extra = {k: v for k, v in totals.items() if not k.startswith("netsentry_ping_packets_")}
    extra["targets_going"] = going
    extra.update({f"lag_le:{le!r}": v for le, v in lag.items()})
    return Reading(at, seconds, len(body), totals.get("netsentry_ping_packets_sent_total", 0.0),
                   totals.get("netsentry_ping_packets_received_total", 0.0), extra)


# --- starting them ------------------------------------------------------------------------------


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    log: common.StreamLog
    port: int
    argv: list[str]
    startup_s: float


def start_smokeping(children: common.Children, mode: str, hosts: list[str],
                    workdir: Path) -> Started:
    config = workdir / "smokeping_prober.yml"
    config.write_text("targets:\n- hosts:\n" + "".join(f"  - {h}\n" for h in hosts)
                      + f"  interval: {INTERVAL}\n  network: ip4\n"
                      f"  protocol: {SMOKEPING_PROTOCOL[mode]}\n"
                      f"  size: {SIZE}\n", encoding="utf-8")
    for _attempt in range(3):  # the free port may be taken between probing it and binding it
        port = common.free_port()
        argv = [SMOKEPING, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                f"--ping.interval={INTERVAL}", f"--ping.size={SIZE}"]
        if mode == "raw":
            argv.append("--privileged")
        print(f"   {shlex.join(argv)}", flush=True)
        spawned = time.monotonic()
        proc = children.start(argv)
        assert proc.stderr is not None
        log = common.StreamLog(proc.stderr, str(workdir / "smokeping_prober.stderr"))
        # It starts its pingers spread over one interval, then listens.
        if common.wait_http(port, "/metrics", proc, STARTUP_TIMEOUT):
            return Started(proc, log, port, argv, time.monotonic() - spawned)
        children.stop(proc)
        log.join(2.0)
    raise RuntimeError("smokeping_prober did not start; see smokeping_prober.stderr")


def smokeping_version() -> str:
    """Its --version's first line (it prints it on stderr)."""
    try:
        result = subprocess.run([SMOKEPING, "--version"], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return ((result.stdout or result.stderr).split("\n", 1)[0].strip()) or "?"


def write_netsentry_config(path: Path, hosts: list[str]) -> None:
    lines = ["[defaults]", f'interval = "{INTERVAL}"', f'timeout = "{TIMEOUT}"', ""]
    for i, host in enumerate(hosts):
        lines += ["[[checks]]", f'name = "ping-{i + 1:05d}"', 'kind = "ping"',
                  f'target = "{host}"', "count = 1", f"size = {SIZE}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def agent_env(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.tree:
        env["PYTHONPATH"] = args.tree
    return env


def python_argv(args: argparse.Namespace) -> list[str]:
    """The interpreter; with a --commit tree, -P (no working directory on sys.path) so that
    PYTHONPATH's tree is the `exporter` imported."""
    return [args.python, "-P"] if args.tree else [args.python]


def unpack_commit(rev: str, workdir: Path) -> tuple[str, str]:
    """`rev`'s tree unpacked under `workdir` (git archive | tar): (directory, full commit)."""
    commit = subprocess.run(["git", "-C", str(common.ROOT), "rev-parse", "--verify",
                             f"{rev}^{{commit}}"], capture_output=True, text=True, timeout=30,
                            check=True).stdout.strip()
    tree = workdir / f"tree-{commit[:12]}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(common.ROOT), "archive", "--format=tar", commit],
                             capture_output=True, timeout=120, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, timeout=120, check=True)
    return str(tree), commit


def start_netsentry(children: common.Children, args: argparse.Namespace, hosts: list[str],
                    workdir: Path) -> Started:
    config = workdir / "netsentry.toml"
    if not config.exists():
        write_netsentry_config(config, hosts)
    argv = python_argv(args) + common.agent_argv(args.python, config)[1:]
    print(f"   {shlex.join(argv)}" + (f"  (PYTHONPATH={args.tree})" if args.tree else ""),
          flush=True)
    spawned = time.monotonic()
    proc = children.start(argv, env=agent_env(args))
    assert proc.stderr is not None
    log = common.StreamLog(proc.stderr, str(workdir / "netsentry.stderr"))
    port = int(log.wait_for(r"msg=listening address=127\.0\.0\.1:(\d+)", STARTUP_TIMEOUT,
                            proc).group(1))
    log.wait_for(r'msg="config loaded"', STARTUP_TIMEOUT, proc)
    return Started(proc, log, port, argv, time.monotonic() - spawned)


def socket_kind(args: argparse.Namespace) -> str:
    """The socket a netsentry ping run opens here, as `netsentry probe ping` reports it."""
    result = subprocess.run([*python_argv(args), "-m", "exporter", "probe", "ping",
                             str(FIRST_TARGET), "--count", "1"], capture_output=True, text=True,
                            timeout=60, check=False, env=agent_env(args))
    for line in result.stdout.splitlines():
        if line.startswith("socket "):
            return line.split(None, 1)[1].strip()
    return f"? (probe exited {result.returncode}: {result.stderr.strip()[-200:]})"


# --- measuring one ------------------------------------------------------------------------------

READERS = {"smokeping_prober": read_smokeping, "netsentry": read_netsentry}


def wait_going(read: Any, port: int, n: int, proc: subprocess.Popen[bytes],
               timeout: float) -> float:
    """Until every one of the `n` targets has sent an echo (seconds waited)."""
    started = time.monotonic()
    deadline = started + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before every target was pinged")
        seen = read(port).extra["targets_going"]
        if seen >= n:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"only {seen:.0f} of {n} targets pinged within {timeout:g} s")


def measure(children: common.Children, side: str, mode: str, args: argparse.Namespace,
            hosts: list[str], workdir: Path) -> dict[str, Any]:
    print(f"\n== {side} ({mode} sockets), {len(hosts):,} targets at one echo a second",
          flush=True)
    started = (start_smokeping(children, mode, hosts, workdir) if side == "smokeping_prober"
               else start_netsentry(children, args, hosts, workdir))
    proc, read = started.proc, READERS[side]
    out: dict[str, Any] = {"side": side, "mode": mode, "pid": proc.pid,
                           "argv": shlex.join(started.argv), "startup_s": started.startup_s}
    try:
        out["until_all_going_s"] = wait_going(read, started.port, len(hosts), proc,
                                              STARTUP_TIMEOUT)
        print(f"   ready after {started.startup_s:.2f} s, every target pinged "
              f"{out['until_all_going_s']:.1f} s later; warming up {args.warmup:g} s",
              flush=True)
        common.sleep_until(time.monotonic() + args.warmup, [proc], side)

        # The window: scrape, then /proc; ...; /proc, then scrape (the two renders outside the
        # CPU window; the echo rate is taken over the scrapes' own interval).
        first = read(started.port)
        cpu0, t0, ticks0 = common.cpu_seconds(proc.pid), time.monotonic(), common.machine_ticks()
        self0 = common.cpu_seconds(os.getpid())
        common.sleep_until(t0 + args.window, [proc], side)
        cpu1, t1, ticks1 = common.cpu_seconds(proc.pid), time.monotonic(), common.machine_ticks()
        self1 = common.cpu_seconds(os.getpid())
        status, fds, sockets = common.proc_status(proc.pid), common.open_fds(proc.pid), \
            icmp_sockets()
        last = read(started.port)

        span, cpu_window, cpu = last.at - first.at, t1 - t0, cpu1 - cpu0
        sent, received = last.sent - first.sent, last.received - first.received
        sent_per_s = sent / span
        out.update({
            "window_scrape_s": span,
            "echoes_sent": sent,
            "replies": received,
            "echoes_per_s": sent_per_s,
            "scheduled_per_s": float(len(hosts)),
            "completion_ratio": sent_per_s / len(hosts),
            "loss_ratio": 1 - received / sent if sent else math.nan,
            "cpu_s": cpu,
            "cpu_core_fraction": cpu / cpu_window,
            "cpu_us_per_echo": (cpu / cpu_window) / sent_per_s * 1e6 if sent else math.nan,
            "other_load_cores": common.other_load(ticks0, ticks1, cpu_window,
                                                  cpu + (self1 - self0)),
            "rss_kib": status.get("VmRSS"),
            "threads": status.get("Threads"),
            "fds": fds,
            "ping_sockets_at_end": sockets["ping"],
            "raw_sockets_at_end": sockets["raw"],
        })
        deltas = {k: v - first.extra.get(k, 0.0) for k, v in last.extra.items()
                  if not k.startswith("lag_le:") and k != "targets_going"}
        out["counters_delta"] = {k: v for k, v in deltas.items() if v}
        if side == "netsentry":
            out["runs"] = deltas.get("netsentry_check_runs_total", 0.0)
            out["failures"] = sum(v for k, v in deltas.items() if k.startswith("failures:"))
            out["missed"] = deltas.get("netsentry_scheduler_missed_runs_total", 0.0)
            out["skipped_runs"] = deltas.get("netsentry_scheduler_skipped_runs_total", 0.0)
            lag = sorted((float(k.split(":", 1)[1]), v - first.extra.get(k, 0.0))
                         for k, v in last.extra.items() if k.startswith("lag_le:"))
            out["lag_p50_s"] = common.histogram_quantile(0.5, lag)
            out["lag_p99_s"] = common.histogram_quantile(0.99, lag)
        else:
            out["duplicates"] = deltas.get("duplicates", 0.0)
        print(f"   window: {sent_per_s:.1f} echoes/s, loss {out['loss_ratio'] * 100:.2f} %, "
              f"CPU {out['cpu_us_per_echo']:.1f} µs/echo ({out['cpu_core_fraction'] * 100:.1f} %"
              f" of a core), RSS {(out['rss_kib'] or 0) / 1024:.1f} MiB, other load "
              f"{out['other_load_cores']:.2f} cores", flush=True)

        out.update(time_scrapes(started.port, proc.pid, args.scrapes, out["cpu_core_fraction"]))
        out["peak_rss_kib"] = common.proc_status(proc.pid).get("VmHWM")
        print(f"   /metrics: {out['metrics_bytes_plain'] / 1024:.0f} KiB, "
              f"{out['scrape_plain_median_s'] * 1000:.1f} ms plain / "
              f"{out['scrape_gzip_median_s'] * 1000:.1f} ms gzip (medians of {args.scrapes}), "
              f"{out['cpu_ms_per_scrape']:.1f} ms of CPU each", flush=True)
    finally:
        out["sigterm_exit_s"] = children.stop(proc, timeout=30.0)
        started.log.join(5.0)
        out["exit_code"] = proc.returncode
        notable = [ln for ln in common.interesting_lines(started.log.lines)
                   if "Starting prober" not in ln and "Pinger resolved" not in ln]
        out["stderr_notable_count"] = len(notable)
        out["stderr_notable"] = notable[:20]
    return out


def time_scrapes(port: int, pid: int, count: int, busy: float) -> dict[str, Any]:
    """`count` client-timed GETs of /metrics each, plain and gzip; the exporter's CPU per
    scrape is its CPU over them less what its pinging took at the window's rate (`busy`)."""
    plain: list[float] = []
    gz: list[float] = []
    sizes = {"plain": 0, "gzip": 0}
    cpu0, t0 = common.cpu_seconds(pid), time.monotonic()
    for encoding, times in ((None, plain), ("gzip", gz)):
        headers = {"Accept-Encoding": encoding} if encoding else {}
        for _ in range(count):
            status, got, body, seconds = common.http_get("127.0.0.1", port, "/metrics", headers)
            if status != 200:
                raise RuntimeError(f"/metrics ({encoding or 'plain'}) answered {status}")
            if encoding == "gzip":
                if got.get("content-encoding") != "gzip":
                    raise RuntimeError("asked for gzip, /metrics did not send gzip")
                gzip.decompress(body)
            times.append(seconds)
            sizes[encoding or "plain"] = len(body)
            time.sleep(0.2)  # apart, as scrapes come
    cpu, elapsed = common.cpu_seconds(pid) - cpu0, time.monotonic() - t0
    return {"scrape_plain_s": plain, "scrape_gzip_s": gz,
            "scrape_plain_median_s": common.median(plain),
            "scrape_gzip_median_s": common.median(gz),
            "metrics_bytes_plain": sizes["plain"], "metrics_bytes_gzip": sizes["gzip"],
            "cpu_ms_per_scrape": max(cpu - busy * elapsed, 0.0) / (2 * count) * 1000}


# --- the report ---------------------------------------------------------------------------------

FIGURES: list[common.Figure] = [
    ("CPU µs per echo sent", "cpu_us_per_echo", ".1f", 1.0, " µs"),
    ("echoes sent/s (of N scheduled)", "echoes_per_s", ".1f"),
    ("completion (echoes / N per s)", "completion_ratio", ".3f"),
    ("loss in window", "loss_ratio", ".3f", 100, " %"),
    ("CPU (share of one core)", "cpu_core_fraction", ".1f", 100, " %"),
    ("other processes' load (cores)", "other_load_cores", ".2f"),
    ("RSS at window end", "rss_kib", ".1f", 1 / 1024, " MiB"),
    ("peak RSS (VmHWM, after scrapes)", "peak_rss_kib", ".1f", 1 / 1024, " MiB"),
    ("threads", "threads", ".0f"),
    ("open fds", "fds", ".0f"),
    ("ICMP sockets at window end (ping / raw)", "sockets", ""),
    ("/metrics scrape, plain (median)", "scrape_plain_median_s", ".1f", 1000, " ms"),
    ("/metrics scrape, gzip (median)", "scrape_gzip_median_s", ".1f", 1000, " ms"),
    ("exporter CPU per scrape", "cpu_ms_per_scrape", ".1f", 1.0, " ms"),
    ("/metrics size, plain / gzip", "sizes", ""),
    ("start-up until listening", "startup_s", ".2f", 1.0, " s"),
    ("SIGTERM → exit", "sigterm_exit_s", ".3f", 1.0, " s"),
    ("stderr warn/error lines", "stderr_notable_count", ".0f"),
]
MEDIAN_KEYS = [row[1] for row in FIGURES if row[1] not in ("sockets", "sizes")] + [
    "lag_p50_s", "lag_p99_s", "metrics_bytes_plain", "metrics_bytes_gzip"]


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of the rounds' figures of one exporter in one mode."""
    out: dict[str, Any] = {"rounds": len(rounds)}
    for key in MEDIAN_KEYS:
        values = [r[key] for r in rounds if isinstance(r.get(key), int | float)
                  and not (isinstance(r[key], float) and math.isnan(r[key]))]
        out[key] = common.median(values) if values else math.nan
    out["sockets"] = " / ".join(
        f"{min(r[k] for r in rounds)}–{max(r[k] for r in rounds)}"
        if min(r[k] for r in rounds) != max(r[k] for r in rounds) else f"{rounds[0][k]}"
        for k in ("ping_sockets_at_end", "raw_sockets_at_end")) if rounds else "n/a"
    out["sizes"] = (f"{out['metrics_bytes_plain'] / 1024:.0f} / "
                    f"{out['metrics_bytes_gzip'] / 1024:.0f} KiB")
    for key in ("failures", "missed", "skipped_runs", "duplicates"):
        if any(key in r for r in rounds):
            out[key] = sum(r.get(key, 0.0) for r in rounds)
    return out


def report(info: dict[str, Any], args: argparse.Namespace,
           results: dict[str, dict[str, list[dict[str, Any]]]]) -> tuple[str, list[dict[str, Any]]]:
    lines = common.report_head(
        "netsentry ping benchmark (beside smokeping_prober)", info,
        f"smokeping_prober: {info.get('smokeping_version', '?')}",
        f"agent:    {'commit ' + info['commit'] if info.get('commit') else 'the working tree'}",
        f"targets:  {args.checks:,} loopback addresses {info['targets'][0]} … "
        f"{info['targets'][-1]}, one echo a second each, {SIZE} bytes of payload; in a network "
        "namespace of the benchmark's own (loopback only)",
        f"rounds:   {args.rounds} per mode, alternating which exporter goes first; warm-up "
        f"{args.warmup:g} s, window {args.window:g} s; {args.scrapes} scrapes each, plain and gzip",
        f"logs:     {info['workdir']}")
    goals = []
    for mode, sides in results.items():
        ours, theirs = sides.get("netsentry", []), sides.get("smokeping_prober", [])
        if not ours and not theirs:
            continue
        a, b = summary(ours), summary(theirs)
        lines.append(f"{mode} sockets: netsentry's runs use {info['socket_kind'].get(mode, '?')}")
        t = common.Table([f"{mode} sockets, medians of the rounds", "netsentry",
                          "smokeping_prober"])
        t.figures([a, b], FIGURES)
        t.add("scheduler lag p50 / p99", f"{common.fmt(a.get('lag_p50_s', math.nan) * 1000, '.2f')}"
              f" / {common.fmt(a.get('lag_p99_s', math.nan) * 1000, '.2f', ' ms')}", "—")
        t.add("failed / missed / skipped runs (all rounds)",
              f"{a.get('failures', 0):.0f} / {a.get('missed', 0):.0f} / "
              f"{a.get('skipped_runs', 0):.0f}",
              f"duplicates {b.get('duplicates', 0):.0f}")
        lines += [t.render(), ""]
        pairs = list(zip(ours, theirs, strict=False))
        if pairs:
            t = common.Table(["round", "netsentry µs/echo", "smokeping_prober µs/echo", "ratio",
                              "other load (cores)"])
            for i, (x, y) in enumerate(pairs, 1):
                t.add(f"{i} ({'smokeping_prober' if i % 2 else 'netsentry'} first)",
                      common.fmt(x.get("cpu_us_per_echo"), ".1f"),
                      common.fmt(y.get("cpu_us_per_echo"), ".1f"),
                      common.fmt(x.get("cpu_us_per_echo", math.nan)
                                 / y.get("cpu_us_per_echo", math.nan), ".2f"),
                      f"{common.fmt(x.get('other_load_cores'), '.2f')} / "
                      f"{common.fmt(y.get('other_load_cores'), '.2f')}")
            lines += [t.render(), ""]
        for r in [*ours, *theirs]:
            if r.get("stderr_notable"):
                lines.append(f"{r['side']} ({mode}) stderr, first "
                             f"{min(len(r['stderr_notable']), 5)} of "
                             f"{r['stderr_notable_count']} warn/error lines:")
                lines += [f"  {ln[:300]}" for ln in r["stderr_notable"][:5]]
            if r["side"] == "netsentry" and r.get("counters_delta"):
                odd = {k: v for k, v in r["counters_delta"].items()
                       if k.startswith(("failures:", "ignored:"))}
                if odd:
                    lines.append(f"netsentry ({mode}) in a window: {odd}")
        goal: dict[str, Any] = {
            "goal": f"{mode} sockets: netsentry CPU per echo ≤ smokeping_prober's",
            "mode": mode}
        ratio = a.get("cpu_us_per_echo", math.nan) / b.get("cpu_us_per_echo", math.nan) \
            if ours and theirs else math.nan
        if math.isnan(ratio):
            goal.update(measured="not measured", met=None)
        else:
            clean = (a.get("failures", 0) == 0 and a.get("completion_ratio", 0) >= 0.99
                     and b.get("completion_ratio", 0) >= 0.99)
            goal.update(measured=f"{a['cpu_us_per_echo']:.1f} / {b['cpu_us_per_echo']:.1f} µs = "
                                 f"{ratio:.2f}" + ("" if clean else " (failures or incomplete)"),
                        ratio=ratio, met=ratio <= GOAL_RATIO and clean)
        goals.append(goal)
    t = common.Table(["goal (issue 15)", "netsentry / smokeping_prober, medians", "met"])
    for g in goals:
        t.add(g["goal"], g["measured"], common.verdict(g["met"]))
    lines += [t.render(), "",
              "  CPU is utime + stime of the exporter's process (all threads) from /proc over",
              "  the window, between the window's two scrapes (their renders outside it),",
              "  divided by the echoes it sent in the window by its own counter. Scrape CPU:",
              "  over the timed scrapes, less the window's CPU rate for their duration.",
              "=" * 78]
    return "\n".join(lines), goals


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=1000, help="targets (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (default 3)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds after every target has been pinged (default 10)")
    parser.add_argument("--window", type=float, default=30.0, help="measured window, s")
    parser.add_argument("--mode", choices=("dgram", "raw", "both"), default="dgram",
                        help="the sockets: ping sockets (default), raw, or both in turn")
    parser.add_argument("--scrapes", type=int, default=5,
                        help="timed /metrics scrapes of each encoding (default 5)")
    parser.add_argument("--only", choices=("netsentry", "smokeping_prober"),
                        help="measure one exporter only")
    parser.add_argument("--python", default=str(common.ROOT / ".venv" / "bin" / "python"),
                        help="interpreter that runs the agent")
    parser.add_argument("--commit", metavar="REV",
                        help="run the agent from this commit's tree (git archive) instead of "
                             "the working tree")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.tree = None
    if not 1 <= args.checks <= 60_000:
        parser.error("--checks in [1, 60000]")
    if not 1 <= args.rounds <= 20 or not 0 <= args.warmup <= 600:
        parser.error("--rounds in [1, 20], --warmup in [0, 600] s")
    if not 5 <= args.window <= 3600 or not 1 <= args.scrapes <= 50:
        parser.error("--window in [5, 3600] s, --scrapes in [1, 50]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.path.exists(SMOKEPING):
        print(f"{SMOKEPING} is missing: scripts/install-system-deps installs it "
              "(Debian's prometheus-smokeping-prober)", file=sys.stderr)
        return 1
    modes = ["dgram", "raw"] if args.mode == "both" else [args.mode]
    try:
        enter_namespace()  # before start_run and any thread
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"benchmark error: {exc}", file=sys.stderr)
        return 1
    workdir, info = common.start_run("netsentry-bench-ping-", argv)
    info["smokeping_version"] = smokeping_version()
    if args.commit:
        try:
            args.tree, info["commit"] = unpack_commit(args.commit, workdir)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"benchmark error: --commit {args.commit}: {exc}", file=sys.stderr)
            return 1
        print(f"agent from commit {info['commit']} ({args.tree})", flush=True)
    hosts = targets(args.checks)
    info["targets"] = [hosts[0], hosts[-1]]
    info["socket_kind"] = {}
    sides = ["smokeping_prober", "netsentry"]
    if args.only:
        sides = [args.only]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: {side: [] for side in sides} for mode in modes}
    error: str | None = None
    try:
        with common.Children() as children:
            for mode in modes:
                set_ping_group_range(mode)
                info["socket_kind"][mode] = socket_kind(args)
                print(f"\n== mode {mode}: ping_group_range {PING_GROUP_RANGE[mode]!r}; a "
                      f"netsentry ping run opens {info['socket_kind'][mode]}", flush=True)
                for number in range(1, args.rounds + 1):
                    print(f"\n== {mode}, round {number} of {args.rounds}", flush=True)
                    order = sides if number % 2 else sides[::-1]
                    for side in order:
                        time.sleep(2.0)  # the previous exporter's sockets and CPU settle
                        results[mode][side].append(
                            measure(children, side, mode, args, hosts, workdir))
    except KeyboardInterrupt:
        print("\ninterrupted; children stopped", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        error = common.harness_error(exc)
    text, goals = report(info, args, results)
    print(text, flush=True)
    return common.finish(args.json, {**info, "args": vars(args), "results": results,
                                     "goals": goals, "error": error}, error)


if __name__ == "__main__":
    raise SystemExit(main())
