"""The monitoring bundle against a real Prometheus scraping a real agent.

One scenario for the whole module: real servers on loopback (dnsmasq, HTTP and TLS servers,
an accept-and-close listener, fake DNS and NTP servers for what real ones will not do on
demand), an agent subprocess with healthy and failing checks of every registered kind, and
Debian's Prometheus with the shipped scrape config (deploy/prometheus/prometheus.yml, its
netsentry job pointed at the agent and at a port where nothing listens) and the shipped rules.
During the scenario a name the agent resolved disappears (dnsmasq reloads its hosts file) and
a config reload fails. Then every PromQL expression of the dashboards and rule files is
evaluated through Prometheus's HTTP API: each must parse and return data, or be listed in
MAY_BE_EMPTY with the reason; and the failing checks must have put the DNS, clock and TLS
alerts in the pending state.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import metrics
from exporter.checks import KINDS
from tests.bundle.promql import ROOT, RULES, Expression, expressions, metric_names, selectors
from tests.support.agent import Agent
from tests.support.certs import make_cert, make_expired_cert, server_context
from tests.support.chronyd import Chronyd
from tests.support.dnsmasq import Dnsmasq
from tests.support.fakedns import FakeDns
from tests.support.fakentp import FakeNtp
from tests.support.httpservers import HttpServer, Reply
from tests.support.prometheus import Prometheus, PromQLError
from tests.support.servers import AcceptServer, EchoServer, LineServer, closed_port
from tests.support.wsservers import echo_server

pytestmark = pytest.mark.timeout(240)

SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# Expressions that may return nothing in this scenario, and why. Anything else must return data.
MAY_BE_EMPTY = {
    "netsentry.rules.yml: alert NetsentryCheckStale":
        "every check runs every second or every 15 s: none goes three intervals without a run",
    "netsentry.rules.yml: alert NetsentryAgentAbsent": "the agent is being scraped",
    "netsentry.rules.yml: alert NetsentrySchedulerLagging":
        "runs start well within 0.5 s of their time on an agent with a few dozen checks",
    "netsentry.rules.yml: alert NetsentrySchedulerMissedRuns":
        "no run misses its grace time on an agent with a few dozen checks",
    "netsentry.rules.yml: alert NetsentryClockStepped": "the wall clock does not step meanwhile",
    "netsentry.rules.yml: alert NetsentryWebConfigReloadFailed":
        "the agent runs without --web.config.file, so the gauge is absent",
    "netsentry-overview.json: Config reloads [B]":
        "the agent runs without --web.config.file, so the gauge is absent",
    "netsentry.rules.yml: alert NetsentryClockNotSynchronised":
        "empty where this host's kernel clock is synchronised (in gVisor it never is)",
    "netsentry-clock.json: TAI offset [A]":
        "the kernel's TAI offset is absent until a time daemon sets it",
    "netsentry.rules.yml: alert NetsentryLatencyHigh":
        "its baseline is the day before, an hour ago: a Prometheus started by the test has none",
    "netsentry.rules.yml: alert NetsentryCheckFailingFromManyLocations":
        "one agent is one location; tests/bundle/test_locations.py scrapes three",
    "netsentry.rules.yml: alert NetsentryPathChanged":
        "a path over loopback never changes; tests/checks/test_path.py reroutes a real one",
}
# Metrics a selector may find no series of, and why.
MAY_BE_ABSENT = {
    "netsentry_web_config_last_reload_successful":
        "exported with --web.config.file only, which this scenario does not use",
    "netsentry_clock_tai_offset_seconds":
        "the kernel's TAI offset is unset (0) unless a time daemon set it: absent, not 0",
}
# Alerts whose state depends on the machine more than on the scenario.
MACHINE_DEPENDENT = {"NetsentrySchedulerLagging", "NetsentrySchedulerMissedRuns",
                     "NetsentryClockStepped"}


# --- the scenario -------------------------------------------------------------------------------


class Servers:
    """Everything the checks talk to, started on loopback; each stops with `stack`.
    `hosts_file` is dnsmasq's, rewritten by the test."""

    def __init__(self, tmp: Path, stack: ExitStack) -> None:
        self.stack = stack
        self.hosts_file = tmp / "dnsmasq.hosts"
        self.hosts_file.write_text("127.0.0.11 vanishing.test\n")
        self.breaking_file = tmp / "breaking.json"  # a targets_file, broken by the test
        self.dnsmasq = stack.enter_context(Dnsmasq(
            a={"ok.test": ["127.0.0.10"], "localhost": ["127.0.0.9"]},
            extra_args=[f"--addn-hosts={self.hosts_file}"]))
        self.silent_dns = stack.enter_context(FakeDns("silent"))
        self.spoofed_dns = stack.enter_context(FakeDns("wrong_id_first"))
        self.listener = stack.enter_context(AcceptServer())
        cert = make_cert(tmp, "svc.test")
        self.tls_ca = cert.ca
        self.tls = stack.enter_context(LineServer([], server_context(cert), tls=True))
        self.web = stack.enter_context(
            HttpServer({"/": Reply(200, b"ok"), "/broken": Reply(500, b"broken")}))
        self.expired_web = stack.enter_context(HttpServer(
            {"/": Reply(200, b"ok")}, tls=server_context(make_expired_cert(tmp, "web.test"))))
        self._chronyd: Chronyd | None = None

    @property
    def chronyd(self) -> str:
        """A real NTP server (chronyd serving this host's clock), started when first asked."""
        if self._chronyd is None:
            self._chronyd = self.stack.enter_context(Chronyd(stratum=3))
        return self._chronyd.address

    def ntp_server(self, behaviour: str = "answer", **options: Any) -> str:
        """A fake NTP server for what chronyd will not do on demand."""
        return self.stack.enter_context(FakeNtp(behaviour, **options)).address


