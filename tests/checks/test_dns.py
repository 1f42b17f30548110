"""The dns check against fake servers: what no real server does on demand, each failure with
its reason, the deadline held, and config errors with their lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.config.load import load_text
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError, Reason
from tests.support.certs import make_cert, server_context
from tests.support.checks import counters, gauges, make_check, run_check
from tests.support.fakedns import FakeDns, FakeDoh, FakeDot


def dns_check(**keys: Any) -> CheckConfig:
    return make_check("dns", **keys)


def test_answer_over_udp() -> None:
    with FakeDns("answer", {"host.test": [("A", "127.0.0.5", 300), ("A", "127.0.0.6", 60)]}) as s:
        result = run_check(dns_check(target="host.test", server=s.address))
    assert result.success, result
    got = gauges(result)
    assert got["netsentry_dns_answers"] == 2
    assert got["netsentry_dns_min_ttl_seconds"] == 60
    assert got["netsentry_dns_authenticated_data"] == 0
    assert counters(result) == {"netsentry_dns_responses_totalNOERROR": 1,
                              "netsentry_dns_answer_changes_total": 0}
    answers = dict(result.details)["answers"]
    assert sorted(answers.split(" | ")) == ["127.0.0.5", "127.0.0.6"]


def test_servfail() -> None:
    with FakeDns("servfail") as s:
        result = run_check(dns_check(target="host.test", server=s.address))
    assert (result.reason, result.message) == (Reason.SERVFAIL, "rcode SERVFAIL, expected NOERROR")
    assert counters(result)["netsentry_dns_responses_totalSERVFAIL"] == 1


def test_nxdomain_and_expected_nxdomain() -> None:
    with FakeDns("answer", {"host.test": [("A", "127.0.0.5", 300)]}) as s:
        missing = run_check(dns_check(target="nope.test", server=s.address))
        expected = run_check(dns_check(target="nope.test", server=s.address,
                                    expect_rcode="NXDOMAIN"))
    assert missing.reason is Reason.NXDOMAIN
    assert expected.success


def test_truncated_udp_is_retried_over_tcp() -> None:
    with FakeDns("truncate") as s:
        result = run_check(dns_check(target="host.test", server=s.address))
        assert len(s.tcp_queries) == 1
    assert result.success, result
    assert ("answers", "127.0.0.7") in result.details


def test_garbage_is_malformed_response_within_the_deadline() -> None:
    with FakeDns("garbage") as s:
        result = run_check(dns_check(target="host.test", server=s.address, timeout="500ms"))
        # One query, its three garbage replies, and nothing after: the check kept waiting
        # for a valid reply until its deadline, not sending again.
        assert (len(s.queries), s.decoys) == (1, 3)
    # The check's own deadline, just before the run's, names the garbage; on a machine late
    # by more than that margin, the run's own deadline says timeout.
    if result.reason is Reason.MALFORMED_RESPONSE:
        assert result.message.startswith("no valid reply; 3 datagram(s) from the server "
                                         "ignored, the last: "), result
        assert counters(result) == {"netsentry_dns_ignored_replies_total": 3}
    else:
        assert (result.reason, result.message) == (Reason.TIMEOUT,
                                                   f"no reply from {s.address}"), result


def test_wrong_id_and_spoofed_source_are_ignored() -> None:
    with FakeDns("wrong_id_first") as s:
        result = run_check(dns_check(target="host.test", server=s.address))
    assert result.success, result
    assert ("answers", "127.0.0.7") in result.details  # not the spoofed 192.0.2.66
    assert counters(result)["netsentry_dns_ignored_replies_total"] >= 1


def test_silence_times_out_within_deadline() -> None:
    with FakeDns("silent") as s:
        result = run_check(dns_check(target="host.test", server=s.address, timeout="400ms"))
        assert len(s.queries) == 1  # asked once, then waited: no retry storm
    # The check's message, not the runner's "no result within the 0.4s timeout": the check's
    # own deadline, the run's, ended the wait.
    assert (result.reason, result.message) == (Reason.TIMEOUT, f"no reply from {s.address}")


def test_next_server_when_one_is_silent() -> None:
    with FakeDns("silent") as dead, FakeDns("answer") as alive:
        result = run_check(dns_check(target="host.test", server=[dead.address, alive.address]))
    assert result.success, result
    assert ("server", alive.address) in result.details


def test_tcp_transport_and_early_close() -> None:
    with FakeDns("answer") as s:
        ok = run_check(dns_check(target="host.test", server=s.address, transport="tcp"))
        assert len(s.tcp_queries) == 1
    assert ok.success
    with FakeDns("close_early") as s:
        cut = run_check(dns_check(target="host.test", server=s.address, transport="tcp"))
    assert cut.reason is Reason.NETWORK_ERROR


def test_dns_over_tls(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "dns.test")
    with FakeDot(server_context(files)) as s:
        ok = run_check(dns_check(target="host.test", server=s.address, transport="tls",
                              server_name="dns.test", ca_file=str(files.ca)))
        wrong = run_check(dns_check(target="host.test", server=s.address, transport="tls",
                                 server_name="other.test", ca_file=str(files.ca)))
        unknown = run_check(dns_check(target="host.test", server=s.address, transport="tls",
                                   server_name="dns.test"))
    assert ok.success, ok
    assert "netsentry_tls_handshake_seconds" in gauges(ok)
    assert wrong.reason is Reason.TLS_ERROR and "other.test" in wrong.message
    assert unknown.reason is Reason.TLS_ERROR


def test_expectations() -> None:
    records = {"host.test": [("A", "127.0.0.5", 300)], "mx.test": [("MX", "10 mail.test.", 60)]}
    with FakeDns("answer", records) as s:
        exact = run_check(dns_check(target="host.test", server=s.address,
                                 expect_answers=["127.0.0.5"]))
        other = run_check(dns_check(target="host.test", server=s.address,
                                 expect_answers=["127.0.0.9"]))
        mx = run_check(dns_check(target="mx.test", server=s.address, record="MX",
                              answer_regex=r"^10 mail\.test\.$"))
        too_few = run_check(dns_check(target="host.test", server=s.address, min_answers=2))
        no_ad = run_check(dns_check(target="host.test", server=s.address, expect_ad=True))
    assert exact.success
    assert other.reason is Reason.UNEXPECTED_RESPONSE
    assert mx.success, mx
    assert (too_few.reason, too_few.message) == (Reason.UNEXPECTED_RESPONSE,
                                                 "1 answer(s), expected at least 2")
    assert no_ad.reason is Reason.UNEXPECTED_RESPONSE


def test_answer_changes_are_counted() -> None:
    memory: dict[str, Any] = {}
    first = {"host.test": [("A", "127.0.0.5", 300), ("A", "127.0.0.6", 300)]}
    swapped = {"host.test": [("A", "127.0.0.6", 300), ("A", "127.0.0.5", 300)]}
    moved = {"host.test": [("A", "127.0.0.9", 300)]}
    changes = []
    for records in (first, swapped, moved):
        with FakeDns("answer", records) as s:
            result = run_check(dns_check(target="host.test", server=s.address), memory=memory)
        changes.append(counters(result).get("netsentry_dns_answer_changes_total"))
    # The series starts at 0; order alone is no change (ignore_order is the default); another
    # address is.
    assert changes == [0, None, 1]


def test_system_resolver_from_etc_hosts() -> None:
    ok = run_check(dns_check(target="localhost", family="ipv4"))
    assert ok.success, ok
    assert gauges(ok)["netsentry_dns_answers"] >= 1
    assert ("answers", "127.0.0.1") in ok.details


CONFIG = '[[checks]]\nname = "d"\nkind = "dns"\ntarget = "host.test"\n'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('server = "127.0.0.1"\nrecord = "XYZ"\n',
         "f.toml:6: checks[0] \"d\".record: unknown DNS record type 'XYZ'"),
        ('server = "127.0.0.1:99999"\n',
         'f.toml:5: checks[0] "d".server: port 99999 is out of range 1-65535'),
        ('server = "127.0.0.1:dns"\n',
         "f.toml:5: checks[0] \"d\".server: unknown service name 'dns' for udp"),
        ("server = []\n", 'f.toml:5: checks[0] "d".server: the server list is empty'),
        ('server = ["127.0.0.1:53", "127.0.0.1:0053"]\n',
         "f.toml:5: checks[0] \"d\".server: '127.0.0.1:0053' is listed twice"),
        ('server = "::1:53:x"\n',
         "f.toml:5: checks[0] \"d\".server: invalid target '::1:53:x': not an IPv6 address"),
        ('server = "127.0.0.1"\nexpect_answers = ["mail.test"]\n',
         "f.toml:6: checks[0] \"d\".expect_answers: 'mail.test' is not a valid A answer"),
        ('record = "MX"\n',
         'f.toml:5: checks[0] "d".record: needs `server`: the system resolver (getaddrinfo) '
         "answers addresses only, with no rcode or flags"),
        ('server = "127.0.0.1"\ntransport = "quic"\n',
         "f.toml:6: checks[0] \"d\".transport: must be one of 'udp', 'tcp', 'tls', 'https', "
         "got 'quic'"),
        ('server = "127.0.0.1"\nexpect_rcode = "NOPE"\n', "unknown rcode 'NOPE'"),
        ('server = "127.0.0.1"\nca_file = "/nonexistent/ca.pem"\n',
         'f.toml:6: checks[0] "d".ca_file: cannot read /nonexistent/ca.pem: No such file or '
         "directory"),
        ('answer_regex = "("\n', 'f.toml:5: checks[0] "d".answer_regex: invalid regular '
         "expression: missing ), unterminated subpattern at position 0"),
        ("min_answers = -1\n", 'f.toml:5: checks[0] "d".min_answers: must be 0 or more'),
        ('server = "127.0.0.1"\ntransport = "https"\ndoh_method = "PUT"\n',
         "f.toml:7: checks[0] \"d\".doh_method: must be one of 'POST', 'GET', got 'PUT'"),
        ('server = "127.0.0.1"\ndoh_method = "GET"\n',
         'f.toml:6: checks[0] "d".doh_method: is for DNS over HTTPS only (transport = "https")'),
        ('doh_method = "GET"\n',
         'f.toml:5: checks[0] "d".doh_method: needs `server`: the system resolver (getaddrinfo) '
         "answers addresses only, with no rcode or flags"),
    ],
)
def test_config_errors(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(CONFIG + extra, "f.toml")
    [problem] = info.value.problems
    assert problem.startswith(message) if "unknown rcode" not in message else message in problem


def test_bad_target_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_text(CONFIG.replace("host.test", "a..b"), "f.toml")
    assert info.value.problems[0].startswith('f.toml:4: checks[0] "d".target: invalid DNS name')


def test_dns_over_https(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "doh.test")
    with FakeDoh(server_context(files)) as s:
        ok = run_check(dns_check(target="host.test", server=s.address, transport="https",
                              server_name="doh.test", ca_file=str(files.ca)))
    assert ok.success, ok
    assert ("answers", "127.0.0.7") in ok.details
    assert "netsentry_tls_handshake_seconds" in gauges(ok)
    with FakeDoh(server_context(files), status=503) as s:
        unavailable = run_check(dns_check(target="host.test", server=s.address, transport="https",
                                       server_name="doh.test", ca_file=str(files.ca)))
    assert (unavailable.reason, unavailable.message) == (
        Reason.BAD_STATUS, "HTTP status 503 from the DoH server")
    with FakeDoh(server_context(files), content_type="text/html") as s:
        html = run_check(dns_check(target="host.test", server=s.address, transport="https",
                                server_name="doh.test", ca_file=str(files.ca)))
    assert html.reason is Reason.MALFORMED_RESPONSE
