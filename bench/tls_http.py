"""TLS and HTTP benchmark: N scheduled `tcp` (TLS) and `http` checks in netsentry vs.
blackbox_exporter's tcp (TLS) and http /probe, against the same loopback servers.

    .venv/bin/python bench/tls_http.py [--checks 1000] [--interval 10] [--window 30] [--rounds 3]
                                       [--json PATH]

What it does, all on loopback (127.0.0.1) only — nothing is sent anywhere else:

1. Makes a CA and a certificate for `svc.test` signed by it with openssl, in a temp dir.
2. Starts the servers in a child process of their own (so their CPU counts on neither side;
   it is shown apart): a TLS server that completes the handshake and closes, a plain HTTP/1.1
   server answering `GET /` with 200 and a small body (`Connection: close`), and the same HTTP
   server behind TLS. One asyncio loop serves all three. The parent checks each answers.
   For the HTTP/2 case (`h2`), Debian's nginx-light (/usr/sbin/nginx) as one more child, one
   process, `listen ... ssl http2` with the same certificate; the parent checks that ALPN
   chooses h2. Its CPU, too, is shown apart and counted on neither side.
3. blackbox_exporter 0.23 with modules `tcp_tls`, `http_2xx`, `https_2xx`, `h1_nginx`, `h2_2xx`
   (`valid_http_versions: ["HTTP/2.0"]`, against nginx; one probe's probe_http_version is
   shown) against those servers: /probe paced at N / interval per second for
   min(window, 20) s — the like-for-like reference — and once at full speed
   (--blackbox-probes); probe_success checked; CPU per probe from /proc.
4. netsentry, one case per server: N checks at --interval (timeout 2 s) — `tcp` with
   `tls = true`, `http` on http://, `http` on https://, `http` with `http_version = "2"` on
   https:// against nginx, and `http_version = "1.1"` against the same nginx (`h1-nginx`,
   beside blackbox's `h1_nginx`: `enable_http2: false`), which shows what HTTP/2 itself costs
   on each side — each validated first with
   `check-config` (a kind or key the agent does not know skips the case, with the reason);
   the agent warms up one interval, then a window of --window seconds is measured between two
   /metrics scrapes and two /proc readings (with a scrape every --scrape-every seconds in
   between, as a Prometheus server would): CPU per completed check, runs/s, failures by
   reason, missed/skipped runs, scheduler lag p50/p99.
5. Tables, the ratios netsentry / blackbox (paced) and DESIGN.md's goal (≤ 0.5; issue 16's
   ≤ 0.8 for h2), and issue 19's TLS goal against the floor: OpenSSL's own client
   (`openssl s_time -new`) and a Python client on blocking sockets (a child of its own,
   `tls_http.py handshake`), back to back and paced at the checks' rate (N / interval), each
   CPU per full handshake against the same TLS listener; what netsentry adds on top of each.
   With --rounds R, the floors and then every case run R times, the cases' order reversed
   every other round, and each CPU figure is the median of its rounds (each round's shown
   beside it); blackbox is measured once, before the rounds.

It is a benchmark, not a test: it exits 0 whether or not the goal is met (1 on a harness error).

Run as `tls_http.py serve --cert C --key K --max-seconds S`, it is the server child: it prints
`ready TLSPORT HTTPPORT HTTPSPORT` and serves until stdin closes, its parent dies or
--max-seconds pass.
Run as `tls_http.py handshake --port P --ca CA [--rate R] [--seconds S]`, it is the Python
floor's child: it prints `done HANDSHAKES CPU_SECONDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import select
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parent.parent
OPENSSL = "/usr/bin/openssl"
HOST = "127.0.0.1"
SERVER_NAME = "svc.test"
BODY = b"netsentry bench: ok\n"
TIMEOUT = "2s"
STARTUP_TIMEOUT = 300.0
SERVER_START_TIMEOUT = 30.0
GOAL_CPU_RATIO = 0.5
MIN_COMPLETION = 0.99
BLACKBOX_WARMUP = 100
GOAL_CPU_RATIO_H2 = 0.8  # issue 16's goal for the HTTP/2 case
CASE_NAMES = ("tcp", "tcp-tls", "http", "https", "h1-nginx", "h2")
# Issue 19: a TLS check may cost what OpenSSL's own client spends on the handshake plus this
# much of netsentry's own plain check (tcp-tls beside tcp, https beside http).
FLOOR_FACTOR = 1.2
FLOOR_PLAIN = {"tcp-tls": "tcp", "https": "http"}
NGINX = "/usr/sbin/nginx"
NGINX_BODY = "netsentry bench: ok (nginx)\n"

# --- certificates -------------------------------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    result = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")


def make_certs(directory: Path) -> Certs:
    """A CA and a leaf certificate for SERVER_NAME signed by it (EC P-256, 2 days), with the
    extensions strict verifiers (Go, Python 3.13's VERIFY_X509_STRICT) want."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "leaf.key", directory / "leaf.csr", directory / "leaf.pem"
    ext = directory / "leaf.ext"
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature\n"
                   "extendedKeyUsage = serverAuth\n"
                   f"subjectAltName = DNS:{SERVER_NAME}\n"
                   "subjectKeyIdentifier = hash\n"
                   "authorityKeyIdentifier = keyid\n", encoding="ascii")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=netsentry bench CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={SERVER_NAME}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
             "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2", "-extfile", ext,
             "-out", cert)
    return Certs(ca, cert, key)


# --- the server child ---------------------------------------------------------------------------

_OK = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
       + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)
_NOT_FOUND = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n"
              b"Connection: close\r\n\r\n")
