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

import argparse
import contextlib
import ctypes
import errno
import http.client
import ipaddress
import json
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
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
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


def own_cpu_seconds() -> float:
    """This process's CPU time (user + system), in seconds."""
    times = os.times()
    return times.user + times.system


# A floor child (a reference client measuring itself) ends by printing `done COUNT CPU_SECONDS`.


def report_done(count: int, cpu: float) -> None:
    """The floor child's last line: what it did and the CPU seconds that took it."""
    print(f"done {count} {cpu:.6f}", flush=True)


def run_counting_child(argv: Sequence[str], timeout: float) -> tuple[int, float] | str:
    """Run a floor child to its end: (COUNT, CPU seconds) from its `done` line, or why not
    (its exit code and the end of its stderr; a COUNT of 0 is a failure too)."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            check=False)
    words = result.stdout.split()
    if result.returncode != 0 or len(words) != 3 or words[0] != "done" or words[1] == "0":
        return f"exited {result.returncode}: {result.stderr.strip()[-200:]}"
    return int(words[1]), float(words[2])


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
    """A report table, rendered as aligned Markdown: the header, then one row per `add` (or
    `figure`); the first column is left-aligned, the others right-aligned."""

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def figure(self, label: str, results: Sequence[dict[str, Any]], key: str,
               spec: str = ".1f", scale: float = 1.0, unit: str = "") -> None:
        """A row of one figure, a cell per result: `key` times `scale`, formatted by `fmt`
        with `spec` and `unit`; "skipped" for a result that has a "skipped" entry."""
        cells = []
        for r in results:
            value = r.get(key)
            if "skipped" in r:
                cells.append("skipped")
                continue
            if isinstance(value, int | float) and scale != 1.0:
                value = value * scale
            cells.append(fmt(value, spec, unit))
        self.add(label, *cells)

    def figures(self, results: Sequence[dict[str, Any]], rows: Iterable[Figure]) -> None:
        for row in rows:
            self.figure(row[0], results, *row[1:])

    def render(self) -> str:
        table = [[c.replace("|", "\\|") for c in r] for r in [self.header, *self.rows]]
        count = max(len(r) for r in table)
        table = [r + [""] * (count - len(r)) for r in table]
        widths = [max(3, *(len(r[i]) for r in table)) for i in range(count)]
        rule = ["-" * widths[0], *("-" * (w - 1) + ":" for w in widths[1:])]
        lines = []
        for row in [table[0], rule, *table[1:]]:
            cells = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                     for i, c in enumerate(row)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


# A row of Table.figures: (label, key), then optionally spec, scale and unit as in
# Table.figure.
Figure = tuple[Any, ...]


def verdict(met: bool | None) -> str:
    """A goal's "met" cell: yes, NO, or not measured (None)."""
    return "not measured" if met is None else ("yes" if met else "NO")


# --- the agent under test ---------------------------------------------------------------------

AGENT_HOST = "127.0.0.1"
AGENT_METRIC_PREFIXES = (
    "netsentry_check_runs_total",
    "netsentry_check_success",
    "netsentry_check_failures_total",
    "netsentry_scheduler_",
    "netsentry_checks_in_flight",
)


@dataclass
class Scrape:
    at: float  # monotonic time the request was sent (the agent snapshots on arrival)
    seconds: float = 0.0  # until the body was read
    size: int = 0  # bytes of the body
    runs: dict[str, float] = field(default_factory=dict)
    success: dict[str, float] = field(default_factory=dict)
    failures: dict[tuple[str, str], float] = field(default_factory=dict)  # (check, reason)
    missed: float = 0.0
    skipped: float = 0.0
    lag_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    lag_sum: float = 0.0
    lag_count: float = 0.0
    in_flight: float = 0.0

    def failures_by_reason(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_, reason), value in self.failures.items():
            out[reason] = out.get(reason, 0.0) + value
        return out


def scrape(port: int) -> Scrape:
    """One GET of the agent's /metrics on AGENT_HOST:`port`, parsed into a Scrape."""
    at = time.monotonic()
    status, _, body, seconds = http_get(AGENT_HOST, port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}: {body[:200]!r}")
    out = Scrape(at=at, seconds=seconds, size=len(body))
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
        elif name == "netsentry_checks_in_flight":
            out.in_flight = value
    return out


def agent_argv(python: str, config: Path, loop: str | None = None) -> list[str]:
    """The agent with `config`, listening on AGENT_HOST and a port of the kernel's choice;
    on the event loop `loop` (asyncio | uvloop | auto) when given, else the agent's default."""
    return [python, "-m", "exporter", "--config.file", str(config),
            "--web.listen-address", f"{AGENT_HOST}:0", "--log.level", "info",
            *(["--event-loop", loop] if loop else [])]


