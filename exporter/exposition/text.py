"""Renders a snapshot of the results store in the Prometheus text format (version 0.0.4).

prometheus_client's generic renderer spends about 6 µs per series; 10,000 checks have some
300,000 series, which would make a scrape take seconds. This renderer keeps, per loaded check,
the text of every series up to its value (rendered once, in `Texts`), so a scrape only formats
numbers.

It renders on the event loop in slices of `SLICE` checks, as a generator: the caller yields
to the loop between slices, so a scrape of 10,000 checks delays no run by more than a slice.
(A worker thread would hold the GIL against the loop and, worse, take it back at every
syscall the loop makes.) States are immutable, so a snapshot taken at the start of a scrape
stays consistent however long the rendering takes. The output is checked against
prometheus_client's own parser by the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from exporter import metrics
from exporter.checks import kind_specs
from exporter.config.model import CheckConfig
from exporter.errors import Reason
from exporter.metrics import DURATION_BUCKETS, LAG_BUCKETS, Series, Spec
from exporter.native_histograms import Native
from exporter.store import Buckets, CheckState, Result

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_END = "# EOF\n"
SLICE = 250  # checks per slice of one metric family


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
    shard: tuple[int, int] = (0, 1)  # this agent's shard I of N (--shard I/N)
    web_reload_ok: bool | None = None  # None: no --web.config.file
    discovery: tuple[SourceStatus, ...] = ()  # one per discovered check
    started: float = 0.0  # Unix time the agent started: its own counters' created timestamp
    lag_native: Native | None = None  # the scheduler lag's native buckets


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Where a discovered check's targets stand, for the netsentry_discovery_* series."""

    check: str
    source: str  # TargetSource.label
    targets: int
    refused: int
    ok: bool | None  # None: not refreshed yet
    last_success: float | None
    failures: int


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _header(spec: Spec) -> str:
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.type}\n"


_DURATION_LE = [format_value(float(b)) for b in DURATION_BUCKETS] + ["+Inf"]
_LAG_LE = [format_value(float(b)) for b in LAG_BUCKETS] + ["+Inf"]


class _Text:
    """Every series of one loaded check, rendered up to the value."""

    __slots__ = ("base", "counted", "failures", "failures_text", "histogram", "info",
                 "interval", "kind", "last_run", "last_success", "missed", "om", "plan", "runs",
                 "skipped", "success")

    def __init__(self, state: CheckState) -> None:
        check = state.check
        target = f',target="{escape_label(check.target)}"'
        # One of a target list's checks is told apart by its target, on every series.
        base = self.base = (f'check="{escape_label(check.name)}",kind="{check.kind}"'
                            + (target if check.per_target else "") + "".join(
                                f',{name}="{escape_label(value)}"' for name, value in check.labels))
        self.success = f"{metrics.CHECK_SUCCESS.name}{{{base}}} "
        name = metrics.CHECK_DURATION.name
        # The whole histogram as one %-template (bucket counts, the sum, the count): one
        # formatting per check instead of twelve, a tenth of the whole exposition's time.
        lines = [(f'{name}_bucket{{{base},le="{le}"}} ', "%d") for le in _DURATION_LE]
        lines += [(f"{name}_sum{{{base}}} ", "%r"), (f"{name}_count{{{base}}} ", "%d")]
        self.histogram = "".join(prefix.replace("%", "%%") + directive + "\n"
                                 for prefix, directive in lines)
        self.runs = f"{metrics.CHECK_RUNS.name}{{{base}}} "
        self.failures = tuple(f'{metrics.CHECK_FAILURES.name}{{{base},reason="{r.value}"}} '
                              for r in state.reasons)
        # The failure counters' lines for the counts in `counted`: a run that succeeds keeps
        # its state's very tuple of counts, so most checks reuse these lines scrape after scrape.
        self.counted: tuple[int, ...] | None = None
        self.failures_text = ""
        self.last_run = f"{metrics.CHECK_LAST_RUN.name}{{{base}}} "
        self.last_success = f"{metrics.CHECK_LAST_SUCCESS.name}{{{base}}} "
        self.interval = (f"{metrics.CHECK_INTERVAL.name}{{{base}}} "
                         f"{format_value(check.interval)}\n")
        self.info = f"{metrics.CHECK_INFO.name}{{{base}{'' if check.per_target else target}}} 1\n"
        self.missed = f"{metrics.SCHEDULER_MISSED.name}{{{base}}} "
        self.skipped = f"{metrics.SCHEDULER_SKIPPED.name}{{{base}}} "
        # Kind metrics' text up to the value, by (name, label values): rendered once.
        self.kind: dict[tuple[str, tuple[str, ...]], str] = {}
        self.plan: _Plan | None = None  # the last run's gauges' families and prefixes
        self.om: _OpenMetrics | None = None  # made at the first OpenMetrics scrape


