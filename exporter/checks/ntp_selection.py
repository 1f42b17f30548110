"""Which NTP servers to believe: RFC 5905's selection and combining algorithms, pure.

Each server that answered is a candidate: its offset θ and root distance λ say that the true
offset lies in [θ − λ, θ + λ] if the server is honest (a "correctness interval"). The
intersection algorithm (RFC 5905 §11.2.1, after Marzullo) looks for the smallest interval that
the intervals of a majority share and that holds their offsets; a candidate whose offset lies
outside it is a falseticker. The truechimers' offsets are then averaged, each weighted by
1/λ (§11.2.3), so a close, precise server counts more than a distant one.

The cluster algorithm of §11.2.2, which prunes truechimers by their jitter over many polls, is
left out: an SNTP client has one sample per server per run, and no jitter to compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# An interval's end points sort before its midpoint, which sorts before the other end, when
# they coincide: intervals that only touch still overlap.
_LOWER, _MIDPOINT, _UPPER = 0, 1, 2
_TINY = 1e-12  # the least root distance used as a weight's divisor


@dataclass(frozen=True, slots=True)
class Candidate:
    offset: float  # seconds
    root_distance: float  # seconds, ≥ 0


@dataclass(frozen=True, slots=True)
class Selection:
    truechimers: tuple[int, ...]  # indices into the candidates, in order
    falsetickers: tuple[int, ...]
    low: float  # the intersection interval
    high: float


def select(candidates: Sequence[Candidate]) -> Selection | None:
    """The truechimers and falsetickers among `candidates`; None when no majority agrees."""
    n = len(candidates)
    if n == 0:
        return None
    edges = sorted(
        edge
        for c in candidates
        for edge in ((c.offset - c.root_distance, _LOWER), (c.offset, _MIDPOINT),
                     (c.offset + c.root_distance, _UPPER))
    )
    # Allow ever more falsetickers, as long as they stay a minority.
    for allowed in range(n):
        if 2 * allowed >= n:
            break
        needed = n - allowed
        low, outside_low = _scan(edges, needed, rising=True)
        high, outside_high = _scan(reversed(edges), needed, rising=False)
        if low is None or high is None:
            continue
        # More midpoints outside than falsetickers allowed: the interval holds only a
        # coincidence of intervals, not of the servers' own offsets. Allow one more.
        if outside_low + outside_high > allowed:
            continue
        if low <= high:
            inside = tuple(i for i, c in enumerate(candidates) if low <= c.offset <= high)
            outside = tuple(i for i in range(n) if i not in inside)
            return Selection(inside, outside, low, high)
    return None


def _scan(edges: Iterable[tuple[float, int]], needed: int,
          rising: bool) -> tuple[float | None, int]:
    """The first edge, from below (`rising`) or from above, where `needed` intervals overlap;
    and the midpoints passed before reaching it."""
    entering, leaving = (_LOWER, _UPPER) if rising else (_UPPER, _LOWER)
    overlapping = midpoints = 0
    for value, kind in edges:
        if kind == entering:
            overlapping += 1
            if overlapping >= needed:
                return value, midpoints
        elif kind == leaving:
            overlapping -= 1
        else:
            midpoints += 1
    return None, midpoints


def combine(candidates: Sequence[Candidate], chosen: Sequence[int]) -> float:
    """The offset of the `chosen` candidates, each weighted by 1 / its root distance."""
    if not chosen:
        raise ValueError("nothing to combine")
    weights = [1 / max(candidates[i].root_distance, _TINY) for i in chosen]
    return sum(w * candidates[i].offset for w, i in zip(weights, chosen, strict=True)) / sum(
        weights)
