"""tests.support.netpath proven with tools nobody here wrote: iputils ping, traceroute, mtr.

A chain's hops are what traceroute and mtr see, in order; ping's TTL says two routers; a
silenced router is `*` while the target is still reached; reroute() moves hop 2; the delay
line's RTT floor and its drops are what ping measures and loses, exactly; run_check runs real
tcp and dns checks across the chain. These need root (namespaces): they run in CI, which is
root, and fail there rather than skip.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import delayline, netpath
from tests.support.dnsmasq import dnsmasq_argv
from tests.support.netpath import Chain, run, run_check, silence_icmp, unsilence_icmp, value

pytestmark = pytest.mark.timeout(180)
FAMILIES = (4, 6)


@pytest.fixture(autouse=True)
def _namespaces() -> None:
    if not netpath.available():
        if os.environ.get("CI"):
            pytest.fail("network namespaces do not work here (these tests need root)")
        pytest.skip("network namespaces do not work here (these tests need root)")


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with Chain() as made:
        yield made


def ping(ns: str, target: str, family: int, count: int, *extra: str) -> str:
    proc = run(ns, ["ping", f"-{family}", "-n", "-c", str(count), "-i", "0.2", "-W", "2",
                    *extra, target], timeout=30 + count)
    return proc.stdout


def ping_summary(out: str) -> tuple[int, int]:
    """(transmitted, received) from ping's statistics line."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m[1]), int(m[2])


