"""The SNTP codec: golden packets, every rule of a reply, the 2036 era change, random bytes, and
ntplib as an independent oracle for what both decode."""

from __future__ import annotations

import contextlib
import math
import secrets
import struct
from dataclasses import replace
from fractions import Fraction

import ntplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.codecs import ntp as codec
from exporter.codecs.ntp import (
    BogusReply,
    KissOfDeath,
    NtpCodecError,
    Packet,
    Unsynchronized,
    build_request,
    difference,
    encode,
    from_unix_ns,
    parse,
    read_reply,
    reference_text,
    to_unix_ns,
)

NS = 10**9
ERA1_UNIX = 2_085_978_496  # 2036-02-07T06:28:16Z: NTP era 1 begins, the seconds field wraps
ORIGIN = 0x0123456789ABCDEF  # the random transmit timestamp of our request

# A server's reply, written out field by field (RFC 5905 Figure 8), independent of `encode`:
# LI 0, VN 4, mode 4; stratum 2; poll 6; precision -23; root delay 0x0120 / 2**16 s; root
# dispersion 0x0345 / 2**16 s; reference ID 192.0.2.1; then the reference, origin, receive and
# transmit timestamps. Seconds 0xE9B3F2E0 are 2024-03-06T09:27:28Z (era 0).
GOLDEN_REPLY = bytes.fromhex(
    "24 02 06 e9"
    "00 00 01 20"
    "00 00 03 45"
    "c0 00 02 01"
    "e9 b3 f2 d0 00 00 00 00"  # reference: 16 s before T1
    "01 23 45 67 89 ab cd ef"  # origin: echoes ORIGIN
    "e9 b3 f2 e1 40 00 00 00"  # receive T2 = T1 + 1.25 s
    "e9 b3 f2 e1 80 00 00 00"  # transmit T3 = T1 + 1.5 s
)
T1 = 0xE9B3F2E0_00000000
T4 = 0xE9B3F2E0_80000000  # T1 + 0.5 s
# θ = ((T2 − T1) + (T3 − T4)) / 2 = (1.25 + 1.0) / 2; δ = (T4 − T1) − (T3 − T2) = 0.5 − 0.25
GOLDEN_OFFSET = 1.125
GOLDEN_DELAY = 0.25


def golden_packet() -> Packet:
    return read_reply(GOLDEN_REPLY, ORIGIN)


def unix_ns(ntp: int) -> int:
    """An era-0 NTP timestamp in ns since the Unix epoch, exactly (for building test times)."""
    return (ntp * NS >> 32) - codec.UNIX_EPOCH * NS


# --- golden packets -------------------------------------------------------------------------


def test_golden_request() -> None:
    wire = build_request(ORIGIN)
    assert wire == bytes([0x23]) + bytes(39) + ORIGIN.to_bytes(8, "big")
    packet = parse(wire)
    assert (packet.leap, packet.version, packet.mode) == (0, 4, 3)


def test_golden_reply_fields() -> None:
    packet = golden_packet()
    assert (packet.leap, packet.version, packet.mode, packet.stratum) == (0, 4, 4, 2)
    assert (packet.poll, packet.precision) == (6, -23)
    assert packet.root_delay_seconds == 0x120 / 65536
    assert packet.root_dispersion_seconds == 0x345 / 65536
    assert packet.precision_seconds == 2.0**-23
    assert packet.reference_text == "192.0.2.1"
    assert (packet.origin, packet.receive, packet.transmit) == (
        ORIGIN, T1 + (5 << 30), T1 + (3 << 31))
    assert encode(packet) == GOLDEN_REPLY


def test_golden_reply_offset_delay_and_root_distance() -> None:
    sample = codec.Sample(golden_packet(), T1, golden_packet().receive,
                          golden_packet().transmit, T4)
    assert sample.offset == GOLDEN_OFFSET
    assert sample.delay == GOLDEN_DELAY
    expected = ((0x120 / 65536 + GOLDEN_DELAY) / 2 + 0x345 / 65536 + 2.0**-23
                + codec.PHI * GOLDEN_DELAY)
    assert sample.root_distance == pytest.approx(expected, abs=1e-15)
    # The same from our own clock's nanoseconds, as the check computes it.
    same = codec.sample(golden_packet(), unix_ns(T1), unix_ns(T4))
    assert (same.t1, same.t4) == (T1, T4)
    assert same.offset == GOLDEN_OFFSET


