"""RFC 5905's intersection and combining algorithms over offsets and root distances."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.checks.ntp_selection import Candidate, combine, select

HOUR = 3600.0


def c(offset: float, distance: float = 0.01) -> Candidate:
    return Candidate(offset, distance)


@pytest.mark.parametrize(
    ("candidates", "truechimers"),
    [
        pytest.param([c(0.0)], (0,), id="one"),
        pytest.param([c(0.001), c(-0.002)], (0, 1), id="two-agree"),
        pytest.param([c(0.0), c(0.002), c(HOUR)], (0, 1), id="one-an-hour-off"),
        pytest.param([c(HOUR), c(0.0), c(0.002)], (1, 2), id="order-does-not-matter"),
        pytest.param([c(0.0), c(HOUR), c(HOUR + 0.001)], (1, 2), id="a-majority-an-hour-off"),
        pytest.param([c(0.0), c(0.001), c(-HOUR), c(HOUR), c(0.003)], (0, 1, 4),
                     id="two-of-five-off-both-ways"),
        pytest.param([c(0.0, 0.01), c(0.01, 0.01)], (0, 1), id="midpoints-on-the-edges"),
        pytest.param([c(0.0, 0.0), c(0.0, 0.0), c(1.0, 0.0)], (0, 1), id="zero-distances"),
    ],
)
def test_truechimers(candidates: list[Candidate], truechimers: tuple[int, ...]) -> None:
    selection = select(candidates)
    assert selection is not None
    assert selection.truechimers == truechimers
    assert selection.falsetickers == tuple(i for i in range(len(candidates))
                                           if i not in truechimers)
    assert selection.low <= selection.high
    for i in truechimers:
        assert selection.low <= candidates[i].offset <= selection.high


@pytest.mark.parametrize(
    "candidates",
    [
        pytest.param([], id="none"),
        pytest.param([c(0.0), c(HOUR)], id="two-disagree"),
        pytest.param([c(0.0), c(1.0), c(2.0)], id="three-disagree"),
        pytest.param([c(0.0), c(0.0), c(HOUR), c(HOUR)], id="a-tie"),
        # The intervals of two overlap, but neither offset lies in the other's interval.
        pytest.param([c(0.0, 0.01), c(0.015, 0.01)], id="overlap-without-midpoints"),
    ],
)
def test_no_majority(candidates: list[Candidate]) -> None:
    assert select(candidates) is None


def test_combine_weighs_by_inverse_root_distance() -> None:
    candidates = [c(0.0, 0.001), c(0.003, 0.002), c(HOUR, 0.0001)]
    # Weights 1000 and 500: (0 * 1000 + 0.003 * 500) / 1500
    assert combine(candidates, (0, 1)) == pytest.approx(0.001, abs=1e-15)
    assert combine([c(0.5, 0.0)], (0,)) == 0.5
    with pytest.raises(ValueError):
        combine(candidates, ())


@settings(max_examples=300, deadline=None)
@given(
    good=st.lists(st.floats(-0.005, 0.005), min_size=1, max_size=6),
    bad=st.lists(st.floats(100.0, 10_000.0), max_size=6),
)
def test_a_minority_of_liars_never_moves_the_offset(good: list[float],
                                                    bad: list[float]) -> None:
    """Honest servers within ±5 ms of the truth with 10 ms root distances all agree; any
    number of liars fewer than them, far off, are falsetickers and change nothing."""
    candidates = [c(x) for x in good] + [c(x, 0.01) for x in bad]
    selection = select(candidates)
    if len(bad) >= len(good):
        return  # no honest majority: whatever is chosen, it cannot be vouched for
    assert selection is not None
    assert selection.truechimers == tuple(range(len(good)))
    assert abs(combine(candidates, selection.truechimers)) <= 0.005 + 1e-12
