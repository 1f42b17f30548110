"""The fast renderer against prometheus_client's own parser: same families, same values."""

from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics
from exporter.checks import KINDS
from exporter.config.load import load_text
from exporter.errors import Reason
from exporter.exposition import AgentSnapshot, Texts, render
from exporter.store import Result, Store, split

TEXT = """
[[checks]]
name = "web"
kind = "tcp"
target = "127.0.0.1:80"

[[checks]]
name = 'we"ird\\\\ <name> 100%d'
kind = "tcp"
target = "127.0.0.1:81"
"""


def agent(**changes: object) -> AgentSnapshot:
    values: dict[str, object] = dict(
        version="1.2.3", python_version="3.11.7", hostname="host-1", reload_ok=True,
        reload_time=1700000000.5, in_flight=3, configured={"tcp": 2},
        lag_buckets=(1,) + (0,) * len(metrics.LAG_BUCKETS), lag_sum=0.0001, clock_steps=0,
        missed={"web": 2}, skipped={},
    )
    values.update(changes)
    return AgentSnapshot(**values)  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def loaded_store() -> Store:
    store = Store()
    store.load(load_text(TEXT, "t.toml").checks)
    return store


def test_render_parses_and_carries_values() -> None:
    store = loaded_store()
    web = store.states["web"].check
    store.record("web", web, Result(True, None, "", 0.003, 1700000001.0,
                                    *split(((metrics.TCP_CONNECT, (), 0.002),))))
    store.record("web", web, Result(False, Reason.REFUSED, "connection refused", 0.0004,
                                    1700000002.0))
    got = samples(render(store.snapshot(), agent()))
    web_labels = frozenset({("check", "web"), ("kind", "tcp")})
    assert got[("netsentry_check_success", web_labels)] == 0
    assert got[("netsentry_check_runs_total", web_labels)] == 2
    assert got[("netsentry_check_failures_total", web_labels | {("reason", "refused")})] == 1
    assert got[("netsentry_check_failures_total", web_labels | {("reason", "timeout")})] == 0
    assert got[("netsentry_check_last_run_timestamp_seconds", web_labels)] == 1700000002.0
    assert got[("netsentry_check_last_success_timestamp_seconds", web_labels)] == 1700000001.0
    assert got[("netsentry_check_interval_seconds", web_labels)] == 30
    assert got[("netsentry_check_duration_seconds_count", web_labels)] == 2
    assert got[("netsentry_check_duration_seconds_bucket", web_labels | {("le", "0.001")})] == 1
    assert got[("netsentry_check_duration_seconds_bucket", web_labels | {("le", "+Inf")})] == 2
    assert abs(got[("netsentry_check_duration_seconds_sum", web_labels)] - 0.0034) < 1e-12
    # The failed run recorded no connect time: the gauge is absent, not stale.
    assert ("netsentry_tcp_connect_seconds", web_labels) not in got
    assert got[("netsentry_scheduler_missed_runs_total", web_labels)] == 2
    assert got[("netsentry_check_info", web_labels | {("target", "127.0.0.1:80")})] == 1
    assert got[("netsentry_build_info", frozenset({("version", "1.2.3"),
                                                   ("python_version", "3.11.7")}))] == 1
    assert got[("netsentry_checks_in_flight", frozenset())] == 3
    assert got[("netsentry_scheduler_lag_seconds_count", frozenset())] == 1


def test_every_reason_of_the_kind_starts_at_zero() -> None:
    got = samples(render(loaded_store().snapshot(), agent()))
    reasons = {dict(labels)["reason"] for (name, labels) in got
               if name == "netsentry_check_failures_total" and ("check", "web") in labels}
    assert reasons == {str(reason) for reason in KINDS["tcp"].reasons}
    assert {"timeout", "refused", "tls_error", "internal_error"} <= reasons


def test_label_values_are_escaped() -> None:
    got = samples(render(loaded_store().snapshot(), agent()))
    labels = frozenset({("check", 'we"ird\\\\ <name> 100%d'), ("kind", "tcp")})
    assert ("netsentry_check_runs_total", labels) in got
    # The histogram is rendered through a %-template: a % in a label stays a %.
    assert got[("netsentry_check_duration_seconds_bucket", labels | {("le", "+Inf")})] == 0


def test_unrun_check_has_no_success_sample() -> None:
    got = samples(render(loaded_store().snapshot(), agent()))
    assert not any(name == "netsentry_check_success" for name, _ in got)


