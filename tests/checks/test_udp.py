"""The udp check against real UDP servers on loopback: an echo, a closed port (refused), a
silent one (timeout), replies that do not match, hex payloads, tries that are lost, and
hostile replies (the largest datagram, garbage, a flood); its config errors; the probe
command; the retry schedule."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from exporter.checks.udp import MAX_PAYLOAD, excerpt, retry_deadlines
from exporter.config.load import load_text
from exporter.errors import ConfigError, Reason
from exporter.net.resolve import Address
from exporter.net.udp import ConnectedUdp
from exporter.store import Result
from tests.support.agent import ROOT
from tests.support.checks import gauges, make_check, run_check, run_checks
from tests.support.udpservers import SilentUdp, UdpServer, closed_udp_port

pytestmark = pytest.mark.timeout(60)


def details(result: Result) -> dict[str, str]:
    return dict(result.details)


# --- against real servers ----------------------------------------------------------------------


def test_an_echo_is_a_success_with_its_time_and_size() -> None:
    with UdpServer() as server:
        result = run_check("udp", target=server.target, send="ping", expect="^ping$")
        assert server.payloads == [b"ping"]
    assert result.success, result.message
    got = gauges(result)
    assert set(got) == {"netsentry_dns_lookup_seconds", "netsentry_udp_response_seconds",
                        "netsentry_udp_response_bytes"}
    assert got["netsentry_udp_response_bytes"] == 4
    assert 0 < got["netsentry_udp_response_seconds"] < 1
    assert details(result)["tries"] == "1 of 3"
    assert details(result)["reply"] == "4 bytes: ping"
    assert details(result)["address"] == server.target


def test_a_closed_port_is_refused_at_once() -> None:
    port = closed_udp_port()
    result = run_check("udp", target=f"127.0.0.1:{port}", send="ping", timeout="5s")
    assert result.reason is Reason.REFUSED
    assert result.message == (f"127.0.0.1:{port} is unreachable on that port (ICMP port "
                              "unreachable after 1 datagram): nothing listens there")
    assert set(gauges(result)) == {"netsentry_dns_lookup_seconds"}


def test_a_silent_port_is_a_timeout_after_every_try() -> None:
    with SilentUdp() as silent:
        result = run_check("udp", target=silent.target, send="hello", count=4,
                           timeout="400ms")
        assert silent.pending() == 4  # each try sent once, none twice
    assert result.reason is Reason.TIMEOUT
    assert result.message == f"no reply from {silent.target} to 4 datagrams"
    assert details(result)["tries"] == "4 of 4"
    assert "netsentry_udp_response_seconds" not in gauges(result)


def test_a_reply_that_does_not_match_is_unexpected() -> None:
    with UdpServer(lambda data: [b"PONG " + data]) as server:
        result = run_check("udp", target=server.target, send="ping", expect="^pong")
        assert server.received == 1  # a wrong answer is the service's word: no retry
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert result.message == "the reply of 9 bytes does not match /^pong/: PONG ping"
    assert "netsentry_udp_response_bytes" not in gauges(result)


def test_hex_out_and_hex_prefix_back() -> None:
    reply = bytes.fromhex("8180 0001 0000") + b"\x00\xff rest"
    with UdpServer(lambda data: [reply]) as server:
        ok = run_check("udp", target=server.target, send_hex="de ad BE EF 00",
                       expect_hex="81800001")
        wrong = run_check("udp", target=server.target, send_hex="00", expect_hex="8181")
        assert server.payloads == [b"\xde\xad\xbe\xef\x00", b"\x00"]
    assert ok.success, ok.message
    assert gauges(ok)["netsentry_udp_response_bytes"] == len(reply)
    assert wrong.reason is Reason.UNEXPECTED_RESPONSE
    assert wrong.message == ("the reply of 13 bytes does not match a start of 8181: "
                             "\\x81\\x80\\x00\\x01\\x00\\x00\\x00\\xff rest")


def test_expect_is_a_regex_over_bytes() -> None:
    reply = b"\x00\x01caf\xc3\xa9\nline 2"
    with UdpServer(lambda data: [reply]) as server:
        results = {pattern: run_check("udp", target=server.target, expect=pattern).success
                   for pattern in (r"^\x00\x01", "café", r"\d$", "caf.\\n", r"(?s)é.line",
                                   r"é.line", "^caf")}
    assert results == {r"^\x00\x01": True, "café": True, r"\d$": True, "caf.\\n": False,
                       r"(?s)é.line": True, r"é.line": False, "^caf": False}


def test_no_send_sends_an_empty_datagram_and_any_reply_will_do() -> None:
    with UdpServer(lambda data: [b""]) as server:
        result = run_check("udp", target=server.target)
        assert server.payloads == [b""]
    assert result.success, result.message
    assert gauges(result)["netsentry_udp_response_bytes"] == 0


@pytest.mark.parametrize(("dropped", "count", "reason", "received"), [
    (0, 3, None, 1),
    (1, 3, None, 2),
    (2, 3, None, 3),
    (3, 3, Reason.TIMEOUT, 3),
    (4, 5, None, 5),
    (1, 1, Reason.TIMEOUT, 1),
])
def test_lost_tries_are_sent_again(dropped: int, count: int, reason: Reason | None,
                                   received: int) -> None:
    with UdpServer(drop_first=dropped) as server:
        result = run_check("udp", target=server.target, send="x", count=count, timeout="2s")
        assert server.received == received
    assert result.reason is reason, result.message
    assert details(result)["tries"] == f"{received} of {count}"


def test_ipv6_echo_and_refusal() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as closed:
        closed.bind(("::1", 0))
        closed_port = closed.getsockname()[1]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as echo:
        echo.bind(("::1", 0))
        echo.settimeout(5)
        target = f"[::1]:{echo.getsockname()[1]}"

        def answer() -> None:
            data, peer = echo.recvfrom(100)
            echo.sendto(b"v6 " + data, peer)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        ok = run_check("udp", target=target, family="ipv6",
                       send="hi", expect="^v6 hi$")
        thread.join(5)
    assert ok.success, ok.message
    assert details(ok)["address"] == target
    refused = run_check("udp", target=f"[::1]:{closed_port}", family="ipv6")
    assert refused.reason is Reason.REFUSED, refused.message


def test_the_service_name_is_the_udp_port() -> None:
    domain = socket.getservbyname("domain", "udp")
    check = make_check("udp", target="127.0.0.1:domain")
    assert (check.settings.target.host, check.settings.target.port) == ("127.0.0.1", domain)
    assert make_check("udp", target="[::1]:ntp").settings.target.port == 123


# --- hostile replies ---------------------------------------------------------------------------


def test_the_largest_datagram_arrives_whole() -> None:
    big = bytes(range(256)) * (MAX_PAYLOAD // 256) + b"z" * (MAX_PAYLOAD % 256)
    with UdpServer(lambda data: [big]) as server:
        result = run_check("udp", target=server.target, send="x", expect="z$")
    assert result.success, result.message
    assert gauges(result)["netsentry_udp_response_bytes"] == MAX_PAYLOAD
    assert "truncated" not in details(result)


def test_a_reply_larger_than_the_buffer_is_cut_and_says_so() -> None:
    async def exchange(port: int) -> tuple[bytes, bool]:
        with ConnectedUdp(Address(socket.AF_INET, ("127.0.0.1", port))) as peer:
            await peer.send(b"x")
            reply = await asyncio.wait_for(peer.receive(100), 5)
        return reply.data, reply.truncated

    with UdpServer(lambda data: [b"a" * 5000]) as server:
        data, truncated = asyncio.run(exchange(server.port))
    assert (data, truncated) == (b"a" * 100, True)


def test_garbage_fails_as_unexpected_never_as_an_internal_error() -> None:
    garbage = os.urandom(1500)
    with UdpServer(lambda data: [garbage]) as server:
        result = run_check("udp", target=server.target, expect="^OK")
    if garbage.startswith(b"OK"):  # pragma: no cover - one in 65536
        return
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert result.message == f"the reply of 1500 bytes does not match /^OK/: {excerpt(garbage)}"


def test_a_flood_of_replies_ends_each_run_at_the_first() -> None:
    with UdpServer(lambda data: [data] * 500) as server:
        results = run_checks(make_check("udp", target=server.target, send="flood",
                                        expect="^flood$"), 5)
        assert server.received == 5
    assert [r.reason for r in results] == [None] * 5
    assert [details(r)["tries"] for r in results] == ["1 of 3"] * 5


# --- the retry schedule ------------------------------------------------------------------------


def test_each_wait_is_twice_the_one_before_and_the_last_ends_at_the_end() -> None:
    assert retry_deadlines(10.0, 17.0, 3) == (11.0, 13.0, 17.0)
    assert retry_deadlines(0.0, 1.0, 1) == (1.0,)
    waits = retry_deadlines(0.0, 1023.0, 10)
    assert [b - a for a, b in zip((0.0, *waits), waits, strict=False)] == [
        2.0**i for i in range(10)]


# --- config errors -----------------------------------------------------------------------------

CHECK = '[[checks]]\nname = "u"\nkind = "udp"\ntarget = "127.0.0.1:7"\n'


def not_hex(key: str, text: str) -> list[str]:
    return [f"f.toml:5: checks[0] \"u\".{key}: '{text}' is not hex: write the bytes as pairs "
            'of hex digits, such as "0d0a" or "de ad be ef"']


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(CHECK + 'send_hex = "zz"\n', not_hex("send_hex", "zz"), id="not-hex"),
    pytest.param(CHECK + 'send_hex = "abc"\n', not_hex("send_hex", "abc"), id="odd-hex"),
    pytest.param(CHECK + 'expect_hex = "0x81"\n', not_hex("expect_hex", "0x81"),
                 id="expect-not-hex"),
    pytest.param(CHECK + 'send = "a"\nsend_hex = "00"\n',
                 ['f.toml:6: checks[0] "u".send_hex: set send (text) or send_hex (bytes), '
                  "not both"], id="send-and-send-hex"),
    pytest.param(CHECK + 'expect = "a"\nexpect_hex = "00"\n',
                 ['f.toml:6: checks[0] "u".expect_hex: set expect (a regular expression) or '
                  "expect_hex (a prefix), not both"], id="expect-and-expect-hex"),
    pytest.param(CHECK + "count = 0\n",
                 ['f.toml:5: checks[0] "u".count: must be 1 to 10 tries, got 0'], id="count-0"),
    pytest.param(CHECK + "count = 11\n",
                 ['f.toml:5: checks[0] "u".count: must be 1 to 10 tries, got 11'],
                 id="count-11"),
    pytest.param(CHECK + 'expect = "(unclosed"\n',
                 ['f.toml:5: checks[0] "u".expect: invalid regular expression: missing ), '
                  "unterminated subpattern at position 0"], id="bad-regex"),
    pytest.param(CHECK + 'send = "' + "x" * 65508 + '"\n',
                 ['f.toml:5: checks[0] "u".send: 65508 bytes is more than the 65507 a UDP '
                  "datagram carries; send less"], id="send-too-long"),
    pytest.param('[[checks]]\nname = "u"\nkind = "udp"\ntarget = "127.0.0.1"\n',
                 ["f.toml:4: checks[0] \"u\".target: invalid target '127.0.0.1': expected "
                  "host:port"], id="target-without-port"),
    pytest.param('[[checks]]\nname = "u"\nkind = "udp"\ntarget = "127.0.0.1:nosuchsvc"\n',
                 ["f.toml:4: checks[0] \"u\".target: unknown service name 'nosuchsvc' for "
                  "udp"], id="unknown-service"),
])
def test_config_errors_name_the_line_and_the_fix(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(text, "f.toml")
    assert caught.value.problems == expected


# --- netsentry probe udp -----------------------------------------------------------------------


def netsentry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_probe_prints_what_a_person_reads() -> None:
    with UdpServer(lambda data: [b"pong " + data]) as server:
        ok = netsentry("probe", "udp", server.target, "--send", "ping", "--expect", "^pong")
        hex_ok = netsentry("probe", "udp", server.target, "--send_hex", "1234",
                           "--expect_hex", "706f6e67")
        wrong = netsentry("probe", "udp", server.target, "--send", "ping", "--expect", "^ping")
        raw = netsentry("probe", "udp", server.target, "--send", "ping", "--metrics")
        assert server.payloads == [b"ping", b"\x12\x34", b"ping", b"ping"]
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].split() == ["check", "udp", server.target]
    assert lines[1].split() == ["result", "success"]
    assert [line.split()[:2] for line in lines[3:6]] == [
        ["address", server.target], ["tries", "1"], ["reply", "9"]]
    assert lines[6].split()[0] == "timestamps"  # kernel, or user space where it has none
    assert "reply" in ok.stdout and "9 bytes: pong ping" in ok.stdout
    assert any(re.fullmatch(r"udp response +9 B", line) for line in lines)  # in its unit
    assert any(re.fullmatch(r"udp response +[\d.]+ (ns|µs|ms|s)", line) for line in lines)
    assert raw.returncode == 0, raw.stdout + raw.stderr
    assert re.search(r"^netsentry_udp_response_bytes +9$", raw.stdout, re.M), raw.stdout
    assert hex_ok.returncode == 0, hex_ok.stdout + hex_ok.stderr
    assert wrong.returncode == 1
    assert ("FAILURE (unexpected_response): the reply of 9 bytes does not match /^ping/: "
            "pong ping") in wrong.stdout
