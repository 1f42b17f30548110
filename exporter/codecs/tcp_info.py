"""Linux's `struct tcp_info` (getsockopt TCP_INFO, include/uapi/linux/tcp.h), decoded.

The kernel copies min(requested, its own size) bytes, and the struct only ever grows at the
end, so any kernel since 2.6 gives at least the first 104 bytes (up to tcpi_total_retrans);
the fields decoded here all lie within them. Times arrive in microseconds.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# Ask for more than any kernel has, so newer kernels never cut the fields we read.
REQUEST_SIZE = 256
MIN_SIZE = 104

# 8 single-byte fields (state ... wscale/flags), then 24 __u32 (tcpi_rto ... tcpi_total_retrans).
_LAYOUT = struct.Struct("=8B24I")
assert _LAYOUT.size == MIN_SIZE

TCP_STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
              "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")


class TcpInfoError(Exception):
    """Bytes that are not a tcp_info struct."""


class TcpInfo(NamedTuple):
    """The fields netsentry reads. A named tuple, not a frozen dataclass: one is made per
    run of every connection check, and a tuple is made in a fifth of the time."""

    state: str  # "ESTABLISHED", ...
    retransmits: int  # tcpi_retransmits: RTO timeouts since the last ACK that moved on
    rto_seconds: float
    snd_mss: int
    rcv_mss: int
    unacked: int
    lost: int
    pmtu_bytes: int
    rtt_seconds: float  # smoothed RTT (RFC 6298 SRTT)
    rttvar_seconds: float  # RFC 6298 RTTVAR
    snd_ssthresh: int
    snd_cwnd: int  # congestion window, in segments
    advmss: int
    reordering: int
    total_retrans: int  # segments retransmitted over the connection's life


def parse(data: bytes) -> TcpInfo:
    """Decode what getsockopt(IPPROTO_TCP, TCP_INFO, REQUEST_SIZE) returned."""
    if len(data) < MIN_SIZE:
        raise TcpInfoError(f"tcp_info is {len(data)} bytes, shorter than the {MIN_SIZE} of "
                           "every Linux since 2.6")
    (state, _ca_state, retransmits, _probes, _backoff, _options, _wscale, _flags,
     rto, _ato, snd_mss, rcv_mss, unacked, _sacked, lost, _retrans, _fackets,
     _last_data_sent, _last_ack_sent, _last_data_recv, _last_ack_recv,
     pmtu, _rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss, reordering,
     _rcv_rtt, _rcv_space, total_retrans) = _LAYOUT.unpack_from(data)
    return TcpInfo(TCP_STATES[state] if 0 < state < len(TCP_STATES) else f"STATE_{state}",
                   retransmits, rto / 1e6, snd_mss, rcv_mss, unacked, lost, pmtu, rtt / 1e6,
                   rttvar / 1e6, snd_ssthresh, snd_cwnd, advmss, reordering, total_retrans)