Check = dict[str, Any]


def dns_checks(s: Servers) -> list[Check]:
    nameserver = s.dnsmasq.address
    return [
        {"name": "dns-ok", "target": "ok.test", "server": nameserver},
        {"name": "dns-system", "target": "localhost"},  # getaddrinfo: /etc/hosts
        # resolves now; its record is removed during the scenario: NXDOMAIN
        {"name": "dns-vanishing", "target": "vanishing.test", "server": nameserver},
        # dnsmasq says 127.0.0.9, /etc/hosts 127.0.0.1
        {"name": "dns-mismatch", "target": "localhost", "server": nameserver,
         "compare_with_system": True},
        {"name": "dns-silent", "target": "ok.test", "server": s.silent_dns.address},
        {"name": "dns-spoofed", "target": "spoofed.test", "server": s.spoofed_dns.address},
    ]


def tcp_checks(s: Servers) -> list[Check]:
    # Discovered targets: a file_sd file with a good group and a refused target, and one that
    # the scenario breaks after the first runs.
    discovered = s.hosts_file.parent / "fleet.json"
    discovered.write_text(json.dumps([
        {"targets": [s.listener.target], "labels": {"team": "edge"}},
        {"targets": ["no-port"]}]))
    s.breaking_file.write_text(json.dumps([{"targets": [s.listener.target]}]))
    return [
        {"name": "tcp-ok", "target": s.listener.target},
        # a target list: every series carries the target; one of them is refused
        {"name": "tcp-fleet", "targets": [s.listener.target, f"127.0.0.1:{closed_port()}"]},
        {"name": "tcp-discovered", "targets_file": str(discovered)},
        {"name": "tcp-breaking", "targets_file": str(s.breaking_file)},
        {"name": "tcp-refused", "target": f"127.0.0.1:{closed_port()}"},
        # make_cert's certificates are valid for 2 days: expiring soon
        {"name": "tcp-tls", "target": s.tls.target, "tls": True, "server_name": "svc.test",
         "ca_file": str(s.tls_ca)},
    ]


def http_checks(s: Servers) -> list[Check]:
    return [
        {"name": "http-ok", "target": s.web.url("/")},
        {"name": "http-bad-status", "target": s.web.url("/broken")},
        # expired yesterday; not verified, so the run succeeds and exports the expiry
        {"name": "https-expired", "target": s.expired_web.url("/"),
         "tls_insecure_skip_verify": True},
    ]


def socket_checks(s: Servers) -> list[Check]:
    return [
        {"name": "socket-defaults"},
        # far above net.core.rmem_max: the kernel clamps it, a finding
        {"name": "socket-clamped", "options": {"SO_RCVBUF": 1 << 29}},
        {"name": "socket-connected", "target": s.listener.target,
         "options": {"TCP_NODELAY": 1, "SO_KEEPALIVE": 1}},
    ]


