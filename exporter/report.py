"""A run's result as text for people: `netsentry probe` and `/probe?debug=true` print it."""

from __future__ import annotations

from exporter.checks import KINDS
from exporter.config.model import CheckConfig
from exporter.exposition import format_value
from exporter.store import Result


def describe(check: CheckConfig, result: Result) -> str:
    """Every fact of one run, one per line; then the kind's table, if it has one."""
    verdict = "success" if result.success else f"FAILURE ({result.reason}): {result.message}"
    rows = [("check", f"{check.kind} {check.target}".rstrip()), ("result", verdict),
            ("duration", f"{result.duration * 1000:.3f} ms"), *result.details]
    observations = result.observations
    table: list[tuple[str, ...]] = []
    probe_table = KINDS[check.kind].probe_table
    if probe_table is not None:
        table, observations = probe_table(observations)
    for spec, labels, value in observations:
        label_text = ",".join(f'{k}="{v}"' for k, v in zip(spec.labels, labels, strict=True))
        name = spec.name + (f"{{{label_text}}}" if label_text else "")
        rows.append((name, format_value(value)))
    width = max(len(name) for name, _ in rows)
    text = "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    return f"{text}\n\n{columns(table)}" if table else text


def columns(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in rows)
