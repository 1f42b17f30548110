"""One datagram out, one reply back: the DNS and NTP transports over UDP, and the udp check's.

`udp_exchange` moves bytes and knows no protocol: the caller encodes the request and says,
with a predicate, which datagram is the reply. It runs until cancelled; the caller's
deadline ends it, and its socket is closed whatever happens. `timed_udp_exchange` is
`udp_exchange` with the times the request left and the reply arrived, from the kernel
where it can tell them (NTP). `ConnectedUdp` is a socket connected to its peer, so that a
closed port is refused rather than silent, for a request that may be sent again (the udp
check).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.net.ready import wait_ready
from exporter.net.resolve import Address


def _source_key(address: Address) -> tuple[str, int]:
    """(host, port) spelt as recvfrom reports a datagram's source, to compare with."""
    # recvfrom gives inet_ntop's canonical text without a %scope suffix, while a configured
    # literal may be spelt otherwise ("0:0::1", "fe80::1%eth0"): canonicalise it once here.
    host = address.host.partition("%")[0]
    with contextlib.suppress(OSError, ValueError):
        host = socket.inet_ntop(address.family, socket.inet_pton(address.family, host))
    return host, int(address.sockaddr[1])


async def udp_exchange(
    address: Address, payload: bytes, accept: Callable[[bytes], bool], max_size: int = 65535
) -> tuple[bytes, int]:
    """Send `payload` in one datagram to `address` and return (the reply, datagrams ignored).

    A datagram is the reply only if it comes from exactly the server's address and port and
    `accept(datagram)` is true (accept must not raise); anything else is counted and ignored,
    and the wait goes on (RFC 5452 §9.1: an off-path attacker can send datagrams, so a wrong
    one must not end the exchange). Runs until cancelled; the socket is always closed.
    """
    # An unconnected socket, so that datagrams from other sources reach us and are counted
    # rather than silently dropped by the kernel. The price: Linux reports no ICMP errors to
    # unconnected UDP sockets, so a closed port is a timeout, not "refused". The kernel binds
    # the socket to a random ephemeral port at the first sendto (RFC 5452 §9.2).
    loop = asyncio.get_running_loop()
    host, port = _source_key(address)
    sock = socket.socket(address.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if sys.version_info >= (3, 11):
            await loop.sock_sendto(sock, payload, address.sockaddr)
        else:  # pragma: no cover - Python 3.10
            await _sendto(loop, sock, payload, address.sockaddr)
        ignored = 0
        while True:
            # A datagram longer than max_size is cut to it by the kernel, silently.
            if sys.version_info >= (3, 11):
                data, source = await loop.sock_recvfrom(sock, max_size)
            else:  # pragma: no cover - Python 3.10
                data, source = await _recvfrom(loop, sock, max_size)
            # The port first: the cheapest test, and the one a spoofer most often gets wrong.
            if source[1] == port and source[0] == host and accept(data):
                return data, ignored
            ignored += 1
    finally:
        sock.close()


# Python 3.10 has no loop.sock_recvfrom / sock_sendto: these do the same with add_reader /
# add_writer. Defined on every version so that the tests exercise them.


async def _recvfrom(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> tuple[bytes, Any]:
    while True:
        try:
            return sock.recvfrom(size)
        except (BlockingIOError, InterruptedError):
            await wait_ready(loop, sock.fileno(), write=False)


async def _sendto(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes, sockaddr: tuple[Any, ...]
) -> int:
    """Send one datagram; return the wall-clock time (ns) read just before the send that went."""
    while True:
        try:
            sent = time.time_ns()
            sock.sendto(data, sockaddr)
            return sent
        except (BlockingIOError, InterruptedError):
            await wait_ready(loop, sock.fileno(), write=True)




# last so that the error queue gives back the timestamp alone, not a copy of the datagram).
_SO_TIMESTAMPING = 37
_TIMESTAMPING_FLAGS = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 11)
_RECEIVE_STAMP_FLAGS = (1 << 3) | (1 << 4)  # RX_SOFTWARE | SOFTWARE: no transmit stamps
_TIMESPEC = struct.Struct("@ll")  # the first of scm_timestamping's three: the software one
_ANCILLARY_SIZE = 512  # the timestamps, and sock_extended_err on the error queue
_MAX_ERROR_QUEUE = 16  # entries read per wakeup (one datagram sent: one entry)
_MAX_DATAGRAMS_PER_WAKEUP = 64  # a flood is read in bounded bites, the deadline ends it


@dataclass(frozen=True, slots=True)
class TimedDatagram:
    """A reply, and the wall-clock times (ns since the Unix epoch) of the exchange."""

    data: bytes
    ignored: int  # datagrams ignored before it
    sent: int  # when the request left
    received: int  # when the reply arrived
    kernel: bool  # both times from the kernel; else both read by us around the syscalls


async def timed_udp_exchange(
    address: Address, payload: bytes, accept: Callable[[bytes], bool], *,
    foreign: Callable[[tuple[Any, ...]], None] | None = None, kernel_timestamps: bool = True,
    max_size: int = 65535,
) -> TimedDatagram:
    """`udp_exchange`, with the times the request left and the reply arrived.

    Where the kernel tells them (Linux's SO_TIMESTAMPING), both are its software timestamps,
    taken as the datagram passes the network stack: the time the agent's event loop, the
    interpreter and the syscalls take (tens of microseconds, more on a busy loop) stays out
    of them. Otherwise, or with `kernel_timestamps=False`, both are time.time_ns() read just
    before the send and just after the receive. Never one of each: a delay on one side only
    would not cancel out of an NTP offset, whose error is half the difference of the two.
    `foreign(source)`, if given, hears of each datagram from another address or port (the
    caller's `accept` sees only the server's). Runs until cancelled; the socket is always
    closed.
    """
    loop = asyncio.get_running_loop()
    host, port = _source_key(address)  # unconnected, as in udp_exchange, for the same reasons
    sock = socket.socket(address.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        kernel = kernel_timestamps and _enable_timestamping(sock)
        user_sent = await _sendto(loop, sock, payload, address.sockaddr)
        kernel_sent = None
        ignored = 0
        while True:
            # Wait first: no reply can be in yet, and going to sleep at once leaves the CPU to
            # a server on this host (a server preempted between its transmit timestamp and
            # its send adds that time to the offset; docs/performance.md, NTP).
            await wait_ready(loop, sock.fileno(), write=False)
            if kernel:  # the transmit timestamp waits in the error queue (POLLERR): empty it
                kernel_sent = _drain_error_queue(sock) or kernel_sent
            for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
                try:
                    data, ancillary, _, source = sock.recvmsg(max_size, _ANCILLARY_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                user_received = time.time_ns()
                if source[1] != port or source[0] != host:
                    ignored += 1
                    if foreign is not None:
                        foreign(source)
                    continue
                if not accept(data):
                    ignored += 1
                    continue
                kernel_received = _timestamp(ancillary) if kernel else None
                if kernel_sent is not None and kernel_received is not None:
                    return TimedDatagram(data, ignored, kernel_sent, kernel_received, True)
                return TimedDatagram(data, ignored, user_sent, user_received, False)
    finally:
        sock.close()


def _enable_timestamping(sock: socket.socket) -> bool:
    """Ask for kernel timestamps; False where the platform has no SO_TIMESTAMPING."""
    if sys.platform != "linux":
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _TIMESTAMPING_FLAGS)
        enabled = sock.getsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING) == _TIMESTAMPING_FLAGS
    except OSError:
        return False
    if enabled and _receive_stamper is None:
        _keep_receive_timestamps_on()
    return bool(enabled)


_receive_stamper: socket.socket | None = None  # open for the life of the process
_STAMPER_TRIES = 40  # self-addressed datagrams, 0.5 ms apart, while the kernel switches on


def _keep_receive_timestamps_on() -> None:
    """Hold one socket that asks for receive timestamps open for the process's life.

    Linux stamps arriving packets only while some socket asks it to, and switches that on
    and off from a work queue some time after the first such socket opens or the last one
    closes. Exchanges that each open and close their own socket can keep losing that race:
    back-to-back sockets on this kernel (6.18) got no receive timestamp at all in whole
    runs (20 of 20, in 1 process of 40; `tests/net/test_transports.py`), and an exchange without
    one falls back to user-space times. One standing socket keeps it on; the first time,
    this waits (at most 20 ms, once) until a datagram to itself comes back stamped.
    """
    global _receive_stamper
    stamper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stamper.bind(("127.0.0.1", 0))
        stamper.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _RECEIVE_STAMP_FLAGS)
        stamper.settimeout(0.01)
        for _ in range(_STAMPER_TRIES):
            stamper.sendto(b"", stamper.getsockname())
            _, ancillary, _, _ = stamper.recvmsg(1, _ANCILLARY_SIZE)
            if _timestamp(ancillary) is not None:
                break
            time.sleep(0.0005)
    except OSError:  # no loopback to talk to: the exchanges' own sockets ask all the same
        stamper.close()
        return
    stamper.setblocking(False)
    _receive_stamper = stamper


