"""The websocket check against a real WebSocket server (the `websockets` library's, on a thread),
plain and over TLS; a server that refuses the upgrade; a fake of ours with a wrong accept key,
and one that closes in the same write as its 101.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.config.load import load_check, load_text
from exporter.errors import ConfigError, Reason
from tests.support.agent import ROOT, Agent
from tests.support.certs import make_cert, server_context
from tests.support.checks import run_check, sample
from tests.support.httpservers import HttpServer, Reply
from tests.support.server import ThreadedServer
from tests.support.wsservers import echo_server


class RawUpgrade(ThreadedServer):
    """Answers any upgrade with 101, in one write with `then` (frames of its own) after it; the
    Sec-WebSocket-Accept answers the client's key, or another key where `wrong_accept`."""

    def __init__(self, *, wrong_accept: bool = False, then: bytes = b"") -> None:
        super().__init__(tcp=True)
        self.wrong_accept = wrong_accept
        self.then = then
        self.start()

    def handle_connection(self, conn: socket.socket, deadline: float) -> None:
        received = b""
        for _ in range(100):
            if b"\r\n\r\n" in received:
                break
            chunk = conn.recv(4096)
            if not chunk:
                return
            received += chunk
        [key] = [line.split(b":", 1)[1].strip() for line in received.split(b"\r\n")
                 if line.lower().startswith(b"sec-websocket-key:")]
        guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
        accept = base64.b64encode(hashlib.sha1(
            (b"not the key" if self.wrong_accept else key) + guid).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                     + self.then)
        conn.recv(4096)  # the client's close, or its end


def test_handshake_send_expect_and_close() -> None:
    with echo_server() as port:
        result = run_check("websocket", target=f"ws://127.0.0.1:{port}/echo", send="ping 42",
                           expect=r"^ping \d+$")
    assert result.success, result.message
    handshake = sample(result, "netsentry_websocket_handshake_seconds")
    assert handshake is not None and handshake > 0
    assert sample(result, "netsentry_tcp_connect_seconds") is not None
    assert sample(result, "netsentry_http_status_code") == 101
    assert sample(result, "netsentry_tls_handshake_seconds") is None
    details = dict(result.details)
    assert details["message"].startswith("7 bytes")
    assert details["close"] == "code 1000"


def test_handshake_alone() -> None:
    with echo_server() as port:
        result = run_check("websocket", target=f"ws://127.0.0.1:{port}")
    assert result.success, result.message
    assert "message" not in dict(result.details)


def test_wss_with_ca_file_and_server_name(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "ws.test")
    with echo_server(server_context(files)) as port:
        result = run_check("websocket", target=f"wss://127.0.0.1:{port}/", send="hello",
                           expect="^hello$", server_name="ws.test", ca_file=str(files.ca))
    assert result.success, result.message
    assert sample(result, "netsentry_tls_version_info", version="TLSv1.3") == 1
    assert sample(result, "netsentry_tls_cert_expiry_timestamp_seconds") is not None
    assert sample(result, "netsentry_tls_handshake_seconds") is not None


def test_wss_untrusted_is_a_tls_error(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "ws.test")
    with echo_server(server_context(files)) as port:
        result = run_check("websocket", target=f"wss://127.0.0.1:{port}/", server_name="ws.test")
    assert result.reason is Reason.TLS_ERROR
    assert "unknown issuer" in result.message


def test_expect_not_matched() -> None:
    with echo_server() as port:
        result = run_check("websocket", target=f"ws://127.0.0.1:{port}", send="hello",
                           expect="^bye$")
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert result.message == "the first message does not match /^bye$/"


def test_message_over_the_cap() -> None:
    with echo_server() as port:
        result = run_check("websocket", target=f"ws://127.0.0.1:{port}", send="big",
                           expect="x", max_message_bytes=1000)
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert "larger than 1000 bytes" in result.message


def test_refused_upgrade_is_bad_status() -> None:
    with echo_server() as port:
        result = run_check("websocket", target=f"ws://127.0.0.1:{port}/private")
    assert result.reason is Reason.BAD_STATUS
    assert "HTTP status 403" in result.message
    assert sample(result, "netsentry_http_status_code") == 403


def test_plain_http_server_refuses_the_upgrade() -> None:
    with HttpServer({"/": Reply(200, b"not a websocket")}) as server:
        result = run_check("websocket", target=f"ws://127.0.0.1:{server.port}/")
    assert result.reason is Reason.BAD_STATUS
    assert "HTTP status 200" in result.message


