"""netsentry's Grafana dashboards, as code: this script writes grafana/dashboards/*.json.

    python grafana/generate.py          # write the dashboards
    python grafana/generate.py --check  # exit 1, naming the files, if a committed one differs

The JSON is committed so that Grafana's file provisioning (grafana/provisioning/) and people
importing a dashboard need nothing but the file; the tests run `--check`, so a hand edit of the
JSON or a change here without regenerating fails CI. Standard library only: the
dashboards-as-code SDK (grafana-foundation-sdk) needs Python 3.11 and is versioned by build
timestamps, which pins badly; a few small builders below are all the dashboards need.

Every dashboard has a `datasource` variable (no data source UID is written anywhere), `job`,
`location`, `instance` and `check` variables, `$__rate_interval` in every range selector, and
a unit on every panel. The metric names come from exporter/metrics.py's contract; the tests evaluate
every query below against a real Prometheus scraping a real agent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24  # Grafana's grid

# Label matchers of the variables: the agent's own series, and a check's. `location` is the
# label the scrape config gives each agent (README: "Many locations"); "All" is `.*`, so
# series without one are selected too.
AGENT = 'job=~"$job", location=~"$location", instance=~"$instance"'
CHECK = AGENT + ', check=~"$check"'
# A check's series summed over its locations (recording rules without location or instance).
CHECK_EVERYWHERE = 'job=~"$job", check=~"$check"'

# Thresholds of the alert rules (deploy/prometheus/netsentry.rules.yml), drawn on the panels.
OFFSET_ALERT = 0.1
CERT_DAYS_ALERT = 14
LAG_ALERT = 0.5
STALE_ALERT = 3
LOSS_ALERT = 0.05
MANY_LOCATIONS = 2

Json = dict[str, Any]

# A check of a target list (or of discovered targets) carries `target` on every series; the
# others have it on netsentry_check_info only. MANY: the checks of the former kind.
MANY = f'netsentry_check_interval_seconds{{{CHECK}, target!=""}}'


def with_target(expr: str) -> str:
    """`expr`, an instant vector of checks' series, with every check's target: joined from
    netsentry_check_info for a single-target check, as it is for the others."""
    single = f"({expr} unless on (job, instance, check) {MANY})"
    info = f"(netsentry_check_info{{{CHECK}}} unless on (job, instance, check) {MANY})"
    return (f"({single} * on (job, instance, check) group_left (target) {info})"
            f" or ({expr} and on (job, instance, check) {MANY})")


# --- builders -----------------------------------------------------------------------------------


def query(expr: str, legend: str = "", *, ref: str = "A", table: bool = False) -> Json:
    """A Prometheus query; `table` makes it an instant query formatted as a table."""
    target: Json = {"datasource": DS, "editorMode": "code", "expr": expr, "refId": ref}
    if table:
        target.update(format="table", instant=True, range=False)
    else:
        # The checks of a target list share their name: their target tells them apart (it
        # is empty for the others, whose series have no target label).
        legend = legend.replace("{{check}}", "{{check}} {{target}}")
        target.update(legendFormat=legend or "__auto", range=True)
    return target


def queries(*pairs: tuple[str, str]) -> list[Json]:
    """Several range queries, lettered A, B, C... in order."""
    return [query(expr, legend, ref=chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def steps(*pairs: tuple[float | None, str]) -> Json:
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in pairs]}


def mapping(*pairs: tuple[int, str, str]) -> list[Json]:
    """Value mappings: (value, text, colour)."""
    return [{"type": "value", "options": {
        str(value): {"color": color, "index": i, "text": text}
        for i, (value, text, color) in enumerate(pairs)}}]


OK_FAILING = mapping((0, "failing", "red"), (1, "ok", "green"))


def panel(kind: str, title: str, description: str, targets: list[Json], unit: str, *,
          width: int, height: int = 8, defaults: Json | None = None,
          options: Json | None = None, transformations: list[Json] | None = None) -> Json:
    result: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
        "options": options or {},
        "targets": targets,
        "gridPos": {"h": height, "w": width},
    }
    if transformations:
        result["transformations"] = transformations
    return result


def timeseries(title: str, description: str, targets: list[Json], unit: str, *,
               width: int = 12, height: int = 8, stack: bool = False, bars: bool = False,
               thresholds: Json | None = None, decimals: int | None = None) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if stack or bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "line" if thresholds else "off"},
    }
    defaults: Json = {"color": {"mode": "palette-classic"}, "custom": custom,
                      "thresholds": thresholds or steps((None, "green"))}
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {"legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table",
                          "placement": "bottom", "showLegend": True},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, targets, unit, width=width, height=height,
                 defaults=defaults, options=options)


def state_timeline(title: str, description: str, target: Json | list[Json], states: list[Json],
                   *, width: int = 24, height: int = 8, unit: str = "bool",
                   thresholds: Json | None = None) -> Json:
    """States by value mappings, or (with `thresholds` and no `states`) coloured by value."""
    defaults: Json = {"color": {"mode": "thresholds"}, "mappings": states,
                      "thresholds": thresholds or steps((None, "text")),
                      "custom": {"fillOpacity": 80, "lineWidth": 0}}
    options = {"alignValue": "left", "mergeValues": True, "rowHeight": 0.9,
               "showValue": "never", "legend": {"displayMode": "list", "placement": "bottom",
                                                "showLegend": False},
               "tooltip": {"mode": "single", "sort": "none"}}
    targets = target if isinstance(target, list) else [target]
    return panel("state-timeline", title, description, targets, unit, width=width,
                 height=height, defaults=defaults, options=options)


def table(title: str, description: str, targets: list[Json], unit: str, *,
          width: int = 12, height: int = 8, value: str = "Value", hide: Sequence[str] = (),
          thresholds: Json | None = None, sort: str | None = None, desc: bool = True,
          merge: Sequence[str] = ()) -> Json:
    """Instant queries as a table; the value column is renamed `value` and coloured by
    `thresholds`; `hide` lists label columns nobody needs. With several queries, `merge`
    names their value columns and joins the rows on their common labels."""
    renamed = ({f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(merge)}
               if merge else {"Value": value})
    # The organize transformation hides fields by their names before renaming.
    original = {new: old for old, new in renamed.items()}
    hidden = {original.get(name, name): True for name in ("Time", "__name__", "job", *hide)}
    transformations: list[Json] = [{"id": "merge", "options": {}}] if merge else []
    transformations.append({"id": "organize", "options": {
        "excludeByName": hidden, "indexByName": {}, "renameByName": renamed}})
    defaults: Json = {"custom": {"align": "auto", "cellOptions": {
        "type": "color-text" if thresholds else "auto"}}}
    if thresholds:
        defaults["thresholds"] = thresholds
        defaults["color"] = {"mode": "thresholds"}
    options: Json = {"cellHeight": "sm", "showHeader": True,
                     "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    if sort:
        options["sortBy"] = [{"desc": desc, "displayName": sort}]
    return panel("table", title, description, targets, unit, width=width, height=height,
                 defaults=defaults, options=options, transformations=transformations)


def stat(title: str, description: str, expr: str, unit: str, *, width: int = 6,
         height: int = 4, thresholds: Json | None = None) -> Json:
    defaults = {"color": {"mode": "thresholds"},
                "thresholds": thresholds or steps((None, "green"))}
    options = {"colorMode": "value", "graphMode": "area", "justifyMode": "auto",
               "orientation": "auto", "textMode": "auto",
               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return panel("stat", title, description, [query(expr, " ")], unit, width=width,
                 height=height, defaults=defaults, options=options)


def heatmap(title: str, description: str, expr: str, unit: str, *, width: int = 12,
            height: int = 8) -> Json:
    """A histogram's buckets over time, one rate per `le` (the query sums by `le`)."""
    target = query(expr, "{{le}}")
    target.update(format="heatmap")
    options = {"calculate": False, "cellGap": 1, "color": {"mode": "scheme",
                                                           "scheme": "Spectral",
                                                           "steps": 64, "exponent": 0.5},
               "yAxis": {"axisPlacement": "left", "unit": unit},
               "rowsFrame": {"layout": "auto"}, "filterValues": {"le": 1e-9},
               "tooltip": {"mode": "single", "yHistogram": True},
               "legend": {"show": True}}
    return panel("heatmap", title, description, [target], unit, width=width, height=height,
                 options=options)


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": WIDTH}}


