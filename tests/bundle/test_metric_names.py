"""No dashboard panel or alert refers to a metric the agent does not export, and every metric
the agent exports is documented in the README.

What the agent exports comes from exporter.metrics (its own families, and the kinds' as the
registry's kinds declare them: `exporter.checks.kind_specs()`; with a histogram's _bucket, _sum
and _count series), from the process and Python collectors it
appends (exporter.process_metrics), and from Prometheus itself (`up` and the scrape_* series
of every target). Never from a list kept here.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics, process_metrics
from exporter.checks import kind_specs
from tests.bundle.promql import ROOT, expressions, metric_names, rules

README = ROOT / "README.md"
# Series Prometheus adds to every target it scrapes.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                                  "scrape_samples_post_metric_relabeling",
                                  "scrape_series_added"})
BUNDLE_SUFFIXES = (".json", ".yml", ".yaml", ".toml", ".py", ".service")


def all_specs() -> tuple[metrics.Spec, ...]:
    return metrics.CHECK_SPECS + kind_specs() + metrics.AGENT_SPECS + metrics.PROBE_SPECS


def series_names(spec: metrics.Spec) -> set[str]:
    if spec.type == metrics.HISTOGRAM:
        return {spec.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return {spec.name}


def process_families() -> set[str]:
    return {family.name for family in text_string_to_metric_families(process_metrics.render())}


def exported() -> set[str]:
    names = {name for spec in all_specs() for name in series_names(spec)}
    names |= {sample.name for family in text_string_to_metric_families(process_metrics.render())
              for sample in family.samples}
    return names


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def test_every_metric_of_the_dashboards_and_rules_is_exported() -> None:
    known = exported() | PROMETHEUS_SYNTHETIC | recorded()
    unknown = {}
    used: set[str] = set()
    for expression in expressions():
        names = metric_names(expression.expr)
        used |= names
        if names - known:
            unknown[expression.where] = sorted(names - known)
    assert not unknown, unknown
    # The scanner sees the metrics: most families the agent has are on a dashboard or alert.
    assert len(used & exported()) > 60


def test_every_netsentry_name_in_the_bundle_files_is_exported() -> None:
    """Also descriptions, comments and the generators: any netsentry_ name anywhere in
    grafana/ and deploy/ (a recording rule's name includes the metric it derives from)."""
    known = exported() | recorded() | {spec.name for spec in all_specs()}
    files = [p for d in ("grafana", "deploy") for p in sorted((ROOT / d).rglob("*"))
             if p.suffix in BUNDLE_SUFFIXES or p.name == "Dockerfile"]
    assert len(files) > 20
    unknown = set()
    for path in files:
        for name in re.findall(r"[A-Za-z_:]*netsentry_[A-Za-z0-9_:]*", path.read_text()):
            if name not in known:
                unknown.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, sorted(unknown)


def test_recording_rules_derive_from_exported_metrics() -> None:
    """Directly, or through recording rules earlier in the file (their group evaluates them
    in order, so a later rule sees an earlier one's result of the same evaluation)."""
    earlier: set[str] = set()
    for rule in rules():
        if "record" in rule:
            assert metric_names(rule["expr"]) <= exported() | earlier, rule["record"]
            earlier.add(rule["record"])


def test_every_exported_metric_is_documented_in_the_readme() -> None:
    text = README.read_text()
    match = re.search(r"^## Metrics\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "README: no ## Metrics section"
    section = match[1]
    missing = [spec.name for spec in all_specs()
               if not re.search(rf"`{re.escape(spec.name)}(`|\{{)", section)]
    assert not missing, f"README ## Metrics does not document: {missing}"
    # The collectors' families are documented by prefix, as `process_*`, `python_*`.
    prefixes = set(re.findall(r"`([a-z]+)_\*`", section))
    undocumented = sorted(n for n in process_families() if n.split("_")[0] not in prefixes)
    assert not undocumented, undocumented


def test_every_metric_defined_is_exported() -> None:
    """A spec in exporter/metrics.py that no registered kind declares would never be rendered."""
    defined = {value.name for value in vars(metrics).values() if isinstance(value, metrics.Spec)}
    assert defined - {spec.name for spec in all_specs()} == set()
