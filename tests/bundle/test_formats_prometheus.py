"""The exposition formats against Debian's Prometheus (2.42): with native histograms enabled it
negotiates protobuf and stores each histogram as one native series; without, it negotiates
OpenMetrics and stores the classic buckets; both get the same series otherwise. And a scrape
with a hostile Accept header is answered in text 0.0.4."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.prometheus import Prometheus
from tests.support.servers import AcceptServer

pytestmark = pytest.mark.timeout(120)

CONFIG = """
[defaults]
interval = "1s"
timeout = "500ms"

[[checks]]
name = "web"
kind = "tcp"
target = "{target}"

[[checks]]
name = "fleet"
kind = "tcp"
targets = ["{target}", "127.0.0.1:1"]
"""


def scrape_config(agent: Agent) -> dict[str, object]:
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "netsentry", "scrape_timeout": "1s",
                                "static_configs": [{"targets": [f"127.0.0.1:{agent.port}"]}]}]}


@dataclass
class Pair:
    agent: Agent
    native: Prometheus  # --enable-feature=native-histograms: protobuf
    classic: Prometheus  # without: OpenMetrics


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("formats")
    with ExitStack() as stack:
        server = stack.enter_context(AcceptServer())
        path = tmp / "netsentry.toml"
        path.write_text(CONFIG.format(target=server.target))
        agent = stack.enter_context(Agent(path))
        native = stack.enter_context(Prometheus(scrape_config(agent), tmp / "native",
                                                flags=("--enable-feature=native-histograms",)))
        classic = stack.enter_context(Prometheus(scrape_config(agent), tmp / "classic"))
        for prometheus in (native, classic):
            prometheus.wait_for(lambda p=prometheus: p.query(  # type: ignore[misc]
                "count(rate(netsentry_check_runs_total[5s]) > 0) >= 3"),
                "three checks' runs in Prometheus", timeout=60)
        yield Pair(agent, native, classic)


def labelsets(prometheus: Prometheus, expr: str) -> set[frozenset[tuple[str, str]]]:
    return {frozenset(s["metric"].items()) for s in prometheus.query(expr)}


def test_native_histograms_over_protobuf(pair: Pair) -> None:
    native = pair.native
    native.wait_for(lambda: native.query(
        'histogram_count(rate(netsentry_check_duration_seconds{check="web"}[5s])) > 0'),
        "the duration histogram to be native")
    # One native series per histogram, and no classic buckets beside it.
    assert not native.query("netsentry_check_duration_seconds_bucket")
    assert native.query("histogram_count(netsentry_scheduler_lag_seconds)")
    [web] = native.query('histogram_quantile(0.5, rate(netsentry_check_duration_seconds'
                         '{check="web"}[5s]))')
    assert 0 < float(web["value"][1]) < 0.5  # a loopback connect, under the timeout


def test_classic_histograms_over_openmetrics(pair: Pair) -> None:
    classic = pair.classic
    assert classic.query('netsentry_check_duration_seconds_bucket{check="web", le="+Inf"}')
    assert not classic.query("histogram_count(netsentry_check_duration_seconds)")


def test_both_have_the_same_series_but_the_histograms(pair: Pair) -> None:
    def series(prometheus: Prometheus) -> set[frozenset[tuple[str, str]]]:
        return labelsets(prometheus, '{__name__=~"netsentry_.+", '
                                     '__name__!~".+_(bucket|count|sum|created)"}')

    native = {s for s in series(pair.native)
              if ("__name__", "netsentry_check_duration_seconds") not in s
              and ("__name__", "netsentry_scheduler_lag_seconds") not in s}
    assert native == series(pair.classic)
    assert any(("target", "127.0.0.1:1") in s for s in native)


def test_a_hostile_accept_header_gets_text(pair: Pair) -> None:
    for accept in ("a" * 65536, "application/openmetrics-text;version=7", ";;;,,=q"):
        status, headers, body = pair.agent.fetch("GET", "/metrics", headers={"Accept": accept})
        assert status == 200
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert b"netsentry_check_runs_total" in body


def test_the_agent_answers_each_format_with_its_type(pair: Pair) -> None:
    for accept, kind in (
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
             "encoding=delimited", "application/vnd.google.protobuf"),
            ("application/openmetrics-text;version=1.0.0", "application/openmetrics-text"),
            ("text/plain;version=1.0.0", "text/plain; version=1.0.0")):
        for gzip in (False, True):
            headers = {"Accept": accept, **({"Accept-Encoding": "gzip"} if gzip else {})}
            status, got, _ = pair.agent.fetch("GET", "/metrics", headers=headers)
            assert status == 200 and got["Content-Type"].startswith(kind)
            assert got.get("Content-Encoding") == ("gzip" if gzip else None)
            assert got["Vary"] == "Accept"


def test_the_probe_endpoint_negotiates_too(pair: Pair, tmp_path: Path) -> None:
    status, got, body = pair.agent.fetch(
        "GET", "/probe?check=web", headers={"Accept": "application/openmetrics-text"})
    assert status == 200 and got["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