def ping_rtts(out: str) -> dict[int, float]:
    """icmp_seq -> RTT in seconds of each reply."""
    return {int(seq): float(ms) / 1000
            for seq, ms in re.findall(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms", out)}


def traceroute(ns: str, target: str, family: int) -> list[str]:
    """Each hop's address as `traceroute -n` shows it, or "*" for a hop that never answered."""
    proc = run(ns, ["traceroute", f"-{family}", "-n", "-q", "2", "-w", "1", "-m", "6", target],
               timeout=60)
    assert proc.returncode == 0, proc.stderr
    hops = []
    for line in proc.stdout.splitlines()[1:]:
        fields = line.split()[1:]
        addresses = []
        for field in fields:
            try:
                addresses.append(str(ipaddress.ip_address(field)))
            except ValueError:
                continue
        assert len(set(addresses)) <= 1, line
        hops.append(addresses[0] if addresses else "*")
    return hops


@pytest.mark.parametrize("family", FAMILIES)
def test_ping_reaches_the_target_through_two_routers(chain: Chain, family: int) -> None:
    out = ping(chain.client, chain.target_address(family), family, 5)
    assert ping_summary(out) == (5, 5)
    assert set(re.findall(r"ttl=(\d+)", out)) == {"62"}  # 64, less one per router


@pytest.mark.parametrize("family", FAMILIES)
def test_traceroute_sees_r1_r2_and_the_target(chain: Chain, family: int) -> None:
    assert chain.hops(family) == [chain.address("r1", family), chain.address("r2", family)]
    assert traceroute(chain.client, chain.target_address(family), family) == [
        *chain.hops(family), chain.target_address(family)]


def test_mtr_reports_the_same_hops(chain: Chain) -> None:
    proc = run(chain.client, ["mtr", "--report", "-n", "-c", "3", "-i", "0.2",
                              chain.target_address(4)], timeout=60)
    hosts = re.findall(r"^\s*\d+\.\|-- (\S+)", proc.stdout, re.M)
    assert hosts == [*chain.hops(4), chain.target_address(4)], proc.stdout


def test_fping_reaches_every_host_of_the_chain(chain: Chain) -> None:
    hosts = [chain.address(role) for role in ("r1", "r2", "r3", "target")]
    proc = run(chain.client, ["fping", "-c", "2", "-p", "100", "-q", *hosts], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert len(re.findall(r"xmt/rcv/%loss = 2/2/0%", proc.stderr)) == 4, proc.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_a_silenced_router_is_a_silent_hop_and_the_target_still_answers(family: int) -> None:
    with Chain() as c:
        target = c.target_address(family)
        expired = r"From (\S+) icmp_seq=\d+ Time (to live exceeded|exceeded: Hop limit)"
        before = re.findall(expired, ping(c.client, target, family, 3, "-t", "2"))
        assert [a for a, _ in before] == [c.address("r2", family)] * 3
        silence_icmp(c.r2)
        # not even a first error to spend: none at all comes back from r2
        assert re.findall(expired, ping(c.client, target, family, 3, "-t", "2")) == []
        assert traceroute(c.client, target, family) == [c.address("r1", family), "*", target]
        assert ping_summary(ping(c.client, target, family, 3)) == (3, 3)
        unsilence_icmp(c.r2)
        assert traceroute(c.client, target, family) == [*c.hops(family), target]


@pytest.mark.parametrize("family", FAMILIES)
def test_reroute_moves_hop_2_to_r3_and_back(family: int) -> None:
    with Chain() as c:
        target = c.target_address(family)
        c.reroute("r3")
        assert c.hops(family) == [c.address("r1", family), c.address("r3", family)]
        assert traceroute(c.client, target, family) == [*c.hops(family), target]
        assert ping_summary(ping(c.client, target, family, 3)) == (3, 3)
        c.reroute(c.r2)
        assert traceroute(c.client, target, family) == [
            c.address("r1", family), c.address("r2", family), target]


def _lossy_ping(seed: int) -> tuple[str, dict[str, object], dict[int, float]]:
    with Chain(delay=0.01, loss=0.1, seed=seed) as c:
        out = ping(c.client, c.target_address(4), 4, 30)
        stats = c.line_stats()
    assert c.final_line_stats is not None
    return out, stats, ping_rtts(out)


def test_the_delay_line_delays_and_drops_exactly_what_ping_sees() -> None:
    out, stats, rtts = _lossy_ping(7)
    sent, received = ping_summary(out)
    there, back = stats["r1>r2"], stats["r2>r1"]
    assert isinstance(there, dict) and isinstance(back, dict)
    assert there["received_by"]["ipv4/icmp/8"] == sent == 30
    dropped = there["dropped_by"].get("ipv4/icmp/8", 0) + back["dropped_by"].get(
        "ipv4/icmp/0", 0)
    assert dropped > 0  # seed 7 loses some of 30 at 10 %
    assert sent - received == dropped
    assert back["received_by"]["ipv4/icmp/0"] == sent - there["dropped_by"].get(
        "ipv4/icmp/8", 0)
    assert there["in_flight"] == back["in_flight"] == 0
    assert len(rtts) == received
    assert min(rtts.values()) >= 0.02  # each way holds 10 ms
    assert statistics.median(rtts.values()) >= 0.02
    # the same seed loses the same echoes again
    _, _, rtts_again = _lossy_ping(7)
    assert sorted(rtts_again) == sorted(rtts)


def test_the_delay_line_carries_ipv6_with_its_delay_as_a_floor_under_jitter() -> None:
    with Chain(delay=0.005, jitter=0.005) as c:
        out = ping(c.client, c.target_address(6), 6, 5)
        stats = c.line_stats()
    assert ping_summary(out) == (5, 5)
    assert min(ping_rtts(out).values()) >= 0.01
    assert stats["r1>r2"]["received_by"]["ipv6/icmp/128"] == 5
    assert stats["r2>r1"]["forwarded"] >= 5


def test_close_deletes_the_namespaces_and_stops_the_delay_line() -> None:
    with Chain(delay=0.001) as c:
        names = list(c.names.values())
        line = c.line
        assert line is not None and line.poll() is None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout
    assert [n for n in names if n in listed] == []
    assert line.poll() is not None
    assert c.final_line_stats is not None and set(c.final_line_stats) == {"r1>r2", "r2>r1"}


def _exited(pid: int) -> bool:
    """Whether process `pid` has ended (gone, or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_delay_line_ends_with_its_parent() -> None:
    code = ("import json, sys, time\n"
            "from tests.support.netpath import Chain\n"
            "c = Chain(delay=0.001).__enter__()\n"
            "print(json.dumps([c.line.pid, list(c.names.values())]), flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=netpath.ROOT,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout is not None
        line_pid, names = json.loads(parent.stdout.readline())
        assert not _exited(line_pid)
        parent.kill()
        parent.wait(10)
        assert netpath.wait_until(lambda: _exited(line_pid), timeout=10)
    finally:
        netpath.stop(parent)
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_the_delay_line_ends_after_its_lifetime() -> None:
    with Chain(delay=0.001, lifetime=0.5) as c:
        assert c.line is not None
        assert c.line.wait(10) == 0
    # close() copes with a line that already ended, and reads the stats it left
    assert c.final_line_stats is not None and set(c.final_line_stats) == {"r1>r2", "r2>r1"}


def test_a_setup_failing_halfway_leaves_no_namespace() -> None:
    class Broken(Chain):
        def _start_line(self) -> None:
            super()._start_line()
            raise RuntimeError("broken on purpose")

    broken = Broken(delay=0.001)
    with pytest.raises(RuntimeError, match="on purpose"):
        broken.__enter__()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout
    assert [n for n in broken.names.values() if n in listed] == []
    assert broken.line is None and broken.final_line_stats is not None


def test_the_delay_lines_drops_depend_on_the_seed_and_the_packets_only() -> None:
    def decisions(seed: int, noise: int) -> list[bool]:
        d = delayline.Direction("a>b", seed, 0.3, 1000)
        echo = bytes([0x45]) + bytes(8) + bytes([1]) + bytes(10) + bytes([8]) + bytes(7)
        mld = bytes([0x60]) + bytes(5) + bytes([0]) + bytes(33) + bytes([58, 0]) + bytes(6) + \
            bytes([143]) + bytes(7)
        out = []
        for i in range(200):
            if i % 7 == 0:
                for _ in range(noise):
                    d.admit(mld)
            out.append(d.admit(echo))
        assert d.received_by["ipv4/icmp/8"] == 200
        assert d.received_by.get("ipv6/icmp/143", 0) == noise * 29
        return out

    assert decisions(7, 0) == decisions(7, 3)  # other traffic does not shift the draws
    assert decisions(7, 0) != decisions(8, 0)
    assert 30 < decisions(7, 0).count(False) < 90


def test_the_delay_line_keeps_at_most_limit_packets_in_flight() -> None:
    d = delayline.Direction("a>b", 1, 0.0, 2)
    udp = bytes([0x45]) + bytes(8) + bytes([17]) + bytes(10)
    assert d.admit(udp) and d.admit(udp)
    d.in_flight = 2  # as Line.read_packets counts them
    assert not d.admit(udp)
    assert d.stats()["overflow"] == 1 and d.stats()["received_by"] == {"ipv4/udp": 3}


def test_run_check_runs_a_tcp_check_across_the_delay_line() -> None:
    with Chain(delay=0.01) as c, netpath.listener(c, c.target, 7000):
        ok = run_check(c.client, "tcp", {"target": f"{c.target_address(4)}:7000",
                                          "timeout": "5s"})
        assert ok["success"] is True and ok["reason"] is None, ok
        assert value(ok, "netsentry_tcp_connect_seconds") >= 0.02
        assert ["address", f"{c.target_address(4)}:7000"] in ok["details"]
        refused = run_check(c.client, "tcp", {"target": f"[{c.target_address(6)}]:7001"})
        assert (refused["success"], refused["reason"]) == (False, "refused")
        with pytest.raises(RuntimeError, match="unknown key"):
            run_check(c.client, "tcp", {"target": "10.231.9.1:7000", "bogus": 1})
        with netpath.CheckSession(c.client, "tcp", {"target": "[fd00:231:9::1]:7000"}) as s:
            assert [s.run()["success"] for _ in range(3)] == [True] * 3


def test_run_check_runs_a_dns_check_against_dnsmasq_in_the_target(chain: Chain) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        argv = dnsmasq_argv(53, str(Path(tmp, "pid")), a={"host.test": ["10.231.9.77"]},
                            extra_args=[f"--listen-address={chain.target_address(4)}"])
        proc = chain.spawn(chain.target, argv, stderr=subprocess.PIPE)
        try:
            assert netpath.wait_until(lambda: f"{chain.target_address(4)}:53" in run(
                chain.target, ["ss", "-lnu"], timeout=10).stdout), "dnsmasq did not start"
            result = run_check(chain.client, "dns", {
                "target": "host.test", "server": chain.target_address(4),
                "expect_answers": ["10.231.9.77"]})
        finally:
            netpath.stop(proc)
    assert result["success"] is True, result
    assert value(result, "netsentry_dns_answers") == 1
    assert ["answers", "10.231.9.77"] in result["details"]
    assert ["server", f"{chain.target_address(4)}:53"] in result["details"]
