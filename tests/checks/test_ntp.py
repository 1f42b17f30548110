"""The ntp check against fake servers: every rule of a reply, Kiss-o'-Death and its memory,
samples, falsetickers among several servers, the deadline held, and config errors with their
lines. No test may see an exported |offset| over a second from a reply it should refuse:
every such reply carries times an hour off (tests/support/fakentp.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from exporter.checks.base import UNTIL_RELOAD
from exporter.codecs import ntp as codec
from exporter.config.load import load_text
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError, Reason
from exporter.net.resolve import Address
from exporter.net.udp import TimedDatagram, timed_udp_exchange
from exporter.store import Result, Store
from tests.support.agent import ROOT
from tests.support.checks import counters, gauges, make_check, run_check, sample
from tests.support.fakentp import BAD_OFFSET, FakeNtp

OFFSET = "netsentry_ntp_offset_seconds"
SANITY = "netsentry_ntp_sanity"
IGNORED = "netsentry_ntp_ignored_replies_total"
# What a valid reply records, all of it.
RECORDED = {OFFSET, "netsentry_ntp_rtt_seconds", "netsentry_ntp_stratum", "netsentry_ntp_leap",
            "netsentry_ntp_root_delay_seconds", "netsentry_ntp_root_dispersion_seconds",
            "netsentry_ntp_root_distance_seconds", "netsentry_ntp_precision_seconds",
            "netsentry_ntp_reference_info127.0.0.1", SANITY}


def ntp_check(**keys: Any) -> CheckConfig:
    return make_check("ntp", name="n", **keys)


def run(check: CheckConfig, memory: dict[str, Any] | None = None,
        valid_offset: float = 1.0) -> Result:
    """Run the check once; fail if it exports an offset over `valid_offset` seconds (only
    valid replies a test made that far off may give one)."""
    result = run_check(check, memory=memory)
    offset = sample(result, OFFSET)
    assert offset is None or abs(offset) < valid_offset, "a refused reply's offset got out"
    return result


# --- a valid reply ----------------------------------------------------------------------------


def test_answer() -> None:
    with FakeNtp("answer", offset=0.05, stratum=2, root_delay=0.0005, root_dispersion=0.001,
                 precision=-20) as server:
        result = run(ntp_check(target=server.address))
        assert len(server.requests) == 1
    assert result.success, result
    got = gauges(result)
    assert set(got) == RECORDED
    assert got[OFFSET] == pytest.approx(0.05, abs=0.02)
    assert got["netsentry_ntp_rtt_seconds"] > 0
    assert got["netsentry_ntp_stratum"] == 2
    assert got["netsentry_ntp_leap"] == 0
    assert got["netsentry_ntp_root_delay_seconds"] == pytest.approx(0.0005, abs=2**-16)
    assert got["netsentry_ntp_root_dispersion_seconds"] == pytest.approx(0.001, abs=2**-16)
    assert got["netsentry_ntp_precision_seconds"] == 2.0**-20
    distance = got["netsentry_ntp_root_distance_seconds"]
    assert distance >= 0.0005 / 2 + 0.001 + 2.0**-20
    assert got[SANITY] == 1
    assert counters(result) == {IGNORED: 0}
    details = dict(result.details)
    for name in ("offset", "delay", "stratum", "leap", "refid", "root distance", "verdict"):
        assert name in details
    assert details["refid"] == "127.0.0.1"
    assert details["leap"] == "0 (none)"
    assert details["verdict"].startswith("sane")


def test_service_name_and_default_port_parse() -> None:
    check = ntp_check(target="ntp.test")
    assert (check.settings.target.host, check.settings.target.port) == ("ntp.test", 123)
    assert ntp_check(target="ntp.test:ntp").settings.target.port == 123
    assert ntp_check(target="[::1]:1123").settings.target.host == "::1"
    assert ntp_check(target="::1").settings.target.port == 123
    assert ntp_check(target="[::1]").settings.target.port == 123


def test_offset_beyond_max_offset_is_exported_and_fails() -> None:
    with FakeNtp("answer", offset=0.5) as server:
        result = run(ntp_check(target=server.address, max_offset=0.1))
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert "beyond ±max_offset 0.1 s" in result.message
    got = gauges(result)
    assert got[OFFSET] == pytest.approx(0.5, abs=0.02)  # a valid reply: its offset is news
    assert got[SANITY] == 0


def test_root_distance_beyond_max_root_distance() -> None:
    with FakeNtp("answer", root_dispersion=2.0) as server:
        result = run(ntp_check(target=server.address, max_root_distance="500ms"))
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert "over max_root_distance 0.5 s" in result.message
    assert gauges(result)[SANITY] == 0


# --- replies to refuse --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("mode3", "mode 3, not 4 (server)"),
        ("zero_transmit", "the transmit timestamp is zero"),
        ("wrong_origin", "the origin timestamp does not echo the request's transmit timestamp"),
        ("wrong_port", "not the server"),
        ("short", "20 bytes, shorter than the 48-byte NTP header"),
        ("receive_after_transmit", "the server's receive time is later than its transmit time"),
    ],
)
def test_bogus_replies_are_ignored_until_the_deadline(behaviour: str, why: str) -> None:
    with FakeNtp(behaviour) as server:
        result = run(ntp_check(target=server.address, timeout="500ms"))
        # One request, one bogus reply, and nothing after: the check kept waiting for a
        # valid reply until its deadline, not asking again.
        assert (len(server.requests), server.sent) == (1, 1)
    assert result.reason is Reason.MALFORMED_RESPONSE, result
    assert result.message.startswith(f"no valid reply from {server.address}; 1 datagram(s) "
                                     "ignored, the last: ")
    assert why in result.message
    assert counters(result) == {IGNORED: 1}
    assert gauges(result) == {SANITY: 0}


def test_bogus_then_valid_is_accepted() -> None:
    with FakeNtp("bogus_then_valid") as server:
        result = run(ntp_check(target=server.address))
        assert server.sent == 3
    assert result.success, result
    assert abs(gauges(result)[OFFSET]) < 0.02  # the valid reply's, not the spoofer's hour
    assert counters(result) == {IGNORED: 2}


def test_silence_times_out_within_the_deadline() -> None:
    with FakeNtp("silent") as server:
        result = run(ntp_check(target=server.address, timeout="400ms"))
        assert len(server.requests) == 1  # asked once, then waited
    # The check's message, not the runner's "no result within the 0.4s timeout": the check's
    # own deadline ended the wait.
    assert (result.reason, result.message) == (Reason.TIMEOUT, f"no reply from {server.address}")
    assert gauges(result) == {SANITY: 0}


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("leap3", "the server is not synchronized (leap 3, stratum 2)"),
        ("stratum16", "the server is not synchronized (leap 0, stratum 16)"),
        ("stratum0", "the server is not synchronized (leap 0, stratum 0)"),
    ],
)
def test_unsynchronized(behaviour: str, message: str) -> None:
    with FakeNtp(behaviour) as server:
        result = run(ntp_check(target=server.address))
    assert (result.reason, result.message) == (Reason.UNSYNCHRONIZED,
                                               f"{server.address}: {message}")
    assert gauges(result) == {SANITY: 0}  # nothing from the reply itself


# --- Kiss-o'-Death ------------------------------------------------------------------------------


def test_kiss_rate_backs_off_for_longer_each_time() -> None:
    memory: dict[str, Any] = {}
    with FakeNtp("kiss", code="RATE") as server:
        check = ntp_check(target=server.address)
        first = run(check, memory)
        assert first.reason is Reason.KISS_OF_DEATH
        assert first.message == (f"{server.address}: Kiss-o'-Death RATE; skipping it for the "
                                 "next 1 run(s)")
        assert counters(first) == {"netsentry_ntp_kiss_of_death_totalRATE": 1, IGNORED: 0}
        assert gauges(first) == {SANITY: 0}
        skipped = run(check, memory)
        assert skipped.reason is Reason.KISS_OF_DEATH
        assert skipped.message == f"{server.address} sent RATE: backing off, not asked this run"
        assert len(server.requests) == 1  # not asked
        second = run(check, memory)
        assert len(server.requests) == 2
        assert second.message.endswith("skipping it for the next 3 run(s)")
        skipped_again = run(check, memory)
        assert skipped_again.message.endswith("not asked this run or the next 2")
        for _ in range(2):
            run(check, memory)
        assert len(server.requests) == 2
        server.behaviour = "answer"  # the server relents
        answered = run(check, memory)
        assert answered.success, answered
        assert len(server.requests) == 3
        again = run(check, memory)
        assert again.success and len(server.requests) == 4  # back to every run


@pytest.mark.parametrize("code", ["DENY", "RSTR"])
def test_kiss_deny_and_rstr_stop_asking_until_reload(code: str) -> None:
    with FakeNtp("kiss", code=code) as server:
        check = ntp_check(target=server.address)
        store = Store()
        store.load((check,))
        memory = store.states["n"].memory
        first = run(check, memory)
        assert first.reason is Reason.KISS_OF_DEATH
        assert counters(first)[f"netsentry_ntp_kiss_of_death_total{code}"] == 1
        for _ in range(3):
            later = run(check, memory)
            assert later.reason is Reason.KISS_OF_DEATH
            assert later.message == (f"{server.address} sent {code} (access denied): not asked "
                                     "again until the config is reloaded")
            assert counters(later) == {}  # nothing sent, nothing counted
        assert len(server.requests) == 1
        store.load((ntp_check(target=server.address),))  # a reload, the check unchanged
        assert UNTIL_RELOAD not in store.states["n"].memory
        server.behaviour = "answer"
        after = run(check, store.states["n"].memory)
        assert after.success, after
        assert len(server.requests) == 2


def test_other_kiss_codes_fail_but_do_not_back_off() -> None:
    memory: dict[str, Any] = {}
    with FakeNtp("kiss", code="XYZW") as server:
        check = ntp_check(target=server.address)
        first = run(check, memory)
        second = run(check, memory)
        assert len(server.requests) == 2
    assert first.reason is second.reason is Reason.KISS_OF_DEATH
    assert first.message == f"{server.address}: Kiss-o'-Death XYZW (OTHER)"
    assert counters(first)["netsentry_ntp_kiss_of_death_totalOTHER"] == 1


# --- samples ------------------------------------------------------------------------------------


def test_samples_are_two_seconds_apart_and_the_least_delay_wins() -> None:
    # The first and last requests are held up a second on their way in: their offsets are
    # +0.5 s and their delays over a second. The middle one is prompt.
    with FakeNtp("answer", delays=(1.0, 0.0, 1.0)) as server:
        result = run(ntp_check(target=server.address, samples=3, timeout="6s"))
        arrivals = list(server.requests)
    assert result.success, result
    assert len(arrivals) == 3
    assert all(later - earlier >= 1.95 for earlier, later in itertools.pairwise(arrivals))
    got = gauges(result)
    assert got["netsentry_ntp_rtt_seconds"] < 1.0
    assert abs(got[OFFSET]) < 0.25
    assert dict(result.details)["samples"] == "3 of 3 answered; the least delay used"


# --- several servers ----------------------------------------------------------------------------


def test_one_server_an_hour_off_is_a_falseticker() -> None:
    with FakeNtp(offset=0.0) as a, FakeNtp(offset=0.0005) as b, FakeNtp(offset=3600.0) as c:
        result = run(ntp_check(servers=[a.address, b.address, c.address]))
    assert result.success, result
    got = gauges(result)
    assert got[f"netsentry_ntp_falseticker{a.address}"] == 0
    assert got[f"netsentry_ntp_falseticker{b.address}"] == 0
    assert got[f"netsentry_ntp_falseticker{c.address}"] == 1
    assert abs(got[OFFSET]) < 0.02
    assert got[SANITY] == 1
    details = dict(result.details)
    assert details[f"server {c.address}"].endswith(": falseticker")
    assert details["truechimers"].startswith("2 of 3 servers")


def test_a_majority_an_hour_off_pages() -> None:
    # Then it is this host's clock that is off, as far as anyone can tell: that is news.
    with FakeNtp(offset=0.0) as a, FakeNtp(offset=3600.0) as b, FakeNtp(offset=3600.0) as c:
        result = run(ntp_check(servers=[a.address, b.address, c.address]),
                        valid_offset=BAD_OFFSET + 1)
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    got = gauges(result)
    assert got[f"netsentry_ntp_falseticker{a.address}"] == 1
    assert got[OFFSET] == pytest.approx(3600.0, abs=0.02)
    assert got[SANITY] == 0


def test_two_servers_that_disagree_give_no_offset() -> None:
    with FakeNtp(offset=0.0) as a, FakeNtp(offset=60.0) as b:
        result = run(ntp_check(servers=[a.address, b.address]))
    assert (result.reason, result.message) == (
        Reason.UNEXPECTED_RESPONSE, "no majority of the 2 servers agrees on the time")
    assert gauges(result) == {SANITY: 0}


def test_a_silent_server_among_three_is_no_matter() -> None:
    with FakeNtp() as a, FakeNtp("silent") as b, FakeNtp(offset=0.0005) as c:
        result = run(ntp_check(servers=[a.address, b.address, c.address], timeout="500ms"))
        # Each asked once, all at once: the silent one was given up on at the deadline,
        # which a success means came before the run's (its end would be "timed out").
        assert [len(s.requests) for s in (a, b, c)] == [1, 1, 1]
    assert result.success, result
    assert f"netsentry_ntp_falseticker{b.address}" not in gauges(result)
    assert dict(result.details)[f"server {b.address}"] == f"timeout: no reply from {b.address}"


def test_two_silent_servers_of_three_fail_the_check() -> None:
    with FakeNtp("silent") as a, FakeNtp() as b, FakeNtp("silent") as c:
        result = run(ntp_check(servers=[a.address, b.address, c.address], timeout="300ms"))
    assert (result.reason, result.message) == (Reason.TIMEOUT, f"no reply from {a.address}")
    assert OFFSET not in gauges(result)


def test_a_kiss_from_one_server_is_counted_the_others_measured() -> None:
    with FakeNtp() as a, FakeNtp("kiss", code="RATE") as b, FakeNtp() as c:
        result = run(ntp_check(servers=[a.address, b.address, c.address]))
    assert result.success, result
    assert counters(result)["netsentry_ntp_kiss_of_death_totalRATE"] == 1
    assert f"netsentry_ntp_falseticker{b.address}" not in gauges(result)


# --- config -------------------------------------------------------------------------------------

CONFIG_ERRORS = [
    ("servers = []", "servers: the server list is empty; give one or more host[:port]"),
    ('servers = ["a", "a:123"]', "servers: 'a:123' is listed twice"),
    ('servers = [1]', "servers: expected host[:port] strings, got 1"),
    ("samples = 0", "samples: must be 1 or more, got 0"),
    ("max_offset = -1", "max_offset: must be more than 0 seconds, got -1"),
    ('max_offset = "-1s"', "max_offset: invalid duration '-1s'; use e.g. 500ms, 15s, 1m or 1h30m"),
    ("max_root_distance = 0", "max_root_distance: must be more than 0 seconds, got 0"),
    ('interval = "10s"', "interval: 10s is too often for an NTP server: at least 15s "
                         "(RFC 4330 §10)"),
    ('samples = 3\ntimeout = "3s"', "samples: 3 samples 2s apart take 4s, but the timeout is "
                                    "3s: raise the timeout or take fewer samples"),
    ('target = "a:123:4"', "target: invalid target 'a:123:4': not an IPv6 address; write "
                           "host, host:port or [IPv6]:port"),
    ('target = "a:0"', "target: port 0 is out of range 1-65535"),
]


@pytest.mark.parametrize(("line", "message"), CONFIG_ERRORS)
def test_config_errors(line: str, message: str) -> None:
    target = "" if "servers" in line or "target" in line else 'target = "ntp.test"\n'
    text = f'[[checks]]\nname = "time"\nkind = "ntp"\n{target}{line}\n'
    with pytest.raises(ConfigError) as raised:
        load_text(text, "ntp.toml")
    key = message.partition(":")[0]
    line_number = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(key))
    assert raised.value.problems == [f'ntp.toml:{line_number}: checks[0] "time".{message}']


def test_target_or_servers_but_one_of_them() -> None:
    both = '[[checks]]\nname = "t"\nkind = "ntp"\ntarget = "a"\nservers = ["b"]\n'
    neither = '[[checks]]\nname = "t"\nkind = "ntp"\n'
    with pytest.raises(ConfigError) as raised:
        load_text(both, "ntp.toml")
    assert raised.value.problems == ['ntp.toml:5: checks[0] "t".servers: set `target` (one '
                                     'server) or `servers` (several), not both']
    with pytest.raises(ConfigError) as raised:
        load_text(neither, "ntp.toml")
    assert raised.value.problems == ['ntp.toml:1: checks[0] "t".target: missing: set `target` '
                                     'to one server (host[:port]), or `servers` to several']


def test_an_interval_from_the_defaults_is_checked_too() -> None:
    text = ('[defaults]\ninterval = "5s"\ntimeout = "1s"\n\n'
            '[[checks]]\nname = "t"\nkind = "ntp"\ntarget = "a"\n')
    with pytest.raises(ConfigError) as raised:
        load_text(text, "ntp.toml")
    assert raised.value.problems == ['ntp.toml:5: checks[0] "t".interval: 5s is too often for '
                                     'an NTP server: at least 15s (RFC 4330 §10)']


# --- netsentry probe ----------------------------------------------------------------------------


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", "probe", "ntp", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_probe_prints_the_measurement_and_the_verdict() -> None:
    with FakeNtp("answer", offset=0.002) as server:
        done = probe(server.address)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines()
                 if line and not line.startswith(("root distance", "server time")))
    assert lines["result"] == "success"
    assert lines["stratum"] == "2"
    assert lines["refid"] == "127.0.0.1"
    assert lines["verdict"].startswith("sane")
    for word in ("offset", "delay", "leap", "root distance", "verdict"):
        assert f"\n{word} " in "\n" + done.stdout


def test_probe_fails_on_a_kiss_and_on_bad_options() -> None:
    with FakeNtp("kiss", code="DENY") as server:
        done = probe(server.address, "--timeout", "1s")
    assert done.returncode == 1
    assert "FAILURE (kiss_of_death)" in done.stdout
    bad = probe("127.0.0.1:1", "--samples", "4")
    assert bad.returncode == 2
    assert "samples: 4 samples 2s apart take 6s, but the timeout is 5s" in bad.stderr


# --- the transport: timed_udp_exchange -------------------------------------------------------


def exchange(server: FakeNtp, **options: Any) -> tuple[TimedDatagram, list[Any]]:
    foreign: list[Any] = []

    async def go() -> TimedDatagram:
        transmit = 0x0123456789ABCDEF

        def accept(data: bytes) -> bool:
            try:
                codec.read_reply(data, transmit)
            except codec.NtpCodecError:
                return False
            return True

        return await asyncio.wait_for(timed_udp_exchange(
            Address(socket.AF_INET, ("127.0.0.1", server.port)),
            codec.build_request(transmit), accept, foreign=foreign.append, **options), 1)

    return asyncio.run(go()), foreign


@pytest.mark.parametrize("kernel", [True, False])
def test_timed_exchange_times(kernel: bool) -> None:
    with FakeNtp() as server:
        reply, foreign = exchange(server, kernel_timestamps=kernel)
    # Linux has SO_TIMESTAMPING; asked not to use it, both times are read in user space.
    assert reply.kernel is (kernel and sys.platform == "linux")
    assert 0 < reply.sent <= reply.received
    assert abs(reply.sent - time.time_ns()) < 60 * 10**9  # wall-clock ns, not monotonic
    assert (reply.ignored, foreign) == (0, [])


def test_timed_exchange_reports_foreign_datagrams() -> None:
    with FakeNtp("bogus_then_valid") as server:
        reply, foreign = exchange(server)
    assert reply.ignored == 2  # the spoofed one (foreign) and the wrong origin (not accepted)
    assert len(foreign) == 1 and foreign[0][0] == "127.0.0.1" and foreign[0][1] != server.port


def test_timed_exchange_closes_its_socket_when_cancelled() -> None:
    fds = len(os.listdir("/proc/self/fd"))
    with FakeNtp("silent") as server:
        for _ in range(5):
            with pytest.raises(asyncio.TimeoutError):
                asyncio.run(asyncio.wait_for(timed_udp_exchange(
                    Address(socket.AF_INET, ("127.0.0.1", server.port)),
                    codec.build_request(1), lambda data: True), 0.05))
        assert len(os.listdir("/proc/self/fd")) == fds + 3  # the server's own sockets
