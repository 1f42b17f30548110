"""The ping check: real echoes over loopback (raw sockets here, as root; unprivileged ping
sockets and no socket at all inside namespaces of the test's own), exact counts, the
statistics against their definitions, a hostile peer whose every trick is counted where it
belongs, ICMP errors from a real router, its config errors, check-config's warning and the
probe command."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from exporter import app
from exporter.checks import KINDS, ping
from exporter.config.load import load_text
from exporter.errors import ConfigError, Reason
from exporter.net import icmp as net_icmp
from exporter.store import Result
from tests.support import netpath
from tests.support.agent import ROOT
from tests.support.checks import counters, gauges, run_check

pytestmark = pytest.mark.timeout(120)
FAKE = ROOT / "tests" / "support" / "fakeping.py"
NO_RAW = ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"]
OPEN_RANGE = {"net.ipv4.ping_group_range": "0 2147483647"}
CLOSED_RANGE = {"net.ipv4.ping_group_range": "1 0"}
_names = itertools.count(1)


def rtts(result: Result) -> list[float]:
    return [value for (spec, _), value in zip(result.observed, result.samples, strict=True)
            if spec.name == "netsentry_ping_rtt_seconds"]


# --- loopback, raw sockets (root) -----------------------------------------------------------


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_loopback_counts_and_statistics(target: str) -> None:
    result = run_check("ping", target=target, count=7, spacing="20ms", timeout="2s")
    assert result.success, result.message
    got, counted = gauges(result), counters(result)
    assert counted["netsentry_ping_packets_sent_total"] == 7
    assert counted["netsentry_ping_packets_received_total"] == 7
    assert counted["netsentry_ping_duplicates_total"] == 0
    assert not any(name.startswith("netsentry_ping_icmp_errors_total") for name in counted)
    assert got["netsentry_ping_loss_ratio"] == 0
    samples = rtts(result)
    assert len(samples) == 7
    assert got["netsentry_ping_rtt_min_seconds"] == min(samples) > 0
    assert got["netsentry_ping_rtt_max_seconds"] == max(samples) < 1
    assert got["netsentry_ping_rtt_mean_seconds"] == pytest.approx(statistics.fmean(samples))
    # ping's mdev is the population's deviation: sqrt(mean of squares - square of mean).
    mdev = math.sqrt(sum(s * s for s in samples) / 7 - (sum(samples) / 7) ** 2)
    assert got["netsentry_ping_rtt_stddev_seconds"] == pytest.approx(mdev, rel=1e-6, abs=1e-12)
    assert got["netsentry_ping_reply_ttl"] == 64
    details = dict(result.details)
    assert details["address"] == target
    assert details["socket"].startswith("raw (CAP_NET_RAW)")
    assert details["ping"] == "7 packets transmitted, 7 received, 0% packet loss"


def test_ttl_size_and_dont_fragment_on_loopback() -> None:
    result = run_check("ping", target="127.0.0.1", count=2, spacing="10ms", size=8000, ttl=3,
                       dont_fragment=True, timeout="2s")
    assert result.success, result.message
    assert counters(result)["netsentry_ping_packets_received_total"] == 2
    # Too big for loopback's 65536-byte MTU is impossible for IPv4; the largest payload goes.
    largest = run_check("ping", target="127.0.0.1", count=1, size=65507, timeout="2s")
    assert largest.success, largest.message


def test_a_name_is_resolved_and_timed() -> None:
    result = run_check("ping", target="localhost", family="ipv4", count=1, timeout="2s")
    assert result.success, result.message
    assert dict(result.details)["address"] == "127.0.0.1"
    assert 0 <= gauges(result)["netsentry_dns_lookup_seconds"] < 2


# --- namespaces: ping sockets, no socket, a hostile peer, a router --------------------------


@contextlib.contextmanager
def namespace(sysctls: dict[str, object], *devices: str) -> Iterator[str]:
    """A network namespace of the test's own with its loopback up and `sysctls` set."""
    name = f"ping{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        netpath.sysctl(name, sysctls)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)


