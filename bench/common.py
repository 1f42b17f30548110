"""Shared helpers for the benchmarks under bench/: processes, /proc readings, scrapes, listeners,
measuring the agent over a window, blackbox_exporter (start-up and /probe load) and report
formatting.

Everything here talks to loopback only (127.0.0.0/8). Every child process is started through
`Children`, which kills it on exit (also on Ctrl-C and SIGTERM), and is additionally tied to
this process with PR_SET_PDEATHSIG so a killed benchmark leaves nothing behind.

Run as a script, this module is the loopback listener child:

    python bench/common.py listen --addresses 127.0.0.2,127.0.0.3 --ports-per-address 2 \
        --max-seconds 3600

It prints one line `ready HOST:PORT HOST:PORT ...` on stdout, then accepts and closes
connections until stdin closes, its parent dies, or --max-seconds passes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import ipaddress
import math
import os
import platform
import re
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127."

# --- the machine ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_mib": mem_kib // 1024,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "machine": platform.machine(),
    }


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS (KiB) and Threads from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return total - idle, total


def other_load(before: tuple[int, int], after: tuple[int, int], seconds: float,
               ours: float) -> float:
    """Cores' worth of busy CPU during `seconds` not spent by `ours` (CPU seconds)."""
    busy = (after[0] - before[0]) / CLK_TCK
    return max(busy - ours, 0.0) / seconds


# --- child processes ------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_SETPRIV = shutil.which("setpriv")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class StreamLog:
    """Drains a child's pipe on a thread (so the child never blocks on a full pipe)."""

    def __init__(self, stream: IO[bytes], path: str | None, keep: int = 20000) -> None:
        self.lines: list[str] = []
        self._keep = keep
        self._file = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if self._file:
                    self._file.write(line + "\n")
                    self._file.flush()
                with self._cond:
                    if len(self.lines) < self._keep:
                        self.lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._cond.notify_all()
            if self._file:
                self._file.close()

    def wait_for(self, pattern: str, timeout: float,
                 proc: subprocess.Popen[bytes]) -> re.Match[str]:
        """The first line matching `pattern`; raises if it does not come within `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no line matching {pattern!r} within {timeout:g}s")
                if proc.poll() is not None and not self._thread.is_alive():
                    raise RuntimeError(
                        f"process exited with {proc.returncode} before a line matching "
                        f"{pattern!r}; last lines:\n" + "\n".join(self.lines[-20:]))
                self._cond.wait(min(left, 0.2))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Children:
    """Starts child processes and guarantees they are gone when the `with` block ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], *, stdin: int | None = subprocess.DEVNULL,
              stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.PIPE,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # setpriv execs the command in place (same PID) with PR_SET_PDEATHSIG set; without it,
        # a preexec_fn does the same (less safe when this process has threads).
        prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []
        proc = subprocess.Popen(
            prefix + list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env,
            start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the children
            preexec_fn=None if _SETPRIV else _die_with_parent,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> float | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns seconds to exit after SIGTERM
        (None when it had to be killed or had already exited)."""
        if proc.poll() is not None:
            return None
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
            return time.monotonic() - started
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
            return None

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.procs.clear()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sigterm_as_keyboard_interrupt() -> None:
    """Let SIGTERM unwind like Ctrl-C, so every `finally` (and `Children.close`) runs."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def sleep_until(deadline: float, procs: Sequence[subprocess.Popen[bytes]], what: str, *,
                exited: str = "{what}: a child exited with {code} (pid {pid})") -> None:
    """Sleep until `deadline` (monotonic); raise RuntimeError as soon as one of `procs` exits.

    The error's text is `exited` with {what}, {code} (the exit code) and {pid} filled in."""
    while (left := deadline - time.monotonic()) > 0:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(exited.format(what=what, code=proc.returncode, pid=proc.pid))
        time.sleep(min(left, 0.5))


