"""Renders a snapshot of the results store in the Prometheus text format (version 0.0.4).

prometheus_client's generic renderer spends about 6 µs per series; 10,000 checks have some
300,000 series, which would make a scrape take seconds. This renderer keeps each check's
label strings ready (rendered once per loaded check) and formats only the values, so a scrape
of 10,000 checks renders in a fraction of that. It runs on a worker thread over immutable
states, so it neither blocks the event loop nor races a run. The output is checked against
prometheus_client's own parser by the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from exporter import metrics
from exporter.metrics import DURATION_BUCKETS, LAG_BUCKETS, Spec
from exporter.store import CheckState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """The agent's own metrics at the time of a scrape."""

    version: str
    python_version: str
    hostname: str
    reload_ok: bool
    reload_time: float | None
    in_flight: int
    configured: Mapping[str, int]
    lag_buckets: tuple[int, ...]  # per bucket, not cumulative; +Inf last
    lag_sum: float
    clock_steps: int
    missed: Mapping[str, int] = field(default_factory=dict)
    skipped: Mapping[str, int] = field(default_factory=dict)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _header(spec: Spec) -> str:
    return f"# HELP {spec.name} {_escape_help(spec.help)}\n# TYPE {spec.name} {spec.type}\n"


def _le(bound: float) -> str:
    return format_value(float(bound))


_DURATION_LE = [_le(b) for b in DURATION_BUCKETS] + ["+Inf"]
_LAG_LE = [_le(b) for b in LAG_BUCKETS] + ["+Inf"]


def _labels(state: CheckState) -> str:
    """`check="…",kind="…"`, rendered once per loaded check."""
    base = state.cache.get("labels")
    if base is None:
        base = f'check="{escape_label(state.check.name)}",kind="{state.check.kind}"'
        state.cache["labels"] = base
    return base


def render(states: Iterable[CheckState], agent: AgentSnapshot) -> str:
    states = tuple(states)
    out: list[str] = []
    put = out.append
    labels = [_labels(s) for s in states]
    pairs = list(zip(states, labels, strict=True))

    def simple(spec: Spec, values: Iterable[tuple[str, float | None]]) -> None:
        put(_header(spec))
        name = spec.name
        for base, value in values:
            if value is not None:
                put(f"{name}{{{base}}} {format_value(value)}\n")

    ran = [(s, b) for s, b in pairs if s.last is not None]
    simple(metrics.CHECK_SUCCESS, ((b, int(s.last.success)) for s, b in ran if s.last))

    put(_header(metrics.CHECK_DURATION))
    name = metrics.CHECK_DURATION.name
    for state, base in pairs:
        total = 0
        for le, count in zip(_DURATION_LE, state.buckets, strict=True):
            total += count
            put(f'{name}_bucket{{{base},le="{le}"}} {total}\n')
        put(f"{name}_sum{{{base}}} {format_value(state.duration_sum)}\n")
        put(f"{name}_count{{{base}}} {total}\n")

    simple(metrics.CHECK_RUNS, ((b, s.runs) for s, b in pairs))

    put(_header(metrics.CHECK_FAILURES))
    name = metrics.CHECK_FAILURES.name
    for state, base in pairs:
        for reason, count in zip(state.reasons, state.failures, strict=True):
            put(f'{name}{{{base},reason="{reason.value}"}} {count}\n')

    simple(metrics.CHECK_LAST_RUN, ((b, s.last.finished) for s, b in ran if s.last))
    simple(metrics.CHECK_LAST_SUCCESS, ((b, s.last_success) for s, b in pairs))
    simple(metrics.CHECK_INTERVAL, ((b, s.check.interval) for s, b in pairs))

    put(_header(metrics.CHECK_INFO))
    name = metrics.CHECK_INFO.name
    for state, base in pairs:
        put(f'{name}{{{base},target="{escape_label(state.check.target)}"}} 1\n')

    simple(metrics.SCHEDULER_MISSED, ((b, agent.missed.get(s.check.name, 0)) for s, b in pairs))
    simple(metrics.SCHEDULER_SKIPPED, ((b, agent.skipped.get(s.check.name, 0)) for s, b in pairs))

    _render_kind_metrics(pairs, put)
    _render_agent(agent, put)
    return "".join(out)


def _render_kind_metrics(pairs: list[tuple[CheckState, str]], put: Callable[[str], None]) -> None:
    families: dict[str, list[str]] = {}
    for state, base in pairs:
        observed = state.last.observations if state.last else ()
        for spec, extra, value in (*observed, *state.counters):
            lines = families.setdefault(spec.name, [])
            if extra:
                pairs_text = ",".join(
                    f'{k}="{escape_label(v)}"' for k, v in zip(spec.labels, extra, strict=True)
                )
                lines.append(f"{spec.name}{{{base},{pairs_text}}} {format_value(value)}\n")
            else:
                lines.append(f"{spec.name}{{{base}}} {format_value(value)}\n")
    for spec in metrics.KIND_SPECS:
        if spec.name in families:
            put(_header(spec))
            put("".join(families[spec.name]))


def _render_agent(agent: AgentSnapshot, put: Callable[[str], None]) -> None:
    put(_header(metrics.BUILD_INFO))
    put(f'{metrics.BUILD_INFO.name}{{version="{escape_label(agent.version)}",'
        f'python_version="{escape_label(agent.python_version)}"}} 1\n')
    put(_header(metrics.HOST_INFO))
    put(f'{metrics.HOST_INFO.name}{{hostname="{escape_label(agent.hostname)}"}} 1\n')
    put(_header(metrics.CONFIG_RELOAD_OK))
    put(f"{metrics.CONFIG_RELOAD_OK.name} {int(agent.reload_ok)}\n")
    if agent.reload_time is not None:
        put(_header(metrics.CONFIG_RELOAD_TIME))
        put(f"{metrics.CONFIG_RELOAD_TIME.name} {format_value(agent.reload_time)}\n")
    put(_header(metrics.CHECKS_IN_FLIGHT))
    put(f"{metrics.CHECKS_IN_FLIGHT.name} {agent.in_flight}\n")
    put(_header(metrics.CHECKS_CONFIGURED))
    for kind, count in sorted(agent.configured.items()):
        put(f'{metrics.CHECKS_CONFIGURED.name}{{kind="{kind}"}} {count}\n')
    put(_header(metrics.SCHEDULER_LAG))
    name = metrics.SCHEDULER_LAG.name
    total = 0
    for le, count in zip(_LAG_LE, agent.lag_buckets, strict=True):
        total += count
        put(f'{name}_bucket{{le="{le}"}} {total}\n')
    put(f"{name}_sum {format_value(agent.lag_sum)}\n{name}_count {total}\n")
    put(_header(metrics.CLOCK_STEPS))
    put(f"{metrics.CLOCK_STEPS.name} {agent.clock_steps}\n")
