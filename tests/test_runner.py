"""The runner: deadlines, the closed reason set, and the one catch-all."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from exporter.checks import KINDS
from exporter.checks.base import Kind, Run
from exporter.config.model import CheckConfig
from exporter.errors import CheckError, Reason
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner, classify
from exporter.store import Result
from tests import virtualtime
from tests.support.servers import AcceptServer, closed_port
from tests.virtualtime import VirtualClock


@dataclass(frozen=True, slots=True)
class Nothing:
    pass


def fake_kind(name: str, behaviour: Callable[[Run], Awaitable[None]]) -> Kind[Nothing]:
    async def check(settings: Nothing, run: Run) -> None:
        await behaviour(run)

    return Kind(name, Nothing, check, (Reason.TIMEOUT, Reason.INTERNAL_ERROR),
                KINDS["tcp"].specs[:1])


async def boom(run: Run) -> None:
    run.gauge(KINDS["tcp"].specs[0], 1.0)
    raise ValueError("something nobody foresaw")


SLEPT: list[str] = []


async def sleep(run: Run) -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        SLEPT.append("cancelled")
        raise
    SLEPT.append("finished")


async def diagnose(run: Run) -> None:
    raise CheckError(Reason.UNEXPECTED_RESPONSE, "banner did not match")


FAKES = {k.name: k for k in (fake_kind("raising", boom), fake_kind("sleepy", sleep),
                             fake_kind("diagnosing", diagnose))}


def run_once(kind: str, timeout: float = 1.0, settings: object = None,
             clock: VirtualClock | None = None) -> Result:
    """One run of a check of `kind`; on virtual time when `clock` is given (for checks that
    only wait on the loop's timers)."""
    check = CheckConfig("c", kind, "", 10.0, timeout, settings or Nothing())

    async def go() -> Result:
        pool = BlockingPool(2)
        try:
            return await Runner(Resolver(pool), {**KINDS, **FAKES}).run(check)
        finally:
            pool.close()

    return asyncio.run(go()) if clock is None else virtualtime.run(go, clock)


def test_unexpected_exception_is_internal_error_for_that_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        result = run_once("raising")
    assert result.reason is Reason.INTERNAL_ERROR
    assert result.message == "ValueError: something nobody foresaw"
    # What was observed before the failure is kept.
    assert len(result.observations) == 1
    assert "Traceback" in caplog.text and "something nobody foresaw" in caplog.text


def test_deadline_is_hard() -> None:
    """A check that would take 30 s ends at its 0.3 s deadline, cancelled (on virtual time:
    the loop's clock shows exactly when the run ended)."""
    SLEPT.clear()
    clock = VirtualClock()
    started = clock.monotonic()
    result = run_once("sleepy", timeout=0.3, clock=clock)
    assert clock.monotonic() - started == pytest.approx(0.3, abs=1e-9)
    assert SLEPT == ["cancelled"]
    assert result.reason is Reason.TIMEOUT
    assert result.message == "no result within the 0.3s timeout"


def test_check_error_keeps_its_reason() -> None:
    result = run_once("diagnosing")
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert result.message == "banner did not match"


def test_tcp_success_and_refused() -> None:
    from exporter.checks.tcp import TcpSettings
    from exporter.config.targets import HostPort

    with AcceptServer() as server:
        ok = run_once("tcp", settings=TcpSettings(HostPort("127.0.0.1", server.port)))
    assert ok.success
    assert {spec.name for spec, _, _ in ok.observations} == {
        "netsentry_dns_lookup_seconds", "netsentry_tcp_connect_seconds",
        "netsentry_tcp_rtt_seconds", "netsentry_tcp_rttvar_seconds", "netsentry_tcp_retransmits",
        "netsentry_tcp_snd_cwnd", "netsentry_tcp_pmtu_bytes"}
    refused = run_once("tcp", settings=TcpSettings(HostPort("127.0.0.1", closed_port())))
    assert refused.reason is Reason.REFUSED


def test_tcp_name_from_etc_hosts() -> None:
    from exporter.checks.tcp import TcpSettings
    from exporter.config.targets import HostPort

    with AcceptServer() as server:
        ok = run_once("tcp", settings=TcpSettings(HostPort("localhost", server.port), "ipv4"))
    assert ok.success, ok
    assert ("address", f"127.0.0.1:{server.port}") in ok.details


@pytest.mark.parametrize(
    ("exc", "reason", "message"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Reason.NXDOMAIN,
         "EAI_NONAME: Name or service not known"),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
         Reason.RESOLVE_ERROR, "EAI_AGAIN: Temporary failure in name resolution"),
        (ConnectionRefusedError(111, "Connection refused"), Reason.REFUSED, "connection refused"),
        (OSError(101, "Network is unreachable"), Reason.NETWORK_ERROR, "network unreachable"),
        (ConnectionResetError(104, "reset"), Reason.NETWORK_ERROR, "connection reset by peer"),
        (TimeoutError(), Reason.TIMEOUT, "timed out"),
        (ssl.SSLError(1, "bad handshake"), Reason.TLS_ERROR, "bad handshake"),
        (KeyError("x"), Reason.INTERNAL_ERROR, "KeyError: 'x'"),
    ],
)
def test_classify(exc: BaseException, reason: Reason, message: str) -> None:
    assert classify(exc) == (reason, message)


def test_results_of_one_check_share_their_series_while_the_gauges_stay() -> None:
    from exporter import metrics

    labels = iter([("a",), ("a",), ("b",)])

    async def gauges(run: Run) -> None:
        run.gauge(metrics.TCP_CONNECT, time.perf_counter())
        run.gauge(metrics.HTTP_PHASE, 0.5, *next(labels))

    kinds = {**KINDS, "gauges": fake_kind("gauges", gauges)}
    check = CheckConfig("c", "gauges", "", 10.0, 1.0, Nothing())

    async def go() -> list[Result]:
        pool = BlockingPool(2)
        runner, results = Runner(Resolver(pool), kinds), []
        try:
            previous = None
            for _ in range(3):
                previous = await runner.run(check, previous=previous)
                results.append(previous)
        finally:
            pool.close()
        return results

    first, second, third = asyncio.run(go())
    assert second.series is first.series  # the same gauges: one tuple for both
    assert second.values != first.values  # their values are each run's own
    assert third.series != first.series and third.series[1] == (metrics.HTTP_PHASE, ("b",))
