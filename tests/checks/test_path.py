"""The path check: loopback first (the destination at hop 1), then real paths through network
namespaces (tests.support.netpath: client → r1 → r2 → target, and r3 to reroute through): the
hops found are exactly the routers and the target, both families and both protocols, as
traceroute and mtr find them; a reroute counts one change; a silent router is a silent hop
while the target is still reached; a router's unreachable and a silent destination fail with
their reasons; names from the namespace's own hosts file; config errors; the probe table."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.checks import path
from exporter.config.load import load_text
from exporter.errors import ConfigError, Reason
from tests.support import netpath
from tests.support.agent import ROOT
from tests.support.checks import counters, gauges, make_check, run_check, run_checks
from tests.support.servers import EchoServer

pytestmark = pytest.mark.timeout(180)
RTT = "netsentry_path_hop_rtt_seconds"
LOSS = "netsentry_path_hop_loss_ratio"
CHANGES = "netsentry_path_changes_total"
_names = itertools.count(1)


def interval() -> None:
    """The pause between two runs (or a run and a tool's): the kernel's global ICMP budget.

    Every probe past the destination reaches it too, and it answers each with an ICMP error
    that draws on its namespace's global budget (net.ipv4.icmp_msgs_burst, 50, refilled at
    icmp_msgs_per_sec, 1000/s, but only once 20 ms have passed: icmp_global_allow). A second
    run within 20 ms of a first one's 84 port unreachables finds it spent and the destination
    silent. Checks run an interval apart; 100 ms refills the budget here.
    """
    time.sleep(0.1)


def hop_addresses(details: Any) -> list[str]:
    """The address of each `hop N` line of a run's details (the first one it names)."""
    lines = dict(details)
    hops = sorted((int(name.split()[1]), text) for name, text in lines.items()
                  if name.startswith("hop "))
    found = []
    for _, text in hops:
        match = re.search(r"\(([0-9a-f.:]+)\)|^([0-9a-f.:]+)", text)
        found.append((match.group(1) or match.group(2)) if match else "*")
    return found


# --- loopback -----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["udp", "icmp"])
@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_loopback_is_reached_at_hop_1(target: str, protocol: str) -> None:
    result = run_check("path", target=target, protocol=protocol, timeout="2s")
    assert result.success, result.message
    got = gauges(result)
    assert got["netsentry_path_hops"] == 1
    assert got["netsentry_path_reached"] == 1
    assert got[f"{LOSS}1"] == 0
    assert 0 < got[f"{RTT}1"] < 2
    assert f"{LOSS}2" not in got  # TTL 2 reached it too: ignored
    assert counters(result)[CHANGES] == 0  # the first run: the series, no change
    details = dict(result.details)
    assert hop_addresses(result.details) == [target]
    assert len(re.findall(r"\d+\.\d{3} ms", details["hop 1"])) == 3
    assert details["path"] == "first run"


def test_probes_per_hop_are_each_answered() -> None:
    result = run_check("path", target="127.0.0.1", probes_per_hop=7, max_hops=2)
    assert result.success, result.message
    assert len(re.findall(r" ms", dict(result.details)["hop 1"])) == 7
    assert gauges(result)["netsentry_path_hops"] == 1  # TTL 2 reached it too: ignored


def test_an_unchanged_path_counts_no_change() -> None:
    memory: dict[str, Any] = {}
    results = run_checks(make_check("path", target="127.0.0.1"), 3, memory=memory)
    assert [counters(r)[CHANGES] for r in results] == [0, 0, 0]
    assert [dict(r.details)["path"] for r in results] == ["first run", "unchanged", "unchanged"]
    assert memory["path"] == {"hops": [["127.0.0.1"]], "reached": True}


def test_an_open_udp_port_answering_is_the_destination_too() -> None:
    with EchoServer(udp=True) as echo:
        result = run_check("path", target="127.0.0.1", port=echo.port, max_hops=1,
                           probes_per_hop=1)
    assert result.success, result.message
    assert gauges(result)["netsentry_path_reached"] == 1
    assert hop_addresses(result.details) == ["127.0.0.1"]


def test_names_with_resolve_hops() -> None:
    # 127.0.0.1 is localhost in /etc/hosts: no DNS server is asked.
    result = run_check("path", target="127.0.0.1", resolve_hops=True, probes_per_hop=1)
    assert dict(result.details)["hop 1"].startswith("localhost (127.0.0.1)  ")


# --- config -------------------------------------------------------------------------------------


def problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text('[[checks]]\nname = "p"\nkind = "path"\n' + body, "path.toml")
    return caught.value.problems


