"""The socket error queue's messages (Linux `IP_RECVERR` / `IPV6_RECVERR`): what went wrong
with a datagram we sent, and who said so.

Pure: the ancillary data of a `recvmsg(MSG_ERRQUEUE)` in, a dataclass out. The kernel hands
each queued error over as one control message (level IPPROTO_IP, type IP_RECVERR for an IPv4
error; IPPROTO_IPV6, IPV6_RECVERR for an IPv6 one — a dual-stack socket gets either) holding a
`struct sock_extended_err` (linux/errqueue.h):

    u32 ee_errno   the errno the error stands for (ECONNREFUSED for a port unreachable, ...)
    u8  ee_origin  who raised it: 1 local, 2 an ICMP message, 3 an ICMPv6 message
    u8  ee_type    the ICMP type, for origins 2 and 3
    u8  ee_code    the ICMP code
    u8  ee_pad
    u32 ee_info    the next-hop MTU of a "fragmentation needed" / "packet too big", ...
    u32 ee_data

followed by SO_EE_OFFENDER, the sockaddr of the host that sent the ICMP message (a router's
address for a time exceeded): a sockaddr_in or sockaddr_in6, or AF_UNSPEC when there is none
(a local error). The structs are in host byte order, the sockaddr's port and address in
network order, as every sockaddr is.

Whatever the bytes, only `ErrQueueCodecError` (a ValueError) is raised.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass

# linux/in.h, linux/in6.h: the control messages an error comes in.
SOL_IP, IP_RECVERR = 0, 11
SOL_IPV6, IPV6_RECVERR = 41, 25
# linux/errqueue.h: ee_origin.
ORIGIN_NONE, ORIGIN_LOCAL, ORIGIN_ICMP, ORIGIN_ICMP6 = 0, 1, 2, 3
ORIGIN_TXSTATUS = 4  # also SO_EE_ORIGIN_TIMESTAMPING: transmit timestamps share the queue
# linux/socket.h: the address families an offender may have (the same on every Linux).
AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10

_BYTE_ORDER = "<" if sys.byteorder == "little" else ">"
_EXTENDED_ERR = struct.Struct(_BYTE_ORDER + "IBBBBII")
SIZE = _EXTENDED_ERR.size  # 16
_FAMILY = struct.Struct(_BYTE_ORDER + "H")
SOCKADDR_IN_SIZE, SOCKADDR_IN6_SIZE = 16, 28


class ErrQueueCodecError(ValueError):
    """Bytes that are not a sock_extended_err this codec can read; the message says why."""


@dataclass(frozen=True, slots=True)
class ExtendedError:
    """One queued error: the fields of sock_extended_err and its offender."""

    errno: int
    origin: int
    type: int
    code: int
    info: int
    data: int
    # Who sent the ICMP message: (address family, address as text), or None (a local error,
    # or an offender the kernel did not give).
    offender: tuple[int, str] | None

    @property
    def from_icmp(self) -> bool:
        """Raised by an ICMP or ICMPv6 message, not by the local stack."""
        return self.origin in (ORIGIN_ICMP, ORIGIN_ICMP6)

    @property
    def version(self) -> int:
        """The IP version of the ICMP message (4 or 6); 0 for a local error."""
        return {ORIGIN_ICMP: 4, ORIGIN_ICMP6: 6}.get(self.origin, 0)

    @property
    def offender_address(self) -> str:
        """The offender's address as text, or "" without one."""
        return self.offender[1] if self.offender else ""


def parse(data: bytes) -> ExtendedError:
    """The sock_extended_err (and its offender) in one control message's data."""
    if len(data) < SIZE:
        raise ErrQueueCodecError(f"{len(data)} bytes, shorter than sock_extended_err ({SIZE})")
    errno, origin, kind, code, _pad, info, extra = _EXTENDED_ERR.unpack_from(data)
    return ExtendedError(errno, origin, kind, code, info, extra, _offender(data[SIZE:]))


def _offender(data: bytes) -> tuple[int, str] | None:
    if len(data) < _FAMILY.size:
        return None  # the kernel always appends one; a shorter buffer was cut (MSG_CTRUNC)
    (family,) = _FAMILY.unpack_from(data)
    if family == AF_UNSPEC:
        return None
    if family == AF_INET:
        if len(data) < 8:  # family, port, then the 4-byte address
            raise ErrQueueCodecError(f"offender sockaddr_in cut at {len(data)} bytes")
        return AF_INET, str(ipaddress.IPv4Address(data[4:8]))
    if family == AF_INET6:
        if len(data) < 24:  # family, port, flowinfo, then the 16-byte address
            raise ErrQueueCodecError(f"offender sockaddr_in6 cut at {len(data)} bytes")
        address = ipaddress.IPv6Address(data[8:24])
        # An IPv4 error on a dual-stack socket names its offender as ::ffff:a.b.c.d.
        mapped = address.ipv4_mapped
        return (AF_INET, str(mapped)) if mapped is not None else (AF_INET6, str(address))
    raise ErrQueueCodecError(f"offender of unknown address family {family}")


def find(ancillary: Iterable[tuple[int, int, bytes]]) -> ExtendedError | None:
    """The queued error among a recvmsg's control messages, or None if none carries one."""
    for level, kind, data in ancillary:
        if (level, kind) in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
            return parse(data)
    return None


def build(error: ExtendedError, *, port: int = 0) -> bytes:
    """The bytes the kernel would hand over for `error` (the tests' and fakes' way back)."""
    head = _EXTENDED_ERR.pack(error.errno, error.origin, error.type, error.code, 0,
                              error.info, error.data)
    if error.offender is None:
        return head + _FAMILY.pack(AF_UNSPEC) + bytes(SOCKADDR_IN_SIZE - _FAMILY.size)
    family, text = error.offender
    if family == AF_INET:
        return (head + _FAMILY.pack(AF_INET) + struct.pack("!H", port)
                + ipaddress.IPv4Address(text).packed + bytes(8))
    if family == AF_INET6:
        return (head + _FAMILY.pack(AF_INET6) + struct.pack("!HI", port, 0)
                + ipaddress.IPv6Address(text).packed + bytes(4))
    raise ValueError(f"no sockaddr for address family {family}")
