"""Tests of exporter.web against real loopback sockets (port 0 only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.web.prefix import Prefix
from exporter.web.server import Request, Response, Route, WebServer, parse_listen_address
from tests import virtualtime
from tests.support.certs import CertFiles, make_cert
from tests.virtualtime import VirtualClock

pytestmark = pytest.mark.timeout(60)

METRICS = b"netsentry_up 1\n"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


OPENED: list[asyncio.StreamWriter] = []  # client connections, closed at the end of run()


def run(coro: Coroutine[Any, Any, Any], clock: VirtualClock | None = None) -> Any:
    """`coro` run to completion, on virtual time with `clock` (`tests/virtualtime.py`: the
    server's and the client's timers jump; loopback sockets answer at once anyway)."""
    async def main() -> Any:
        try:
            return await asyncio.wait_for(coro, 30)
        finally:
            for writer in OPENED:
                writer.close()
            OPENED.clear()

    return asyncio.run(main()) if clock is None else virtualtime.run(main, clock)


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails a test in which asyncio logged an error, e.g. an unretrieved task exception."""
    yield
    errors = [r for r in caplog.get_records("call") if r.name == "asyncio" and r.levelno >= 40]
    assert not errors, errors[0].getMessage()


async def metrics(request: Request) -> Response:
    return Response(200, METRICS, content_type="text/plain; version=0.0.4")


async def echo(request: Request) -> Response:
    seen = {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "x-test": request.headers.get("x-test"),
        "body": request.body.decode(),
        "peer": request.peer,
    }
    return Response(200, json.dumps(seen).encode(), content_type="application/json")


async def boom(request: Request) -> Response:
    raise RuntimeError("handler bug")


async def reload(request: Request) -> Response:
    return Response(200, b"reloaded\n", headers=(("X-Extra", "yes"),))


ROUTES = [
    Route("/metrics", metrics),
    Route("/echo", echo, frozenset({"GET", "POST"})),
    Route("/boom", boom),
    Route("/-/reload", reload, frozenset({"POST"})),
    Route("/api", echo, frozenset({"PUT", "POST", "GET", "DELETE"})),
]


@contextlib.asynccontextmanager
async def serving(routes: list[Route] = ROUTES, **options: Any) -> AsyncIterator[
    tuple[WebServer, str]
]:
    server = WebServer(routes, **options)
    (address,) = await server.start(["127.0.0.1:0"])
    try:
        yield server, address
    finally:
        await server.close()


async def connect(address: str, tls: ssl.SSLContext | None = None) -> Streams:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(
        host.strip("[]"), int(port), ssl=tls, server_hostname="localhost" if tls else None
    )
    OPENED.append(writer)
    return reader, writer


async def read_response(
    reader: asyncio.StreamReader, head: bool = False
) -> tuple[int, dict[str, str], bytes]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b"" if head else await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers, body


