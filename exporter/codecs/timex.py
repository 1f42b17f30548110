"""Linux's `struct timex` (adjtimex(2), include/uapi/linux/timex.h) and its clock state, decoded.

The struct is the kernel's clock discipline as the NTP daemon (chronyd, ntpd, timesyncd) left
it: whether the clock is synchronised, its error bounds, the frequency correction, the TAI
offset. Its layout follows the C `long` of the ABI — 8 bytes on LP64 (x86_64, arm64, s390x),
4 on ILP32 (i386, armhf) — with natural alignment and the byte order of the machine, so the
layout is a parameter here and the caller picks the native one. Units per the man page and
kernel/time/ntp.c: microseconds, or nanoseconds for the offset, the time's fraction and the
PPS jitter when STA_NANO is set; frequencies in "scaled ppm" (ppm × 2^16).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# The return value of adjtimex(2): the clock state (kernel/time/ntp.c, `time_state`).
TIME_STATES = ("TIME_OK", "TIME_INS", "TIME_DEL", "TIME_OOP", "TIME_WAIT", "TIME_ERROR")
TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR = range(6)

# The `status` bits (include/uapi/linux/timex.h), in bit order.
STATUS_BITS = (
    "STA_PLL",        # phase-locked loop updates enabled
    "STA_PPSFREQ",    # PPS frequency discipline enabled
    "STA_PPSTIME",    # PPS time discipline enabled
    "STA_FLL",        # frequency-locked loop mode
    "STA_INS",        # insert a leap second at the end of the UTC day
    "STA_DEL",        # delete a leap second at the end of the UTC day
    "STA_UNSYNC",     # clock unsynchronised
    "STA_FREQHOLD",   # hold the frequency
    "STA_PPSSIGNAL",  # PPS signal present (read-only)
    "STA_PPSJITTER",  # PPS jitter limit exceeded (read-only)
    "STA_PPSWANDER",  # PPS wander limit exceeded (read-only)
    "STA_PPSERROR",   # PPS calibration error (read-only)
    "STA_CLOCKERR",   # clock hardware fault (read-only)
    "STA_NANO",       # offsets in nanoseconds, not microseconds (read-only)
    "STA_MODE",       # FLL (1) or PLL (0) mode (read-only)
    "STA_CLK",        # clock source B (1) or A (0) (read-only)
)
STA_UNSYNC = 0x0040
STA_NANO = 0x2000

SCALED_PPM = 65536 * 1_000_000  # a "scaled ppm" value over this is a ratio
# `tick` is microseconds per tick of USER_HZ, which is 100 on every Linux architecture but
# alpha; ADJ_TICK moves it ±10 % (chronyd does, 100 ppm a step, for corrections past about
# 150 ppm, and leaves the rest to `freq`).
NOMINAL_TICK_US = 10_000
# The kernel always reports a tolerance of MAXFREQ, 500 ppm: a fixed point to check the
# layout against.
TOLERANCE_PPM = 500

# Field by field as the header declares them: "I" unsigned int, "i" int, "l" the ABI's long.
_FIELDS = (
    ("modes", "I"), ("offset", "l"), ("freq", "l"), ("maxerror", "l"), ("esterror", "l"),
    ("status", "i"), ("constant", "l"), ("precision", "l"), ("tolerance", "l"),
    ("time_sec", "l"), ("time_frac", "l"),  # struct timeval: tv_sec, tv_usec (or ns)
    ("tick", "l"), ("ppsfreq", "l"), ("jitter", "l"), ("shift", "i"), ("stabil", "l"),
    ("jitcnt", "l"), ("calcnt", "l"), ("errcnt", "l"), ("stbcnt", "l"), ("tai", "i"),
)
_RESERVED = 11 * 4  # `int :32` padding for future fields, part of the struct's size


class TimexError(Exception):
    """Bytes that are not a struct timex of the layout asked for."""


@dataclass(frozen=True, slots=True)
class Layout:
    """How one ABI lays out struct timex."""

    name: str
    struct: struct.Struct

    @property
    def size(self) -> int:
        return self.struct.size


def layout(long_size: int, byteorder: str) -> Layout:
    """The layout for a C `long` of `long_size` bytes (4 or 8), "little" or "big" endian.

    Each field is aligned to its own size and the struct to its largest member, as C does;
    the pad bytes are spelt out because struct's explicit byte orders do not align.
    """
    if long_size not in (4, 8) or byteorder not in ("little", "big"):
        raise ValueError(f"no struct timex layout for {long_size}-byte longs, {byteorder} endian")
    fmt = "<" if byteorder == "little" else ">"
    offset = 0
    for _, code in _FIELDS:
        size = long_size if code == "l" else 4
        pad = -offset % size
        fmt += f"{pad}x" if pad else ""
        fmt += {"I": "I", "i": "i", "l": "q" if long_size == 8 else "i"}[code]
        offset += pad + size
    offset += _RESERVED
    fmt += f"{_RESERVED + -offset % long_size}x"
    bits = "LP64" if long_size == 8 else "ILP32"
    return Layout(f"{bits} {byteorder}-endian", struct.Struct(fmt))


@dataclass(frozen=True, slots=True)
class Timex:
    """The kernel clock's discipline, in seconds and ratios."""

    state: str  # "TIME_OK" ... "TIME_ERROR", or "TIME_<n>" for a code this codec does not know
    state_code: int
    status: int
    flags: tuple[str, ...]  # the names of the status bits set, e.g. ("STA_PLL", "STA_NANO")
    offset_seconds: float  # what remains of the offset the PLL is slewing out
    frequency_ratio: float  # `freq`: the frequency correction, e.g. 1.5e-05 for +15 ppm
    max_error_seconds: float  # grows by 500 ppm until a daemon resets it; ≥ 16 s: unsynchronised
    estimated_error_seconds: float  # as the daemon last set it
    time_constant: int  # PLL time constant (log2-ish)
    precision_seconds: float
    tolerance_ratio: float  # the largest frequency correction the kernel allows
    time_seconds: int
    time_nanoseconds: int
    tick_seconds: float  # the clock's length of a tick, nominally 1/USER_HZ
    pps_frequency_ratio: float
    pps_jitter_seconds: float
    pps_shift: int  # PPS calibration interval, log2 seconds
    pps_stability_ratio: float
    pps_jitter_count: int
    pps_calibration_count: int
    pps_error_count: int
    pps_stability_count: int
    tai_offset_seconds: int  # TAI − UTC; 0 when nobody told the kernel

    @property
    def synchronized(self) -> bool:
        """The kernel's own verdict: STA_UNSYNC clear and the state not TIME_ERROR.

        The kernel reports TIME_ERROR for STA_UNSYNC, STA_CLOCKERR, or a PPS discipline that
        lost its signal or its limits (kernel/time/ntp.c, is_error_status).
        """
        return not self.status & STA_UNSYNC and self.state_code != TIME_ERROR

    @property
    def frequency_adjustment_ratio(self) -> float:
        """How much faster (+) or slower (−) than nominal the kernel runs the clock.

        The kernel's second is `tick` × USER_HZ plus `freq` (ntp_update_frequency), so the two
        add up: `freq` alone hides what a daemon put into `tick`.
        """
        tick_us = self.tick_seconds * 1e6
        return self.frequency_ratio + (tick_us - NOMINAL_TICK_US) / NOMINAL_TICK_US


