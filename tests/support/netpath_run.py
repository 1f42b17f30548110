"""Run one netsentry check, as often as asked, in the namespace this process was started in.

tests.support.netpath.CheckSession starts `python -m tests.support.netpath_run` under
`ip netns exec` and talks JSON lines on stdin/stdout: first {"kind": ..., "options": {...}}
(the check's config keys, turned into a [[checks]] table of TOML and loaded with
exporter.config.load.load_text, as the agent loads its files), then {"run": true} for each run,
each answered with one line: the Result as plain data (see netpath.run_check). Between runs it
keeps the check's memory and previous result, as the agent's scheduler does. A config error is
answered with {"error": "..."}. EOF ends the process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from exporter.config.load import load_text
from exporter.errors import ConfigError
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.store import Result


def toml_value(value: Any) -> str:
    """A TOML literal for a str, bool, int, float, list or dict (inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def check_toml(kind: str, options: Mapping[str, Any]) -> str:
    lines = ["[[checks]]", 'name = "netpath"', f"kind = {toml_value(kind)}"]
    lines += [f"{key} = {toml_value(v)}" for key, v in options.items()]
    return "\n".join(lines) + "\n"


def as_data(result: Result) -> dict[str, Any]:
    def rows(series: Any, numbers: Any) -> list[Any]:
        return [[spec.name, dict(zip(spec.labels, labels, strict=False)), number]
                for (spec, labels), number in zip(series, numbers, strict=True)]

    return {
        "success": result.success,
        "reason": None if result.reason is None else result.reason.value,
        "message": result.message,
        "duration": result.duration,
        "gauges": rows(result.series, result.values),
        "counters": rows(result.counted, result.increments),
        "histograms": rows(result.observed, result.samples),
        "details": [list(d) for d in result.details],
    }


def answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve() -> None:
    first = sys.stdin.readline()
    if not first:
        return
    request = json.loads(first)
    try:
        config = load_text(check_toml(request["kind"], request["options"]), "netpath.toml")
    except ConfigError as exc:
        answer({"error": "\n".join(exc.problems)})
        return
    check = config.checks[0]
    pool = BlockingPool(1)
    memory: dict[str, Any] = {}
    previous: Result | None = None
    loop = asyncio.get_running_loop()
    try:
        runner = Runner(Resolver(pool))
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            timeout = json.loads(line).get("timeout")
            previous = await runner.run(check, timeout=timeout, memory=memory,
                                        previous=previous)
            answer(as_data(previous))
    finally:
        pool.close()


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
