"""The alert and recording rules: promtool approves them, its unit tests cover every alert
(firing, quiet, resolving), and they follow the mixin conventions the README promises."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from exporter.config.durations import parse_duration
from tests.bundle.promql import ROOT, RULES, rules
from tests.support.prometheus import promtool

RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
README = ROOT / "README.md"
SEVERITIES = ("critical", "warning", "info")


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(list(rules()))} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 5
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests compare labels and annotations exactly: a wrong expectation fails."""
    source = ROOT / "deploy" / "prometheus" / "tests" / "dns.test.yml"
    broken = tmp_path / "tests" / "dns.test.yml"
    broken.parent.mkdir()
    broken.write_text(source.read_text().replace("check: corp-resolver", "check: other", 1))
    shutil.copy(RULES, tmp_path / RULES.name)
    result = promtool("test", "rules", broken)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _cases() -> dict[str, list[tuple[int, float, bool]]]:
    """alert -> (test number, eval time, fires) for every alert_rule_test case."""
    cases: dict[str, list[tuple[int, float, bool]]] = {}
    number = 0
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            number += 1
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(
                    (number, parse_duration(case["eval_time"]), bool(case["exp_alerts"])))
    return cases


def test_unit_tests_cover_every_alert_firing_quiet_and_resolving() -> None:
    cases = _cases()
    names = {rule["alert"] for rule in alerts()}
    assert set(cases) <= names, "unit tests of alerts that do not exist"
    gaps = []
    for name in sorted(names):
        mine = cases.get(name, [])
        fires = [(n, t) for n, t, firing in mine if firing]
        quiet = [(n, t) for n, t, firing in mine if not firing]
        resolves = [(n, t) for n, t in quiet if any(n == fn and t > ft for fn, ft in fires)]
        for what, found in (("firing", fires), ("not firing", quiet), ("resolving", resolves)):
            if not found:
                gaps.append(f"{name}: no {what} case")
    assert not gaps, "\n".join(gaps)


def test_unit_tests_cover_the_absent_and_stale_cases() -> None:
    text = "\n".join(path.read_text() for path in RULE_TESTS)
    fired = {name for name, cases in _cases().items() if any(f for _, _, f in cases)}
    assert {"NetsentryAgentAbsent", "NetsentryCheckStale"} <= fired
    assert "stale'" in text  # series that end with a staleness marker


def test_unit_tests_cover_every_recording_rule() -> None:
    tested = " ".join(case["expr"] for path in RULE_TESTS
                      for test in yaml.safe_load(path.read_text())["tests"]
                      for case in test.get("promql_expr_test", []))
    for rule in rules():
        if "record" in rule:
            assert rule["record"] in tested, rule["record"]


def test_alerts_follow_the_mixin_conventions() -> None:
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"Netsentry(?:[A-Z][a-z0-9]+)+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"README.md#{name.lower()}"
        assert 'job=~"netsentry.*"' in rule["expr"], f"{name}: select the netsentry jobs"
        if rule["labels"]["severity"] != "info":
            assert parse_duration(rule["for"]) >= 60, f"{name}: pages need a `for`"


def test_recording_rules_are_named_level_metric_operations() -> None:
    for rule in rules():
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:netsentry_[a-z0-9_]+:[a-z0-9_]+", rule["record"])


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_every_alert_has_a_runbook_in_the_readme() -> None:
    match = re.search(r"^## Monitoring\n(.*?)(?=^## |\Z)", README.read_text(), re.M | re.S)
    assert match, "README: no ## Monitoring section"
    monitoring = match[1]
    anchors = _anchors(monitoring)
    for rule in alerts():
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert anchor in anchors, f"README: no '#### {rule['alert']}' under ## Monitoring"
        # The runbook says what to do, not only what the alert means.
        section = monitoring[monitoring.index(f"#### {rule['alert']}\n"):]
        section = section[:section.find("\n#### ", 1)]
        assert len(section) > 200, f"README: the runbook of {rule['alert']} is too short"
