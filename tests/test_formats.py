"""The exposition formats: what an Accept header chooses, and the same samples in text 0.0.4,
OpenMetrics (prometheus_client's parser) and protobuf (the `protobuf` package's parser of
metrics.proto), with created timestamps and native histograms."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics
from exporter.config.load import load_text
from exporter.errors import Reason
from exporter.exposition import formats, protobuf, render, render_probe
from exporter.native_histograms import Native, bucket_index
from exporter.store import Result, Store
from tests.support.checks import make_check, run_check
from tests.support.metrics_proto import decode, type_name
from tests.support.servers import AcceptServer
from tests.test_exposition import agent

PROMETHEUS_2 = ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                "encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
PROMETHEUS_2_NO_NATIVE = ("application/openmetrics-text;version=1.0.0,application/openmetrics-"
                          "text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
PROMETHEUS_3 = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
                "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


@pytest.mark.parametrize(("accept", "name", "content_type"), [
    (PROMETHEUS_2, "protobuf", formats.PROTOBUF.content_type),
    (PROMETHEUS_2_NO_NATIVE, "openmetrics", formats.OPENMETRICS.content_type),
    (PROMETHEUS_3, "openmetrics", "application/openmetrics-text; version=1.0.0; "
                                  "charset=utf-8; escaping=allow-utf-8"),
    ("text/plain;version=1.0.0;escaping=underscores",
     "text", "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("application/openmetrics-text;version=0.0.1", "openmetrics",
     "application/openmetrics-text; version=0.0.1; charset=utf-8"),
    # Equal q: the earlier wins; q=0 is a refusal.
    ("text/plain;version=0.0.4,application/openmetrics-text", "text", formats.TEXT.content_type),
    ("application/openmetrics-text;q=0,text/plain", "text", formats.TEXT.content_type),
    # What cannot be served or parsed: text 0.0.4, never an error.
    ("", "text", formats.TEXT.content_type),
    ("application/json", "text", formats.TEXT.content_type),
    ("application/vnd.google.protobuf;proto=other;encoding=delimited", "text",
     formats.TEXT.content_type),
    ("application/openmetrics-text;version=9.9", "text", formats.TEXT.content_type),
    ("text/plain;q=abc;;;,,,=;", "text", formats.TEXT.content_type),
    ("a" * 65536, "text", formats.TEXT.content_type),
    ("text/plain;q=0.1," * 4000 + PROMETHEUS_2, "text", formats.TEXT.content_type),
])
def test_negotiation(accept: str, name: str, content_type: str) -> None:
    chosen = formats.negotiate(accept)
    assert (chosen.name, chosen.content_type) == (name, content_type)


TEXT = """
[[checks]]
name = "web"
kind = "tcp"
target = "127.0.0.1:80"
labels = { team = "edge" }

[[checks]]
name = "fleet"
kind = "tcp"
targets = ["127.0.0.1:81", "127.0.0.1:82"]

[[checks]]
name = "pinger"
kind = "ping"
target = "127.0.0.1"
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def store() -> Store:
    loaded = Store()
    loaded.load(load_text(TEXT, "t.toml").checks)
    states = loaded.states
    web = states["web"].check
    for duration in (0.0004, 0.003, 0.0031, 0.2, 7.0):
        loaded.record("web", web, Result(True, None, "", duration, 1.7e9, (
            (metrics.TCP_CONNECT, ()),), (duration / 2,)))
    fleet = states["fleet\t127.0.0.1:81"].check
    loaded.record(fleet.key, fleet, Result(False, Reason.REFUSED, "refused", 0.001, 1.7e9))
    pinger = states["pinger"].check
    loaded.record("pinger", pinger, Result(
        True, None, "", 0.01, 1.7e9, counted=((metrics.PING_SENT, ()),
                                              (metrics.PING_RECEIVED, ())),
        increments=(3, 2), observed=((metrics.PING_RTT, ()),) * 2, samples=(0.0002, 0.0009)))
    return loaded


def text_samples(text: str, parser: Any = text_string_to_metric_families) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parser(text) for s in family.samples}


def proto_samples(families: list[Any]) -> tuple[Samples, Samples]:
    """The samples the text format would have, and the created timestamps, by series."""
    found: Samples = {}
    created: Samples = {}
    for family in families:
        for metric in family.metric:
            labels = frozenset((p.name, p.value) for p in metric.label)
            kind = type_name(family)
            if kind == "GAUGE":
                found[(family.name, labels)] = metric.gauge.value
            elif kind == "UNTYPED":
                found[(family.name, labels)] = metric.untyped.value
            elif kind == "COUNTER":
                found[(family.name, labels)] = metric.counter.value
                if metric.counter.HasField("created_timestamp"):
                    stamp = metric.counter.created_timestamp
                    created[(family.name, labels)] = stamp.seconds + stamp.nanos / 1e9
            else:
                h = metric.histogram
                for bucket in h.bucket:
                    le = frozenset({("le", _le(bucket.upper_bound))})
                    found[(family.name + "_bucket", labels | le)] = bucket.cumulative_count
                if h.bucket:
                    found[(family.name + "_bucket", labels | {("le", "+Inf")})] = h.sample_count
                found[(family.name + "_count", labels)] = h.sample_count
                found[(family.name + "_sum", labels)] = h.sample_sum
                stamp = h.created_timestamp
                created[(family.name, labels)] = stamp.seconds + stamp.nanos / 1e9
    return found, created