def layout(panels: list[Json]) -> list[Json]:
    """Number the panels and place them left to right, wrapping at the grid's width."""
    x = y = row_height = 0
    for number, item in enumerate(panels, 1):
        grid = item["gridPos"]
        if x + grid["w"] > WIDTH or item["type"] == "row":
            x, y, row_height = 0, y + row_height, 0
        grid.update(x=x, y=y)
        item["id"] = number
        x += grid["w"]
        row_height = max(row_height, grid["h"])
        if item["type"] == "row":
            x, y, row_height = 0, y + grid["h"], 0
    return panels


def variable(name: str, label: str, definition: str, *, all_value: str) -> Json:
    return {
        "type": "query", "name": name, "label": label, "datasource": DS,
        "definition": definition, "query": {"query": definition, "refId": name},
        "includeAll": True, "multi": True, "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2, "regex": "", "sort": 1, "hide": 0, "options": [],
    }


def dashboard(uid: str, title: str, description: str, panels: list[Json], *,
              kinds: str = "") -> Json:
    """`kinds` narrows the `check` variable to checks of those kinds (a regex)."""
    kind_matcher = f', kind=~"{kinds}"' if kinds else ""
    templating = [
        {"type": "datasource", "name": "datasource", "label": "Data source",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
         "options": [], "includeAll": False, "multi": False},
        # All agents' jobs start with "netsentry", as the alert rules expect.
        variable("job", "Job", "label_values(netsentry_build_info, job)",
                 all_value="netsentry.*"),
        # Where the agents run, as the scrape config labels them; empty without one.
        variable("location", "Location", 'label_values(up{job=~"$job"}, location)',
                 all_value=".*"),
        variable("instance", "Agent",
                 'label_values(up{job=~"$job", location=~"$location"}, instance)',
                 all_value=".+"),
        variable("check", "Check",
                 f"label_values(netsentry_check_info{{{AGENT}{kind_matcher}}}, check)",
                 all_value=".+"),
    ]
    reloads = {
        "datasource": DS, "enable": True, "hide": False, "iconColor": "blue",
        "name": "Config reloads",
        "expr": f"changes(netsentry_config_last_reload_success_timestamp_seconds{{{AGENT}}}"
                "[$__rate_interval]) > 0",
        "titleFormat": "config reloaded on {{instance}}", "step": "1m",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["netsentry"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "version": 1,
        "links": [{"type": "dashboards", "tags": ["netsentry"], "asDropdown": False,
                   "includeVars": True, "keepTime": True, "title": "netsentry",
                   "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "annotations": {"list": [reloads]},
        "templating": {"list": templating},
        "panels": layout(panels),
    }


# --- the dashboards -----------------------------------------------------------------------------


def overview() -> Json:
    failing_checks = with_target(f"(netsentry_check_success{{{CHECK}}} == 0)")
    return dashboard("netsentry-overview", "netsentry / Overview", (
        "Every check's state, why checks fail, the slowest and the stale ones, and the "
        "agents' own health."), [
        row("Checks"),
        stat("Checks configured", "Checks in the running configs of the selected agents.",
             f"sum(netsentry_checks_configured{{{AGENT}}})", "short"),
        stat("Checks failing", "Checks whose last run failed.",
             f"count(netsentry_check_success{{{CHECK}}} == 0) or vector(0)", "short",
             thresholds=steps((None, "green"), (1, "red"))),
        stat("Checks stale", f"Checks that have not run for {STALE_ALERT} intervals "
             "(NetsentryCheckStale).",
             f"count(check:netsentry_check_staleness:ratio{{{CHECK}}} > {STALE_ALERT})"
             " or vector(0)", "short", thresholds=steps((None, "green"), (1, "orange"))),
        stat("Agents down", "Selected agents Prometheus cannot scrape (NetsentryAgentDown).",
             f"count(up{{{AGENT}}} == 0) or vector(0)", "short",
             thresholds=steps((None, "green"), (1, "red"))),
        state_timeline("Check state", "1 = the last run succeeded, as scraped.",
                       query(f"netsentry_check_success{{{CHECK}}}", "{{check}} ({{instance}})"),
                       OK_FAILING, height=10),
        timeseries("Failure reasons", "Failed runs per second by reason, all selected "
                   "checks together (reasons with no failures are left out).",
                   [query(f"sum by (reason) (rate(netsentry_check_failures_total{{{CHECK}}}"
                          "[$__rate_interval])) > 0", "{{reason}}")], "cps", stack=True),
        table("Failing checks", "Checks whose last run failed, with their targets; the reason "
              "and message are on the agent's status page.", [query(failing_checks, table=True)],
              "short", hide=("Value",)),
        table("Slowest checks", "The 10 highest 95th percentiles of run time over 5 minutes "
              "(recording rule check:netsentry_check_duration_seconds:p95_5m).",
              [query(f"topk(10, check:netsentry_check_duration_seconds:p95_5m{{{CHECK}}})",
                     table=True)], "s", value="p95 run time", sort="p95 run time"),
        table("Most overdue checks", "Time since each check's last run, in intervals: above "
              f"{STALE_ALERT} is stale. The 10 most overdue.",
              [query(f"topk(10, check:netsentry_check_staleness:ratio{{{CHECK}}})",
                     table=True)], "suffix: intervals", value="since last run",
              sort="since last run",
              thresholds=steps((None, "green"), (1.5, "orange"), (STALE_ALERT, "red"))),
        row("Locations"),
        state_timeline("Check success by location", "Per location, the share of its agents "
                       "whose last run of the check succeeded (recording rule "
                       "location:netsentry_check_success:mean): 100 % ok, 0 % failing from "
                       "every agent there. The location is the label the scrape config gives "
                       "each agent; without one, all agents of a job are one location.",
                       query("location:netsentry_check_success:mean{job=~\"$job\", "
                             "location=~\"$location\", check=~\"$check\"}",
                             "{{check}} @ {{location}}"),
                       [], height=10, unit="percentunit",
                       thresholds=steps((None, "red"), (0.5, "orange"), (1, "green"))),
        table("Checks by failing locations", "Per check and target, the locations where it "
              "fails (more than half of the location's agents fail it) and the locations that "
              "run it. NetsentryCheckFailingFromManyLocations fires when it fails from at "
              f"least {MANY_LOCATIONS} locations and at least half of those.", [
                  query(f"check:netsentry_check_locations_failing:count{{{CHECK_EVERYWHERE}}}",
                        ref="A", table=True),
                  query(f"check:netsentry_check_locations:count{{{CHECK_EVERYWHERE}}}",
                        ref="B", table=True)], "short", merge=("failing", "locations"),
              sort="failing", width=24, height=8,
              thresholds=steps((None, "green"), (1, "orange"), (MANY_LOCATIONS, "red"))),
        row("Agents"),
        timeseries("Scheduler lag, p99", "How late runs start, 99th percentile; the line is "
                   "NetsentrySchedulerLagging's threshold.",
                   [query("histogram_quantile(0.99, sum by (job, instance, le) ("
                          f"rate(netsentry_scheduler_lag_seconds_bucket{{{AGENT}}}"
                          "[$__rate_interval])))", "{{instance}}")], "s",
                   thresholds=steps((None, "green"), (LAG_ALERT, "red"))),
        timeseries("Runs in flight", "Check runs in progress at scrape time.",
                   [query(f"netsentry_checks_in_flight{{{AGENT}}}", "{{instance}}")], "short"),
        timeseries("Missed and skipped runs", "Planned runs that started too late (missed) or "
                   "not at all because the previous run was still going (skipped).", queries(
                       (f"sum by (instance) (rate(netsentry_scheduler_missed_runs_total{{{AGENT}}}"
                        "[$__rate_interval]))", "{{instance}} missed"),
                       (f"sum by (instance) (rate(netsentry_scheduler_skipped_runs_total{{{AGENT}}}"
                        "[$__rate_interval]))", "{{instance}} skipped")), "cps"),
        timeseries("Checks by kind", "Checks in the running configs.",
                   [query(f"sum by (kind) (netsentry_checks_configured{{{AGENT}}})", "{{kind}}")],
                   "short", stack=True),
        state_timeline("Config reloads", "1 = the last reload succeeded; 0 = it failed and an "
                       "older config runs (NetsentryConfigReloadFailed). The same for the web "
                       "config where one is given: its file, certificate, key and client CAs "
                       "(NetsentryWebConfigReloadFailed).",
                       [query(f"netsentry_config_last_reload_successful{{{AGENT}}}",
                              "{{instance}}"),
                        query(f"netsentry_web_config_last_reload_successful{{{AGENT}}}",
                              "{{instance}} web config", ref="B")],
                       mapping((0, "reload failed", "red"), (1, "ok", "green")), width=12),
        table("Agents", "Versions and host names of the agents; `up` 0 means Prometheus "
              "cannot scrape it.", [
                  query(f"up{{{AGENT}}}", ref="A", table=True),
                  query(f"netsentry_build_info{{{AGENT}}} * on (job, instance) "
                        f"group_left (hostname) netsentry_host_info{{{AGENT}}}", ref="B",
                        table=True)], "short", merge=("up", "info"), hide=("info",)),
        table("Shards", "Checks each agent runs of its config: its share with --shard I/N "
              "(shard 0 of 1 runs them all).",
              [query(f"netsentry_shard_checks{{{AGENT}}}", table=True)], "short",
              value="checks", width=12, height=5),
        table("Service discovery", "The discovered checks' sources (targets_file, "
              "targets_url, targets_srv): targets each agent runs, those refused, and whether "
              "the last refresh succeeded (0: the last good targets run; "
              "NetsentryDiscoveryFailing).", [
                  query(f"netsentry_discovery_targets{{{AGENT}}}", ref="A", table=True),
                  query(f"netsentry_discovery_refused_targets{{{AGENT}}}", ref="B",
                        table=True),
                  query(f"netsentry_discovery_last_refresh_successful{{{AGENT}}}", ref="C",
                        table=True)], "short", merge=("targets", "refused", "refreshed"),
              width=12, height=5),
        timeseries("Agent CPU", "CPU time of each agent process, in cores.",
                   [query(f"rate(process_cpu_seconds_total{{{AGENT}}}[$__rate_interval])",
                          "{{instance}}")], "percentunit", width=8),
        timeseries("Agent memory", "Resident memory of each agent process.",
                   [query(f"process_resident_memory_bytes{{{AGENT}}}", "{{instance}}")], "bytes",
                   width=8),
        timeseries("Agent file descriptors", "Open file descriptors and the process limit.",
                   queries((f"process_open_fds{{{AGENT}}}", "{{instance}} open"),
                           (f"process_max_fds{{{AGENT}}}", "{{instance}} limit")), "short",
                   width=8),
    ])


def dns() -> Json:
    dns_check = CHECK + ', kind="dns"'
    lookup = f"netsentry_dns_lookup_seconds{{{dns_check}}}[$__rate_interval]"
    return dashboard("netsentry-dns", "netsentry / DNS", (
        "dns checks: lookup time, rcodes, answer changes, and the system resolver held "
        "against the nameservers."), [
        row("Lookups"),
        state_timeline("DNS check state", "1 = the last run succeeded.",
                       query(f"netsentry_check_success{{{dns_check}}}", "{{check}}"), OK_FAILING),
        timeseries("Lookup time quantiles", "Time to the answer, quantiles of the last runs' "
                   "values over each step.", queries(
                       (f"quantile_over_time(0.5, {lookup})", "{{check}} p50"),
                       (f"quantile_over_time(0.9, {lookup})", "{{check}} p90"),
                       (f"quantile_over_time(0.99, {lookup})", "{{check}} p99")), "s"),
        timeseries("Failure reasons", "Failed runs per second of dns checks, by check and "
                   "reason.", [query("sum by (check, target, reason) ("
                                     "rate(netsentry_check_failures_total"
                                     f"{{{dns_check}}}[$__rate_interval])) > 0",
                                     "{{check}} {{reason}}")], "cps", stack=True),
        timeseries("Answers", "Answers of the asked type (addresses for the system resolver).",
                   [query(f"netsentry_dns_answers{{{dns_check}}}", "{{check}}")], "short",
                   decimals=0),
        timeseries("Smallest TTL", "Smallest TTL of the answers and the CNAMEs to them "
                   "(nameserver checks).",
                   [query(f"netsentry_dns_min_ttl_seconds{{{dns_check}}}", "{{check}}")], "s"),
        row("Replies"),
        timeseries("Replies by rcode", "Replies per second from the nameservers, by check and "
                   "rcode.", [query("sum by (check, target, rcode) ("
                                    "rate(netsentry_dns_responses_total"
                                    f"{{{dns_check}}}[$__rate_interval]))",
                                    "{{check}} {{rcode}}")], "cps", stack=True),
        timeseries("Answer changes", "Runs whose answers differed from the previous answers: "
                   "a failover, a rotation, or a hijack.",
                   [query(f"increase(netsentry_dns_answer_changes_total{{{dns_check}}}"
                          "[$__rate_interval])", "{{check}}")], "short", bars=True, decimals=0),
        state_timeline("System resolver vs nameserver", "Checks with compare_with_system: 1 = "
                       "getaddrinfo returned other addresses than the nameserver "
                       "(NetsentryDnsResolverMismatch).",
                       query(f"netsentry_dns_resolver_mismatch{{{dns_check}}}", "{{check}}"),
                       mapping((0, "agree", "green"), (1, "mismatch", "red")), width=12),
        state_timeline("DNSSEC (AD flag)", "1 = the reply had the AD flag: the resolver "
                       "validated it.",
                       query(f"netsentry_dns_authenticated_data{{{dns_check}}}", "{{check}}"),
                       mapping((0, "not authenticated", "text"), (1, "authenticated", "green")),
                       width=12),
        timeseries("Ignored datagrams", "UDP datagrams dropped while waiting for the reply: "
                   "wrong ID or source (spoofing attempts) or garbage.",
                   [query("sum by (check, target) (rate(netsentry_dns_ignored_replies_total"
                          f"{{{dns_check}}}[$__rate_interval]))", "{{check}}")], "cps"),
    ], kinds="dns")


def clock() -> Json:
    ntp = CHECK + ', kind="ntp"'
    local = CHECK + ', kind="clock"'
    return dashboard("netsentry-clock", "netsentry / Clock", (
        "NTP servers as the ntp checks see them, and this host's kernel clock discipline."), [
        row("NTP servers"),
        timeseries("Offset", "How far each check's server is ahead of this host's clock (with "
                   "several servers, the truechimers' combined offset); the lines are "
                   f"NetsentryClockOffsetHigh's threshold, +/-{OFFSET_ALERT * 1000:g} ms.",
                   [query(f"netsentry_ntp_offset_seconds{{{ntp}}}", "{{check}}")], "s",
                   thresholds=steps((None, "red"), (-OFFSET_ALERT, "green"),
                                    (OFFSET_ALERT, "red"))),
        timeseries("Round-trip delay", "Network delay of the sample used (the least of the "
                   "run's samples).",
                   [query(f"netsentry_ntp_rtt_seconds{{{ntp}}}", "{{check}}")], "s"),
        timeseries("Stratum", "Distance from the reference clock (1 = attached to one).",
                   [query(f"netsentry_ntp_stratum{{{ntp}}}", "{{check}}")], "short",
                   decimals=0),
        timeseries("Root distance", "The most the server's time can be off its primary "
                   "reference (root delay / 2 + root dispersion, and the path to it).", queries(
                       (f"netsentry_ntp_root_distance_seconds{{{ntp}}}", "{{check}} distance"),
                       (f"netsentry_ntp_root_delay_seconds{{{ntp}}}", "{{check}} root delay"),
                       (f"netsentry_ntp_root_dispersion_seconds{{{ntp}}}",
                        "{{check}} root dispersion")), "s"),
        state_timeline("Leap indicator", "0 = no warning, 1/2 = a leap second is inserted/"
                       "deleted at the end of the day (an unsynchronised server, leap 3, fails "
                       "the check instead).",
                       query(f"netsentry_ntp_leap{{{ntp}}}", "{{check}}"),
                       mapping((0, "none", "green"), (1, "+1 s today", "blue"),
                               (2, "-1 s today", "blue")), width=12),
        state_timeline("Sanity verdict", "1 = a valid reply with root distance and offset "
                       "within the check's max_root_distance and max_offset.",
                       query(f"netsentry_ntp_sanity{{{ntp}}}", "{{check}}"),
                       mapping((0, "insane", "red"), (1, "sane", "green")), width=12),
        state_timeline("Falsetickers", "Servers of multi-server checks that disagree with the "
                       "majority; they are left out of the combined offset.",
                       query(f"netsentry_ntp_falseticker{{{ntp}}}", "{{check}} {{server}}"),
                       mapping((0, "truechimer", "green"), (1, "falseticker", "red")), width=12),
        table("Reference and precision", "Each server's reference ID (a clock source at "
              "stratum 1, its upstream server above) and clock precision.",
              [query(f"netsentry_ntp_reference_info{{{ntp}}}", ref="A", table=True),
               query(f"netsentry_ntp_precision_seconds{{{ntp}}}", ref="B", table=True)],
              "s", merge=("info", "precision"), hide=("info", "kind")),
        table("Kiss-o'-Death", "Kiss-o'-Death replies since the check was loaded, by code: RATE "
              "backs the check off, DENY and RSTR stop it until a reload.",
              [query(f"netsentry_ntp_kiss_of_death_total{{{ntp}}}", table=True)], "short",
              value="replies", hide=("kind",)),
        timeseries("Ignored datagrams", "UDP datagrams dropped while waiting for a reply: "
                   "wrong source or origin (spoofing attempts), wrong mode, short, bad times.",
                   [query("sum by (check, target) (rate(netsentry_ntp_ignored_replies_total"
                          f"{{{ntp}}}[$__rate_interval]))", "{{check}}")], "cps"),
        row("This host's kernel clock"),
        state_timeline("Kernel clock synchronised", "The kernel's view (adjtimex): 0 = "
                       "STA_UNSYNC or TIME_ERROR, nothing disciplines the clock "
                       "(NetsentryClockNotSynchronised).",
                       query(f"netsentry_clock_synchronized{{{local}}}", "{{instance}}"),
                       mapping((0, "unsynchronised", "red"), (1, "synchronised", "green")),
                       width=12),
        table("Kernel clock state", "The kernel's time_state: ok, ins/del (a leap second due "
              "today), oop (during one), wait (after one), error.",
              [query(f"netsentry_clock_state{{{local}}} == 1", table=True)], "short",
              hide=("Value", "kind")),
        timeseries("Estimated and maximum error", "The kernel's estimate of its clock's error, "
                   "and the bound that grows by 500 ppm while nothing disciplines it (16 s "
                   "and more: unsynchronised).", queries(
                       (f"netsentry_clock_estimated_error_seconds{{{local}}}",
                        "{{instance}} estimated"),
                       (f"netsentry_clock_max_error_seconds{{{local}}}", "{{instance}} maximum")),
                   "s"),
        timeseries("Frequency adjustment", "How much faster (+) or slower (-) than nominal the "
                   "kernel runs the clock.",
                   [query(f"netsentry_clock_frequency_adjustment_ratio{{{local}}} * 1e6",
                          "{{instance}}")], "ppm"),
        timeseries("TAI offset", "TAI minus UTC as the kernel knows it (37 s since 2017); "
                   "absent until a time daemon sets it.",
                   [query(f"netsentry_clock_tai_offset_seconds{{{local}}}", "{{instance}}")],
                   "s"),
        timeseries("Wall-clock steps", "Jumps of the wall clock against the monotonic clock "
                   "seen by the agent (NetsentryClockStepped).",
                   [query(f"increase(netsentry_clock_steps_total{{{AGENT}}}[$__rate_interval])",
                          "{{instance}}")], "short", bars=True, decimals=0),
    ], kinds="ntp|clock")


def paths() -> Json:
    tcp = CHECK + ', kind="tcp"'
    websocket = CHECK + ', kind="websocket"'
    expiry_days = with_target(
        f"((netsentry_tls_cert_expiry_timestamp_seconds{{{CHECK}}} - time()) / 86400)")
    return dashboard("netsentry-paths", "netsentry / Network paths", (
        "tcp, http, websocket, grpc and socket checks: where the time goes, what the kernel "
        "says about the connections, certificates, and socket options."), [
        row("Phases"),
        timeseries("TCP phases", "resolve, connect and TLS handshake of the tcp checks, "
                   "stacked; the mean over the selected checks (select one to see its own).",
                   queries((f"avg(netsentry_dns_lookup_seconds{{{tcp}}})", "resolve"),
                           (f"avg(netsentry_tcp_connect_seconds{{{tcp}}})", "connect"),
                           (f"avg(netsentry_tls_handshake_seconds{{{tcp}}})", "tls")),
                   "s", stack=True),
        timeseries("HTTP phases", "resolve, connect, tls, processing (request sent to first "
                   "byte) and transfer, stacked; the mean over the selected checks.",
                   [query(f"avg by (phase) (netsentry_http_phase_seconds{{{CHECK}}})",
                          "{{phase}}")], "s", stack=True),
        timeseries("WebSocket phases", "resolve, connect, TLS and the opening handshake "
                   "(upgrade sent to 101 verified) of the websocket checks, stacked; the mean "
                   "over the selected checks.",
                   queries((f"avg(netsentry_dns_lookup_seconds{{{websocket}}})", "resolve"),
                           (f"avg(netsentry_tcp_connect_seconds{{{websocket}}})", "connect"),
                           (f"avg(netsentry_tls_handshake_seconds{{{websocket}}})", "tls"),
                           (f"avg(netsentry_websocket_handshake_seconds{{{CHECK}}})",
                            "handshake")),
                   "s", stack=True),
        table("Slowest connects", "The 10 longest TCP connects of the last runs.",
              [query(f"topk(10, netsentry_tcp_connect_seconds{{{CHECK}}})", table=True)], "s",
              value="connect", sort="connect"),
        timeseries("HTTP status", "Status code of the final response.",
                   [query(f"netsentry_http_status_code{{{CHECK}}}", "{{check}}")], "short",
                   decimals=0),
        row("TCP_INFO"),
        timeseries("Smoothed RTT", "The kernel's round-trip time estimate for the check's "
                   "connection (TCP_INFO), and its variation.", queries(
                       (f"netsentry_tcp_rtt_seconds{{{CHECK}}}", "{{check}}"),
                       (f"netsentry_tcp_rttvar_seconds{{{CHECK}}}", "{{check}} variation")), "s"),
        timeseries("Retransmitted segments", "Segments the check's connection retransmitted.",
                   [query(f"netsentry_tcp_retransmits{{{CHECK}}}", "{{check}}")], "short",
                   decimals=0),
        timeseries("Congestion window", "Congestion window in segments at the end of the run.",
                   [query(f"netsentry_tcp_snd_cwnd{{{CHECK}}}", "{{check}}")], "short",
                   decimals=0),
        timeseries("Path MTU and MSS", "Path MTU of the connection, and the segment size "
                   "it sends (socket checks with a target).", queries(
                       (f"netsentry_tcp_pmtu_bytes{{{CHECK}}}", "{{check}} path MTU"),
                       (f"netsentry_tcp_snd_mss_bytes{{{CHECK}}}", "{{check}} MSS")), "bytes"),
        row("Certificates and HTTP"),
        table("Certificates by days to expiry", "Days until the first certificate of each "
              f"check's chain expires: orange under {CERT_DAYS_ALERT} "
              "(NetsentryCertificateExpiringSoon), red when expired.",
              [query(f"sort({expiry_days})", table=True)], "suffix: days",
              value="days left", sort="days left", desc=False,
              thresholds=steps((None, "red"), (0, "orange"), (CERT_DAYS_ALERT, "green"))),
        table("TLS versions", "The TLS version each check negotiated.",
              [query(f"netsentry_tls_version_info{{{CHECK}}}", table=True)], "short",
              width=6, hide=("Value",)),
        table("HTTP versions", "The HTTP version of each http check's final response "
              "(1.0, 1.1 or 2).",
              [query(f"netsentry_http_version{{{CHECK}}}", table=True)], "short", width=6),
        timeseries("Response size", "Body size of the final response after decoding.",
                   [query(f"netsentry_http_response_bytes{{{CHECK}}}", "{{check}}")], "bytes"),
        timeseries("Redirects", "Redirects followed.",
                   [query(f"netsentry_http_redirects{{{CHECK}}}", "{{check}}")], "short",
                   decimals=0),
        row("gRPC health"),
        state_timeline("gRPC serving", "grpc checks: 1 = the health service answered SERVING; "
                       "0 = another status or a failed call (the reason is on the status page).",
                       query(f'netsentry_check_success{{{CHECK}, kind="grpc"}}', "{{check}}"),
                       mapping((0, "failing", "red"), (1, "serving", "green"))),
        table("Reported serving statuses", "The status each grpc check's last answer reported "
              "(SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN).",
              [query(f"netsentry_grpc_healthcheck_status{{{CHECK}}} == 1", table=True)],
              "short", hide=("Value", "kind")),
        table("gRPC status codes", "The gRPC status of each grpc check's last call (0 OK, "
              "5 NOT_FOUND, 12 UNIMPLEMENTED, 14 UNAVAILABLE).",
              [query(f"netsentry_grpc_status_code{{{CHECK}}}", table=True)], "short",
              value="code"),
        row("Socket options"),
        state_timeline("Socket audits", "socket checks: 0 = an option did not take effect as "
                       "requested (the option is named on the status page).",
                       query(f'netsentry_check_success{{{CHECK}, kind="socket"}}', "{{check}}"),
                       mapping((0, "finding", "red"), (1, "as requested", "green"))),
        table("Findings", "Requested options that did not take effect (buffers: Linux "
              "doubles them, then clamps them at net.core.rmem_max / wmem_max).",
              [query(f"netsentry_socket_option_satisfied{{{CHECK}}} == 0", table=True)],
              "short", hide=("Value", "kind")),
        table("Requested and effective options", "What each socket check asked for and what "
              "a new socket got (Linux reports buffer sizes doubled).",
              [query(f"netsentry_socket_option_requested{{{CHECK}}}", ref="A", table=True),
               query(f"netsentry_socket_option_value{{{CHECK}}}", ref="B", table=True)],
              "short", merge=("requested", "effective"), hide=("kind",)),
        table("Options once connected", "Options read again after connecting (socket checks "
              "with a target): TCP's autotuning shows in the buffer sizes.",
              [query(f"netsentry_socket_connected_option_value{{{CHECK}}}", table=True)],
              "short", value="value", hide=("kind",)),
        table("Kernel settings", "The sysctls behind the options, as the socket checks read "
              "them from /proc/sys.",
              [query(f"max by (instance, setting) (netsentry_socket_kernel_setting{{{CHECK}}})",
                     table=True)], "short", value="value"),
    ], kinds="tcp|http|socket|grpc|websocket")


def network() -> Json:
    ping = CHECK + ', kind="ping"'
    path = CHECK + ', kind="path"'
    udp = CHECK + ', kind="udp"'
    loss = (f"1 - (increase(netsentry_ping_packets_received_total{{{ping}}}[$__rate_interval])"
            f" / increase(netsentry_ping_packets_sent_total{{{ping}}}[$__rate_interval]))")
    return dashboard("netsentry-network", "netsentry / Network", (
        "ping, path and udp checks: loss and latency to hosts, smokeping-style, the hops on "
        "the way and how they change, and UDP services."), [
        row("Loss and latency (ping)"),
        timeseries("Loss", "Share of the echoes without a reply in time, from the counters; "
                   f"the line is NetsentryPacketLoss's threshold, {LOSS_ALERT:.0%}.",
                   [query(loss, "{{check}}")], "percentunit",
                   thresholds=steps((None, "green"), (LOSS_ALERT, "red"))),
        heatmap("Latency heatmap", "Every echo reply's round trip (the histogram's buckets), "
                "smokeping-style: a band that moves up is a longer path or a queue, a tail "
                "that grows is congestion. Select one check to see its own.",
                "sum by (le) (increase(netsentry_ping_rtt_seconds_bucket"
                f"{{{ping}}}[$__rate_interval]))", "s"),
        timeseries("Round trip", "Shortest, mean and longest round trip of the last run's "
                   "replies.", queries(
                       (f"netsentry_ping_rtt_min_seconds{{{ping}}}", "{{check}} min"),
                       (f"netsentry_ping_rtt_mean_seconds{{{ping}}}", "{{check}} mean"),
                       (f"netsentry_ping_rtt_max_seconds{{{ping}}}", "{{check}} max")), "s"),
        timeseries("Jitter", "Standard deviation of the last run's round trips (ping's mdev).",
                   [query(f"netsentry_ping_rtt_stddev_seconds{{{ping}}}", "{{check}}")], "s"),
        timeseries("Duplicates and ICMP errors", "Echo replies received twice, and ICMP errors "
                   "about the checks' echoes by type (the hop that sent one is on the status "
                   "page).", queries(
                       (f"sum by (check, target) (rate(netsentry_ping_duplicates_total{{{ping}}}"
                        "[$__rate_interval]))", "{{check}} duplicates"),
                       ("sum by (check, target, type) ("
                        f"rate(netsentry_ping_icmp_errors_total{{{ping}}}[$__rate_interval]))",
                        "{{check}} {{type}}")), "pps"),
        timeseries("Reply TTL", "TTL or hop limit of the replies as they arrive: a change "
                   "is a change of the path back.",
                   [query(f"netsentry_ping_reply_ttl{{{ping}}}", "{{check}}")], "short",
                   decimals=0),
        row("Path"),
        timeseries("Hops", "Hops to the destination (its TTL distance) as of the last run.",
                   [query(f"netsentry_path_hops{{{path}}}", "{{check}}")], "short",
                   decimals=0),
        timeseries("Path changes", "Runs whose sequence of answering hops differed from the "
                   "previous run's (NetsentryPathChanged).",
                   [query(f"increase(netsentry_path_changes_total{{{path}}}[$__rate_interval])",
                          "{{check}}")], "short", bars=True, decimals=0),
        state_timeline("Destination reached", "1 = the destination answered a probe.",
                       query(f"netsentry_path_reached{{{path}}}", "{{check}}"),
                       mapping((0, "not reached", "red"), (1, "reached", "green")), width=12),
        timeseries("Round trip by hop", "Median round trip of the answered probes to each "
                   "hop; select one check.",
                   [query(f"netsentry_path_hop_rtt_seconds{{{path}}}", "{{check}} hop {{hop}}")],
                   "s"),
        table("Loss by hop", "Share of the probes to each hop without an answer. Loss at one "
              "hop only, the destination reached, is a router rate-limiting its ICMP.",
              [query(f"netsentry_path_hop_loss_ratio{{{path}}} > 0", table=True)],
              "percentunit", value="loss", sort="loss", hide=("kind",),
              thresholds=steps((None, "green"), (0.01, "orange"), (0.5, "red"))),
        row("UDP"),
        timeseries("UDP response time", "Time from sending the datagram to the reply that "
                   "matched.", [query(f"netsentry_udp_response_seconds{{{udp}}}",
                                      "{{check}}")], "s"),
        timeseries("UDP response size", "Length of the reply that matched.",
                   [query(f"netsentry_udp_response_bytes{{{udp}}}", "{{check}}")], "bytes"),
    ], kinds="ping|path|udp")


DASHBOARDS = {
    "netsentry-overview.json": overview,
    "netsentry-dns.json": dns,
    "netsentry-clock.json": clock,
    "netsentry-paths.json": paths,
    "netsentry-network.json": network,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date, run `python grafana/generate.py`: " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
