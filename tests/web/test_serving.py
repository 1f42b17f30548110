"""Serving as exporter-toolkit's exporters serve: socket activation, a route prefix behind a real
nginx, --web.max-requests and the web config's rate_limit under bursts of real clients, and
client_allowed_sans, each against a real agent subprocess."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import pytest

from exporter.web import prefix, systemd
from exporter.web.prefix import Prefix
from exporter.web.ratelimit import TokenBucket
from exporter.web.webconfig import client_sans
from tests.support.agent import ROOT, Agent
from tests.support.certs import Authority, CertFiles, make_cert
from tests.support.nginx import Nginx
from tests.support.servers import closed_port
from tests.web.test_webconfig import client_context, get, write

pytestmark = pytest.mark.timeout(120)

CONFIG = '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'


def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_netsentry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[
        str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env=env)


# --- the flags ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("external", "route", "expected"), [
    (None, None, Prefix("/", "/")),
    ("https://mon.example.org/netsentry/", None, Prefix("/netsentry", "/netsentry")),
    ("https://mon.example.org", None, Prefix("/", "/")),
    ("http://[::1]:8080/a/b/", None, Prefix("/a/b", "/a/b")),
    ("https://mon.example.org/mon/", "/", Prefix("/", "/mon")),
    (None, "netsentry", Prefix("/netsentry", "/netsentry")),  # normalised, as in Prometheus
    (None, "/netsentry/", Prefix("/netsentry", "/netsentry")),
    (None, "//a//", Prefix("/a", "/a")),
    (None, "/a%20b", Prefix("/a%20b", "/a%20b")),
    (None, "/", Prefix("/", "/")),
])
def test_prefixes(external: str | None, route: str | None, expected: Prefix) -> None:
    assert prefix.make(external, route) == expected


@pytest.mark.parametrize(("external", "route", "message"), [
    (None, "/a b", "--web.route-prefix '/a b': 'a b' is not a URL path segment (no spaces, "
     "'?', '#' or control characters; escape with %XX)"),
    (None, "/a?b", "--web.route-prefix '/a?b': 'a?b' is not a URL path segment (no spaces, "
     "'?', '#' or control characters; escape with %XX)"),
    (None, "/a/../b", "--web.route-prefix '/a/../b': empty, '.' and '..' segments are not "
     "allowed"),
    (None, "/a//b", "--web.route-prefix '/a//b': empty, '.' and '..' segments are not allowed"),
    ("mon.example.org/x", None, "--web.external-url 'mon.example.org/x': want an absolute "
     "URL, e.g. https://monitoring.example.org/netsentry/"),
    ("ftp://h/x", None, "--web.external-url 'ftp://h/x': want an absolute URL, e.g. "
     "https://monitoring.example.org/netsentry/"),
    ("https://h/x?y=1", None, "--web.external-url 'https://h/x?y=1': a query or fragment "
     "cannot be part of it"),
    ("https://h:port/", None, "--web.external-url 'https://h:port/': Port could not be cast "
     "to integer value as 'port'"),
])
def test_bad_prefixes(external: str | None, route: str | None, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        prefix.make(external, route)
    assert str(caught.value) == message


@pytest.mark.parametrize(("args", "message"), [
    (["--web.route-prefix", "/a b"], "netsentry: --web.route-prefix '/a b': 'a b' is not a URL "
     "path segment (no spaces, '?', '#' or control characters; escape with %XX)"),
    (["--web.external-url", "example.org"], "netsentry: --web.external-url 'example.org': want "
     "an absolute URL, e.g. https://monitoring.example.org/netsentry/"),
    (["--web.max-requests", "-1"], "netsentry: --web.max-requests: -1 is negative; give a "
     "number of requests, or 0 for no limit"),
    (["--web.systemd-socket", "--web.listen-address", ":1"], "netsentry: --web.listen-address "
     "and --web.systemd-socket exclude each other: with socket activation, systemd's .socket "
     "unit says where to listen"),
    (["--web.systemd-socket"], "netsentry: --web.systemd-socket: no sockets passed (LISTEN_FDS "
     "is not set): start netsentry from a .socket unit or systemd-socket-activate"),
])
def test_bad_flags_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    proc = run_netsentry(*args, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [message]


def test_listen_fds_checks_the_environment() -> None:
    def problem(env: dict[str, str]) -> str:
        with pytest.raises(ValueError) as caught:
            systemd.listen_fds(env, pid=42)
        assert "LISTEN_FDS" not in env and "LISTEN_PID" not in env  # taken, as sd_listen_fds
        return str(caught.value)

    assert "is not this process (42)" in problem({"LISTEN_FDS": "1", "LISTEN_PID": "41"})
    assert "LISTEN_PID=None" in problem({"LISTEN_FDS": "1"})
    assert "LISTEN_FDS='0'" in problem({"LISTEN_FDS": "0", "LISTEN_PID": "42"})
    assert "LISTEN_FDS='x'" in problem({"LISTEN_FDS": "x", "LISTEN_PID": "42"})


# --- systemd socket activation ----------------------------------------------------------------

def activated(*args: str, listen: str) -> subprocess.Popen[str]:
    """netsentry under systemd-socket-activate, which binds `listen`, waits for the first
    connection and then execs the agent with the socket as fd 3 (LISTEN_FDS=1)."""
    return subprocess.Popen(
        ["systemd-socket-activate", "-l", listen, sys.executable, "-m", "exporter",
         "--web.systemd-socket", *args], cwd=ROOT, text=True, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    return proc.stderr.read()


def test_socket_activation_serves_the_first_connection_and_every_one_after(
        tmp_path: Path) -> None:
    config = tmp_path / "netsentry.toml"
    config.write_text(CONFIG)
    port = closed_port()
    proc = activated("--config.file", str(config), listen=f"127.0.0.1:{port}")
    try:
        # The connection that wakes the agent waits in the socket's backlog and is answered.
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/-/healthy")
                break
            except ConnectionRefusedError:  # systemd-socket-activate is not listening yet
                conn.close()
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"Healthy.\n")
        conn.close()
        until(lambda: ready(port), "the agent to be ready")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        assert b"netsentry_build_info" in response.read()
        conn.close()
    finally:
        log = stop(proc)
    assert f"msg=listening address=127.0.0.1:{port}" in log, log


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def test_socket_activation_on_a_unix_socket(tmp_path: Path) -> None:
    """The socket a reverse proxy on the host would talk to (ListenStream=/run/...)."""
    config = tmp_path / "netsentry.toml"
    config.write_text(CONFIG)
    path = tmp_path / "http.sock"
    proc = activated("--config.file", str(config), listen=str(path))
    try:
        until(lambda: path.exists() or proc.poll() is not None, "the socket to be bound")
        conn = UnixConnection(str(path))
        conn.request("GET", "/-/healthy")  # wakes the agent; answered once it runs
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"Healthy.\n")
        conn.close()
    finally:
        log = stop(proc)
    assert f"msg=listening address={path}" in log, log


def ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/-/ready")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def test_socket_activation_refuses_a_datagram_socket(tmp_path: Path) -> None:
    port = closed_port()
    proc = subprocess.Popen(
        ["systemd-socket-activate", "--datagram", "-l", f"127.0.0.1:{port}", sys.executable,
         "-m", "exporter", "--web.systemd-socket"], cwd=ROOT, text=True,
        stderr=subprocess.PIPE)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            until(lambda: _poke(udp, port) or proc.poll() is not None, "the agent to exit")
        assert proc.wait(30) == 2
    finally:
        log = stop(proc)
    assert ("netsentry: --web.systemd-socket: file descriptor 3 is not a listening stream "
            "socket (use ListenStream= in the .socket unit)") in log.splitlines(), log


def _poke(udp: socket.socket, port: int) -> bool:
    udp.sendto(b"wake", ("127.0.0.1", port))
    time.sleep(0.1)
    return False


# --- a route prefix behind a real nginx ---------------------------------------------------------

class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "action", "src") and value is not None:
                self.links.append(value)


def through(port: int, context: ssl.SSLContext, method: str, path: str,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def proxy_certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("proxy"), "proxy.test", ips=["127.0.0.1"])


TCP_CHECK = '\n[[checks]]\nname = "self"\nkind = "tcp"\ntarget = "127.0.0.1:{port}"\n'


@pytest.mark.parametrize(("flags", "base"), [
    # nginx passes /netsentry/... as it is: the route prefix is the external URL's path.
    (["--web.external-url", "https://proxy.test/netsentry/"], "/netsentry/"),
    # nginx maps /upstream/ to the agent's /: the agent serves at /, its links are relative.
    (["--web.external-url", "https://proxy.test/upstream/", "--web.route-prefix", "/"],
     "/upstream/"),
])
def test_every_page_and_link_works_through_nginx(flags: list[str], base: str, tmp_path: Path,
                                                  proxy_certs: CertFiles) -> None:
    config = tmp_path / "netsentry.toml"
    config.write_text(CONFIG + TCP_CHECK.format(port=closed_port()))
    context = ssl.create_default_context(cafile=str(proxy_certs.ca))
    context.check_hostname = False
    with Agent(config, *flags) as agent, Nginx(proxy_certs, agent.port) as nginx:
        status, headers, page = through(nginx.port, context, "GET", base)
        assert status == 200 and headers["content-type"].startswith("text/html"), page
        parser = Links()
        parser.feed(page.decode())
        assert {"./", "metrics", "api/v1/checks"} <= set(parser.links), parser.links
        for link in parser.links:
            status, _, body = through(nginx.port, context, "GET", urljoin(base, link))
            assert status == 200, (link, body[:200])
        # The script refreshes from the page's own address, which is under the prefix.
        assert "fetch(location.pathname + location.search" in page.decode()
        assert through(nginx.port, context, "GET", base + "?q=self&failing=1")[0] == 200
        status, _, body = through(nginx.port, context, "GET", base + "metrics")
        assert status == 200 and b"netsentry_check_info{" in body
        status, _, body = through(nginx.port, context, "GET", base + "api/v1/checks")
        assert status == 200 and "self" in body.decode() and json.loads(body)
        status, _, body = through(nginx.port, context, "GET", base + "probe?check=self")
        assert status == 200 and b"netsentry_probe_success 0" in body, body
        assert through(nginx.port, context, "GET", base + "-/healthy")[:3:2] == (
            200, b"Healthy.\n")
        assert through(nginx.port, context, "GET", base + "-/ready")[0] == 200
        assert through(nginx.port, context, "POST", base + "-/reload", b"")[0] == 200
        if base == "/netsentry/":
            # Directly, the agent has nothing outside its prefix but redirects to it.
            assert agent.fetch("GET", "/metrics")[0] == 404
            assert agent.fetch("GET", "/-/healthy")[0] == 404
            status, headers, _ = agent.fetch("GET", "/netsentry")
            assert (status, headers["Location"]) == (302, "/netsentry/")
            status, headers, _ = agent.fetch("GET", "/")
            assert (status, headers["Location"]) == (302, "/netsentry/")


# --- bursts of real clients ---------------------------------------------------------------------

def burst(port: int, paths: list[str], timeout: float = 60,
          statuses: list[int] | None = None) -> list[int]:
    """Every path asked at once, one thread and connection each; the statuses in order, in
    `statuses` as they come (0 until then)."""
    statuses = [0] * len(paths) if statuses is None else statuses
    statuses[:] = [0] * len(paths)
    start = threading.Barrier(len(paths))

    def ask(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.connect()
            start.wait()
            conn.request("GET", paths[i])
            response = conn.getresponse()
            response.read()
            statuses[i] = response.status
        finally:
            conn.close()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return statuses


def test_rate_limit_under_a_burst_keeps_healthy_answering(tmp_path: Path) -> None:
    # One token an hour: the burst is all there is for the length of the test.
    web = write(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 5\n")
    config = tmp_path / "netsentry.toml"
    config.write_text(CONFIG)
    with Agent(config, "--web.config.file", str(web)) as agent:
        statuses = burst(agent.port, ["/metrics"] * 20 + ["/-/healthy"] * 10)
        assert Counter(statuses[:20]) == {200: 5, 429: 15}
        assert statuses[20:] == [200] * 10
        status, headers, body = agent.fetch("GET", "/api/v1/checks")
        assert (status, body) == (429, b"Too Many Requests\n")
        assert 3000 < int(headers["Retry-After"]) <= 3600
        assert agent.fetch("GET", "/-/healthy")[0] == 200


class HeldServer:
    """Accepts TCP connections and answers each with "ok" only once released: a check of it,
    and so a /probe of it, is in flight for as long as the test wants."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.release = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        while not self.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)
        for conn in self.held:
            with conn:
                conn.sendall(b"ok\r\n")

    def close(self) -> None:
        self.release.set()
        self._thread.join(5)
        self.sock.close()