class _OpenMetrics:
    """What OpenMetrics adds to a check's text: the created sample after each of its counters
    and its histogram, at the time the check was loaded."""

    __slots__ = ("counted", "created", "duration", "failures", "failures_text", "missed",
                 "runs", "skipped", "when")

    def __init__(self, state: CheckState, text: _Text) -> None:
        self.when = state.created
        created = self.created = format_value(state.created)
        base = text.base
        self.runs = f"{_created_name(metrics.CHECK_RUNS)}{{{base}}} {created}\n"
        self.duration = f"{_created_name(metrics.CHECK_DURATION)}{{{base}}} {created}\n"
        name = _created_name(metrics.CHECK_FAILURES)
        self.failures = tuple(f'{name}{{{base},reason="{r.value}"}} {created}\n'
                              for r in state.reasons)
        self.missed = f"{_created_name(metrics.SCHEDULER_MISSED)}{{{base}}} {created}\n"
        self.skipped = f"{_created_name(metrics.SCHEDULER_SKIPPED)}{{{base}}} {created}\n"
        self.counted: tuple[int, ...] | None = None
        self.failures_text = ""


def _created_name(spec: Spec) -> str:
    """The name of a counter's or histogram's created sample (OpenMetrics)."""
    return spec.name.removesuffix("_total") + "_created"


_OM_HEADERS: dict[str, str] = {}


def _om_header(spec: Spec) -> str:
    """An OpenMetrics family's metadata: a counter's family is named without `_total`, and
    HELP escapes double quotes too."""
    text = _OM_HEADERS.get(spec.name)
    if text is None:
        text = _OM_HEADERS[spec.name] = _om_header_text(spec)
    return text


def _om_header_text(spec: Spec) -> str:
    name = spec.name.removesuffix("_total") if spec.type == metrics.COUNTER else spec.name
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f"# HELP {name} {help_text}\n# TYPE {name} {spec.type}\n"


def _om(state: CheckState, text: _Text) -> _OpenMetrics:
    om = text.om
    if om is None:
        om = text.om = _OpenMetrics(state, text)
    return om


class Texts:
    """The text of every loaded check's series, kept from one scrape to the next by whoever
    scrapes (the agent's routes): rendered once per loaded check, dropped with it. The store's
    states are frozen and hold none of it."""

    def __init__(self) -> None:
        # By the identity of the check's config, held so that the id stays the check's.
        self._texts: dict[int, tuple[CheckConfig, _Text]] = {}

    def of(self, states: tuple[CheckState, ...]) -> list[tuple[CheckState, _Text]]:
        """Each state with its text; the texts of checks no longer among them are dropped."""
        known = self._texts
        pairs = []
        missed = 0
        for state in states:
            entry = known.get(id(state.check))
            if (entry is None or entry[0] is not state.check
                    or len(entry[1].failures) != len(state.reasons)
                    or (entry[1].om is not None
                        and entry[1].om.when != state.created)):
                entry = (state.check, _Text(state))
                missed += 1
            pairs.append(entry)
        if missed or len(known) != len(states):  # checks came or went: keep theirs only
            self._texts = {id(check): (check, text) for check, text in pairs}
        return [(state, text) for state, (_, text) in zip(states, pairs, strict=True)]


def render(states: Iterable[CheckState], agent: AgentSnapshot,
           texts: Texts | None = None, openmetrics: bool = False) -> str:
    """The whole exposition at once (tests, and callers with few checks)."""
    return "".join(render_slices(tuple(states), agent, texts, openmetrics)) + (
        OPENMETRICS_END if openmetrics else "")


