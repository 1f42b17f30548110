"""The tcp check's TCP_INFO: exported on Linux, absent (never zero) where it cannot be read."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.checks.base import Run
from exporter.checks.connection import record_tcp_info, record_tls, tls_context
from exporter.config.load import load_check
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError, Reason
from exporter.net.resolve import Resolver
from tests.codecs.test_tcp_info import golden
from tests.support.certs import make_cert, make_chained_cert, make_expired_cert, server_context
from tests.support.checks import run_check
from tests.support.servers import LineServer


class FakeSocket:
    """Answers getsockopt(TCP_INFO) with given bytes, or as a platform without it."""

    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        assert (level, option) == (socket.IPPROTO_TCP, socket.TCP_INFO)
        if self.raw is None:
            raise OSError(92, "Protocol not available")
        return self.raw[:size]


def recorded(raw: bytes | None) -> tuple[dict[str, float], list[tuple[str, str]]]:
    run = Run(0.0, Resolver(None))  # type: ignore[arg-type]
    record_tcp_info(run, FakeSocket(raw))
    return ({spec.name: value for (spec, _), value in zip(run.series, run.values, strict=True)},
            run.details)


def test_tcp_info_becomes_gauges() -> None:
    values, _ = recorded(golden())
    assert values == {"netsentry_tcp_rtt_seconds": 0.012345,
                      "netsentry_tcp_rttvar_seconds": 0.000678,
                      "netsentry_tcp_retransmits": 5, "netsentry_tcp_snd_cwnd": 10,
                      "netsentry_tcp_pmtu_bytes": 1500}


def test_no_tcp_info_means_no_series() -> None:
    assert recorded(None) == ({}, [])


def test_short_tcp_info_is_a_detail_not_a_value() -> None:
    values, details = recorded(golden()[:50])
    assert values == {}
    assert details == [("tcp_info", "tcp_info is 50 bytes, shorter than the 104 of every "
                                    "Linux since 2.6")]


# --- TLS and dialogs against real servers on loopback -------------------------------------------

SMTP = [("send", "220 mail.test ESMTP"), ("expect", "EHLO"), ("send", "250-mail.test"),
        ("send", "250 STARTTLS"), ("expect", "STARTTLS"), ("send", "220 go ahead"),
        ("starttls", ""), ("expect", "EHLO"), ("send", "250 mail.test"), ("expect", "QUIT"),
        ("send", "221 bye")]
SMTP_DIALOG = [{"expect": "^220 "}, {"send": "EHLO netsentry.test"}, {"expect": "^250 "},
               {"send": "STARTTLS"}, {"expect": "^220 "}, {"starttls": True},
               {"send": "EHLO netsentry.test"}, {"expect": "^250 "}, {"send": "QUIT"},
               {"expect": "^221 "}]


def tcp_check(target: str, **keys: Any) -> CheckConfig:
    return load_check({"name": "t", "kind": "tcp", "target": target, "timeout": "2s",
                              **keys}, "test")


def test_tls_handshake_version_and_certificate(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "svc.test")
    with LineServer([("send", "hello")], server_context(files), tls=True) as server:
        ok = run_check(tcp_check(server.target, tls=True, server_name="svc.test",
                              ca_file=str(files.ca)))
    assert ok.success, ok
    got = {spec.name + "".join(labels): v for spec, labels, v in ok.observations}
    assert got["netsentry_tls_version_infoTLSv1.3"] == 1
    assert got["netsentry_tls_handshake_seconds"] > 0
    # make_cert's certificates live two days.
    assert 0 < got["netsentry_tls_cert_expiry_timestamp_seconds"] - time.time() <= 2 * 86400 + 60
    assert "certificate expires" in dict(ok.details)


def test_tls_expiry_is_the_earliest_of_the_chain_the_server_sent(tmp_path: Path) -> None:
    # The server sends its leaf and an intermediate that expires 50 days before the leaf.
    files, intermediate_expiry = make_chained_cert(tmp_path, "svc.test")
    with LineServer([("send", "hello")], server_context(files), tls=True) as server:
        ok = run_check(tcp_check(server.target, tls=True, server_name="svc.test",
                                 ca_file=str(files.ca)))
    assert ok.success, ok
    [expiry] = [v for spec, _, v in ok.observations
                if spec.name == "netsentry_tls_cert_expiry_timestamp_seconds"]
    assert expiry == intermediate_expiry


def test_a_certificate_the_server_rotates_is_read_in_the_next_run(tmp_path: Path) -> None:
    # One memory across the runs, as the store keeps it: nothing read from an earlier
    # run's chain may stand for the chain the server sends now.
    first = make_cert(tmp_path, "svc.test")
    rotated, intermediate_expiry = make_chained_cert(tmp_path, "svc.test")
    context = server_context(first)
    memory: dict[str, Any] = {}
    expiries = []
    with LineServer([("send", "hello")], context, tls=True) as server:
        check = tcp_check(server.target, tls=True, tls_insecure_skip_verify=True)
        for files in (first, first, rotated, rotated, first):
            context.load_cert_chain(files.cert, files.key)
            result = run_check(check, memory=memory)
            assert result.success, result
            [expiry] = [v for spec, _, v in result.observations
                        if spec.name == "netsentry_tls_cert_expiry_timestamp_seconds"]
            expiries.append(expiry)
    assert expiries[2] == expiries[3] == intermediate_expiry
    assert expiries[0] == expiries[1] == expiries[4] < intermediate_expiry


class GarbledSession:
    """A TLS session whose peer sent bytes that are no certificate."""

    def version(self) -> str:
        return "TLSv1.3"

    def get_unverified_chain(self) -> list[bytes]:
        return [b"\x04\x00"]  # an empty OCTET STRING


def test_an_unreadable_certificate_is_a_detail_of_every_run() -> None:
    memory: dict[str, Any] = {}
    for _ in range(2):
        run = Run(0.0, Resolver(None), memory)  # type: ignore[arg-type]
        record_tls(run, GarbledSession())  # type: ignore[arg-type]
        assert ("certificate", "not a DER certificate") in run.details
        assert "netsentry_tls_cert_expiry_timestamp_seconds" not in {
            spec.name for spec, _ in run.series}


def test_tls_failures_name_their_cause(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "svc.test")
    with LineServer([], server_context(files), tls=True) as server:
        wrong_host = run_check(tcp_check(server.target, tls=True, server_name="other.test",
                                      ca_file=str(files.ca)))
        unknown_issuer = run_check(tcp_check(server.target, tls=True, server_name="svc.test"))
        insecure = run_check(tcp_check(server.target, tls=True, tls_insecure_skip_verify=True))
    assert wrong_host.reason is Reason.TLS_ERROR
    assert "other.test" in wrong_host.message
    assert unknown_issuer.reason is Reason.TLS_ERROR
    assert "issuer" in unknown_issuer.message
    assert insecure.success, insecure
    # Unverified, the expiry is still read from the certificate's DER.
    assert any(spec.name == "netsentry_tls_cert_expiry_timestamp_seconds"
               for spec, _, _ in insecure.observations)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_tls_handshake_against_silence_and_plaintext_leaks_nothing() -> None:
    # A listener that never accepts: the kernel completes the TCP handshake from its backlog,
    # the ClientHello goes unanswered, and the deadline ends the run.
    before = open_fds()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    with silent, LineServer([("send", "220 not TLS at all")]) as plain:
        port = silent.getsockname()[1]
        quiet = run_check(tcp_check(f"127.0.0.1:{port}", tls=True, timeout="500ms",
                                    tls_insecure_skip_verify=True))
        garbage = run_check(tcp_check(plain.target, tls=True, tls_insecure_skip_verify=True))
    # The runner's deadline ended it: it waited for the ServerHello until then.
    assert (quiet.reason, quiet.message) == (Reason.TIMEOUT,
                                             "no result within the 0.5s timeout"), quiet
    assert garbage.reason is Reason.TLS_ERROR, garbage
    assert open_fds() == before


def test_smtp_banner_dialog_with_starttls(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "mail.test")
    with LineServer(SMTP, server_context(files)) as server:
        ok = run_check(tcp_check(server.target, dialog=SMTP_DIALOG, server_name="mail.test",
                              ca_file=str(files.ca)))
        assert server.received == ["EHLO netsentry.test", "STARTTLS", "EHLO netsentry.test",
                                   "QUIT"]
    assert ok.success, ok
    names = {spec.name for spec, _, _ in ok.observations}
    assert {"netsentry_tls_handshake_seconds", "netsentry_tls_cert_expiry_timestamp_seconds",
            "netsentry_tcp_rtt_seconds"} <= names


def test_plaintext_sent_before_starttls_is_refused(tmp_path: Path) -> None:
    # The STARTTLS injection: a line that arrives with "220 go ahead", before the handshake,
    # must not be read later as if it had come over TLS.
    files = make_cert(tmp_path, "mail.test")
    injected = [("send", "220 go ahead\r\n250 injected") if step == ("send", "220 go ahead")
                else step for step in SMTP]
    with LineServer(injected, server_context(files)) as server:
        result = run_check(tcp_check(server.target, dialog=SMTP_DIALOG, server_name="mail.test",
                                  ca_file=str(files.ca)))
    assert result.reason is Reason.TLS_ERROR, result
    assert "before the TLS handshake" in result.message


def test_dialog_mismatch_is_unexpected_response() -> None:
    with LineServer([("send", "554 go away")]) as server:
        result = run_check(tcp_check(server.target, dialog=[{"expect": "^220 "}]))
    assert (result.reason, result.message) == (
        Reason.UNEXPECTED_RESPONSE, "the connection closed before a line matched /^220 /")


def test_dialog_config_errors() -> None:
    for dialog, message in [
        ([{"expect": "("}], "step 0: invalid regular expression"),
        ([{"sned": "x"}], "step 0: unknown step 'sned'; use expect, send or starttls"),
        ([{"send": "a\nb"}], "step 0: send one line; the line ending is added"),
        ([{"starttls": True}, {"starttls": True}], "starttls more than once"),
    ]:
        with pytest.raises(ConfigError) as info:
            tcp_check("127.0.0.1:25", dialog=dialog)
        assert message in info.value.problems[0], info.value.problems


def test_expired_certificate_is_tls_error_and_still_dated(tmp_path: Path) -> None:
    files = make_expired_cert(tmp_path, "svc.test")
    with LineServer([], server_context(files), tls=True) as server:
        expired = run_check(tcp_check(server.target, tls=True, server_name="svc.test",
                                   ca_file=str(files.ca)))
        lab = run_check(tcp_check(server.target, tls=True, tls_insecure_skip_verify=True))
    assert expired.reason is Reason.TLS_ERROR
    assert "expired" in expired.message
    # Skipping verification, the run succeeds and the past expiry is what an alert needs.
    assert lab.success, lab
    [expiry] = [v for spec, _, v in lab.observations
                if spec.name == "netsentry_tls_cert_expiry_timestamp_seconds"]
    assert expiry < time.time()


def test_checks_trusting_the_same_roots_share_one_context(tmp_path: Path) -> None:
    first, second = make_cert(tmp_path / "one", "svc.test"), make_cert(tmp_path / "two", "svc.test")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(first.ca.read_bytes())

    def context(ca_file: str, insecure: bool = False) -> Any:
        return tls_context(Run(0.0, Resolver(None)), ca_file, insecure)  # type: ignore[arg-type]

    shared = context(str(ca))
    assert context(str(ca)) is shared  # another check, another memory: the same context
    assert context(str(ca), insecure=True) is not shared
    assert context("") is not shared  # the system's roots
    # A CA file that changed on disk: checks loaded from now on get a context with its roots.
    ca.write_bytes(second.ca.read_bytes() + b"\n")
    renewed = context(str(ca))
    assert renewed is not shared
    with LineServer([("send", "hello")], server_context(second), tls=True) as server:
        ok = run_check(tcp_check(server.target, tls=True, server_name="svc.test", ca_file=str(ca)))
    assert ok.success, ok
