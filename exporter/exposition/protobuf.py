"""The exposition in Prometheus' protobuf format, with native histograms.

The same families, in the same order and slices, as the text renderer (`text.py`); each check's
label pairs are encoded once (`Protos`, kept between scrapes as `Texts` is), so a scrape only
encodes numbers. Every histogram is sent both ways, as client_golang does for a histogram that
has both: its classic buckets (unless `classic` is off) and its native buckets, so that a
Prometheus with native histograms enabled stores one series per histogram and one without
stores the classic ones. Counters and histograms carry their created timestamp.
"""

from __future__ import annotations

from collections.abc import Iterator

from exporter import metrics
from exporter.codecs import metrics_proto as proto
from exporter.config.model import CheckConfig
from exporter.errors import Reason
from exporter.exposition.text import SLICE, AgentSnapshot, kind_families
from exporter.metrics import DURATION_BUCKETS, LAG_BUCKETS, Spec
from exporter.native_histograms import ZERO_THRESHOLD, Native
from exporter.store import Buckets, CheckState, Result

CONTENT_TYPE = proto.CONTENT_TYPE

_HEADS: dict[str, bytes] = {}


def _head(spec: Spec) -> bytes:
    head = _HEADS.get(spec.name)
    if head is None:
        head = _HEADS[spec.name] = proto.family_head(spec.name, spec.help, proto.TYPES[spec.type])
    return head


class _Proto:
    """A loaded check's label pairs, encoded: its own, and with each kind series' labels."""

    __slots__ = ("base", "created", "histogram_created", "info", "kind", "reasons")

    def __init__(self, state: CheckState) -> None:
        check = state.check
        own = [("check", check.name), ("kind", check.kind)]
        if check.per_target:
            own.append(("target", check.target))
        own += check.labels
        self.base = proto.label_pairs(own)
        self.info = self.base if check.per_target else proto.label_pairs(
            [*own, ("target", check.target)])
        self.reasons = tuple(self.base + proto.label_pairs([("reason", r.value)])
                             for r in state.reasons)
        self.created = proto.created(state.created)
        self.histogram_created = proto.histogram_created(state.created)
        self.kind: dict[tuple[str, tuple[str, ...]], bytes] = {}

    def labels(self, spec: Spec, extra: tuple[str, ...]) -> bytes:
        key = (spec.name, extra)
        labels = self.kind.get(key)
        if labels is None:
            labels = self.kind[key] = self.base + proto.label_pairs(
                zip(spec.labels, extra, strict=True))
        return labels


class Protos:
    """The encoded labels of every loaded check, kept from one scrape to the next."""

    def __init__(self) -> None:
        self._protos: dict[int, tuple[CheckConfig, float, int, _Proto]] = {}

    def of(self, states: tuple[CheckState, ...]) -> list[tuple[CheckState, _Proto]]:
        known = self._protos
        entries = []
        missed = 0
        for state in states:
            entry = known.get(id(state.check))
            if (entry is None or entry[0] is not state.check or entry[1] != state.created
                    or entry[2] != len(state.reasons)):
                entry = (state.check, state.created, len(state.reasons), _Proto(state))
                missed += 1
            entries.append(entry)
        if missed or len(known) != len(states):
            self._protos = {id(entry[0]): entry for entry in entries}
        return [(state, entry[3]) for state, entry in zip(states, entries, strict=True)]


def _native(native: Native) -> tuple[int, float, int, list[tuple[int, int]], list[int]]:
    spans, deltas = native.spans()
    return native.schema, ZERO_THRESHOLD, native.zero, spans, deltas


_DURATION_BOUNDS = proto.bucket_bounds(DURATION_BUCKETS)
_LAG_BOUNDS = proto.bucket_bounds(LAG_BUCKETS)
_BOUNDS: dict[tuple[float, ...], tuple[bytes, ...]] = {}


def _bounds(bounds: tuple[float, ...]) -> tuple[bytes, ...]:
    encoded = _BOUNDS.get(bounds)
    if encoded is None:
        encoded = _BOUNDS[bounds] = proto.bucket_bounds(bounds)
    return encoded


def _cumulative(counts: tuple[int, ...] | list[int]) -> list[int]:
    out, total = [], 0
    for n in counts:
        total += n
        out.append(total)
    return out


