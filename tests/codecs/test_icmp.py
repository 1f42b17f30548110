"""The ICMP codec: echoes built and parsed, every error type with its quoted datagram, packets
written out byte by byte, the checksum against RFC 1071's plain sum, and random and mutated
bytes that raise nothing but the codec's own error."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.codecs import icmp
from exporter.codecs.icmp import Echo, IcmpCodecError, IcmpError, build_echo, checksum, parse

A4 = bytes([192, 0, 2, 1])  # us
B4 = bytes([198, 51, 100, 7])  # the target
R4 = bytes([203, 0, 113, 9])  # a router on the way
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")


def plain_checksum(data: bytes) -> int:
    """RFC 1071 §4.1, word by word with end-around carry: the oracle."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(source: bytes, destination: bytes, protocol: int, payload: bytes, ttl: int = 64,
         options: bytes = b"", fragment: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), 0x1234,
                         fragment, ttl, protocol, 0, source, destination) + options
    header = header[:10] + plain_checksum(header).to_bytes(2, "big") + header[12:]
    return header + payload


def ipv6(source: bytes, destination: bytes, next_header: int, payload: bytes,
         hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit, source,
                       destination) + payload


def icmp4(kind: int, code: int, rest: bytes, data: bytes) -> bytes:
    message = bytes([kind, code, 0, 0]) + rest + data
    return message[:2] + plain_checksum(message).to_bytes(2, "big") + message[4:]


def icmp6(kind: int, code: int, rest: bytes, data: bytes) -> bytes:
    return bytes([kind, code, 0xAB, 0xCD]) + rest + data  # the kernel verified the checksum


# --- echoes ---------------------------------------------------------------------------------


def test_echo_request_v4_byte_for_byte() -> None:
    packet = build_echo(4, 0x1234, 0x0102, b"abcd")
    # type 8, code 0, checksum, identifier, sequence, payload; the checksum by RFC 1071.
    body = bytes.fromhex("0800 0000 1234 0102") + b"abcd"
    assert packet == body[:2] + plain_checksum(body).to_bytes(2, "big") + body[4:]
    assert plain_checksum(packet) == 0


def test_echo_request_v6_leaves_the_checksum_to_the_kernel() -> None:
    assert build_echo(6, 7, 9, b"xy") == bytes.fromhex("8000 0000 0007 0009") + b"xy"


@pytest.mark.parametrize("version", [4, 6])
def test_echo_reply_parsed(version: int) -> None:
    kind = icmp.ECHO_REPLY[version]
    rest = struct.pack("!HH", 0xBEEF, 65535)
    data = icmp4(kind, 0, rest, b"payload") if version == 4 else icmp6(kind, 0, rest,
                                                                        b"payload")
    message = parse(data, version)
    assert (message.type, message.code, message.outer) == (kind, 0, None)
    assert message.body == Echo(True, 0xBEEF, 65535, b"payload")


def test_echo_reply_with_the_outer_ipv4_header() -> None:
    reply = icmp4(0, 0, struct.pack("!HH", 1, 2), b"x" * 5)
    message = parse(ipv4(B4, A4, 1, reply, ttl=57, options=b"\x01" * 4), 4, ip_header=True)
    assert message.body == Echo(True, 1, 2, b"xxxxx")
    assert message.outer is not None
    assert (message.outer.source, message.outer.destination) == ("198.51.100.7", "192.0.2.1")
    assert (message.outer.ttl, message.outer.length, message.outer.protocol) == (57, 24, 1)


@pytest.mark.parametrize("version", [4, 6])
def test_request_round_trip(version: int) -> None:
    message = parse(build_echo(version, 40000, 3, b"\0" * 56), version)
    assert message.body == Echo(False, 40000, 3, b"\0" * 56)


def test_payload_limits() -> None:
    assert icmp.MAX_PAYLOAD == {4: 65507, 6: 65527}
    assert len(build_echo(4, 1, 1, b"\0" * 65507)) == 65515
    with pytest.raises(IcmpCodecError, match="at most 65507"):
        build_echo(4, 1, 1, b"\0" * 65508)
    with pytest.raises(IcmpCodecError, match="at most 65527"):
        build_echo(6, 1, 1, b"\0" * 65528)
    with pytest.raises(IcmpCodecError, match="0 to 65535"):
        build_echo(4, 65536, 1, b"")


# --- errors and their quotes ----------------------------------------------------------------


def test_time_exceeded_quoting_our_echo_v4() -> None:
    ours = build_echo(4, 0x4242, 17, b"z" * 56)
    quoted = ipv4(A4, B4, 1, ours[:8], ttl=1)  # a router quotes the header and 64 bits
    packet = ipv4(R4, A4, 1, icmp4(11, 0, b"\0" * 4, quoted), ttl=63)
    message = parse(packet, 4, ip_header=True)
    error = message.body
    assert isinstance(error, IcmpError)
    assert (error.category, error.describe()) == ("time_exceeded",
                                                  "time exceeded (TTL exceeded in transit)")
    assert message.outer is not None and message.outer.source == "203.0.113.9"
    assert (error.quoted.ip.source, error.quoted.ip.destination) == ("192.0.2.1",
                                                                     "198.51.100.7")
    assert (error.quoted.ip.protocol, error.quoted.ip.ttl) == (1, 1)
    assert error.quoted.echo_request
    assert (error.quoted.identifier, error.quoted.sequence) == (0x4242, 17)


