"""The Grafana dashboards and their provisioning: generated from grafana/generate.py, portable
(a data source variable, no UIDs), every panel with a unit, rates over $__rate_interval, and
the alert thresholds drawn where the alerts say."""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bundle.promql import ROOT, dashboards, panels, rules

GENERATOR = ROOT / "grafana" / "generate.py"
PROVISIONING = ROOT / "grafana" / "provisioning"
DS = {"type": "prometheus", "uid": "${datasource}"}


def generator() -> Any:  # the module grafana/generate.py
    spec = importlib.util.spec_from_file_location("grafana_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_json_is_what_the_generator_writes() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert set(dashboards()) == set(generator().DASHBOARDS)


def test_the_check_fails_on_a_hand_edited_file(tmp_path: Path) -> None:
    module = generator()
    module.OUT = tmp_path
    shutil.copytree(GENERATOR.parent / "dashboards", tmp_path, dirs_exist_ok=True)
    assert module.main(["--check"]) == 0
    edited = tmp_path / "netsentry-dns.json"
    edited.write_text(edited.read_text().replace('"refresh": "30s"', '"refresh": "5s"'))
    assert module.main(["--check"]) == 1


def test_there_are_the_five_dashboards() -> None:
    titles = {board["title"] for board in dashboards().values()}
    assert titles == {"netsentry / Overview", "netsentry / DNS", "netsentry / Clock",
                      "netsentry / Network paths", "netsentry / Network"}
    uids = [board["uid"] for board in dashboards().values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_variables(name: str) -> None:
    variables = {v["name"]: v for v in dashboards()[name]["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "location", "instance", "check"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for key in ("job", "location", "instance", "check"):
        assert variables[key]["type"] == "query"
        assert variables[key]["datasource"] == DS
        assert variables[key]["includeAll"] and variables[key]["multi"]
    # "All" jobs are the netsentry ones, as the alert rules select them.
    assert variables["job"]["allValue"] == "netsentry.*"
    # "All" locations include the series of agents the scrape config gives no location.
    assert variables["location"]["allValue"] == ".*"
    assert "$location" in variables["instance"]["query"]["query"]


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_no_data_source_is_hard_coded(name: str) -> None:
    board = dashboards()[name]
    for node in _walk(board):
        if "datasource" in node and isinstance(node["datasource"], dict):
            assert node["datasource"] == DS, node
        if "uid" in node and node is not board:
            assert node["uid"] == "${datasource}", node


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_panel_has_a_unit_a_description_and_queries(name: str) -> None:
    for panel in panels(dashboards()[name]):
        if panel["type"] == "row":
            continue
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == DS


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_rates_and_ranges_use_the_rate_interval(name: str) -> None:
    board = dashboards()[name]
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    for expr in exprs:
        without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        for window in re.findall(r"\[([^\]]*)\]", without_strings):
            assert window == "$__rate_interval", expr
        # Only the variables the dashboards define, and Grafana's rate interval.
        for variable in re.findall(r"\$\{?(\w+)", expr):
            assert variable in ("job", "location", "instance", "check",
                                "__rate_interval"), expr


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_layout(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    ids = []
    titles = [p["title"] for p in panels(dashboards()[name]) if p["type"] != "row"]
    assert len(set(titles)) == len(titles), "a title names one panel"
    for panel in panels(dashboards()[name]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        ids.append(panel["id"])
    assert len(set(ids)) == len(ids)


def _threshold(alert: str, pattern: str) -> float:
    [expr] = [r["expr"] for r in rules() if r.get("alert") == alert]
    match = re.search(pattern, expr)
    assert match, expr
    return math.prod(float(factor) for factor in match[1].split("*"))  # 0.1, or 14 * 86400


def _panel(board: str, title: str) -> dict[str, Any]:
    [panel] = [p for p in panels(dashboards()[board]) if p["title"] == title]
    return panel


def _steps(panel: dict[str, Any]) -> list[float | None]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_the_alert_thresholds_are_drawn_where_the_alerts_fire() -> None:
    offset = _threshold("NetsentryClockOffsetHigh", r"\) > ([\d.]+)")
    panel = _panel("netsentry-clock.json", "Offset")
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
    assert _steps(panel) == [None, -offset, offset]
    days = _threshold("NetsentryCertificateExpiringSoon", r"< ([\d *]+)\n") / 86400
    assert _steps(_panel("netsentry-paths.json", "Certificates by days to expiry")) == \
        [None, 0, days]
    lag = _threshold("NetsentrySchedulerLagging", r"> ([\d.]+)")
    assert _steps(_panel("netsentry-overview.json", "Scheduler lag, p99")) == [None, lag]
    loss = _threshold("NetsentryPacketLoss", r"> ([\d.]+)")
    assert _steps(_panel("netsentry-network.json", "Loss")) == [None, loss]
    stale = _threshold("NetsentryCheckStale", r"> (\d+) \*")
    assert _steps(_panel("netsentry-overview.json", "Most overdue checks"))[-1] == stale
    many = _threshold("NetsentryCheckFailingFromManyLocations", r">= (\d+)\n")
    assert _steps(_panel("netsentry-overview.json", "Checks by failing locations"))[-1] == many


def test_provisioning() -> None:
    [providers_file] = (PROVISIONING / "dashboards").glob("*.yaml")
    providers = yaml.safe_load(providers_file.read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    [sources_file] = (PROVISIONING / "datasources").glob("*.yaml")
    sources = yaml.safe_load(sources_file.read_text())
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"
    # deploy/compose.yaml mounts the dashboards where the provider looks for them.
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])
    assert mounts[provider["options"]["path"]] == "../grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    # ... and the data source's URL is the compose Prometheus.
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