async def fetch(
    address: str,
    method: str = "GET",
    target: str = "/metrics",
    body: bytes = b"",
    extra: str = "",
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await connect(address, tls)
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    try:
        return await read_response(reader, head=method == "HEAD")
    finally:
        writer.close()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True if the server closes the connection (EOF or reset) within timeout."""
    try:
        await asyncio.wait_for(reader.read(), timeout)  # returns only at the end of the stream
        return True
    except (ConnectionError, asyncio.IncompleteReadError):
        return True
    except asyncio.TimeoutError:
        return False


def test_get_head_404_405() -> None:
    async def main() -> None:
        async with serving() as (_, address):
            status, headers, body = await fetch(address)
            assert (status, body) == (200, METRICS)
            assert headers["content-type"] == "text/plain; version=0.0.4"
            assert headers["content-length"] == str(len(METRICS))
            assert headers["connection"] == "close"

            status, headers, body = await fetch(address, "HEAD")
            assert (status, body, headers["content-length"]) == (200, b"", str(len(METRICS)))

            status, headers, _ = await fetch(address, target="/nope")
            assert status == 404 and "content-length" in headers

            status, headers, _ = await fetch(address, "POST", "/metrics", b"x")
            assert (status, headers["allow"]) == (405, "GET, HEAD")
            status, headers, _ = await fetch(address, "GET", "/-/reload")
            assert (status, headers["allow"]) == (405, "POST")
            status, headers, _ = await fetch(address, "PATCH", "/api")
            assert (status, headers["allow"]) == (405, "DELETE, GET, POST, PUT")

            status, headers, body = await fetch(address, "POST", "/-/reload")
            assert (status, body, headers["x-extra"]) == (200, b"reloaded\n", "yes")

    run(main())


def test_head_sends_no_body_on_keep_alive() -> None:
    async def main() -> None:
        async with serving() as (_, address):
            reader, writer = await connect(address)
            writer.write(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = await read_response(reader, head=True)
            assert (status, headers["content-length"]) == (200, str(len(METRICS)))
            status, _, body = await read_response(reader)  # would misparse if HEAD had a body
            assert status == 200 and json.loads(body)["path"] == "/echo"
            writer.close()

    run(main())


def test_query_headers_and_post_body() -> None:
    async def main() -> None:
        async with serving() as (_, address):
            target = "/echo?target=a%20b&target=second&empty=&slash=%2F"
            status, _, body = await fetch(address, "POST", target, b"hello", "X-Test: 1\r\n")
            seen = json.loads(body)
            assert status == 200
            assert seen["query"] == {"target": "a b", "empty": "", "slash": "/"}
            assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/echo", "hello")
            assert seen["x-test"] == "1" and seen["peer"].startswith("127.0.0.1:")

            _, _, body = await fetch(address, target="http://example.org/ech%6F?a=1")
            assert (json.loads(body)["path"], json.loads(body)["query"]) == ("/echo", {"a": "1"})

    run(main())


def test_expect_100_continue() -> None:
    async def main() -> None:
        async with serving() as (_, address):
            reader, writer = await connect(address)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 ")
            writer.write(b"hello")
            status, _, body = await read_response(reader)
            assert (status, json.loads(body)["body"]) == (200, "hello")

    run(main())


def test_keep_alive_serves_requests_in_turn() -> None:
    async def main() -> None:
        async with serving() as (server, address):
            reader, writer = await connect(address)
            for i in range(2):
                writer.write(f"GET /echo?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status, headers, body = await read_response(reader)
                assert status == 200 and "connection" not in headers
                assert json.loads(body)["query"] == {"i": str(i)}
            assert server.connection_count == 1
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            _, headers, _ = await read_response(reader)
            assert headers["connection"] == "close"
            assert await reader.read() == b""

            reader, writer = await connect(address)
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            status, headers, body = await read_response(reader)
            assert (status, body, headers["connection"]) == (200, METRICS, "close")

    run(main())


def test_handler_exception_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving() as (_, address):
            reader, writer = await connect(address)
            writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = await read_response(reader)
            assert (status, body) == (500, b"internal server error\n")
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            writer.close()
            assert (await fetch(address))[0] == 200

    with caplog.at_level(logging.ERROR, logger="exporter.web.server"):
        run(main())
    failures = [r for r in caplog.records if r.exc_info and "/boom" in r.getMessage()]
    assert failures and isinstance(failures[0].exc_info[1], RuntimeError)  # type: ignore[index]


def test_half_open_connections_do_not_block_a_scrape() -> None:
    async def main() -> None:
        async with serving() as (server, address):
            threads = threading.active_count()
            streams = [await connect(address) for _ in range(200)]
            for _, writer in streams:
                writer.write(b"GET /metr")
            await eventually(lambda: server.connection_count == 200)
            status, _, body = await asyncio.wait_for(fetch(address), 5)
            assert (status, body) == (200, METRICS)
            assert threading.active_count() == threads
            for _, writer in streams:
                writer.close()

    run(main())


def test_header_timeout_closes_slowloris() -> None:
    """A header every 50 ms, never the end: the connection is closed at its 0.3 s deadline
    all the same (on virtual time, so the loop's clock says exactly when)."""
    async def main() -> None:
        async with serving(header_timeout=0.3) as (server, address):
            loop = asyncio.get_running_loop()
            reader, writer = await connect(address)
            started = loop.time()
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            closed = asyncio.ensure_future(closed_by_server(reader, 10))
            drips = 0
            with contextlib.suppress(ConnectionError):
                while not closed.done() and drips < 200:
                    writer.write(b"X-Drip: 1\r\n")
                    drips += 1
                    await asyncio.sleep(0.05)
            assert await closed
            # Not before the deadline; after it, within the drip that saw the close.
            assert 0.3 - 1e-6 <= loop.time() - started <= 0.35 + 1e-6
            assert 6 <= drips <= 7
            await eventually(lambda: server.connection_count == 0)

            reader, _ = await connect(address)  # silent from the start
            started = loop.time()
            assert await closed_by_server(reader)
            assert 0.3 - 1e-6 <= loop.time() - started <= 0.35 + 1e-6

    run(main(), VirtualClock())


def test_idle_timeout_closes_keep_alive_connection() -> None:
    async def main() -> None:
        async with serving(idle_timeout=0.3, header_timeout=30) as (server, address):
            reader, writer = await connect(address)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            assert server.connection_count == 1
            assert await closed_by_server(reader)
            await eventually(lambda: server.connection_count == 0)

    run(main())


def test_connection_limit_evicts_longest_waiting() -> None:
    async def main() -> None:
        async with serving(max_connections=5, header_timeout=30) as (server, address):
            idle = [await connect(address) for _ in range(5)]
            await eventually(lambda: server.connection_count == 5)
            status, _, body = await fetch(address)
            assert (status, body) == (200, METRICS)
            assert await closed_by_server(idle[0][0])  # the oldest one made room
            assert not await closed_by_server(idle[-1][0], 0.2)
            assert server.connection_count <= 5

    run(main())


def test_connection_limit_with_every_connection_busy_refuses_new() -> None:
    async def main() -> None:
        release = asyncio.Event()
        entered = 0

        async def block(request: Request) -> Response:
            nonlocal entered
            entered += 1
            await release.wait()
            return Response(200, b"done\n")

        async with serving([Route("/block", block)], max_connections=2) as (server, address):
            busy = [asyncio.ensure_future(fetch(address, target="/block")) for _ in range(2)]
            await eventually(lambda: entered == 2)
            reader, _ = await connect(address)
            assert await closed_by_server(reader)
            assert entered == 2 and server.connection_count == 2
            release.set()
            assert [(await f)[2] for f in busy] == [b"done\n", b"done\n"]

    run(main())


def test_past_max_handlers_a_request_is_a_503_at_once_but_the_unlimited_paths() -> None:
    async def main() -> None:
        release = asyncio.Event()
        running = peak = 0

        async def block(request: Request) -> Response:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
            return Response(200, b"done\n")

        routes = [Route("/block", block), Route("/-/healthy", metrics)]
        async with serving(routes, max_handlers=2, unlimited=frozenset({"/-/healthy"})) as (
                server, address):
            held = [asyncio.ensure_future(fetch(address, target="/block")) for _ in range(2)]
            await eventually(lambda: running == 2)
            refused = await asyncio.gather(*(fetch(address, target="/block") for _ in range(3)))
            assert [status for status, _, _ in refused] == [503] * 3
            assert refused[0][1]["retry-after"] == "1"
            assert b"--web.max-requests" in refused[0][2]
            assert (await fetch(address, target="/-/healthy"))[0] == 200  # full, and answers
            assert server.handlers_running == 2 and peak == 2
            release.set()
            assert [(await f)[0] for f in held] == [200, 200]
            assert server.handlers_running == 0
            assert (await fetch(address, target="/block"))[0] == 200  # room again

    run(main())


def test_max_handlers_0_is_no_limit() -> None:
    async def main() -> None:
        release = asyncio.Event()
        running = 0

        async def block(request: Request) -> Response:
            nonlocal running
            running += 1
            await release.wait()
            return Response(200, b"done\n")

        async with serving([Route("/block", block)], max_handlers=0) as (_, address):
            calls = [asyncio.ensure_future(fetch(address, target="/block")) for _ in range(40)]
            await eventually(lambda: running == 40)
            release.set()
            assert [(await f)[0] for f in calls] == [200] * 40

    run(main())


PREFIXED = Prefix("/ns", "/ns")


@pytest.mark.parametrize(("prefix", "target", "status", "location"), [
    (PREFIXED, "/ns/metrics", 200, None),
    (PREFIXED, "/ns/echo?a=1", 200, None),
    (PREFIXED, "/metrics", 404, None),
    (PREFIXED, "/nsmetrics", 404, None),
    (PREFIXED, "/ns", 302, "/ns/"),
    (PREFIXED, "/ns?q=x", 302, "/ns/?q=x"),
    (PREFIXED, "/", 302, "/ns/"),
    (PREFIXED, "/ns/", 200, None),
    (PREFIXED, "/ns/nothing", 404, None),
    # Behind a proxy that maps /mon/ to /: the agent serves at /, redirects under /mon.
    (Prefix("/", "/mon"), "/metrics", 200, None),
    (Prefix("/", "/mon"), "/", 200, None),
    # A proxy that maps /mon/ to /ns/.
    (Prefix("/ns", "/mon"), "/ns", 302, "/mon/"),
])
def test_routes_under_a_prefix(prefix: Prefix, target: str, status: int,
                               location: str | None) -> None:
    async def index(request: Request) -> Response:
        return Response(200, b"index " + request.path.encode())

    async def main() -> None:
        routes = [*ROUTES, Route("/", index)]
        async with serving(routes, prefix=prefix) as (_, address):
            got, headers, body = await fetch(address, target=target)
            assert (got, headers.get("location")) == (status, location), body
            if target.startswith("/ns/echo"):  # the handler sees the path under the prefix
                assert json.loads(body)["path"] == "/echo"

    run(main())


def test_serves_on_listening_sockets_it_is_given() -> None:
    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        server = WebServer(ROUTES)
        bound = await server.start([], [sock])
        try:
            assert bound == [f"127.0.0.1:{sock.getsockname()[1]}"]
            assert (await fetch(bound[0]))[2] == METRICS
        finally:
            await server.close()

    run(main())


def test_too_large_request_is_a_413() -> None:
    async def main() -> None:
        async with serving(max_request_bytes=1000) as (_, address):
            assert (await fetch(address, "POST", "/echo", b"x" * 1000))[0] == 200
            # Declared too large: refused at once, before any of the body arrives.
            reader, writer = await connect(address)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
            status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
            assert (status, headers["connection"]) == (413, "close")
            writer.close()

            # Sent regardless: the response must survive the unread megabytes behind it.
            status, headers, _ = await fetch(address, "POST", "/echo", b"x" * (8 << 20))
            assert (status, headers["connection"]) == (413, "close")

            reader, writer = await connect(address)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")  # no length known in advance
            status, headers, _ = await read_response(reader)
            assert (status, headers["connection"]) == (413, "close")
            assert await closed_by_server(reader)

    run(main())


def test_malformed_request_is_a_400() -> None:
    async def main() -> None:
        async with serving() as (server, address):
            reader, writer = await connect(address)
            writer.write(b"\x00\x01 garbage\r\n\r\n")
            status, headers, _ = await read_response(reader)
            assert (status, headers["connection"]) == (400, "close")
            assert await closed_by_server(reader)
            await eventually(lambda: server.connection_count == 0)

    run(main())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":10025", (None, 10025)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:10025", ("::1", 10025)),
        ("[::]:65535", ("::", 65535)),
        ("localhost:9000", ("localhost", 9000)),
    ],
)
def test_parse_listen_address(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("10025", "missing port"),
        ("localhost", "missing port"),
        ("localhost:", "not a number"),
        ("host:http", "not a number"),
        (":-1", "not a number"),
        (":65536", "out of range"),
        ("::1:10025", "brackets"),
        ("[::1]", "missing port"),
        ("[nonsense]:80", "not an IPv6 address"),
        ("bad host:80", "invalid host"),
    ],
)
def test_parse_listen_address_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen_address(text)


