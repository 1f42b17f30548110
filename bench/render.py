"""/metrics rendering of N checks: netsentry's renderer beside prometheus_client's generic one.

    .venv/bin/python bench/render.py [--checks 10000] [--repeat 7] [--mixed] [--formats ...]

Builds a results store of N tcp checks that have run (with --mixed: each kind of OBSERVED in
turn, as bench/reliability.py loads them), each with what a run of its kind records on
Linux, then times (median of --repeat) the full exposition in each format (text 0.0.4,
OpenMetrics, protobuf with native histograms), and the same families through a
prometheus_client custom collector and its `generate_latest` (text, and OpenMetrics for the
OpenMetrics row), in this process; and for protobuf, the same check families built as the
`protobuf` package's message objects (the alternative to the hand-written encoder). No network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Table
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter import metrics
from exporter.config.load import load_text
from exporter.exposition import AgentSnapshot, Texts, protobuf, render
from exporter.exposition.text import OPENMETRICS_END
from exporter.store import CheckState, Result, Store, split

# What a run of each kind records on Linux (tcp: resolve and connect times and TCP_INFO; dns:
# a direct query answered NOERROR; http: a plain GET answered 200), as (spec, labels, value).
TCP_INFO = ((metrics.TCP_RTT, (), 2.8e-05), (metrics.TCP_RTTVAR, (), 1.4e-05),
            (metrics.TCP_RETRANSMITS, (), 0), (metrics.TCP_SND_CWND, (), 10),
            (metrics.TCP_PMTU, (), 65535))
OBSERVED: dict[str, tuple[Any, ...]] = {
    "tcp": ((metrics.DNS_LOOKUP, (), 1.2e-05), (metrics.TCP_CONNECT, (), 0.00021), *TCP_INFO),
    "dns": ((metrics.DNS_LOOKUP, (), 0.000312), (metrics.DNS_ANSWERS, (), 1),
            (metrics.DNS_MIN_TTL, (), 0), (metrics.DNS_AUTHENTICATED, (), 0)),
    "http": (*((metrics.HTTP_PHASE, (phase,), 0.00017)
               for phase in ("resolve", "connect", "processing", "transfer")),
             (metrics.HTTP_REDIRECTS, (), 0), (metrics.HTTP_STATUS, (), 200),
             (metrics.HTTP_RESPONSE_BYTES, (), 3), (metrics.HTTP_VERSION, (), 1.1),
             *TCP_INFO),
    "udp": ((metrics.DNS_LOOKUP, (), 1.1e-05), (metrics.UDP_RESPONSE, (), 0.00009),
            (metrics.UDP_RESPONSE_BYTES, (), 4)),
    # path over loopback: the destination at hop 1.
    "path": ((metrics.DNS_LOOKUP, (), 1.1e-05), (metrics.PATH_HOPS, (), 1),
             (metrics.PATH_REACHED, (), 1), (metrics.PATH_HOP_RTT, ("1",), 3e-06),
             (metrics.PATH_HOP_LOSS, ("1",), 0)),
    # ping over loopback: 3 echoes, all answered.
    "ping": ((metrics.DNS_LOOKUP, (), 1.1e-05), (metrics.PING_LOSS, (), 0.0),
             (metrics.PING_RTT_MIN, (), 3.8e-05), (metrics.PING_RTT_MEAN, (), 4.1e-05),
             (metrics.PING_RTT_MAX, (), 4.6e-05), (metrics.PING_RTT_STDDEV, (), 3.4e-06),
             (metrics.PING_REPLY_TTL, (), 64)),
    # grpc in the clear: the health service answers SERVING.
    "grpc": ((metrics.DNS_LOOKUP, (), 1.1e-05), (metrics.TCP_CONNECT, (), 0.00021), *TCP_INFO,
             *((metrics.GRPC_HEALTH_STATUS, (status,), float(status == "SERVING"))
               for status in ("SERVING", "NOT_SERVING", "UNKNOWN", "SERVICE_UNKNOWN")),
             (metrics.GRPC_STATUS_CODE, (), 0)),
    # websocket in the clear: 101, one message echoed.
    "websocket": ((metrics.DNS_LOOKUP, (), 1.1e-05), (metrics.TCP_CONNECT, (), 0.00021),
                  *TCP_INFO, (metrics.HTTP_STATUS, (), 101),
                  (metrics.WEBSOCKET_HANDSHAKE, (), 0.0004)),
}
COUNTED: dict[str, tuple[Any, ...]] = {
    "dns": ((metrics.DNS_RESPONSES, ("NOERROR",), 1), (metrics.DNS_ANSWER_CHANGES, (), 0)),
    "path": ((metrics.PATH_CHANGES, (), 0),),
    "ping": ((metrics.PING_SENT, (), 3), (metrics.PING_RECEIVED, (), 3)),
}
SAMPLED: dict[str, tuple[Any, ...]] = {  # histograms
    "ping": ((metrics.PING_RTT, (), 3.8e-05), (metrics.PING_RTT, (), 4.1e-05),
             (metrics.PING_RTT, (), 4.6e-05)),
}
TABLES = {
    "tcp": lambda i: f'target = "127.0.0.2:{40000 + i % 16}"\n',
    "dns": lambda i: 'target = "host.test"\nserver = "127.0.0.1:5353"\n',
    "http": lambda i: f'target = "http://127.0.0.2:{40000 + i % 16}/"\n',
    "udp": lambda i: f'target = "127.0.0.2:{40000 + i % 16}"\nsend = "ping"\n',
    "path": lambda i: 'target = "127.0.0.2"\nmax_hops = 4\n',
    "ping": lambda i: 'target = "127.0.0.2"\ncount = 3\n',
    "grpc": lambda i: f'target = "127.0.0.2:{40000 + i % 16}"\n',
    "websocket": lambda i: f'target = "ws://127.0.0.2:{40000 + i % 16}/"\nsend = "ping"\n',
}


def store_of(n: int, kinds: tuple[str, ...] = ("tcp",)) -> Store:
    text = "".join(f'[[checks]]\nname = "{kinds[i % len(kinds)]}-{i:05d}"\n'
                   f'kind = "{kinds[i % len(kinds)]}"\n' + TABLES[kinds[i % len(kinds)]](i)
                   for i in range(n))
    store = Store()
    store.load(load_text(text, "bench").checks)
    for name, state in list(store.states.items()):
        kind = state.check.kind
        for _ in range(3):
            series, values = split(OBSERVED[kind])  # new tuples each run, as the runner's
            observed, samples = split(SAMPLED.get(kind, ()))
            store.record(name, state.check,
                         Result(True, None, "", 0.0004, time.time(), series, values,
                                *split(COUNTED.get(kind, ())), observed=observed,
                                samples=samples))
    return store


class GenericCollector:
    """The same per-check families through prometheus_client's collector API."""

    def __init__(self, states: tuple[CheckState, ...]) -> None:
        self.states = states

    def collect(self) -> Iterator[Metric]:
        labels = ["check", "kind"]
        success = GaugeMetricFamily(metrics.CHECK_SUCCESS.name, metrics.CHECK_SUCCESS.help,
                                    labels=labels)
        duration = HistogramMetricFamily(metrics.CHECK_DURATION.name, metrics.CHECK_DURATION.help,
                                         labels=labels)
        runs = CounterMetricFamily(metrics.CHECK_RUNS.name, metrics.CHECK_RUNS.help,
                                   labels=labels)
        failures = CounterMetricFamily(metrics.CHECK_FAILURES.name, metrics.CHECK_FAILURES.help,
                                       labels=[*labels, "reason"])
        simple = {spec.name: GaugeMetricFamily(spec.name, spec.help, labels=labels)
                  for spec in (metrics.CHECK_LAST_RUN, metrics.CHECK_LAST_SUCCESS,
                               metrics.CHECK_INTERVAL)}
        kinds: dict[str, Metric] = {}  # the kinds' families, as the checks recorded them
        info = GaugeMetricFamily(metrics.CHECK_INFO.name, metrics.CHECK_INFO.help,
                                 labels=[*labels, "target"])
        missed = CounterMetricFamily(metrics.SCHEDULER_MISSED.name, metrics.SCHEDULER_MISSED.help,
                                     labels=labels)
        skipped = CounterMetricFamily(metrics.SCHEDULER_SKIPPED.name,
                                      metrics.SCHEDULER_SKIPPED.help, labels=labels)
        for s in self.states:
            values = [s.check.name, s.check.kind]
            assert s.last is not None
            success.add_metric(values, int(s.last.success))
            bounds = [*map(str, metrics.DURATION_BUCKETS), "+Inf"]
            duration.add_metric(values, list(zip(bounds, s.buckets, strict=True)),
                                s.duration_sum)
            runs.add_metric(values, s.runs)
            for reason, count in zip(s.reasons, s.failures, strict=True):
                failures.add_metric([*values, reason.value], count)
            simple[metrics.CHECK_LAST_RUN.name].add_metric(values, s.last.finished)
            simple[metrics.CHECK_LAST_SUCCESS.name].add_metric(values, s.last_success or 0)
            simple[metrics.CHECK_INTERVAL.name].add_metric(values, s.check.interval)
            counters = [(spec, extra, value) for (spec, extra), value
                        in zip(s.counter_series, s.counter_values, strict=True)]
            for spec, extra, value in (*s.last.observations, *counters):
                family = kinds.get(spec.name)
                if family is None:
                    make = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
                    family = kinds[spec.name] = make(spec.name, spec.help,
                                                     labels=[*labels, *spec.labels])
                family.add_metric([*values, *extra], value)
            info.add_metric([*values, s.check.target], 1)
            missed.add_metric(values, 0)
            skipped.add_metric(values, 0)
        yield from (success, duration, runs, failures, *simple.values(), info, missed, skipped,
                    *kinds.values())


