"""Run one check as the agent would, and read what it exported.

    with FakeDns("answer") as server:
        result = run_check("dns", target="host.test", server=server.address)
    assert sample(result, "netsentry_dns_responses_total", rcode="NOERROR") == 1

`run_check` builds the check from its table's keys, as a config file gives them, and runs it
once through the runner (the deadline and the failure reasons are the runner's, as in the
agent). `sample` reads one value by name and labels from a Result or from exposition text;
`gauges` and `counters` give all of a Result's, for tests that assert the whole set.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter.checks import KINDS
from exporter.checks.base import Kind, Observation
from exporter.config.load import load_check
from exporter.config.model import CheckConfig
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.store import Result


def make_check(kind: str, **options: Any) -> CheckConfig:
    """A check of `kind` from its table's keys; named after its kind, every minute, with a
    1 s timeout unless `options` say otherwise."""
    return load_check({"name": kind, "kind": kind, "interval": "1m", "timeout": "1s", **options},
                      "test")


def run_check(check: CheckConfig | str, *, memory: dict[str, Any] | None = None,
              kinds: dict[str, Kind[Any]] | None = None, **options: Any) -> Result:
    """Run `check` once (a CheckConfig, or a kind with `options` as its keys); its Result.

    `memory` is the check's memory from run to run, as the store keeps it; `kinds` replaces
    the registry (a kind with an injected kernel, say)."""
    if isinstance(check, str):
        check = make_check(check, **options)
    elif options:
        raise TypeError("options go with a kind, not with a CheckConfig")
    return run_checks(check, 1, memory=memory, kinds=kinds)[0]


def run_checks(check: CheckConfig, times: int, *, memory: dict[str, Any] | None = None,
               kinds: dict[str, Kind[Any]] | None = None) -> list[Result]:
    """Run `check` `times` times, one after the other (with `memory`, one memory for all);
    their Results."""
    async def go() -> list[Result]:
        pool = BlockingPool(2)
        try:
            runner = Runner(Resolver(pool), KINDS if kinds is None else kinds)
            return [await runner.run(check, memory=memory) for _ in range(times)]
        finally:
            pool.close()

    return asyncio.run(go())


def sample(source: Result | str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly `labels`, or None if there is none.

    From a Result: its gauges and counts, whose labels are their kind's own (no check, no
    kind). From exposition text (/metrics, /probe): every label, check and kind included."""
    wanted = dict(labels)
    if isinstance(source, str):
        for family in text_string_to_metric_families(source):
            for found in family.samples:
                if found.name == name and found.labels == wanted:
                    return float(found.value)
        return None
    for spec, values, value in (*source.observations, *source.counts):
        if spec.name == name and dict(zip(spec.labels, values, strict=True)) == wanted:
            return value
    return None


def gauges(result: Result) -> dict[str, float]:
    """Every gauge of `result`: the name followed by its label values -> value."""
    return _flat(result.observations)


def counters(result: Result) -> dict[str, float]:
    """Every count of `result` (what the run added): the name and its label values -> n."""
    return _flat(result.counts)


def _flat(observations: tuple[Observation, ...]) -> dict[str, float]:
    return {spec.name + "".join(labels): value for spec, labels, value in observations}
