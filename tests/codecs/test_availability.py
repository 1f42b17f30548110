"""The availability file's records: what is written is read back, and whatever a crash or a
disk leaves of it is read up to its last good record, never an exception."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.codecs import availability as codec
from exporter.codecs.availability import (
    HEADER,
    AvailabilityCodecError,
    Minutes,
    Name,
    Quarters,
    decode,
    encode,
)

RECORDS = (Name(1, "web"), Name(2, "fleet\t10.0.0.1:80"),
           Minutes(29_000_000, ((1, 60, 59, 1234), (2, 6, 6, codec.NO_LATENCY))),
           Quarters(1_933_000, ((1, 900, 880), (2, 90, 0))),
           Minutes(29_000_001, ((2, 1, 1, 0),)))
FILE = HEADER + encode(RECORDS)


def test_what_is_written_is_read_back() -> None:
    decoded = decode(FILE)
    assert decoded.records == RECORDS
    assert (decoded.good, decoded.dropped, decoded.header_ok) == (len(FILE), 0, True)


def test_the_format_is_as_documented() -> None:
    """Version 1, byte for byte: a header, then length, CRC-32 and payload."""
    assert HEADER == b"NSAV\x01\x00\x00\x00"
    [framed] = [encode([Name(7, "ab")])]
    payload = b"\x01" + (7).to_bytes(4, "little") + b"ab"
    assert framed == struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    entry = encode([Minutes(5, ((7, 3, 2, 100),))])[8:]
    assert entry == b"\x02" + struct.pack("<I", 5) + struct.pack("<IHHI", 7, 3, 2, 100)


def test_a_cut_anywhere_keeps_every_whole_record_before_it() -> None:
    ends = [len(HEADER)]
    for record in RECORDS:
        ends.append(ends[-1] + len(encode([record])))
    for cut in range(len(FILE) + 1):
        decoded = decode(FILE[:cut])
        if cut < len(HEADER):
            assert decoded.records == () and not decoded.header_ok and decoded.dropped == cut
            continue
        whole = sum(1 for end in ends[1:] if end <= cut)
        assert decoded.records == RECORDS[:whole], cut
        assert decoded.good == ends[whole] and decoded.good + decoded.dropped == cut


def test_a_flipped_byte_stops_reading_at_its_record() -> None:
    second = len(HEADER) + len(encode(RECORDS[:1]))
    for at in range(second, second + len(encode(RECORDS[1:2]))):
        damaged = bytearray(FILE)
        damaged[at] ^= 0x40
        decoded = decode(bytes(damaged))
        assert decoded.records == RECORDS[:1], at
        assert decoded.dropped == len(FILE) - second


@pytest.mark.parametrize(("data", "why"), [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"NSAV\x02\x00\x00\x00" + FILE[8:], "a later version", id="version-2"),
    pytest.param(b"\x00" * 4096, "zeros (a file preallocated, never written)", id="zeros"),
    pytest.param(b"GIF89a" + bytes(range(256)) * 4, "another file", id="garbage"),
])
def test_a_file_that_is_not_version_1_is_not_read(data: bytes, why: str) -> None:
    decoded = decode(data)
    assert decoded.records == () and not decoded.header_ok, why
    assert decoded.dropped == len(data)


def test_records_that_frame_right_but_say_nonsense_stop_the_reading() -> None:
    def framed(payload: bytes) -> bytes:
        return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload

    good = HEADER + encode([Name(1, "a")])
    for payload in (
        b"\x09" + bytes(8),  # an unknown type
        b"\x02" + struct.pack("<I", 1) + struct.pack("<IHHI", 2, 1, 1, 0),  # an id never named
        b"\x02" + struct.pack("<I", 1) + struct.pack("<IHHI", 1, 1, 2, 0),  # 2 of 1 succeeded
        b"\x03" + struct.pack("<I", 1) + b"\x01\x00",  # a torn entry
        b"\x01" + struct.pack("<I", 3) + b"\xff\xfe",  # a key that is not UTF-8
        b"\x01" + struct.pack("<I", 3),  # a key that is empty
        b"",  # no type at all
    ):
        decoded = decode(good + framed(payload) + encode([Name(2, "b")]))
        assert decoded.records == (Name(1, "a"),), payload
        assert decoded.good == len(good)
    # A length past the cap is refused before anything is read of it.
    huge = HEADER + struct.pack("<II", codec.MAX_PAYLOAD + 1, 0) + bytes(16)
    assert decode(huge).records == () and decode(huge).good == len(HEADER)


def test_a_batch_longer_than_a_record_is_several_records() -> None:
    entries = [(1, 1, 1, 5)] * (codec.MINUTES_PER_RECORD + 3)
    records = list(codec.minutes(42, entries))
    assert [len(r.entries) for r in records] == [codec.MINUTES_PER_RECORD, 3]
    data = HEADER + encode([Name(1, "a"), *records])
    assert all(len(encode([r])) - 8 <= codec.MAX_PAYLOAD for r in records)
    assert sum(len(r.entries) for r in decode(data).records[1:]) == len(entries)


def test_values_the_format_cannot_hold_are_refused_when_writing() -> None:
    with pytest.raises(AvailabilityCodecError):
        encode([Minutes(1, ((1, 70_000, 1, 0),))])  # runs are 16 bits a minute
    with pytest.raises(AvailabilityCodecError):
        encode([Quarters(1, ((1, 1, 2),))])
    with pytest.raises(AvailabilityCodecError):
        encode([Minutes(1, ((1, 1, 1, 0),) * (codec.MINUTES_PER_RECORD + 1))])


names = st.builds(Name, st.integers(1, 50), st.text(min_size=1, max_size=40))


@st.composite
def files(draw: st.DrawFn) -> tuple[bytes, tuple[codec.Record, ...]]:
    named = draw(st.lists(names, min_size=1, max_size=5, unique_by=lambda n: n.id))
    ids = [n.id for n in named]
    counts = st.integers(0, 0xFFFF).flatmap(lambda runs: st.tuples(st.just(runs),
                                                                   st.integers(0, runs)))
    minute = st.builds(lambda slot, entries: Minutes(slot, tuple(entries)),
                       st.integers(0, 2**32 - 1),
                       st.lists(st.tuples(st.sampled_from(ids), counts,
                                          st.integers(0, 2**32 - 1)).map(
                           lambda e: (e[0], e[1][0], e[1][1], e[2])), max_size=5))
    records = (*named, *draw(st.lists(minute, max_size=5)))
    return HEADER + encode(records), records


@given(files(), st.data())
def test_any_file_cut_and_followed_by_garbage_keeps_a_prefix_of_its_records(
        made: tuple[bytes, tuple[codec.Record, ...]], data: st.DataObject) -> None:
    whole, records = made
    assert decode(whole).records == records
    cut = data.draw(st.integers(0, len(whole)))
    tail = data.draw(st.binary(max_size=200))
    decoded = decode(whole[:cut] + tail)
    # (garbage that frames as a record with a matching CRC-32: a chance of 2^-32 a record)
    assert decoded.records == records[:len(decoded.records)]
    assert decoded.good + decoded.dropped == cut + len(tail)


@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    decoded = decode(HEADER + data)
    assert decoded.good + decoded.dropped == len(HEADER) + len(data)
