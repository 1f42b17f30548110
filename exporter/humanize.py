"""Values for people: a metric's value written in its unit, read off the metric's name.

`netsentry probe`, `/probe?debug=true` and the kinds' own detail lines write numbers here, so
one duration reads the same wherever it shows. The unit comes from the name's suffix, as the
metric conventions fix it (base units): `_timestamp_seconds` a date, `_seconds` a duration,
`_bytes` a size, `_ratio` a share. Two shapes come from the help text's fixed wording in
`metrics.py`: "1 if ..." is a yes/no, "1 for the ..." a state set (one series per state, the
current one 1), and `_info` series carry their facts in their labels.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable

from exporter.metrics import Spec

# Suffixes that name a unit (or a shape), longest first: the first that matches wins.
_SUFFIXES = ("_timestamp_seconds", "_seconds", "_bytes", "_ratio", "_info", "_total")
_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_SPANS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def _special(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def _three(value: float) -> str:
    """A non-negative number to three significant digits, trailing zeros kept (1.00, 23.0);
    from 1000 on, its whole digits (1230, never 1.23e+03)."""
    if _rounded(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:#.3g}".rstrip(".")


def _rounded(value: float) -> float:
    """|value| as three significant digits would show it: picks the unit after the rounding,
    so 999.96 µs is 1.00 ms, not 1000 µs."""
    return float(f"{abs(value):.3g}")


def duration(seconds: float, signed: bool = False) -> str:
    """Seconds as ns, µs, ms or s with three significant digits (235 µs, 1.00 ms, 16.0 s);
    from a minute on, whole seconds and the Prometheus spelling (7200 s (2h)). `signed` writes
    + before a positive value, for offsets."""
    special = _special(seconds)
    if special is not None:
        return special
    sign = "-" if seconds < 0 else "+" if signed and seconds > 0 else ""
    size = abs(seconds)
    shown = _rounded(seconds)
    if shown == 0:
        return "0 s"
    if shown < 1e-6:
        return f"{sign}{_three(size * 1e9)} ns"
    if shown < 1e-3:
        return f"{sign}{_three(size * 1e6)} µs"
    if shown < 1:
        return f"{sign}{_three(size * 1e3)} ms"
    if shown < 60:
        return f"{sign}{_three(size)} s"
    whole = round(size)
    return f"{sign}{whole} s ({_prometheus_duration(whole)})"


def _prometheus_duration(seconds: int) -> str:
    parts = []
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, length)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def size(count: float) -> str:
    """Bytes as B below 1 KiB (916 B), else KiB, MiB, ... with three significant digits and
    the exact count beside (64.0 KiB (65535 B))."""
    special = _special(count)
    if special is not None:
        return special
    sign = "-" if count < 0 else ""
    magnitude = abs(count)
    if magnitude < 1024:
        exact = f"{magnitude:.0f}" if magnitude == int(magnitude) else _three(magnitude)
        return f"{sign}{exact} B"
    scaled, unit = magnitude, "B"
    for unit in _SIZE_UNITS:
        scaled /= 1024
        if _rounded(scaled) < 1000 or unit == _SIZE_UNITS[-1]:  # 1000 KiB is 0.977 MiB
            break
    return f"{sign}{_three(scaled)} {unit} ({sign}{magnitude:.0f} B)"


def ratio(share: float) -> str:
    """A share as a percentage with three significant digits (25.0%, 100%, 0%); below 0.1%,
    as parts per million (10.0 ppm), the way clock frequencies are quoted."""
    special = _special(share)
    if special is not None:
        return special
    if share == 0:
        return "0%"
    sign = "-" if share < 0 else ""
    if _rounded(share) >= 1e-3:
        return f"{sign}{_three(abs(share) * 100)}%"
    return f"{sign}{_three(abs(share) * 1e6)} ppm"


def timestamp(unix: float, now: float) -> str:
    """Unix time as a UTC date and how far it is from `now`:
    2027-01-01 00:00:00 UTC (in 12 days), or (3 days ago)."""
    special = _special(unix)
    if special is not None:
        return special
    try:
        when = datetime.datetime.fromtimestamp(unix, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):  # beyond the years datetime can hold
        return number(unix)
    return f"{when:%Y-%m-%d %H:%M:%S} UTC ({relative(unix - now)})"


def relative(seconds: float) -> str:
    """A span from now in its largest whole unit, rounded down: in 12 days, 3 days ago, now."""
    magnitude = abs(seconds)
    for unit, length in _SPANS:
        count = int(magnitude // length)
        if count:
            words = f"{count} {unit}" + ("" if count == 1 else "s")
            return f"in {words}" if seconds > 0 else f"{words} ago"
    return "now"


def number(value: float) -> str:
    """A plain count or level: an integer as it is, a float to six significant digits, a
    whole one with its .0 (HTTP version 1.0, not 1)."""
    special = _special(value)
    if special is not None:
        return special
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return f"{value:.6g}"


def unit(name: str) -> str:
    """The unit suffix of a metric name ('' for none)."""
    return next((suffix for suffix in _SUFFIXES if name.endswith(suffix)), "")


def label(spec: Spec) -> str:
    """A metric's name as people say it: netsentry_tcp_connect_seconds is 'tcp connect'."""
    name = spec.name.removeprefix("netsentry_")
    return name.removesuffix(unit(name)).replace("_", " ")


def value(spec: Spec, sample: float, now: float) -> str:
    """One sample of `spec`, written in the unit its name carries."""
    suffix = unit(spec.name)
    if suffix == "_timestamp_seconds":
        return timestamp(sample, now)
    if suffix == "_seconds":
        return duration(sample)
    if suffix == "_bytes":
        return size(sample)
    if suffix == "_ratio":
        return ratio(sample)
    if is_yes_no(spec) and sample in (0, 1):
        return "yes" if sample else "no"
    return number(sample)


def is_yes_no(spec: Spec) -> bool:
    return spec.help.startswith("1 if ")


def is_state_set(spec: Spec) -> bool:
    return spec.help.startswith("1 for the ") and bool(spec.labels)


def is_info(spec: Spec) -> bool:
    return spec.name.endswith("_info") and bool(spec.labels)


def rows(samples: Iterable[tuple[Spec, tuple[str, ...], float]],
         now: float) -> list[tuple[str, str]]:
    """Samples as (what, value) rows for people, in their order: a state set is one row naming
    the states that are 1 (clock state: error), an info series its labels (tls version:
    TLSv1.3), any other series its label values after the name (http phase connect)."""
    out: list[tuple[str, str]] = []
    states: dict[Spec, tuple[int, list[str]]] = {}  # a state set's row, and its states that are 1
    for spec, labels, sample in samples:
        if is_state_set(spec):
            if spec not in states:
                states[spec] = (len(out), [])
                out.append((label(spec), ""))
            if sample == 1:
                states[spec][1].append(" ".join(labels))
            elif sample != 0:  # not a state set's sample after all: show it as it is
                out.append((f"{label(spec)} {' '.join(labels)}", number(sample)))
            continue
        if is_info(spec) and sample == 1:
            out.append((label(spec), " ".join(labels)))
            continue
        out.append((" ".join((label(spec), *labels)), value(spec, sample, now)))
    for spec, (row, current) in states.items():
        out[row] = (label(spec), ", ".join(current) or "none")
    return out