def ntp_checks(s: Servers) -> list[Check]:
    slow = {"interval": "15s", "timeout": "3s"}  # RFC 4330: no more often than every 15 s
    return [{**slow, **check} for check in (
        {"name": "ntp-ok", "target": s.chronyd},
        {"name": "ntp-skewed", "target": s.ntp_server(offset=0.5)},
        {"name": "ntp-kod", "target": s.ntp_server("kiss", code="DENY")},
        {"name": "ntp-silent", "target": s.ntp_server("silent")},
        {"name": "ntp-leap3", "target": s.ntp_server("leap3")},
        # one of three an hour off: a falseticker, the check still succeeds. Fakes with a
        # root dispersion of 50 ms, so that a busy machine's scheduling noise in their
        # offsets stays inside their intervals (a loopback chronyd's root distance is a few
        # µs: beside it, 0.1 ms of noise is already a disagreement to RFC 5905's selection).
        {"name": "ntp-pool", "servers": [s.ntp_server(offset=0.0002, root_dispersion=0.05),
                                         s.ntp_server(offset=-0.0001, root_dispersion=0.05),
                                         s.ntp_server(offset=3600.0, root_dispersion=0.05)]},
        # two that disagree: no majority
        {"name": "ntp-split", "servers": [s.chronyd, s.ntp_server(offset=3600.0)]},
    )]


def clock_checks(s: Servers) -> list[Check]:
    return [{"name": "clock"}]


def udp_checks(s: Servers) -> list[Check]:
    echo = s.stack.enter_context(EchoServer(udp=True))
    silent = s.stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    silent.bind(("127.0.0.1", 0))  # bound, never answers
    return [
        {"name": "udp-ok", "target": echo.target, "send": "ping", "expect": "^ping$"},
        {"name": "udp-refused", "target": f"127.0.0.1:{closed_port()}", "send": "ping"},
        {"name": "udp-silent", "target": f"127.0.0.1:{silent.getsockname()[1]}", "count": 2},
    ]


def ping_checks(s: Servers) -> list[Check]:
    return [
        {"name": "ping-ok", "target": "127.0.0.1", "count": 1},
        {"name": "ping-v6", "target": "::1", "count": 3, "spacing": "100ms"},
        # Loopback answers every echo; but 65527 bytes with their headers are more than its
        # 65536-byte MTU in IPv6, and dont_fragment keeps them whole: every echo is lost with
        # an error (packet_too_big), and the run fails as packet_loss.
        {"name": "ping-too-big", "target": "::1", "family": "ipv6", "size": 65527,
         "dont_fragment": True, "count": 2, "spacing": "100ms"},
    ]


def path_checks(s: Servers) -> list[Check]:
    silent = s.stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    silent.bind(("127.0.0.1", 0))  # bound, never answers: no port unreachable either
    return [
        {"name": "path-ok", "target": "127.0.0.1"},
        {"name": "path-v6", "target": "::1", "protocol": "icmp", "probes_per_hop": 1},
        # Its one probe reaches the silent port: loss 1 at hop 1, and the run is a timeout.
        {"name": "path-silent", "target": "127.0.0.1", "port": silent.getsockname()[1],
         "max_hops": 1, "probes_per_hop": 1},
    ]


def websocket_checks(s: Servers) -> list[Check]:
    port = s.stack.enter_context(echo_server())
    cert = make_cert(s.hosts_file.parent, "ws.test")
    tls_port = s.stack.enter_context(echo_server(server_context(cert)))
    return [
        {"name": "websocket-ok", "target": f"ws://127.0.0.1:{port}/", "send": "ping",
         "expect": "^ping$"},
        {"name": "websocket-tls", "target": f"wss://127.0.0.1:{tls_port}/",
         "server_name": "ws.test", "ca_file": str(cert.ca)},
        # A plain HTTP server answers the upgrade with 200: bad_status.
        {"name": "websocket-refused", "target": f"ws://127.0.0.1:{s.web.port}/"},
    ]


def grpc_checks(s: Servers) -> list[Check]:
    from grpc_health.v1 import health_pb2

    from tests.checks.test_grpc import Health

    server = Health()  # grpcio's health service, in this process
    s.stack.callback(server.stop)
    server.set("", health_pb2.HealthCheckResponse.SERVING)
    server.set("down.Service", health_pb2.HealthCheckResponse.NOT_SERVING)
    return [
        {"name": "grpc-ok", "target": server.target},
        {"name": "grpc-not-serving", "target": server.target, "service": "down.Service"},
    ]