def render_slices(states: tuple[CheckState, ...], agent: AgentSnapshot,
                  texts: Texts | None = None, openmetrics: bool = False) -> Iterator[str]:
    """The exposition in slices of at most SLICE checks of one family each; `texts` keeps the
    checks' text for the next scrape (without it, everything is rendered afresh). With
    `openmetrics`, OpenMetrics 1.0.0: counters' families named without `_total`, and a created
    sample after every counter and histogram; the caller ends it with OPENMETRICS_END once
    whatever it appends is written."""
    pairs = (texts or Texts()).of(states)
    slices = [pairs[i:i + SLICE] for i in range(0, len(pairs), SLICE)]
    head = _om_header if openmetrics else _header

    yield head(metrics.CHECK_SUCCESS)
    for part in slices:
        yield "".join(f"{t.success}{int(s.last.success)}\n" for s, t in part if s.last)

    yield head(metrics.CHECK_DURATION)
    for part in slices:
        if openmetrics:
            yield "".join([t.histogram % (*s.buckets, s.duration_sum, s.buckets[-1])
                           + _om(s, t).duration for s, t in part])
        else:
            yield "".join([t.histogram % (*s.buckets, s.duration_sum, s.buckets[-1])
                           for s, t in part])

    yield head(metrics.CHECK_RUNS)
    for part in slices:
        if openmetrics:
            yield "".join(f"{t.runs}{s.runs}\n{_om(s, t).runs}" for s, t in part)
        else:
            yield "".join(f"{t.runs}{s.runs}\n" for s, t in part)

    yield head(metrics.CHECK_FAILURES)
    for part in slices:
        if openmetrics:
            yield "".join(_om_failures_text(s, t) for s, t in part)
        else:
            yield "".join(_failures_text(s, t) for s, t in part)

    yield head(metrics.CHECK_LAST_RUN)
    for part in slices:
        yield "".join(f"{t.last_run}{s.last.finished!r}\n" for s, t in part if s.last)
    yield head(metrics.CHECK_LAST_SUCCESS)
    for part in slices:
        yield "".join(f"{t.last_success}{s.last_success!r}\n" for s, t in part
                      if s.last_success is not None)
    yield head(metrics.CHECK_INTERVAL)
    for part in slices:
        yield "".join(t.interval for _, t in part)
    yield head(metrics.CHECK_INFO)
    for part in slices:
        yield "".join(t.info for _, t in part)

    missed, skipped = agent.missed, agent.skipped
    yield head(metrics.SCHEDULER_MISSED)
    for part in slices:
        if openmetrics:
            yield "".join(f"{t.missed}{missed.get(s.check.key, 0)}\n{_om(s, t).missed}"
                          for s, t in part)
        else:
            yield "".join(f"{t.missed}{missed.get(s.check.key, 0)}\n" for s, t in part)
    yield head(metrics.SCHEDULER_SKIPPED)
    for part in slices:
        if openmetrics:
            yield "".join(f"{t.skipped}{skipped.get(s.check.key, 0)}\n{_om(s, t).skipped}"
                          for s, t in part)
        else:
            yield "".join(f"{t.skipped}{skipped.get(s.check.key, 0)}\n" for s, t in part)

    yield from _kind_metrics(slices, openmetrics)
    yield _agent_metrics(agent, openmetrics)


def _om_failures_text(state: CheckState, text: _Text) -> str:
    om = _om(state, text)
    if state.failures is not om.counted:
        om.failures_text = "".join(map("{}{}\n{}".format, text.failures, state.failures,
                                       om.failures))
        om.counted = state.failures
    return om.failures_text


def _failures_text(state: CheckState, text: _Text) -> str:
    if state.failures is not text.counted:
        text.failures_text = "".join(map("{}{}\n".format, text.failures, state.failures))
        text.counted = state.failures
    return text.failures_text


