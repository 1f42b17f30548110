"""ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: echo requests built, every message parsed.

Pure: bytes in, dataclasses out. `parse` reads what a socket hands over — with the outer IPv4
header (raw IPv4 sockets) or without it (datagram "ping" sockets, raw IPv6 sockets) — and
returns an echo (request or reply), an error with the datagram it quotes (destination
unreachable, time exceeded, packet too big, parameter problem, and IPv4's redirect and source
quench), or another message the caller ignores. The quoted datagram is what ties an error to
the probe that caused it: its IP header (source, destination, protocol) and the first bytes of
its transport header, the echo's identifier and sequence or the UDP ports.

Whatever the bytes, only `IcmpCodecError` (a ValueError) is raised. Addresses stay packed
bytes until someone asks for their text: a reply is matched on numbers, and only people read
addresses.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

# Types. IPv4: RFC 792 (and RFC 1191 for "fragmentation needed" as path MTU discovery's
# packet-too-big); IPv6: RFC 4443 §2.1 — below 128 an error, from 128 informational.
ECHO_REPLY = {4: 0, 6: 129}
ECHO_REQUEST = {4: 8, 6: 128}
V4_UNREACHABLE, V4_SOURCE_QUENCH, V4_REDIRECT = 3, 4, 5
V4_TIME_EXCEEDED, V4_PARAMETER_PROBLEM = 11, 12
V4_FRAGMENTATION_NEEDED = 4  # the code of V4_UNREACHABLE that carries the next-hop MTU
V6_UNREACHABLE, V6_PACKET_TOO_BIG, V6_TIME_EXCEEDED, V6_PARAMETER_PROBLEM = 1, 2, 3, 4

# The categories errors are counted by (metrics.PING_ERRORS' `type` label): a closed set.
CATEGORIES = ("unreachable", "time_exceeded", "packet_too_big", "parameter_problem", "other")
_V4_CATEGORY = {V4_UNREACHABLE: "unreachable", V4_TIME_EXCEEDED: "time_exceeded",
                V4_PARAMETER_PROBLEM: "parameter_problem", V4_SOURCE_QUENCH: "other",
                V4_REDIRECT: "other"}
_V6_CATEGORY = {V6_UNREACHABLE: "unreachable", V6_PACKET_TOO_BIG: "packet_too_big",
                V6_TIME_EXCEEDED: "time_exceeded", V6_PARAMETER_PROBLEM: "parameter_problem"}
# What people read, by (version, type) and (version, type, code).
_NAMES = {(4, 3): "destination unreachable", (4, 4): "source quench", (4, 5): "redirect",
          (4, 11): "time exceeded", (4, 12): "parameter problem",
          (6, 1): "destination unreachable", (6, 2): "packet too big", (6, 3): "time exceeded",
          (6, 4): "parameter problem"}
_CODES = {
    (4, 3, 0): "net unreachable", (4, 3, 1): "host unreachable",
    (4, 3, 2): "protocol unreachable", (4, 3, 3): "port unreachable",
    (4, 3, 4): "fragmentation needed", (4, 3, 5): "source route failed",
    (4, 3, 6): "destination network unknown", (4, 3, 7): "destination host unknown",
    (4, 3, 9): "network administratively prohibited",
    (4, 3, 10): "host administratively prohibited", (4, 3, 13): "communication prohibited",
    (4, 11, 0): "TTL exceeded in transit", (4, 11, 1): "fragment reassembly time exceeded",
    (6, 1, 0): "no route to destination", (6, 1, 1): "administratively prohibited",
    (6, 1, 2): "beyond scope of source address", (6, 1, 3): "address unreachable",
    (6, 1, 4): "port unreachable", (6, 1, 5): "source address failed ingress/egress policy",
    (6, 1, 6): "reject route to destination",
    (6, 3, 0): "hop limit exceeded in transit", (6, 3, 1): "fragment reassembly time exceeded",
}

HEADER_SIZE = 8  # type, code, checksum and the 4 bytes that depend on the type
IPV4_HEADER_SIZE = 20  # without options
IPV6_HEADER_SIZE = 40
PROTOCOL_ICMP, PROTOCOL_UDP, PROTOCOL_TCP, PROTOCOL_ICMPV6 = 1, 17, 6, 58
# The largest echo payload: an IPv4 datagram is at most 65535 bytes with its 20-byte header
# (RFC 791 §3.1, total length is 16 bits); an IPv6 packet carries at most 65535 bytes after
# its 40-byte header (RFC 8200 §3, payload length; jumbograms aside). The ICMP header counts.
MAX_PAYLOAD = {4: 0xFFFF - IPV4_HEADER_SIZE - HEADER_SIZE, 6: 0xFFFF - HEADER_SIZE}

# RFC 8200 §4: extension headers a quoted IPv6 datagram may carry before its transport header.
_HOP_BY_HOP, _ROUTING, _FRAGMENT, _DESTINATION, _AUTH = 0, 43, 44, 60, 51
_MAX_EXTENSIONS = 8  # a chain longer than this is not a datagram anyone sent

_ICMP_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_PORTS = struct.Struct("!HH")


class IcmpCodecError(ValueError):
    """Bytes that are not an ICMP message this codec can read; the message says why."""


@dataclass(frozen=True, slots=True)
class IpHeader:
    """The fields of an IPv4 or IPv6 header that matter here (the outer or a quoted one)."""

    version: int  # 4 or 6
    source_bytes: bytes
    destination_bytes: bytes
    protocol: int  # IPv6: the next header after any extension headers
    ttl: int  # IPv6: the hop limit
    length: int  # bytes of header, options and extension headers
    first_fragment: bool = True  # a later fragment quotes no transport header

    @property
    def source(self) -> str:
        return _text(self.source_bytes)

    @property
    def destination(self) -> str:
        return _text(self.destination_bytes)


@dataclass(frozen=True, slots=True)
class Quoted:
    """The datagram an error message quotes (RFC 792: its header and 64 bits of its data;
    RFC 1812 §4.3.2.3 and RFC 4443 §2.4(c): as much as fits), as far as it can be read."""

    ip: IpHeader
    # The quoted ICMP message's type, identifier and sequence (an echo of ours?), or the
    # quoted UDP or TCP header's ports; None where the datagram is of another protocol.
    icmp_type: int | None = None
    identifier: int | None = None
    sequence: int | None = None
    source_port: int | None = None
    destination_port: int | None = None

    @property
    def echo_request(self) -> bool:
        return self.icmp_type == ECHO_REQUEST[self.ip.version]


@dataclass(frozen=True, slots=True)
class Echo:
    """An echo request or reply (RFC 792 "Echo or Echo Reply Message", RFC 4443 §4)."""

    reply: bool
    identifier: int
    sequence: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An error message about a datagram, which it quotes."""

    version: int
    type: int
    code: int
    quoted: Quoted
    mtu: int | None = None  # packet too big / fragmentation needed: the next hop's MTU
    pointer: int | None = None  # parameter problem: the offending octet

    @property
    def category(self) -> str:
        """One of CATEGORIES."""
        return category(self.version, self.type, self.code)

    def describe(self) -> str:
        """What people read: "destination unreachable (port unreachable)", "... mtu 1400"."""
        return describe(self.version, self.type, self.code, self.mtu)


