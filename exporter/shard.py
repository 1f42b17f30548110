"""Which checks this agent runs when N agents share one config (`--shard I/N`).

Rendezvous (highest random weight) hashing: every shard gives each check name a weight from a
stable hash of (shard, name), and the check goes to the shard with the highest weight. Every
agent computes the same split from the names alone, with no coordination; going from N to
N + 1 shards moves only the checks that the new shard wins, about 1/(N + 1) of them, and moves
them all to the new shard: no check changes hands between the old shards, none is dropped.
The hash is BLAKE2b, keyed apart from the scheduler's phase hash, never Python's salted hash().
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_PERSON = b"netsentry-shard"  # keeps these weights independent of other hashes of the name


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # 0-based, as a StatefulSet's pod ordinal
    count: int

    def owns(self, name: str) -> bool:
        return self.count == 1 or assign(name, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard(0, 1)


def parse(text: str) -> Shard:
    """`I/N` with 0 <= I < N; raises ValueError with a message for the user."""
    index_text, slash, count_text = text.partition("/")
    if not (slash and index_text.isdigit() and count_text.isdigit()):
        raise ValueError(f"{text!r} is not I/N (this agent's shard I of N, from 0), e.g. 0/3")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        raise ValueError(f"{text!r}: want 0 <= I < N, e.g. 0/3, 1/3 and 2/3 for three agents")
    return Shard(index, count)


def weight(name: str, shard: int) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=_PERSON,
                             salt=shard.to_bytes(16, "big"))
    return int.from_bytes(digest.digest(), "big")


def assign(name: str, count: int) -> int:
    """The shard, of `count`, that runs the check called `name`."""
    return max(range(count), key=lambda shard: weight(name, shard))