def run_inside(ns: str, options: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """One ping check run in `ns` (after `prefix`, e.g. setpriv), as tests.support.netpath
    runs checks: its result as data."""
    request = json.dumps({"kind": "ping", "options": options}) + "\n" + json.dumps(
        {"run": True}) + "\n"
    proc = netpath.run(ns, [*prefix, sys.executable, "-m", "tests.support.netpath_run"],
                       timeout=60, input=request)
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout.splitlines()[0])
    return answer


def counted(result: dict[str, Any], metric: str, **labels: str) -> float:
    return sum(netpath.values(result, metric, "counters", **labels))


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_unprivileged_ping_sockets(target: str) -> None:
    # Without CAP_NET_RAW, so that only the ping socket can work.
    with namespace(OPEN_RANGE) as ns:
        result = run_inside(ns, {"target": target, "count": 4, "spacing": "10ms",
                                 "timeout": "2s"}, tuple(NO_RAW))
    assert result["success"], result["message"]
    details = dict(result["details"])
    assert details["socket"].startswith("datagram (ping_group_range)")
    assert counted(result, "netsentry_ping_packets_sent_total") == 4
    assert counted(result, "netsentry_ping_packets_received_total") == 4
    assert len(netpath.values(result, "netsentry_ping_rtt_seconds", "histograms")) == 4
    assert netpath.value(result, "netsentry_ping_reply_ttl") == 64


def test_neither_socket_fails_with_the_fix_and_check_config_says_so(tmp_path: Any) -> None:
    with namespace(CLOSED_RANGE) as ns:
        result = run_inside(ns, {"target": "127.0.0.1", "count": 1}, tuple(NO_RAW))
        config = tmp_path / "ping.toml"
        config.write_text('[[checks]]\nname = "p"\nkind = "ping"\ntarget = "127.0.0.1"\n')
        proc = netpath.run(ns, [*NO_RAW, sys.executable, "-m", "exporter", "check-config",
                                str(config)])
        # With the capability, in the same namespace, the raw socket is used instead.
        raw = run_inside(ns, {"target": "127.0.0.1", "count": 1})
    assert (result["success"], result["reason"]) == (False, "network_error")
    assert result["message"] == net_icmp.FIX
    assert 'sysctl -w net.ipv4.ping_group_range="0 2147483647"' in net_icmp.FIX
    assert "AmbientCapabilities=CAP_NET_RAW" in net_icmp.FIX
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"warning: ping checks cannot run here: {net_icmp.FIX}"]
    assert raw["success"], raw["message"]
    assert dict(raw["details"])["socket"].startswith("raw")


def test_check_config_is_quiet_where_ping_works(tmp_path: Any) -> None:
    config = tmp_path / "ping.toml"
    config.write_text('[[checks]]\nname = "p"\nkind = "ping"\ntarget = "127.0.0.1"\n')
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert ping.host_problem() is None


@pytest.mark.parametrize("privileged", [True, False], ids=["raw", "ping-socket"])
def test_a_hostile_peer_is_never_taken_for_a_reply(privileged: bool) -> None:
    """tests/support/fakeping.py answers each echo index with one kind of trouble."""
    sysctls = {"net.ipv4.icmp_echo_ignore_all": 1, **(CLOSED_RANGE if privileged
                                                       else OPEN_RANGE)}
    with namespace(sysctls) as ns:
        fake = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(FAKE), "30"],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
            options = {"target": "127.0.0.1", "count": 6, "spacing": "100ms",
                       "timeout": "2s"}
            result = run_inside(ns, options, () if privileged else tuple(NO_RAW))
            strict = run_inside(ns, {**options, "max_loss": 0.4},
                                () if privileged else tuple(NO_RAW))
        finally:
            netpath.stop(fake)
    details = dict(result["details"])
    assert details["socket"].startswith("raw" if privileged else "datagram"), details
    assert result["success"], result["message"]  # max_loss 1.0: half lost is no failure
    assert counted(result, "netsentry_ping_packets_sent_total") == 6
    # Echoes 1, 2 and 3 had their real reply in time; 0 late, 4 after an error, 5 none.
    assert counted(result, "netsentry_ping_packets_received_total") == 3
    assert netpath.value(result, "netsentry_ping_loss_ratio") == 0.5
    assert len(netpath.values(result, "netsentry_ping_rtt_seconds", "histograms")) == 3
    assert counted(result, "netsentry_ping_duplicates_total") == 1
    assert counted(result, "netsentry_ping_icmp_errors_total", type="time_exceeded") == 1
    assert counted(result, "netsentry_ping_ignored_total", why="late") == 2
    # A ping socket sees only what the kernel matched to it: its identifier, a good checksum.
    assert counted(result, "netsentry_ping_ignored_total", why="other") == (
        3 if privileged else 1)
    assert counted(result, "netsentry_ping_ignored_total", why="malformed") == (
        2 if privileged else 0)
    assert details["ping"] == ("6 packets transmitted, 3 received, +1 duplicates, +1 errors, "
                               "50% packet loss")
    assert details["icmp error"].endswith("time exceeded (TTL exceeded in transit) from "
                                          "127.0.0.1")
    assert (strict["success"], strict["reason"]) == (False, "packet_loss")
    assert strict["message"].startswith("3 of 6 echoes lost (50%, max_loss 0.4): seq ")