def test_start_on_taken_port_names_the_address() -> None:
    async def main() -> None:
        async with serving() as (_, address):
            other = WebServer(ROUTES)
            with pytest.raises(OSError, match=f"listen on {address}: address already in use"):
                await other.start(["127.0.0.1:0", address])
            await other.close()
            with pytest.raises(ValueError, match="missing port"):
                await other.start(["localhost"])

    run(main())


def test_listens_on_all_interfaces_without_threads() -> None:
    async def main() -> None:
        threads = threading.active_count()
        server = WebServer(ROUTES)
        addresses = await server.start([":0"])
        try:
            assert "0.0.0.0" in addresses[0] or "[::]" in addresses[0]
            port = addresses[0].rpartition(":")[2]
            assert (await fetch(f"127.0.0.1:{port}" if "0.0.0.0" in addresses[0]
                                else f"[::1]:{port}"))[0] == 200
            assert threading.active_count() == threads  # no resolver thread either
        finally:
            await server.close()

    run(main())


def test_listens_on_ipv6_and_several_addresses() -> None:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback")

    async def main() -> None:
        server = WebServer(ROUTES)
        addresses = await server.start(["[::1]:0", "127.0.0.1:0"])
        try:
            assert addresses[0].startswith("[::1]:") and addresses[1].startswith("127.0.0.1:")
            for address in addresses:
                assert (await fetch(address))[0] == 200
        finally:
            await server.close()

    run(main())


