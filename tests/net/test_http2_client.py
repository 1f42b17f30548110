"""The HTTP/2 client against a real nginx (TLS with ALPN, and h2c), and against hostile servers
of the tests' own that send what nginx never would: a reset stream, GOAWAY mid-body, a SETTINGS
flood, an endless CONTINUATION, a 16 MiB header block, a gzip bomb, a body that trickles."""

from __future__ import annotations

import asyncio
import gzip
import socket
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from exporter.net import http2_client
from exporter.net.http_client import ResponseError, ResponseTooLarge
from exporter.net.resolve import Address
from exporter.net.stream import open_stream
from exporter.net.tls import tls_client_context
from tests.support.certs import CertFiles, make_cert
from tests.support.nginx import BIG_BYTES, HELLO, Nginx


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def loopback(port: int) -> Address:
    return Address(socket.AF_INET, ("127.0.0.1", port))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("h2"), "web.test", ips=("127.0.0.1",))


@pytest.fixture(scope="module")
def nginx(certs: CertFiles) -> Iterator[Nginx]:
    with Nginx(certs) as server:
        yield server


async def fetch_tls(port: int, certs: CertFiles, target: str = "/",
                    alpn: tuple[str, ...] = ("h2", "http/1.1"), **options: Any) -> Any:
    context = tls_client_context(str(certs.ca), alpn=alpn)
    timings: dict[str, float] = {}
    async with open_stream(loopback(port), ssl_context=context, server_hostname="web.test",
                           timings=timings) as stream:
        assert stream.tls is not None
        chosen = stream.tls.selected_alpn_protocol()
        if chosen != "h2":
            return chosen, None, timings
        response = await http2_client.request(stream, "GET", f"web.test:{port}", target,
                                              timings=timings, **options)
        return chosen, response, timings


def test_nginx_over_tls_negotiates_h2_and_answers(nginx: Nginx, certs: CertFiles) -> None:
    chosen, response, timings = run(fetch_tls(nginx.port, certs))
    assert chosen == "h2"
    assert (response.status, response.body.decode(), response.http_version) == (200, HELLO, "2")
    assert ("content-type", "text/plain") in response.headers
    assert set(timings) == {"connect", "tls", "processing", "transfer"}
    assert all(seconds >= 0 for seconds in timings.values())


def test_the_same_port_speaks_http11_when_only_that_is_offered(nginx: Nginx,
                                                                certs: CertFiles) -> None:
    chosen, response, _ = run(fetch_tls(nginx.port, certs, alpn=("http/1.1",)))
    assert (chosen, response) == ("http/1.1", None)


def test_gzip_body_decoded_and_capped(nginx: Nginx, certs: CertFiles) -> None:
    headers = [("accept-encoding", "gzip")]
    _, response, _ = run(fetch_tls(nginx.port, certs, "/big", headers=headers, decode=True))
    assert dict(response.headers)["content-encoding"] == "gzip"
    assert len(response.body) == BIG_BYTES and response.received < BIG_BYTES
    cap = response.received + 10  # the compressed body fits; decompressed, it does not
    with pytest.raises(ResponseTooLarge, match=f"decompressed response body larger than {cap}"):
        run(fetch_tls(nginx.port, certs, "/big", headers=headers, decode=True, max_body=cap))
    with pytest.raises(ResponseTooLarge, match="response body larger than 1000 bytes"):
        run(fetch_tls(nginx.port, certs, "/big", max_body=1000))


def test_status_of_a_missing_page(nginx: Nginx, certs: CertFiles) -> None:
    _, response, _ = run(fetch_tls(nginx.port, certs, "/missing"))
    assert response.status == 404


def test_h2c_with_prior_knowledge(nginx: Nginx) -> None:
    async def go() -> Any:
        async with open_stream(loopback(nginx.h2c_port)) as stream:
            return await http2_client.request(stream, "GET", "web.test", "/", scheme="http")

    response = run(go())
    assert (response.status, response.body.decode(), response.http_version) == (200, HELLO, "2")


# --- hostile servers --------------------------------------------------------------------------

Script = Callable[[h2.connection.H2Connection, int, Callable[[bytes], Awaitable[None]]],
                  Awaitable[None]]