def _kind_metrics(slices: list[list[tuple[CheckState, _Text]]],
                  openmetrics: bool = False) -> Iterator[str]:
    specs, place = kind_families()
    families: list[list[str]] = [[] for _ in range(len(specs) + 1)]  # +1: undeclared (runner)
    for part in slices:
        for state, text in part:
            last = state.last
            if last is not None and last.series:
                plan = text.plan
                if plan is None or plan[0] is not last.series or plan[3] is not place:
                    plan = text.plan = _plan(last.series, text, place)  # the series changed
                for index, prefix, value in zip(plan[1], plan[2], last.values, strict=True):
                    families[index].append(_line(prefix, value))
            for (spec, extra), value in zip(state.counter_series, state.counter_values,
                                            strict=True):
                line = _line(_prefix(text, spec, extra), value)
                if openmetrics:
                    line += _created_line(state, text, spec, extra)
                families[place.get(spec.name, -1)].append(line)
            for (spec, extra), buckets in zip(state.histogram_series, state.histogram_values,
                                              strict=True):
                key = (spec.name, extra)
                template = text.kind.get(key)  # a histogram's name is never a gauge's
                if template is None:
                    labels = _labels(spec, extra)
                    template = text.kind[key] = _histogram(
                        spec, f"{text.base},{labels}" if labels else text.base)
                line = _fill(template, buckets)
                if openmetrics:
                    line += _created_line(state, text, spec, extra)
                families[place.get(spec.name, -1)].append(line)
        yield ""  # a slice boundary: let the loop run
    head = _om_header if openmetrics else _header
    for spec, lines in zip(specs, families, strict=False):
        if lines:
            yield head(spec) + "".join(lines)


def _created_line(state: CheckState, text: _Text, spec: Spec, extra: tuple[str, ...]) -> str:
    """The created sample of a kind's counter or histogram (OpenMetrics), rendered once."""
    key = ("_created " + spec.name, extra)
    line = text.kind.get(key)
    if line is None:
        labels = _labels(spec, extra)
        line = text.kind[key] = (f"{_created_name(spec)}{{{text.base}"
                                 f"{',' + labels if labels else ''}}} "
                                 f"{_om(state, text).created}\n")
    return line


_FAMILIES: list[tuple[tuple[Spec, ...], dict[str, int]]] = []


def kind_families() -> tuple[tuple[Spec, ...], dict[str, int]]:
    """The kinds' families in the order they are rendered, and each one's place by name:
    derived from the registry (`kind_specs`), again only when it changes."""
    specs = kind_specs()
    if not _FAMILIES or _FAMILIES[0][0] is not specs:
        _FAMILIES[:] = [(specs, {spec.name: index for index, spec in enumerate(specs)})]
    return _FAMILIES[0]


_Plan = tuple[Series, tuple[int, ...], tuple[str, ...], dict[str, int]]


def _plan(series: Series, text: _Text, place: dict[str, int]) -> _Plan:
    """Where each of a check's gauges goes and its text up to the value: made once per check
    (the store keeps one `series` tuple per check while its gauges stay the same)."""
    return (series, tuple(place.get(spec.name, -1) for spec, _ in series),
            tuple(_prefix(text, spec, extra) for spec, extra in series), place)


def _prefix(text: _Text, spec: Spec, extra: tuple[str, ...]) -> str:
    key = (spec.name, extra)
    prefix = text.kind.get(key)
    if prefix is None:
        prefix = text.kind[key] = _kind_prefix(spec, extra, text.base)
    return prefix


def _line(prefix: str, value: float) -> str:
    # value - value is 0.0 for finite floats only (inf and NaN give NaN).
    if type(value) is float and value - value == 0:
        return f"{prefix}{value!r}\n"
    return f"{prefix}{format_value(value)}\n"


def _kind_prefix(spec: Spec, extra: tuple[str, ...], base: str) -> str:
    if not extra:
        return f"{spec.name}{{{base}}} "
    return f"{spec.name}{{{base},{_labels(spec, extra)}}} "


def _labels(spec: Spec, extra: tuple[str, ...]) -> str:
    return ",".join(f'{k}="{escape_label(v)}"' for k, v in zip(spec.labels, extra, strict=True))


def _histogram(spec: Spec, labels: str) -> str:
    """A kind's histogram series as one %-template: cumulative bucket counts, sum, count."""
    name, sep = spec.name, "," if labels else ""
    lines = [(f'{name}_bucket{{{labels}{sep}le="{le}"}} ', "%d")
             for le in [*map(format_value, map(float, spec.buckets)), "+Inf"]]
    within = f"{{{labels}}}" if labels else ""
    lines += [(f"{name}_sum{within} ", "%s"), (f"{name}_count{within} ", "%d")]
    return "".join(prefix.replace("%", "%%") + directive + "\n" for prefix, directive in lines)


def _fill(template: str, buckets: Buckets) -> str:
    cumulative = buckets.cumulative()
    return template % (*cumulative, format_value(buckets.sum), cumulative[-1])