_REQUEST_TIMEOUT = 5.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(options: argparse.Namespace) -> int:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options.cert, options.key)
    counts = {"tls": 0, "http": 0, "https": 0, "not_found": 0, "loop_errors": 0}
    errors: dict[str, int] = {}  # "server:ExceptionType" -> count
    loop = asyncio.get_running_loop()

    def on_loop_error(_loop: asyncio.AbstractEventLoop, _context: dict[str, Any]) -> None:
        counts["loop_errors"] += 1  # e.g. a handshake the client gave up; counted, not logged

    loop.set_exception_handler(on_loop_error)

    async def tls_only(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts["tls"] += 1  # the handshake is complete when asyncio calls us
        writer.close()

    def http_handler(key: str) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
                words = head.split(b"\r\n", 1)[0].split()
                if len(words) == 3 and words[0] == b"GET" and words[1] == b"/":
                    writer.write(_OK)
                    counts[key] += 1
                else:
                    writer.write(_NOT_FOUND)
                    counts["not_found"] += 1
                await asyncio.wait_for(writer.drain(), _REQUEST_TIMEOUT)
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.LimitOverrunError) as exc:
                what = f"{key}:{type(exc).__name__}"
                errors[what] = errors.get(what, 0) + 1
            finally:
                writer.close()
        return handle

    extra: dict[str, Any] = {"ssl_shutdown_timeout": 2.0} if sys.version_info >= (3, 11) else {}
    common: dict[str, Any] = {"host": options.host, "port": 0, "backlog": 4096,
                              "reuse_address": True}
    tls_kw: dict[str, Any] = {"ssl": context, "ssl_handshake_timeout": _REQUEST_TIMEOUT, **extra}
    servers = [
        await asyncio.start_server(tls_only, **common, **tls_kw),
        await asyncio.start_server(http_handler("http"), **common),
        await asyncio.start_server(http_handler("https"), **common, **tls_kw),
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    stop = asyncio.Event()

    def on_stdin() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    print("ready", *ports, flush=True)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), options.max_seconds)
    loop.remove_reader(sys.stdin.fileno())
    for s in servers:
        s.close()
    print("served " + " ".join(f"{k}={v}" for k, v in counts.items())
          + " handler_errors=" + (",".join(f"{k}×{v}" for k, v in sorted(errors.items()))
                                  or "0"), file=sys.stderr, flush=True)
    return 0


def _serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tls_http.py serve")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    options = parser.parse_args(argv)
    if not options.host.startswith("127."):
        raise SystemExit(f"{options.host}: loopback only")
    return asyncio.run(_serve(options))


def _handshake_main(argv: list[str]) -> int:
    """The Python floor: full TLS handshakes on blocking sockets (connect, handshake verified
    against --ca, the peer's certificate read, close), back to back or paced at --rate per
    second, for --seconds; prints `done HANDSHAKES CPU_SECONDS`, its own CPU only."""
    parser = argparse.ArgumentParser(prog="tls_http.py handshake")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="per second; 0: back to back")
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args(argv)
    if not 0 <= options.rate <= 100_000 or not 0.5 <= options.seconds <= 120:
        raise SystemExit("--rate in [0, 100000], --seconds in [0.5, 120]")
    context = ssl.create_default_context(cafile=options.ca)
    started = time.monotonic()
    end, planned, done = started + options.seconds, started, 0
    cpu0 = common.own_cpu_seconds()
    while time.monotonic() < end:
        if options.rate:
            planned += 1 / options.rate
            time.sleep(max(planned - time.monotonic(), 0.0))
        with socket.create_connection((HOST, options.port), timeout=5) as sock, \
                context.wrap_socket(sock, server_hostname=SERVER_NAME) as tls:
            tls.getpeercert(binary_form=True)
        done += 1
    common.report_done(done, common.own_cpu_seconds() - cpu0)
    return 0


@dataclass
class Servers:
    proc: subprocess.Popen[bytes]
    log: common.StreamLog
    tls_port: int
    http_port: int
    https_port: int


def start_servers(children: common.Children, certs: Certs, workdir: Path,
                  max_seconds: float) -> Servers:
    argv = [sys.executable, os.path.abspath(__file__), "serve", "--cert", str(certs.cert),
            "--key", str(certs.key), "--max-seconds", f"{max_seconds:.0f}"]
    print(f"== servers: {shlex.join(argv)}", flush=True)
    proc = children.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    log = common.StreamLog(proc.stderr, str(workdir / "servers.stderr"))
    ready, _, _ = select.select([proc.stdout], [], [], SERVER_START_TIMEOUT)
    words = proc.stdout.readline().decode().split() if ready else []
    if len(words) != 4 or words[0] != "ready":
        children.stop(proc)
        log.join(2.0)
        raise RuntimeError(f"server child did not start ({words!r}); stderr:\n"
                           + "\n".join(log.lines[-10:]))
    servers = Servers(proc, log, int(words[1]), int(words[2]), int(words[3]))
    print(f"   pid {proc.pid}: TLS {HOST}:{servers.tls_port}, HTTP {HOST}:{servers.http_port}, "
          f"HTTPS {HOST}:{servers.https_port}", flush=True)
    return servers


def client_context(certs: Certs) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    return context