@pytest.mark.parametrize(("body", "expected"), [
    ('target = "127.0.0.1"\nmax_hops = 65\n',
     'path.toml:5: checks[0] "p".max_hops: must be 1 to 64 hops, got 65'),
    ('target = "127.0.0.1"\nmax_hops = 0\n',
     'path.toml:5: checks[0] "p".max_hops: must be 1 to 64 hops, got 0'),
    ('target = "127.0.0.1"\nprobes_per_hop = 0\n',
     'path.toml:5: checks[0] "p".probes_per_hop: must be 1 to 10 probes, got 0'),
    ('target = "127.0.0.1"\nprotocol = "tcp"\n',
     "path.toml:5: checks[0] \"p\".protocol: must be one of 'udp', 'icmp', got 'tcp'"),
    ('target = "127.0.0.1"\nport = 65500\n',
     'path.toml:5: checks[0] "p".port: the probes use ports 65500 to 65589 (one per probe: '
     "max_hops × probes_per_hop), past 65535: lower port to at most 65446"),
    ('target = "127.0.0.1"\nport = 0\n',
     'path.toml:5: checks[0] "p".port: port 0 is out of range 1-65535'),
    ('target = "db.example.org:80"\n',
     "path.toml:4: checks[0] \"p\".target: 'db.example.org:80' is not a host name or an IP "
     "address: a path target has no port or path (write e.g. \"db.example.org\", \"192.0.2.1\" "
     "or \"2001:db8::1\")"),
    ('target = "bad name"\n',
     "path.toml:4: checks[0] \"p\".target: 'bad name' is not a host name or an IP address"),
])
def test_config_errors(body: str, expected: str) -> None:
    assert problems(body) == [expected]


def test_the_defaults() -> None:
    config = load_text('[[checks]]\nname = "p"\nkind = "path"\ntarget = "192.0.2.1"\n', "t")
    settings = config.checks[0].settings
    assert isinstance(settings, path.PathSettings)
    assert (settings.protocol, settings.max_hops, settings.probes_per_hop, settings.port,
            settings.resolve_hops, settings.family) == ("udp", 30, 3, 33434, False, "any")
    # ICMP probes use no port: a high one is no problem.
    load_text('[[checks]]\nname = "p"\nkind = "path"\ntarget = "192.0.2.1"\n'
              'protocol = "icmp"\nport = 65500\n', "t")


def test_probe_prints_a_hop_table() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "probe", "path", "127.0.0.1",
                           "--probes_per_hop", "2", "--timeout", "2s"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    hop = next(line for line in lines if line.startswith("hop 1 "))
    assert re.fullmatch(r"hop 1 +127\.0\.0\.1  \d+\.\d{3} ms  \d+\.\d{3} ms", hop)
    table = lines[lines.index(next(line for line in lines if line.startswith("hop  "))):]
    assert re.fullmatch(r"hop +median rtt +loss", table[0])
    # The median in three significant digits and its unit, the loss a percentage.
    assert re.fullmatch(r"1 +(\d\.\d\d|\d\d\.\d|\d{3}) (ns|µs|ms) +0%", table[1]), table
    assert "path reached  yes" in lines
    assert not any(line.startswith(RTT) or line.startswith(LOSS) for line in lines)
    assert not any(line.startswith(("path hop rtt", "path hop loss")) for line in lines)


# --- through the chain --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> Iterator[netpath.Chain]:
    """A chain the tests below only read (the ones that change routes make their own)."""
    if not netpath.available():
        pytest.fail("the path tests need network namespaces (root)")
    with netpath.Chain() as made:
        yield made


def run_in(chain: netpath.Chain, **options: Any) -> dict[str, Any]:
    interval()
    return netpath.run_check(chain.client, "path", {"timeout": "3s", **options})


@pytest.mark.parametrize("protocol", ["udp", "icmp"])
@pytest.mark.parametrize("family", [4, 6])
def test_the_chain_hops_are_the_routers_and_the_target(chain: netpath.Chain, family: int,
                                                       protocol: str) -> None:
    target = chain.target_address(family)
    result = run_in(chain, target=target, protocol=protocol)
    assert result["success"], result["message"]
    assert hop_addresses(result["details"]) == [*chain.hops(family), target]
    assert netpath.value(result, "netsentry_path_hops") == 3
    assert netpath.value(result, "netsentry_path_reached") == 1
    assert [netpath.value(result, LOSS, hop=str(h)) for h in (1, 2, 3)] == [0, 0, 0]
    assert len(netpath.values(result, RTT)) == 3
    assert netpath.values(result, LOSS, hop="4") == []  # past the destination: not recorded


@pytest.mark.parametrize("family", [4, 6])
def test_traceroute_and_mtr_find_the_same_hops(chain: netpath.Chain, family: int) -> None:
    target = chain.target_address(family)
    ours = hop_addresses(run_in(chain, target=target)["details"])
    interval()
    flag = "-4" if family == 4 else "-6"
    traced = netpath.run(chain.client, ["traceroute", flag, "-n", "-q", "1", target])
    assert traced.returncode == 0, traced.stderr
    interval()
    theirs = [line.split()[1] for line in traced.stdout.splitlines()[1:]]
    mtr = netpath.run(chain.client, ["mtr", flag, "--report", "-n", "-c", "2", target])
    assert mtr.returncode == 0, mtr.stderr
    mtrs = [m.group(1) for line in mtr.stdout.splitlines()
            if (m := re.match(r"\s*\d+\.\|--\s+(\S+)", line))]
    assert ours == theirs == mtrs == [*chain.hops(family), target]


