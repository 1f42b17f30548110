"""The agent end to end: a real process, real sockets, through its HTTP endpoint."""

from __future__ import annotations

import gzip
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config.load import load_default
from tests.support.agent import Agent
from tests.support.netns import run_in_netns
from tests.support.servers import AcceptServer, closed_port


@pytest.fixture
def server() -> Iterator[AcceptServer]:
    with AcceptServer() as srv:
        yield srv


def tcp_checks(names: list[str], target: str, interval: str = "1s", timeout: str = "500ms") -> str:
    text = f'[defaults]\ninterval = "{interval}"\ntimeout = "{timeout}"\n'
    for name in names:
        text += f'\n[[checks]]\nname = "{name}"\nkind = "tcp"\ntarget = "{target}"\n'
    return text


def runs(agent: Agent, name: str) -> float:
    return agent.value("netsentry_check_runs_total", check=name, kind="tcp") or 0


DEFAULT_RUN = """
import re, subprocess, sys, time, urllib.request
agent = subprocess.Popen([sys.executable, "-m", "exporter"], stderr=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 40  # one 30 s interval, and some
    text = b""
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            text = urllib.request.urlopen("http://127.0.0.1:10025/metrics", timeout=5).read()
        except OSError:
            continue
        ok = re.findall(r'^netsentry_check_success\\{check="([^"]+)".*\\} 1$', text.decode(), re.M)
        ran = re.findall(r'^netsentry_check_success\\{check="([^"]+)"', text.decode(), re.M)
        # The clock check succeeds only where a time daemon disciplines the kernel clock.
        if len(ran) == int(sys.argv[1]) and set(ran) - set(ok) <= {"self-clock"}:
            print(" ".join(sorted(ran)))
            sys.exit(0)
    print(re.findall(r'^netsentry_check_success.*$', text.decode(), re.M))
    sys.exit(1)
finally:
    agent.terminate()
    agent.wait(10)
"""