def render_slices(states: tuple[CheckState, ...], agent: AgentSnapshot,
                  protos: Protos | None = None, classic: bool = True) -> Iterator[bytes]:
    """The exposition in slices of at most SLICE checks, each family a delimited message."""
    pairs = (protos or Protos()).of(states)
    slices = [pairs[i:i + SLICE] for i in range(0, len(pairs), SLICE)]
    gauge, counter, histogram = proto.gauge, proto.counter, proto.histogram

    def one(spec: Spec, metrics_of: list[bytes]) -> bytes:
        return proto.family(_head(spec), metrics_of) if metrics_of else b""

    parts: list[bytes] = []
    for part in slices:
        parts += [gauge(p.base, float(s.last.success)) for s, p in part if s.last]
    yield one(metrics.CHECK_SUCCESS, parts)

    parts = []
    for part in slices:
        parts += [histogram(p.base, s.buckets[-1], s.duration_sum,
                            proto.classic_buckets(_DURATION_BOUNDS, s.buckets) if classic
                            else b"", p.histogram_created, _native(s.native)) for s, p in part]
    yield one(metrics.CHECK_DURATION, parts)

    parts = []
    for part in slices:
        parts += [counter(p.base, s.runs, p.created) for s, p in part]
    yield one(metrics.CHECK_RUNS, parts)
    parts = []
    for part in slices:
        for s, p in part:
            parts += [counter(labels, n, p.created)
                      for labels, n in zip(p.reasons, s.failures, strict=True)]
    yield one(metrics.CHECK_FAILURES, parts)

    parts = []
    for part in slices:
        parts += [gauge(p.base, s.last.finished) for s, p in part if s.last]
    yield one(metrics.CHECK_LAST_RUN, parts)
    parts = []
    for part in slices:
        parts += [gauge(p.base, s.last_success) for s, p in part
                  if s.last_success is not None]
    yield one(metrics.CHECK_LAST_SUCCESS, parts)
    parts = []
    for part in slices:
        parts += [gauge(p.base, s.check.interval) for s, p in part]
    yield one(metrics.CHECK_INTERVAL, parts)
    parts = []
    for part in slices:
        parts += [gauge(p.info, 1.0) for _, p in part]
    yield one(metrics.CHECK_INFO, parts)

    for spec, counts in ((metrics.SCHEDULER_MISSED, agent.missed),
                         (metrics.SCHEDULER_SKIPPED, agent.skipped)):
        parts = []
        for part in slices:
            parts += [counter(p.base, counts.get(s.check.key, 0), p.created) for s, p in part]
        yield one(spec, parts)

    yield from _kind_metrics(slices, classic)
    yield _agent_metrics(agent, classic)


def _kind_metrics(slices: list[list[tuple[CheckState, _Proto]]],
                  classic: bool) -> Iterator[bytes]:
    specs, place = kind_families()
    families: list[list[bytes]] = [[] for _ in range(len(specs) + 1)]
    for part in slices:
        for state, p in part:
            last = state.last
            if last is not None:
                for (spec, extra), value in zip(last.series, last.values, strict=True):
                    families[place.get(spec.name, -1)].append(
                        proto.gauge(p.labels(spec, extra), value))
            for (spec, extra), value in zip(state.counter_series, state.counter_values,
                                            strict=True):
                families[place.get(spec.name, -1)].append(
                    proto.counter(p.labels(spec, extra), value, p.created))
            for (spec, extra), buckets in zip(state.histogram_series, state.histogram_values,
                                              strict=True):
                families[place.get(spec.name, -1)].append(_kind_histogram(
                    p.labels(spec, extra), spec, buckets, classic, p.histogram_created))
        yield b""  # a slice boundary: let the loop run
    for spec, found in zip(specs, families, strict=False):
        if found:
            yield proto.family(_head(spec), found)


def _kind_histogram(labels: bytes, spec: Spec, buckets: Buckets, classic: bool,
                    created: bytes) -> bytes:
    count = sum(buckets.counts)
    classic_part = (proto.classic_buckets(_bounds(spec.buckets), _cumulative(buckets.counts))
                    if classic else b"")
    return proto.histogram(labels, count, buckets.sum, classic_part, created,
                           _native(buckets.native))


def _agent_metrics(agent: AgentSnapshot, classic: bool) -> bytes:
    started = proto.created(agent.started)
    gauge, counter = proto.gauge, proto.counter
    labels = proto.label_pairs
    out = [
        proto.family(_head(metrics.BUILD_INFO), [gauge(labels(
            [("version", agent.version), ("python_version", agent.python_version)]), 1.0)]),
        proto.family(_head(metrics.HOST_INFO), [gauge(labels([("hostname", agent.hostname)]),
                                                      1.0)]),
        proto.family(_head(metrics.CONFIG_RELOAD_OK), [gauge(b"", float(agent.reload_ok))]),
    ]
    if agent.reload_time is not None:
        out.append(proto.family(_head(metrics.CONFIG_RELOAD_TIME),
                                [gauge(b"", agent.reload_time)]))
    if agent.web_reload_ok is not None:
        out.append(proto.family(_head(metrics.WEB_CONFIG_RELOAD_OK),
                                [gauge(b"", float(agent.web_reload_ok))]))
    out.append(proto.family(_head(metrics.CHECKS_IN_FLIGHT), [gauge(b"", agent.in_flight)]))
    configured = [gauge(labels([("kind", kind)]), count)
                  for kind, count in sorted(agent.configured.items())]
    if configured:
        out.append(proto.family(_head(metrics.CHECKS_CONFIGURED), configured))
    lag = list(agent.lag_buckets)
    out.append(proto.family(_head(metrics.SCHEDULER_LAG), [proto.histogram(
        b"", sum(lag), agent.lag_sum,
        proto.classic_buckets(_LAG_BOUNDS, _cumulative(lag)) if classic else b"",
        proto.histogram_created(agent.started),
        _native(agent.lag_native) if agent.lag_native is not None else None)]))
    out.append(proto.family(_head(metrics.CLOCK_STEPS),
                            [counter(b"", agent.clock_steps, started)]))
    index, count = agent.shard
    out.append(proto.family(_head(metrics.SHARD_CHECKS), [gauge(labels(
        [("shard", str(index)), ("shards", str(count))]), sum(agent.configured.values()))]))
    if agent.discovery:
        at = [labels([("check", s.check), ("source", s.source)]) for s in agent.discovery]
        pairs = list(zip(at, agent.discovery, strict=True))
        out += [
            proto.family(_head(metrics.DISCOVERY_TARGETS),
                         [gauge(a, s.targets) for a, s in pairs]),
            proto.family(_head(metrics.DISCOVERY_REFRESH_OK),
                         [gauge(a, float(s.ok)) for a, s in pairs if s.ok is not None]),
            proto.family(_head(metrics.DISCOVERY_REFRESH_TIME),
                         [gauge(a, s.last_success) for a, s in pairs
                          if s.last_success is not None]),
            proto.family(_head(metrics.DISCOVERY_REFRESH_FAILURES),
                         [counter(a, s.failures, started) for a, s in pairs]),
            proto.family(_head(metrics.DISCOVERY_REFUSED),
                         [gauge(a, s.refused) for a, s in pairs]),
        ]
    return b"".join(part for part in out if part)