def interesting_lines(lines: list[str]) -> list[str]:
    """stderr lines worth a human's attention: warnings, errors, tracebacks, unknown output."""
    return [ln for ln in lines
            if not re.search(r"\blevel=(info|debug)\b", ln) and '"level": "info"' not in ln]


def free_port(host: str = "127.0.0.1") -> int:
    assert host.startswith(LOOPBACK)
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- the loopback listener child ----------------------------------------------------------------


@dataclass
class Listeners:
    proc: subprocess.Popen[bytes]
    endpoints: list[str]  # "HOST:PORT"


def start_listeners(children: Children, addresses: Sequence[str], ports_per_address: int,
                    max_seconds: float, backlog: int = 4096) -> Listeners:
    for host in addresses:
        if not host.startswith(LOOPBACK):
            raise ValueError(f"{host}: listeners are loopback only")
    argv = [sys.executable, os.path.abspath(__file__), "listen",
            "--addresses", ",".join(addresses), "--ports-per-address", str(ports_per_address),
            "--backlog", str(backlog), "--max-seconds", str(max_seconds)]
    proc = children.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if not line or line[0] != "ready":
        raise RuntimeError(f"listener child did not start: {line!r}")
    return Listeners(proc, line[1:])


def _listen_main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="common.py listen")
    parser.add_argument("--addresses", required=True)
    parser.add_argument("--ports-per-address", type=int, default=1)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--max-seconds", type=float, default=3600)
    options = parser.parse_args(argv)
    parent = os.getppid()
    sel = selectors.EpollSelector()
    endpoints = []
    for host in options.addresses.split(","):
        if not host.startswith(LOOPBACK):
            raise SystemExit(f"{host}: loopback only")
        for _ in range(options.ports_per_address):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            s.listen(options.backlog)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, "listen")
            endpoints.append(f"{host}:{s.getsockname()[1]}")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")  # EOF: the parent is done
    print("ready", *endpoints, flush=True)
    deadline = time.monotonic() + options.max_seconds
    accepted = 0
    while time.monotonic() < deadline and os.getppid() == parent:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    return 0
                continue
            sock = key.fileobj
            for _ in range(1024):  # bounded per wakeup; the level-triggered selector comes back
                try:
                    conn, _ = sock.accept()  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                        break
                    raise
                conn.close()
                accepted += 1
    return 0


# --- HTTP and the exposition format -----------------------------------------------------------


def http_get(host: str, port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 60.0) -> tuple[int, dict[str, str], bytes, float]:
    """One GET on a fresh connection: status, headers, body, seconds until the body was read."""
    assert host.startswith(LOOPBACK)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        return (response.status, {k.lower(): v for k, v in response.getheaders()}, body,
                elapsed)
    finally:
        conn.close()


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll GET 127.0.0.1:`port``path` until it answers 200 (True), `proc` exits or `timeout`
    passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if http_get("127.0.0.1", port, path, timeout=2.0)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_labels(text: str) -> dict[str, str]:
    return {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for k, v in _LABEL.findall(text)}


def parse_samples(text: str, prefixes: Iterable[str]) -> list[tuple[str, dict[str, str], float]]:
    """Samples whose metric name starts with one of `prefixes`, parsed by hand (a 10,000-check
    scrape has ~300,000 lines; prometheus_client's parser would take seconds)."""
    wanted = tuple(prefixes)
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(wanted):
            continue
        brace = line.find("{")
        if brace >= 0:
            end = line.rindex("}")
            name, labels, rest = line[:brace], parse_labels(line[brace + 1:end]), line[end + 1:]
        else:
            name, _, rest = line.partition(" ")
            labels = {}
        value = rest.split()[0]
        out.append((name, labels, float(value)))
    return out


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative (upper bound, count) pairs, +Inf last.

    Linear interpolation inside the bucket; the lowest bucket's lower bound is 0; a rank in the
    +Inf bucket returns the highest finite bound. NaN when there are no observations.
    """
    buckets = sorted(buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0] if len(buckets) > 1 else math.nan
    upper, count = buckets[index]
    lower, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    if index == 0 and upper <= 0:
        return upper
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    """`value` formatted with `spec` and `unit` appended; "n/a" for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{spec}}{unit}"


