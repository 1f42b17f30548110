"""Network faults against a real agent: each shows as failures with the right reason while it
lasts, and the check recovers on the next run after it ends; no run is lost meanwhile.

The faults come from real servers killed and restarted (dnsmasq), from a real server's own
state changed under the agent (grpcio's health service set to NOT_SERVING) and from the tests'
fault proxy (loss, resets) in front of real servers (grpcio, websockets, nginx over h2c); the
agent is a real process (tests/support/agent.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checks.test_grpc import NOT_SERVING, SERVING, Health
from tests.reliability.agentwatch import Counts, assert_recovers, counts, wait_counts
from tests.support import netpath
from tests.support.agent import Agent
from tests.support.certs import make_cert
from tests.support.dnsmasq import Dnsmasq
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.httpservers import HttpServer, Reply
from tests.support.nginx import BIG_BYTES, Nginx
from tests.support.udpservers import UdpServer
from tests.support.wsservers import BIG, echo_server

HEAD = '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'
RECORDS = {"host.test": ["127.0.0.5"]}


def dns_check(name: str, server: str) -> str:
    return (f'\n[[checks]]\nname = "{name}"\nkind = "dns"\ntarget = "host.test"\n'
            f'server = ["{server}"]\nexpect_answers = ["127.0.0.5"]\n')


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq(a=RECORDS) as server:
        yield server


def test_dns_server_dies_and_comes_back(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    path = tmp_path / "c.toml"
    path.write_text(HEAD + dns_check("resolver", dnsmasq.address))
    with Agent(path) as agent:
        up = wait_counts(agent, "resolver", lambda c: c.success == 1, what="a first success")
        dnsmasq.stop()  # SIGTERM: the port is closed, queries go unanswered
        down = wait_counts(agent, "resolver", lambda c: c.runs >= up.runs + 4,
                           what="four runs with the server dead")
        # The run in flight when it died may have succeeded; the three after it failed, and
        # a dead UDP server is silence to an unconnected socket: timeout, nothing else.
        assert set(down.since(up)) == {"timeout"}
        assert down.failed - up.failed >= 3
        assert down.success == 0
        again = Dnsmasq(a=RECORDS, port=dnsmasq.port)
        try:
            lifted = counts(agent, "resolver")
            assert_recovers(agent, "resolver", lifted)
        finally:
            again.stop()
        assert agent.value("netsentry_scheduler_missed_runs_total", check="resolver",
                           kind="dns") == 0


def test_dns_under_30_percent_packet_loss(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    names = [f"lossy-{i}" for i in range(8)]
    with FaultProxy("udp", ("127.0.0.1", dnsmasq.port), Faults(drop=0.3), seed=9) as proxy:
        path = tmp_path / "c.toml"
        path.write_text(HEAD + "".join(dns_check(n, proxy.address) for n in names))
        with Agent(path) as agent:
            before = {n: counts(agent, n) for n in names}
            wait_counts(agent, names[-1], lambda c: c.runs >= before[names[-1]].runs + 6,
                        what="six runs under loss")
            lossy = {n: counts(agent, n) for n in names}
            proxy.faults = Faults()
            lifted = {n: counts(agent, n) for n in names}
            failed = sum(lossy[n].failed for n in names)
            ran = sum(lossy[n].runs for n in names)
            # A query and its reply each survive with 0.7: about half the runs fail. Lost
            # datagrams are silence, so every failure is a timeout.
            assert {r for n in names for r in lossy[n].since(before[n])} <= {"timeout"}
            assert 0 < failed < ran, (failed, ran)
            assert proxy.stats["dropped_up"] + proxy.stats["dropped_down"] > 0
            for name in names:
                assert_recovers(agent, name, lifted[name])
            assert all(agent.value("netsentry_scheduler_missed_runs_total", check=n,
                                   kind="dns") == 0 for n in names)


def test_http_server_resetting_mid_transfer(tmp_path: Path) -> None:
    body = bytes(range(256)) * 800  # 200 KiB: the reset comes in the middle of it
    with HttpServer({"/": Reply(200, body)}) as server, \
            FaultProxy("tcp", ("127.0.0.1", server.port), Faults(reset_after=20_000)) as proxy:
        path = tmp_path / "c.toml"
        path.write_text(HEAD + f'\n[[checks]]\nname = "web"\nkind = "http"\n'
                        f'target = "http://{proxy.address}/"\n')
        with Agent(path) as agent:
            first = wait_counts(agent, "web", lambda c: c.runs >= 3, what="three runs")
            assert set(first.failures[r] for r in first.failures if r != "network_error") == {0}
            assert first.failures["network_error"] == first.runs
            assert first.success == 0
            assert proxy.stats["resets"] >= 3
            proxy.faults = Faults(reset_after=0)  # now at once, before the request
            at_once = wait_counts(agent, "web", lambda c: c.runs >= first.runs + 2,
                                  what="two runs reset at accept")
            assert set(at_once.since(first)) == {"network_error"}
            proxy.faults = Faults()
            lifted = counts(agent, "web")
            assert_recovers(agent, "web", lifted)
            assert agent.value("netsentry_http_response_bytes", check="web",
                               kind="http") == len(body)


def only(found: Counts) -> dict[str, float]:
    """The reasons that failed at least once (the agent exports every reason, most at 0)."""
    return {reason: n for reason, n in found.failures.items() if n}


def assert_resets_then_recovers(agent: Agent, check: str, proxy: FaultProxy) -> Counts:
    """With the proxy resetting after `proxy.faults.reset_after` bytes from the server: three
    runs, each failed as network_error, the server having sent more than that (the reset cut
    its answer); then reset at accept: two more, the same; then lifted: recovered."""
    cut = proxy.faults.reset_after
    assert cut
    first = wait_counts(agent, check, lambda c: c.runs >= 3, what="three runs reset")
    stats = dict(proxy.stats)
    assert only(first) == {"network_error": first.runs}, first.failures
    assert first.success == 0
    assert stats["resets"] >= 3
    assert stats["bytes_down"] > cut * stats["connections"], stats
    proxy.faults = Faults(reset_after=0)  # now at once, before the request
    at_once = wait_counts(agent, check, lambda c: c.runs >= first.runs + 2,
                          what="two runs reset at accept")
    assert set(at_once.since(first)) == {"network_error"}
    proxy.faults = Faults()
    lifted = counts(agent, check)
    return assert_recovers(agent, check, lifted)


@pytest.fixture
def health() -> Iterator[Health]:
    server = Health()
    server.set("", SERVING)
    try:
        yield server
    finally:
        server.stop()


def grpc_check(name: str, target: str) -> str:
    return f'\n[[checks]]\nname = "{name}"\nkind = "grpc"\ntarget = "{target}"\n'


# One health call brings 227 bytes from grpcio (its SETTINGS, then the response's headers, one
# message and the trailers); 100 lets its SETTINGS through and cuts the answer.
GRPC_CUT = 100


def test_grpc_server_resetting_mid_call(tmp_path: Path, health: Health) -> None:
    with FaultProxy("tcp", ("127.0.0.1", health.port), Faults(reset_after=GRPC_CUT)) as proxy:
        path = tmp_path / "c.toml"
        path.write_text(HEAD + grpc_check("rpc", proxy.address))
        with Agent(path) as agent:
            assert_resets_then_recovers(agent, "rpc", proxy)
            assert agent.value("netsentry_grpc_healthcheck_status", check="rpc", kind="grpc",
                               status="SERVING") == 1


def test_grpc_service_not_serving_and_back(tmp_path: Path, health: Health) -> None:
    path = tmp_path / "c.toml"
    path.write_text(HEAD + grpc_check("rpc", health.target))
    with Agent(path) as agent:
        up = wait_counts(agent, "rpc", lambda c: c.success == 1, what="a first success")
        health.set("", NOT_SERVING)
        down = wait_counts(agent, "rpc", lambda c: c.runs >= up.runs + 4,
                           what="four runs while NOT_SERVING")
        # The run in flight when it flipped may have succeeded; the three after it failed,
        # as the server's answer says: bad_status, nothing else.
        assert set(down.since(up)) == {"bad_status"}
        assert down.failed - up.failed >= 3
        assert down.success == 0
        assert agent.value("netsentry_grpc_healthcheck_status", check="rpc", kind="grpc",
                           status="NOT_SERVING") == 1
        health.set("", SERVING)
        lifted = counts(agent, "rpc")
        assert_recovers(agent, "rpc", lifted)
        assert agent.value("netsentry_grpc_healthcheck_status", check="rpc", kind="grpc",
                           status="SERVING") == 1
        assert agent.value("netsentry_scheduler_missed_runs_total", check="rpc",
                           kind="grpc") == 0


# The 101 is under 200 bytes; the echo of "big" is BIG bytes after it: 2000 is mid-message.
WS_CUT = 2000


def test_websocket_server_resetting_mid_message(tmp_path: Path) -> None:
    with echo_server() as port, \
            FaultProxy("tcp", ("127.0.0.1", port), Faults(reset_after=WS_CUT)) as proxy:
        path = tmp_path / "c.toml"
        path.write_text(HEAD + f'\n[[checks]]\nname = "ws"\nkind = "websocket"\n'
                        f'target = "ws://{proxy.address}/"\nsend = "big"\n'
                        f'expect = "^x{{{BIG}}}$"\n')
        with Agent(path) as agent:
            assert_resets_then_recovers(agent, "ws", proxy)
            assert agent.value("netsentry_http_status_code", check="ws",
                               kind="websocket") == 101


# nginx sends /big gzip-compressed (the check asks for it): about 1.7 KB a run over h2c, its
# SETTINGS and the response's headers in the first 150; 1000 cuts the body.
H2_CUT = 1000


def test_http2_server_resetting_mid_body(tmp_path: Path) -> None:
    with Nginx(make_cert(tmp_path, "web.test")) as web, \
            FaultProxy("tcp", ("127.0.0.1", web.h2c_port), Faults(reset_after=H2_CUT)) as proxy:
        path = tmp_path / "c.toml"
        path.write_text(HEAD + f'\n[[checks]]\nname = "h2"\nkind = "http"\n'
                        f'target = "http://{proxy.address}/big"\nh2c = true\n'
                        'http_version = "2"\n')
        with Agent(path) as agent:
            assert_resets_then_recovers(agent, "h2", proxy)
            assert agent.value("netsentry_http_version", check="h2", kind="http") == 2
            assert agent.value("netsentry_http_response_bytes", check="h2",
                               kind="http") == BIG_BYTES


def udp_check(name: str, target: str, count: int) -> str:
    return (f'\n[[checks]]\nname = "{name}"\nkind = "udp"\ntarget = "{target}"\n'
            f'send = "ping"\nexpect = "^ping$"\ncount = {count}\n')


def test_udp_server_dies_and_comes_back(tmp_path: Path) -> None:
    server = UdpServer()
    port = server.port
    path = tmp_path / "c.toml"
    path.write_text(HEAD + udp_check("echo", server.target, 3))
    try:
        with Agent(path) as agent:
            up = wait_counts(agent, "echo", lambda c: c.success == 1, what="a first success")
            server.close()
            down = wait_counts(agent, "echo", lambda c: c.runs >= up.runs + 4,
                               what="four runs with the server gone")
            # Unlike dns's unconnected socket, the udp check's connected one hears the port
            # unreachable: refused, at once, and nothing else.
            assert set(down.since(up)) == {"refused"}
            assert down.success == 0
            server = UdpServer(port=port)
            lifted = counts(agent, "echo")
            assert_recovers(agent, "echo", lifted)
            assert agent.value("netsentry_scheduler_missed_runs_total", check="echo",
                               kind="udp") == 0
    finally:
        server.close()


def test_udp_tries_ride_out_packet_loss(tmp_path: Path) -> None:
    with UdpServer() as server, \
            FaultProxy("udp", ("127.0.0.1", server.port), Faults(drop=0.3), seed=5) as proxy:
        path = tmp_path / "c.toml"
        path.write_text(HEAD + "".join(udp_check(f"once-{i}", proxy.address, 1)
                                       for i in range(4))
                        + "".join(udp_check(f"thrice-{i}", proxy.address, 3) for i in range(4)))
        names = [f"{kind}-{i}" for kind in ("once", "thrice") for i in range(4)]
        with Agent(path) as agent:
            before = {n: counts(agent, n) for n in names}
            wait_counts(agent, "thrice-3", lambda c: c.runs >= before["thrice-3"].runs + 8,
                        what="eight runs under loss")
            lossy = {n: counts(agent, n) for n in names}
            proxy.faults = Faults()
            lifted = {n: counts(agent, n) for n in names}
            # A datagram and its echo each survive with 0.7: one try fails about half the
            # runs, three tries about one in eight. Lost datagrams are silence: timeouts.
            assert {r for n in names for r in lossy[n].since(before[n])} <= {"timeout"}
            failed = {kind: sum(lossy[n].failed - before[n].failed for n in names
                                if n.startswith(kind)) for kind in ("once", "thrice")}
            assert failed["once"] > 0 and failed["thrice"] < failed["once"], failed
            assert proxy.stats["dropped_up"] + proxy.stats["dropped_down"] > 0
            for name in names:
                assert_recovers(agent, name, lifted[name])


def test_ping_target_goes_silent_and_comes_back() -> None:
    """Across a chain of namespaces (tests/support/netpath.py): the target stops answering
    echoes (its kernel ignores them), so every echo is lost and the run fails as packet_loss
    with the counters still counting; once it answers again the next run succeeds."""
    if not netpath.available():
        pytest.skip("network namespaces do not work here (these tests need root)")
    options = {"target": "10.231.9.1", "count": 4, "spacing": "50ms", "timeout": "1s"}
    with netpath.Chain() as chain:
        assert chain.target_address(4) == options["target"]
        with netpath.CheckSession(chain.client, "ping", options) as session:
            up = session.run()
            assert (up["success"], netpath.value(up, "netsentry_ping_loss_ratio")) == (True, 0)
            netpath.sysctl(chain.target, {"net.ipv4.icmp_echo_ignore_all": 1})
            down = [session.run() for _ in range(2)]
            assert [(r["success"], r["reason"]) for r in down] == [(False, "packet_loss")] * 2
            assert [netpath.value(r, "netsentry_ping_loss_ratio") for r in down] == [1, 1]
            assert [netpath.value(r, "netsentry_ping_packets_sent_total", "counters")
                    for r in down] == [4, 4]
            netpath.sysctl(chain.target, {"net.ipv4.icmp_echo_ignore_all": 0})
            again = session.run()
            assert again["success"] and netpath.value(
                again, "netsentry_ping_packets_received_total", "counters") == 4


def test_path_destination_goes_silent_and_comes_back() -> None:
    """Across the chain: the target stops sending ICMP errors (its rate limit at 100000 s), so
    the path's UDP probes reach it unanswered and the runs fail as timeout at max_hops, the
    routers still heard; when it answers again the next run reaches it, and neither the
    silence nor the return counts as a path change."""
    if not netpath.available():
        pytest.skip("network namespaces do not work here (these tests need root)")
    options = {"target": "10.231.9.1", "max_hops": 4, "timeout": "1s"}
    with netpath.Chain() as chain, netpath.CheckSession(chain.client, "path", options) as s:
        up = s.run()
        netpath.silence_icmp(chain.target)
        down = [s.run() for _ in range(2)]
        netpath.unsilence_icmp(chain.target)
        time.sleep(0.1)  # past the 20 ms the kernel's global ICMP budget waits to refill
        again = s.run()
    assert (up["success"], again["success"]) == (True, True), again["message"]
    assert [(r["success"], r["reason"]) for r in down] == [(False, "timeout")] * 2
    assert [netpath.value(r, "netsentry_path_reached") for r in (up, *down, again)] == [
        1, 0, 0, 1]
    assert [netpath.value(r, "netsentry_path_hop_loss_ratio", hop="2") for r in down] == [0, 0]
    assert [netpath.value(r, "netsentry_path_changes_total", "counters")
            for r in (up, *down, again)] == [0, 0, 0, 0]
