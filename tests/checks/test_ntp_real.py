"""The ntp check against a real chronyd on loopback (tests/support/chronyd.py): it serves this
host's own clock, so the true offset is zero; and the agent's /metrics with an ntp check in it."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.codecs import ntp as codec
from exporter.config.model import CheckConfig
from exporter.net.resolve import Address
from exporter.net.udp import TimedDatagram, timed_udp_exchange
from exporter.scheduler import first_start
from tests.codecs.test_ntp import assert_agree
from tests.support.agent import Agent
from tests.support.checks import gauges, make_check, run_checks
from tests.support.chronyd import Chronyd

STRATUM = 3
OFFSET = "netsentry_ntp_offset_seconds"
RTT = "netsentry_ntp_rtt_seconds"


@pytest.fixture(scope="module")
def chronyd() -> Iterator[Chronyd]:
    with Chronyd(stratum=STRATUM) as server:
        yield server


def ntp_check(**keys: Any) -> CheckConfig:
    return make_check("ntp", **keys)


def test_chronyd_same_clock(chronyd: Chronyd) -> None:
    results = run_checks(ntp_check(target=chronyd.address), 9)
    assert all(r.success for r in results), [r.message for r in results if not r.success]
    got = [gauges(r) for r in results]
    for v in got:
        assert v["netsentry_ntp_stratum"] == STRATUM
        assert v["netsentry_ntp_leap"] == 0
        assert v["netsentry_ntp_reference_info127.127.1.1"] == 1  # chronyd's local reference
        assert v["netsentry_ntp_sanity"] == 1
        assert v[RTT] > 0
    # Same clock: the true offset is zero. The run with the least delay is the one least
    # disturbed by whatever else this machine does (as the check's own `samples` choose).
    best = min(got, key=lambda v: v[RTT])
    assert abs(best[OFFSET]) < 10e-6, best
    assert abs(statistics.median(v[OFFSET] for v in got)) < 50e-6
    assert dict(results[0].details)["timestamps"] == "kernel (SO_TIMESTAMPING)"


def test_chronyd_two_samples(chronyd: Chronyd) -> None:
    started = time.monotonic()
    (result,) = run_checks(ntp_check(target=chronyd.address, samples=2, timeout="3s"), 1)
    assert result.success, result
    assert time.monotonic() - started >= 2.0  # the second request waited its 2 s
    assert dict(result.details)["samples"] == "2 of 2 answered; the least delay used"


def test_ntplib_decodes_chronyds_replies_as_we_do(chronyd: Chronyd) -> None:
    async def exchange(transmit: int) -> TimedDatagram:
        address = Address(2, ("127.0.0.1", chronyd.port))  # AF_INET
        return await timed_udp_exchange(address, codec.build_request(transmit),
                                            lambda data: True)

    for _ in range(3):
        # ntplib takes T1 from the echoed origin: for it, the request carries the real time.
        transmit = codec.from_unix_ns(time.time_ns())
        reply = asyncio.run(exchange(transmit))
        assert_agree(reply.data, transmit, codec.from_unix_ns(reply.received))


def test_user_space_timestamps_against_chronyd(chronyd: Chronyd) -> None:
    """Where the kernel gives no timestamps, both ends are read in user space."""
    async def go() -> list[codec.Sample]:
        address = Address(2, ("127.0.0.1", chronyd.port))
        samples = []
        for _ in range(5):
            transmit = secrets.randbits(64) | 1
            reply = await timed_udp_exchange(address, codec.build_request(transmit),
                                                 lambda data: True, kernel_timestamps=False)
            assert not reply.kernel
            assert reply.sent < reply.received
            samples.append(codec.sample(codec.read_reply(reply.data, transmit), reply.sent,
                                        reply.received))
        return samples

    samples = asyncio.run(go())
    assert all(s.delay > 0 for s in samples)
    assert abs(min(samples, key=lambda s: s.delay).offset) < 1e-3


def test_agent_exports_the_ntp_metrics(chronyd: Chronyd, tmp_path: Path) -> None:
    # A check name whose place in its 15 s interval comes a few seconds from now, so that the
    # first run is soon after the agent starts.
    now = time.time()
    name = next(f"ntp-{i}" for i in range(10_000)
                if 4 < first_start(f"ntp-{i}", 15.0, now) - now < 6)
    path = tmp_path / "ntp.toml"
    path.write_text(f'[[checks]]\nname = "{name}"\nkind = "ntp"\ntarget = "{chronyd.address}"\n'
                    'interval = "15s"\ntimeout = "2s"\n')
    with Agent(path) as agent:
        agent.wait_for(lambda: agent.value("netsentry_check_success", check=name, kind="ntp")
                       is not None, timeout=30, what="the first ntp run")
        labels = {"check": name, "kind": "ntp"}
        assert agent.value("netsentry_check_success", **labels) == 1
        assert agent.value("netsentry_ntp_stratum", **labels) == STRATUM
        assert agent.value("netsentry_ntp_sanity", **labels) == 1
        assert agent.value("netsentry_ntp_reference_info", refid="127.127.1.1", **labels) == 1
        assert abs(agent.value(OFFSET, **labels) or 1.0) < 1e-3
        assert agent.value("netsentry_ntp_ignored_replies_total", **labels) == 0
        assert agent.value("netsentry_check_failures_total", reason="kiss_of_death",
                           **labels) == 0