def test_close_is_prompt_with_idle_connections_and_stuck_handler() -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def stuck(request: Request) -> Response:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()
            raise AssertionError("unreachable")

        server = WebServer([Route("/stuck", stuck)], header_timeout=60)
        (address,) = await server.start(["127.0.0.1:0"])
        idle = [await connect(address) for _ in range(20)]
        idle[0][1].write(b"GET /stu")
        request = asyncio.ensure_future(fetch(address, target="/stuck"))
        await eventually(lambda: server.connection_count == 21)
        await asyncio.wait_for(server.close(), 3)
        assert cancelled.is_set() and server.connection_count == 0
        assert await closed_by_server(idle[5][0], 1)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await request

    run(main())


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("tls"), "localhost", ips=["127.0.0.1"])


def test_tls_with_idle_plain_connections(certificate: CertFiles) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certificate.cert, certificate.key)
    client_tls = ssl.create_default_context(cafile=str(certificate.ca))

    async def main() -> None:
        async with serving(ssl=server_tls, header_timeout=0.5) as (_, address):
            threads = threading.active_count()
            silent = [await connect(address) for _ in range(20)]  # never start the handshake
            status, _, body = await asyncio.wait_for(fetch(address, tls=client_tls), 5)
            assert (status, body) == (200, METRICS)
            assert await closed_by_server(silent[0][0])  # the handshake has a deadline
            assert threading.active_count() == threads

    run(main())