def test_total_loss_is_packet_loss_whatever_max_loss() -> None:
    with namespace({"net.ipv4.icmp_echo_ignore_all": 1}) as ns:
        result = run_inside(ns, {"target": "127.0.0.1", "count": 3, "spacing": "10ms",
                                 "timeout": "500ms"})
    assert (result["success"], result["reason"]) == (False, "packet_loss")
    assert result["message"] == "3 of 3 echoes lost (100%)"
    assert counted(result, "netsentry_ping_packets_sent_total") == 3
    assert counted(result, "netsentry_ping_packets_received_total") == 0
    assert netpath.value(result, "netsentry_ping_loss_ratio") == 1
    assert netpath.values(result, "netsentry_ping_rtt_min_seconds") == []


@contextlib.contextmanager
def router() -> Iterator[tuple[str, str]]:
    """A client namespace and a router namespace joined by a veth pair; the router has an
    unreachable route for 10.88.0.0/16 and fd00:88::/32, and none for anything else."""
    with namespace(OPEN_RANGE) as client, namespace({"net.ipv4.ip_forward": 1,
                                                     "net.ipv6.conf.all.forwarding": 1,
                                                     "net.ipv4.icmp_ratelimit": 0,
                                                     "net.ipv6.icmp.ratelimit": 0}) as r:
        commands = [
            ["link", "add", "r", "netns", client, "type", "veth", "peer", "name", "c",
             "netns", r],
            ["-n", client, "link", "set", "r", "up"], ["-n", r, "link", "set", "c", "up"],
            ["-n", client, "addr", "add", "10.77.0.1/24", "dev", "r"],
            ["-n", r, "addr", "add", "10.77.0.2/24", "dev", "c"],
            ["-n", client, "-6", "addr", "add", "fd00:77::1/64", "dev", "r", "nodad"],
            ["-n", r, "-6", "addr", "add", "fd00:77::2/64", "dev", "c", "nodad"],
            ["-n", client, "route", "add", "default", "via", "10.77.0.2"],
            ["-n", client, "-6", "route", "add", "default", "via", "fd00:77::2"],
            ["-n", r, "route", "add", "unreachable", "10.88.0.0/16"],
            ["-n", r, "-6", "route", "add", "unreachable", "fd00:88::/32"],
        ]
        for command in commands:
            subprocess.run(["ip", *command], check=True, timeout=10)
        yield client, r


@pytest.mark.parametrize("privileged", [True, False], ids=["raw", "ping-socket"])
@pytest.mark.parametrize(("target", "hop", "what"), [
    ("10.88.0.5", "10.77.0.2", "destination unreachable (host unreachable)"),
    ("fd00:88::5", "fd00:77::2", "destination unreachable (no route to destination)"),
])
def test_icmp_errors_from_a_router_name_the_hop(privileged: bool, target: str, hop: str,
                                                what: str) -> None:
    with router() as (client, _):
        result = run_inside(client, {"target": target, "count": 3, "spacing": "10ms",
                                     "timeout": "1s"}, () if privileged else tuple(NO_RAW))
    assert (result["success"], result["reason"]) == (False, "packet_loss")
    assert counted(result, "netsentry_ping_icmp_errors_total", type="unreachable") == 3
    assert counted(result, "netsentry_ping_packets_received_total") == 0
    errors = [text for name, text in result["details"] if name == "icmp error"]
    assert len(errors) == 3 and all(e.endswith(f": {what} from {hop}") for e in errors)
    assert result["message"].startswith("3 of 3 echoes lost (100%): seq ")
    # The errors settle the echoes: the run does not wait out the slots.
    assert result["duration"] < 0.9