def read_all(sock: socket.socket, limit: int = 65536) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:  # bounded in size; each recv is bounded by the socket's timeout
        try:
            chunk = sock.recv(limit - size)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def verify_servers(servers: Servers, certs: Certs) -> list[str]:
    """One request to each server from this process: what each answered (raises on failure)."""
    context = client_context(certs)
    seen = []
    with socket.create_connection((HOST, servers.tls_port), timeout=5.0) as raw, \
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        cipher = tls.cipher()
        seen.append(f"TLS {tls.version()} {cipher[0] if cipher else '?'}, certificate for "
                    f"{SERVER_NAME} verified against the CA")
    status, _, body, _ = common.http_get(HOST, servers.http_port, "/", timeout=5.0)
    if status != 200 or body != BODY:
        raise RuntimeError(f"HTTP server answered {status} {body[:100]!r}")
    seen.append(f"HTTP 200, {len(body)} bytes")
    with socket.create_connection((HOST, servers.https_port), timeout=5.0) as raw, \
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n"
                    .encode())
        reply = read_all(tls)
    if not reply.startswith(b"HTTP/1.1 200 ") or not reply.endswith(BODY):
        raise RuntimeError(f"HTTPS server answered {reply[:200]!r}")
    seen.append(f"HTTPS 200, {len(reply)} bytes with headers")
    return seen


# --- nginx (the HTTP/2 case) -------------------------------------------------------------------

