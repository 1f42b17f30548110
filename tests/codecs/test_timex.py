"""The struct timex codec: golden structs of each layout, every short prefix, random bytes."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.codecs import timex
from exporter.codecs.timex import Timex, TimexError, parse

# Offsets of include/uapi/linux/timex.h as a C compiler lays them out: LP64 from gcc on
# x86_64 (sizeof 208); ILP32 is every field 4 bytes in order (sizeof 128). Written out here,
# not derived from the codec, so that the codec's layout arithmetic is what is tested.
LP64 = dict(modes=(0, "I"), offset=(8, "q"), freq=(16, "q"), maxerror=(24, "q"),
            esterror=(32, "q"), status=(40, "i"), constant=(48, "q"), precision=(56, "q"),
            tolerance=(64, "q"), time_sec=(72, "q"), time_frac=(80, "q"), tick=(88, "q"),
            ppsfreq=(96, "q"), jitter=(104, "q"), shift=(112, "i"), stabil=(120, "q"),
            jitcnt=(128, "q"), calcnt=(136, "q"), errcnt=(144, "q"), stbcnt=(152, "q"),
            tai=(160, "i"))
ILP32 = {name: (4 * i, "I" if name == "modes" else "i") for i, name in enumerate(LP64)}
SIZES = {"LP64": 208, "ILP32": 128}

GOLDEN = dict(modes=0, offset=-1234, freq=15 * 65536, maxerror=250_000, esterror=1_500,
              status=0x2001, constant=7, precision=1, tolerance=500 * 65536,
              time_sec=2_000_000_000, time_frac=123_456_789, tick=10_001, ppsfreq=-2 * 65536,
              jitter=4_000, shift=4, stabil=65536 // 2, jitcnt=1, calcnt=2, errcnt=3, stbcnt=4,
              tai=37)


def golden(bits: str = "LP64", order: str = "<", **changes: int) -> bytes:
    """A struct timex of the given ABI, with the golden values and `changes`."""
    offsets = LP64 if bits == "LP64" else ILP32
    data = bytearray(SIZES[bits])
    for name, value in {**GOLDEN, **changes}.items():
        offset, code = offsets[name]
        struct.pack_into(order + code, data, offset, value)
    return bytes(data)


LAYOUTS = {
    "LP64 little-endian": (timex.layout(8, "little"), "LP64", "<"),
    "LP64 big-endian": (timex.layout(8, "big"), "LP64", ">"),
    "ILP32 little-endian": (timex.layout(4, "little"), "ILP32", "<"),
    "ILP32 big-endian": (timex.layout(4, "big"), "ILP32", ">"),
}

EXPECTED = Timex(
    state="TIME_OK", state_code=0, status=0x2001, flags=("STA_PLL", "STA_NANO"),
    offset_seconds=-1.234e-6, frequency_ratio=15e-6, max_error_seconds=0.25,
    estimated_error_seconds=0.0015, time_constant=7, precision_seconds=1e-6,
    tolerance_ratio=500e-6, time_seconds=2_000_000_000, time_nanoseconds=123_456_789,
    tick_seconds=10_001e-6, pps_frequency_ratio=-2e-6, pps_jitter_seconds=4e-6, pps_shift=4,
    pps_stability_ratio=0.5e-6, pps_jitter_count=1, pps_calibration_count=2, pps_error_count=3,
    pps_stability_count=4, tai_offset_seconds=37,
)


@pytest.mark.parametrize("name", LAYOUTS)
def test_golden_struct(name: str) -> None:
    layout, bits, order = LAYOUTS[name]
    assert layout.name == name and layout.size == SIZES[bits]
    got = parse(golden(bits, order), 0, layout)
    assert_close(got, EXPECTED)
    # +100 ppm in tick (10,001 µs of a nominal 10,000) and +15 ppm in freq.
    assert got.frequency_adjustment_ratio == pytest.approx(115e-6, abs=1e-12)
    assert got.synchronized


def assert_close(got: Timex, expected: Timex) -> None:
    """Field by field: exact for integers and strings, to 12 digits for floats."""
    for field in dataclasses.fields(Timex):
        a, b = getattr(got, field.name), getattr(expected, field.name)
        assert a == (pytest.approx(b, rel=1e-12, abs=0) if isinstance(b, float) else b), \
            field.name


def test_a_layout_is_not_another() -> None:
    # The LP64 struct read as ILP32 gives other values: the layout is not a detail.
    wrong = parse(golden("LP64", "<"), 0, LAYOUTS["ILP32 little-endian"][0])
    assert wrong.tai_offset_seconds != 37 and wrong.tolerance_ratio != 500e-6


def test_microseconds_without_sta_nano() -> None:
    got = parse(golden(status=0x0001), 0, timex.layout(8, "little"))
    assert got.offset_seconds == pytest.approx(-1.234e-3)
    assert got.pps_jitter_seconds == pytest.approx(4e-3)
    # time.tv_usec is microseconds then: 123456789 µs would overflow a second, and is
    # converted as it is, not clamped.
    assert got.time_nanoseconds == 123_456_789_000
    # The error bounds and the precision are microseconds whatever STA_NANO says.
    assert got.max_error_seconds == pytest.approx(0.25) and got.precision_seconds == 1e-6


@pytest.mark.parametrize("code, name", [*enumerate(timex.TIME_STATES), (7, "TIME_7"),
                                        (-1, "TIME_-1")])
def test_state_names(code: int, name: str) -> None:
    got = parse(golden(), code, timex.layout(8, "little"))
    assert (got.state, got.state_code) == (name, code)


@pytest.mark.parametrize("bit", range(16))
def test_each_status_bit_has_its_name(bit: int) -> None:
    got = parse(golden(status=1 << bit), 0, timex.layout(8, "little"))
    assert got.flags == (timex.STATUS_BITS[bit],)


def test_all_status_bits_and_a_negative_status() -> None:
    got = parse(golden(status=-1), 0, timex.layout(8, "little"))
    assert got.flags == timex.STATUS_BITS and got.status == 0xFFFFFFFF


@pytest.mark.parametrize("status, state, synchronized", [
    (0x0001, timex.TIME_OK, True),
    (0x0011, timex.TIME_INS, True),  # a leap second due: still synchronised
    (0x0041, timex.TIME_ERROR, False),  # STA_UNSYNC: what an undisciplined clock says
    (0x0041, timex.TIME_OK, False),  # STA_UNSYNC is enough on its own
    (0x0006, timex.TIME_ERROR, False),  # PPS discipline without a PPS signal
])
def test_synchronized(status: int, state: int, synchronized: bool) -> None:
    assert parse(golden(status=status), state, timex.layout(8, "little")).synchronized \
        is synchronized


def test_frequency_adjustment_adds_tick_and_freq() -> None:
    got = parse(golden(tick=9_900, freq=-500 * 65536), 0, timex.layout(8, "little"))
    assert got.frequency_ratio == pytest.approx(-500e-6)
    assert got.frequency_adjustment_ratio == pytest.approx(-0.01 - 500e-6)


def test_longer_input_is_read_up_to_the_struct() -> None:
    assert parse(golden() + b"\xff" * 64, 0, timex.layout(8, "little")).tai_offset_seconds == 37


@pytest.mark.parametrize("name", ["LP64 little-endian", "ILP32 big-endian"])
def test_every_short_prefix_is_refused(name: str) -> None:
    layout, bits, order = LAYOUTS[name]
    data = golden(bits, order)
    for size in range(layout.size):
        with pytest.raises(TimexError, match=f"struct timex is {size} bytes, shorter than "
                                             f"the {layout.size} of the {name} layout"):
            parse(data[:size], 0, layout)


def test_no_layout_for_other_longs() -> None:
    with pytest.raises(ValueError, match="no struct timex layout"):
        timex.layout(2, "little")


@given(st.binary(max_size=512), st.integers(-(2**31), 2**31 - 1),
       st.sampled_from(sorted(LAYOUTS)))
def test_random_bytes_give_a_timex_or_the_codec_error(data: bytes, state: int,
                                                      name: str) -> None:
    layout = LAYOUTS[name][0]
    try:
        got = parse(data, state, layout)
    except TimexError:
        assert len(data) < layout.size
    else:
        assert len(data) >= layout.size
        assert set(got.flags) <= set(timex.STATUS_BITS)
        assert got.synchronized in (True, False)
        assert got.state.startswith("TIME_")
