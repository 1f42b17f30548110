"""Native histograms (Prometheus' sparse, exponential buckets): the schema a bucket factor gives,
each value's bucket, and the spans and deltas the protobuf format carries them in.

At schema s, bucket i holds the values in (2^((i-1)/2^s), 2^(i/2^s)]: every power of two is cut
in 2^s buckets whose bounds grow by the factor 2^(2^-s) (schema 3: 1.0905, the coarsest schema
whose factor is at most client_golang's default of 1.1). Values at or below the zero threshold
(2^-128, client_golang's default) are counted in the zero bucket. A histogram keeps only the
buckets it has used, as (index, count) pairs in index order, immutable like the store's states.

The bucket count is bounded by what netsentry measures: durations and round trips between a
microsecond and a check's timeout are some 25 doublings, 200 buckets at schema 3 in the worst
case, a handful in practice (a check's durations spread little).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import NamedTuple

DEFAULT_FACTOR = 1.1
ZERO_THRESHOLD = 2.0 ** -128
MIN_SCHEMA, MAX_SCHEMA = -4, 8


def schema_for(factor: float) -> int:
    """The coarsest schema whose growth factor from one bucket to the next is at most `factor`
    (> 1), as client_golang picks it: 1.1 → 3, 2 → 0, 1.005 → 8 (and 8 for anything finer)."""
    for schema in range(MIN_SCHEMA, MAX_SCHEMA + 1):
        if 2.0 ** (2.0 ** -schema) <= factor * (1 + 1e-12):
            return schema
    return MAX_SCHEMA


def bucket_index(value: float, schema: int) -> int:
    """The bucket of a positive `value` at `schema`: i with 2^((i-1)/2^s) < value <= 2^(i/2^s)."""
    fraction, exponent = math.frexp(value)  # value = fraction * 2^exponent, fraction in [0.5, 1)
    if schema > 0:
        # log2(value) = exponent + log2(fraction), with log2(fraction) in [-1, 0).
        index = math.ceil((exponent + math.log2(fraction)) * (1 << schema))
        # Floating error at a bound: settle it against the bound itself.
        if value > 2.0 ** (index / (1 << schema)):
            index += 1
        elif value <= 2.0 ** ((index - 1) / (1 << schema)):
            index -= 1
        return index
    # Schemas 0 and below: a bucket is a whole number of powers of two; exact powers belong to
    # the bucket below them (upper bounds are inclusive).
    exact = exponent - 1 if fraction == 0.5 else exponent
    return -((-exact) >> -schema) if schema else exact


class Native(NamedTuple):
    """A native histogram's buckets so far (not its count and sum: the classic one has them).

    A named tuple like the store's states, and for the same reason: a new one is made at every
    run of every check (the runs' durations, the scheduler's lag).
    """

    schema: int
    zero: int = 0  # values at or below ZERO_THRESHOLD
    buckets: tuple[tuple[int, int], ...] = ()  # (index, count) of the used buckets, in order

    def add(self, value: float) -> Native:
        if value <= ZERO_THRESHOLD:
            return Native(self.schema, self.zero + 1, self.buckets)
        index = bucket_index(value, self.schema)
        buckets = self.buckets
        at = bisect_left(buckets, (index, 0))
        if at < len(buckets) and buckets[at][0] == index:
            updated = (index, buckets[at][1] + 1)
            return Native(self.schema, self.zero, (*buckets[:at], updated, *buckets[at + 1:]))
        return Native(self.schema, self.zero, (*buckets[:at], (index, 1), *buckets[at:]))

    def spans(self) -> tuple[list[tuple[int, int]], list[int]]:
        """The positive buckets as the protobuf format has them: spans of consecutive indexes
        (offset from the end of the previous span, or the first index; length), and each
        bucket's count as a delta to the previous bucket's."""
        spans: list[tuple[int, int]] = []
        deltas: list[int] = []
        previous_index = previous_count = 0
        for n, (index, count) in enumerate(self.buckets):
            if n and index == previous_index + 1:
                offset, length = spans[-1]
                spans[-1] = (offset, length + 1)
            else:
                spans.append((index - previous_index - 1 if n else index, 1))
            deltas.append(count - previous_count)
            previous_index, previous_count = index, count
        return spans, deltas