def _le(bound: float) -> str:
    return repr(float(bound))


def normalised(samples: Samples) -> Samples:
    """`le` as a float's repr, whatever the format wrote (0.001, 1.0 or 1)."""
    out = {}
    for (name, labels), value in samples.items():
        labels = frozenset((k, _le(float(v)) if k == "le" and v != "+Inf" else v)
                           for k, v in labels)
        out[(name, labels)] = value
    return out


def test_protobuf_carries_the_text_formats_samples_field_by_field() -> None:
    loaded = store()
    text = render(loaded.snapshot(), agent())
    families = decode(b"".join(protobuf.render_slices(loaded.snapshot(), agent())))
    found, created = proto_samples(families)
    assert normalised(found) == normalised(text_samples(text))
    # Every counter and histogram carries the time its check was loaded.
    web = loaded.states["web"]
    web_labels = frozenset({("check", "web"), ("kind", "tcp"), ("team", "edge")})
    assert created[("netsentry_check_runs_total", web_labels)] == pytest.approx(web.created)
    assert created[("netsentry_check_duration_seconds", web_labels)] == pytest.approx(
        web.created)
    assert {name for name, _ in created} >= {
        "netsentry_check_failures_total", "netsentry_scheduler_missed_runs_total",
        "netsentry_ping_packets_sent_total", "netsentry_ping_rtt_seconds",
        "netsentry_scheduler_lag_seconds", "netsentry_clock_steps_total"}
    assert [f.name for f in families] == list(dict.fromkeys(
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        if family.type == "histogram" else name
        for family in text_string_to_metric_families(text) for name in [
            family.name + ("_total" if family.type == "counter" else "")]))


def native_of(families: list[Any], name: str, **labels: str) -> Any:
    for family in families:
        if family.name == name:
            for metric in family.metric:
                if {p.name: p.value for p in metric.label} == labels:
                    return metric.histogram
    raise KeyError(name)


def expand(histogram: Any) -> dict[int, int]:
    """A native histogram's buckets by index, from its spans and deltas."""
    counts, index, count, position = {}, 0, 0, 0
    for n, span in enumerate(histogram.positive_span):
        index = span.offset if n == 0 else index + 1 + span.offset
        for i in range(span.length):
            count += histogram.positive_delta[position]
            position += 1
            counts[index + i] = count
        index += span.length - 1
    return counts


def test_native_buckets_hold_every_sample_where_it_belongs() -> None:
    loaded = store()
    families = decode(b"".join(protobuf.render_slices(loaded.snapshot(), agent())))
    web = native_of(families, "netsentry_check_duration_seconds", check="web", kind="tcp",
                    team="edge")
    assert web.schema == 3 and web.zero_count == 0
    durations = (0.0004, 0.003, 0.0031, 0.2, 7.0)
    expected: dict[int, int] = {}
    for d in durations:
        expected[bucket_index(d, 3)] = expected.get(bucket_index(d, 3), 0) + 1
    assert expand(web) == expected
    assert sum(expand(web).values()) == web.sample_count == len(durations)
    rtt = native_of(families, "netsentry_ping_rtt_seconds", check="pinger", kind="ping")
    assert expand(rtt) == {bucket_index(0.0002, 3): 1, bucket_index(0.0009, 3): 1}
    # A check that never ran is still a native histogram: the no-op span marks it.
    fresh = native_of(families, "netsentry_check_duration_seconds", check="fleet", kind="tcp",
                      target="127.0.0.1:82")
    assert fresh.sample_count == 0 and len(fresh.positive_span) == 1
    assert (fresh.positive_span[0].offset, fresh.positive_span[0].length) == (0, 0)


def test_without_classic_buckets_a_tcp_check_is_24_series() -> None:
    """What a Prometheus storing native histograms keeps of one real tcp check's run: one
    series per gauge and counter, one per native histogram, instead of the classic buckets'
    twelve (35 series with them, as in the text format)."""
    with AcceptServer() as server:
        check = make_check("tcp", target=server.target)
        result = run_check(check)
    assert result.success
    loaded = Store()
    loaded.load((check,))
    loaded.record(check.key, check, result)
    text = text_samples(render(loaded.snapshot(), agent()))
    in_text = sum(1 for _, labels in text if ("check", "tcp") in labels)
    counted = {}
    for classic in (True, False):
        families = decode(b"".join(protobuf.render_slices(loaded.snapshot(), agent(),
                                                          classic=classic)))
        series = 0
        for family in families:
            for metric in family.metric:
                if {p.name: p.value for p in metric.label}.get("check") != "tcp":
                    continue
                h = metric.histogram if type_name(family) == "HISTOGRAM" else None
                # A native histogram is one series; classic buckets are one each, with +Inf,
                # _sum and _count.
                series += 1 if h is None or not h.bucket else len(h.bucket) + 3
        counted[classic] = series
    assert counted[True] == in_text == 35
    assert counted[False] == 24