def test_extension_fields_after_the_header_are_ignored() -> None:
    assert read_reply(GOLDEN_REPLY + bytes(20), ORIGIN) == golden_packet()


# --- every rule ------------------------------------------------------------------------------


def mutated(**changes: object) -> bytes:
    return encode(replace(golden_packet(), **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error", "rule"),
    [
        pytest.param({"mode": 3}, BogusReply, "wrong_mode", id="mode-3"),
        pytest.param({"mode": 5}, BogusReply, "wrong_mode", id="mode-5-broadcast"),
        pytest.param({"origin": ORIGIN + 1}, BogusReply, "wrong_origin", id="wrong-origin"),
        pytest.param({"origin": 0}, BogusReply, "wrong_origin", id="zero-origin"),
        pytest.param({"transmit": 0}, BogusReply, "zero_transmit", id="zero-transmit"),
        pytest.param({"receive": 0}, BogusReply, "zero_receive", id="zero-receive"),
        pytest.param({"receive": T1 + (2 << 32)}, BogusReply, "receive_after_transmit",
                     id="receive-after-transmit"),
        pytest.param({"stratum": 0, "leap": 3, "reference_id": b"RATE"}, KissOfDeath,
                     "kiss_of_death", id="kiss-RATE-leap-3"),
        pytest.param({"stratum": 0, "reference_id": b"DENY"}, KissOfDeath, "kiss_of_death",
                     id="kiss-DENY"),
        pytest.param({"stratum": 0, "reference_id": bytes(4)}, Unsynchronized,
                     "unsynchronized", id="stratum-0-no-code"),
        pytest.param({"stratum": 0, "leap": 3, "reference_id": bytes(4)}, Unsynchronized,
                     "unsynchronized", id="stratum-0-leap-3-as-chronyd"),
        pytest.param({"stratum": 0, "leap": 3, "reference_id": b"INIT"}, KissOfDeath,
                     "kiss_of_death", id="kiss-INIT-as-ntpd"),
        pytest.param({"leap": 3}, Unsynchronized, "unsynchronized", id="leap-3"),
        pytest.param({"stratum": 16}, Unsynchronized, "unsynchronized", id="stratum-16"),
        pytest.param({"stratum": 200}, Unsynchronized, "unsynchronized", id="stratum-200"),
        # The order of the contract: a sanity failure hides everything after it.
        pytest.param({"stratum": 0, "reference_id": b"RATE", "origin": 7}, BogusReply,
                     "wrong_origin", id="spoofed-kiss-ignored"),
        pytest.param({"mode": 3, "leap": 3}, BogusReply, "wrong_mode", id="mode-before-leap"),
        pytest.param({"stratum": 0, "transmit": 0}, BogusReply, "zero_transmit",
                     id="zero-transmit-before-kiss"),
    ],
)
def test_reply_rules(changes: dict[str, object], error: type[NtpCodecError], rule: str) -> None:
    with pytest.raises(error) as raised:
        read_reply(mutated(**changes), ORIGIN)
    assert type(raised.value) is error
    assert raised.value.rule == rule


@pytest.mark.parametrize(
    ("reference_id", "code", "message"),
    [
        (b"RATE", "RATE", "Kiss-o'-Death RATE"),
        (b"RSTR", "RSTR", "Kiss-o'-Death RSTR"),
        (b"INIT", "INIT", "Kiss-o'-Death INIT"),
        (b"XYZW", "OTHER", "Kiss-o'-Death XYZW (OTHER)"),
        (b"GO\0\0", "OTHER", "Kiss-o'-Death GO (OTHER)"),
    ],
)
def test_kiss_codes(reference_id: bytes, code: str, message: str) -> None:
    with pytest.raises(KissOfDeath) as raised:
        read_reply(mutated(stratum=0, reference_id=reference_id), ORIGIN)
    assert (raised.value.code, str(raised.value)) == (code, message)


@pytest.mark.parametrize("reference_id", [bytes(4), b"RA\nE", b"\xff\xff\xff\xff", b" RAT"])
def test_stratum_0_without_a_kiss_code_is_unsynchronized(reference_id: bytes) -> None:
    with pytest.raises(Unsynchronized) as raised:
        read_reply(mutated(stratum=0, reference_id=reference_id), ORIGIN)
    assert str(raised.value) == "the server is not synchronized (leap 0, stratum 0)"


@pytest.mark.parametrize(
    ("reference_id", "stratum", "text"),
    [
        (b"GPS\0", 1, "GPS"),
        (b"PPS\0", 1, "PPS"),
        (b"\xc0\x00\x02\x01", 2, "192.0.2.1"),
        (b"\x7f\x7f\x01\x01", 10, "127.127.1.1"),
        (b"\x01\x02\x03\x04", 1, "0x01020304"),
    ],
)
def test_reference_text(reference_id: bytes, stratum: int, text: str) -> None:
    assert reference_text(reference_id, stratum) == text


def test_every_truncated_prefix_is_short() -> None:
    for size in range(codec.PACKET_SIZE):
        with pytest.raises(BogusReply) as raised:
            read_reply(GOLDEN_REPLY[:size], ORIGIN)
        assert raised.value.rule == "short"
        assert str(raised.value) == f"{size} bytes, shorter than the 48-byte NTP header"


@pytest.mark.parametrize(
    "changes",
    [{"leap": 4}, {"version": 8}, {"mode": -1}, {"stratum": 256}, {"precision": 128},
     {"root_delay": 2**32}, {"transmit": 2**64}, {"reference_id": "GPS"}],
)
def test_encode_refuses_what_does_not_fit(changes: dict[str, object]) -> None:
    with pytest.raises(NtpCodecError):
        encode(replace(golden_packet(), **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("transmit", [0, -1, 2**64])
def test_build_request_refuses_an_impossible_transmit(transmit: int) -> None:
    with pytest.raises(NtpCodecError):
        build_request(transmit)


# --- the 2036 era change ----------------------------------------------------------------------


def exchange(t1_ns: int, offset_ns: int, forward_ns: int, server_ns: int,
             back_ns: int) -> codec.Sample:
    """A sample whose true offset and delay are known to the nanosecond."""
    t2 = t1_ns + forward_ns + offset_ns
    t3 = t2 + server_ns
    t4 = t1_ns + forward_ns + server_ns + back_ns
    packet = replace(golden_packet(), receive=from_unix_ns(t2), transmit=from_unix_ns(t3))
    return codec.sample(packet, t1_ns, t4)


@pytest.mark.parametrize(
    ("t1_ns", "offset_ns"),
    [
        pytest.param((ERA1_UNIX - 3600) * NS, 250_000, id="all-in-era-0"),
        pytest.param((ERA1_UNIX + 3600) * NS, 250_000, id="all-in-era-1"),
        pytest.param(ERA1_UNIX * NS - 1_000, 5_000, id="server-ahead-into-era-1"),
        pytest.param(ERA1_UNIX * NS + 1_000, -5_000, id="server-behind-in-era-0"),
        pytest.param(ERA1_UNIX * NS - 30 * NS, 60 * NS, id="a-minute-across"),
        pytest.param(ERA1_UNIX * NS + 30 * NS, -60 * NS, id="a-minute-back-across"),
        pytest.param(ERA1_UNIX * NS - 10**6, 0, id="our-clock-crosses-mid-exchange"),
        pytest.param(ERA1_UNIX * NS, (2**31 - 100) * NS, id="68-years-ahead"),
        pytest.param(ERA1_UNIX * NS, -(2**31 - 100) * NS, id="68-years-behind"),
    ],
)
def test_era_change(t1_ns: int, offset_ns: int) -> None:
    forward, server, back = 700_000, 300_000, 900_000  # asymmetric: θ carries half of it
    sample = exchange(t1_ns, offset_ns, forward, server, back)
    expected_offset = Fraction(offset_ns, NS) + Fraction(forward - back, 2 * NS)
    # Exact but for the 2**-32 s steps of the timestamps (four roundings) and the float.
    tolerance = Fraction(4, 2**32) + abs(expected_offset) / 2**50
    assert abs(Fraction(sample.offset) - expected_offset) < tolerance
    assert abs(Fraction(sample.delay) - Fraction(forward + back, NS)) < Fraction(4, 2**32)


def test_timestamps_wrap_at_the_era_change() -> None:
    assert from_unix_ns(ERA1_UNIX * NS) == 0
    assert from_unix_ns(ERA1_UNIX * NS - 1) == 2**64 - 5  # 1 ns is 4.29 steps of 2**-32 s
    assert from_unix_ns(0) == codec.UNIX_EPOCH << 32
    assert difference(0, 2**64 - 1) == 1
    assert difference(2**64 - 1, 0) == -1
    assert difference(2**63 - 1, 0) == 2**63 - 1
    assert difference(2**63, 0) == -(2**63)


@pytest.mark.parametrize("pivot_s", [ERA1_UNIX - 86400, ERA1_UNIX - 1, ERA1_UNIX, ERA1_UNIX + 1,
                                     ERA1_UNIX + 86400, 1_700_000_000])
@pytest.mark.parametrize("delta_s", [-1000, -1, 0, 1, 1000])
def test_to_unix_picks_the_era_nearest_the_pivot(pivot_s: int, delta_s: int) -> None:
    when = (pivot_s + delta_s) * NS + 250_000_000
    assert abs(to_unix_ns(from_unix_ns(when), pivot_s * NS) - when) <= 1


def test_receive_before_transmit_across_the_era_change() -> None:
    # Received a second before the wrap, sent a second after: fine, not "receive after".
    packet = replace(golden_packet(), receive=2**64 - 2**32, transmit=2**32)
    assert read_reply(encode(packet), ORIGIN) == packet


# --- random bytes -----------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=0, max_size=512), st.integers(min_value=1, max_value=2**64 - 1))
def test_random_datagrams_raise_only_codec_errors(data: bytes, origin: int) -> None:
    try:
        packet = read_reply(data, origin)
    except NtpCodecError as exc:
        assert exc.rule
        return
    sample = codec.sample(packet, 1_700_000_000 * NS, 1_700_000_000 * NS + 1000)
    assert math.isfinite(sample.offset) and math.isfinite(sample.delay)
    assert math.isfinite(sample.root_distance)
    assert packet.reference_text.isprintable()


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=48, max_size=48))
def test_random_headers_with_our_origin_raise_only_codec_errors(head: bytes) -> None:
    # Random bytes rarely echo the origin; these do, and get past the first rules.
    data = head[:24] + ORIGIN.to_bytes(8, "big") + head[32:]
    with contextlib.suppress(NtpCodecError):
        read_reply(data, ORIGIN)


# --- ntplib as an oracle ---------------------------------------------------------------------


def ntplib_stats(data: bytes, destination: int) -> ntplib.NTPStats:
    stats = ntplib.NTPStats()
    stats.from_data(data)
    stats.dest_timestamp = destination / 2**32
    return stats


def assert_agree(data: bytes, origin: int, destination: int) -> None:
    """Our decoding of a valid reply and ntplib's agree, field by field and in offset and
    delay (to ntplib's float resolution, about 0.5 µs at today's timestamps)."""
    ours = read_reply(data, origin)
    theirs = ntplib_stats(data, destination)
    assert (theirs.leap, theirs.version, theirs.mode, theirs.stratum) == (
        ours.leap, ours.version, ours.mode, ours.stratum)
    assert theirs.poll == ours.poll % 256  # ntplib reads poll unsigned
    assert theirs.precision == ours.precision
    assert theirs.root_delay == ours.root_delay_seconds
    assert theirs.root_dispersion == ours.root_dispersion_seconds
    assert theirs.ref_id == int.from_bytes(ours.reference_id, "big")
    for name in ("origin", "receive", "transmit", "reference"):
        mine = getattr(ours, name) / 2**32
        assert getattr(theirs, {"origin": "orig_timestamp", "receive": "recv_timestamp",
                                "transmit": "tx_timestamp", "reference": "ref_timestamp"}[
                                    name]) == pytest.approx(mine, abs=1e-6)
    sample = codec.Sample(ours, origin, ours.receive, ours.transmit, destination)
    assert theirs.offset == pytest.approx(sample.offset, abs=2e-6)
    assert theirs.delay == pytest.approx(sample.delay, abs=2e-6)


def test_ntplib_agrees_on_the_golden_reply() -> None:
    origin = T1  # ntplib takes T1 from the echoed origin: put the real T1 there
    data = mutated(origin=origin)
    assert_agree(data, origin, T4)
    assert ntplib_stats(data, T4).offset == pytest.approx(GOLDEN_OFFSET, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(
    t1=st.integers(min_value=0xD0000000 << 32, max_value=(0xFFFFFFFF << 32) - 2**40),
    forward=st.integers(min_value=0, max_value=2**32),
    offset=st.integers(min_value=-(2**40), max_value=2**40),
    hold=st.integers(min_value=0, max_value=2**31),
    back=st.integers(min_value=0, max_value=2**32),
    stratum=st.integers(min_value=1, max_value=15),
    poll=st.integers(min_value=-128, max_value=127),
    precision=st.integers(min_value=-128, max_value=127),
    root=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    reference_id=st.binary(min_size=4, max_size=4),
)
def test_ntplib_agrees_on_random_valid_replies(
    t1: int, forward: int, offset: int, hold: int, back: int, stratum: int, poll: int,
    precision: int, root: tuple[int, int], reference_id: bytes,
) -> None:
    # Era 0 only: ntplib knows no eras.
    t2 = t1 + forward + offset
    t3 = t2 + hold
    t4 = t1 + forward + hold + back
    packet = Packet(leap=0, version=4, mode=4, stratum=stratum, poll=poll, precision=precision,
                    root_delay=root[0], root_dispersion=root[1], reference_id=reference_id,
                    reference=t1 - 2**36, origin=t1, receive=t2, transmit=t3)
    assert_agree(encode(packet), t1, t4)


def test_ntplib_swallows_what_we_refuse() -> None:
    """Why ntplib is only an oracle: it decodes a Kiss-o'-Death and a reply to someone else's
    request into offsets, where the codec refuses both."""
    t1 = 0xE9B3F2E0_00000000
    # A kiss with zero timestamps: ntplib's offset is about -4e9 s (minus today's seconds
    # since 1900). The codec ignores it (zero transmit) and waits for a real reply.
    kiss = mutated(origin=t1, stratum=0, leap=3, reference_id=b"RATE", receive=0, transmit=0)
    assert ntplib_stats(kiss, t1 + 2**28).offset == pytest.approx(-(t1 >> 32), rel=1e-6)
    with pytest.raises(BogusReply):
        read_reply(kiss, t1)
    # A kiss as ntpd sends it (its timestamps are our transmit time): ntplib sees a normal
    # reply with a tiny offset; the codec sees the kiss.
    ntpd_kiss = mutated(origin=t1, stratum=0, leap=3, reference_id=b"RATE", receive=t1,
                        transmit=t1)
    assert abs(ntplib_stats(ntpd_kiss, t1 + 2**28).offset) < 0.1
    with pytest.raises(KissOfDeath):
        read_reply(ntpd_kiss, t1)
    # A spoofed reply: ntplib has no idea what it asked (it takes the origin as T1); the
    # codec knows the 64 random bits it sent.
    spoofed = mutated(origin=secrets.randbits(64) | 1)
    with pytest.raises(BogusReply):
        read_reply(spoofed, ORIGIN)


def test_packet_layout_is_48_bytes() -> None:
    assert struct.calcsize(ntplib.NTPPacket._PACKET_FORMAT) == codec.PACKET_SIZE