def timed(func: object, repeat: int) -> tuple[float, int]:
    times = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = len(func())  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times), size


def snapshot_of(n: int, kinds: tuple[str, ...]) -> tuple[tuple[CheckState, ...], AgentSnapshot]:
    states = store_of(n, kinds).snapshot()
    configured = {kind: sum(s.check.kind == kind for s in states) for kind in kinds}
    agent = AgentSnapshot("bench", sys.version.split()[0], "bench", True, None, 0,
                          configured, (0,) * (len(metrics.LAG_BUCKETS) + 1), 0.0, 0)
    return states, agent


def time_render(states: tuple[CheckState, ...], agent: AgentSnapshot,
                repeat: int, form: str = "text") -> tuple[float, int, int]:
    """Median seconds to render and encode `states` in `form`; the series and the bytes."""
    texts = Texts()  # kept between scrapes, as the agent's routes keep it
    protos = protobuf.Protos()
    if form == "protobuf":
        seconds, size = timed(lambda: b"".join(protobuf.render_slices(states, agent, protos)),
                              repeat)
    elif form == "openmetrics":
        seconds, size = timed(lambda: (render(states, agent, texts, openmetrics=True)
                                       + OPENMETRICS_END).encode(), repeat)
    else:
        seconds, size = timed(lambda: render(states, agent, texts).encode(), repeat)
    text = render(states, agent, texts)
    return seconds, text.count("\n") - 2 * text.count("# TYPE"), size