@dataclass(frozen=True, slots=True)
class Message:
    """One ICMP message as received: its body, and the outer IPv4 header where there was one."""

    version: int
    type: int
    code: int
    body: Echo | IcmpError | None  # None: a message of another type (router advert, ...)
    outer: IpHeader | None = None


def category(version: int, kind: int, code: int) -> str:
    """The CATEGORIES entry of an error of this type and code (also for errors the kernel
    digested, as a ping socket's error queue gives them)."""
    if version == 4:
        if kind == V4_UNREACHABLE and code == V4_FRAGMENTATION_NEEDED:
            return "packet_too_big"
        return _V4_CATEGORY.get(kind, "other")
    return _V6_CATEGORY.get(kind, "other")


def describe(version: int, kind: int, code: int, mtu: int | None = None) -> str:
    """What people read: "destination unreachable (port unreachable)", "... mtu 1400"."""
    name = _NAMES.get((version, kind), f"type {kind}")
    text = f"{name} ({_CODES.get((version, kind, code), f'code {code}')})"
    return f"{text}, mtu {mtu}" if mtu else text


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
    the 16-bit words, an odd last byte padded with zero.

    Computed on one big integer: since 2**16 ≡ 1 (mod 0xFFFF), the number the bytes spell in
    base 2**16 is congruent to the sum of its digits, and the ones' complement sum is that
    residue — but for a non-zero sum ≡ 0, which ones' complement writes 0xFFFF.
    """
    if len(data) % 2:
        data += b"\0"
    number = int.from_bytes(data, "big")
    total = number % 0xFFFF
    if total == 0 and number:
        total = 0xFFFF
    return 0xFFFF - total


def build_echo(version: int, identifier: int, sequence: int, payload: bytes) -> bytes:
    """An echo request. IPv4 carries its checksum; ICMPv6's covers a pseudo-header of the
    addresses (RFC 4443 §2.3), which the kernel fills in on both datagram and raw sockets
    (RFC 3542 §3.1), so it goes out as 0."""
    if version not in ECHO_REQUEST:
        raise IcmpCodecError(f"IP version {version}: 4 or 6")
    if not (0 <= identifier <= 0xFFFF and 0 <= sequence <= 0xFFFF):
        raise IcmpCodecError(f"identifier {identifier} and sequence {sequence}: 0 to 65535")
    if len(payload) > MAX_PAYLOAD[version]:
        raise IcmpCodecError(f"{len(payload)} bytes of payload; at most "
                             f"{MAX_PAYLOAD[version]} fit an IPv{version} datagram")
    header = _ICMP_HEADER.pack(ECHO_REQUEST[version], 0, 0, identifier, sequence)
    if version == 6:
        return header + payload
    message = header + payload
    return message[:2] + checksum(message).to_bytes(2, "big") + message[4:]


def parse(data: bytes, version: int, ip_header: bool = False, verify: bool = True) -> Message:
    """One received ICMP (version 4) or ICMPv6 (6) message; `ip_header` when the bytes begin
    with the outer IPv4 header, as raw IPv4 sockets deliver them. `verify=False` skips the
    IPv4 checksum, for a message known to be cut (what an error quotes of an echo: its
    checksum covers bytes that are not there). Raises IcmpCodecError."""
    outer = None
    if ip_header:
        outer = _ip_header(data, 4 if version == 4 else 6, quoted=False)
        if outer.protocol != (PROTOCOL_ICMP if version == 4 else PROTOCOL_ICMPV6):
            raise IcmpCodecError(f"IP protocol {outer.protocol}, not ICMP")
        data = data[outer.length:]
    if len(data) < HEADER_SIZE:
        raise IcmpCodecError(f"{len(data)} bytes: shorter than the {HEADER_SIZE}-byte ICMP "
                             "header")
    kind, code, _, first, second = _ICMP_HEADER.unpack_from(data)
    # ICMPv4 sockets may hand over what the kernel did not verify (a raw socket gets its copy
    # before ICMP's own checks); ICMPv6's checksum the kernel verifies for raw sockets too.
    if version == 4 and verify and checksum(data) != 0:
        raise IcmpCodecError("bad ICMP checksum")
    if kind == ECHO_REPLY[version] or kind == ECHO_REQUEST[version]:
        body: Echo | IcmpError | None = Echo(kind == ECHO_REPLY[version], first, second,
                                             bytes(data[HEADER_SIZE:]))
    elif (version == 4 and kind in _V4_CATEGORY) or (version == 6 and kind < 128):
        body = _error(data, version, kind, code, first, second)
    else:
        body = None
    return Message(version, kind, code, body, outer)


def _error(data: bytes, version: int, kind: int, code: int, first: int,
           second: int) -> IcmpError:
    rest = (first << 16) | second  # the 4 bytes after the checksum
    mtu = pointer = None
    if version == 4:
        if kind == V4_UNREACHABLE and code == V4_FRAGMENTATION_NEEDED:
            mtu = second or None  # RFC 1191 §4: 0 from routers that predate it
        elif kind == V4_PARAMETER_PROBLEM:
            pointer = first >> 8
    elif kind == V6_PACKET_TOO_BIG:
        mtu = rest
    elif kind == V6_PARAMETER_PROBLEM:
        pointer = rest
    return IcmpError(version, kind, code, _quoted(data[HEADER_SIZE:], version), mtu, pointer)


def _quoted(data: bytes, version: int) -> Quoted:
    """The quoted datagram: its IP header and what can be read of its transport header."""
    ip = _ip_header(data, version, quoted=True)
    transport = data[ip.length:]
    if not ip.first_fragment:
        return Quoted(ip)
    if ip.protocol == (PROTOCOL_ICMP if version == 4 else PROTOCOL_ICMPV6):
        if len(transport) < HEADER_SIZE:
            raise IcmpCodecError(f"the quoted ICMP message is cut to {len(transport)} bytes, "
                                 f"fewer than its {HEADER_SIZE}-byte header")
        kind, _, _, identifier, sequence = _ICMP_HEADER.unpack_from(transport)
        if kind in (ECHO_REQUEST[version], ECHO_REPLY[version]):
            return Quoted(ip, kind, identifier, sequence)
        return Quoted(ip, kind)
    if ip.protocol in (PROTOCOL_UDP, PROTOCOL_TCP):
        if len(transport) < _PORTS.size:
            raise IcmpCodecError(f"the quoted datagram is cut to {len(transport)} bytes after "
                                 "its IP header, without its ports")
        source_port, destination_port = _PORTS.unpack_from(transport)
        return Quoted(ip, source_port=source_port, destination_port=destination_port)
    return Quoted(ip)


def _ip_header(data: bytes, version: int, quoted: bool) -> IpHeader:
    what = "the quoted datagram" if quoted else "the packet"
    if not data:
        raise IcmpCodecError(f"{what} is empty")
    found = data[0] >> 4
    if found != version:
        raise IcmpCodecError(f"{what} is IP version {found}, not {version}")
    if version == 4:
        length = (data[0] & 0x0F) * 4
        if length < IPV4_HEADER_SIZE:
            raise IcmpCodecError(f"{what}'s IPv4 header length is {length} bytes, less than 20")
        if len(data) < length:
            raise IcmpCodecError(f"{what} is cut to {len(data)} bytes, within its "
                                 f"{length}-byte IPv4 header")
        offset = int.from_bytes(data[6:8], "big") & 0x1FFF
        return IpHeader(4, bytes(data[12:16]), bytes(data[16:20]), data[9], data[8], length,
                        offset == 0)
    if len(data) < IPV6_HEADER_SIZE:
        raise IcmpCodecError(f"{what} is cut to {len(data)} bytes, within its 40-byte IPv6 "
                             "header")
    protocol, length, first = data[6], IPV6_HEADER_SIZE, True
    for _ in range(_MAX_EXTENSIONS):
        if protocol not in (_HOP_BY_HOP, _ROUTING, _FRAGMENT, _DESTINATION, _AUTH):
            break
        if len(data) < length + 8:
            raise IcmpCodecError(f"{what}'s IPv6 extension headers are cut short")
        if protocol == _FRAGMENT:  # RFC 8200 §4.5: always 8 bytes
            first = first and int.from_bytes(data[length + 2:length + 4], "big") >> 3 == 0
            size = 8
        elif protocol == _AUTH:  # RFC 4302 §2.2: in 4-byte units, minus 2
            size = (data[length + 1] + 2) * 4
        else:
            size = (data[length + 1] + 1) * 8
        protocol = data[length]
        length += size
    else:
        raise IcmpCodecError(f"{what} has more than {_MAX_EXTENSIONS} IPv6 extension headers")
    if len(data) < length:
        raise IcmpCodecError(f"{what}'s IPv6 extension headers are cut short")
    return IpHeader(6, bytes(data[8:24]), bytes(data[24:40]), protocol, data[7], length, first)


def _text(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))