# --- streamed responses -------------------------------------------------------------------------


class Chunks:
    """A streamed response of `count` chunks of `size` bytes; counts what the server pulled
    and whether the stream was closed; raises after `fail_after` chunks if set."""

    def __init__(self, count: int, size: int, fail_after: int | None = None) -> None:
        self.count, self.size, self.fail_after = count, size, fail_after
        self.pulled = 0
        self.closed = False

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.count):
                if i == self.fail_after:
                    raise RuntimeError("render bug")
                self.pulled += 1
                yield bytes([65 + i % 26]) * self.size
                await asyncio.sleep(0)
        finally:
            self.closed = True

    def route(self) -> Route:
        async def handler(request: Request) -> Response:
            return Response(200, stream=self.stream())  # type: ignore[arg-type]
        return Route("/big", handler)

    def body(self) -> bytes:
        return b"".join(bytes([65 + i % 26]) * self.size for i in range(self.count))


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"
        if size == 0:
            return bytes(body)


def test_a_streamed_response_is_chunked_and_keeps_the_connection() -> None:
    chunks = Chunks(40, 10_000)

    async def main() -> None:
        async with serving([*ROUTES, chunks.route()]) as (_, address):
            reader, writer = await connect(address)
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            assert "transfer-encoding: chunked" in head and "content-length" not in head
            assert await read_chunked(reader) == chunks.body()
            status, _, body = await read_response(reader)  # the same connection goes on
            assert (status, body) == (200, METRICS)
            # HTTP/1.0 has no chunks: the body runs to the close.
            reader, writer = await connect(address)
            writer.write(b"GET /big HTTP/1.0\r\n\r\n")
            response = await reader.read()
            assert response.split(b"\r\n\r\n", 1)[1] == chunks.body()
            # HEAD: the stream is closed without being run.
            before = chunks.pulled
            reader, writer = await connect(address)
            writer.write(b"HEAD /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await reader.read()).endswith(b"\r\n\r\n")
            assert chunks.pulled == before

    run(main())


def test_a_client_that_does_not_read_holds_the_stream_back() -> None:
    chunks = Chunks(200, 256 * 1024)  # 50 MiB

    async def main() -> None:
        async with serving([chunks.route()]) as (_, address):
            host, _, port = address.rpartition(":")
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            # The server pulls until the socket and its own queue are full, then waits.
            loop = asyncio.get_running_loop()
            last, settled_at = -1, loop.time()
            while loop.time() - settled_at < 0.5:
                if chunks.pulled != last:
                    last, settled_at = chunks.pulled, loop.time()
                await asyncio.sleep(0.05)
            # At most what the kernel's send buffer can take (it grows up to tcp_wmem's
            # maximum), the client's small receive buffer, and the server's own 1 MiB queue.
            wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
            bound = (wmem_max + 2 * 64 * 1024 + (1 << 20)) // chunks.size + 2
            assert 0 < chunks.pulled <= min(bound, chunks.count - 1), (chunks.pulled, bound)
            # Reading it all gets all of it.
            reader, writer = await asyncio.open_connection(sock=sock)
            OPENED.append(writer)
            await reader.readuntil(b"\r\n\r\n")
            assert await read_chunked(reader) == chunks.body()
            assert chunks.pulled == chunks.count and chunks.closed

    run(main())


def test_a_stream_that_fails_cuts_the_response_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chunks = Chunks(10, 1000, fail_after=3)

    async def main() -> None:
        async with serving([*ROUTES, chunks.route()]) as (_, address):
            reader, writer = await connect(address)
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            with pytest.raises((asyncio.IncompleteReadError, ValueError)):
                await read_chunked(reader)  # cut short: never a complete, wrong body
            assert chunks.closed
            status, _, body = await fetch(address)
            assert (status, body) == (200, METRICS)

    with caplog.at_level(logging.ERROR, logger="exporter.web.server"):
        run(main())
    assert any("render bug" in str(r.exc_info) for r in caplog.records if r.exc_info)