def test_max_requests_under_a_burst_keeps_healthy_answering(tmp_path: Path) -> None:
    held = HeldServer()
    config = tmp_path / "netsentry.toml"
    config.write_text(f"""
[defaults]
interval = "1h"
timeout = "50s"

[probe]
max_in_flight = 20

[[checks]]
name = "held"
kind = "tcp"
target = "127.0.0.1:{held.port}"
dialog = [{{ expect = "^ok" }}]
""")
    try:
        with Agent(config, "--web.max-requests", "4") as agent:
            results: list[int] = []
            asking = threading.Thread(
                target=burst, args=(agent.port, ["/probe?check=held"] * 10, 60, results))
            asking.start()
            # Four probes hold the four handlers; the six others are answered 503 at once,
            # while nothing has been released.
            until(lambda: results.count(503) == 6, "six probes refused")
            assert results.count(0) == 4 and len(held.held) >= 4
            status, headers, body = agent.fetch("GET", "/metrics")
            assert (status, headers["Retry-After"]) == (503, "1")
            assert body == b"4 requests in flight, as many as --web.max-requests allows; " \
                           b"try again\n"
            assert agent.fetch("GET", "/-/healthy")[:3:2] == (200, b"Healthy.\n")
            assert results.count(0) == 4  # still held
            held.release.set()
            asking.join(60)
            assert Counter(results) == {200: 4, 503: 6}
            assert agent.fetch("GET", "/metrics")[0] == 200
    finally:
        held.close()