@dataclass
class Table:
    """A plain two-or-more column text table."""

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [max(len(r[i]) for r in [self.header, *self.rows] if i < len(r))
                  for i in range(len(self.header))]
        lines = []
        for n, row in enumerate([self.header, *self.rows]):
            cells = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                     for i, c in enumerate(row)]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


# --- the agent under test ---------------------------------------------------------------------

AGENT_HOST = "127.0.0.1"
AGENT_METRIC_PREFIXES = (
    "netsentry_check_runs_total",
    "netsentry_check_success",
    "netsentry_check_failures_total",
    "netsentry_scheduler_",
)


@dataclass
class Scrape:
    at: float
    runs: dict[str, float] = field(default_factory=dict)
    success: dict[str, float] = field(default_factory=dict)
    failures: dict[tuple[str, str], float] = field(default_factory=dict)  # (check, reason)
    missed: float = 0.0
    skipped: float = 0.0
    lag_buckets: dict[float, float] = field(default_factory=dict)
    lag_sum: float = 0.0
    lag_count: float = 0.0


def scrape(port: int) -> Scrape:
    """One GET of the agent's /metrics on AGENT_HOST:`port`, parsed into a Scrape."""
    at = time.monotonic()
    status, _, body, _ = http_get(AGENT_HOST, port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}: {body[:200]!r}")
    out = Scrape(at=at)
    for name, labels, value in parse_samples(body.decode(), AGENT_METRIC_PREFIXES):
        if name == "netsentry_check_runs_total":
            out.runs[labels["check"]] = value
        elif name == "netsentry_check_success":
            out.success[labels["check"]] = value
        elif name == "netsentry_check_failures_total":
            out.failures[(labels.get("check", ""), labels.get("reason", ""))] = value
        elif name == "netsentry_scheduler_missed_runs_total":
            out.missed += value
        elif name == "netsentry_scheduler_skipped_runs_total":
            out.skipped += value
        elif name == "netsentry_scheduler_lag_seconds_bucket":
            out.lag_buckets[float(labels["le"])] = value
        elif name == "netsentry_scheduler_lag_seconds_sum":
            out.lag_sum = value
        elif name == "netsentry_scheduler_lag_seconds_count":
            out.lag_count = value
    return out


