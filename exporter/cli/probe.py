"""`netsentry probe`: run one check, or every configured check, once and print the result.

    netsentry probe tcp mail.example.org:smtp --timeout 3s
    netsentry probe --config.file netsentry.toml

Options after the target are the kind's config keys (`--family ipv4`); values are read as TOML
values where they parse as such (`--tls true`, `--samples 3`), else as strings.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from exporter.checks import KINDS
from exporter.config.load import load_check, load_file, toml_value
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.report import describe
from exporter.runner import Runner
from exporter.store import Result

USAGE = """usage: netsentry probe KIND [TARGET] [--KEY VALUE ...] [--timeout DURATION]
       netsentry probe --config.file PATH

Run one check once and print what it measured; exit 0 on success, 1 on failure, 2 on bad input.
Kinds: {kinds}. KEY is any config key of the kind; a repeated --KEY gives an
array. clock takes no TARGET; socket takes --option NAME=VALUE, repeatable."""


def parse_args(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """(config file, check table) from the command line; raises ValueError for bad usage."""
    positional: list[str] = []
    given: dict[str, list[Any]] = {}
    config_file = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
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
        return config_file, {}
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
    return None, table


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE.format(kinds=", ".join(KINDS)))
        return 0
    try:
        config_file, table = parse_args(argv)
        checks = (load_file(config_file).checks if config_file
                  else (load_check(table, "command line"),))
    except ValueError as exc:
        print(f"netsentry probe: {exc}\n\n{USAGE.format(kinds=', '.join(KINDS))}",
              file=sys.stderr)
        return 2
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    results = asyncio.run(_run_all(checks))
    if config_file:
        print(table_text(checks, results))
    else:
        print(describe(checks[0], results[0]))
    return 0 if all(r.success for r in results) else 1


async def _run_all(checks: tuple[CheckConfig, ...]) -> list[Result]:
    pool = BlockingPool(workers=8, name="netsentry-probe")
    try:
        runner = Runner(Resolver(pool))
        return list(await asyncio.gather(*(runner.run(check) for check in checks)))
    finally:
        pool.close()


def table_text(checks: tuple[CheckConfig, ...], results: list[Result]) -> str:
    rows = [("NAME", "KIND", "TARGET", "RESULT", "DURATION", "MESSAGE")]
    for check, result in zip(checks, results, strict=True):
        rows.append((check.name, check.kind, check.target,
                     "ok" if result.success else str(result.reason),
                     f"{result.duration * 1000:.1f} ms", result.message))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "".join(cell.ljust(width + 2) for cell, width in zip(row, widths, strict=False)) + row[-1]
        for row in rows
    )