# --- client_allowed_sans ------------------------------------------------------------------------

def test_client_allowed_sans(tmp_path: Path) -> None:
    server = make_cert(tmp_path / "server", "localhost", ips=["127.0.0.1"])
    clients = Authority("netsentry client CA")
    allowed = clients.issue(tmp_path / "allowed", "prometheus", ["127.0.0.2"], usage="client")
    other = clients.issue(tmp_path / "other", "intruder", ["127.0.0.3"], usage="client")
    web = write(tmp_path, f"""\
        tls_server_config:
          cert_file: {server.cert}
          key_file: {server.key}
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: {allowed.ca}
          client_allowed_sans: [prometheus.example.org, 127.0.0.2]
        """)
    config = tmp_path / "netsentry.toml"
    config.write_text(CONFIG)
    with Agent(config, "--web.config.file", str(web)) as agent:
        good = client_context(server)
        good.load_cert_chain(allowed.cert, allowed.key)
        assert get(agent.port, good, "/metrics")[0] == 200
        bad = client_context(server)
        bad.load_cert_chain(other.cert, other.key)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            get(agent.port, bad, "/-/healthy")  # verified by the CA, but not an allowed SAN
        assert get(agent.port, good, "/-/healthy")[0] == 200
        agent.wait_for(lambda: any("client certificate refused" in line
                                   for line in agent.lines), what="the refusal logged")
        line = next(line for line in agent.lines if "client certificate refused" in line)
        assert "sans=127.0.0.3" in line, line