def test_dont_fragment_above_the_mtu_is_packet_too_big() -> None:
    with router() as (client, _):
        result = run_inside(client, {"target": "10.77.0.2", "count": 2, "spacing": "10ms",
                                     "size": 1473, "dont_fragment": True, "timeout": "1s"})
        fits = run_inside(client, {"target": "10.77.0.2", "count": 2, "spacing": "10ms",
                                   "size": 1472, "dont_fragment": True, "timeout": "1s"})
    assert result["reason"] == "packet_loss"
    assert counted(result, "netsentry_ping_icmp_errors_total", type="packet_too_big") == 2
    assert fits["success"], fits["message"]


def test_the_ttl_runs_out_at_the_router() -> None:
    with router() as (client, r):
        subprocess.run(["ip", "-n", r, "route", "add", "10.99.0.0/16", "via", "10.77.0.1"],
                       check=True, timeout=10)  # back to the client: it would loop
        subprocess.run(["ip", "-n", client, "route", "add", "10.99.0.0/16", "via",
                        "10.77.0.2"], check=True, timeout=10)
        netpath.sysctl(client, {"net.ipv4.ip_forward": 1})
        result = run_inside(client, {"target": "10.99.0.1", "count": 1, "ttl": 1,
                                     "timeout": "1s"})
    assert counted(result, "netsentry_ping_icmp_errors_total", type="time_exceeded") == 1
    assert dict(result["details"])["icmp error"].endswith(
        "time exceeded (TTL exceeded in transit) from 10.77.0.2")


# --- config -------------------------------------------------------------------------------------


def problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text('[[checks]]\nname = "p"\nkind = "ping"\n' + body, "ping.toml")
    return caught.value.problems


@pytest.mark.parametrize(("body", "expected"), [
    ('target = "127.0.0.1"\ncount = 0\n',
     "ping.toml:5: checks[0] \"p\".count: must be 1 to 10000, got 0"),
    ('target = "127.0.0.1"\ncount = 6\nspacing = "1s"\ntimeout = "5s"\n',
     "ping.toml:6: checks[0] \"p\".spacing: 6 echoes 1000ms apart take 5s to send, but the timeout "
     "is 5s and the last echo needs time for its reply: raise the timeout, or lower count or "
     "spacing"),
    ('target = "127.0.0.1"\nsize = 65508\n',
     "ping.toml:5: checks[0] \"p\".size: 65508 bytes of payload: must be 0 to 65507, what fits one "
     "IPv4 datagram with its headers"),
    ('target = "::1"\nfamily = "ipv6"\nsize = 65528\n',
     "ping.toml:6: checks[0] \"p\".size: 65528 bytes of payload: must be 0 to 65527, what fits one "
     "IPv6 datagram with its headers"),
    ('target = "127.0.0.1"\nttl = 0\n',
     "ping.toml:5: checks[0] \"p\".ttl: must be 1 to 255, got 0"),
    ('target = "127.0.0.1"\nttl = 256\n',
     "ping.toml:5: checks[0] \"p\".ttl: must be 1 to 255, got 256"),
    ('target = "127.0.0.1"\nmax_loss = 1.5\n',
     "ping.toml:5: checks[0] \"p\".max_loss: must be 0 to 1 (a share of the echoes), got 1.5"),
    ('target = "127.0.0.1"\nspacing = "0ms"\n',
     "ping.toml:5: checks[0] \"p\".spacing: must be at least 1ms, got '0ms'"),
    ('target = "db.example.org:80"\n',
     "ping.toml:4: checks[0] \"p\".target: 'db.example.org:80' is not a host name or an IP "
     "address: a ping target has no port or path (write e.g. \"db.example.org\", \"192.0.2.1\" or "
     "\"2001:db8::1\")"),
    ('target = "bad name"\n',
     "ping.toml:4: checks[0] \"p\".target: 'bad name' is not a host name or an IP address"),
])
def test_config_errors(body: str, expected: str) -> None:
    assert problems(body) == [expected]