def test_default_config_reports_success_within_one_interval() -> None:
    # The README's first command, in a network namespace of the test's own: the default
    # checks (this host's port, its name and localhost through the system resolver, a ping of
    # its loopback) must all succeed within one interval, the kernel clock check must run, and
    # nothing can leave the machine.
    names = sorted(check.name for check in load_default("127.0.0.1:10025").checks)
    assert {"self-clock", "self-ping", "self-resolve-hostname", "self-resolve-localhost",
            "self-tcp"} <= set(names)
    proc = run_in_netns([sys.executable, "-c", DEFAULT_RUN, str(len(names))],
                        hosts={socket.gethostname(): ["127.0.1.1"]}, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == names


def test_reload_removes_a_checks_series_and_keeps_the_others(
    tmp_path: Path, server: AcceptServer
) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text(tcp_checks(["keep", "drop"], server.target))
    with Agent(path) as agent:
        agent.wait_for(lambda: runs(agent, "keep") >= 2 and runs(agent, "drop") >= 1,
                       what="both checks to run")
        before = runs(agent, "keep")
        path.write_text(tcp_checks(["keep"], server.target))
        agent.signal(signal.SIGHUP)
        agent.wait_for(lambda: all('"drop"' not in str(labels) for _, labels in agent.metrics()),
                       what="the dropped check's series to vanish")
        # The unchanged check kept its counters and goes on running.
        assert runs(agent, "keep") >= before
        agent.wait_for(lambda: runs(agent, "keep") > before + 1, what="keep to run on")
        assert agent.value("netsentry_check_success", check="keep", kind="tcp") == 1


def test_bad_reload_keeps_the_running_config(tmp_path: Path, server: AcceptServer) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text(tcp_checks(["a"], server.target))
    with Agent(path) as agent:
        agent.wait_for(lambda: runs(agent, "a") >= 1, what="a to run")
        path.write_text(tcp_checks(["a"], server.target) + 'bogus = "x"\n')
        status, body = agent.request("POST", "/-/reload")
        assert status == 500
        assert f"{path}:9: checks[0] \"a\".bogus: unknown key" in body
        assert agent.value("netsentry_config_last_reload_successful") == 0
        before = runs(agent, "a")
        agent.wait_for(lambda: runs(agent, "a") > before, what="a to keep running")
        assert any("config reload failed" in line for line in agent.lines)
        # Fixed again, the reload succeeds.
        path.write_text(tcp_checks(["a"], server.target))
        assert agent.request("POST", "/-/reload")[0] == 200
        assert agent.value("netsentry_config_last_reload_successful") == 1


def test_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text(tcp_checks(["<script>alert(1)</script>"], f"127.0.0.1:{closed_port()}"))
    with Agent(path) as agent:
        assert agent.request("GET", "/-/healthy")[0] == 200
        assert agent.request("GET", "/-/ready")[0] == 200
        assert agent.request("GET", "/-/reload")[0] == 405
        assert agent.request("GET", "/nope")[0] == 404
        agent.wait_for(lambda: agent.value("netsentry_check_success",
                                           check="<script>alert(1)</script>", kind="tcp") == 0,
                       what="the check to fail")
        status, page = agent.request("GET", "/")
        assert status == 200
        assert '<a href="metrics">' in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script>alert(1)" not in page  # the page's own script is the only one
        assert "refused" in page
        failures = agent.value("netsentry_check_failures_total",
                               check="<script>alert(1)</script>", kind="tcp", reason="refused")
        assert failures is not None and failures >= 1


def test_metrics_gzip_when_asked(tmp_path: Path, server: AcceptServer) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text(tcp_checks(["a"], server.target))
    with Agent(path) as agent:
        status, headers, body = agent.fetch("GET", "/metrics",
                                            headers={"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(body).decode()
        assert 'netsentry_check_runs_total{check="a",kind="tcp"}' in text
        assert "process_resident_memory_bytes" in text
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_metrics_gzip_of_many_checks_carries_every_series(
    tmp_path: Path, server: AcceptServer
) -> None:
    """A scrape streamed part by part, each deflated as it comes (one gzip stream across all
    of them), holds the same series as the plain one."""
    always = ("netsentry_check_runs_total", "netsentry_check_failures_total",
              "netsentry_check_duration_seconds_bucket", "netsentry_check_info")
    path = tmp_path / "netsentry.toml"
    path.write_text(tcp_checks([f"c{i:03d}" for i in range(600)], server.target))
    with Agent(path) as agent:
        _, _, plain = agent.fetch("GET", "/metrics")
        status, headers, body = agent.fetch("GET", "/metrics",
                                            headers={"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert len(plain) > 4 * 65536  # many parts

        def series(text: str) -> list[str]:  # of the families every loaded check has
            return [line.rsplit(" ", 1)[0] for line in text.splitlines()
                    if line.startswith(always)]

        assert series(gzip.decompress(body).decode()) == series(plain.decode())


def test_half_open_connections_block_neither_scrapes_nor_grow_threads(
    tmp_path: Path, server: AcceptServer
) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text(tcp_checks(["a"], server.target))
    with Agent(path) as agent:
        agent.metrics()
        threads = agent.threads()
        idle = []
        try:
            for _ in range(200):
                sock = socket.create_connection(("127.0.0.1", agent.port))
                sock.sendall(b"GET /metr")
                idle.append(sock)
            # (A scrape held up behind them would raise at the client's timeout.)
            status, body = agent.request("GET", "/metrics", timeout=5)
            assert status == 200 and "netsentry_check_runs_total" in body
            assert agent.threads() == threads
        finally:
            for sock in idle:
                sock.close()


def test_sigterm_stops_promptly_with_runs_in_flight(tmp_path: Path) -> None:
    """SIGTERM cancels the runs in flight instead of waiting for them: they would take a
    minute, and the agent exits cleanly (0) long before `Agent.stop` would kill it (after
    10 s, which exits -9)."""
    # A listener that never accepts, with its queue full: further SYNs are dropped, so each
    # connect hangs until the run's deadline.
    stuck = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = [socket.socket() for _ in range(4)]
    try:
        for sock in fillers:
            sock.setblocking(False)
            sock.connect_ex(stuck.getsockname())
        path = tmp_path / "netsentry.toml"
        target = f"127.0.0.1:{stuck.getsockname()[1]}"
        path.write_text(tcp_checks([f"s{i}" for i in range(20)], target, "2m", "1m"))
        with Agent(path) as agent:
            agent.wait_for(lambda: (agent.value("netsentry_checks_in_flight") or 0) >= 1,
                           what="runs in flight")
            # None has finished: each waits for its connect until its minute is up.
            assert sum(v for (name, _), v in agent.metrics().items()
                       if name == "netsentry_check_runs_total") == 0
            took = agent.stop()
            assert agent.proc.returncode == 0
            print(f"stopped in {took:.3f}s")
    finally:
        for sock in fillers:
            sock.close()
        stuck.close()


def test_port_taken_is_a_one_line_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=20,
        )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "level=" not in line]
    assert errors == [f"netsentry: listen on 127.0.0.1:{port}: address already in use"]
    assert "Traceback" not in proc.stderr
