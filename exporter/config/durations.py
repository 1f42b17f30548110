"""Prometheus-style durations: `500ms`, `15s`, `1m`, `1h30m`, `2d`."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# Units must appear from largest to smallest, each at most once, as in Prometheus.
_ORDER = ("w", "d", "h", "m", "s", "ms")
_PART = re.compile(r"(\d+)(ms|[smhdw])")


def parse_duration(text: str) -> float:
    """Return seconds; raise ValueError with a message fit for a config error."""
    if not text:
        raise ValueError("empty duration; use e.g. 500ms, 15s, 1m or 1h30m")
    pos = 0
    total = 0.0
    last = -1
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        unit = match.group(2)
        rank = _ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"invalid duration {text!r}: units must go from largest to smallest")
        last = rank
        total += int(match.group(1)) * _UNITS[unit]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {text!r}; use e.g. 500ms, 15s, 1m or 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """The shortest Prometheus-style spelling of `seconds` (millisecond resolution)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit in _ORDER:
        size = round(_UNITS[unit] * 1000)
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
