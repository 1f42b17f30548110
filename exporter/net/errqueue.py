"""A socket's error queue (Linux `IP_RECVERR` / `IPV6_RECVERR`): the ICMP errors about the
datagrams it sent, each with who sent it and when it came.

With `enable_errors`, the kernel keeps every ICMP error about one of the socket's datagrams
(a time exceeded from a router, a port unreachable from the destination, ...) in a queue of
its own, beside the data, even on an unconnected socket; `read_errors` empties it without
blocking. For each error the kernel gives back the parsed ICMP message (`codecs.errqueue`:
errno, origin, type, code and the offender — the host that sent it), as much of the original
datagram's payload as the ICMP message quoted (after the UDP header for a UDP socket; the
ICMP header onward for an ICMP socket), the original's destination address and port (as the
message's name), and, with SO_TIMESTAMPNS, the time the ICMP message arrived. A pending error
makes the socket readable (POLLERR), so waiting with `ready.wait_ready(write=False)` wakes for
it.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from exporter.codecs import errqueue
from exporter.codecs.errqueue import ErrQueueCodecError, ExtendedError

# asm-generic/socket.h: SO_TIMESTAMPNS (SO_TIMESTAMPNS_OLD, a timespec of two longs as
# SCM_TIMESTAMPNS), which Python does not name.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY = 512  # the extended error with its offender, and a timestamp
MAX_PAYLOAD = 2048  # bytes of the original payload kept: a Linux router quotes up to 548
MAX_READS = 256  # entries read per call: a flood is read in bounded bites


@dataclass(frozen=True, slots=True)
class QueuedError:
    """One error from the queue."""

    error: ExtendedError
    payload: bytes  # what the ICMP message quoted of the original datagram's payload
    truncated: bool  # the payload was longer than the buffer read it into
    destination: tuple[str, int]  # where the original datagram went (address, port)
    received: int  # when the error came: ns since the Unix epoch
    kernel: bool  # `received` is the kernel's arrival time; else our clock just after the read


def enable_errors(sock: socket.socket, family: int, timestamps: bool = True) -> None:
    """Queue the ICMP errors about this socket's datagrams, with their arrival times."""
    # IP_RECVERR on an IPv6 socket too: the errors about its IPv4 datagrams (to ::ffff:a.b.c.d
    # on a dual-stack socket) are queued by the IPv4 stack, which asks that option.
    sock.setsockopt(socket.IPPROTO_IP, errqueue.IP_RECVERR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, errqueue.IPV6_RECVERR, 1)
    if timestamps:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def send(sock: socket.socket, payload: bytes, sockaddr: tuple[Any, ...]) -> int:
    """Send one datagram; the wall-clock time (ns) read just before the send that went.

    A queued error also sets the socket's pending error, and the kernel fails the next send
    with it (and clears it) without sending anything: a second probe from a socket whose
    first one was answered by a port unreachable would raise ECONNREFUSED. So a failed send is
    tried again, a few times; an error that stays (no route: ENETUNREACH) is the send's own
    and is raised. EAGAIN (a full send buffer) is raised as BlockingIOError.
    """
    for attempt in range(_SEND_TRIES):
        sent = time.time_ns()
        try:
            sock.sendto(payload, sockaddr)
            return sent
        except (BlockingIOError, InterruptedError):
            raise
        except OSError:
            if attempt == _SEND_TRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


_SEND_TRIES = 4  # one for the pending error, and room for errors arriving meanwhile


def read_errors(sock: socket.socket, limit: int = MAX_READS,
                max_payload: int = MAX_PAYLOAD) -> tuple[list[QueuedError], int]:
    """The errors queued now, at most `limit`, and how many entries were skipped (no extended
    error among their control messages, or one the codec could not read); never blocks."""
    got: list[QueuedError] = []
    skipped = 0
    for _ in range(limit):
        try:
            data, ancillary, flags, name = sock.recvmsg(max_payload, _ANCILLARY,
                                                        socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        user = time.time_ns()
        try:
            error = errqueue.find(ancillary)
        except ErrQueueCodecError:
            error = None
        if error is None:
            skipped += 1
            continue
        stamp = timestamp(ancillary)
        got.append(QueuedError(error, data, bool(flags & socket.MSG_TRUNC), _destination(name),
                               stamp or user, stamp is not None))
    return got, skipped


def timestamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's SCM_TIMESTAMPNS among control messages, in ns; None if there is none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            if seconds or nanoseconds:
                return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


def _destination(name: Any) -> tuple[str, int]:
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return "", 0