_NGINX_CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location = / {{ default_type text/plain; return 200 "{body}"; }}
    }}
}}
"""


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    log: common.StreamLog
    port: int


def start_nginx(children: common.Children, certs: Certs, workdir: Path) -> Nginx:
    """Debian's nginx-light as one process (no master, one worker) serving HTTP/2 and
    HTTP/1.1 over TLS (ALPN chooses) on one loopback port, with the run's certificate.
    Raises after three failed tries."""
    directory = workdir / "nginx"
    directory.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):  # the free port may be taken between probing it and binding it
        port = common.free_port()
        conf = directory / "nginx.conf"
        conf.write_text(_NGINX_CONFIG.format(dir=directory, port=port, cert=certs.cert,
                                             key=certs.key,
                                             body=NGINX_BODY.replace("\n", "\\n")),
                        encoding="utf-8")
        argv = [NGINX, "-e", "stderr", "-p", str(directory), "-c", str(conf)]
        print(f"== nginx: {shlex.join(argv)}", flush=True)
        proc = children.start(argv)
        assert proc.stderr is not None
        log = common.StreamLog(proc.stderr, str(workdir / "nginx.stderr"))
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection((HOST, port), timeout=1.0):
                    print(f"   pid {proc.pid}: HTTPS (h2, http/1.1) {HOST}:{port}", flush=True)
                    return Nginx(proc, log, port)
            except OSError:
                time.sleep(0.1)
        children.stop(proc)
        log.join(2.0)
    raise RuntimeError("nginx did not start; see nginx.stderr")


def verify_nginx(nginx: Nginx, certs: Certs) -> str:
    """ALPN offers h2 and http/1.1; nginx must choose h2 (raises otherwise)."""
    context = client_context(certs)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((HOST, nginx.port), timeout=5.0) as raw, \
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        chosen = tls.selected_alpn_protocol()
    if chosen != "h2":
        raise RuntimeError(f"nginx chose ALPN {chosen!r}, not h2")
    return f"nginx: TLS with ALPN h2 chosen, certificate for {SERVER_NAME} verified"


# --- the cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    kind: str
    keys: dict[str, str | bool]  # the check's keys besides name and kind
    module: str  # blackbox module
    bb_target: str
    title: str
    nginx: bool = False  # answered by nginx, not the server child


def toml_value(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_cases(servers: Servers, certs: Certs, nginx: Nginx | None) -> list[Case]:
    ca = str(certs.ca)
    h2 = [] if nginx is None else [
        Case("h2", "http", {"target": f"https://{HOST}:{nginx.port}/",
                            "server_name": SERVER_NAME, "ca_file": ca, "http_version": "2"},
             "h2_2xx", f"https://{HOST}:{nginx.port}/",
             "http over TLS, HTTP/2 (ALPN h2) against nginx, GET /", nginx=True),
        # The same nginx over HTTP/1.1 on both sides: what HTTP/2 itself costs, server apart.
        Case("h1-nginx", "http", {"target": f"https://{HOST}:{nginx.port}/",
                                  "server_name": SERVER_NAME, "ca_file": ca,
                                  "http_version": "1.1"},
             "h1_nginx", f"https://{HOST}:{nginx.port}/",
             "http over TLS, HTTP/1.1 (ALPN http/1.1) against the same nginx, GET /",
             nginx=True)]
    return [
        # Plain tcp against the HTTP listener (connect, close): the base of tcp-tls's floor goal.
        Case("tcp", "tcp", {"target": f"{HOST}:{servers.http_port}"}, "tcp_connect",
             f"{HOST}:{servers.http_port}", "tcp, connect and close"),
        Case("tcp-tls", "tcp", {"target": f"{HOST}:{servers.tls_port}", "tls": True,
                                "server_name": SERVER_NAME, "ca_file": ca},
             "tcp_tls", f"{HOST}:{servers.tls_port}", "tcp with TLS (handshake, close)"),
        Case("http", "http", {"target": f"http://{HOST}:{servers.http_port}/"},
             "http_2xx", f"http://{HOST}:{servers.http_port}/", "http, plain GET /"),
        Case("https", "http", {"target": f"https://{HOST}:{servers.https_port}/",
                               "server_name": SERVER_NAME, "ca_file": ca},
             "https_2xx", f"https://{HOST}:{servers.https_port}/", "http over TLS, GET /"),
        *h2,
    ]


def write_config(path: Path, case: Case, n: int, interval: float) -> None:
    timeout = TIMEOUT if interval > 2.0 else f"{round(interval * 500)}ms"  # must be < interval
    lines = ["[defaults]", f'interval = "{round(interval * 1000)}ms"', f'timeout = "{timeout}"',
             ""]
    for i in range(n):
        lines += ["[[checks]]", f'name = "{case.name}-{i + 1:05d}"',
                  f"kind = {toml_value(case.kind)}"]
        lines += [f"{k} = {toml_value(v)}" for k, v in case.keys.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def kind_registered(kind: str) -> bool:
    """Whether exporter/checks/__init__.py registers `<kind>.KIND` (informational; the
    check-config run decides)."""
    try:
        text = (ROOT / "exporter" / "checks" / "__init__.py").read_text(encoding="utf-8")
    except OSError:
        return False
    return f"{kind}.KIND" in text


def config_problem(case: Case, args: argparse.Namespace, workdir: Path) -> str | None:
    """Why the agent would not accept this case's config (check-config's output), or None."""
    path = workdir / f"check-config-{case.name}.toml"
    write_config(path, case, 1, args.interval)
    argv = [args.python, "-m", "exporter", "check-config", str(path)]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                cwd=ROOT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"check-config could not run: {exc}"
    if result.returncode == 0:
        return None
    text = " ".join((result.stdout + result.stderr).split())
    registered = kind_registered(case.kind)
    return (f"check-config rejects a {case.kind!r} check (exit {result.returncode}; "
            f"exporter/checks/__init__.py {'registers' if registered else 'has no'} "
            f"{case.kind}.KIND): {text[:400]}")


# --- the agent ----------------------------------------------------------------------------------


def bench_agent(children: common.Children, case: Case, args: argparse.Namespace,
                side: subprocess.Popen[bytes], workdir: Path) -> dict[str, Any]:
    config = workdir / f"netsentry-{case.name}.toml"
    write_config(config, case, args.checks, args.interval)
    return common.measure_agent(children, args, config, label=f"{case.kind} checks ({case.name})",
                                head={"case": case.name, "kind": case.kind},
                                tail={"config": str(config)}, side=side,
                                side_key="server_cpu_us_per_run", startup_timeout=STARTUP_TIMEOUT)


# --- blackbox_exporter --------------------------------------------------------------------------


def blackbox_config(certs: Certs) -> str:
    ca = json.dumps(str(certs.ca))  # a JSON string is a YAML double-quoted scalar
    return (
        "modules:\n"
        "  tcp_connect:\n"
        "    prober: tcp\n"
        "    timeout: 2s\n"
        "  tcp_tls:\n"
        "    prober: tcp\n"
        "    timeout: 2s\n"
        "    tcp:\n"
        "      tls: true\n"
        "      tls_config:\n"
        f"        ca_file: {ca}\n"
        f"        server_name: {SERVER_NAME}\n"
        "  http_2xx:\n"
        "    prober: http\n"
        "    timeout: 2s\n"
        "  https_2xx:\n"
        "    prober: http\n"
        "    timeout: 2s\n"
        "    http:\n"
        "      tls_config:\n"
        f"        ca_file: {ca}\n"
        f"        server_name: {SERVER_NAME}\n"
        "  h2_2xx:\n"
        "    prober: http\n"
        "    timeout: 2s\n"
        "    http:\n"
        '      valid_http_versions: ["HTTP/2.0"]\n'
        "      tls_config:\n"
        f"        ca_file: {ca}\n"
        f"        server_name: {SERVER_NAME}\n"
        "  h1_nginx:\n"
        "    prober: http\n"
        "    timeout: 2s\n"
        "    http:\n"
        "      enable_http2: false\n"
        '      valid_http_versions: ["HTTP/1.1"]\n'
        "      tls_config:\n"
        f"        ca_file: {ca}\n"
        f"        server_name: {SERVER_NAME}\n"
    )


def probe_version(port: int, module: str, target: str) -> str:
    """One /probe of `module`: its probe_success and probe_http_version, as text."""
    quoted = urllib.parse.quote(target, safe=":/")
    status, _, body, _ = common.http_get("127.0.0.1", port,
                                         f"/probe?module={module}&target={quoted}", timeout=10.0)
    found = {m.group(1): m.group(2) for m in re.finditer(
        rb"(?m)^(probe_success|probe_http_version) (\S+)$", body)}
    return (f"HTTP {status}, probe_success {found.get(b'probe_success', b'?').decode()}, "
            f"probe_http_version {found.get(b'probe_http_version', b'?').decode()}")


def bench_blackbox(children: common.Children, args: argparse.Namespace, servers: Servers,
                   nginx: Nginx | None, cases: list[Case], certs: Certs,
                   workdir: Path) -> dict[str, Any]:
    proc, log, port = common.start_blackbox(children, blackbox_config(certs), workdir)
    out: dict[str, Any] = {"pid": proc.pid, "port": port, "clients": args.blackbox_clients,
                           "config": str(workdir / "blackbox.yml"), "modules": {}}
    try:
        for case in cases:
            print(f"   module {case.module}, target {case.bb_target}", flush=True)
            one: dict[str, Any] = {"module": case.module, "target": case.bb_target}
            out["modules"][case.name] = one
            side = nginx.proc if case.nginx and nginx is not None else servers.proc
            if case.nginx:
                one["version_probe"] = probe_version(port, case.module, case.bb_target)
                print(f"   {case.module}: {one['version_probe']}", flush=True)
            warm = common.run_probes(port, case.module, [case.bb_target], BLACKBOX_WARMUP,
                                     args.blackbox_clients, 60.0)
            one["warmup_ok"], one["warmup_failed"] = warm["ok"], warm["failed"]
            if warm["ok"] == 0:
                one["error"] = f"warm-up probes all failed: {warm['examples']}"
                if case.nginx:
                    one["error"] += (" — blackbox_exporter did not do HTTP/2 against nginx "
                                     f"({one.get('version_probe')})")
                print(f"   {case.module}: {one['error']}", flush=True)
                continue
            one.update(common.paced_and_full(proc.pid, side.pid, "server_cpu_us_per_probe",
                                             port, case.module, case.bb_target, args))
            common.sleep_until(time.monotonic() + 1.0, [proc, side], "blackbox")
        status = common.proc_status(proc.pid)
        out.update({"peak_rss_kib": status.get("VmHWM"), "threads": status.get("Threads")})
    finally:
        common.stop_blackbox(children, proc, log, out)
    return out


# --- the report ---------------------------------------------------------------------------------


def openssl_floor(servers: Servers, certs: Certs, seconds: float = 5.0) -> dict[str, Any]:
    """OpenSSL's own C client (`openssl s_time -new`) against the TLS listener: its CPU per
    full handshake, verified against the run's CA, is the floor any client on this OpenSSL
    pays; neither netsentry nor a Python client can do a handshake for less."""
    argv = [OPENSSL, "s_time", "-connect", f"{HOST}:{servers.tls_port}", "-new", "-time",
            f"{seconds:g}", "-CAfile", str(certs.ca), "-verify", "1"]
    print(f"\n== OpenSSL floor: {shlex.join(argv)}", flush=True)
    before = os.times()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                            check=False)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    found = re.search(r"(\d+) connections in [\d.]+s", result.stdout)
    if result.returncode != 0 or not found or int(found.group(1)) == 0:
        return {"error": f"s_time exited {result.returncode}: {result.stderr.strip()[-200:]}"}
    handshakes = int(found.group(1))
    return {"handshakes": handshakes, "cpu_us_per_handshake": cpu / handshakes * 1e6}


def python_floor(servers: Servers, certs: Certs, rate: float,
                 seconds: float = 5.0) -> dict[str, Any]:
    """A Python client's full handshakes on blocking sockets against the TLS listener (a child
    of its own, `tls_http.py handshake`), back to back (rate 0, like s_time) or paced at the
    checks' rate: what the ssl module costs beside OpenSSL's own client, and what pacing
    (a wake-up per handshake, cold caches) adds to any client at that rate."""
    argv = [sys.executable, os.path.abspath(__file__), "handshake", "--port",
            str(servers.tls_port), "--ca", str(certs.ca), "--rate", f"{rate:g}",
            "--seconds", f"{seconds:g}"]
    print(f"== Python floor ({f'paced at {rate:g}/s' if rate else 'back to back'}): "
          f"{shlex.join(argv)}", flush=True)
    finished = common.run_counting_child(argv, seconds + 60)
    if isinstance(finished, str):
        return {"error": finished}
    handshakes, cpu = finished
    return {"handshakes": handshakes, "rate": rate,
            "cpu_us_per_handshake": cpu / handshakes * 1e6}


FLOORS = ("openssl_floor", "python_floor", "python_floor_paced")


def over_rounds(rounds: list[dict[str, Any]],
                order: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The medians of the rounds: per case (in `order`), its last round's result with CPU per
    check the median of its rounds' (listed beside it), failures summed and completion the
    lowest; per floor, the median CPU per handshake (the rounds' beside it)."""
    results = []
    for case in order:
        runs = [r for measured in rounds for r in measured["results"] if r["case"] == case]
        if not runs:
            continue
        result = dict(runs[-1])
        cpus = [r["cpu_us_per_check"] for r in runs if "cpu_us_per_check" in r]
        if cpus and len(cpus) == len(runs):
            result.update(cpu_us_per_check=common.median(cpus), cpu_us_per_check_rounds=cpus,
                          failures_delta=sum(r["failures_delta"] for r in runs),
                          completion_ratio=min(r["completion_ratio"] for r in runs))
        results.append(result)
    floors: dict[str, Any] = {}
    for key in FLOORS:
        got = [measured[key] for measured in rounds if "cpu_us_per_handshake" in measured[key]]
        if len(got) < len(rounds):  # a round's floor failed: its error, not a median
            floors[key] = next(m[key] for m in rounds if "cpu_us_per_handshake" not in m[key])
            continue
        per_round = [f["cpu_us_per_handshake"] for f in got]
        floors[key] = {**got[-1], "cpu_us_per_handshake": common.median(per_round),
                       "handshakes": sum(f["handshakes"] for f in got),
                       "cpu_us_per_handshake_rounds": per_round}
    return results, floors


