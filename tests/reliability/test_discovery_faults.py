"""Faults of service-discovery sources against a real agent: while an http_sd server or an SRV
nameserver misbehaves, each refresh fails with its reason in the log and
netsentry_discovery_last_refresh_successful 0, and the last good targets stay and keep running;
once the source is healthy again, the next refresh succeeds.

http_sd: a body trickled past the refresh's deadline, a connection reset mid-body (the fault
proxy), a gzip bomb, a body over max_body_bytes, text/html, a redirect loop. SRV: a nameserver
that goes silent, answers garbage, or answers with a wrong ID (tests/support/fakedns.py).
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.fakedns import FakeDns
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.httpservers import HttpServer, Reply, Request
from tests.support.servers import AcceptServer

pytestmark = pytest.mark.timeout(120)

HEAD = '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'
JSON = (("Content-Type", "application/json"),)
PAD = 60_000  # spaces after the healthy JSON, so that a reset after 2,000 bytes is mid-body


class Switch:
    """Healthy or faulty, flipped by the test; routes answer by it."""

    def __init__(self) -> None:
        self.faulty = threading.Event()

    def route(self, healthy: Reply, fault: Reply) -> Callable[[Request], Reply]:
        return lambda request: fault if self.faulty.is_set() else healthy


def check(name: str, source: str) -> str:
    return (f'\n[[checks]]\nname = "{name}"\nkind = "tcp"\n{source}\n'
            'refresh_interval = "1s"\n')


def runs(agent: Agent, name: str) -> float:
    return sum(v for (metric, labels), v in agent.metrics().items()
               if metric == "netsentry_check_runs_total" and ("check", name) in labels)


def refreshed(agent: Agent, name: str) -> float | None:
    found = [v for (metric, labels), v in agent.metrics().items()
             if metric == "netsentry_discovery_last_refresh_successful"
             and ("check", name) in labels]
    return found[0] if found else None


def assert_faults_keep_targets(agent: Agent, names: list[str], target: str,
                               reasons: dict[str, str], heal: Callable[[], None]) -> None:
    """The sources failing: each one's reason logged, its target still run; then healed."""
    agent.wait_for(lambda: all(refreshed(agent, n) == 0 for n in names), timeout=30,
                   what="every refresh to fail")
    before = {n: runs(agent, n) for n in names}
    agent.wait_for(lambda: all(runs(agent, n) >= before[n] + 2 for n in names),
                   what="the last good targets to run on")
    for name in names:
        assert agent.value("netsentry_check_success", check=name, kind="tcp",
                           target=target) == 1, name
        assert agent.value("netsentry_discovery_targets", check=name,
                           source=next(s for (m, labels) in agent.metrics()
                                       if m == "netsentry_discovery_targets"
                                       and ("check", name) in labels
                                       for k, s in labels if k == "source")) == 1
        failed = [line for line in agent.lines if "service discovery failed" in line
                  and f"check={name} " in line]
        assert failed and reasons[name] in failed[0], (name, failed[:1])
    heal()
    agent.wait_for(lambda: all(refreshed(agent, n) == 1 for n in names), timeout=30,
                   what="every source to recover")
    assert not [line for line in agent.lines if "Traceback" in line]


def test_http_sd_server_faults(tmp_path: Path) -> None:
    switch = Switch()
    with AcceptServer() as up:
        good = json.dumps([{"targets": [up.target]}]).encode()
        healthy = Reply(200, good, JSON)
        bomb = gzip.compress(b" " * (64 << 20), 1)  # 64 MiB of spaces in 286 KiB
        routes = {
            "/trickle": switch.route(healthy, Reply(200, good + b" " * 30, JSON, trickle=0.1)),
            "/reset": Reply(200, good + b" " * PAD, JSON),
            "/bomb": switch.route(healthy, Reply(200, bomb, (*JSON, ("Content-Encoding",
                                                                    "gzip")))),
            "/big": switch.route(healthy, Reply(200, good + b" " * 5000, JSON)),
            "/html": switch.route(healthy, Reply(200, b"<html>down</html>",
                                                 (("Content-Type", "text/html"),))),
            "/loop": switch.route(healthy, Reply(302, b"", (("Location", "/loop"),))),
        }
        with HttpServer(routes) as sd, \
                FaultProxy("tcp", ("127.0.0.1", sd.port)) as proxy:
            path = tmp_path / "c.toml"
            path.write_text(HEAD + "".join(
                check(name.strip("/"), f'targets_url = "{sd.url(name)}"')
                for name in ("/trickle", "/bomb", "/html", "/loop"))
                + check("reset", f'targets_url = "http://{proxy.address}/reset"')
                + check("big", f'targets_url = {{ url = "{sd.url("/big")}", '
                        'max_body_bytes = 2000 }'))
            names = ["trickle", "reset", "bomb", "big", "html", "loop"]
            with Agent(path) as agent:
                agent.wait_for(lambda: all(runs(agent, n) >= 1 for n in names)
                               and all(refreshed(agent, n) == 1 for n in names),
                               what="every discovered target to run")
                switch.faulty.set()
                proxy.faults = Faults(reset_after=2000)

                def heal() -> None:
                    switch.faulty.clear()
                    proxy.faults = Faults()

                assert_faults_keep_targets(agent, names, up.target, {
                    "trickle": "timeout: ",
                    "reset": "network_error: ",
                    "bomb": "unexpected_response: decompressed response body larger than "
                            f"{16 << 20} bytes",
                    "big": "unexpected_response: response body larger than 2000 bytes",
                    "html": "Content-Type 'text/html', expected application/json",
                    "loop": "unexpected_response: more than 10 redirect(s) (max_redirects)",
                }, heal)
                assert proxy.stats["resets"] >= 1
                assert sd.trickled >= 1


def test_srv_nameserver_faults(tmp_path: Path) -> None:
    with AcceptServer() as up:
        port = up.target.rsplit(":", 1)[1]
        records = {"_web._tcp.test": [("SRV", f"10 5 {port} localhost.", 60)]}
        servers = {name: FakeDns("answer", records) for name in ("silent", "garbage",
                                                                 "wrong_id")}
        try:
            path = tmp_path / "c.toml"
            path.write_text(HEAD + "".join(
                check(name, f'targets_srv = {{ name = "_web._tcp.test", server = '
                            f'"{server.address}" }}')
                for name, server in servers.items()))
            with Agent(path) as agent:
                names = list(servers)
                agent.wait_for(lambda: all(runs(agent, n) >= 1 for n in names)
                               and all(refreshed(agent, n) == 1 for n in names),
                               what="every SRV target to run")
                for name, server in servers.items():
                    server.behaviour = name

                def heal() -> None:
                    for server in servers.values():
                        server.behaviour = "answer"

                assert_faults_keep_targets(agent, names, f"localhost:{port}", {
                    "silent": "timeout: ",
                    "garbage": "datagram(s) from the server ignored, the last: reply ID ",
                    "wrong_id": "1 datagram(s) from the server ignored, the last: reply ID ",
                }, heal)
                assert servers["garbage"].decoys >= 1 and servers["wrong_id"].decoys >= 1
        finally:
            for server in servers.values():
                server.close()