def _agent_metrics(agent: AgentSnapshot, openmetrics: bool = False) -> str:
    head = _om_header if openmetrics else _header
    started = format_value(agent.started)
    out = [
        head(metrics.BUILD_INFO),
        f'{metrics.BUILD_INFO.name}{{version="{escape_label(agent.version)}",'
        f'python_version="{escape_label(agent.python_version)}"}} 1\n',
        head(metrics.HOST_INFO),
        f'{metrics.HOST_INFO.name}{{hostname="{escape_label(agent.hostname)}"}} 1\n',
        head(metrics.CONFIG_RELOAD_OK),
        f"{metrics.CONFIG_RELOAD_OK.name} {int(agent.reload_ok)}\n",
    ]
    if agent.reload_time is not None:
        out += [head(metrics.CONFIG_RELOAD_TIME),
                f"{metrics.CONFIG_RELOAD_TIME.name} {format_value(agent.reload_time)}\n"]
    if agent.web_reload_ok is not None:
        out += [head(metrics.WEB_CONFIG_RELOAD_OK),
                f"{metrics.WEB_CONFIG_RELOAD_OK.name} {int(agent.web_reload_ok)}\n"]
    out += [head(metrics.CHECKS_IN_FLIGHT),
            f"{metrics.CHECKS_IN_FLIGHT.name} {agent.in_flight}\n",
            head(metrics.CHECKS_CONFIGURED)]
    out += [f'{metrics.CHECKS_CONFIGURED.name}{{kind="{kind}"}} {count}\n'
            for kind, count in sorted(agent.configured.items())]
    out.append(head(metrics.SCHEDULER_LAG))
    name = metrics.SCHEDULER_LAG.name
    total = 0
    for le, count in zip(_LAG_LE, agent.lag_buckets, strict=True):
        total += count
        out.append(f'{name}_bucket{{le="{le}"}} {total}\n')
    out.append(f"{name}_sum {format_value(agent.lag_sum)}\n{name}_count {total}\n")
    if openmetrics:
        out.append(f"{_created_name(metrics.SCHEDULER_LAG)} {started}\n")
    out += [head(metrics.CLOCK_STEPS), f"{metrics.CLOCK_STEPS.name} {agent.clock_steps}\n"]
    if openmetrics:
        out.append(f"{_created_name(metrics.CLOCK_STEPS)} {started}\n")
    index, count = agent.shard
    out += [head(metrics.SHARD_CHECKS), f'{metrics.SHARD_CHECKS.name}{{shard="{index}",'
            f'shards="{count}"}} {sum(agent.configured.values())}\n']
    if agent.discovery:
        out.append(_discovery_metrics(agent.discovery, head,
                                      started if openmetrics else None))
    return "".join(out)


def _discovery_metrics(sources: tuple[SourceStatus, ...], head: Callable[[Spec], str],
                       started: str | None) -> str:
    labels = [f'check="{escape_label(s.check)}",source="{escape_label(s.source)}"'
              for s in sources]
    out = [head(metrics.DISCOVERY_TARGETS)]
    out += [f"{metrics.DISCOVERY_TARGETS.name}{{{at}}} {s.targets}\n"
            for at, s in zip(labels, sources, strict=True)]
    out.append(head(metrics.DISCOVERY_REFRESH_OK))
    out += [f"{metrics.DISCOVERY_REFRESH_OK.name}{{{at}}} {int(s.ok)}\n"
            for at, s in zip(labels, sources, strict=True) if s.ok is not None]
    out.append(head(metrics.DISCOVERY_REFRESH_TIME))
    out += [f"{metrics.DISCOVERY_REFRESH_TIME.name}{{{at}}} {format_value(s.last_success)}\n"
            for at, s in zip(labels, sources, strict=True) if s.last_success is not None]
    out.append(head(metrics.DISCOVERY_REFRESH_FAILURES))
    created = _created_name(metrics.DISCOVERY_REFRESH_FAILURES)
    out += [f"{metrics.DISCOVERY_REFRESH_FAILURES.name}{{{at}}} {s.failures}\n"
            + (f"{created}{{{at}}} {started}\n" if started is not None else "")
            for at, s in zip(labels, sources, strict=True)]
    out.append(head(metrics.DISCOVERY_REFUSED))
    out += [f"{metrics.DISCOVERY_REFUSED.name}{{{at}}} {s.refused}\n"
            for at, s in zip(labels, sources, strict=True)]
    return "".join(out)