def spread(figures: list[float] | None) -> str:
    """' (rounds a, b, c)' for more than one round's figures, else ''."""
    if not figures or len(figures) < 2:
        return ""
    return " (rounds " + ", ".join(f"{x:.1f}" for x in figures) + ")"


def bb_part(bb: dict[str, Any] | None, case: str, part: str) -> dict[str, Any] | None:
    if not bb:
        return None
    module = bb.get("modules", {}).get(case)
    return module.get(part) if module else None


def evaluate(results: list[dict[str, Any]], bb: dict[str, Any] | None) -> list[dict[str, Any]]:
    goals = []
    for r in results:
        paced, full = bb_part(bb, r["case"], "paced"), bb_part(bb, r["case"], "full")
        ratio = GOAL_CPU_RATIO_H2 if r["case"] == "h2" else GOAL_CPU_RATIO
        goal = {"goal": f"{r['case']}: CPU per check ≤ {ratio} × blackbox CPU per probe",
                "case": r["case"]}
        goals.append(common.cpu_goal(r, paced, full, goal, ratio, MIN_COMPLETION))
    return goals


def report(info: dict[str, Any], args: argparse.Namespace, results: list[dict[str, Any]],
           bb: dict[str, Any] | None, goals: list[dict[str, Any]]) -> str:
    ports = info.get("ports", {})
    lines = common.report_head(
        "netsentry tls/http benchmark", info,
        f"openssl:  {info.get('openssl_version', '?')}; certificate for {SERVER_NAME} "
        "(EC P-256) signed by a CA of the run",
        f"servers:  one asyncio child on {HOST}: TLS accept-handshake-close :"
        f"{ports.get('tls', '?')}, HTTP/1.1 :{ports.get('http', '?')}, HTTPS :"
        f"{ports.get('https', '?')} (GET / → 200, {len(BODY)} bytes, Connection: close)",
        f"nginx:    {info.get('nginx_version', '?')}, one process, HTTPS :"
        f"{ports.get('nginx', 'not started')} with ALPN h2 (the h2 case; its CPU is shown as "
        "the server's, counted on neither side)",
        f"logs:     {info['workdir']}",
        f"checks:   {args.checks:,} per case at a {args.interval:g} s interval "
        f"({args.checks / args.interval:g} runs/s), timeout {TIMEOUT}, window {args.window:g} s, "
        f"scrape every {args.scrape_every:g} s")
    lines += common.agent_report(results, "server child CPU µs per run", "server_cpu_us_per_run")
    if bb is not None and bb.get("modules"):
        names = [c for c in CASE_NAMES if c in bb["modules"]]
        t = common.Table(["blackbox_exporter 0.23", *[f"{bb['modules'][c]['module']}"
                                                      for c in names]])

        def bb_row(label: str, render: Callable[[dict[str, Any], dict[str, Any]], str]) -> None:
            cells = []
            for c in names:
                mod = bb["modules"][c]
                cells.append(render(mod["paced"], mod["full"]) if "paced" in mod else "error")
            t.add(label, *cells)

        bb_row("paced: rate asked", lambda p, f: f"{p['rate_per_s']:g}/s")
        bb_row("paced: probes ok / failed", lambda p, f: f"{p['ok']} / {p['failed']}")
        bb_row("paced: CPU µs per probe",
               lambda p, f: common.fmt(p["cpu_us_per_probe"], ".1f", " µs"))
        bb_row("paced: server child CPU µs per probe",
               lambda p, f: common.fmt(p["server_cpu_us_per_probe"], ".1f", " µs"))
        bb_row("full: probes ok / failed", lambda p, f: f"{f['ok']} / {f['failed']}")
        bb_row("full: probes/s", lambda p, f: common.fmt(f["probes_per_s"], ".0f"))
        bb_row("full: CPU µs per probe",
               lambda p, f: common.fmt(f["cpu_us_per_probe"], ".1f", " µs"))
        bb_row("full: CPU (share of one core)",
               lambda p, f: common.fmt(f["cpu_core_fraction"] * 100, ".1f", " %"))
        bb_row("full: server child CPU µs per probe",
               lambda p, f: common.fmt(f["server_cpu_us_per_probe"], ".1f", " µs"))
        bb_row("full: other processes' load (cores)",
               lambda p, f: common.fmt(f["other_load_cores"], ".2f"))
        lines += [t.render(),
                  f"  ({bb['clients']} keep-alive clients; peak RSS "
                  f"{common.fmt((bb.get('peak_rss_kib') or math.nan) / 1024, '.1f', ' MiB')})", ""]
        for c in names:
            mod = bb["modules"][c]
            if mod.get("version_probe"):
                lines.append(f"blackbox {mod['module']}, one probe: {mod['version_probe']}")
            if "error" in mod:
                lines.append(f"blackbox {mod['module']}: {mod['error']}")
            for label in ("paced", "full"):
                if mod.get(label, {}).get("examples"):
                    lines.append(f"blackbox {mod['module']} failures ({label}): "
                                 + "; ".join(mod[label]["examples"]))
        lines += [*common.blackbox_stderr(bb), ""]
    elif bb is not None:
        lines += ["blackbox: not measured (see the error below)", ""]

    if results:
        t = common.Table(["summary", *[r["case"] for r in results]])

        def cell(r: dict[str, Any], text: str) -> str:
            return "skipped" if "skipped" in r else text

        def part(r: dict[str, Any], name: str, key: str) -> Any:
            p = bb_part(bb, r["case"], name)
            return p.get(key) if p else None

        t.add("netsentry CPU µs per check" + (f", median of {args.rounds} rounds"
                                              if args.rounds > 1 else ""),
              *[cell(r, common.fmt(r.get("cpu_us_per_check"), ".1f", " µs")) for r in results])
        if args.rounds > 1:
            t.add("… per round", *[cell(r, " / ".join(
                f"{x:.0f}" for x in r.get("cpu_us_per_check_rounds", []))) for r in results])
        t.add("blackbox CPU µs per probe, paced",
              *[common.fmt(part(r, "paced", "cpu_us_per_probe"), ".1f", " µs") for r in results])
        t.add("blackbox CPU µs per probe, full speed",
              *[common.fmt(part(r, "full", "cpu_us_per_probe"), ".1f", " µs") for r in results])
        t.add(f"ratio vs. paced (goal ≤ {GOAL_CPU_RATIO}; h2 ≤ {GOAL_CPU_RATIO_H2})",
              *[cell(r, common.fmt(r.get("cpu_ratio_vs_blackbox_paced"), ".2f")) for r in results])
        t.add("ratio vs. full speed",
              *[cell(r, common.fmt(r.get("cpu_ratio_vs_blackbox_full_speed"), ".2f"))
                for r in results])
        floor = info.get("openssl_floor", {}).get("cpu_us_per_handshake")
        t.add("OpenSSL's own client, CPU µs per handshake",
              *[cell(r, common.fmt(floor, ".1f", " µs")) if r["case"] != "http" else "—"
                for r in results])
        t.add("floor / blackbox paced (best reachable ratio)",
              *[common.fmt(floor / p, ".2f") if r["case"] != "http" and floor and
                (p := part(r, "paced", "cpu_us_per_probe")) else "—" for r in results])
        t.add("netsentry failures Δ (window)",
              *[cell(r, common.fmt(r.get("failures_delta"), ".0f")) for r in results])

        def bb_failed(r: dict[str, Any]) -> str:
            p, f = bb_part(bb, r["case"], "paced"), bb_part(bb, r["case"], "full")
            return f"{p['failed']} / {f['failed']}" if p and f else "n/a"

        t.add("blackbox failures paced / full", *[bb_failed(r) for r in results])
        t.add("goal met", *[common.verdict(g["met"]) for g in goals])
        lines += [t.render(), ""]
        for g in goals:
            lines.append(f"  {g['goal']}: {g['measured']}")
        lines += [*floor_goals(results, info.get("openssl_floor", {}),
                               info.get("python_floor", {}),
                               info.get("python_floor_paced", {})), ""]
        lines += [*http2_cost(results, bb), ""]
    lines += [
        "  criterion: netsentry CPU µs per completed check / blackbox CPU µs per /probe of the",
        f"  same target at the same rate (N / interval), ≤ {GOAL_CPU_RATIO} (h2, against nginx: ≤ "
        f"{GOAL_CPU_RATIO_H2}), with no failures on",
        f"  either side and completion ≥ {MIN_COMPLETION}. Agent CPU includes the --scrape-every",
        "  scrapes, not the two boundary scrapes' renders; the servers' CPU (a child of their",
        "  own) is shown apart and counted on neither side. CPU is from /proc (clock ticks of",
        f"  1/{common.CLK_TCK} s). blackbox builds its TLS config (CA file read) per probe; "
        "netsentry's",
        "  tcp check keeps one SSL context per check across runs.",
        "=" * 78,
    ]
    return "\n".join(lines)


