"""Many locations on a real Prometheus: three agents scraped as three locations.

The shipped scrape config for agents in several places (deploy/prometheus/prometheus-locations.yml,
its three target groups and their `location` labels kept, each group's target pointed at one
agent of the test) and the shipped rules, evaluated every second by Debian's Prometheus.

The three agents are processes on this host's loopback, not agents in three networks: what
makes a target fail from one location and not another is the agent's config. Each agent runs
the same checks by the same names and targets; the http check sends a header naming the
agent's location, and the test's HTTP server fails a path for the locations the test chooses
(/shop for us and ap: 2 of 3; /api for ap: 1 of 3). The tcp check, a single-target check
(no target label), points at a listening port from eu and us and at a closed one from ap.
Then, through Prometheus' HTTP API: the recording rules count 3 locations for every check,
2 failing for /shop and 1 for /api and the tcp check; NetsentryCheckFailingFromManyLocations
is pending for /shop and for nothing else (its `for` is 5 minutes: pending is the expression
true), while the per-agent NetsentryCheckFailing is pending for each failing agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bundle.promql import ROOT, RULES
from tests.support.agent import Agent
from tests.support.httpservers import HttpServer, Reply, Request
from tests.support.prometheus import Prometheus
from tests.support.servers import AcceptServer, closed_port

pytestmark = pytest.mark.timeout(120)

SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus-locations.yml"
ALERT = "NetsentryCheckFailingFromManyLocations"
HEADER = "X-Netsentry-Location"
# Path -> the locations the server fails it for.
FAILING = {"/": set(), "/shop": {"us", "ap"}, "/api": {"ap"}}
TCP_FAILING = {"ap"}


def _route(failing: set[str]) -> Any:
    def reply(request: Request) -> Reply:
        if request.headers.get(HEADER.lower()) in failing:
            return Reply(503, b"unavailable from here")
        return Reply(200, b"ok")
    return reply


def _config(location: str, web: HttpServer, tcp_target: str) -> str:
    targets = ", ".join(f'"{web.url(path)}"' for path in FAILING)
    return (
        '[defaults]\ninterval = "1s"\ntimeout = "800ms"\n\n'
        f'[[checks]]\nname = "web"\nkind = "http"\ntargets = [{targets}]\n'
        f'headers = {{ {HEADER} = "{location}" }}\nlabels = {{ team = "web" }}\n\n'
        f'[[checks]]\nname = "db"\nkind = "tcp"\ntarget = "{tcp_target}"\n')


def prometheus_config(agents: dict[str, str]) -> dict[str, Any]:
    """The shipped config, each location's target group pointed at the agent of that
    location, every second; the shipped rules; no Alertmanager."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    del config["alerting"]
    [job] = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    groups = job["static_configs"]
    assert len(groups) == len(agents)
    for group, address in zip(groups, agents.values(), strict=True):
        group["targets"] = [address]
    return config


@dataclass
class Fleet:
    prometheus: Prometheus
    locations: dict[str, str]  # location -> the agent's address (instance)
    short: dict[str, str]  # location -> the test's name of it (FAILING, TCP_FAILING)
    urls: dict[str, str]  # path -> the target of the web check


def _by(prom: Prometheus, expr: str, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in prom.query(expr)}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp: Path = tmp_path_factory.mktemp("locations")
    with ExitStack() as stack:
        web = stack.enter_context(HttpServer({p: _route(f) for p, f in FAILING.items()}))
        listener = stack.enter_context(AcceptServer())
        closed = f"127.0.0.1:{closed_port()}"
        shipped = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"][0]
        names = [group["labels"]["location"] for group in shipped["static_configs"]]
        # The test's own short names stand for the shipped ones, in their order.
        short = dict(zip(names, ("eu", "us", "ap"), strict=True))
        agents: dict[str, str] = {}
        for name in names:
            config = tmp / f"{name}.toml"
            tcp = closed if short[name] in TCP_FAILING else listener.target
            config.write_text(_config(short[name], web, tcp))
            agent = stack.enter_context(Agent(config))
            agents[name] = f"127.0.0.1:{agent.port}"
        prom = stack.enter_context(Prometheus(prometheus_config(agents), tmp / "prom"))
        fleet = Fleet(prom, agents, short, {path: web.url(path) for path in FAILING})
        # Every location reports every target, and the tcp check's failure has arrived.
        prom.wait_for(lambda: _by(prom, 'check:netsentry_check_locations:count{check="web"}',
                                  "target") == dict.fromkeys(fleet.urls.values(), 3.0),
                      "three locations for every target of the web check", timeout=45)
        prom.wait_for(lambda: _by(prom, "check:netsentry_check_locations_failing:count",
                                  "check").get("db") == 1.0, "the tcp check failing", timeout=20)
        yield fleet