def test_port_unreachable_quoting_udp_v4() -> None:
    udp = struct.pack("!HHHH", 40001, 33434, 8, 0)
    error = parse(icmp4(3, 3, b"\0" * 4, ipv4(A4, B4, 17, udp)), 4).body
    assert isinstance(error, IcmpError)
    assert error.category == "unreachable"
    assert error.describe() == "destination unreachable (port unreachable)"
    assert (error.quoted.source_port, error.quoted.destination_port) == (40001, 33434)
    assert error.quoted.identifier is None and not error.quoted.echo_request


def test_fragmentation_needed_is_packet_too_big_with_the_mtu() -> None:
    quoted = ipv4(A4, B4, 1, build_echo(4, 5, 6, b"")[:8])
    error = parse(icmp4(3, 4, struct.pack("!HH", 0, 1400), quoted), 4).body
    assert isinstance(error, IcmpError)
    assert (error.category, error.mtu) == ("packet_too_big", 1400)
    assert error.describe() == "destination unreachable (fragmentation needed), mtu 1400"


def test_parameter_problem_pointer_and_other_errors_v4() -> None:
    quoted = ipv4(A4, B4, 1, build_echo(4, 5, 6, b"")[:8])
    error = parse(icmp4(12, 0, bytes([20, 0, 0, 0]), quoted), 4).body
    assert isinstance(error, IcmpError)
    assert (error.category, error.pointer) == ("parameter_problem", 20)
    redirect = parse(icmp4(5, 1, R4, quoted), 4).body
    assert isinstance(redirect, IcmpError) and redirect.category == "other"
    assert redirect.describe() == "redirect (code 1)"


def test_v6_errors() -> None:
    ours = build_echo(6, 9, 10, b"q" * 8)
    quoted = ipv6(A6, B6, 58, ours, hop_limit=1)
    too_big = parse(icmp6(2, 0, struct.pack("!I", 1280), quoted), 6).body
    assert isinstance(too_big, IcmpError)
    assert (too_big.category, too_big.mtu) == ("packet_too_big", 1280)
    assert (too_big.quoted.identifier, too_big.quoted.sequence) == (9, 10)
    assert too_big.quoted.ip.destination == "2001:db8::2"
    problem = parse(icmp6(4, 1, struct.pack("!I", 40), quoted), 6).body
    assert isinstance(problem, IcmpError)
    assert (problem.category, problem.pointer) == ("parameter_problem", 40)
    unreachable = parse(icmp6(1, 3, b"\0" * 4, quoted), 6).body
    assert isinstance(unreachable, IcmpError)
    assert unreachable.describe() == "destination unreachable (address unreachable)"
    exceeded = parse(icmp6(3, 0, b"\0" * 4, quoted), 6).body
    assert isinstance(exceeded, IcmpError) and exceeded.category == "time_exceeded"


def test_v6_quote_behind_extension_headers() -> None:
    ours = build_echo(6, 77, 78, b"")
    # hop-by-hop (8 bytes) then a first fragment (offset 0), then ICMPv6.
    hop = bytes([44, 0]) + b"\x01\x04\0\0\0\0"
    fragment = bytes([58, 0]) + struct.pack("!HI", 1, 99)  # offset 0, M flag set
    quoted = ipv6(A6, B6, 0, hop + fragment + ours)
    error = parse(icmp6(3, 1, b"\0" * 4, quoted), 6).body
    assert isinstance(error, IcmpError)
    assert (error.quoted.ip.protocol, error.quoted.ip.length) == (58, 56)
    assert (error.quoted.identifier, error.quoted.sequence) == (77, 78)
    later = bytes([58, 0]) + struct.pack("!HI", 8 << 3, 99)  # a later fragment
    error = parse(icmp6(3, 1, b"\0" * 4, ipv6(A6, B6, 44, later + b"12345678")), 6).body
    assert isinstance(error, IcmpError)
    assert error.quoted.identifier is None and not error.quoted.ip.first_fragment


def test_informational_messages_have_no_body() -> None:
    advert = parse(icmp6(134, 0, b"\0" * 4, b""), 6)  # a router advertisement
    assert (advert.type, advert.body) == (134, None)
    assert parse(icmp4(13, 0, b"\0" * 4, b"\0" * 12), 4).body is None  # timestamp request


