"""A run's result as text for people: `netsentry probe` and `/probe?debug=true` print it."""

from __future__ import annotations

from exporter import humanize
from exporter.checks import KINDS
from exporter.checks.base import Observation
from exporter.config.model import CheckConfig
from exporter.exposition import format_value
from exporter.store import Result


def describe(check: CheckConfig, result: Result, *, metrics: bool = False) -> str:
    """Every fact of one run, one per line; then the kind's table, if it has one. What the run
    measured is written in each metric's unit (humanize.py), dates relative to the run's end;
    with `metrics`, as the raw metric lines instead (name{labels} value, the value exact)."""
    verdict = "success" if result.success else f"FAILURE ({result.reason}): {result.message}"
    rows = [("check", f"{check.kind} {check.target}".rstrip()), ("result", verdict),
            ("duration", humanize.duration(result.duration)), *result.details]
    observations = result.observations
    table: list[tuple[str, ...]] = []
    probe_table = KINDS[check.kind].probe_table
    if probe_table is not None:
        table, observations = probe_table(observations)
    if metrics:
        rows.extend(metric_lines(observations))
    else:
        rows.extend(humanize.rows(observations, now=result.finished))
    width = max(len(name) for name, _ in rows)
    text = "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    return f"{text}\n\n{columns(table)}" if table else text


def metric_lines(observations: tuple[Observation, ...]) -> list[tuple[str, str]]:
    """(name{labels}, value) of each sample, the value as the exposition writes it."""
    lines = []
    for spec, labels, value in observations:
        label_text = ",".join(f'{k}="{v}"' for k, v in zip(spec.labels, labels, strict=True))
        lines.append((spec.name + (f"{{{label_text}}}" if label_text else ""),
                      format_value(value)))
    return lines


def columns(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> str:
    """Rows of cells as left-aligned columns, two spaces apart; the columns numbered in
    `right` aligned right (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
                     .rstrip() for row in rows)
