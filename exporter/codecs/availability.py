"""The availability file's records (`storage.py` keeps the file): bytes ⇄ records, no I/O.

The file is a header and then records, appended, never rewritten in place (compaction writes
a new file and renames it over the old one):

    header   "NSAV" | version (1 byte, 1) | 3 bytes zero
    record   payload length (u32) | CRC-32 of the payload (u32) | payload
    payload  type (1 byte) | body

All integers little-endian. Bodies by type:

    1 NAME      id (u32) | the check's key, UTF-8 (its name, TAB, a target list's target)
    2 MINUTES   minute (u32: Unix time // 60) | entries of id (u32), runs (u16),
                successful runs (u16), slowest successful run in µs (u32, 0xFFFFFFFF: none)
    3 QUARTERS  quarter (u32: Unix time // 900) | entries of id (u32), runs (u32),
                successful runs (u32)

Names give each key a small number once per file, so a minute's entry costs 12 bytes a check.
A later MINUTES or QUARTERS entry for the same id and slot replaces an earlier one: a writer
may write a minute again once more runs have ended in it.

Reading stops at the first record that is not whole and right — a length past the end or
past `MAX_PAYLOAD`, a CRC that does not match, a type or body that does not parse, an id no
NAME gave, more successful runs than runs — and reports the bytes from there on as dropped:
what a crash mid-append (a torn tail) or garbage leaves is recovered up to the last good
record, never a reason to refuse to start. The CRC (zlib's CRC-32) catches torn and flipped
bytes; it is no defence against a forger, nor meant to be. A header of another version is
not read at all (all its bytes dropped): version 1 knows no other.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAGIC = b"NSAV"
VERSION = 1
HEADER = MAGIC + bytes((VERSION, 0, 0, 0))
MAX_PAYLOAD = 1 << 20  # bytes; a longer record is written as several
NAME, MINUTES, QUARTERS = 1, 2, 3
NO_LATENCY = 0xFFFFFFFF

_FRAME = struct.Struct("<II")
_SLOT = struct.Struct("<BI")
_NAME = struct.Struct("<BI")
_MINUTE = struct.Struct("<IHHI")
_QUARTER = struct.Struct("<III")
MAX_KEY_BYTES = MAX_PAYLOAD - _NAME.size
# Entries per record, so that a record stays within MAX_PAYLOAD.
MINUTES_PER_RECORD = (MAX_PAYLOAD - _SLOT.size) // _MINUTE.size
QUARTERS_PER_RECORD = (MAX_PAYLOAD - _SLOT.size) // _QUARTER.size


class AvailabilityCodecError(ValueError):
    """A value that the format cannot hold (only encoding raises it)."""


@dataclass(frozen=True, slots=True)
class Name:
    id: int
    key: str


@dataclass(frozen=True, slots=True)
class Minutes:
    slot: int
    entries: tuple[tuple[int, int, int, int], ...]  # (id, runs, successful, slowest µs)


@dataclass(frozen=True, slots=True)
class Quarters:
    slot: int
    entries: tuple[tuple[int, int, int], ...]  # (id, runs, successful)


Record = Name | Minutes | Quarters


@dataclass(frozen=True, slots=True)
class Decoded:
    records: tuple[Record, ...]
    good: int  # bytes of the header and the good records, from the start
    dropped: int  # bytes after them, not read
    header_ok: bool  # False: not a version-1 file (or empty), nothing read


# --- writing -------------------------------------------------------------------------------


def encode(records: Iterable[Record]) -> bytes:
    """The records framed, one after another (without the header)."""
    return b"".join(_frame(_payload(record)) for record in records)


def minutes(slot: int, entries: Iterable[tuple[int, int, int, int]]) -> Iterator[Minutes]:
    """A minute's entries as records of at most MINUTES_PER_RECORD entries each."""
    listed = tuple(entries)
    for first in range(0, len(listed), MINUTES_PER_RECORD):
        yield Minutes(slot, listed[first:first + MINUTES_PER_RECORD])


def quarters(slot: int, entries: Iterable[tuple[int, int, int]]) -> Iterator[Quarters]:
    listed = tuple(entries)
    for first in range(0, len(listed), QUARTERS_PER_RECORD):
        yield Quarters(slot, listed[first:first + QUARTERS_PER_RECORD])


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _payload(record: Record) -> bytes:
    try:
        if isinstance(record, Name):
            key = record.key.encode()
            if len(key) > MAX_KEY_BYTES:
                raise AvailabilityCodecError(f"a key of {len(key)} bytes, more than a record")
            return _NAME.pack(NAME, record.id) + key
        entries = record.entries
        if isinstance(record, Minutes):
            _limit(len(entries), MINUTES_PER_RECORD)
            kind, layout = MINUTES, "IHHI"
        else:
            _limit(len(entries), QUARTERS_PER_RECORD)
            kind, layout = QUARTERS, "III"
        wrong = next((entry for entry in entries if entry[2] > entry[1]), None)
        if wrong is not None:
            raise AvailabilityCodecError(f"{wrong}: more successful runs than runs")
        # One pack for the whole record: per entry, it is most of a compaction's cost.
        return _SLOT.pack(kind, record.slot) + struct.pack(
            "<" + layout * len(entries), *itertools.chain.from_iterable(entries))
    except struct.error as exc:
        raise AvailabilityCodecError(f"{record!r:.200}: {exc}") from None


def _limit(entries: int, most: int) -> None:
    if entries > most:
        raise AvailabilityCodecError(f"{entries} entries, more than a record holds ({most})")


# --- reading -------------------------------------------------------------------------------


def decode(data: bytes) -> Decoded:
    """Every good record of a file's bytes, up to the first that is not; never raises."""
    if len(data) < len(HEADER) or data[:len(HEADER)] != HEADER:
        return Decoded((), 0, len(data), False)
    records: list[Record] = []
    names: set[int] = set()
    at = len(HEADER)
    view = memoryview(data)
    while at < len(data):
        record = _record(view, at, names)
        if record is None:
            break
        parsed, at = record
        if isinstance(parsed, Name):
            names.add(parsed.id)
        records.append(parsed)
    return Decoded(tuple(records), at, len(data) - at, True)


def _record(data: memoryview, at: int, names: set[int]) -> tuple[Record, int] | None:
    if len(data) - at < _FRAME.size:
        return None
    length, crc = _FRAME.unpack_from(data, at)
    start = at + _FRAME.size
    if length < 1 or length > MAX_PAYLOAD or start + length > len(data):
        return None
    payload = data[start:start + length]
    if zlib.crc32(payload) != crc:
        return None
    parsed = _parse(payload, names)
    return None if parsed is None else (parsed, start + length)


def _parse(payload: memoryview, names: set[int]) -> Record | None:
    kind = payload[0]
    if kind == NAME:
        if len(payload) < _NAME.size:
            return None
        _, id_ = _NAME.unpack_from(payload)
        try:
            key = bytes(payload[_NAME.size:]).decode()
        except UnicodeDecodeError:
            return None
        return Name(id_, key) if key else None
    if kind not in (MINUTES, QUARTERS) or len(payload) < _SLOT.size:
        return None
    _, slot = _SLOT.unpack_from(payload)
    entry = _MINUTE if kind == MINUTES else _QUARTER
    body = payload[_SLOT.size:]
    if len(body) % entry.size:
        return None
    entries = tuple(entry.iter_unpack(body))
    if any(e[0] not in names or e[2] > e[1] for e in entries):
        return None
    if kind == MINUTES:
        return Minutes(slot, entries)
    return Quarters(slot, entries)