def parse(data: bytes, state_code: int, layout: Layout) -> Timex:
    """Decode the struct adjtimex filled in and the state it returned."""
    if len(data) < layout.size:
        raise TimexError(f"struct timex is {len(data)} bytes, shorter than the {layout.size} "
                         f"of the {layout.name} layout")
    v = dict(zip((name for name, _ in _FIELDS), layout.struct.unpack_from(data), strict=True))
    status = v["status"] & 0xFFFFFFFF
    nano = 1e-9 if status & STA_NANO else 1e-6  # the unit of offset, time_frac and jitter
    return Timex(
        state=TIME_STATES[state_code] if 0 <= state_code < len(TIME_STATES)
        else f"TIME_{state_code}",
        state_code=state_code,
        status=status,
        flags=tuple(name for bit, name in enumerate(STATUS_BITS) if status >> bit & 1),
        offset_seconds=v["offset"] * nano,
        frequency_ratio=v["freq"] / SCALED_PPM,
        max_error_seconds=v["maxerror"] * 1e-6,
        estimated_error_seconds=v["esterror"] * 1e-6,
        time_constant=v["constant"],
        precision_seconds=v["precision"] * 1e-6,
        tolerance_ratio=v["tolerance"] / SCALED_PPM,
        time_seconds=v["time_sec"],
        time_nanoseconds=v["time_frac"] * (1 if status & STA_NANO else 1000),
        tick_seconds=v["tick"] * 1e-6,
        pps_frequency_ratio=v["ppsfreq"] / SCALED_PPM,
        pps_jitter_seconds=v["jitter"] * nano,
        pps_shift=v["shift"],
        pps_stability_ratio=v["stabil"] / SCALED_PPM,
        pps_jitter_count=v["jitcnt"],
        pps_calibration_count=v["calcnt"],
        pps_error_count=v["errcnt"],
        pps_stability_count=v["stbcnt"],
        tai_offset_seconds=v["tai"],
    )