def test_the_defaults() -> None:
    config = load_text('[[checks]]\nname = "p"\nkind = "ping"\ntarget = "192.0.2.1"\n', "t")
    settings = config.checks[0].settings
    assert isinstance(settings, ping.PingSettings)
    assert (settings.count, settings.spacing, settings.size, settings.ttl,
            settings.dont_fragment, settings.max_loss, settings.family) == (
        5, 0.2, 56, None, False, 1.0, "any")
    continuous = load_text('[[checks]]\nname = "p"\nkind = "ping"\ntarget = "192.0.2.1"\n'
                           'interval = "1s"\ntimeout = "900ms"\ncount = 1\n', "t")
    assert continuous.checks[0].interval == 1.0


# --- the probe command ----------------------------------------------------------------------


def test_probe_prints_pings_summary() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "probe", "ping", "127.0.0.1",
                           "--count", "3", "--spacing", "10ms", "--timeout", "2s"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    # What and value are two spaces or more apart (the metrics' names have spaces).
    lines = dict(re.split(r"  +", line, maxsplit=1) for line in proc.stdout.splitlines()
                 if line.strip())
    assert lines["result"] == "success"
    assert lines["ping"] == "3 packets transmitted, 3 received, 0% packet loss"
    assert lines["rtt"].startswith("min/avg/max/mdev = ")
    assert lines["rtt"].endswith(" ms")  # ping's own line, as ping writes it
    assert lines["ping loss"] == "0%"
    for what in ("ping rtt min", "ping rtt mean", "ping rtt max", "ping rtt stddev"):
        assert re.fullmatch(r"[\d.]+ (ns|µs|ms|s)", lines[what]), (what, lines[what])
    assert "netsentry_" not in proc.stdout


def test_a_truncated_reply_and_the_codec_error_are_malformed() -> None:
    """_take on its own: a datagram larger than the buffer, bytes that are no ICMP."""
    tally = ping._Tally()
    sock = net_icmp.EchoSocket.__new__(net_icmp.EchoSocket)
    sock.ip_header, sock.identifier = False, 7
    cut = net_icmp.Received(b"\0" * 10, "127.0.0.1", 64, 0, False, True)
    junk = net_icmp.Received(b"\x00\x01", "127.0.0.1", 64, 0, False, False)
    for received in (cut, junk):
        assert ping._take(received, sock, 4, "127.0.0.1", b"", {}, 1.0, 0.0, tally) == 0
    assert tally.ignored == {"malformed": 2}
    assert Reason.PACKET_LOSS in ping.KIND.reasons