def test_client_sans_are_spelled_as_go_spells_them() -> None:
    peercert = {"subjectAltName": (("DNS", "a.example"), ("IP Address", "2001:DB8:0:0:0:0:0:1\n"),
                                   ("email", "ops@example.org"), ("URI", "spiffe://x/y"),
                                   ("othername", "<unsupported>"), ("IP Address", "10.0.0.1"))}
    assert client_sans(peercert) == ["a.example", "2001:db8::1", "ops@example.org",
                                     "spiffe://x/y", "10.0.0.1"]
    assert client_sans(None) == []


# --- the token bucket, on a clock the test steps ------------------------------------------------

def test_token_bucket_as_gos_rate_limiter() -> None:
    now = [100.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]  # starts full
    assert bucket.retry_after() == 2
    now[0] += 1.0
    assert not bucket.allow() and bucket.retry_after() == 1  # half a token
    now[0] += 1.0
    assert bucket.allow() and not bucket.allow()
    now[0] += 60.0
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]  # at most burst
    now[0] -= 10.0  # a clock going back adds nothing
    assert not bucket.allow()
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


# --- the status page under a prefix, in a real headless Chromium -------------------------------

def test_the_page_under_a_prefix_in_a_browser(tmp_path: Path) -> None:
    """Its refresh fetches from under the prefix and swaps the checks in, its filter stays
    there, and its links lead there."""
    from tests.support.chromium import Browser

    config = tmp_path / "netsentry.toml"
    config.write_text(CONFIG + TCP_CHECK.format(port=closed_port()))
    with Agent(config, "--web.route-prefix", "netsentry") as agent, \
            Browser(tmp_path / "chromium") as browser:
        root = f"http://127.0.0.1:{agent.port}"
        page = browser.page(1100, 700)
        page.navigate(f"{root}/netsentry")  # redirected to the page
        assert page.evaluate("location.href") == f"{root}/netsentry/"
        page.evaluate('document.querySelector("input[name=failing]").click()')
        assert page.evaluate("location.href") == f"{root}/netsentry/?failing=1"
        page.evaluate('document.getElementById("live").dataset.marker = "old"')
        since = len(browser.events)
        request = page.wait_for("Network.requestWillBeSent", timeout=25, since=since,
                                type="Fetch")
        assert request["request"]["url"] == f"{root}/netsentry/?failing=1"
        page.wait_for("Network.loadingFinished", timeout=10, since=since,
                      requestId=request["requestId"])
        for _ in range(50):  # the swap follows the response within a few event-loop turns
            if page.evaluate('document.getElementById("live").dataset.marker') is None:
                break
            page.evaluate("new Promise((done) => setTimeout(done, 100))")
        assert page.evaluate('document.getElementById("live").dataset.marker') is None
        assert page.evaluate('document.getElementById("offline").hidden') is True
        links = page.evaluate('Array.from(document.querySelectorAll("nav a"), (a) => a.href)')
        assert links[:2] == [f"{root}/netsentry/metrics", f"{root}/netsentry/api/v1/checks"]
        page.close()
