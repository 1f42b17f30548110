"""`netsentry probe`: run one check, or every configured check, once and print the result.

    netsentry probe tcp mail.example.org:smtp --timeout 3s
    netsentry probe --config.file netsentry.toml
    netsentry probe ntp pool.ntp.org --metrics

Options after the target are the kind's config keys (`--family ipv4`); values are read as TOML
values where they parse as such (`--tls true`, `--samples 3`), else as strings. What a run
measured is written for people (report.py, humanize.py); `--metrics`, a flag without a value,
prints the raw metric lines instead.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any

from exporter import humanize
from exporter.checks import KINDS
from exporter.config.load import load_check, load_file, toml_value
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError
from exporter.exposition import escape_label, format_value
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.report import columns, describe
from exporter.runner import Runner
from exporter.store import Result

USAGE = """usage: netsentry probe KIND [TARGET] [--KEY VALUE ...] [--timeout DURATION] [--metrics]
       netsentry probe --config.file PATH [--metrics]

Run one check once and print what it measured; exit 0 on success, 1 on failure, 2 on bad input.
Kinds: {kinds}. KEY is any config key of the kind; a repeated --KEY gives an
array. clock takes no TARGET; socket takes --option NAME=VALUE, repeatable.
Durations, sizes, shares and dates are written for people; --metrics prints the raw metric
lines (name{{labels}} value) instead."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """What the command line asks for: a config file's checks, or one check's table."""

    config_file: str | None
    table: dict[str, Any]
    metrics: bool = False


def parse_args(argv: list[str]) -> Invocation:
    """What the command line asks for; raises ValueError for bad usage."""
    positional: list[str] = []
    given: dict[str, list[Any]] = {}
    config_file = None
    metrics = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--metrics":  # the one flag without a value: no kind has a key of that name
            metrics = True
        elif arg.startswith("--metrics="):
            raise ValueError("--metrics takes no value")
        elif arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"option --{key} needs a value")
                i += 1
                value = argv[i]
            if key == "config.file":
                config_file = value
            else:
                name = key.replace("-", "_")
                given.setdefault(name, []).append(
                    value if name == "timeout" else toml_value(value))
        else:
            positional.append(arg)
        i += 1
    # A repeated option gathers its values into an array (--option A=1 --option B=2).
    options = {name: values[0] if len(values) == 1 else values for name, values in given.items()}
    if config_file is not None:
        if positional or options:
            raise ValueError("--config.file runs the configured checks; give no kind or options")
        return Invocation(config_file, {}, metrics)
    if not positional:
        raise ValueError("missing KIND")
    if len(positional) > 2:
        raise ValueError(f"unexpected argument {positional[2]!r}")
    kind = KINDS.get(positional[0])
    if kind is not None and kind.probe_keys is not None:
        options = kind.probe_keys(options)
    table = {"name": "probe", "kind": positional[0], "interval": "24h", **options}
    if len(positional) == 2:
        table["target"] = positional[1]
    return Invocation(None, table, metrics)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE.format(kinds=", ".join(KINDS)))
        return 0
    try:
        asked = parse_args(argv)
        checks = (load_file(asked.config_file).checks if asked.config_file
                  else (load_check(asked.table, "command line"),))
    except ValueError as exc:
        print(f"netsentry probe: {exc}\n\n{USAGE.format(kinds=', '.join(KINDS))}",
              file=sys.stderr)
        return 2
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    results = asyncio.run(_run_all(checks))
    if asked.config_file:
        print(table_text(checks, results))
        if asked.metrics:
            print("\n" + labelled_lines(checks, results))
    else:
        print(describe(checks[0], results[0], metrics=asked.metrics))
    return 0 if all(r.success for r in results) else 1


async def _run_all(checks: tuple[CheckConfig, ...]) -> list[Result]:
    pool = BlockingPool(workers=8, name="netsentry-probe")
    try:
        runner = Runner(Resolver(pool))
        return list(await asyncio.gather(*(runner.run(check) for check in checks)))
    finally:
        pool.close()


def table_text(checks: tuple[CheckConfig, ...], results: list[Result]) -> str:
    """One row per check, its duration aligned on the unit, then how many failed."""
    rows: list[tuple[str, ...]] = [("NAME", "KIND", "TARGET", "RESULT", "DURATION", "MESSAGE")]
    for check, result in zip(checks, results, strict=True):
        rows.append((check.name, check.kind, check.target or "-",
                     "ok" if result.success else str(result.reason),
                     humanize.duration(result.duration), result.message))
    failed = sum(not result.success for result in results)
    summary = (f"{failed} of {len(results)} checks failed" if failed
               else f"all {len(results)} checks succeeded")
    return f"{columns(rows, right=(4,))}\n\n{summary}" if results else "no checks configured"


def labelled_lines(checks: tuple[CheckConfig, ...], results: list[Result]) -> str:
    """Every check's raw metric lines, labelled as /metrics labels them: check, kind, the
    target of a target list's check, the check's own labels."""
    lines = []
    for check, result in zip(checks, results, strict=True):
        own = [("check", check.name), ("kind", check.kind),
               *([("target", check.target)] if check.per_target else []), *check.labels]
        for spec, labels, value in result.observations:
            pairs = [*own, *zip(spec.labels, labels, strict=True)]
            text = ",".join(f'{key}="{escape_label(v)}"' for key, v in pairs)
            lines.append(f"{spec.name}{{{text}}} {format_value(value)}")
    return "\n".join(lines)