def floor_goals(results: list[dict[str, Any]], floor: dict[str, Any],
                python: dict[str, Any] | None = None,
                paced: dict[str, Any] | None = None) -> list[str]:
    """Issue 19's TLS goals, against the floor rather than blackbox: CPU per tcp+TLS (https)
    check ≤ OpenSSL's own client per handshake + FLOOR_FACTOR × netsentry's plain tcp (http)
    check, all measured in this run; then the same sum with a Python client's handshake on a
    blocking socket, back to back and paced at the checks' rate, in place of s_time's."""
    handshake = floor.get("cpu_us_per_handshake")
    lines = []
    if handshake is not None:
        lines.append(f"  handshake floor, OpenSSL s_time -new: {handshake:.1f} µs per handshake "
                     f"({floor['handshakes']} handshakes)"
                     + spread(floor.get("cpu_us_per_handshake_rounds")))
    for label, other in (("Python, blocking, back to back", python or {}),
                         ("Python, blocking, paced at the checks' rate", paced or {})):
        if other.get("cpu_us_per_handshake") is not None:
            lines.append(f"  handshake floor, {label}: "
                         f"{other['cpu_us_per_handshake']:.1f} µs per handshake "
                         f"({other['handshakes']} handshakes)"
                         + spread(other.get("cpu_us_per_handshake_rounds")))
    by_case = {r["case"]: r.get("cpu_us_per_check") for r in results}
    paced_handshake = (paced or {}).get("cpu_us_per_handshake")
    for tls, plain in FLOOR_PLAIN.items():
        ours, base = by_case.get(tls), by_case.get(plain)
        if handshake is None or ours is None or base is None:
            continue
        allowed = handshake + FLOOR_FACTOR * base
        lines.append(f"  {tls}: CPU per check ≤ OpenSSL handshake + {FLOOR_FACTOR} × {plain} "
                     f"check = {handshake:.1f} + {FLOOR_FACTOR} × {base:.1f} = {allowed:.1f} µs: "
                     f"{ours:.1f} µs, {'met' if ours <= allowed else 'NOT met'} (netsentry adds "
                     f"{ours - handshake:.1f} µs on top of the handshake, "
                     f"{(ours - handshake) / base:.2f} × its plain check)")
        if paced_handshake is not None:
            lines.append(f"  {tls} beside a paced Python handshake: {ours:.1f} µs = "
                         f"{paced_handshake:.1f} + {ours - paced_handshake:.1f} µs, "
                         f"{(ours - paced_handshake) / base:.2f} × its plain {plain} check")
    return lines


