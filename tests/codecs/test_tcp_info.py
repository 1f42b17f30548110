"""The TCP_INFO codec: golden bytes, every short prefix, random bytes, and a real socket."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.codecs.tcp_info import MIN_SIZE, REQUEST_SIZE, TcpInfo, TcpInfoError, parse


def golden(**changes: int) -> bytes:
    """A tcp_info laid out as include/uapi/linux/tcp.h has it, with recognisable values."""
    u8 = dict(state=1, ca_state=0, retransmits=2, probes=0, backoff=0, options=7, wscale=0x77,
              flags=0)
    u32 = dict(rto=204000, ato=40000, snd_mss=1448, rcv_mss=536, unacked=3, sacked=0, lost=1,
               retrans=0, fackets=0, last_data_sent=10, last_ack_sent=0, last_data_recv=10,
               last_ack_recv=10, pmtu=1500, rcv_ssthresh=64088, rtt=12345, rttvar=678,
               snd_ssthresh=0x7FFFFFFF, snd_cwnd=10, advmss=1448, reordering=3, rcv_rtt=0,
               rcv_space=14600, total_retrans=5)
    for key, value in changes.items():
        (u8 if key in u8 else u32)[key] = value
    head = struct.pack("=8B", *u8.values()) + struct.pack("=24I", *u32.values())
    # Newer kernels append fields (pacing rates, bytes acked, ...): they must not matter.
    return head + bytes(range(40))


def test_golden_packet() -> None:
    assert parse(golden()) == TcpInfo(
        state="ESTABLISHED", retransmits=2, rto_seconds=0.204, snd_mss=1448, rcv_mss=536,
        unacked=3, lost=1, pmtu_bytes=1500, rtt_seconds=0.012345, rttvar_seconds=0.000678,
        snd_ssthresh=0x7FFFFFFF, snd_cwnd=10, advmss=1448, reordering=3, total_retrans=5)


def test_unknown_state_is_named_by_number() -> None:
    assert parse(golden(state=99)).state == "STATE_99"
    assert parse(golden(state=0)).state == "STATE_0"


def test_extreme_values() -> None:
    info = parse(golden(rtt=0xFFFFFFFF, snd_cwnd=0xFFFFFFFF))
    assert info.rtt_seconds == 0xFFFFFFFF / 1e6 and info.snd_cwnd == 0xFFFFFFFF


@pytest.mark.parametrize("size", range(MIN_SIZE))
def test_every_short_prefix_is_refused(size: int) -> None:
    with pytest.raises(TcpInfoError, match=f"tcp_info is {size} bytes"):
        parse(golden()[:size])


@given(st.binary(max_size=512))
def test_random_bytes_give_a_tcp_info_or_the_codec_error(data: bytes) -> None:
    try:
        info = parse(data)
    except TcpInfoError:
        assert len(data) < MIN_SIZE
    else:
        assert info.rtt_seconds >= 0 and info.pmtu_bytes >= 0


def test_a_real_loopback_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        raw = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, REQUEST_SIZE)
    info = parse(raw)
    assert info.state == "ESTABLISHED"
    assert info.snd_cwnd > 0 and info.pmtu_bytes > 0
    assert 0 <= info.rtt_seconds < 1
