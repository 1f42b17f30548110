"""ICMP echo sockets: opened the unprivileged way where the host allows it, raw otherwise.

Linux offers two ways to send echoes. A datagram "ping" socket (`SOCK_DGRAM` with
`IPPROTO_ICMP` / `IPPROTO_ICMPV6`) needs no privilege, only a group in
`net.ipv4.ping_group_range` (which covers IPv6 too): the kernel sets the echo's identifier to
the socket's own "port" and hands the socket only the replies to it; ICMP errors about its echoes
wait in the socket's error queue (`IP_RECVERR`). A raw socket needs `CAP_NET_RAW` and sees every
ICMP message of the host: an `ICMP_FILTER` / `ICMP6_FILTER` cuts the noise to echo replies and
errors, and the caller tells its own by identifier. Where neither opens, `EchoUnavailable` says
what would fix it.

The socket knows no echo and no check: it sends datagrams and returns what arrived, with the
sender, the TTL or hop limit it arrived with (`IP_RECVTTL` / `IPV6_RECVHOPLIMIT`) and the time
the kernel received it (`SO_TIMESTAMPNS`; the reading of the clock just after the read where the
kernel does not say). All non-blocking, on the running event loop.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from exporter.codecs import errqueue
from exporter.net.ready import wait_ready

# Linux's numbers, which Python does not name (include/uapi/linux/in.h, in6.h, icmp.h,
# asm-generic/socket.h, errqueue.h).
_IP_RECVERR = 11
_IP_RECVTTL = 12
_IP_MTU_DISCOVER = 10
_IP_PMTUDISC_DO = 2
_IPV6_RECVERR = 25
_IPV6_MTU_DISCOVER = 23
_IPV6_PMTUDISC_DO = 2
_IPV6_DONTFRAG = 62
_SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: a struct timespec of longs, as SCM_TIMESTAMPNS
_SOL_RAW = 255
_ICMP_FILTER = 1  # level SOL_RAW: a bit set is a type blocked (types 0-31)
_ICMP6_FILTER = 1  # level IPPROTO_ICMPV6: 256 bits, a bit set is a type blocked
_TIMESPEC = struct.Struct("@ll")
_INT = struct.Struct("@i")
_ANCILLARY = 256  # a timestamp, a TTL, or an extended error with its offender
_MAX_READS = 64  # datagrams read per wakeup: a flood is read in bounded bites

# The ICMP types a raw socket lets through: echo replies and errors (the codec's types).
_PASS_V4 = (0, 3, 4, 5, 11, 12)
_PASS_V6 = (1, 2, 3, 4, 129)

VERSIONS: dict[int, int] = {socket.AF_INET: 4, socket.AF_INET6: 6}
PROTOCOLS: dict[int, int] = {socket.AF_INET: socket.IPPROTO_ICMP,
                             socket.AF_INET6: socket.IPPROTO_ICMPV6}

FIX = ("ICMP echo needs an unprivileged ping socket or CAP_NET_RAW, and this process has "
       "neither: allow its group with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` "
       "(IPv4 and IPv6; persist it in /etc/sysctl.d), or give it CAP_NET_RAW (systemd: "
       "AmbientCapabilities=CAP_NET_RAW; a binary: setcap cap_net_raw+ep)")


class EchoUnavailable(Exception):
    """Neither a ping socket nor a raw socket could be opened; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class QueuedError:
    """An ICMP error from a ping socket's error queue (IP_RECVERR): the kernel's digest of it."""

    type: int
    code: int
    info: int  # the MTU of a packet-too-big / fragmentation-needed error
    destination: str  # where the echo it is about was going


@dataclass(frozen=True, slots=True)
class Received:
    """One datagram as it arrived, or one queued error."""

    data: bytes  # the ICMP message (from a raw IPv4 socket, with its IP header); for a queued
    # error, what it quotes of our echo
    source: str  # the sender; for a queued error the hop that reported it (SO_EE_OFFENDER)
    ttl: int | None  # the TTL or hop limit it arrived with
    received: int  # when: ns since the Unix epoch
    kernel: bool  # `received` is the kernel's timestamp
    truncated: bool  # longer than the buffer: what is in `data` is cut
    error: QueuedError | None = None


