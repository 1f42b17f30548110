"""The tcp check's TCP_INFO: exported on Linux, absent (never zero) where it cannot be read."""

from __future__ import annotations

import socket

from exporter.checks.base import Run
from exporter.checks.connection import record_tcp_info
from exporter.net import Resolver
from tests.codecs.test_tcp_info import golden


class FakeSocket:
    """Answers getsockopt(TCP_INFO) with given bytes, or as a platform without it."""

    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        assert (level, option) == (socket.IPPROTO_TCP, socket.TCP_INFO)
        if self.raw is None:
            raise OSError(92, "Protocol not available")
        return self.raw[:size]


def recorded(raw: bytes | None) -> tuple[dict[str, float], list[tuple[str, str]]]:
    run = Run(0.0, Resolver(None))  # type: ignore[arg-type]
    record_tcp_info(run, FakeSocket(raw))
    return {spec.name: value for spec, _, value in run.observations}, run.details


def test_tcp_info_becomes_gauges() -> None:
    values, _ = recorded(golden())
    assert values == {"netsentry_tcp_rtt_seconds": 0.012345,
                      "netsentry_tcp_rttvar_seconds": 0.000678,
                      "netsentry_tcp_retransmits": 5, "netsentry_tcp_snd_cwnd": 10,
                      "netsentry_tcp_pmtu_bytes": 1500}


def test_no_tcp_info_means_no_series() -> None:
    assert recorded(None) == ({}, [])


def test_short_tcp_info_is_a_detail_not_a_value() -> None:
    values, details = recorded(golden()[:50])
    assert values == {}
    assert details == [("tcp_info", "tcp_info is 50 bytes, shorter than the 104 of every "
                                    "Linux since 2.6")]
