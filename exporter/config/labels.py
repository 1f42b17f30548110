"""A check's own labels (`labels = { team = "db" }`): the rules their names and values keep.

They go on every series of the check, so their names must not be one a series already has —
`check`, `kind`, `target`, a kind metric's own (`phase`, `rcode`, `reason`, ...) — nor one
Prometheus gives every scraped series (`job`, `instance`) or keeps for itself (`__*`), and
their number is capped (`max_labels`) so that a config cannot multiply the series without
bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from exporter import metrics
from exporter.checks import kind_specs

DEFAULT_MAX_LABELS = 8
MAX_VALUE_LENGTH = 256
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # Prometheus' label names
# Prometheus' target labels and the histograms' and summaries' own.
_PROMETHEUS = frozenset({"job", "instance", "le", "quantile"})


def reserved_names() -> frozenset[str]:
    """The label names a check's own labels may not take: every name a series already has."""
    specs = (*metrics.CHECK_SPECS, *metrics.AGENT_SPECS, *metrics.PROBE_SPECS, *kind_specs())
    return frozenset({"check", "kind", "target", *_PROMETHEUS,
                      *(name for spec in specs for name in spec.labels)})


def label_problems(labels: Mapping[str, Any], max_labels: int) -> list[tuple[str, str]]:
    """What is wrong with `labels`, as (label name, message); nothing when they can be used."""
    found = []
    if len(labels) > max_labels:
        found.append(("", f"{len(labels)} labels, more than max_labels ({max_labels}): each "
                          "one is on every series of the check"))
    reserved = reserved_names()
    for name, value in labels.items():
        if not _NAME.fullmatch(name):
            found.append((name, "is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"))
        elif name.startswith("__"):
            found.append((name, "starts with __, which Prometheus keeps for itself"))
        elif name in reserved:
            found.append((name, f"netsentry's or Prometheus' series already have a {name!r} "
                                "label; choose another name (like team or service)"))
        if not isinstance(value, str):
            found.append((name, f"must be a string, got {type(value).__name__}"))
        elif len(value) > MAX_VALUE_LENGTH or any(ord(c) < 32 for c in value):
            found.append((name, f"must be at most {MAX_VALUE_LENGTH} printable characters"))
    return found