class EchoSocket:
    """An ICMP echo socket for one address family; `identifier` is its echoes' identifier."""

    def __init__(self, sock: socket.socket, family: int, raw: bool) -> None:
        self.sock = sock
        self.family = family
        self.version = VERSIONS[family]
        self.raw = raw
        # A raw IPv4 socket hands over the IP header with each message (raw IPv6 does not).
        self.ip_header = raw and family == socket.AF_INET
        if raw:
            self.identifier = random.getrandbits(16)
        else:
            # The kernel's choice, and the one it writes into every echo we send.
            self.identifier = int(sock.getsockname()[1])
        self.buffer = 2048

    @property
    def kind(self) -> str:
        return "raw (CAP_NET_RAW)" if self.raw else "datagram (ping_group_range)"

    def configure(self, ttl: int | None, dont_fragment: bool, size: int) -> None:
        """The echoes' TTL (hop limit) and fragmentation; room to read a reply of `size`
        payload bytes (and an IP header) or an error quoting it."""
        if self.family == socket.AF_INET:
            if ttl is not None:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            if dont_fragment:  # DF set, and never fragmented here: EMSGSIZE above the MTU
                self.sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
        else:
            if ttl is not None:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            if dont_fragment:
                self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO)
                self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_DONTFRAG, 1)
        # One byte more than the largest thing expected, so that anything longer is seen cut.
        self.buffer = max(2048, size + 8 + 60 + 1)

    async def send(self, packet: bytes, host: str) -> int:
        """Send one ICMP message to `host`; the wall-clock time (ns) read just before the send
        that went. Raises OSError (EMSGSIZE: larger than the path MTU with dont_fragment)."""
        loop = asyncio.get_running_loop()
        address: tuple[Any, ...] = (host, 0) if self.family == socket.AF_INET else (host, 0, 0, 0)
        for _ in range(100):  # a full send buffer drains in microseconds; the deadline bounds it
            try:
                sent = time.time_ns()
                self.sock.sendto(packet, address)
                return sent
            except (BlockingIOError, InterruptedError):
                await wait_ready(loop, self.sock.fileno(), write=True)
        raise OSError(errno.ENOBUFS, "the socket's send buffer stayed full")

    async def wait(self) -> None:
        """Until something can be read (a datagram or a queued error)."""
        await wait_ready(asyncio.get_running_loop(), self.sock.fileno(), write=False)

    def read(self) -> list[Received]:
        """What has arrived, at most a bounded bite of it; never blocks."""
        got: list[Received] = []
        if not self.raw:
            got.extend(self._read_errors())
        for _ in range(_MAX_READS):
            try:
                data, ancillary, flags, source = self.sock.recvmsg(self.buffer, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # A ping socket reports a pending ICMP error once on the normal queue too
                # (sk_err): its details are in the error queue, read next time round.
                if self.raw:
                    raise
                got.extend(self._read_errors())
                continue
            user = time.time_ns()
            ttl, stamp = _ancillary(ancillary)
            got.append(Received(data, source[0], ttl, stamp or user, stamp is not None,
                                bool(flags & socket.MSG_TRUNC)))
        return got

    def _read_errors(self) -> list[Received]:
        got = []
        for _ in range(_MAX_READS):
            try:
                data, ancillary, flags, target = self.sock.recvmsg(
                    self.buffer, _ANCILLARY, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            user = time.time_ns()
            ttl, stamp = _ancillary(ancillary)
            try:
                error = errqueue.find(ancillary)
            except errqueue.ErrQueueCodecError:
                continue  # not a sock_extended_err we can read: nothing to tell of it
            # A local error was raised already by the send that caused it.
            if error is not None and error.from_icmp:
                destination = str(target[0]) if isinstance(target, tuple) and target else ""
                got.append(Received(data, error.offender_address, ttl, stamp or user,
                                    stamp is not None, bool(flags & socket.MSG_TRUNC),
                                    QueuedError(error.type, error.code, error.info,
                                                destination)))
        return got

    def close(self) -> None:
        self.sock.close()


def open_echo_socket(family: int) -> EchoSocket:
    """A non-blocking echo socket: a ping socket where allowed, else a raw one. Raises
    EchoUnavailable when neither may be opened, OSError for anything else (no IPv6 here)."""
    protocol = PROTOCOLS[family]
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, protocol)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT,
                             errno.ESOCKTNOSUPPORT):
            raise
    else:
        try:
            sock.setblocking(False)
            sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
            _common(sock, family)
            recverr = (socket.IPPROTO_IP, _IP_RECVERR) if family == socket.AF_INET else (
                socket.IPPROTO_IPV6, _IPV6_RECVERR)
            sock.setsockopt(*recverr, 1)
            return EchoSocket(sock, family, raw=False)
        except BaseException:
            sock.close()
            raise
    try:
        sock = socket.socket(family, socket.SOCK_RAW, protocol)
    except PermissionError:
        raise EchoUnavailable(FIX) from None
    try:
        sock.setblocking(False)
        _common(sock, family)
        if family == socket.AF_INET:
            blocked = 0xFFFFFFFF & ~sum(1 << t for t in _PASS_V4)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("@I", blocked))
        else:
            words = [0xFFFFFFFF] * 8
            for t in _PASS_V6:
                words[t >> 5] &= ~(1 << (t & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("@8I", *words))
        return EchoSocket(sock, family, raw=True)
    except BaseException:
        sock.close()
        raise


def unavailable() -> str | None:
    """Why this process can send no echo at all (FIX), or None: for start-up and check-config."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            open_echo_socket(family).close()
            return None
        except EchoUnavailable as exc:
            return str(exc)
        except OSError:
            continue  # that family is missing here; the other may do
    return None


def _common(sock: socket.socket, family: int) -> None:
    """What both kinds of socket ask for: kernel receive times, the replies' TTL."""
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)


def _ancillary(ancillary: list[tuple[int, int, bytes]]) -> tuple[int | None, int | None]:
    """(TTL or hop limit, kernel receive time in ns) from a message's control data."""
    ttl = stamp = None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            if seconds or nanoseconds:
                stamp = int(seconds) * 1_000_000_000 + int(nanoseconds)
        elif ((level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL),
                                (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT))
              and len(data) >= _INT.size):
            ttl = int(_INT.unpack_from(data)[0])
    return ttl, stamp