def test_a_reroute_counts_one_change() -> None:
    with netpath.Chain() as chain, netpath.CheckSession(
            chain.client, "path", {"target": chain.target_address(4), "timeout": "3s"}) as s:
        results = []
        for step in range(4):
            if step == 2:
                chain.reroute("r3")
            results.append(s.run())
            interval()
    assert all(r["success"] for r in results), [r["message"] for r in results]
    assert [netpath.value(r, CHANGES, "counters") for r in results] == [0, 0, 1, 0]
    assert [dict(r["details"])["path"] for r in results] == [
        "first run", "unchanged", "changed: hop 2: 10.231.2.2 -> 10.231.4.2", "unchanged"]
    assert hop_addresses(results[-1]["details"]) == ["10.231.1.2", "10.231.4.2", "10.231.9.1"]


@pytest.mark.parametrize("family", [4, 6])
def test_a_silent_router_is_a_silent_hop_and_no_change(family: int) -> None:
    with netpath.Chain() as chain, netpath.CheckSession(
            chain.client, "path", {"target": chain.target_address(family),
                                   "timeout": "3s"}) as s:
        first = s.run()
        interval()
        netpath.silence_icmp(chain.r2)
        silent = s.run()
        interval()
        netpath.unsilence_icmp(chain.r2)
        back = s.run()
    assert first["success"] and silent["success"] and back["success"], silent["message"]
    assert netpath.value(silent, LOSS, hop="2") == 1.0
    assert netpath.values(silent, RTT, hop="2") == []
    assert [netpath.value(silent, LOSS, hop=h) for h in ("1", "3")] == [0, 0]
    assert netpath.value(silent, "netsentry_path_reached") == 1
    assert netpath.value(silent, "netsentry_path_hops") == 3
    assert dict(silent["details"])["hop 2"] == "*  *  *"
    # Unknown is not different: neither the silence nor the hop's return is a change.
    assert [netpath.value(r, CHANGES, "counters") for r in (first, silent, back)] == [0, 0, 0]


def test_a_routers_unreachable_ends_the_path_as_network_error() -> None:
    with netpath.Chain() as chain:
        subprocess.run(["ip", "-n", chain.r2, "route", "replace", "unreachable",
                        chain.target_address(4)], check=True, timeout=10)
        result = run_in(chain, target=chain.target_address(4))
    assert result["reason"] == Reason.NETWORK_ERROR.value
    assert result["message"] == ("hop 2 (10.231.2.2) answered destination unreachable (host "
                                 "unreachable): 10.231.9.1 is unreachable from there")
    assert netpath.value(result, "netsentry_path_hops") == 2
    assert netpath.value(result, "netsentry_path_reached") == 0
    assert dict(result["details"])["hop 2"].startswith("10.231.2.2  ")
    assert dict(result["details"])["hop 2"].endswith(" ms !H")


def test_a_silent_destination_is_a_timeout_after_max_hops() -> None:
    with netpath.Chain() as chain:
        netpath.silence_icmp(chain.target)  # its port unreachables too
        result = run_in(chain, target=chain.target_address(4), max_hops=5, timeout="1s")
    assert result["reason"] == Reason.TIMEOUT.value
    assert result["message"] == ("no answer from 10.231.9.1 within 5 hops; the last hop that "
                                 "answered: 2 (10.231.2.2)")
    assert netpath.value(result, "netsentry_path_reached") == 0
    assert netpath.value(result, "netsentry_path_hops") == 5
    assert [netpath.value(result, LOSS, hop=str(h)) for h in range(1, 6)] == [0, 0, 1, 1, 1]


def test_no_route_is_a_network_error_at_the_send() -> None:
    name = f"path{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        result = netpath.run_check(name, "path", {"target": "10.231.9.1", "timeout": "1s"})
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)
    assert result["reason"] == Reason.NETWORK_ERROR.value
    assert result["message"] == "cannot send to 10.231.9.1: Network is unreachable"


@contextlib.contextmanager
def netns_etc(ns: str, hosts: str) -> Iterator[None]:
    """/etc/netns/NS/hosts (and a resolv.conf naming only the loopback), which `ip netns exec`
    mounts over /etc's for the programs it starts in NS: names that never leave the test."""
    where = Path("/etc/netns") / ns
    where.mkdir(parents=True)
    try:
        (where / "hosts").write_text(hosts)
        (where / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        yield
    finally:
        shutil.rmtree(where)


def test_hop_names_from_the_namespaces_hosts(chain: netpath.Chain) -> None:
    hosts = ("10.231.1.2 r1.chain.test\n10.231.2.2 r2.chain.test\n"
             "10.231.9.1 target.chain.test\n")
    with netns_etc(chain.client, hosts):
        result = run_in(chain, target="target.chain.test", resolve_hops=True,
                        probes_per_hop=1, family="ipv4")
    assert result["success"], result["message"]
    lines = dict(result["details"])
    assert [lines[f"hop {h}"].split("  ")[0] for h in (1, 2, 3)] == [
        "r1.chain.test (10.231.1.2)", "r2.chain.test (10.231.2.2)",
        "target.chain.test (10.231.9.1)"]
    assert lines["address"] == "10.231.9.1"
