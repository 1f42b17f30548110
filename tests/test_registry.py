"""A kind is its module and one registry entry: nothing else in exporter/ lists the kinds.

A small kind of the test's own, with its settings, its check and its one metric spec, is
registered in `exporter.checks.KINDS` alone: `check-config` validates its keys with lines and
suggestions, the runner runs it, and `/metrics` renders its series, its failure reasons at 0.
A kind that records a metric it did not declare fails its run, naming the metric.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics
from exporter.checks import KINDS, kind_specs
from exporter.checks.base import Kind, Run, option
from exporter.cli.main import check_config
from exporter.config.load import load_text
from exporter.errors import CheckError, Reason
from exporter.exposition import AgentSnapshot, render, render_probe
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.store import Store

ECHOES = metrics.Spec("netsentry_echo_words", metrics.GAUGE, "Words the echo check repeated.")


def _times(value: int) -> str | None:
    return None if 1 <= value <= 5 else "must be from 1 to 5"


@dataclass(frozen=True, slots=True)
class EchoSettings:
    target: str = option()
    times: int = option(1, check=_times)


async def echo(settings: EchoSettings, run: Run) -> None:
    if settings.target == "silence":
        raise CheckError(Reason.UNEXPECTED_RESPONSE, "nothing came back")
    run.gauge(ECHOES, len(settings.target.split()) * settings.times)


ECHO = Kind("echo", EchoSettings, echo, (Reason.UNEXPECTED_RESPONSE, Reason.INTERNAL_ERROR),
            (ECHOES,))

CONFIG = """
[[checks]]
name = "loud"
kind = "echo"
target = "hello there"
times = 3