# The scenario's checks by kind. A kind registered in exporter.checks without an entry here
# fails test_the_scenario_covers_every_registered_kind.
SCENARIO: dict[str, Callable[[Servers], list[Check]]] = {
    "dns": dns_checks, "tcp": tcp_checks, "http": http_checks, "socket": socket_checks,
    "ntp": ntp_checks, "clock": clock_checks, "udp": udp_checks, "ping": ping_checks,
    "path": path_checks, "websocket": websocket_checks, "grpc": grpc_checks,
}
# Alert → the checks it must be pending (or firing) for; dropped for unregistered kinds.
EXPECTED_ALERTS = {
    "NetsentryDnsCheckFailing": {"dns-vanishing", "dns-silent"},
    "NetsentryDnsNxdomain": {"dns-vanishing"},
    "NetsentryDnsResolverMismatch": {"dns-mismatch"},
    "NetsentryCheckFailing": {"tcp-refused", "tcp-fleet", "http-bad-status", "socket-clamped",
                              "udp-refused", "udp-silent", "ping-too-big", "path-silent",
                              "websocket-refused", "grpc-not-serving"},
    "NetsentryCertificateExpiringSoon": {"tcp-tls", "websocket-tls"},
    "NetsentryCertificateExpired": {"https-expired"},
    "NetsentryClockOffsetHigh": {"ntp-skewed"},
    "NetsentryNtpServerUnreachable": {"ntp-silent"},
    "NetsentryNtpKissOfDeath": {"ntp-kod"},
    "NetsentryNtpServerUnsynchronised": {"ntp-leap3"},
    "NetsentryNtpFalseticker": {"ntp-pool"},
    "NetsentryNtpCheckFailing": {"ntp-split"},
    "NetsentryPacketLoss": {"ping-too-big"},
    "NetsentryDiscoveryRefusedTargets": {"tcp-discovered"},
    "NetsentryDiscoveryFailing": {"tcp-breaking"},
}


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    assert isinstance(value, dict)
    return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"


def config_text(checks: list[Check]) -> str:
    lines = ['[defaults]', 'interval = "1s"', 'timeout = "800ms"']
    for check in checks:
        lines += ["", "[[checks]]"] + [f"{key} = {toml(value)}" for key, value in check.items()]
    return "\n".join(lines) + "\n"