def protobuf_package(states: tuple[CheckState, ...]) -> bytes:
    """The per-check families as the `protobuf` package's messages (metrics.proto's, built by
    tests/support/metrics_proto.py), serialised and delimited: what the hand-written encoder
    is measured against."""
    from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]

    from tests.support.metrics_proto import CLASSES
    family_class = CLASSES["MetricFamily"]
    out = []

    def family(spec: Any, kind: int) -> Any:
        made = family_class(name=spec.name, help=spec.help, type=kind)
        return made

    success, duration = family(metrics.CHECK_SUCCESS, 1), family(metrics.CHECK_DURATION, 4)
    runs, failures = family(metrics.CHECK_RUNS, 0), family(metrics.CHECK_FAILURES, 0)
    gauges = {spec.name: family(spec, 1) for spec in (
        metrics.CHECK_LAST_RUN, metrics.CHECK_LAST_SUCCESS, metrics.CHECK_INTERVAL,
        metrics.CHECK_INFO)}
    kinds: dict[str, Any] = {}
    for s in states:
        assert s.last is not None
        labels = [("check", s.check.name), ("kind", s.check.kind)]

        def metric(into: Any, extra: tuple[tuple[str, str], ...] = (),
                   labels: list[tuple[str, str]] = labels) -> Any:
            made = into.metric.add()
            for name, value in (*labels, *extra):
                made.label.add(name=name, value=value)
            return made

        metric(success).gauge.value = float(s.last.success)
        h = metric(duration).histogram
        h.sample_count, h.sample_sum = s.buckets[-1], s.duration_sum
        for upper, count in zip(metrics.DURATION_BUCKETS, s.buckets, strict=False):
            h.bucket.add(upper_bound=upper, cumulative_count=count)
        spans, deltas = s.native.spans()
        h.schema, h.zero_threshold, h.zero_count = s.native.schema, 2.0 ** -128, s.native.zero
        for offset, length in spans:
            h.positive_span.add(offset=offset, length=length)
        h.positive_delta.extend(deltas)
        h.created_timestamp.seconds = int(s.created)
        c = metric(runs).counter
        c.value = s.runs
        c.created_timestamp.seconds = int(s.created)
        for reason, n in zip(s.reasons, s.failures, strict=True):
            c = metric(failures, (("reason", reason.value),)).counter
            c.value = n
            c.created_timestamp.seconds = int(s.created)
        metric(gauges[metrics.CHECK_LAST_RUN.name]).gauge.value = s.last.finished
        metric(gauges[metrics.CHECK_LAST_SUCCESS.name]).gauge.value = s.last_success or 0
        metric(gauges[metrics.CHECK_INTERVAL.name]).gauge.value = s.check.interval
        metric(gauges[metrics.CHECK_INFO.name], (("target", s.check.target),)).gauge.value = 1
        for (spec, extra), value in zip(s.last.series, s.last.values, strict=True):
            into = kinds.get(spec.name) or kinds.setdefault(spec.name, family(spec, 1))
            metric(into, tuple(zip(spec.labels, extra, strict=True))).gauge.value = value
    for made in (success, duration, runs, failures, *gauges.values(), *kinds.values()):
        data = made.SerializeToString()
        out += [_VarintBytes(len(data)), data]
    return b"".join(out)


