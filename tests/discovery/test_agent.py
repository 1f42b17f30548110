"""Discovered targets through a real agent: a file_sd file edited under it, an http_sd server
that answers and fails, a real dnsmasq's SRV records, and two shards splitting one file."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.dnsmasq import Dnsmasq
from tests.support.httpservers import HttpServer, Reply, Request
from tests.support.servers import AcceptServer, closed_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def up() -> Iterator[AcceptServer]:
    with AcceptServer() as server:
        yield server


def config(source: str, extra: str = "") -> str:
    return ('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n\n[[checks]]\nname = "fleet"\n'
            f'kind = "tcp"\n{source}\nlabels = {{ team = "net" }}\n{extra}')


def write(path: Path, groups: object) -> None:
    path.write_text(json.dumps(groups) if not isinstance(groups, str) else groups)
    stat = path.stat()  # a change the poll cannot miss, even within one mtime tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def targets(agent: Agent) -> dict[str, dict[str, str]]:
    """The labels of each target's check_info series, by target."""
    return {dict(labels)["target"]: dict(labels) for name, labels in agent.metrics()
            if name == "netsentry_check_info" and ("check", "fleet") in labels}


def runs(agent: Agent, target: str) -> float:
    return agent.value("netsentry_check_runs_total", check="fleet", kind="tcp", target=target,
                       team="net", zone="a") or 0


def discovery(agent: Agent, metric: str, source: str) -> float | None:
    return agent.value(f"netsentry_discovery_{metric}", check="fleet", source=source)


def test_a_targets_file_is_followed_as_it_changes(tmp_path: Path, up: AcceptServer) -> None:
    (tmp_path / "sd").mkdir()
    dead = f"127.0.0.1:{closed_port()}"
    write(tmp_path / "sd" / "web.json", [{"targets": [up.target, dead], "labels": {
        "zone": "a", "__meta_consul_node": "dropped"}}])
    path = tmp_path / "netsentry.toml"
    path.write_text(config('targets_file = "sd/*.json"'))  # relative to the config file
    source = "file:sd/*.json"
    with AcceptServer() as other, Agent(path) as agent:
        agent.wait_for(lambda: runs(agent, up.target) >= 2 and runs(agent, dead) >= 1,
                       what="both discovered targets to run")
        assert targets(agent)[up.target] == {"check": "fleet", "kind": "tcp", "target": up.target,
                                             "team": "net", "zone": "a"}
        assert agent.value("netsentry_check_success", check="fleet", kind="tcp", target=dead,
                           team="net", zone="a") == 0
        assert discovery(agent, "targets", source) == 2
        assert discovery(agent, "last_refresh_successful", source) == 1
        # Edited: the dead target goes, another comes, the one that stays keeps counting.
        before = runs(agent, up.target)
        write(tmp_path / "sd" / "web.json", [{"targets": [up.target, other.target],
                                              "labels": {"zone": "a"}}])
        agent.wait_for(lambda: runs(agent, other.target) >= 1, what="the new target to run")
        assert set(targets(agent)) == {up.target, other.target}
        assert runs(agent, up.target) >= before
        # A second file that does not parse: its problem is logged once and counted, the
        # targets stay, and the source says it is failing.
        write(tmp_path / "sd" / "broken.json", '[{"targets": ')
        agent.wait_for(lambda: discovery(agent, "last_refresh_successful", source) == 0,
                       what="the broken file to be noticed")
        assert discovery(agent, "refresh_failures_total", source) == 1
        assert set(targets(agent)) == {up.target, other.target}
        assert sum("a targets_file does not parse" in line for line in agent.lines) == 1
        # A group whose labels break the rules is refused, and counted.
        write(tmp_path / "sd" / "broken.json", [{"targets": ["127.0.0.9:1"],
                                                 "labels": {"job": "x"}}])
        agent.wait_for(lambda: discovery(agent, "refused_targets", source) == 1,
                       what="the bad group to be refused")
        assert discovery(agent, "last_refresh_successful", source) == 1
        assert "127.0.0.9:1" not in targets(agent)
        assert any("refused a discovered target" in line and "labels.job" in line
                   for line in agent.lines)