def http2_cost(results: list[dict[str, Any]], bb: dict[str, Any] | None) -> list[str]:
    """What HTTP/2 costs over HTTP/1.1 on each side, against the same nginx (cases h2 and
    h1-nginx of one run): the part of the h2 ratio that is HTTP/2's, TLS and server apart."""
    ours = {r["case"]: r.get("cpu_us_per_check") for r in results if "skipped" not in r}
    theirs = {c: (bb_part(bb, c, "paced") or {}).get("cpu_us_per_probe")
              for c in ("h2", "h1-nginx")}
    if not (ours.get("h2") and ours.get("h1-nginx")):
        return []
    line = (f"  HTTP/2 over HTTP/1.1, same nginx: netsentry {ours['h2'] - ours['h1-nginx']:+.0f} "
            f"µs per check ({ours['h1-nginx']:.0f} → {ours['h2']:.0f})")
    if theirs["h2"] and theirs["h1-nginx"]:
        line += (f", blackbox {theirs['h2'] - theirs['h1-nginx']:+.0f} µs per probe "
                 f"({theirs['h1-nginx']:.0f} → {theirs['h2']:.0f}, paced)")
    return [line]


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=1000, help="number of checks per case")
    parser.add_argument("--cases", default=",".join(CASE_NAMES),
                        help=f"comma-separated subset of {','.join(CASE_NAMES)}")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of the floors and every case, the cases' order alternating "
                        "(default 1); CPU figures are the medians over them, blackbox's "
                        "measured once")
    common.agent_arguments(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.checks <= 100_000:
        parser.error("--checks in [1, 100000]")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds in [1, 20]")
    common.check_agent_arguments(parser, args)
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.case_list if c not in CASE_NAMES]
    if unknown or not args.case_list:
        parser.error(f"--cases: unknown {unknown}; choose from {','.join(CASE_NAMES)}")
    return args


