"""`/probe` through a real agent: configured and ad-hoc checks, the allow-list (literals,
names that resolve outside it, redirects), the scrape timeout header, debug traces without
secrets; and, in-process, the bound on probes in flight and the timeout arithmetic."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.checks.base import UNTIL_RELOAD
from exporter.config.load import load_text
from exporter.config.model import Config
from exporter.config.settings import adhoc_check
from exporter.errors import Reason
from exporter.exposition import render_probe
from exporter.metrics import DNS_RESPONSES, HTTP_PHASE, TCP_CONNECT
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.store import Result, Store, split
from exporter.web.probe import BadRequest, ProbeEndpoint, probe_timeout
from exporter.web.server import Request
from tests.support.agent import Agent
from tests.support.httpservers import HttpServer, Reply
from tests.support.servers import AcceptServer, Listener, closed_port
from tests.support.udpservers import UdpServer, closed_udp_port

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3ntinel-Pw-4kQz"
API_KEY = "s3ntinel-Key-9vRm"
FLEET_CLOSED = closed_port()  # the target list's second target: nothing listens there


def samples(text: str) -> dict[str, float]:
    """name{labels} -> value, parsed by prometheus_client's parser."""
    return {s.name + "".join(f"[{k}={v}]" for k, v in sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Servers:
    def __init__(self) -> None:
        self.tcp = AcceptServer()
        self.outside = Listener("127.0.0.2")  # not in agent A's allow-list
        self.silent = Listener("127.0.0.1")  # connections wait in its backlog, unanswered
        self.http = HttpServer({
            "/": Reply(200, b"ok"),
            "/denied": Reply(401, b"who are you?"),
            "/away": Reply(302, headers=(("Location", f"http://127.0.0.2:{self.outside.port}/"),)),
        })

    def close(self) -> None:
        for server in (self.tcp, self.outside, self.silent, self.http):
            server.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    started = Servers()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def agent(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    path = tmp_path_factory.mktemp("probe") / "netsentry.toml"
    path.write_text(f"""
[[checks]]
name = "web"
kind = "http"
target = "{servers.http.url('/')}"
interval = "1h"

[[checks]]
name = "fleet"
kind = "tcp"
targets = ["{servers.tcp.target}", "127.0.0.1:{FLEET_CLOSED}"]
interval = "1h"

[probe]
allow = ["127.0.0.1/32"]

[probe.templates.secret]
kind = "http"
basic_auth = {{ username = "probe", password = "{PASSWORD}" }}
secret_headers = {{ X-Api-Key = "{API_KEY}" }}

[probe.templates.slow]
kind = "http"
timeout = "5s"

[probe.templates.quick]
kind = "tcp"
timeout = "2s"

[probe.templates.pong]
kind = "udp"
send = "ping"
expect = "^pong"
""")
    with Agent(path) as started:
        yield started


def get(agent: Agent, query: str, **headers: str) -> tuple[int, str]:
    status, _, body = agent.fetch("GET", f"/probe?{query}", headers=headers)
    return status, body.decode()


# --- answers ----------------------------------------------------------------------------------


def test_an_allowed_target_is_probed(agent: Agent, servers: Servers) -> None:
    status, headers, body = agent.fetch("GET", f"/probe?kind=tcp&target={servers.tcp.target}")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(body.decode())
    assert got["netsentry_probe_success"] == 1
    assert got["netsentry_probe_duration_seconds"] > 0
    assert got["netsentry_tcp_connect_seconds"] > 0
    assert {k: v for k, v in got.items() if k.startswith("netsentry_probe_failure_reason")} == {
        f"netsentry_probe_failure_reason[reason={r}]": 0 for r in (
            "timeout", "resolve_error", "nxdomain", "refused", "network_error", "tls_error",
            "unexpected_response", "internal_error")}
    assert not any("check=" in k or "kind=" in k for k in got)  # Prometheus adds the labels


def test_a_template_applies_its_options(agent: Agent, servers: Servers) -> None:
    status, text = get(agent, f"template=quick&target={servers.tcp.target}&debug=true")
    assert status == 200
    assert "timeout 2 s (the check's: 2 s)" in text


def test_module_is_blackbox_exporters_name_for_a_template(agent: Agent,
                                                          servers: Servers) -> None:
    # A blackbox scrape config or a prometheus-operator Probe sends module=, not template=.
    status, text = get(agent, f"module=quick&target={servers.tcp.target}&debug=true")
    assert status == 200
    assert "timeout 2 s (the check's: 2 s)" in text
    status, text = get(agent, f"module=quick&target={servers.tcp.target}")
    assert (status, samples(text)["netsentry_probe_success"]) == (200, 1)
    same, _ = get(agent, f"module=quick&template=quick&target={servers.tcp.target}")
    assert same == 200


def test_a_configured_check_runs_now(agent: Agent) -> None:
    status, text = get(agent, "check=web")
    assert status == 200
    got = samples(text)
    assert got["netsentry_probe_success"] == 1
    assert got["netsentry_http_status_code"] == 200


def test_one_target_of_a_target_list_runs_now(agent: Agent, servers: Servers) -> None:
    status, text = get(agent, f"check=fleet&target={servers.tcp.target}")
    assert (status, samples(text)["netsentry_probe_success"]) == (200, 1)
    status, text = get(agent, f"check=fleet&target=127.0.0.1:{FLEET_CLOSED}")
    got = samples(text)
    assert (status, got["netsentry_probe_success"]) == (200, 0)
    assert got["netsentry_probe_failure_reason[reason=refused]"] == 1


def test_a_failed_probe_is_200_with_the_reason(agent: Agent) -> None:
    status, text = get(agent, f"kind=tcp&target=127.0.0.1:{closed_port()}")
    assert status == 200
    got = samples(text)
    assert got["netsentry_probe_success"] == 0
    assert got["netsentry_probe_failure_reason[reason=refused]"] == 1
    assert got["netsentry_probe_failure_reason[reason=timeout]"] == 0


def test_udp_targets_are_probed_under_the_same_rules(agent: Agent) -> None:
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.bind(("127.0.0.2", 0))  # not in the list: must receive nothing
    outside.setblocking(False)
    try:
        with UdpServer(lambda data: [b"pong"]) as server:
            status, text = get(agent, f"template=pong&target={server.target}")
            plain_status, plain = get(agent, f"kind=udp&target={server.target}")
            assert server.payloads == [b"ping", b""]  # a kind's defaults: an empty datagram
        assert (status, plain_status) == (200, 200)
        got = samples(text)
        assert (got["netsentry_probe_success"], got["netsentry_udp_response_bytes"]) == (1, 4)
        assert samples(plain)["netsentry_probe_success"] == 1
        status, text = get(agent, f"kind=udp&target=127.0.0.1:{closed_udp_port()}")
        assert samples(text)["netsentry_probe_failure_reason[reason=refused]"] == 1
        target = f"127.0.0.2:{outside.getsockname()[1]}"
        assert get(agent, f"kind=udp&target={target}") == (
            400, f"target '{target}' is not allowed by [probe] allow: 127.0.0.2 is not in an "
            "allowed network\n")
        with pytest.raises(BlockingIOError):
            outside.recv(100)
    finally:
        outside.close()


def test_ping_targets_are_addresses_under_the_same_rules(agent: Agent) -> None:
    """An ICMP target has no port: it is its address that must pass the list."""
    watch = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    watch.setblocking(False)
    try:
        status, text = get(agent, "kind=ping&target=127.0.0.1")
        assert status == 200
        got = samples(text)
        assert got["netsentry_probe_success"] == 1
        assert got["netsentry_ping_packets_sent_total"] == got[
            "netsentry_ping_packets_received_total"] == 5  # the kind's defaults: no keys here
        assert get(agent, "kind=ping&target=127.0.0.2") == (
            400, "target '127.0.0.2' is not allowed by [probe] allow: 127.0.0.2 is not in an "
            "allowed network\n")
        # A name is resolved first, and its address held to the list: localhost's is in it.
        status, text = get(agent, "kind=ping&target=localhost&debug=true")
        assert status == 200 and "localhost -> 127.0.0.1: allowed, in 127.0.0.1/32" in text
        status, text = get(agent, "kind=ping&target=127.0.0.1:80")
        assert status == 400 and "a ping target has no port" in text
        echoes_to_outside = 0
        for _ in range(10_000):  # everything ICMP this host saw meanwhile, in a bounded read
            try:
                packet = watch.recv(65535)
            except BlockingIOError:
                break
            header = (packet[0] & 0x0F) * 4
            if packet[16:20] == bytes([127, 0, 0, 2]) and packet[header] == 8:
                echoes_to_outside += 1
        assert echoes_to_outside == 0
    finally:
        watch.close()


def test_path_targets_are_addresses_under_the_same_rules(agent: Agent) -> None:
    """A traceroute target has no port either; debug=true shows the hop table."""
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.bind(("127.0.0.2", 33434))  # the first probe's port: must receive nothing
    outside.setblocking(False)
    try:
        status, text = get(agent, "kind=path&target=127.0.0.1")
        assert status == 200
        got = samples(text)
        assert (got["netsentry_probe_success"], got["netsentry_path_hops"],
                got["netsentry_path_reached"]) == (1, 1, 1)
        assert got["netsentry_path_hop_loss_ratio[hop=1]"] == 0
        status, text = get(agent, "kind=path&target=127.0.0.1&debug=true")
        assert status == 200
        assert re.search(r"^hop 1 +127\.0\.0\.1  \d+\.\d{3} ms", text, re.M), text
        assert get(agent, "kind=path&target=127.0.0.2") == (
            400, "target '127.0.0.2' is not allowed by [probe] allow: 127.0.0.2 is not in an "
            "allowed network\n")
        status, text = get(agent, "kind=path&target=127.0.0.1:80")
        assert status == 400 and "a path target has no port" in text
        with pytest.raises(BlockingIOError):
            outside.recv(100)
    finally:
        outside.close()


# --- the allow-list -------------------------------------------------------------------------


def test_a_literal_outside_the_list_is_400_and_never_contacted(agent: Agent,
                                                                servers: Servers) -> None:
    target = f"127.0.0.2:{servers.outside.port}"
    assert get(agent, f"kind=tcp&target={target}") == (
        400, f"target '{target}' is not allowed by [probe] allow: 127.0.0.2 is not in an "
        "allowed network\n")
    assert servers.outside.connections(0, wait=0.5) == 0


def test_a_redirect_to_a_disallowed_host_fails_the_probe(agent: Agent, servers: Servers) -> None:
    status, text = get(agent, f"kind=http&target={servers.http.url('/away')}")
    assert status == 200
    got = samples(text)
    assert got["netsentry_probe_success"] == 0
    assert got["netsentry_probe_failure_reason[reason=unexpected_response]"] == 1
    status, text = get(agent, f"kind=http&target={servers.http.url('/away')}&debug=true")
    assert "FAILURE (unexpected_response): not allowed by [probe] allow: 127.0.0.2 is not in " \
           "an allowed network" in text
    assert "127.0.0.2: refused: 127.0.0.2 is not in an allowed network" in text
    assert servers.outside.connections(0, wait=0.5) == 0


def test_names_that_resolve_outside_the_list_are_400(tmp_path: Path) -> None:
    # /etc/hosts maps localhost and vm to 127.0.0.1: their names are allowed, that address
    # is not (not public, not in the list's network), so nothing may connect there.
    forbidden, allowed = Listener("127.0.0.1"), Listener("127.0.0.2")
    path = tmp_path / "netsentry.toml"
    path.write_text('[probe]\nallow = ["vm", "localhost", "127.0.0.2/32"]\n')
    try:
        with Agent(path) as agent:
            for name in ("vm", "localhost"):
                target = f"{name}:{forbidden.port}"
                assert get(agent, f"kind=tcp&target={target}") == (
                    400, f"target '{target}' is not allowed by [probe] allow: {name} resolves "
                    "to 127.0.0.1, which is not a public address and not in an allowed "
                    "network\n")
            # The dns kind resolves through the same resolver: its answer is held to the list.
            assert get(agent, "kind=dns&target=localhost") == (
                400, "target 'localhost' is not allowed by [probe] allow: localhost resolves "
                "to 127.0.0.1, which is not a public address and not in an allowed network\n")
            status, text = get(agent, f"kind=tcp&target=127.0.0.2:{allowed.port}")
            assert status == 200
            assert samples(text)["netsentry_probe_success"] == 1
        assert forbidden.connections(0, wait=0.5) == 0
        assert allowed.connections(1, wait=5) == 1
    finally:
        forbidden.close()
        allowed.close()


def test_a_sharded_agent_keeps_the_probe_section(tmp_path: Path, servers: Servers) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text('[probe]\nallow = ["127.0.0.1/32"]\n')
    with Agent(path, "--shard", "1/2") as agent:
        status, text = get(agent, f"kind=tcp&target={servers.tcp.target}")
    assert status == 200, text
    assert samples(text)["netsentry_probe_success"] == 1


# --- timeout, debug, secrets -------------------------------------------------------------------


def test_the_scrape_timeout_header_shortens_the_run(agent: Agent, servers: Servers) -> None:
    target = f"http://127.0.0.1:{servers.silent.port}/"
    header = {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
    status, text = get(agent, f"template=slow&target={target}&debug=true", **header)
    assert status == 200
    # The template says 5 s; the scrape allows 1.5 s, less the 0.5 s offset.
    assert "timeout 1 s (the check's: 5 s, shortened for a scrape timeout of 1.5 s)" in text
    assert "FAILURE (timeout): no result within the 1s timeout" in text
    assert get(agent, "template=slow&target=http://127.0.0.1:1/",
               **{"X-Prometheus-Scrape-Timeout-Seconds": "soon"}) == (
        400, "X-Prometheus-Scrape-Timeout-Seconds: 'soon' is not a positive number of "
        "seconds\n")


def test_debug_output_shows_no_secret(agent: Agent, servers: Servers) -> None:
    encoded = base64.b64encode(f"probe:{PASSWORD}".encode()).decode()
    before = len(servers.http.requests)
    texts = [get(agent, f"template=secret&target={servers.http.url(path)}&debug=true")[1]
             for path in ("/", "/denied")]
    # The secrets were in play: the server got them.
    sent = servers.http.requests[before:]
    assert [r.headers.get("authorization") for r in sent] == [f"Basic {encoded}"] * 2
    assert [r.headers.get("x-api-key") for r in sent] == [API_KEY] * 2
    assert re.search(r"^result +success$", texts[0], re.M), texts[0]
    assert "FAILURE (bad_status): HTTP status 401" in texts[1]
    for text in (*texts, "\n".join(agent.lines)):
        assert PASSWORD not in text and API_KEY not in text and encoded not in text
    assert "basic_auth = BasicAuth(username='probe', password=<secret>)" in texts[0]
    assert "secret_headers = (('X-Api-Key', <secret>),)" in texts[0]


# --- bad requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "message"), [
    ("", "give check=NAME, or kind=K&target=T (and template=NAME, or module=NAME)"),
    ("check=nope", "unknown check 'nope'"),
    ("check=web&kind=tcp", "check= runs a configured check; kind= does not go with it"),
    ("check=web&target=127.0.0.1:1",
     "check= runs a configured check; target= does not go with it"),
    ("check=fleet", "check 'fleet' has 2 targets; name one with target="),
    ("check=fleet&target=127.0.0.1:1", "check 'fleet' has no target '127.0.0.1:1'"),
    ("kind=smtp&target=x:25", "unknown kind 'smtp'; known kinds: "),
    ("template=nope&target=x:1", "unknown template 'nope'; templates: secret, slow, quick"),
    ("module=nope&target=x:1", "unknown template 'nope'; templates: secret, slow, quick"),
    ("module=quick&template=slow&target=x:1",
     "module= is blackbox_exporter's name for template=; give one of them"),
    ("check=web&module=quick", "check= runs a configured check; module= does not go with it"),
    ("template=quick&kind=http&target=http://x/", "template 'quick' is for tcp checks, not http"),
    ("target=127.0.0.1:1", "missing kind: give check=NAME, or kind=K&target=T"),
    ("kind=tcp", "target: missing; a tcp check needs one (&target=)"),
    ("kind=tcp&target=127.0.0.1", "target: invalid target '127.0.0.1': expected host:port"),
])
def test_bad_requests_are_400_with_the_reason(agent: Agent, query: str, message: str) -> None:
    status, text = get(agent, query)
    assert status == 400
    assert text.startswith(message), text


# --- in-process: the bound, the arithmetic, the rendering ---------------------------------------


def endpoint_config(allow: str, max_in_flight: int = 16) -> Config:
    return load_text(f'[probe]\nallow = [{allow}]\nmax_in_flight = {max_in_flight}\n'
                            '[probe.templates.slow]\nkind = "http"\ntimeout = "5s"\n', "t")


def request(query: dict[str, str]) -> Request:
    return Request("GET", "/probe", query, {}, b"", "127.0.0.1:1")


def test_one_probe_more_than_max_in_flight_is_503_at_once() -> None:
    silent = Listener("127.0.0.1")

    async def go() -> tuple[int, bytes, int]:
        pool = BlockingPool(1)
        endpoint = ProbeEndpoint(lambda: endpoint_config('"127.0.0.1/32"', 1), Resolver(pool))
        query = {"template": "slow", "target": f"http://127.0.0.1:{silent.port}/"}
        first = asyncio.create_task(endpoint.handle(request(query)))
        for _ in range(500):  # until the first probe is running
            if endpoint.in_flight:
                break
            await asyncio.sleep(0.01)
        second = await endpoint.handle(request(query))
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        pool.close()
        return second.status, second.body, endpoint.in_flight

    try:
        assert asyncio.run(go()) == (
            503, b"1 probes in flight, as many as [probe] max_in_flight allows; try again\n", 0)
    finally:
        silent.close()


def test_a_probe_shares_with_its_check_only_what_lasts_until_a_reload() -> None:
    loaded = load_text('[[checks]]\nname = "tcp"\nkind = "tcp"\ntarget = "x:1"\n', "t")
    store = Store()
    store.load(loaded.checks)
    state = store.states["tcp"]
    state.memory["answers"] = ("10.0.0.1",)  # a scheduled run's own: not for probes
    endpoint = ProbeEndpoint(lambda: loaded, Resolver.__new__(Resolver), store)
    memory = endpoint.memory(loaded.checks[0])
    assert memory == {UNTIL_RELOAD: {}}
    assert memory[UNTIL_RELOAD] is state.memory[UNTIL_RELOAD]  # e.g. NTP Kiss-o'-Death backoff
    # An ad-hoc check of the same name is not that check.
    assert endpoint.memory(adhoc_check("tcp", None, "x:1", 1.0)) == {}


def test_without_an_allow_list_ad_hoc_probes_are_off() -> None:
    async def go() -> tuple[int, bytes]:
        empty = load_text('[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "x:1"\n', "t")
        pool = BlockingPool(1)
        response = await ProbeEndpoint(lambda: empty, Resolver(pool)).handle(
            request({"kind": "tcp", "target": "127.0.0.1:1"}))
        pool.close()
        return response.status, response.body

    assert asyncio.run(go()) == (400, b"ad-hoc probes are off: the config's [probe] allow "
                                      b"lists no host patterns or networks\n")


@pytest.mark.parametrize(("configured", "header", "expected"), [
    (5.0, None, 5.0),
    (5.0, "10", 5.0),  # the check's own timeout is shorter
    (5.0, "2", 1.5),  # the scrape timeout less the offset
    (5.0, "0.8", 0.4),  # never less than half the scrape timeout
    (0.2, "0.8", 0.2),
])
def test_probe_timeout(configured: float, header: str | None, expected: float) -> None:
    assert probe_timeout(configured, header, 0.5) == expected


@pytest.mark.parametrize("header", ["", "0", "-1", "nan", "inf", "1s"])
def test_probe_timeout_rejects_nonsense(header: str) -> None:
    with pytest.raises(BadRequest):
        probe_timeout(5.0, header, 0.5)


def test_render_probe_parses_and_sums_counts() -> None:
    result = Result(False, Reason.SERVFAIL, "rcode SERVFAIL", 0.25, 0.0,
                    *split(((TCP_CONNECT, (), 0.001), (HTTP_PHASE, ('con"nect',), 0.5))),
                    counted=((DNS_RESPONSES, ("SERVFAIL",)), (DNS_RESPONSES, ("SERVFAIL",))),
                    increments=(1, 2))
    got = samples(render_probe(result, (Reason.TIMEOUT,)))
    assert got == {
        "netsentry_probe_success": 0, "netsentry_probe_duration_seconds": 0.25,
        # A reason the kind did not declare still shows.
        "netsentry_probe_failure_reason[reason=timeout]": 0,
        "netsentry_probe_failure_reason[reason=servfail]": 1,
        "netsentry_tcp_connect_seconds": 0.001,
        'netsentry_http_phase_seconds[phase=con"nect]': 0.5,
        "netsentry_dns_responses_total[rcode=SERVFAIL]": 3,
    }
