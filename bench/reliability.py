"""Reliability under load, faults and hostile input: the long runs, and the report.

    .venv/bin/python bench/reliability.py [--minutes 10] [--checks 10000] [--stuck 0.2]
    .venv/bin/python bench/reliability.py --soak [--minutes 30] [--checks 1000]
    ... [--loop asyncio|uvloop|auto]   the agent's event loop (and --suite's agents')

Load (the default): N checks of mixed kinds (tcp, dns, http, udp, path, ping, grpc, websocket,
an eighth each) at a 10 s interval and the default 5 s timeout, a fraction --stuck of them aimed
at targets that never answer — a TCP listener whose accept queue is full (the kernel drops the
SYNs), a UDP port that never replies, an HTTP server that trickles one byte a second, a TCP
server that accepts and reads but never writes (grpc, websocket: no SETTINGS, no 101), echoes
the kernel refuses to send (ping, which fails at once: every loopback address answers) — all
on loopback, served by two child processes of this script (the healthy targets, among them
grpcio's health service on grpc.aio and a websockets echo server; the stuck ones) and a real
dnsmasq. First every check runs against a target that answers, for --baseline-minutes; then
a reload aims the stuck fraction at the targets that never answer (the same checks and
series: only the targets differ) and everything runs for --minutes. Figures: runs completed
vs scheduled, missed and skipped runs, scheduler lag p99, the healthy checks' latency in
both phases, failures by reason, CPU, RSS, open descriptors and threads at the start and end
of the window, scrape time. Then the operator's figures on the same agent: SIGKILL and
restart on the same port (time until it serves again), and check-config of the whole config;
then --fuzz-seconds of hostile input into every codec and the config loader; then, with
--suite, the fast reliability tests (tests/reliability), counted by file.

Soak (--soak): N checks (default 1,000, the same mix) for --minutes (default 30), sampling
RSS, descriptors, threads and runs in flight every --sample-seconds: flat or not.

It is a benchmark, not a test: it exits 0 whether or not goals are met (1 on a harness
error). Everything talks to 127.0.0.0/8 only, and every child dies with this process.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from dns_query import QUERY_ADDRESS, QUERY_NAME, start_dnsmasq
from render import render_seconds

from exporter.config.load import load_text

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KINDS = ("tcp", "dns", "http", "udp", "path", "ping", "grpc", "websocket")
STARTUP_TIMEOUT = 300.0

# --- the servers child: healthy and stuck targets ------------------------------------------------


async def _serve(role: str, max_seconds: float) -> None:
    """The targets of one role, "healthy" or "stuck": each role has a process of its own, so
    that serving the stuck ones (a trickled byte a second to hundreds of connections) cannot
    slow the healthy ones' answers and pass for the agent's doing."""
    loop = asyncio.get_running_loop()
    keep: list[socket.socket] = []

    class TcpOk(asyncio.Protocol):  # protocols, not streams: the targets must cost little
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.close()

    class UdpEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    class HttpOk(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.head = b""

        def data_received(self, data: bytes) -> None:
            self.head += data
            if b"\r\n\r\n" in self.head:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"  # type: ignore[attr-defined]
                                     b"Connection: close\r\n\r\nok\n")
                self.transport.close()
            elif len(self.head) > 65536:
                self.transport.close()

    class TcpMute(asyncio.Protocol):  # accepts, reads, never answers: the peer times out
        def data_received(self, data: bytes) -> None:
            pass

    async def ws_echo(connection: Any) -> None:
        async for message in connection:
            await connection.send(message)

    async def http_trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(120):  # one byte a second, two minutes at most
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(1)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError):
            pass
        writer.close()

    if role == "healthy":
        servers = [await loop.create_server(TcpOk, HOST, 0, backlog=4096),
                   await loop.create_server(HttpOk, HOST, 0, backlog=4096)]
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        echo, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=(HOST, 0))
        # grpcio (a test dependency) on this loop: grpc.aio with the standard health service.
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from websockets.asyncio.server import serve as ws_serve

        rpc = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, rpc)
        rpc_port = rpc.add_insecure_port(f"{HOST}:0")
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await rpc.start()
        ws = await ws_serve(ws_echo, HOST, 0, compression=None, backlog=4096)
        ws_port = next(iter(ws.sockets)).getsockname()[1]
        print("ready", f"tcp_ok={HOST}:{ports[0]}", f"http_ok={HOST}:{ports[1]}",
              f"udp_ok={HOST}:{echo.get_extra_info('sockname')[1]}",
              f"grpc_ok={HOST}:{rpc_port}", f"ws_ok={HOST}:{ws_port}", flush=True)
    else:
        trickle = await asyncio.start_server(http_trickle, HOST, 0, backlog=4096)
        mute = await loop.create_server(TcpMute, HOST, 0, backlog=4096)
        stuck = socket.socket()  # listen(0), never accept: one connection queued, SYNs dropped
        stuck.bind((HOST, 0))
        stuck.listen(0)
        filler = socket.create_connection(stuck.getsockname())  # fills the queue at once
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read
        silent.bind((HOST, 0))
        keep += [stuck, filler, silent]
        print("ready", f"http_trickle={HOST}:{trickle.sockets[0].getsockname()[1]}",
              f"tcp_stuck={HOST}:{stuck.getsockname()[1]}",
              f"udp_silent={HOST}:{silent.getsockname()[1]}",
              f"tcp_mute={HOST}:{mute.sockets[0].getsockname()[1]}", flush=True)
    stdin_closed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: os.read(sys.stdin.fileno(), 4096) or
                    stdin_closed.set())
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    while not stdin_closed.is_set() and time.monotonic() < deadline and os.getppid() == parent:
        await asyncio.sleep(0.5)


@dataclass
class Targets:
    procs: list[subprocess.Popen[bytes]]  # the healthy and the stuck targets' children
    endpoints: dict[str, str]
    dns_port: int
    dnsmasq_pid: int

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs] + [self.dnsmasq_pid]


def start_targets(children: common.Children, workdir: Path, max_seconds: float) -> Targets:
    procs, endpoints = [], {}
    for role in ("healthy", "stuck"):
        argv = [sys.executable, os.path.abspath(__file__), "serve", role, "--max-seconds",
                str(max_seconds)]
        proc = children.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=None)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"the {role} targets' child did not start: {line!r}")
        procs.append(proc)
        endpoints.update(item.split("=", 1) for item in line[1:])
    dnsmasq = start_dnsmasq(children, workdir)
    return Targets(procs, endpoints, dnsmasq.port, dnsmasq.proc.pid)


# --- configs -------------------------------------------------------------------------------------


def check_table(name: str, kind: str, stuck: bool, targets: Targets) -> list[str]:
    e = targets.endpoints
    if kind == "tcp":
        target = e["tcp_stuck"] if stuck else e["tcp_ok"]
        return [f'target = "{target}"']
    if kind == "dns":
        server = e["udp_silent"] if stuck else f"{HOST}:{targets.dns_port}"
        return [f'target = "{QUERY_NAME}"', f'server = ["{server}"]',
                f'expect_answers = ["{QUERY_ADDRESS}"]']
    if kind == "udp":
        target = e["udp_silent"] if stuck else e["udp_ok"]
        return [f'target = "{target}"', 'send = "ping"', 'expect = "^ping$"']
    if kind == "path":
        # Loopback is one hop away; stuck, the one probe goes to the silent UDP port, which
        # sends no port unreachable: the run waits out its timeout.
        if stuck:
            return [f'target = "{HOST}"', f'port = {e["udp_silent"].rsplit(":", 1)[1]}',
                    "max_hops = 1", "probes_per_hop = 1"]
        return [f'target = "{HOST}"', "max_hops = 4"]
    if kind == "ping":
        # Every loopback address answers echoes: stuck, each echo is one the kernel refuses to
        # send (larger than loopback's MTU, with don't-fragment), so the run fails at once as
        # packet_loss, not by its timeout.
        if stuck:
            return ['target = "::1"', 'family = "ipv6"', "size = 65527", "dont_fragment = true"]
        return [f'target = "{HOST}"', "count = 3", 'spacing = "10ms"']
    if kind == "grpc":
        # Stuck, the server accepts and reads the call but sends not even its SETTINGS.
        return [f'target = "{e["tcp_mute"] if stuck else e["grpc_ok"]}"']
    if kind == "websocket":
        # Stuck, the upgrade request is read and never answered: no 101.
        target = e["tcp_mute"] if stuck else e["ws_ok"]
        return [f'target = "ws://{target}/"', 'send = "ping"', 'expect = "^ping$"']
    target = e["http_trickle"] if stuck else e["http_ok"]
    return [f'target = "http://{target}/"']


def check_names(n: int, stuck_fraction: float) -> list[tuple[str, str, bool]]:
    """(name, kind, stuck) for n checks: every 1/stuck_fraction-th one stuck, kinds in turn."""
    n_stuck = round(n * stuck_fraction)
    out = []
    for i in range(n):
        stuck = i < n_stuck
        kind = KINDS[i % len(KINDS)]
        out.append((f"{'stuck' if stuck else 'ok'}-{kind}-{i:05d}", kind, stuck))
    return out


def write_config(path: Path, checks: list[tuple[str, str, bool]], targets: Targets,
                 interval: float, timeout: float, stuck: bool = True) -> None:
    """With `stuck` false, the checks to be stuck aim at healthy targets for now."""
    lines = ["[defaults]", f'interval = "{interval:g}s"', f'timeout = "{timeout:g}s"', ""]
    for name, kind, is_stuck in checks:
        lines += ["[[checks]]", f'name = "{name}"', f'kind = "{kind}"',
                  *check_table(name, kind, is_stuck and stuck, targets), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


# --- reading the agent ---------------------------------------------------------------------------

PREFIXES = ("netsentry_check_runs_total", "netsentry_check_failures_total",
            "netsentry_check_duration_seconds", "netsentry_scheduler_", "netsentry_checks_in",
            "netsentry_config_last_reload_successful")


@dataclass
class Reading:
    at: float
    scrape_s: float
    runs: dict[str, float] = field(default_factory=dict)
    failures: dict[tuple[str, str], float] = field(default_factory=dict)
    duration: dict[tuple[str, str, float], float] = field(default_factory=dict)  # group,kind,le
    duration_sum: dict[tuple[str, str], float] = field(default_factory=dict)
    duration_count: dict[tuple[str, str], float] = field(default_factory=dict)
    lag: dict[float, float] = field(default_factory=dict)
    missed: float = 0.0
    skipped: float = 0.0
    in_flight: float = 0.0
    reload_ok: float = math.nan


def group_of(check: str) -> tuple[str, str]:
    group, kind, _ = check.split("-", 2)
    return group, kind


def read(port: int, parse: bool = True) -> Reading:
    status, _, body, elapsed = common.http_get(HOST, port, "/metrics", headers={"Accept-Encoding":
                                                                                "gzip"})
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out = Reading(time.monotonic(), elapsed)
    text = gzip.decompress(body).decode()
    match = re.search(r"^netsentry_checks_in_flight (\S+)$", text, re.M)
    out.in_flight = float(match[1]) if match else math.nan
    if not parse:
        return out
    for name, labels, value in common.parse_samples(text, PREFIXES):
        check = labels.get("check", "")
        if name == "netsentry_check_runs_total":
            out.runs[check] = value
        elif name == "netsentry_check_failures_total":
            out.failures[(check, labels["reason"])] = value
        elif name == "netsentry_check_duration_seconds_bucket":
            key = (*group_of(check), float(labels["le"]))
            out.duration[key] = out.duration.get(key, 0.0) + value
        elif name == "netsentry_check_duration_seconds_sum":
            g = group_of(check)
            out.duration_sum[g] = out.duration_sum.get(g, 0.0) + value
        elif name == "netsentry_check_duration_seconds_count":
            g = group_of(check)
            out.duration_count[g] = out.duration_count.get(g, 0.0) + value
        elif name == "netsentry_scheduler_lag_seconds_bucket":
            out.lag[float(labels["le"])] = value
        elif name == "netsentry_scheduler_missed_runs_total":
            out.missed += value
        elif name == "netsentry_scheduler_skipped_runs_total":
            out.skipped += value
        elif name == "netsentry_config_last_reload_successful":
            out.reload_ok = value
    return out


@dataclass
class Cpu:
    """CPU seconds of the agent and of the targets' processes, and the machine's busy ticks."""

    at: float
    agent: float
    targets: float
    machine: tuple[int, int]

    @staticmethod
    def read(agent: int, targets: list[int]) -> Cpu:
        return Cpu(time.monotonic(), common.cpu_seconds(agent),
                   sum(common.cpu_seconds(p) for p in targets), common.machine_ticks())

    def since(self, first: Cpu) -> dict[str, float]:
        seconds = self.at - first.at
        agent = (self.agent - first.agent) / seconds
        targets = (self.targets - first.targets) / seconds
        busy = (self.machine[0] - first.machine[0]) / common.CLK_TCK / seconds
        return {"agent_cores": agent, "targets_cores": targets,
                "others_cores": max(busy - agent - targets, 0.0), "machine_cores": busy}


def process(pid: int) -> dict[str, int]:
    status = common.proc_status(pid)
    return {"rss_kib": status.get("VmRSS", -1), "threads": status.get("Threads", -1),
            "fds": common.open_fds(pid)}


def window(first: Reading, last: Reading, interval: float, names: list[tuple[str, str, bool]]
           ) -> dict[str, Any]:
    """The figures of the window between two full readings."""
    seconds = last.at - first.at
    ran = {n: last.runs.get(n, 0) - first.runs.get(n, 0) for n, _, _ in names}
    failures: Counter[tuple[str, str]] = Counter()
    for (check, reason), value in last.failures.items():
        delta = value - first.failures.get((check, reason), 0.0)
        if delta:
            failures[(group_of(check)[0], reason)] += delta
    latency = {}
    for group in ("ok", "stuck"):
        for kind in KINDS:
            count = (last.duration_count.get((group, kind), 0)
                     - first.duration_count.get((group, kind), 0))
            if not count:
                continue
            total = (last.duration_sum.get((group, kind), 0)
                     - first.duration_sum.get((group, kind), 0))
            buckets = sorted((le, v - first.duration.get((group, kind, le), 0.0))
                             for (g, k, le), v in last.duration.items() if (g, k) == (group, kind))
            # Shares over a bucket's bound are exact; a quantile interpolated in the agent's
            # coarse buckets (25 ms, then 100 ms) is not, and swung from 25 to 55 ms between
            # two runs of the same load.
            within = dict(buckets)
            latency[(group, kind)] = {
                "mean": total / count, "count": count,
                "over_25ms": 1 - within.get(0.025, math.nan) / count,
                "over_100ms": 1 - within.get(0.1, math.nan) / count}
    lag = sorted((le, v - first.lag.get(le, 0.0)) for le, v in last.lag.items())
    return {
        "seconds": seconds,
        "runs": sum(ran.values()),
        "scheduled": len(names) * seconds / interval,
        "checks_without_runs": sum(1 for v in ran.values() if v == 0),
        "missed": last.missed - first.missed,
        "skipped": last.skipped - first.skipped,
        "failures": dict(failures),
        "latency": latency,
        "lag_p50": common.histogram_quantile(0.5, lag),
        "lag_p99": common.histogram_quantile(0.99, lag),
    }


# --- the agent -----------------------------------------------------------------------------------


def start_agent(children: common.Children, config: Path, workdir: Path, port: int = 0,
                tag: str = "agent") -> tuple[subprocess.Popen[bytes], common.StreamLog, int]:
    argv = [sys.executable, "-m", "exporter", "--config.file", str(config),
            "--web.listen-address", f"{HOST}:{port}"]
    proc = children.start(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    log = common.StreamLog(proc.stderr, str(workdir / f"{tag}.stderr"))
    bound = int(log.wait_for(r"msg=listening address=127\.0\.0\.1:(\d+)", STARTUP_TIMEOUT,
                             proc).group(1))
    return proc, log, bound


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if common.http_get(HOST, port, "/-/ready", timeout=2.0)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def load(args: argparse.Namespace, children: common.Children, targets: Targets, workdir: Path,
         out: dict[str, Any]) -> None:
    names = check_names(args.checks, args.stuck)
    healthy = [c for c in names if not c[2]]
    config = workdir / "netsentry.toml"
    # First every check answers; then a reload aims the stuck ones at targets that never do:
    # the same checks, the same series, so only the stuck targets differ between the phases.
    write_config(config, names, targets, args.interval, args.timeout, stuck=False)
    proc, log, port = start_agent(children, config, workdir)
    watched = [proc, *targets.procs]
    log.wait_for(r'msg="config loaded"', STARTUP_TIMEOUT, proc)
    print(f"== baseline: {len(names)} checks, all answered, for {args.baseline_minutes:g} min",
          flush=True)
    others = targets.pids
    common.sleep_until(time.monotonic() + args.interval + 1, watched, "warm-up")
    first, cpu = read(port), Cpu.read(proc.pid, others)
    common.sleep_until(first.at + args.baseline_minutes * 60, watched, "baseline")
    base = window(first, read(port), args.interval, names)
    base["cpu"] = Cpu.read(proc.pid, others).since(cpu)
    out["baseline"] = base

    print(f"== load: {len(names) - len(healthy)} of them aimed at stuck targets (reload), "
          f"{args.minutes:g} min", flush=True)
    write_config(config, names, targets, args.interval, args.timeout)
    started = time.monotonic()
    status, _, body, _ = _post(port, "/-/reload")
    out["reload_s"] = time.monotonic() - started
    if status != 200:
        raise RuntimeError(f"reload answered {status}: {body[:300]!r}")
    common.sleep_until(time.monotonic() + args.interval + 1, watched, "warm-up")
    first, cpu = read(port), Cpu.read(proc.pid, others)
    start_proc = process(proc.pid)
    scrapes, peak = [first.scrape_s], dict(start_proc)
    end = first.at + args.minutes * 60
    while time.monotonic() < end - args.scrape_seconds / 2:
        common.sleep_until(min(time.monotonic() + args.scrape_seconds, end), watched, "load")
        scrapes.append(read(port, parse=False).scrape_s)
        now = process(proc.pid)
        peak = {k: max(peak[k], now[k]) for k in peak}
    common.sleep_until(end, watched, "load")
    end_proc = process(proc.pid)
    end_cpu = Cpu.read(proc.pid, others).since(cpu)
    last = read(port)
    scrapes.append(last.scrape_s)
    out["load"] = window(first, last, args.interval, names)
    out["load"].update({"process_start": start_proc, "process_end": end_proc,
                        "process_peak": peak, "scrape_median_s": common.median(scrapes),
                        "scrape_max_s": max(scrapes), "scrapes": len(scrapes),
                        "stuck_in_flight_end": last.in_flight, "cpu": end_cpu})
    notable = [ln for ln in log.lines if "level=error" in ln or "Traceback" in ln]
    out["load"]["agent_errors"] = notable[:20]

    # SIGKILL and restart on the same port, three times: how long until it serves again.
    print("== SIGKILL and restart, 3 times", flush=True)
    restarts = []
    for attempt in range(3):
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(10)
        proc, log, bound = start_agent(children, config, workdir, port, f"restart{attempt}")
        if bound != port or not wait_ready(port, proc, 60):
            raise RuntimeError("the restarted agent did not serve on the same port")
        restarts.append(time.monotonic() - killed)
        common.sleep_until(time.monotonic() + 2, [proc], "after restart")
    out["restart_s"] = restarts
    children.stop(proc)

    # check-config of the whole config, three times.
    times = []
    for _ in range(3):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        times.append(time.monotonic() - started)
        if done.returncode != 0:
            raise RuntimeError(f"check-config failed: {done.stderr[-500:]}")
    out["check_config_s"] = times
    # The same number of checks rendered in this process, as bench/render.py --mixed does.
    out["render_s"], out["render_series"] = render_seconds(args.checks, KINDS)


def _post(port: int, path: str) -> tuple[int, dict[str, str], bytes, float]:
    import http.client
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        started = time.perf_counter()
        conn.request("POST", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body, time.perf_counter() - started
    finally:
        conn.close()


# --- soak ----------------------------------------------------------------------------------------


def soak(args: argparse.Namespace, children: common.Children, targets: Targets, workdir: Path,
         out: dict[str, Any]) -> None:
    names = check_names(args.checks, args.stuck)
    config = workdir / "netsentry.toml"
    write_config(config, names, targets, args.interval, args.timeout)
    proc, log, port = start_agent(children, config, workdir)
    watched = [proc, *targets.procs]
    log.wait_for(r'msg="config loaded"', STARTUP_TIMEOUT, proc)
    print(f"== soak: {len(names)} checks for {args.minutes:g} min", flush=True)
    common.sleep_until(time.monotonic() + args.interval + 1, watched, "warm-up")
    first, cpu = read(port), Cpu.read(proc.pid, targets.pids)
    samples = []
    end = first.at + args.minutes * 60
    while True:
        reading = read(port, parse=False)
        samples.append({"minute": (reading.at - first.at) / 60, **process(proc.pid),
                        "in_flight": reading.in_flight, "scrape_s": reading.scrape_s})
        if time.monotonic() >= end:
            break
        common.sleep_until(min(time.monotonic() + args.sample_seconds, end), watched, "soak")
    out["soak"] = window(first, read(port), args.interval, names)
    out["soak"]["samples"] = samples
    out["soak"]["cpu"] = Cpu.read(proc.pid, targets.pids).since(cpu)
    children.stop(proc)


# --- hostile input -------------------------------------------------------------------------------


def fuzz(seconds: float, seed: int = 1) -> dict[str, Any]:
    """Random and mutated inputs into every codec entry point and the config loader, for
    `seconds`: how many were tried, and any exception that was not the module's own."""
    sys.path.insert(0, str(ROOT))

    from exporter.errors import ConfigError
    from tests.reliability.test_hostile import CODECS

    rng = random.Random(seed)
    entries: list[tuple[str, Any, Any, bytes]] = [
        (f"{module}.{c.name}", c.error, c.decode, c.seed())
        for module, codecs in CODECS.items() for c in codecs]
    valid = (ROOT / "exporter" / "config" / "default.toml").read_text().replace("$self_target",
                                                                    "127.0.0.1:10025")
    valid = valid.replace("$hostname", "localhost").encode()

    def load(data: bytes) -> None:
        load_text(data.decode("utf-8", "replace"), "fuzz.toml")

    entries.append(("load_text", ConfigError, load, valid))
    tried: Counter[str] = Counter()
    unexpected: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, error, decode, seed_bytes in entries:
            data = _mutate(rng, seed_bytes) if rng.random() < 0.8 else rng.randbytes(
                rng.randrange(2 * len(seed_bytes) + 16))
            tried[name] += 1
            try:
                decode(data)
            except error:
                pass
            except Exception as exc:  # the finding this loop is for
                if len(unexpected) < 20:
                    unexpected.append(f"{name}: {type(exc).__name__}: {exc} "
                                      f"(input {data[:80]!r})")
    return {"seconds": seconds, "tried": dict(tried), "unexpected": unexpected}


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randrange(1, 7)):
        at = rng.randrange(max(len(data), 1))
        op = rng.randrange(5)
        if op == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            del data[at:]
        elif op == 3:
            data[at:at] = rng.randbytes(rng.randrange(1, 17))
        elif data:
            end = rng.randrange(at, len(data) + 1)
            data[at:at] = data[at:end]
    return bytes(data)


