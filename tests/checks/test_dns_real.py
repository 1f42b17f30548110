"""The dns check against real servers: dnsmasq on a loopback port, unbound's DNS over TLS and
over HTTPS (HTTP/2), and the system resolver in a network namespace of the test's own whose
resolv.conf points at its own dnsmasq."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import Reason
from exporter.net import http_client
from exporter.net.resolve import Address
from exporter.net.stream import open_stream
from exporter.net.tls import tls_client_context
from tests.checks.test_dns import dns_check
from tests.support.agent import Agent
from tests.support.certs import make_cert
from tests.support.checks import counters, gauges, run_check
from tests.support.dnsmasq import Dnsmasq
from tests.support.fakedns import FakeDns
from tests.support.netns import run_in_netns
from tests.support.servers import AcceptServer
from tests.support.unbound import Unbound


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq(a={"host.test": ["127.0.0.5"]}, aaaa={"host.test": ["::5"]},
                 mx={"test": [("mail.test", 10)]}, txt={"host.test": ["v=spf1 -all"]},
                 cname={"www.test": "host.test"}) as server:
        yield server


@pytest.mark.parametrize(
    ("target", "record", "answers"),
    [
        ("host.test", "A", "127.0.0.5"),
        ("host.test", "AAAA", "::5"),
        ("test", "MX", "10 mail.test."),
        ("host.test", "TXT", '"v=spf1 -all"'),
        ("www.test", "A", "127.0.0.5"),
    ],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_records(dnsmasq: Dnsmasq, target: str, record: str, answers: str,
                 transport: str) -> None:
    result = run_check(dns_check(target=target, server=dnsmasq.address, record=record,
                              transport=transport))
    assert result.success, result
    assert dict(result.details)["answers"] == answers
    assert gauges(result)["netsentry_dns_answers"] == 1
    assert counters(result)["netsentry_dns_responses_totalNOERROR"] == 1


def test_cname_chain_is_followed(dnsmasq: Dnsmasq) -> None:
    result = run_check(dns_check(target="www.test", server=dnsmasq.address))
    assert dict(result.details)["cnames"] == "host.test."


def test_nxdomain(dnsmasq: Dnsmasq) -> None:
    result = run_check(dns_check(target="nope.test", server=dnsmasq.address))
    assert (result.reason, result.message) == (Reason.NXDOMAIN, "rcode NXDOMAIN, expected NOERROR")
    assert counters(result)["netsentry_dns_responses_totalNXDOMAIN"] == 1


def test_compare_with_system_flags_a_split_horizon(dnsmasq: Dnsmasq) -> None:
    # localhost: /etc/hosts says 127.0.0.1 to getaddrinfo; this nameserver says otherwise.
    with Dnsmasq(a={"localhost": ["127.0.0.9"]}, local=("localhost",)) as other:
        result = run_check(dns_check(target="localhost", server=other.address,
                                  compare_with_system=True))
    assert result.success, result
    assert gauges(result)["netsentry_dns_resolver_mismatch"] == 1
    assert dict(result.details)["system resolver"] == "127.0.0.1"


PROBE = [sys.executable, "-m", "exporter", "probe", "dns"]
RECORDS = {"a": {"host.test": ["127.0.0.5"]}, "aaaa": {"host.test": ["::5"]}}


def test_system_resolver_asks_the_configured_nameserver() -> None:
    proc = run_in_netns([*PROBE, "host.test", "--family", "ipv4"], dnsmasq_records=RECORDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "127.0.0.5" in proc.stdout


def test_system_resolver_nxdomain() -> None:
    proc = run_in_netns([*PROBE, "nope.test"], dnsmasq_records=RECORDS)
    assert proc.returncode == 1
    assert "FAILURE (nxdomain): EAI_NONAME" in proc.stdout


def test_system_resolver_reads_etc_hosts_first() -> None:
    proc = run_in_netns([*PROBE, "db.internal"], hosts={"db.internal": ["127.0.0.42"]},
                        dnsmasq_records=RECORDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "127.0.0.42" in proc.stdout


SILENT_THEN_PROBE = """
import socket, subprocess, sys
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
silent.bind(("127.0.0.2", 53))  # a nameserver that reads queries and never answers
sys.exit(subprocess.run(sys.argv[1:]).returncode)
"""


def test_system_resolver_deadline_holds_against_a_silent_nameserver() -> None:
    # libc would wait 5 s per try, twice; the run's deadline is 1 s.
    proc = run_in_netns([sys.executable, "-c", SILENT_THEN_PROBE, *PROBE, "host.test",
                         "--timeout", "1s"],
                        resolv_conf="nameserver 127.0.0.2\noptions timeout:5 attempts:2\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILURE (timeout)" in proc.stdout
    found = re.search(r"^duration +([\d.]+) (ns|µs|ms|s)$", proc.stdout, re.M)
    assert found, proc.stdout
    seconds = float(found[1]) * {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[found[2]]
    assert seconds < 1 + 0.2


def test_failing_dns_checks_leave_the_agent_and_the_others_running(
    tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    with FakeDns("servfail") as servfail, FakeDns("garbage") as garbage, \
            FakeDns("silent") as silent, AcceptServer() as listener:
        checks = {
            "ok": f'server = "{dnsmasq.address}"',
            "nx": f'server = "{dnsmasq.address}"\ntarget = "nope.test"',
            "servfail": f'server = "{servfail.address}"',
            "garbage": f'server = "{garbage.address}"',
            "silent": f'server = "{silent.address}"',
        }
        text = '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'
        for name, keys in checks.items():
            target = "" if "target" in keys else 'target = "host.test"\n'
            text += f'\n[[checks]]\nname = "{name}"\nkind = "dns"\n{target}{keys}\n'
        text += f'\n[[checks]]\nname = "tcp"\nkind = "tcp"\ntarget = "{listener.target}"\n'
        path = tmp_path / "netsentry.toml"
        path.write_text(text)
        with Agent(path) as agent:
            def reasons() -> dict[str, str]:
                found = {}
                for (name, labels), value in agent.metrics().items():
                    tags = dict(labels)
                    if name == "netsentry_check_failures_total" and value >= 1:
                        found[tags["check"]] = tags["reason"]
                return found

            agent.wait_for(lambda: len(reasons()) == 4, what="four failing checks")
            assert reasons() == {"nx": "nxdomain", "servfail": "servfail",
                                 "garbage": "malformed_response", "silent": "timeout"}
            for name in ("ok", "tcp"):
                assert agent.value("netsentry_check_success", check=name,
                                   kind="tcp" if name == "tcp" else "dns") == 1
            runs = agent.value("netsentry_check_runs_total", check="ok", kind="dns") or 0
            agent.wait_for(lambda: (agent.value("netsentry_check_runs_total", check="ok",
                                                kind="dns") or 0) > runs, what="ok to run on")


def test_probe_command_prints_answers_rcode_flags_and_ttl(dnsmasq: Dnsmasq) -> None:
    proc = subprocess.run([*PROBE, "test", "--server", dnsmasq.address, "--record", "MX"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = dict(re.split(r"  +", line, maxsplit=1) for line in proc.stdout.splitlines()
                 if "  " in line)
    assert facts["result"] == "success"
    assert facts["rcode"] == "NOERROR"
    assert "aa" in facts["flags"].split()
    assert facts["answers"] == "10 mail.test."
    assert facts["dns answers"] == "1"
    assert re.fullmatch(r"\d+ s( \(\w+\))?|\d+\.\d+ s", facts["dns min ttl"]), facts
    for what in ("duration", "dns lookup"):
        assert re.fullmatch(r"[\d.]+ (ns|µs|ms|s)", facts[what]), (what, facts[what])
    raw = subprocess.run([*PROBE, "test", "--server", dnsmasq.address, "--record", "MX",
                          "--metrics"], capture_output=True, text=True, timeout=30)
    lines = dict(line.split(None, 1) for line in raw.stdout.splitlines() if " " in line)
    assert float(lines["netsentry_dns_min_ttl_seconds"]) >= 0
    assert float(lines["netsentry_dns_lookup_seconds"]) > 0


# --- unbound: DNS over TLS, and DNS over HTTPS on an HTTP/2-only port ---------------------------


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    files = make_cert(tmp_path_factory.mktemp("unbound"), "dns.test")
    with Unbound(files, a={"host.test": ["127.0.0.7"]}) as server:
        yield server


def unbound_check(unbound: Unbound, transport: str, port: int, **options: object) -> Any:
    return dns_check(target="host.test", server=f"127.0.0.1:{port}", transport=transport,
                     server_name="dns.test", ca_file=str(unbound.certs.ca), **options)


def test_dns_over_tls_against_unbound(unbound: Unbound) -> None:
    result = run_check(unbound_check(unbound, "tls", unbound.tls_port))
    assert result.success, result
    assert dict(result.details)["answers"] == "127.0.0.7"
    assert gauges(result)["netsentry_tls_handshake_seconds"] > 0


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_dns_over_https_speaks_http2_to_unbound(unbound: Unbound, method: str) -> None:
    result = run_check(unbound_check(unbound, "https", unbound.https_port, doh_method=method))
    assert result.success, result
    details = dict(result.details)
    assert (details["answers"], details["doh"]) == ("127.0.0.7", f"HTTP/2 {method}")


def test_dns_over_https_names_a_missing_name(unbound: Unbound) -> None:
    result = run_check(dns_check(target="nope.test", server=f"127.0.0.1:{unbound.https_port}",
                                 transport="https", server_name="dns.test",
                                 ca_file=str(unbound.certs.ca)))
    assert (result.reason, result.message) == (Reason.NXDOMAIN, "rcode NXDOMAIN, expected NOERROR")


def test_http11_against_unbounds_doh_port_fails_in_plain_words(unbound: Unbound) -> None:
    # What an HTTP/1.1-only client gets from unbound (defect 2 of issue 16): unbound accepts
    # ALPN http/1.1, then closes, with or without its SETTINGS frame first (as the timing of
    # its session goes); either way the reason names HTTP/2, not the parser's state.
    async def ask() -> object:
        context = tls_client_context(str(unbound.certs.ca), alpn=("http/1.1",))
        address = Address(socket.AF_INET, ("127.0.0.1", unbound.https_port))
        async with open_stream(address, ssl_context=context, server_hostname="dns.test") as s:
            return await http_client.request(s, "POST", "dns.test", "/dns-query", body=b"\0" * 12)

    with pytest.raises(http_client.ResponseError) as info:
        asyncio.run(ask())
    assert str(info.value) in (
        "the server closed the connection without an HTTP/1.1 response (it may speak HTTP/2 only)",
        "the server answered with HTTP/2 frames, not HTTP/1.1 (it speaks HTTP/2 only)")