class Answers:
    """What the http_sd server answers, changed by the test."""

    def __init__(self, body: object, status: int = 200) -> None:
        self.lock = threading.Lock()
        self.set(body, status)

    def set(self, body: object, status: int = 200) -> None:
        with self.lock:
            self.reply = Reply(status, json.dumps(body).encode(),
                               (("Content-Type", "application/json"),))

    def __call__(self, request: Request) -> Reply:
        with self.lock:
            return self.reply


def test_a_targets_url_keeps_its_last_good_targets_while_it_fails(tmp_path: Path,
                                                                 up: AcceptServer) -> None:
    answers = Answers([{"targets": [up.target], "labels": {"zone": "a"}}])
    with HttpServer({"/sd": answers}) as cmdb:
        path = tmp_path / "netsentry.toml"
        path.write_text(config(f'targets_url = "{cmdb.url("/sd")}"', 'refresh_interval = "1s"\n'))
        source = f"http:{cmdb.url('/sd')}"
        with Agent(path) as agent:
            agent.wait_for(lambda: runs(agent, up.target) >= 1, what="the target to run")
            assert discovery(agent, "last_refresh_successful", source) == 1
            assert any(r.headers.get("user-agent", "").startswith("netsentry/")
                       for r in cmdb.requests)
            answers.set({"error": "down"}, status=503)
            agent.wait_for(lambda: discovery(agent, "last_refresh_successful", source) == 0,
                           what="the failed refresh")
            assert set(targets(agent)) == {up.target}  # the last good list
            assert any("service discovery failed" in line and "HTTP status 503" in line
                       for line in agent.lines)
            answers.set([{"targets": [], "labels": {}}])
            agent.wait_for(lambda: not targets(agent), what="the empty list to be applied")
            assert discovery(agent, "targets", source) == 0
            assert discovery(agent, "last_refresh_successful", source) == 1


def test_srv_records_of_a_real_dnsmasq(tmp_path: Path, up: AcceptServer) -> None:
    port = up.target.rsplit(":", 1)[1]
    srv = [f"--srv-host=_web._tcp.test,localhost,{port},10,5"]
    with Dnsmasq(extra_args=srv) as dns:
        path = tmp_path / "netsentry.toml"
        path.write_text(config('targets_srv = { name = "_web._tcp.test", server = '
                               f'"127.0.0.1:{dns.port}" }}', 'refresh_interval = "1s"\n'))
        source = "srv:_web._tcp.test"
        with Agent(path) as agent:
            target = f"localhost:{port}"
            agent.wait_for(lambda: agent.value(
                "netsentry_check_success", check="fleet", kind="tcp", target=target,
                team="net") == 1, what="the SRV target to be checked")
            assert discovery(agent, "targets", source) == 1
            dns.stop()  # the nameserver goes away: the target stays
            agent.wait_for(lambda: discovery(agent, "last_refresh_successful", source) == 0,
                           what="the failed refresh")
            assert set(targets(agent)) == {target}


def test_two_shards_split_the_discovered_targets(tmp_path: Path) -> None:
    listed = [f"127.0.0.1:{closed_port()}" for _ in range(40)]
    write(tmp_path / "all.json", [{"targets": listed}])
    path = tmp_path / "netsentry.toml"
    path.write_text(config(f'targets_file = "{tmp_path}/all.json"').replace(
        'interval = "1s"', 'interval = "1h"'))
    source = f"file:{tmp_path}/all.json"
    with Agent(path, "--shard", "0/2") as first, Agent(path, "--shard", "1/2") as second:
        ran = [set(targets(first)), set(targets(second))]
        counts = [discovery(first, "targets", source), discovery(second, "targets", source)]
    assert ran[0] and ran[1] and not ran[0] & ran[1]
    assert ran[0] | ran[1] == set(listed)
    assert counts == [len(ran[0]), len(ran[1])]