def test_openmetrics_has_the_same_samples_created_timestamps_and_eof() -> None:
    loaded = store()
    text = render(loaded.snapshot(), agent())
    om = render(loaded.snapshot(), agent(), openmetrics=True)
    assert om.endswith("# EOF\n")
    samples = text_samples(om, openmetrics_families)
    plain = {key: value for key, value in samples.items() if not key[0].endswith("_created")}
    assert normalised(plain) == normalised(text_samples(text))
    families = {f.name: f for f in openmetrics_families(om)}
    assert families["netsentry_check_runs"].type == "counter"
    web = frozenset({("check", "web"), ("kind", "tcp"), ("team", "edge")})
    assert samples[("netsentry_check_runs_created", web)] == loaded.states["web"].created
    assert samples[("netsentry_check_duration_seconds_created", web)] == (
        loaded.states["web"].created)
    created = {name for name, _ in samples if name.endswith("_created")}
    assert created >= {"netsentry_check_failures_created", "netsentry_ping_rtt_seconds_created",
                       "netsentry_ping_packets_sent_created", "netsentry_clock_steps_created",
                       "netsentry_scheduler_lag_seconds_created"}


def test_a_probe_in_each_format() -> None:
    result = Result(False, Reason.TIMEOUT, "slow", 0.25, 1.7e9, ((metrics.TCP_CONNECT, ()),),
                    (0.1,), counted=((metrics.PING_SENT, ()),), increments=(2,),
                    observed=((metrics.PING_RTT, ()),), samples=(0.001,))
    reasons = (Reason.TIMEOUT, Reason.REFUSED)
    text = text_samples(render_probe(result, reasons))
    om = render_probe(result, reasons, openmetrics=True) + "# EOF\n"
    assert normalised(text_samples(om, openmetrics_families)) == normalised(text)
    found, _ = proto_samples(decode(protobuf.render_probe(result, reasons)))
    assert normalised(found) == normalised(text)
    assert text[("netsentry_probe_failure_reason", frozenset({("reason", "timeout")}))] == 1


def test_bucket_index_matches_the_bounds_at_every_schema() -> None:
    values = [2.0 ** -20, 1e-6, 0.001, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 1024.0, 7.3, 1e6]
    for schema in range(-4, 9):
        for value in values:
            index = bucket_index(value, schema)
            low, high = 2 ** ((index - 1) * 2.0 ** -schema), 2 ** (index * 2.0 ** -schema)
            assert low < value <= high * (1 + 1e-12), (schema, value, index)
    native = Native(3)
    for value in (0.0, 1.0, 1.0, 2.0):
        native = native.add(value)
    assert native.zero == 1 and native.buckets == ((0, 2), (8, 1))
    assert native.spans() == ([(0, 1), (7, 1)], [2, -1])
    assert math.isclose(2 ** (2 ** -3), 1.0905077326652577)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=5),
       st.floats(allow_nan=False), st.integers(0, 2**63), st.floats(0, 4e9),
       st.lists(st.integers(-10**6, 10**6), max_size=8))
def test_what_the_encoder_writes_protobufs_parser_reads(
        labels: list[tuple[str, str]], value: float, count: int, created: float,
        deltas: list[int]) -> None:
    from exporter.codecs import metrics_proto as proto
    pairs = proto.label_pairs(labels)
    spans = [(d, 1) for d in deltas]
    data = proto.family(proto.family_head("x", "h\n\"", proto.HISTOGRAM), [
        proto.gauge(pairs, value), proto.counter(pairs, value, proto.created(created)),
        proto.histogram(pairs, count, value,
                        proto.classic_buckets(proto.bucket_bounds([1.5, 2.5]), [count, count]),
                        proto.histogram_created(created), (-2, 0.5, count, spans, deltas))])
    [family] = decode(data)
    assert (family.name, family.help, len(family.metric)) == ("x", "h\n\"", 3)
    gauge, counter, histogram = family.metric
    assert [(p.name, p.value) for p in gauge.label] == labels
    assert gauge.gauge.value == value and counter.counter.value == value
    stamp = counter.counter.created_timestamp
    assert abs(stamp.seconds + stamp.nanos / 1e9 - created) < 1e-6
    h = histogram.histogram
    assert (h.sample_count, h.schema, h.zero_count, list(h.positive_delta)) == (
        count, -2, count, deltas)
    assert [(b.upper_bound, b.cumulative_count) for b in h.bucket] == [(1.5, count),
                                                                        (2.5, count)]
    assert [(s.offset, s.length) for s in h.positive_span] == (spans or [(0, 0)])