def process_families(families: list[tuple[str, str, str, list[tuple[
        tuple[tuple[str, str], ...], float, float | None]]]]) -> list[bytes]:
    """prometheus_client's process and runtime families (`process_metrics.families()`)."""
    out = []
    for name, help_text, kind, samples in families:
        head = proto.family_head(name, help_text, proto.TYPES[kind])
        if kind == "counter":
            found = [proto.counter(proto.label_pairs(labels), value,
                                   proto.created(created) if created is not None else b"")
                     for labels, value, created in samples]
        else:
            found = [proto.gauge(proto.label_pairs(labels), value) if kind == "gauge"
                     else proto.untyped(proto.label_pairs(labels), value)
                     for labels, value, _ in samples]
        if found:
            out.append(proto.family(head, found))
    return out


def _probe_head(spec: Spec) -> bytes:
    """A probe's family: its help speaks of this run, not of the last scheduled one."""
    key = "probe " + spec.name
    head = _HEADS.get(key)
    if head is None:
        head = _HEADS[key] = proto.family_head(
            spec.name, spec.help.replace(f", {metrics.LAST_RUN}.", "."), proto.TYPES[spec.type])
    return head


def render_probe(result: Result, reasons: tuple[Reason, ...]) -> bytes:
    """One run as `/probe` answers it, as the text renderer's `render_probe` does: success,
    duration, the failure reason, and what the kind recorded (counters and histograms of this
    run alone, classic and native)."""
    gauge = proto.gauge
    out = [
        proto.family(_head(metrics.PROBE_SUCCESS), [gauge(b"", float(result.success))]),
        proto.family(_head(metrics.PROBE_DURATION), [gauge(b"", result.duration)]),
    ]
    shown = reasons if result.reason is None or result.reason in reasons else (
        *reasons, result.reason)
    out.append(proto.family(_head(metrics.PROBE_FAILURE_REASON), [
        gauge(proto.label_pairs([("reason", r.value)]), float(r is result.reason))
        for r in shown]))
    found: dict[str, list[bytes]] = {}
    values: dict[tuple[str, tuple[str, ...]], tuple[Spec, float]] = {}
    for (spec, extra), value in zip(result.series, result.values, strict=True):
        values[(spec.name, extra)] = (spec, value)
    for (spec, extra), n in zip(result.counted, result.increments, strict=True):
        _, before = values.get((spec.name, extra), (spec, 0))
        values[(spec.name, extra)] = (spec, before + n)
    histograms: dict[tuple[str, tuple[str, ...]], tuple[Spec, Buckets]] = {}
    for (spec, extra), sample in zip(result.observed, result.samples, strict=True):
        _, buckets = histograms.get((spec.name, extra), (spec, Buckets.empty(spec.buckets)))
        histograms[(spec.name, extra)] = (spec, buckets.add(spec.buckets, sample))
    for (name, extra), (spec, buckets) in histograms.items():
        labels = proto.label_pairs(zip(spec.labels, extra, strict=True))
        found.setdefault(name, []).append(_kind_histogram(labels, spec, buckets, True, b""))
    for (name, extra), (spec, value) in values.items():
        labels = proto.label_pairs(zip(spec.labels, extra, strict=True))
        metric = (proto.counter(labels, value) if spec.type == metrics.COUNTER
                  else gauge(labels, value))
        found.setdefault(name, []).append(metric)
    for spec in kind_families()[0]:
        if spec.name in found:
            out.append(proto.family(_probe_head(spec), found[spec.name]))
    return b"".join(out)