def time_budget(args: argparse.Namespace) -> float:
    """An upper bound of the whole run, for the server child's --max-seconds."""
    per_case = STARTUP_TIMEOUT + args.interval + args.window + 120
    per_module = (60 + min(args.window, common.PACED_SECONDS) * 3 + 10
                  + args.blackbox_max_seconds + 60)
    cases = len(CASE_NAMES)
    floors = 3 * (5 + 60)
    return float(args.rounds * (cases * per_case + floors) + cases * per_module + 600)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, info = common.start_run("netsentry-bench-tls-http-", argv)
    info["openssl_version"] = common.tool_version([OPENSSL, "version"])
    info["nginx_version"] = common.tool_version(["/bin/sh", "-c", f"{NGINX} -v 2>&1"])
    results: list[dict[str, Any]] = []
    bb: dict[str, Any] | None = None
    nginx: Nginx | None = None
    error: str | None = None
    try:
        certs = make_certs(workdir / "certs")
        info["ca_file"] = str(certs.ca)
        with common.Children() as children:
            servers = start_servers(children, certs, workdir, time_budget(args))
            info["ports"] = {"tls": servers.tls_port, "http": servers.http_port,
                             "https": servers.https_port}
            try:
                for line in verify_servers(servers, certs):
                    print(f"   {line}", flush=True)
                if {"h2", "h1-nginx"} & set(args.case_list):
                    nginx = start_nginx(children, certs, workdir)
                    info["ports"]["nginx"] = nginx.port
                    print(f"   {verify_nginx(nginx, certs)}", flush=True)
                cases = [c for c in make_cases(servers, certs, nginx) if c.name in args.case_list]
                if not args.no_blackbox:
                    bb = {}
                    bb = bench_blackbox(children, args, servers, nginx, cases, certs, workdir)
                rounds: list[dict[str, Any]] = []
                for round_ in range(args.rounds):
                    if args.rounds > 1:
                        print(f"\n== round {round_ + 1} of {args.rounds}", flush=True)
                    measured: dict[str, Any] = {
                        "openssl_floor": openssl_floor(servers, certs),
                        "python_floor": python_floor(servers, certs, 0.0),
                        "python_floor_paced": python_floor(servers, certs,
                                                           args.checks / args.interval),
                        "results": []}
                    rounds.append(measured)
                    for case in cases if round_ % 2 == 0 else cases[::-1]:
                        print(f"\n== case {case.name}: {case.title}; check-config first",
                              flush=True)
                        problem = config_problem(case, args, workdir)
                        if problem:
                            print(f"   skipped: {problem}", flush=True)
                            measured["results"].append({"case": case.name, "kind": case.kind,
                                                        "skipped": problem})
                            continue
                        common.sleep_until(time.monotonic() + 2.0, [servers.proc], "pause")
                        side = nginx.proc if case.nginx and nginx is not None else servers.proc
                        measured["results"].append(
                            bench_agent(children, case, args, side, workdir))
                results, floors = over_rounds(rounds, [c.name for c in cases])
                info.update(floors)
                if servers.proc.poll() is not None:
                    raise RuntimeError(f"server child exited with {servers.proc.returncode}")
                if nginx is not None and nginx.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited with {nginx.proc.returncode}")
            except (RuntimeError, TimeoutError, OSError) as exc:
                error = common.harness_error(exc)
            finally:
                assert servers.proc.stdin is not None
                with contextlib.suppress(OSError):
                    servers.proc.stdin.close()  # EOF: the child prints its counts and exits
                with contextlib.suppress(subprocess.TimeoutExpired):
                    servers.proc.wait(10)
                children.stop(servers.proc)
                servers.log.join(5.0)
                if nginx is not None:
                    children.stop(nginx.proc)
                    nginx.log.join(5.0)
                    info["nginx_stderr_notable"] = [
                        ln for ln in nginx.log.lines if "[error]" in ln or "[crit]" in ln
                        or "[emerg]" in ln or "[alert]" in ln][:20]
                info["servers_stderr_tail"] = servers.log.lines[-10:]
    except KeyboardInterrupt:
        print("\ninterrupted; children stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        error = common.harness_error(exc)
    goals = evaluate(results, bb)
    print(report(info, args, results, bb, goals), flush=True)
    tail = info.get("servers_stderr_tail") or []
    if tail:
        print("server child: " + " | ".join(tail), flush=True)
    return common.finish(args.json, {**info, "args": vars(args), "netsentry": results,
                                     "blackbox": bb, "goals": goals, "error": error}, error)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "handshake":
        raise SystemExit(_handshake_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        raise SystemExit(_serve_main(sys.argv[2:]))
    raise SystemExit(main())