def test_the_agents_are_scraped_with_their_locations(fleet: Fleet) -> None:
    up = {s["metric"]["location"]: s["metric"]["instance"]
          for s in fleet.prometheus.query('up{job="netsentry"} == 1')}
    assert up == fleet.locations
    # Every series of an agent carries its location; none lacks one.
    assert not fleet.prometheus.query("netsentry_check_success unless "
                                      "netsentry_check_success{location!=''}")


def test_the_recording_rules_count_the_failing_locations(fleet: Fleet) -> None:
    prom = fleet.prometheus
    expected = {fleet.urls[p]: float(len(f)) for p, f in FAILING.items()}
    prom.wait_for(lambda: _by(prom, 'check:netsentry_check_locations_failing:count{check="web"}',
                              "target") == expected, "the failing locations of each target")
    # The check's own labels and kind stay; the agent's instance goes.
    [shop] = prom.query(
        f'check:netsentry_check_locations_failing:count{{target="{fleet.urls["/shop"]}"}}')
    assert shop["metric"] == {"__name__": "check:netsentry_check_locations_failing:count",
                              "job": "netsentry", "check": "web", "kind": "http",
                              "target": fleet.urls["/shop"], "team": "web"}
    # The single-target check: no target label, counted the same way.
    assert _by(prom, 'check:netsentry_check_locations_failing:count{check="db"}', "target") \
        == {"": 1.0}
    assert _by(prom, 'check:netsentry_check_locations:count{check="db"}', "target") == {"": 3.0}
    # Per location, the share of its agents (one each) that succeed.
    by_location = _by(prom, 'location:netsentry_check_success:mean'
                            f'{{target="{fleet.urls["/shop"]}"}}', "location")
    assert by_location == {n: 0.0 if fleet.short[n] in FAILING["/shop"] else 1.0
                           for n in fleet.locations}


def test_only_the_widespread_failure_raises_the_many_locations_alert(fleet: Fleet) -> None:
    prom = fleet.prometheus

    def mine() -> list[dict[str, Any]]:
        return [a for a in prom.alerts() if a["labels"]["alertname"] == ALERT]

    prom.wait_for(mine, f"{ALERT} to go pending")
    [alert] = mine()
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"] == {"alertname": ALERT, "severity": "critical", "job": "netsentry",
                               "check": "web", "kind": "http", "target": fleet.urls["/shop"],
                               "team": "web"}
    assert float(alert["value"]) == 2.0
    # Not the 1-of-3 failures, at any evaluation since they began: ALERTS keeps a series
    # for every evaluation an alert was pending or firing.
    seen = prom.query(f'max_over_time(ALERTS{{alertname="{ALERT}"}}[1m])')
    assert {(s["metric"]["check"], s["metric"].get("target", "")) for s in seen} \
        == {("web", fleet.urls["/shop"])}
    # Those are the per-agent alert's: one for each agent that fails a check (its rule
    # group evaluates at its own offset within the second: wait for it).
    expected = {("web", fleet.urls[p], n) for p, f in FAILING.items()
                for n in fleet.locations if fleet.short[n] in f}
    expected |= {("db", "", n) for n in fleet.locations if fleet.short[n] in TCP_FAILING}

    def per_agent() -> set[tuple[str, str, str]]:
        return {(a["labels"]["check"], a["labels"].get("target", ""), a["labels"]["location"])
                for a in prom.alerts() if a["labels"]["alertname"] == "NetsentryCheckFailing"}

    prom.wait_for(lambda: per_agent() >= expected, "the per-agent alerts", timeout=10)
    assert per_agent() == expected