def test_removed_check_leaves_no_series() -> None:
    store = loaded_store()
    only_web = TEXT[: TEXT.index("[[checks]]", 10)]
    store.load(load_text(only_web, "t.toml").checks)
    text = render(store.snapshot(), agent(missed={}))
    assert 'check="web"' in text
    assert "ird" not in text


def test_stale_result_of_a_changed_check_is_dropped() -> None:
    store = loaded_store()
    old = store.states["web"].check
    store.load(load_text(TEXT.replace("127.0.0.1:80", "127.0.0.1:8080"), "t").checks)
    assert store.record("web", old, Result(True, None, "", 0.001, 1.0)) is None
    assert store.states["web"].runs == 0


def test_unchanged_check_keeps_counters_across_load() -> None:
    store = loaded_store()
    web = store.states["web"].check
    store.record("web", web, Result(True, None, "", 0.001, 1.0))
    store.load(load_text(TEXT, "again.toml").checks)
    assert store.states["web"].runs == 1


def test_undeclared_reason_is_still_counted() -> None:
    store = loaded_store()
    web = store.states["web"].check
    store.record("web", web, Result(False, Reason.KISS_OF_DEATH, "odd", 0.001, 1.0))
    got = samples(render(store.snapshot(), agent()))
    key = frozenset({("check", "web"), ("kind", "tcp"), ("reason", "kiss_of_death")})
    assert got[("netsentry_check_failures_total", key)] == 1


def test_failure_counts_follow_every_run_between_scrapes() -> None:
    """The failure counters' lines are reused while a check's counts stay the same: a later
    failure, of the same or another reason, still shows in the next scrape."""
    store = loaded_store()
    web = store.states["web"].check
    labels = frozenset({("check", "web"), ("kind", "tcp")})

    def failures(reason: Reason) -> float:
        got = samples(render(store.snapshot(), agent()))
        return got[("netsentry_check_failures_total", labels | {("reason", reason.value)})]

    def run(reason: Reason | None) -> None:
        store.record("web", web, Result(reason is None, reason, "", 0.001, 1700000001.0))

    assert failures(Reason.REFUSED) == 0
    run(Reason.REFUSED)
    assert failures(Reason.REFUSED) == 1
    run(None)  # a success keeps the counts (and their rendered lines)
    assert failures(Reason.REFUSED) == 1
    run(Reason.REFUSED)
    run(Reason.TIMEOUT)
    assert (failures(Reason.REFUSED), failures(Reason.TIMEOUT)) == (2, 1)


def test_texts_are_kept_between_scrapes_and_dropped_with_their_check() -> None:
    store = loaded_store()
    texts = Texts()
    first = render(store.snapshot(), agent(), texts)
    pairs = texts.of(store.snapshot())
    assert render(store.snapshot(), agent(), texts) == first
    assert [t for _, t in texts.of(store.snapshot())] == [t for _, t in pairs]  # the same texts
    store.load(tuple(s.check for s in store.snapshot() if s.check.name == "web"))
    [(state, text)] = texts.of(store.snapshot())
    assert state.check.name == "web" and text is pairs[0][1]
    assert len(texts._texts) == 1  # the removed check's text went with it


def test_a_checks_own_labels_are_on_every_one_of_its_series() -> None:
    store = Store()
    text = TEXT.replace('target = "127.0.0.1:80"\n',
                        'target = "127.0.0.1:80"\nlabels = { team = "d\\"b", tier = "1" }\n')
    store.load(load_text(text, "t.toml").checks)
    web = store.states["web"].check
    store.record("web", web, Result(False, Reason.REFUSED, "refused", 0.003, 1700000001.0,
                                    *split(((metrics.TCP_CONNECT, (), 0.002),))))
    got = samples(render(store.snapshot(), agent()))
    own = {("team", 'd"b'), ("tier", "1")}
    web_series = [labels for _, labels in got if ("check", "web") in labels]
    assert len(web_series) > 15  # the check's histogram, counters, gauges and the kind's
    assert all(own <= labels for labels in web_series)
    assert got[("netsentry_tcp_connect_seconds",
                frozenset({("check", "web"), ("kind", "tcp"), *own}))] == 0.002
    # The other check has none of them.
    assert not any(("team", 'd"b') in labels for _, labels in got
                   if ("check", "web") not in labels)