@pytest.mark.parametrize(("data", "version", "ip_header", "message"), [
    (b"", 4, False, "shorter than the 8-byte ICMP header"),
    (b"\x00\x00\x00", 6, False, "shorter than the 8-byte"),
    (bytes.fromhex("0000 0000 0001 0001"), 4, False, "bad ICMP checksum"),
    (ipv4(B4, A4, 17, b"\0" * 8), 4, True, "IP protocol 17, not ICMP"),
    (ipv4(B4, A4, 1, b"")[:12], 4, True, "cut to 12 bytes, within its 20-byte IPv4 header"),
    (b"\x60" + b"\0" * 30, 4, True, "IP version 6, not 4"),
    (b"\x44" + b"\0" * 30, 4, True, "header length is 16 bytes"),
    # errors whose quote is cut short: no way to say which datagram it was about
    (icmp4(11, 0, b"\0" * 4, ipv4(A4, B4, 1, b"")[:16]), 4, False, "within its 20-byte"),
    (icmp4(11, 0, b"\0" * 4, ipv4(A4, B4, 1, b"\x08\0\0\0")), 4, False,
     "quoted ICMP message is cut to 4 bytes"),
    (icmp4(3, 3, b"\0" * 4, ipv4(A4, B4, 17, b"\0\1")), 4, False, "without its ports"),
    (icmp4(3, 3, b"\0" * 4, b""), 4, False, "the quoted datagram is empty"),
    (icmp6(1, 0, b"\0" * 4, b"\x60" + b"\0" * 20), 6, False, "within its 40-byte IPv6"),
    (icmp6(1, 0, b"\0" * 4, ipv6(A6, B6, 0, b"\0\0")), 6, False, "extension headers are cut"),
    (icmp6(1, 0, b"\0" * 4, ipv6(A6, B6, 0, bytes([58, 9]) + b"\0" * 6)), 6, False,
     "extension headers are cut short"),
    (icmp6(1, 0, b"\0" * 4, ipv6(A6, B6, 60, bytes([60, 0]) + b"\0" * 6) * 1
           + (bytes([60, 0]) + b"\0" * 6) * 9), 6, False, "more than 8 IPv6 extension"),
])
def test_malformed(data: bytes, version: int, ip_header: bool, message: str) -> None:
    with pytest.raises(IcmpCodecError, match=message):
        parse(data, version, ip_header)
    assert issubclass(IcmpCodecError, ValueError)


# --- properties -----------------------------------------------------------------------------


@given(st.binary(max_size=4096))
def test_checksum_is_rfc_1071(data: bytes) -> None:
    assert checksum(data) == plain_checksum(data)


def test_checksum_edges() -> None:
    assert checksum(b"") == plain_checksum(b"") == 0xFFFF
    assert checksum(b"\xff\xff") == plain_checksum(b"\xff\xff") == 0
    assert checksum(b"\xff\xff" * 3 + b"\0\1") == plain_checksum(b"\xff\xff" * 3 + b"\0\1")


@given(st.sampled_from([4, 6]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.binary(max_size=2048))
def test_echo_round_trip(version: int, identifier: int, sequence: int, payload: bytes) -> None:
    message = parse(build_echo(version, identifier, sequence, payload), version)
    assert message.body == Echo(False, identifier, sequence, payload)


@settings(max_examples=2000)
@given(st.binary(max_size=200), st.sampled_from([4, 6]), st.booleans())
def test_random_bytes_raise_only_the_codec_error(data: bytes, version: int,
                                                 ip_header: bool) -> None:
    try:
        message = parse(data, version, ip_header)
    except IcmpCodecError:
        return
    assert message.version == version


def _error_v4() -> bytes:
    quoted = ipv4(A4, B4, 1, build_echo(4, 5, 6, b"p" * 8))
    return ipv4(R4, A4, 1, icmp4(11, 0, b"\0" * 4, quoted))


def _error_v6() -> bytes:
    hop = bytes([58, 0]) + b"\x01\x04\0\0\0\0"
    return icmp6(1, 4, b"\0" * 4, ipv6(A6, B6, 0, hop + build_echo(6, 5, 6, b"p" * 8)))


@settings(max_examples=3000)
@given(st.sampled_from([(_error_v4(), 4, True), (_error_v6(), 6, False)]),
       st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(0, 200))
def test_mutated_errors_raise_only_the_codec_error(
        sample: tuple[bytes, int, bool], flips: list[tuple[int, int]], cut: int) -> None:
    data, version, ip_header = sample
    mutated = bytearray(data)
    for position, value in flips:
        if position < len(mutated):
            mutated[position] = value
    try:
        message = parse(bytes(mutated[:len(mutated) - cut]), version, ip_header)
    except IcmpCodecError:
        return
    if isinstance(message.body, IcmpError):
        assert message.body.category in icmp.CATEGORIES
        assert message.body.quoted.ip.version == version
        message.body.describe()


def test_a_quoted_echo_is_read_without_its_checksum() -> None:
    """A ping socket's error queue gives what the error quoted of the echo: its header, cut
    from the payload its checksum covers."""
    cut = build_echo(4, 1, 2, b"payload")[:8]
    with pytest.raises(IcmpCodecError, match="checksum"):
        parse(cut, 4)
    assert parse(cut, 4, verify=False).body == Echo(False, 1, 2, b"")