def _drain_error_queue(sock: socket.socket) -> int | None:
    """Read the socket's error queue empty; the last transmit timestamp in it, if any."""
    stamp = None
    for _ in range(_MAX_ERROR_QUEUE):
        try:
            _, ancillary, _, _ = sock.recvmsg(1, _ANCILLARY_SIZE, socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # nothing we can read it with: the user-space times will do
            break
        stamp = _timestamp(ancillary) or stamp
    return stamp


def _timestamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The software timestamp of an SCM_TIMESTAMPING message, in ns; None if there is none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPING and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            if seconds or nanoseconds:
                return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


# --- a connected socket: the udp check's tries ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A datagram from a connected peer, and how long after the last send it came."""

    data: bytes
    truncated: bool  # longer than the buffer: `data` is its first max_size bytes
    elapsed: float  # seconds from the last send to its arrival
    kernel: bool  # both ends of `elapsed` are the kernel's timestamps


class ConnectedUdp:
    """A UDP socket connected to one peer, for a request sent perhaps several times.

    Connected, unlike `udp_exchange`'s: the kernel then delivers only the peer's datagrams
    (anything from another address or port is dropped before it reaches us), and an ICMP port
    unreachable about our datagram becomes ECONNREFUSED, raised by the next `send` or
    `receive` as ConnectionRefusedError; other ICMP errors raise their OSError
    (EHOSTUNREACH, ...). Times come from the kernel's SO_TIMESTAMPING where it gives them,
    as in `timed_udp_exchange`. The caller's deadline ends a `receive`; `close` (or the end
    of the `with` block) closes the socket.
    """

    __slots__ = ("_kernel", "_kernel_sent", "_loop", "_previous_sent", "_user_sent", "sock")

    def __init__(self, address: Address, *, kernel_timestamps: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock = socket.socket(address.family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self._kernel = kernel_timestamps and _enable_timestamping(self.sock)
            self.sock.connect(address.sockaddr)  # UDP: sets the peer, sends nothing
        except BaseException:
            self.sock.close()
            raise
        self._user_sent = 0
        self._kernel_sent: int | None = None
        self._previous_sent: int | None = None  # the kernel's time of the send before

    def __enter__(self) -> ConnectedUdp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    async def send(self, payload: bytes) -> None:
        """Send `payload` in one datagram; the times of a later reply count from here."""
        if self._kernel:  # the previous send's timestamp, if it is still in the queue
            self._kernel_sent = _drain_error_queue(self.sock) or self._kernel_sent
        self._previous_sent = self._kernel_sent
        self._kernel_sent = None
        while True:
            try:
                self._user_sent = time.perf_counter_ns()
                self.sock.send(payload)
                return
            except (BlockingIOError, InterruptedError):
                await wait_ready(self._loop, self.sock.fileno(), write=True)

    async def receive(self, max_size: int = 65536) -> Reply:
        """The next datagram from the peer, whichever send it answers; runs until one comes
        (or an ICMP error raises), the caller's deadline ends it."""
        while True:
            await wait_ready(self._loop, self.sock.fileno(), write=False)
            if self._kernel:  # the send's timestamp waits in the error queue (POLLERR)
                self._kernel_sent = _drain_error_queue(self.sock) or self._kernel_sent
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(max_size, _ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            user_received = time.perf_counter_ns()
            truncated = bool(flags & socket.MSG_TRUNC)
            kernel_received = _timestamp(ancillary) if self._kernel else None
            kernel_sent = self._kernel_sent
            if kernel_received is not None and kernel_sent is not None:
                if kernel_received < kernel_sent and self._previous_sent is not None:
                    # A reply to the previous send, in just before this one left: the
                    # kernel's times tell, and it counts from the send before it came.
                    kernel_sent = self._previous_sent
                if kernel_received >= kernel_sent:
                    return Reply(data, truncated, (kernel_received - kernel_sent) / 1e9, True)
            return Reply(data, truncated, (user_received - self._user_sent) / 1e9, False)