[[checks]]
name = "quiet"
kind = "echo"
target = "silence"
"""


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Kind[Any]:
    monkeypatch.setitem(KINDS, "echo", ECHO)
    return ECHO


def agent() -> AgentSnapshot:
    return AgentSnapshot(version="0", python_version="3", hostname="h", reload_ok=True,
                         reload_time=None, in_flight=0, configured={"echo": 2},
                         lag_buckets=(0,) * (len(metrics.LAG_BUCKETS) + 1), lag_sum=0.0,
                         clock_steps=0)


def run_all(store: Store, kinds: dict[str, Kind[Any]] = KINDS) -> None:
    async def go() -> None:
        pool = BlockingPool(1)
        try:
            runner = Runner(Resolver(pool), kinds)
            for name, state in list(store.states.items()):
                store.record(name, state.check, await runner.run(state.check))
        finally:
            pool.close()

    asyncio.run(go())


def test_a_registered_kind_is_validated_run_and_rendered(registered: Kind[Any]) -> None:
    store = Store()
    store.load(load_text(CONFIG, "echo.toml").checks)
    run_all(store)
    text = render(store.snapshot(), agent())
    assert ECHOES in kind_specs()
    assert ("# HELP netsentry_echo_words Words the echo check repeated.\n"
            "# TYPE netsentry_echo_words gauge\n"
            'netsentry_echo_words{check="loud",kind="echo"} 6\n') in text
    assert 'netsentry_echo_words{check="quiet"' not in text
    assert 'netsentry_check_success{check="quiet",kind="echo"} 0\n' in text
    assert ('netsentry_check_failures_total{check="quiet",kind="echo",'
            'reason="unexpected_response"} 1\n') in text
    assert ('netsentry_check_failures_total{check="loud",kind="echo",'
            'reason="internal_error"} 0\n') in text


def test_check_config_validates_a_registered_kinds_keys(
    registered: Kind[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "echo.toml"
    path.write_text(CONFIG.replace("times = 3", "times = 9\ntimse = 1"))
    assert check_config([str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f'{path}:7: checks[0] "loud".timse: unknown key (did you mean "times"?)',
        f'{path}:6: checks[0] "loud".times: must be from 1 to 5',
        "2 problem(s) found",
    ]


def test_unregistered_kinds_are_unknown_to_the_config(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "echo.toml"
    path.write_text(CONFIG)
    assert "echo" not in KINDS
    assert check_config([str(path)]) == 2
    assert f"{path}:4: checks[0] \"loud\".kind: unknown kind 'echo'" in capsys.readouterr().err
    assert ECHOES not in kind_specs()


async def undeclared(settings: EchoSettings, run: Run) -> None:
    run.gauge(ECHOES, 1.0)
    run.count(metrics.DNS_RESPONSES, "NOERROR")


def test_a_metric_the_kind_did_not_declare_fails_the_run_naming_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sloppy = Kind("echo", EchoSettings, undeclared, (Reason.INTERNAL_ERROR,), ())
    monkeypatch.setitem(KINDS, "echo", sloppy)
    store = Store()
    store.load(load_text(CONFIG, "echo.toml").checks[:1])
    run_all(store)
    last = store.states["loud"].last
    assert last is not None and last.reason is Reason.INTERNAL_ERROR
    assert last.message == ("the echo kind recorded netsentry_dns_responses_total, "
                            "netsentry_echo_words, which it does not declare in its specs")
    assert "which it does not declare" in caplog.text


LENGTHS = metrics.Spec("netsentry_echo_word_length", metrics.HISTOGRAM,
                       "Lengths of the words echoed.", ("case",), buckets=(1.0, 3.0, 10.0))


async def lengths(settings: EchoSettings, run: Run) -> None:
    for word in settings.target.split():
        run.observe(LENGTHS, float(len(word)), "upper" if word.isupper() else "lower")


def test_a_kinds_histogram_keeps_every_sample_across_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples go to their bucket, run after run; `/metrics` shows cumulative buckets, the sum
    and the count, and `/probe` the samples of its one run alone."""
    kind = Kind("echo", EchoSettings, lengths, (Reason.INTERNAL_ERROR,), (LENGTHS,))
    monkeypatch.setitem(KINDS, "echo", kind)
    store = Store()
    store.load(load_text('[[checks]]\nname = "words"\nkind = "echo"\n'
                         'target = "a bb ccc dddd ELEVENCHARS"\n', "echo.toml").checks)
    run_all(store)
    run_all(store)
    text = render(store.snapshot(), agent())
    base = 'check="words",kind="echo"'
    assert ("# TYPE netsentry_echo_word_length histogram\n"
            f'netsentry_echo_word_length_bucket{{{base},case="lower",le="1.0"}} 2\n'
            f'netsentry_echo_word_length_bucket{{{base},case="lower",le="3.0"}} 6\n'
            f'netsentry_echo_word_length_bucket{{{base},case="lower",le="10.0"}} 8\n'
            f'netsentry_echo_word_length_bucket{{{base},case="lower",le="+Inf"}} 8\n'
            f'netsentry_echo_word_length_sum{{{base},case="lower"}} 20.0\n'
            f'netsentry_echo_word_length_count{{{base},case="lower"}} 8\n'
            f'netsentry_echo_word_length_bucket{{{base},case="upper",le="1.0"}} 0\n'
            f'netsentry_echo_word_length_bucket{{{base},case="upper",le="3.0"}} 0\n'
            f'netsentry_echo_word_length_bucket{{{base},case="upper",le="10.0"}} 0\n'
            f'netsentry_echo_word_length_bucket{{{base},case="upper",le="+Inf"}} 2\n'
            f'netsentry_echo_word_length_sum{{{base},case="upper"}} 22.0\n'
            f'netsentry_echo_word_length_count{{{base},case="upper"}} 2\n') in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["netsentry_echo_word_length"].type == "histogram"
    last = store.states["words"].last
    assert last is not None
    probe = render_probe(last, kind.reasons)
    assert ('netsentry_echo_word_length_bucket{case="lower",le="3.0"} 3\n'
            'netsentry_echo_word_length_bucket{case="lower",le="10.0"} 4\n') in probe
    assert 'netsentry_echo_word_length_count{case="upper"} 1\n' in probe
    assert {f.name for f in text_string_to_metric_families(probe)} >= {
        "netsentry_echo_word_length"}