def measure_agent(children: Children, args: argparse.Namespace, config: Path, *, label: str,
                  head: dict[str, Any], tail: dict[str, Any], side: subprocess.Popen[bytes],
                  side_key: str, startup_timeout: float = 300.0) -> dict[str, Any]:
    """Runs the agent (`args.python`) with `config`, which holds --checks checks, and measures
    it: waits for "listening" and "config loaded", warms up one --interval, then measures
    --window seconds between two /metrics scrapes and two /proc readings (scraping every
    --scrape-every s in between), and stops it; its stderr goes beside `config` (.stderr).
    `side` is the process answering the checks (its CPU per run goes under `side_key`; it is
    watched too). The result starts with `head`, then checks, interval_s, window_s and pid,
    then `tail`, then stderr_file and the measured figures."""
    argv = agent_argv(args.python, config)
    n, interval, window, scrape_every = args.checks, args.interval, args.window, args.scrape_every
    stderr_file = config.with_suffix(".stderr")
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


# --- reports and the command line -----------------------------------------------------------


def start_run(prefix: str, argv: Sequence[str] | None) -> tuple[Path, dict[str, Any]]:
    """A benchmark's start: SIGTERM unwinds like Ctrl-C (sigterm_as_keyboard_interrupt); a
    fresh temporary work directory (its name starts with `prefix`); and the run's description
    for the report and the JSON: command, machine, workdir, start time."""
    sigterm_as_keyboard_interrupt()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    return workdir, {
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
        "machine": machine(),
        "workdir": str(workdir),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def tool_version(argv: Sequence[str]) -> str:
    """The first line `argv` (e.g. `openssl version`) prints, "?" when it cannot run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              check=False).stdout.split("\n", 1)[0].strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def report_head(title: str, info: dict[str, Any], *lines: str) -> list[str]:
    """The report's first lines: a rule, `title`, the command and the machine, then `lines`."""
    m = info["machine"]
    return [
        "", "=" * 78, title,
        f"command:  {info['command']}",
        f"machine:  nproc {m['nproc']} (affinity {m['affinity_cpus']}), {m['cpu_model']}, "
        f"{m['mem_total_mib']} MiB",
        f"python:   {m['python']} ({m['python_executable']})",
        f"kernel:   {m['kernel']}",
        *lines,
        "",
    ]


def agent_figures(side_label: str, side_key: str) -> list[Figure]:
    """The rows of measure_agent's figures; `side_key` (its side_key) is shown as
    `side_label`."""
    return [
        ("CPU µs per check", "cpu_us_per_check", ".1f", 1.0, " µs"),
        ("completed runs/s", "runs_per_s", ".1f"),
        ("scheduled runs/s (N / interval)", "scheduled_per_s", ".1f"),
        ("completion ratio", "completion_ratio", ".3f"),
        ("failures Δ", "failures_delta", ".0f"),
        ("missed runs Δ", "missed_delta", ".0f"),
        ("skipped runs Δ", "skipped_delta", ".0f"),
        ("scheduler lag p50", "lag_p50_s", ".2f", 1000, " ms"),
        ("scheduler lag p99", "lag_p99_s", ".2f", 1000, " ms"),
        ("agent CPU (share of one core)", "cpu_core_fraction", ".1f", 100, " %"),
        (side_label, side_key, ".1f", 1.0, " µs"),
        ("other processes' load (cores)", "other_load_cores", ".2f"),
        ("window (between scrapes)", "window_scrape_s", ".1f", 1.0, " s"),
        ("/metrics scrapes in window", "scrapes_in_window", ".0f"),
        ("start-up until config loaded", "startup_s", ".2f", 1.0, " s"),
        ("peak RSS (VmHWM)", "peak_rss_kib", ".1f", 1 / 1024, " MiB"),
        ("threads", "threads", ".0f"),
        ("stderr warn/error lines", "stderr_notable_count", ".0f"),
    ]


def agent_report(results: list[dict[str, Any]], side_label: str, side_key: str) -> list[str]:
    """measure_agent's figures of each case (a column each, named by its "case"), then what
    went wrong: skipped cases, failures by reason, the agent's notable stderr lines."""
    if not results:
        return []
    t = Table(["netsentry (per case)", *[r["case"] for r in results]])
    t.figures(results, agent_figures(side_label, side_key))
    lines = [t.render(), ""]
    for r in results:
        if "skipped" in r:
            lines.append(f"{r['case']}: skipped — {r['skipped']}")
        if r.get("failures_by_reason"):
            lines.append(f"{r['case']}: failures in window by reason: "
                         f"{ {k: int(v) for k, v in r['failures_by_reason'].items()} }; "
                         f"examples: {r['failure_examples']}")
        if r.get("stderr_notable"):
            lines.append(f"{r['case']}: agent stderr (first {min(len(r['stderr_notable']), 10)}"
                         f" of {r['stderr_notable_count']} warn/error lines):")
            lines += [f"  {ln[:300]}" for ln in r["stderr_notable"][:10]]
    return [*lines, ""]


def blackbox_stderr(bb: dict[str, Any]) -> list[str]:
    """The report's lines for blackbox's stderr_notable (the first 5), if any."""
    if not bb.get("stderr_notable"):
        return []
    return ["blackbox stderr warn/error lines:",
            *[f"  {ln[:300]}" for ln in bb["stderr_notable"][:5]]]


def harness_error(exc: BaseException) -> str:
    """`exc` as the run's error, also printed to stderr at once."""
    error = f"{type(exc).__name__}: {exc}"
    print(f"\nbenchmark error: {error}", file=sys.stderr, flush=True)
    return error


def finish(json_path: str | None, payload: Any, error: str | None) -> int:
    """A benchmark's end: INCOMPLETE with the harness `error`, if any; the figures
    (`payload`) as JSON at `json_path` when asked. Returns the exit status: 1 on a harness
    error, else 0 (whether or not goals are met)."""
    if error:
        print(f"INCOMPLETE: {error}", flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(payload, indent=2, default=str) + "\n",
                                   encoding="utf-8")
        print(f"JSON written to {json_path}")
    return 1 if error else 0


def agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that run the agent over a window beside blackbox:
    --interval, --window, --scrape-every, --blackbox-*, --no-blackbox, --python, --json."""
    parser.add_argument("--interval", type=float, default=10.0, help="check interval, s")
    parser.add_argument("--window", type=float, default=30.0, help="measured window, s")
    parser.add_argument("--scrape-every", type=float, default=15.0, metavar="SECONDS",
                        help="also scrape /metrics this often during the window, as a "
                        "Prometheus server would (default 15; 0: only the window's own scrapes)")
    parser.add_argument("--blackbox-probes", type=int, default=3000,
                        help="probes of each full-speed blackbox run (default 3000)")
    parser.add_argument("--blackbox-clients", type=int, default=4,
                        help="concurrent keep-alive client threads for /probe (default 4)")
    parser.add_argument("--blackbox-max-seconds", type=float, default=300.0,
                        help="upper bound on a full-speed blackbox run")
    parser.add_argument("--no-blackbox", action="store_true")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="interpreter that runs the agent")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")


def check_agent_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error on agent_arguments' options out of their ranges."""
    if not 0.5 <= args.interval <= 600 or not 1 <= args.window <= 3600:
        parser.error("--interval must be in [0.5, 600] s and --window in [1, 3600] s")
    if args.scrape_every and not 1 <= args.scrape_every <= 3600:
        parser.error("--scrape-every: 0 (off) or in [1, 3600] s")
    if not 1 <= args.blackbox_probes <= 1_000_000 or not 1 <= args.blackbox_clients <= 64:
        parser.error("--blackbox-probes in [1, 1e6], --blackbox-clients in [1, 64]")
    if not 1 <= args.blackbox_max_seconds <= 3600:
        parser.error("--blackbox-max-seconds in [1, 3600]")


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


def stop_blackbox(children: Children, proc: subprocess.Popen[bytes], log: StreamLog,
                  out: dict[str, Any]) -> None:
    """Stops blackbox_exporter (SIGTERM, 10 s) and records in `out` how long it took to exit
    (sigterm_exit_s) and its first 20 warning and error lines (stderr_notable)."""
    out["sigterm_exit_s"] = children.stop(proc, timeout=10.0)
    log.join(5.0)
    out["stderr_notable"] = [ln for ln in log.lines
                             if "level=error" in ln or "level=warn" in ln][:20]


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


PACED_SECONDS = 20.0  # at most, of a paced blackbox run


def measured_probes(bb_pid: int, side_pid: int, side_key: str, port: int, module: str,
                    target: str, count: int, clients: int, max_seconds: float,
                    rate: float = 0.0) -> dict[str, Any]:
    """run_probes of one `target` with the CPU that blackbox (`bb_pid`), the process that
    answers (`side_pid`, its CPU per probe under `side_key`) and the rest of the machine
    spent meanwhile."""
    cpu0, scpu0, self0 = cpu_seconds(bb_pid), cpu_seconds(side_pid), cpu_seconds(os.getpid())
    t0, ticks0 = time.monotonic(), machine_ticks()
    one = run_probes(port, module, [target], count, clients, max_seconds, rate)
    cpu1, scpu1, self1 = cpu_seconds(bb_pid), cpu_seconds(side_pid), cpu_seconds(os.getpid())
    t1, ticks1 = time.monotonic(), machine_ticks()
    done = one["ok"] + one["failed"]
    return {
        "rate_per_s": rate or None,
        "asked": count,
        "probes": done, "ok": one["ok"], "failed": one["failed"], "errors": one["errors"],
        "examples": one["examples"], "hit_time_limit": one["hit_time_limit"],
        "seconds": t1 - t0, "probes_per_s": done / (t1 - t0),
        "cpu_s": cpu1 - cpu0,
        "cpu_core_fraction": (cpu1 - cpu0) / (t1 - t0),
        "cpu_us_per_probe": (cpu1 - cpu0) / done * 1e6 if done else math.nan,
        side_key: (scpu1 - scpu0) / done * 1e6 if done else math.nan,
        "client_cpu_s": self1 - self0,
        "other_load_cores": other_load(ticks0, ticks1, t1 - t0,
                                       (cpu1 - cpu0) + (scpu1 - scpu0) + (self1 - self0)),
    }


def paced_and_full(bb_pid: int, side_pid: int, side_key: str, port: int, module: str,
                   target: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """measured_probes of `module` twice: paced at the agent's rate (--checks / --interval)
    for min(--window, PACED_SECONDS) s, the like-for-like reference, then --blackbox-probes at
    full speed. Returns {"paced": ..., "full": ...}."""
    rate = args.checks / args.interval
    seconds = min(args.window, PACED_SECONDS)
    paced = measured_probes(bb_pid, side_pid, side_key, port, module, target,
                            max(int(rate * seconds), 1), args.blackbox_clients,
                            seconds * 3 + 10, rate=rate)
    print(f"   paced at {rate:g}/s: {paced['probes']} probes ({paced['failed']} failed), "
          f"{paced['cpu_us_per_probe']:.0f} µs/probe", flush=True)
    full = measured_probes(bb_pid, side_pid, side_key, port, module, target,
                           args.blackbox_probes, args.blackbox_clients,
                           args.blackbox_max_seconds)
    print(f"   full speed: {full['probes']} probes ({full['failed']} failed) at "
          f"{full['probes_per_s']:.0f}/s, {full['cpu_us_per_probe']:.0f} µs/probe", flush=True)
    return {"paced": paced, "full": full}


def cpu_goal(r: dict[str, Any], paced: dict[str, Any] | None, full: dict[str, Any] | None,
             goal: dict[str, Any], ratio_goal: float, min_completion: float,
             caveats: Sequence[str] = ()) -> dict[str, Any]:
    """`goal` judged for one measure_agent result `r` against blackbox's paced and full
    measured_probes: netsentry CPU per check / blackbox CPU per paced probe ≤ `ratio_goal`,
    with no failures on either side and completion ≥ `min_completion`. Sets measured and met
    on `goal` (and the ratios on `r`); `caveats` are shown beside the figure."""
    if "skipped" in r or "cpu_us_per_check" not in r:
        goal.update(measured="not measured", met=None)
    elif (not paced or not paced["ok"] or math.isnan(paced["cpu_us_per_probe"])
          or paced["cpu_us_per_probe"] <= 0):
        goal.update(measured="not measured (no blackbox reference)", met=None)
    else:
        ratio = r["cpu_us_per_check"] / paced["cpu_us_per_probe"]
        r["cpu_ratio_vs_blackbox_paced"] = ratio
        if full and full["ok"] and full["cpu_us_per_probe"] > 0:
            r["cpu_ratio_vs_blackbox_full_speed"] = r["cpu_us_per_check"] / full["cpu_us_per_probe"]
        notes = []
        if r["failures_delta"]:
            notes.append(f"{r['failures_delta']:.0f} netsentry failures")
        if paced["failed"]:
            notes.append(f"{paced['failed']} blackbox failures")
        if r["completion_ratio"] < min_completion:
            notes.append(f"completion {r['completion_ratio']:.3f}")
        notes += caveats
        goal.update(measured=f"{r['cpu_us_per_check']:.1f} / {paced['cpu_us_per_probe']:.1f}"
                             f" = {ratio:.2f}" + (f" ({'; '.join(notes)})" if notes else ""),
                    met=(ratio <= ratio_goal and not r["failures_delta"] and not paced["failed"]
                         and r["completion_ratio"] >= min_completion))
    return goal


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "listen":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        raise SystemExit(_listen_main(sys.argv[2:]))
    raise SystemExit("usage: common.py listen --addresses A,B [--ports-per-address N]")