def render_probe(result: Result, reasons: tuple[Reason, ...], openmetrics: bool = False) -> str:
    """One run as `/probe` answers it, in an exposition of its own: success, duration, the
    failure reason among those the kind can produce, and what the kind recorded. No `check` or
    `kind` label: Prometheus adds the target's labels, as with blackbox_exporter. With
    `openmetrics`, OpenMetrics' family names and escaping (the caller adds OPENMETRICS_END)."""
    out = [_PROBE_HEAD, str(int(result.success)), _PROBE_DURATION, format_value(result.duration),
           "\n", _probe_reasons(reasons, result.reason)]
    # Keyed by name, not by Spec: hashing a dataclass costs more than the rest of a line.
    values: dict[tuple[str, tuple[str, ...]], tuple[Spec, float]] = {}
    for (spec, extra), value in zip(result.series, result.values, strict=True):
        values[(spec.name, extra)] = (spec, value)  # a gauge recorded twice: the last value
    for (spec, extra), n in zip(result.counted, result.increments, strict=True):
        _, before = values.get((spec.name, extra), (spec, 0))
        values[(spec.name, extra)] = (spec, before + n)  # counters of this run alone
    families: dict[str, list[str]] = {}
    histograms: dict[tuple[str, tuple[str, ...]], tuple[Spec, Buckets]] = {}
    for (spec, extra), sample in zip(result.observed, result.samples, strict=True):
        _, buckets = histograms.get((spec.name, extra), (spec, Buckets.empty(spec.buckets)))
        histograms[(spec.name, extra)] = (spec, buckets.add(spec.buckets, sample))
    for (name, extra), (spec, buckets) in histograms.items():  # samples of this run alone
        families.setdefault(name, [_probe_header(spec, openmetrics)]).append(
            _fill(_histogram(spec, _labels(spec, extra)), buckets))
    for (name, extra), (spec, value) in values.items():
        lines = families.setdefault(name, [_probe_header(spec, openmetrics)])
        if extra:
            lines.append(f"{name}{{{_labels(spec, extra)}}} {format_value(value)}\n")
        else:
            lines.append(f"{name} {format_value(value)}\n")
    for spec in kind_families()[0]:
        if spec.name in families:
            out += families[spec.name]
    return "".join(out)


_PROBE_HEAD = _header(metrics.PROBE_SUCCESS) + f"{metrics.PROBE_SUCCESS.name} "
_PROBE_DURATION = "\n" + _header(metrics.PROBE_DURATION) + f"{metrics.PROBE_DURATION.name} "
_PROBE_HEADERS: dict[str, str] = {}  # by metric name, rendered once
# The failure-reason block by the kind's reasons (held, so that their id stays theirs) and by
# the reason: rendered once per kind and reason.
_PROBE_REASONS: dict[int, tuple[tuple[Reason, ...], dict[str, str]]] = {}


def _probe_header(spec: Spec, openmetrics: bool = False) -> str:
    key = ("om " if openmetrics else "") + spec.name
    text = _PROBE_HEADERS.get(key)
    if text is None:
        # The help of a probe's metric speaks of this run, not of the last scheduled one.
        help_text = spec.help.replace(f", {metrics.LAST_RUN}.", ".")
        probe_spec = Spec(spec.name, spec.type, help_text)
        text = _PROBE_HEADERS[key] = (_om_header_text(probe_spec) if openmetrics
                                      else _header(probe_spec))
    return text


def _probe_reasons(reasons: tuple[Reason, ...], reason: Reason | None) -> str:
    if reason is not None and reason not in reasons:  # one the kind did not declare: shown
        return _reasons_text((*reasons, reason), reason)
    known = _PROBE_REASONS.get(id(reasons))
    if known is None or known[0] is not reasons:
        if len(_PROBE_REASONS) > 64:  # callers pass the kinds' own tuples; others: bounded
            _PROBE_REASONS.clear()
        known = _PROBE_REASONS[id(reasons)] = (reasons, {})
    key = reason.value if reason is not None else ""
    text = known[1].get(key)
    if text is None:
        text = known[1][key] = _reasons_text(reasons, reason)
    return text


def _reasons_text(reasons: tuple[Reason, ...], reason: Reason | None) -> str:
    name = metrics.PROBE_FAILURE_REASON.name
    return _header(metrics.PROBE_FAILURE_REASON) + "".join(
        f'{name}{{reason="{r.value}"}} {int(r is reason)}\n' for r in reasons)