def prometheus_config(agent: str, dead: str) -> dict[str, Any]:
    """The shipped scrape config, its netsentry job pointed at the test's targets (its
    target group's labels kept: the location), every second; the shipped rules; no
    Alertmanager."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    del config["alerting"]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "netsentry"]
    job["scrape_timeout"] = "1s"
    [group] = job["static_configs"]
    job["static_configs"] = [{**group, "targets": [agent, dead]}]
    return config


@dataclass
class Scenario:
    prometheus: Prometheus
    agent: Agent
    checks: list[Check]
    kinds: dict[str, str]  # check name -> kind
    dead_target: str
    active_alerts: list[dict[str, Any]]


def _series(prom: Prometheus, expr: str) -> dict[str, float]:
    return {s["metric"].get("check", ""): float(s["value"][1]) for s in prom.query(expr)}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("bundle")
    with ExitStack() as stack:
        servers = Servers(tmp, stack)
        checks = [{**check, "kind": kind} for kind, build in SCENARIO.items() if kind in KINDS
                  for check in build(servers)]
        config_file = tmp / "netsentry.toml"
        config_file.write_text(config_text(checks))
        agent = stack.enter_context(Agent(config_file))
        dead = f"127.0.0.1:{closed_port()}"
        prom = stack.enter_context(
            Prometheus(prometheus_config(f"127.0.0.1:{agent.port}", dead), tmp / "prom"))
        names = {c["name"] for c in checks}
        prom.wait_for(lambda: set(_series(prom, "netsentry_check_last_run_timestamp_seconds"))
                      >= names, "a run of every check in Prometheus", timeout=60)
        assert _series(prom, "netsentry_check_success")["dns-vanishing"] == 1

        # The name that resolved disappears: dnsmasq rereads its hosts file on SIGHUP.
        servers.hosts_file.write_text("")
        assert servers.dnsmasq.proc is not None
        servers.dnsmasq.proc.send_signal(signal.SIGHUP)
        # A targets_file stops parsing: its last good targets keep running.
        servers.breaking_file.write_text('[{"targets": ')
        # A good reload (the annotation of config reloads), then a bad one.
        assert agent.request("POST", "/-/reload")[0] == 200
        time.sleep(1.5)  # a scrape between the two
        config_file.write_text(config_file.read_text() + "\n[[checks]]\nname = 1\n")
        assert agent.request("POST", "/-/reload")[0] == 500

        prom.wait_for(lambda: _series(prom, 'netsentry_check_failures_total{reason="nxdomain"}'
                                      ).get("dns-vanishing", 0) > 0, "NXDOMAIN in Prometheus")
        kinds = {c["name"]: c["kind"] for c in checks}
        expected = {alert for alert, expected_checks in EXPECTED_ALERTS.items()
                    if any(c in kinds for c in expected_checks)}
        expected |= {"NetsentryAgentDown", "NetsentryConfigReloadFailed"}

        def missing() -> set[str]:
            return expected - {a["labels"]["alertname"] for a in prom.alerts()}

        try:
            prom.wait_for(lambda: not missing(), "the alerts to go pending", timeout=45)
        except AssertionError:
            failing = _series(prom, "netsentry_check_success == 0")
            raise AssertionError(f"never pending: {sorted(missing())}; failing checks: "
                                 f"{sorted(failing)}; agent log:\n" + "\n".join(agent.lines)
                                 ) from None
        yield Scenario(prom, agent, checks, kinds, dead, prom.alerts())


# --- the tests ----------------------------------------------------------------------------------


def test_the_scenario_covers_every_registered_kind(scenario: Scenario) -> None:
    assert set(KINDS) <= set(SCENARIO), "give the new kind healthy and failing checks here"
    assert set(scenario.kinds.values()) == set(KINDS)


def _only_unregistered(expression: Expression) -> bool:
    """Whether the expression needs a metric only kinds that are not registered produce."""
    produced = {spec.name for kind in KINDS.values() for spec in kind.specs}
    own = metrics.CHECK_SPECS + metrics.AGENT_SPECS + metrics.PROBE_SPECS
    kind_metrics = {value.name for value in vars(metrics).values()
                    if isinstance(value, metrics.Spec) and value not in own}
    return any(name in kind_metrics and name not in produced
               for name in metric_names(expression.expr))


def test_every_expression_parses_and_returns_data(scenario: Scenario) -> None:
    prom = scenario.prometheus
    all_expressions = expressions()
    assert len(all_expressions) > 80  # the scanner found the dashboards and the rules
    refused, empty, no_label = [], [], []
    for expression in all_expressions:
        try:
            result = prom.query(expression.promql)
        except PromQLError as exc:
            refused.append(f"{expression.where}: {exc}\n    {expression.promql}")
            continue
        if not result:
            if expression.where not in MAY_BE_EMPTY and not _only_unregistered(expression):
                empty.append(f"{expression.where}\n    {expression.promql}")
        elif expression.label and not any(expression.label in s["metric"] for s in result):
            no_label.append(f"{expression.where}: no {expression.label} label")
    assert not refused, "Prometheus refused:\n" + "\n".join(refused)
    assert not empty, "no data from:\n" + "\n".join(empty)
    assert not no_label, "\n".join(no_label)
    # The table names real expressions only.
    assert set(MAY_BE_EMPTY) <= {e.where for e in all_expressions}


def test_every_selector_selects_series(scenario: Scenario) -> None:
    """Finer than whole expressions: each metric selector, with its label matchers, matches
    series, so an alert that is empty here is empty because of its threshold alone."""
    prom = scenario.prometheus
    seen: dict[str, bool] = {}
    for expression in expressions():
        for selector in selectors(expression):
            if selector not in seen:
                seen[selector] = bool(prom.query(f"count({selector})"))
    missing = [s for s, found in seen.items() if not found and not any(
        s.startswith(name) for name in MAY_BE_ABSENT)]
    assert len(seen) > 50
    assert not missing, "selectors matching no series:\n" + "\n".join(sorted(missing))


def test_failing_checks_make_the_alerts_pending(scenario: Scenario) -> None:
    by_alert: dict[str, set[str]] = {}
    for alert in scenario.active_alerts:
        labels = alert["labels"]
        assert alert["state"] in ("pending", "firing")
        by_alert.setdefault(labels["alertname"], set()).add(
            labels.get("check") or labels.get("instance", ""))
    expected = {alert: {c for c in checks if c in scenario.kinds}
                for alert, checks in EXPECTED_ALERTS.items()}
    expected = {alert: checks for alert, checks in expected.items() if checks}
    expected["NetsentryAgentDown"] = {scenario.dead_target}
    expected["NetsentryConfigReloadFailed"] = {f"127.0.0.1:{scenario.agent.port}"}
    synchronized = scenario.prometheus.query('netsentry_clock_synchronized{check="clock"}')
    if synchronized and float(synchronized[0]["value"][1]) == 0:
        expected["NetsentryClockNotSynchronised"] = {"clock"}
    for name in MACHINE_DEPENDENT:
        by_alert.pop(name, None)
    assert by_alert == expected
    # Every alert with a check label names the check's kind correctly.
    for alert in scenario.active_alerts:
        labels = alert["labels"]
        if "check" in labels and not labels["alertname"].startswith("NetsentryDiscovery"):
            assert labels["kind"] == scenario.kinds[labels["check"]], labels