def test_the_agent_logs_a_host_problem_once_per_kind(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    asked: list[str] = []

    def problem() -> str:
        asked.append("ping")
        return net_icmp.FIX

    monkeypatch.setitem(KINDS, "ping", dataclasses.replace(ping.KIND, host_problem=problem))
    text = '[[checks]]\nname = "p"\nkind = "ping"\ntarget = "127.0.0.1"\n'

    async def load_twice() -> None:
        agent = app.Agent(app.Options(None, ("127.0.0.1:0",)))
        with caplog.at_level(logging.WARNING, logger="exporter.app"):
            agent.apply(load_text(text, "a.toml"))
            agent.apply(load_text(text + 'interval = "1m"\n', "a.toml"))  # a reload
        agent.scheduler.update({})

    asyncio.run(load_twice())
    warnings = [record for record in caplog.records
                if record.getMessage() == "checks of this kind cannot run here"]
    assert len(warnings) == 1 and asked == ["ping"]
    said = vars(warnings[0])
    assert (said["kind"], said["problem"]) == ("ping", net_icmp.FIX)


# --- across a chain of routers with a delay line, beside iputils ping and fping -----------------

DELAY, LOSS, SEED, ECHOES = 0.005, 0.1, 11, 60


def _dropped(before: dict[str, Any], after: dict[str, Any], family: int) -> int:
    """Echo requests dropped on the way there and replies on the way back, in between."""
    request, reply = ("ipv4/icmp/8", "ipv4/icmp/0") if family == 4 else ("ipv6/icmp/128",
                                                                         "ipv6/icmp/129")
    return sum(after[way]["dropped_by"].get(kind, 0) - before[way]["dropped_by"].get(kind, 0)
               for way, kind in (("r1>r2", request), ("r2>r1", reply)))


def _ours(chain: netpath.Chain, family: int) -> tuple[int, list[float], int]:
    """(echoes lost, round trips in s, what the line dropped meanwhile) of one ping check."""
    before = chain.line_stats()
    result = netpath.run_check(chain.client, "ping", {
        "target": chain.target_address(family), "count": ECHOES, "spacing": "20ms",
        "timeout": "4s", "max_loss": 0.5})
    after = chain.line_stats()
    assert result["success"], result["message"]
    sent = counted(result, "netsentry_ping_packets_sent_total")
    received = counted(result, "netsentry_ping_packets_received_total")
    assert sent == ECHOES and counted(result, "netsentry_ping_duplicates_total") == 0
    samples = netpath.values(result, "netsentry_ping_rtt_seconds", "histograms")
    assert len(samples) == received
    assert netpath.value(result, "netsentry_ping_loss_ratio") == pytest.approx(
        1 - received / sent)
    return int(sent - received), samples, _dropped(before, after, family)


def _iputils(chain: netpath.Chain) -> tuple[int, list[float], int]:
    before = chain.line_stats()
    proc = netpath.run(chain.client, ["ping", "-n", "-c", str(ECHOES), "-i", "0.02", "-W", "2",
                                      chain.target_address(4)], timeout=30)
    after = chain.line_stats()
    summary = next(line for line in proc.stdout.splitlines() if "packets transmitted" in line)
    sent, received = (int(summary.split()[i]) for i in (0, 3))
    assert sent == ECHOES
    samples = [float(line.rsplit("time=", 1)[1].split()[0]) / 1000
               for line in proc.stdout.splitlines() if "time=" in line]
    assert len(samples) == received
    return sent - received, samples, _dropped(before, after, 4)


def _fping(chain: netpath.Chain) -> tuple[int, list[float], int]:
    before = chain.line_stats()
    proc = netpath.run(chain.client, ["fping", "-C", str(ECHOES), "-p", "20", "-t", "2000",
                                      "-q", chain.target_address(4)], timeout=30)
    after = chain.line_stats()
    line = next(line for line in proc.stderr.splitlines() if " : " in line)
    times = line.split(" : ", 1)[1].split()
    assert len(times) == ECHOES
    samples = [float(t) / 1000 for t in times if t != "-"]
    return ECHOES - len(samples), samples, _dropped(before, after, 4)


@pytest.mark.parametrize("family", [4, 6])
def test_loss_and_delay_are_the_delay_lines(family: int) -> None:
    with netpath.Chain(delay=DELAY, loss=LOSS, seed=SEED) as chain:
        lost, samples, dropped = _ours(chain, family)
    assert lost == dropped > 0  # every echo the line dropped, one way or the other, and no more
    # Each way holds DELAY: the round trip is twice that, plus the namespaces' few µs.
    assert min(samples) >= 2 * DELAY
    assert statistics.median(samples) < 2 * DELAY + 0.003


def test_iputils_ping_and_fping_agree() -> None:
    """The same seed drops the same echoes in each fresh chain: each tool runs in one of its
    own, and all three see the same loss, the line's, and the same round trips."""
    outcomes = {}
    for name, measure in (("netsentry", _ours), ("ping", _iputils), ("fping", _fping)):
        with netpath.Chain(delay=DELAY, loss=LOSS, seed=SEED) as chain:
            if name == "netsentry":
                outcomes[name] = measure(chain, 4)  # type: ignore[call-arg]
            else:
                outcomes[name] = measure(chain)  # type: ignore[call-arg]
    for name, (lost, _, dropped) in outcomes.items():
        assert lost == dropped, name
    losses = {name: lost for name, (lost, _, _) in outcomes.items()}
    assert len(set(losses.values())) == 1 and losses["netsentry"] > 0, losses
    ours = statistics.median(outcomes["netsentry"][1])
    for name in ("ping", "fping"):
        theirs = statistics.median(outcomes[name][1])
        assert abs(ours - theirs) <= max(0.1 * theirs, 100e-6), (name, ours, theirs)