def measure_agent(children: Children, argv: Sequence[str], *, label: str, n: int,
                  interval: float, window: float, scrape_every: float, stderr_file: Path,
                  head: dict[str, Any], tail: dict[str, Any], side: subprocess.Popen[bytes],
                  side_key: str, startup_timeout: float) -> dict[str, Any]:
    """Runs the agent (`argv`, which listens on AGENT_HOST:0) and measures it: waits for
    "listening" and "config loaded", warms up one `interval`, then measures `window` seconds
    between two /metrics scrapes and two /proc readings (scraping every `scrape_every` s in
    between), and stops it. `side` is the process answering the checks (its CPU per run goes
    under `side_key`; it is watched too). The result starts with `head`, then checks,
    interval_s, window_s and pid, then `tail`, then stderr_file and the measured figures."""
    print(f"\n== netsentry, {n} {label}: {shlex.join(argv)}", flush=True)
    spawned = time.monotonic()
    proc = children.start(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    log = StreamLog(proc.stderr, str(stderr_file))
    out: dict[str, Any] = {**head, "checks": n, "interval_s": interval, "window_s": window,
                           "pid": proc.pid, **tail, "stderr_file": str(stderr_file)}
    watched = [proc, side]
    try:
        port = int(log.wait_for(r"msg=listening address=127\.0\.0\.1:(\d+)", startup_timeout,
                                proc).group(1))
        log.wait_for(r'msg="config loaded"', startup_timeout, proc)
        loaded = time.monotonic()
        out["startup_s"] = loaded - spawned
        print(f"   listening on {AGENT_HOST}:{port}; config loaded after "
              f"{out['startup_s']:.2f} s; warming up {interval:g} s", flush=True)
        sleep_until(loaded + interval + 1.0, watched, "warm-up")

        first = scrape(port)
        cpu0, t0, ticks0 = cpu_seconds(proc.pid), time.monotonic(), machine_ticks()
        scpu0, self0 = cpu_seconds(side.pid), cpu_seconds(os.getpid())
        extra = 0
        if scrape_every > 0:
            next_scrape = t0 + scrape_every
            while next_scrape < t0 + window - 1.0:
                sleep_until(next_scrape, watched, "window")
                scrape(port)
                extra += 1
                next_scrape += scrape_every
        sleep_until(t0 + window, watched, "window")
        cpu1, t1, ticks1 = cpu_seconds(proc.pid), time.monotonic(), machine_ticks()
        scpu1, self1 = cpu_seconds(side.pid), cpu_seconds(os.getpid())
        status = proc_status(proc.pid)
        fds = open_fds(proc.pid)
        last = scrape(port)

        scrape_window, cpu_window = last.at - first.at, t1 - t0
        runs = sum(last.runs.values()) - sum(first.runs.values())
        runs_per_s = runs / scrape_window
        cpu = cpu1 - cpu0
        cpu_per_check = (cpu / cpu_window) / runs_per_s if runs_per_s > 0 else math.nan
        lag_delta = sorted((le, v - first.lag_buckets.get(le, 0.0))
                           for le, v in last.lag_buckets.items())
        lag_count = last.lag_count - first.lag_count
        by_key = {k: v - first.failures.get(k, 0.0) for k, v in last.failures.items()}
        by_reason: dict[str, float] = {}
        examples: dict[str, list[str]] = {}
        for (check, reason), v in sorted(by_key.items()):
            if v:
                by_reason[reason] = by_reason.get(reason, 0.0) + v
                if len(examples.setdefault(reason, [])) < 3:
                    examples[reason].append(f"{check} ×{v:.0f}")
        scheduled = n / interval
        out.update({
            "listen_port": port,
            "never_run_at_window_start": sum(1 for v in first.runs.values() if v == 0),
            "checks_in_scrape": len(last.runs),
            "window_scrape_s": scrape_window,
            "scrapes_in_window": 1 + extra,
            "runs_delta": runs,
            "runs_per_s": runs_per_s,
            "scheduled_per_s": scheduled,
            "completion_ratio": runs_per_s / scheduled,
            "checks_without_run_in_window": sum(
                1 for c, v in last.runs.items() if v - first.runs.get(c, 0.0) == 0),
            "failures_delta": sum(by_reason.values()),
            "failures_by_reason": by_reason,
            "failure_examples": examples,
            "failing_checks_at_end": sum(1 for v in last.success.values() if v == 0),
            "missed_delta": last.missed - first.missed,
            "skipped_delta": last.skipped - first.skipped,
            "lag_p50_s": histogram_quantile(0.5, lag_delta),
            "lag_p99_s": histogram_quantile(0.99, lag_delta),
            "lag_mean_s": (last.lag_sum - first.lag_sum) / lag_count if lag_count else math.nan,
            "cpu_s": cpu,
            "cpu_core_fraction": cpu / cpu_window,
            "cpu_us_per_check": cpu_per_check * 1e6,
            side_key: ((scpu1 - scpu0) / cpu_window) / runs_per_s * 1e6
            if runs_per_s > 0 else math.nan,
            "other_load_cores": other_load(ticks0, ticks1, cpu_window,
                                           cpu + (scpu1 - scpu0) + (self1 - self0)),
            "rss_kib": status.get("VmRSS"),
            "peak_rss_kib": status.get("VmHWM"),
            "threads": status.get("Threads"),
            "fds": fds,
        })
        print(f"   window done: {runs_per_s:.1f} runs/s of {scheduled:.1f} scheduled, "
              f"CPU {out['cpu_us_per_check']:.1f} µs/check, failures "
              f"{out['failures_delta']:.0f}", flush=True)
    finally:
        out["sigterm_exit_s"] = children.stop(proc, timeout=30.0)
        log.join(5.0)
        out["exit_code"] = proc.returncode
        notable = interesting_lines(log.lines)
        out["stderr_notable_count"] = len(notable)
        out["stderr_notable"] = notable[:40]
    return out


# --- blackbox_exporter -----------------------------------------------------------------------

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"


def start_blackbox(children: Children, config_text: str,
                   workdir: Path) -> tuple[subprocess.Popen[bytes], StreamLog, int]:
    """blackbox_exporter with `config_text` as workdir/blackbox.yml on 127.0.0.1 and a free
    port, healthy (/-/healthy answers 200); its stderr goes to workdir/blackbox.stderr.
    Returns (process, stderr log, port); raises RuntimeError after three failed tries."""
    config = workdir / "blackbox.yml"
    config.write_text(config_text, encoding="utf-8")
    for _attempt in range(3):  # the free port may be taken between probing it and binding it
        port = free_port()
        argv = [BLACKBOX, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
        print(f"\n== blackbox_exporter: {shlex.join(argv)}", flush=True)
        proc = children.start(argv)
        assert proc.stderr is not None
        log = StreamLog(proc.stderr, str(workdir / "blackbox.stderr"))
        if wait_http(port, "/-/healthy", proc, 20.0):
            return proc, log, port
        children.stop(proc)
    raise RuntimeError("blackbox_exporter did not start; see blackbox.stderr")


def loopback_target(target: str) -> bool:
    """True when `target` — `HOST:PORT`, `HOST` or a URL such as `http://HOST:PORT/` — names
    an IPv4 loopback address (127.0.0.0/8)."""
    if "://" in target:
        host = urllib.parse.urlsplit(target).hostname or ""
    else:
        host = target.rsplit(":", 1)[0] if target.count(":") == 1 else target
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def run_probes(port: int, module: str, targets: Sequence[str], count: int, clients: int,
               max_seconds: float, rate: float = 0.0) -> dict[str, Any]:
    """`count` blackbox /probe requests of `module`, round-robin over `targets` (`HOST:PORT` or
    URLs on 127.0.0.0/8, URL-quoted in the query), over `clients` keep-alive connections,
    bounded by `max_seconds`; paced at `rate` per second when given (else as fast as the
    clients go)."""
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "failed": 0, "errors": 0}
    examples: list[str] = []
    started = time.monotonic()
    deadline = started + max_seconds

    def take() -> int | None:
        with lock:
            if state["next"] >= count or time.monotonic() > deadline:
                return None
            state["next"] += 1
            return state["next"] - 1

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
        try:
            while (i := take()) is not None:
                if rate:
                    time.sleep(max(started + i / rate - time.monotonic(), 0.0))
                target = targets[i % len(targets)]
                assert loopback_target(target), target
                try:
                    quoted = urllib.parse.quote(target, safe=":/")
                    conn.request("GET", f"/probe?module={module}&target={quoted}")
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # reconnects on the next request
                    with lock:
                        state["errors"] += 1
                        state["failed"] += 1
                        if len(examples) < 5:
                            examples.append(f"{target}: {type(exc).__name__}: {exc}")
                    continue
                good = response.status == 200 and re.search(rb"(?m)^probe_success 1$", body)
                with lock:
                    state["ok" if good else "failed"] += 1
                    if not good and len(examples) < 5:
                        examples.append(f"{target}: HTTP {response.status}: {body[:300]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0) + 15.0)
    return {"ok": state["ok"], "failed": state["failed"], "errors": state["errors"],
            "examples": examples, "hit_time_limit": state["next"] < count,
            "seconds": time.monotonic() - started}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "listen":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        raise SystemExit(_listen_main(sys.argv[2:]))
    raise SystemExit("usage: common.py listen --addresses A,B [--ports-per-address N]")
