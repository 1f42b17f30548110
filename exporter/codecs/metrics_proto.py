"""Prometheus' protobuf exposition on the wire: `io.prometheus.client.MetricFamily` messages of
client_model's metrics.proto, each prefixed by its length (`encoding=delimited`).

Hand-written, for the few messages and fields the exposition writes: varints, zigzag, doubles
and nested messages are a page of code, and writing bytes straight from cached pieces costs a
fraction of building `protobuf` message objects per sample (docs/performance.md has the
figures). Field numbers, from metrics.proto:

    MetricFamily: name 1, help 2, type 3, metric 4        Metric: label 1, gauge 2, counter 3,
    LabelPair: name 1, value 2                                    histogram 7
    Gauge: value 1 (double)                               Counter: value 1, created_timestamp 3
    Histogram: sample_count 1, sample_sum 2, bucket 3, schema 5 (sint32), zero_threshold 6,
               zero_count 7, positive_span 12, positive_delta 13 (sint64), created_timestamp 15
    Bucket: cumulative_count 1, upper_bound 2             BucketSpan: offset 1 (sint32), length 2
    google.protobuf.Timestamp: seconds 1, nanos 2

Pure: the caller hands in every value; nothing here reads the clock.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM = 0, 1, 2, 3, 4
TYPES = {"counter": COUNTER, "gauge": GAUGE, "summary": SUMMARY, "untyped": UNTYPED,
         "histogram": HISTOGRAM}
CONTENT_TYPE = ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
                "encoding=delimited")

_DOUBLE = struct.Struct("<d").pack
_GAUGE_HEAD = b"\x12\x09\x09"  # Metric.gauge, 9 bytes: Gauge.value, a double
_VARINTS = [bytes([n]) for n in range(128)]  # the one-byte varints, made once


def varint(n: int) -> bytes:
    """An unsigned varint (a negative int64 as its two's complement, 10 bytes)."""
    if 0 <= n < 128:
        return _VARINTS[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag(n: int) -> int:
    """sint32/sint64's mapping of signed to unsigned: 0, -1, 1, -2 → 0, 1, 2, 3."""
    return (n << 1) if n >= 0 else ((-n) << 1) - 1


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode())


def label_pairs(labels: Iterable[tuple[str, str]]) -> bytes:
    """Metric.label fields, one LabelPair each: the cached start of each of a series' Metrics."""
    return b"".join(_field(1, _text(1, name) + _text(2, value)) for name, value in labels)


def timestamp(seconds: float) -> bytes:
    """A google.protobuf.Timestamp of Unix time `seconds`."""
    whole = int(seconds // 1)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return b"\x08" + varint(whole) + (b"\x10" + varint(nanos) if nanos else b"")


def gauge(labels: bytes, value: float) -> bytes:
    """A Metric with a Gauge, as a MetricFamily.metric field."""
    body = labels + _GAUGE_HEAD + _DOUBLE(value)
    return b"\x22" + varint(len(body)) + body


def untyped(labels: bytes, value: float) -> bytes:
    """A Metric with an Untyped value, as a metric field."""
    body = labels + b"\x2a\x09\x09" + _DOUBLE(value)
    return b"\x22" + varint(len(body)) + body


def created(seconds: float) -> bytes:
    """Counter.created_timestamp, encoded: made once per series, as its labels are."""
    return _field(3, timestamp(seconds))


def histogram_created(seconds: float) -> bytes:
    """Histogram.created_timestamp, encoded."""
    return _field(15, timestamp(seconds))


def counter(labels: bytes, value: float, created: bytes = b"") -> bytes:
    """A Metric with a Counter and its created timestamp (`created()`), as a metric field."""
    inner = b"\x09" + _DOUBLE(value) + created
    body = labels + b"\x1a" + varint(len(inner)) + inner
    return b"\x22" + varint(len(body)) + body


def bucket_bounds(bounds: Sequence[float]) -> tuple[bytes, ...]:
    """Bucket.upper_bound of each classic bucket, encoded once."""
    return tuple(b"\x11" + _DOUBLE(upper) for upper in bounds)


def classic_buckets(bounds: Sequence[bytes], cumulative: Iterable[int]) -> bytes:
    """Histogram.bucket fields: each (`bucket_bounds`) with its cumulative count."""
    parts = []
    for bound, count in zip(bounds, cumulative, strict=False):
        count_bytes = _VARINTS[count] if count < 128 else varint(count)
        parts.append(b"\x1a" + _VARINTS[10 + len(count_bytes)] + b"\x08" + count_bytes + bound)
    return b"".join(parts)


def histogram(labels: bytes, count: int, total: float, buckets: bytes = b"",
              created: bytes = b"",
              native: tuple[int, float, int, Sequence[tuple[int, int]], Sequence[int]]
              | None = None) -> bytes:
    """A Metric with a Histogram, as a metric field: `count` samples of sum `total`, classic
    `buckets` (`classic_buckets()`), its created timestamp (`histogram_created()`), and a
    native histogram as (schema, zero threshold, zero count, spans as (offset, length), bucket
    deltas). A native histogram with no sample yet still has a span, (0, 0): the format's mark
    of a native histogram."""
    parts = [b"\x08", varint(count), b"\x11", _DOUBLE(total), buckets]
    if native is not None:
        schema, threshold, zero, spans, deltas = native
        parts += [b"\x28", varint(zigzag(schema)), b"\x31", _DOUBLE(threshold),
                  b"\x38", varint(zero)]
        for offset, length in spans or ((0, 0),):
            span = b"\x08" + varint(zigzag(offset)) + b"\x10" + varint(length)
            parts += [b"\x62", varint(len(span)), span]
        if deltas:
            packed = b"".join(varint(zigzag(d)) for d in deltas)
            parts += [b"\x6a", varint(len(packed)), packed]
    parts.append(created)
    inner = b"".join(parts)
    body = labels + b"\x3a" + varint(len(inner)) + inner
    return b"\x22" + varint(len(body)) + body


def family_head(name: str, help_text: str, kind: int) -> bytes:
    """A MetricFamily's name, help and type: the cached start of its message."""
    return _text(1, name) + _text(2, help_text) + b"\x18" + varint(kind)


def family(head: bytes, metrics: Sequence[bytes]) -> bytes:
    """A whole MetricFamily, length-prefixed: `head` and its metrics."""
    size = len(head) + sum(map(len, metrics))
    return varint(size) + head + b"".join(metrics)
