"""The grpc check against a real gRPC server: grpcio with grpcio-health-checking's
HealthServicer, in this process on 127.0.0.1, plaintext (h2c with prior knowledge) and TLS;
its serving status flipped between runs, a service it does not know, a TLS server without
h2, broken framing from an h2 server of the test's, config errors, `netsentry probe grpc` and a
/probe template."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from exporter.config.load import load_text
from exporter.errors import ConfigError, Reason
from tests.support.agent import ROOT, Agent
from tests.support.certs import make_cert, server_context
from tests.support.checks import run_check, sample
from tests.support.servers import LineServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """A grpcio server with the standard health service on 127.0.0.1, port 0."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.servicer = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        assert self.port
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, service: str, status: Any) -> None:
        self.servicer.set(service, status)

    def stop(self) -> None:
        self.server.stop(None).wait(5)


@pytest.fixture
def server() -> Iterator[Health]:
    health_server = Health()
    try:
        yield health_server
    finally:
        health_server.stop()


def statuses(result: Any) -> dict[str, float]:
    return {name: sample(result, "netsentry_grpc_healthcheck_status", status=name)
            for name in ("SERVING", "NOT_SERVING", "UNKNOWN", "SERVICE_UNKNOWN")}


def test_serving_then_not_serving(server: Health) -> None:
    server.set("", SERVING)
    ok = run_check("grpc", target=server.target)
    assert ok.success, ok
    assert statuses(ok) == {"SERVING": 1, "NOT_SERVING": 0, "UNKNOWN": 0, "SERVICE_UNKNOWN": 0}
    assert sample(ok, "netsentry_grpc_status_code") == 0
    assert sample(ok, "netsentry_tcp_connect_seconds") > 0
    server.set("", NOT_SERVING)
    bad = run_check("grpc", target=server.target)
    assert not bad.success
    assert bad.reason is Reason.BAD_STATUS
    assert bad.message == "the server is NOT_SERVING, not SERVING"
    assert statuses(bad) == {"SERVING": 0, "NOT_SERVING": 1, "UNKNOWN": 0,
                             "SERVICE_UNKNOWN": 0}


def test_a_named_service(server: Health) -> None:
    server.set("shop.Cart", SERVING)
    server.set("", NOT_SERVING)
    ok = run_check("grpc", target=server.target, service="shop.Cart")
    assert ok.success, ok
    server.set("shop.Cart", NOT_SERVING)
    bad = run_check("grpc", target=server.target, service="shop.Cart")
    assert (bad.reason, bad.message) == (Reason.BAD_STATUS,
                                         "service 'shop.Cart' is NOT_SERVING, not SERVING")


def test_an_unknown_service_is_not_found(server: Health) -> None:
    result = run_check("grpc", target=server.target, service="no.Such")
    assert not result.success
    assert result.reason is Reason.BAD_STATUS
    assert result.message == ("NOT_FOUND: the health service does not know service "
                              "'no.Such'"), result.message
    assert sample(result, "netsentry_grpc_status_code") == 5


def test_over_tls(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "grpc.test", ips=["127.0.0.1"])
    credentials = grpc.ssl_server_credentials([(files.key.read_bytes(),
                                                files.cert.read_bytes())])
    tls_server = Health(credentials)
    try:
        tls_server.set("", SERVING)
        ok = run_check("grpc", target=tls_server.target, tls=True, server_name="grpc.test",
                       ca_file=str(files.ca))
        untrusted = run_check("grpc", target=tls_server.target, tls=True,
                              server_name="grpc.test")
        plaintext = run_check("grpc", target=tls_server.target)
    finally:
        tls_server.stop()
    assert ok.success, ok
    assert sample(ok, "netsentry_tls_handshake_seconds") > 0
    assert sample(ok, "netsentry_grpc_status_code") == 0
    assert untrusted.reason is Reason.TLS_ERROR, untrusted
    assert not plaintext.success


def test_tls_without_h2_is_an_unexpected_response(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "plain.test")
    with LineServer([], server_context(files), tls=True) as line_server:
        result = run_check("grpc", target=line_server.target, tls=True,
                           server_name="plain.test", ca_file=str(files.ca))
    assert result.reason is Reason.UNEXPECTED_RESPONSE, result
    assert "did not negotiate HTTP/2" in result.message


