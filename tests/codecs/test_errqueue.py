"""The error-queue codec: sock_extended_err and its offender written out byte by byte for both
families (and IPv4 on a dual-stack socket), cut and unknown ones refused with the codec's own
error, round trips through `build`, and random bytes that raise nothing else."""

from __future__ import annotations

import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.codecs import errqueue
from exporter.codecs.errqueue import ErrQueueCodecError, ExtendedError, build, find, parse

E = "<" if sys.byteorder == "little" else ">"  # the kernel's structs are in host order


def raw(errno: int, origin: int, kind: int, code: int, info: int = 0, data: int = 0) -> bytes:
    return struct.pack(E + "IBBBBII", errno, origin, kind, code, 0, info, data)


def sockaddr_in(address: bytes, port: int = 0) -> bytes:
    return struct.pack(E + "H", 2) + struct.pack("!H", port) + address + bytes(8)


def sockaddr_in6(address: bytes, port: int = 0) -> bytes:
    return (struct.pack(E + "H", 10) + struct.pack("!HI", port, 0) + address
            + struct.pack(E + "I", 0))


def test_time_exceeded_from_an_ipv4_router() -> None:
    data = raw(113, 2, 11, 0) + sockaddr_in(bytes([10, 231, 1, 2]))
    assert parse(data) == ExtendedError(113, 2, 11, 0, 0, 0, (2, "10.231.1.2"))
    assert parse(data).from_icmp and parse(data).version == 4
    assert parse(data).offender_address == "10.231.1.2"


def test_port_unreachable_from_an_ipv6_host() -> None:
    address = bytes.fromhex("fd000231000900000000000000000001")
    error = parse(raw(111, 3, 1, 4) + sockaddr_in6(address, 33434))
    assert error == ExtendedError(111, 3, 1, 4, 0, 0, (10, "fd00:231:9::1"))
    assert error.version == 6


def test_an_ipv4_error_on_a_dual_stack_socket_names_an_ipv4_offender() -> None:
    mapped = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])
    assert parse(raw(111, 2, 3, 3) + sockaddr_in6(mapped)).offender == (2, "192.0.2.1")


def test_the_mtu_of_a_packet_too_big_is_in_info() -> None:
    error = parse(raw(90, 3, 2, 0, info=1280) + sockaddr_in6(bytes(15) + b"\1"))
    assert (error.type, error.info, error.offender) == (2, 1280, (10, "::1"))


def test_a_local_error_has_no_offender() -> None:
    error = parse(raw(90, 1, 0, 0, info=1500) + struct.pack(E + "H", 0) + bytes(14))
    assert error.offender is None and not error.from_icmp and error.version == 0
    assert error.offender_address == ""
    # A buffer cut before the sockaddr: no offender rather than an error.
    assert parse(raw(90, 1, 0, 0)).offender is None


@pytest.mark.parametrize(("data", "message"), [
    (b"", "0 bytes, shorter than sock_extended_err (16)"),
    (raw(111, 2, 3, 3)[:15], "15 bytes, shorter than sock_extended_err (16)"),
    (raw(111, 2, 3, 3) + sockaddr_in(bytes(4))[:7], "offender sockaddr_in cut at 7 bytes"),
    (raw(111, 3, 1, 4) + sockaddr_in6(bytes(16))[:23], "offender sockaddr_in6 cut at 23 bytes"),
    (raw(111, 2, 3, 3) + struct.pack(E + "H", 1) + bytes(14),
     "offender of unknown address family 1"),
])
def test_what_is_not_an_extended_error(data: bytes, message: str) -> None:
    with pytest.raises(ErrQueueCodecError) as caught:
        parse(data)
    assert str(caught.value) == message


def test_find_picks_the_error_among_control_messages() -> None:
    data = raw(113, 2, 11, 0) + sockaddr_in(bytes([10, 0, 0, 1]))
    stamp = (1, 35, bytes(16))  # SOL_SOCKET, SCM_TIMESTAMPNS
    assert find([stamp, (errqueue.SOL_IP, errqueue.IP_RECVERR, data)]) == parse(data)
    assert find([stamp, (errqueue.SOL_IPV6, errqueue.IPV6_RECVERR, data)]) == parse(data)
    assert find([stamp]) is None
    assert find([(errqueue.SOL_IP, errqueue.IPV6_RECVERR, data)]) is None  # wrong pair


def test_build_is_what_the_kernel_writes() -> None:
    error = ExtendedError(113, 2, 11, 0, 0, 0, (2, "10.231.1.2"))
    assert build(error, port=7) == raw(113, 2, 11, 0) + sockaddr_in(bytes([10, 231, 1, 2]), 7)


errors = st.builds(
    ExtendedError, st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
    st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.one_of(st.none(), st.ip_addresses(v=4).map(lambda a: (2, str(a))),
              st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None)
              .map(lambda a: (10, str(a)))))


@settings(max_examples=1000)
@given(errors, st.integers(0, 65535))
def test_round_trip(error: ExtendedError, port: int) -> None:
    assert parse(build(error, port=port)) == error


@settings(max_examples=3000)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_the_codec_error(data: bytes) -> None:
    try:
        error = parse(data)
    except ErrQueueCodecError:
        return
    assert len(data) >= errqueue.SIZE
    assert error.offender is None or error.offender[0] in (2, 10)


@settings(max_examples=2000)
@given(errors, st.data())
def test_mutated_errors_raise_only_the_codec_error(error: ExtendedError,
                                                    data: st.DataObject) -> None:
    packet = bytearray(build(error))
    for _ in range(data.draw(st.integers(1, 4))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    try:
        parsed = parse(bytes(packet[:cut]))
    except ErrQueueCodecError:
        assert cut < errqueue.SIZE or packet[errqueue.SIZE:errqueue.SIZE + 2] != bytes(2)
        return
    assert parsed.errno == struct.unpack_from(E + "I", packet)[0]