def render_seconds(n: int, kinds: tuple[str, ...], repeat: int = 5) -> tuple[float, int]:
    """Median seconds to render and encode n checks of `kinds` that have run; the series."""
    seconds, series, _ = time_render(*snapshot_of(n, kinds), repeat)
    return seconds, series


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--mixed", action="store_true",
                        help="each kind in turn, as bench/reliability.py loads them (default: "
                             "tcp only)")
    parser.add_argument("--formats", default="text,openmetrics,protobuf",
                        help="of text, openmetrics, protobuf (default: all three)")
    args = parser.parse_args()
    kinds = tuple(OBSERVED) if args.mixed else ("tcp",)
    states, agent = snapshot_of(args.checks, kinds)
    registry = CollectorRegistry()
    registry.register(GenericCollector(states))  # type: ignore[arg-type]
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om
    generic, generic_size = timed(lambda: generate_latest(registry), args.repeat)
    generic_om, _ = timed(lambda: generate_om(registry), args.repeat)
    table = Table(["format", "median ms", "MiB", "bytes/check", "us/series",
                   "ratio to prometheus_client text", "ratio to its OpenMetrics"])
    series = 0
    for form in args.formats.split(","):
        ours, series, size = time_render(states, agent, args.repeat, form)
        table.add(form, f"{ours * 1000:.1f}", f"{size / 2**20:.1f}",
                  f"{size / args.checks:.0f}", f"{ours / series * 1e6:.3f}",
                  f"{ours / generic:.3f}", f"{ours / generic_om:.3f}" if form != "protobuf"
                  else "")
    table.add("prometheus_client text", f"{generic * 1000:.1f}", f"{generic_size / 2**20:.1f}",
              f"{generic_size / args.checks:.0f}", f"{generic / series * 1e6:.3f}", "1", "")
    table.add("prometheus_client OpenMetrics", f"{generic_om * 1000:.1f}", "", "",
              f"{generic_om / series * 1e6:.3f}", f"{generic_om / generic:.3f}", "1")
    if "protobuf" in args.formats:
        package, package_size = timed(lambda: protobuf_package(states), args.repeat)
        table.add("protobuf package (check families only)", f"{package * 1000:.1f}",
                  f"{package_size / 2**20:.1f}", f"{package_size / args.checks:.0f}",
                  f"{package / series * 1e6:.3f}", f"{package / generic:.3f}", "")
    print(f"checks {args.checks} ({', '.join(kinds)}), series {series} (text), "
          f"python {sys.version.split()[0]}, median of {args.repeat}")
    print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