# --- the fast suite ------------------------------------------------------------------------------


def suite(workdir: Path) -> dict[str, Any]:
    xml = workdir / "suite.xml"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
                    f"--junitxml={xml}", "tests/reliability"], cwd=ROOT, timeout=1800,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    by_file: dict[str, Counter[str]] = {}
    for case in ET.parse(xml).iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        outcome = "failed" if case.find("failure") is not None or case.find(
            "error") is not None else "skipped" if case.find("skipped") is not None else "passed"
        by_file.setdefault(module, Counter())[outcome] += 1
    return {"seconds": time.monotonic() - started,
            "by_file": {k: dict(v) for k, v in sorted(by_file.items())}}


# --- the report ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return common.fmt(seconds * 1000, ".1f", " ms")


def mib(kib: int) -> str:
    return common.fmt(kib / 1024, ".0f", " MiB")


def report(args: argparse.Namespace, out: dict[str, Any]) -> str:
    table = common.Table(["", "figure", "goal"])
    if "load" in out:
        b, w = out["baseline"], out["load"]
        stuck = round(args.checks * args.stuck)
        table.add(f"load: {args.checks:,} checks, {stuck:,} stuck, {args.interval:g} s "
                  f"interval, {w['seconds'] / 60:.1f} min", "", "")
        table.add("runs completed / scheduled", f"{w['runs']:,.0f} / {w['scheduled']:,.0f} "
                  f"({w['runs'] / w['scheduled']:.1%})", "100 %")
        table.add("missed / skipped runs; checks that never ran",
                  f"{w['missed']:.0f} / {w['skipped']:.0f}; {w['checks_without_runs']}", "0")
        table.add("scheduler lag p50 / p99, all answered",
                  f"{ms(b['lag_p50'])} / {ms(b['lag_p99'])}", "p99 < 100 ms")
        table.add("scheduler lag p50 / p99, with stuck", f"{ms(w['lag_p50'])} / "
                  f"{ms(w['lag_p99'])}", "p99 < 100 ms")
        table.add("CPU (cores): agent / targets / others, all answered", _cores(b["cpu"]),
                  "of 2")
        table.add("CPU (cores): agent / targets / others, with stuck", _cores(w["cpu"]),
                  "of 2")
        healthy = {r: n for (g, r), n in w["failures"].items() if g == "ok"}
        stuck_f = {r: n for (g, r), n in w["failures"].items() if g == "stuck"}
        table.add("healthy checks' failures", _reasons(healthy), "none")
        table.add("stuck checks' failures", _reasons(stuck_f), "timeout (ping: packet_loss)")
        for kind in KINDS:
            before = b["latency"].get(("ok", kind), {})
            after = w["latency"].get(("ok", kind), {})
            table.add(f"healthy {kind}: mean; runs > 25 ms, > 100 ms; all answered → with stuck",
                      f"{_latency(before)} → {_latency(after)}", "unchanged")
        s, e, p = w["process_start"], w["process_end"], w["process_peak"]
        table.add("RSS start → end (peak)", f"{mib(s['rss_kib'])} → {mib(e['rss_kib'])} "
                  f"({mib(p['rss_kib'])})", "no growth")
        table.add("open fds start → end (peak)", f"{s['fds']} → {e['fds']} ({p['fds']})",
                  "no growth")
        table.add("threads start → end", f"{s['threads']} → {e['threads']}", "flat")
        if "render_s" in out:
            table.add(f"/metrics of {args.checks:,} checks rendered, in-process "
                      f"({out['render_series']:,} series)", ms(out["render_s"]), "< 250 ms")
        table.add("/metrics scrape under this load (gzip, client-timed) median / max",
                  f"{ms(w['scrape_median_s'])} / {ms(w['scrape_max_s'])} "
                  f"({w['scrapes']} scrapes)", "—")
        table.add("reload aiming them at stuck targets", ms(out["reload_s"]), "")
        table.add("agent errors logged", str(len(w["agent_errors"])), "0")
        table.add("SIGKILL → serving again (3 tries)",
                  " / ".join(f"{t:.2f} s" for t in out["restart_s"]), "< 2 s")
        table.add(f"check-config of {args.checks:,} checks (3 tries)",
                  " / ".join(f"{t:.2f} s" for t in out["check_config_s"]), "< 1 s")
    if "soak" in out:
        w = out["soak"]
        samples = w["samples"]
        table.add(f"soak: {args.checks:,} checks, {args.stuck:.0%} stuck, "
                  f"{w['seconds'] / 60:.1f} min", "", "")
        table.add("runs completed / scheduled", f"{w['runs']:,.0f} / {w['scheduled']:,.0f} "
                  f"({w['runs'] / w['scheduled']:.1%})", "100 %")
        table.add("missed / skipped runs", f"{w['missed']:.0f} / {w['skipped']:.0f}", "0")
        table.add("scheduler lag p50 / p99", f"{ms(w['lag_p50'])} / {ms(w['lag_p99'])}",
                  "p99 < 100 ms")
        table.add("CPU (cores): agent / targets / others", _cores(w["cpu"]), "of 2")
        for key, label, form in (("rss_kib", "RSS", mib), ("fds", "open fds", str),
                                 ("threads", "threads", str), ("in_flight", "runs in flight",
                                                               lambda v: f"{v:.0f}")):
            values = [x[key] for x in samples]
            half = values[len(values) // 2:]
            table.add(f"{label}: first → last (min–max of the second half)",
                      f"{form(values[0])} → {form(values[-1])} ({form(min(half))}–"
                      f"{form(max(half))})", "flat")
    if "soak" in out:
        series = common.Table(["minute", "RSS", "open fds", "threads", "runs in flight", "scrape"])
        samples = out["soak"]["samples"]
        step = max(len(samples) // 12, 1)
        for x in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
            series.add(f"{x['minute']:.1f}", mib(x["rss_kib"]), x["fds"], x["threads"],
                       f"{x['in_flight']:.0f}", ms(x["scrape_s"]))
        tail = "\n\n" + series.render()
    else:
        tail = ""
    if "fuzz" in out:
        f = out["fuzz"]
        table.add(f"hostile input, {f['seconds']:g} s", "", "")
        table.add("inputs tried (codecs + config loader)", f"{sum(f['tried'].values()):,} "
                  f"over {len(f['tried'])} entry points", "")
        table.add("exceptions other than the module's own", str(len(f["unexpected"])), "0")
    if "suite" in out:
        s = out["suite"]
        table.add(f"fast suite (tests/reliability), {s['seconds']:.0f} s", "", "")
        for module, outcome in s["by_file"].items():
            table.add(f"  {module}", ", ".join(f"{n} {k}" for k, n in sorted(outcome.items())),
                      "all pass")
    return table.render() + tail


def _latency(figures: dict[str, float]) -> str:
    return (f"{ms(figures.get('mean', math.nan))}; {figures.get('over_25ms', math.nan):.2%}, "
            f"{figures.get('over_100ms', math.nan):.2%}")


def _cores(cpu: dict[str, float]) -> str:
    return (f"{cpu['agent_cores']:.2f} / {cpu['targets_cores']:.2f} / "
            f"{cpu['others_cores']:.2f}")


def _reasons(failures: dict[str, float]) -> str:
    if not failures:
        return "0"
    return ", ".join(f"{reason} {n:,.0f}" for reason, n in sorted(failures.items()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k if isinstance(k, str) else "/".join(map(str, k)) if isinstance(k, tuple)
                else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", action="store_true", help="the soak run instead of the load")
    parser.add_argument("--checks", type=int, help="default 10000 (load), 1000 (soak)")
    parser.add_argument("--minutes", type=float, help="default 10 (load), 30 (soak)")
    parser.add_argument("--baseline-minutes", type=float, default=2.0)
    parser.add_argument("--stuck", type=float, default=0.2, help="fraction of stuck checks")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--scrape-seconds", type=float, default=15.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--fuzz-seconds", type=float, default=30.0)
    parser.add_argument("--suite", action="store_true", help="also run tests/reliability")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "auto"),
                        help="the agents' event loop, through $NETSENTRY_EVENT_LOOP "
                        "(default: the agent's default)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.checks = args.checks or (1000 if args.soak else 10_000)
    args.minutes = args.minutes or (30.0 if args.soak else 10.0)
    if not 3 <= args.checks <= 100_000 or not 0 <= args.stuck < 1:
        parser.error("--checks in [3, 100000], --stuck in [0, 1)")
    if not 0.1 <= args.minutes <= 600 or not 0.1 <= args.baseline_minutes <= 60:
        parser.error("--minutes in [0.1, 600], --baseline-minutes in [0.1, 60]")
    if not 0 < args.timeout < args.interval <= 600:
        parser.error("0 < --timeout < --interval <= 600")
    if not 0 <= args.fuzz_seconds <= 3600:
        parser.error("--fuzz-seconds in [0, 3600]")
    return args


def main(argv: list[str] | None = None) -> int:
    if (argv or sys.argv[1:])[:1] == ["serve"]:
        rest = (argv or sys.argv[1:])[1:]
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        asyncio.run(_serve(rest[0], float(rest[rest.index("--max-seconds") + 1])))
        return 0
    args = parse_args(argv)
    if args.loop:  # every agent this run starts (and --suite's tests) inherits it
        os.environ["NETSENTRY_EVENT_LOOP"] = args.loop
    workdir, out = common.start_run("netsentry-bench-reliability-", argv)
    out["event_loop"] = os.environ.get("NETSENTRY_EVENT_LOOP", "default")
    print(f"workdir {workdir}; event loop {out['event_loop']}", flush=True)
    error = None
    budget = (args.minutes + args.baseline_minutes) * 60 + 1200
    try:
        with common.Children() as children:
            targets = start_targets(children, workdir, budget)
            print(f"targets: {targets.endpoints}, dnsmasq {HOST}:{targets.dns_port}",
                  flush=True)
            try:
                (soak if args.soak else load)(args, children, targets, workdir, out)
            except (RuntimeError, TimeoutError, OSError) as exc:
                error = common.harness_error(exc)
        if args.fuzz_seconds and not args.soak:
            print(f"== hostile input for {args.fuzz_seconds:g} s", flush=True)
            out["fuzz"] = fuzz(args.fuzz_seconds)
        if args.suite:
            print("== the fast suite: tests/reliability", flush=True)
            out["suite"] = suite(workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; children stopped", file=sys.stderr)
        return 130
    print("\n" + report(args, out), flush=True)
    for line in out.get("fuzz", {}).get("unexpected", []):
        print("UNEXPECTED:", line)
    for line in out.get("load", {}).get("agent_errors", []):
        print("AGENT ERROR:", line)
    return common.finish(args.json, _jsonable(out), error)


if __name__ == "__main__":
    raise SystemExit(main())
