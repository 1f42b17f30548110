"""Every PromQL expression of the monitoring bundle, where it is, and the metrics it names.

The bundle is grafana/dashboards/*.json (panel queries, annotations, variable queries) and the
rule files of deploy/prometheus/ (alerts and recording rules). Grafana's variables are
replaced by what "All" and a short time range give, so that Prometheus can evaluate the
expressions as they are written.

Metric names are found by a small scanner rather than a PromQL parser: strings, label
matchers, ranges and grouping clauses are cut out, and what is left of the identifiers that
are not functions or keywords are metric names. The tests check its answers against
Prometheus itself (every expression is evaluated there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "deploy" / "prometheus" / "netsentry.rules.yml"
DASHBOARDS = ROOT / "grafana" / "dashboards"

# What the dashboards' variables stand for when every agent and check is selected; a minute
# of 1-second scrapes is plenty for rate().
GRAFANA_VARIABLES = {
    "$job": "netsentry.*",
    "$location": ".*",
    "$instance": ".+",
    "$check": ".+",
    "$__rate_interval": "1m",
}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Expression:
    """One expression: `where` names it for people ("file: panel [refId]"), `label` is set
    for a variable's label_values(EXPR, LABEL) query."""

    where: str
    expr: str
    label: str | None = None

    @property
    def promql(self) -> str:
        """The expression with Grafana's variables replaced."""
        text = self.expr
        for name, value in GRAFANA_VARIABLES.items():
            text = text.replace(name, value)
        return text


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["groups"])


def rules(path: Path = RULES) -> Iterator[dict[str, Any]]:
    for group in rule_groups(path):
        yield from group["rules"]


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # the panels of a collapsed row


def expressions() -> list[Expression]:
    found = []
    for rule in rules():
        what = f"alert {rule['alert']}" if "alert" in rule else f"record {rule['record']}"
        found.append(Expression(f"{RULES.name}: {what}", rule["expr"].strip()))
    for name, board in dashboards().items():
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            text = variable["query"]["query"] if isinstance(variable["query"], dict) \
                else variable["query"]
            match = _LABEL_VALUES.match(text)
            assert match, f"{name}: variable {variable['name']}: not label_values(...): {text}"
            found.append(Expression(f"{name}: variable {variable['name']}", match[1], match[2]))
        for annotation in board["annotations"]["list"]:
            if "expr" in annotation:
                found.append(Expression(f"{name}: annotation {annotation['name']}",
                                        annotation["expr"]))
        for panel in panels(board):
            for target in panel.get("targets", []):
                found.append(Expression(f"{name}: {panel['title']} [{target['refId']}]",
                                        target["expr"]))
    return found


# --- metric names -------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and",
                      "or", "unless", "bool", "offset", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("0", text)
    for pattern in (_MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    return {m[1] for m in _IDENTIFIER.finditer(text)
            if not m[2] and m[1] not in KEYWORDS}


def selectors(expression: Expression) -> list[str]:
    """The vector selectors of an expression as Prometheus gets it: `name{matchers}`."""
    names = metric_names(expression.expr)
    text = expression.promql
    found = []
    for match in re.finditer(r"(?<![\w.:\"])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^{}]*\})?", text):
        if match[1] in names:
            found.append(match[1] + (match[2] or ""))
    return found