class BrokenFraming:
    """An HTTP/2 server (h2, cleartext) that answers one request with a gRPC response whose
    body is `body`, on a thread of its own; one connection."""

    def __init__(self, body: bytes, trailers: list[tuple[str, str]]) -> None:
        self.body, self.trailers = body, trailers
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5)
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(5)
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2conn.initiate_connection()
        try:
            for _ in range(50):
                data = conn.recv(65536)
                if not data:
                    return
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        sid = event.stream_id
                        h2conn.send_headers(sid, [(":status", "200"),
                                                  ("content-type", "application/grpc")])
                        h2conn.send_data(sid, self.body)
                        h2conn.send_headers(sid, self.trailers, end_stream=True)
                conn.sendall(h2conn.data_to_send())
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.mark.parametrize("body, words", [
    (b"\x00\x00\x00\x00\x09\x08\x01", "truncated"),
    (b"\x01\x00\x00\x00\x02\x08\x01", "compressed"),
    (b"\x00\x00\x00\x00\x01\x0b", "wire type 3"),
    (b"", "0 messages"),
])
def test_broken_framing_is_malformed(body: bytes, words: str) -> None:
    broken = BrokenFraming(body, [("grpc-status", "0")])
    try:
        result = run_check("grpc", target=broken.target)
    finally:
        broken.close()
    assert result.reason is Reason.MALFORMED_RESPONSE, result
    assert words in result.message


def test_a_missing_grpc_status_is_malformed() -> None:
    broken = BrokenFraming(b"\x00\x00\x00\x00\x02\x08\x01", [("x-other", "1")])
    try:
        result = run_check("grpc", target=broken.target)
    finally:
        broken.close()
    assert (result.reason, result.message) == (Reason.MALFORMED_RESPONSE,
                                               "the response has no grpc-status")


@pytest.mark.parametrize("body, expected", [
    ('target = "localhost:50051/grpc.health.v1.Health"', "without a scheme or path"),
    ('target = "grpc://localhost:50051"', "without a scheme or path"),
    ('target = "localhost"', "expected host:port"),
    ('target = "localhost:1"\nserver_name = "x.test"', "applies to TLS only"),
    ('target = "localhost:1"\nfamily = "ipv5"', "family"),
])
def test_config_errors(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text('[[checks]]\nname = "rpc"\nkind = "grpc"\n' + body, "f.toml")
    (problem,) = caught.value.problems
    assert expected in problem, problem
    line = 4 + body.count("\n")  # the key's own line
    assert problem.startswith(f"f.toml:{line}:"), problem



def probe_table(target: str, *flags: str) -> tuple[int, dict[str, str]]:
    """`netsentry probe grpc TARGET`: its exit code and its table (first column → the rest)."""
    done = subprocess.run([sys.executable, "-m", "exporter", "probe", "grpc", target, *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    rows = (line.split("  ", 1) for line in done.stdout.splitlines() if "  " in line)
    return done.returncode, {key.strip(): value.strip() for key, value in rows}


def test_netsentry_probe_grpc(server: Health) -> None:
    server.set("", NOT_SERVING)
    code, table = probe_table(server.target)
    assert (code, table["result"], table["serving status"]) == (
        1, "FAILURE (bad_status): the server is NOT_SERVING, not SERVING", "NOT_SERVING")
    assert table["grpc healthcheck status"] == "NOT_SERVING"  # the state set, as one row
    code, raw = probe_table(server.target, "--metrics")
    assert code == 1
    assert float(raw['netsentry_grpc_healthcheck_status{status="NOT_SERVING"}']) == 1
    assert float(raw['netsentry_grpc_healthcheck_status{status="SERVING"}']) == 0
    server.set("", SERVING)
    code, table = probe_table(server.target)
    assert (code, table["result"], table["grpc status"]) == (0, "success", "0 OK")
    assert (table["grpc healthcheck status"], table["grpc status code"]) == ("SERVING", "0")
    code, raw = probe_table(server.target, "--metrics")
    assert (code, float(raw['netsentry_grpc_healthcheck_status{status="SERVING"}'])) == (0, 1)


def test_probe_template_runs_a_grpc_check(server: Health, tmp_path: Path) -> None:
    server.set("orders", SERVING)
    path = tmp_path / "netsentry.toml"
    path.write_text("""
[probe]
allow = ["127.0.0.1/32"]

[probe.templates.grpc_orders]
kind = "grpc"
service = "orders"
""")
    with Agent(path) as agent:
        status, _, body = agent.fetch("GET", f"/probe?template=grpc_orders&target={server.target}")
        server.set("orders", NOT_SERVING)
        _, _, down = agent.fetch("GET", f"/probe?template=grpc_orders&target={server.target}")
    assert status == 200
    assert sample(body.decode(), "netsentry_probe_success") == 1
    assert sample(body.decode(), "netsentry_grpc_healthcheck_status", status="SERVING") == 1
    assert sample(down.decode(), "netsentry_probe_success") == 0
    assert sample(down.decode(), "netsentry_probe_failure_reason", reason="bad_status") == 1