async def against(script: Script, **options: Any) -> Any:
    """The client against an in-process HTTP/2 server that plays `script` once the request's
    headers are in; the server is h2 too, so every frame it sends is well-formed unless the
    script writes raw bytes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()

        async def send(raw: bytes = b"") -> None:
            writer.write(conn.data_to_send() + raw)
            await writer.drain()

        try:
            for _ in range(100):
                data = await reader.read(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        await send()
                        await script(conn, event.stream_id, send)
                        await asyncio.sleep(30)  # the client's end, or its deadline, ends it
                await send()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with open_stream(loopback(port)) as stream:
            return await asyncio.wait_for(
                http2_client.request(stream, "GET", "hostile.test", "/", scheme="http",
                                     **options), 5)
    finally:
        server.close()


def ok_headers(**extra: str) -> list[tuple[str, str]]:
    return [(":status", "200"), *extra.items()]


def test_a_reset_stream_is_a_failure_named_by_its_code() -> None:
    async def script(conn: Any, sid: int, send: Any) -> None:
        conn.send_headers(sid, ok_headers())
        conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        await send()

    with pytest.raises(ResponseError, match=r"reset the HTTP/2 stream \(INTERNAL_ERROR\)"):
        run(against(script))


def test_goaway_mid_body() -> None:
    async def script(conn: Any, sid: int, send: Any) -> None:
        conn.send_headers(sid, ok_headers())
        conn.send_data(sid, b"half of it")
        conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        await send()

    with pytest.raises(ResponseError, match=r"GOAWAY, ENHANCE_YOUR_CALM\) before the response"):
        run(against(script))


def test_a_settings_flood_ends_at_the_frame_cap() -> None:
    async def script(conn: Any, sid: int, send: Any) -> None:
        for _ in range(http2_client.MAX_CONTROL_FRAMES + 10):
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10})
        await send()

    with pytest.raises(ResponseError, match="a SETTINGS or PING flood"):
        run(against(script))


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One raw HTTP/2 frame (RFC 9113 §4.1)."""
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags])
            + stream_id.to_bytes(4, "big") + payload)


def test_an_endless_continuation_ends_at_the_byte_cap() -> None:
    async def script(conn: Any, sid: int, send: Any) -> None:
        await send(frame(0x1, 0, sid, b"\x88"))  # HEADERS ":status 200", no END_HEADERS
        chunk = frame(0x9, 0, sid, b"\x00" * 16000)  # CONTINUATION, never END_HEADERS
        for _ in range(200):  # 3.2 MB, past the header allowance
            await send(chunk)

    with pytest.raises(ResponseError, match=r"more than \d+ body bytes and 1048576 bytes"):
        run(against(script, max_body=1000))


def test_a_16_mib_header_block_is_refused() -> None:
    # One literal header (RFC 7541 §6.2.2) with a value of about 16 MiB, properly framed: a
    # HEADERS frame and CONTINUATIONs of 16 KiB, the last with END_HEADERS.
    value_length = (16 << 20) - 64
    block = b"\x00\x05x-big\x7f" + _hpack_integer(value_length - 127) + b"v" * value_length
    pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    sent: list[int] = []

    async def script(conn: Any, sid: int, send: Any) -> None:
        for i, piece in enumerate(pieces):
            kind, flags = (0x1, 0) if i == 0 else (0x9, 0x4 if i == len(pieces) - 1 else 0)
            await send(frame(kind, flags, sid, piece))
            sent.append(len(piece))

    tracemalloc.start()
    try:
        with pytest.raises(ResponseError, match=r"more than 1000 body bytes and 1048576 bytes"):
            run(against(script, max_body=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sent) < len(block)  # the client stopped reading long before the end
    # What it held meanwhile (the server's buffers included) stayed a small multiple of the
    # header allowance, not the 16 MiB block.
    assert peak < 4 * http2_client.MAX_HEADER_BYTES, peak


def _hpack_integer(rest: int) -> bytes:
    """The continuation octets of an HPACK integer past its prefix (RFC 7541 §5.1)."""
    out = bytearray()
    while rest >= 128:
        out.append(rest % 128 + 128)
        rest //= 128
    return bytes([*out, rest])


def test_a_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB

    async def script(conn: Any, sid: int, send: Any) -> None:
        conn.send_headers(sid, ok_headers(**{"content-encoding": "gzip"}))
        for start in range(0, len(bomb), 16000):
            conn.send_data(sid, bomb[start:start + 16000])
            await send()

    with pytest.raises(ResponseTooLarge, match="decompressed response body larger than 100000"):
        run(against(script, max_body=100_000, decode=True))


def test_a_trickling_body_is_stopped_by_the_deadline() -> None:
    sent: list[int] = []

    async def script(conn: Any, sid: int, send: Any) -> None:
        conn.send_headers(sid, ok_headers())
        for _ in range(1000):
            conn.send_data(sid, b"x")
            await send()
            sent.append(1)
            await asyncio.sleep(0.05)

    async def bounded() -> None:
        await asyncio.wait_for(against(script), 0.5)

    with pytest.raises(asyncio.TimeoutError):
        run(bounded())
    assert 0 < len(sent) < 1000  # it was sending, and the deadline ended it, not the server


def test_trailers_come_back_apart_from_the_headers() -> None:
    async def script(conn: Any, sid: int, send: Any) -> None:
        conn.send_headers(sid, ok_headers(**{"content-type": "application/grpc"}))
        conn.send_data(sid, b"\0\0\0\0\0")
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
        await send()

    response = run(against(script))
    assert response.trailers == (("grpc-status", "0"),)
    assert ("content-type", "application/grpc") in response.headers
    assert response.body == b"\0\0\0\0\0"