def test_wrong_accept_key_is_malformed() -> None:
    with RawUpgrade(wrong_accept=True) as server:
        result = run_check("websocket", target=f"ws://127.0.0.1:{server.port}/")
    assert result.reason is Reason.MALFORMED_RESPONSE
    assert "Sec-WebSocket-Accept" in result.message


def test_refused_connection() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = run_check("websocket", target=f"ws://127.0.0.1:{port}/")
    assert result.reason is Reason.REFUSED


@pytest.mark.parametrize(("keys", "says"), [
    ({"target": "http://example.test/"}, "expected a ws:// or wss:// URL"),
    ({"target": "ws://example.test/#x"}, "no fragment"),
    ({"target": "ws://example.test/", "expect": "("}, "invalid regular expression"),
    ({"target": "ws://example.test/", "headers": {"Upgrade": "h2c"}},
     "set by the WebSocket handshake"),
    ({"target": "ws://example.test/", "server_name": "x.test"}, "use a wss:// URL"),
    ({"target": "ws://example.test/", "max_message_bytes": 0}, "must be more than 0"),
])
def test_config_errors(keys: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_check({"name": "w", "kind": "websocket", **keys}, "checks.toml:7")
    assert says in str(caught.value)


def test_another_scheme_is_a_config_error_with_its_line() -> None:
    text = '[[checks]]\nname = "w"\nkind = "websocket"\ntarget = "https://example.test/"\n'
    with pytest.raises(ConfigError) as caught:
        load_text(text, "f.toml")
    assert caught.value.problems == [
        "f.toml:4: checks[0] \"w\".target: expected a ws:// or wss:// URL, got "
        "'https://example.test/'"]


def test_netsentry_probe_websocket() -> None:
    with echo_server() as port:
        done = subprocess.run([sys.executable, "-m", "exporter", "probe", "websocket",
                               f"ws://127.0.0.1:{port}/"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        raw = subprocess.run([sys.executable, "-m", "exporter", "probe", "websocket",
                              f"ws://127.0.0.1:{port}/", "--metrics"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert (done.returncode, raw.returncode) == (0, 0), done.stdout + done.stderr
    assert re.search(r"^websocket handshake +[\d.]+ (ns|µs|ms|s)$", done.stdout, re.M), done.stdout
    assert re.search(r"^handshake +[\d.]+ (ns|µs|ms|s)$", done.stdout, re.M), done.stdout
    assert re.search(r"^netsentry_websocket_handshake_seconds +[\d.e-]+$", raw.stdout, re.M)


def test_probe_template_runs_a_websocket_check(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text("""
[probe]
allow = ["127.0.0.1/32"]

[probe.templates.ws_echo]
kind = "websocket"
send = "hello"
expect = "^hello$"
""")
    with echo_server() as port, Agent(path) as agent:
        status, _, body = agent.fetch(
            "GET", f"/probe?template=ws_echo&target=ws://127.0.0.1:{port}/")
        refused, _, refused_body = agent.fetch(
            "GET", f"/probe?template=ws_echo&target=ws://127.0.0.1:{port}/private")
    assert status == 200 and refused == 200
    assert sample(body.decode(), "netsentry_probe_success") == 1
    assert (sample(body.decode(), "netsentry_websocket_handshake_seconds") or 0) > 0
    assert sample(refused_body.decode(), "netsentry_probe_success") == 0
    assert sample(refused_body.decode(), "netsentry_probe_failure_reason",
                  reason="bad_status") == 1


def test_a_server_that_closes_before_a_message() -> None:
    with echo_server() as port:
        result = run_check("websocket", target=f"ws://127.0.0.1:{port}/busy", send="hello",
                           expect="hello")
    assert result.reason is Reason.UNEXPECTED_RESPONSE
    assert result.message == ("the server closed the WebSocket before a message with code 1013 "
                              "(try again later)")


def test_a_close_that_comes_with_the_101_is_read_not_sent_into() -> None:
    # The 101 and a close frame (1013, "busy") in one segment: the close is pending before the
    # message could be sent, so the run says what the server said (the echo server's /busy
    # above may send them apart or together, as its thread goes).
    close = bytes([0x88, 6]) + (1013).to_bytes(2, "big") + b"busy"
    with RawUpgrade(then=close) as server:
        result = run_check("websocket", target=f"ws://{server.address}/", send="hello")
    assert (result.reason, result.message) == (
        Reason.UNEXPECTED_RESPONSE, "the server closed the WebSocket before a message with code "
        "1013 (busy)")
