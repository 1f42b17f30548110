"""The HTTP/1.1 server (listening, connections, framing, routing).

It replaces prometheus_client's built-in server, which stalls under one idle TLS connection and
keeps one thread per slow client. Everything here runs on the event loop, without threads; h11
does the protocol. Every client is bounded in time (header, idle and write timeouts, the TLS
handshake), in size (`max_request_bytes`) and in number (`max_connections`, evicting the
connection that has waited longest for a request). At most `max_handlers` handlers run at a
time (`--web.max-requests`); a request past them is answered 503 at once, as promhttp's
MaxRequestsInFlight answers, rather than queued behind them — but for `unlimited` paths
(`/-/healthy`), which neither count nor wait. Routes are served under a prefix
(`web.prefix`), on addresses of the server's own or on sockets passed to it (systemd's). A
response is a body, or a stream sent as it is produced (chunked), which a client that does
not read holds back once 1 MiB is queued for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import logging
import math
import os
import socket
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import h11

from exporter.web.prefix import ROOT, Prefix

log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_LINGER_SECONDS = 1.0
_STREAM_QUEUE_BYTES = 1 << 20  # a streamed response queued beyond this waits for the client
_CLOSE_GRACE_SECONDS = 1.0
# The server frames every response itself; a handler's copy of these would contradict it.
_FRAMING_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    peer: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    # Sent as it comes instead of `body`: chunked to HTTP/1.1 clients, up to the close to
    # HTTP/1.0 ones. A page of 10,000 checks need not be held whole (26 MiB, and copies).
    stream: AsyncGenerator[bytes, None] | None = field(default=None, compare=False)


Handler = Callable[[Request], Awaitable[Response]]
# Runs before routing: None lets the request through, a Response answers it (e.g. a 401).
Guard = Callable[[Request], Awaitable[Response | None]]
# Asked once a TLS handshake is done, with the client's certificate (ssl's getpeercert() form,
# None without one): False closes the connection before any request is read.
Admit = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    handler: Handler
    methods: frozenset[str] = frozenset({"GET", "HEAD"})


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """Prometheus-style listen address: ":10025" (all interfaces -> host None), "127.0.0.1:0",
    "[::1]:10025", "localhost:9000". Raises ValueError for anything else."""
    if not text:
        raise ValueError("empty listen address, want host:port or :port")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"listen address {text!r}: missing port, want [IPv6]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"listen address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"listen address {text!r}: missing port, want host:port or :port")
        if ":" in host:
            raise ValueError(f"listen address {text!r}: write an IPv6 address in brackets, "
                             "e.g. [::1]:10025")
        if any(c.isspace() or c in "/[]" for c in host):
            raise ValueError(f"listen address {text!r}: invalid host {host!r}")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"listen address {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"listen address {text!r}: port {port} is out of range 0-65535")
    return host or None, port


class _TooLarge(Exception):
    pass


@dataclass(eq=False)
class _Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    task: asyncio.Task[Any] | None
    peer: str
    waiting_since: float
    busy: bool = False  # running a handler or writing: not to be evicted

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.writer.transport.abort()


class WebServer:
    """Serves routes on one or more listen addresses; see the module docstring for the bounds."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        max_connections: int = 512,
        max_handlers: int = 32,
        header_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        write_timeout: float = 60.0,
        max_request_bytes: int = 1 << 20,
        ssl: SSLContext | None = None,
        guard: Guard | None = None,
        headers: Callable[[], Sequence[tuple[str, str]]] = tuple,
        prefix: Prefix = ROOT,
        unlimited: frozenset[str] = frozenset(),
        admit: Admit | None = None,
    ) -> None:
        if max_connections < 1 or max_handlers < 0:
            raise ValueError("max_connections must be at least 1, max_handlers at least 0")
        self._routes = {route.path: route for route in routes}
        self._max_connections = max_connections
        self._max_handlers = max_handlers  # 0: no limit
        self._running = 0  # handlers running, but the unlimited paths'
        self._unlimited = unlimited
        self._prefix = prefix
        self._admit = admit
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self._max_request_bytes = max_request_bytes
        self._ssl = ssl
        self._guard = guard
        # Asked at every response (the web config may change while serving): headers added to
        # every response that does not set them itself.
        self._headers = headers
        self._servers: list[asyncio.Server] = []
        self._clients: set[_Client] = set()
        self._closing = False

    @property
    def connection_count(self) -> int:
        return len(self._clients)

    @property
    def handlers_running(self) -> int:
        return self._running

    async def start(self, addresses: Sequence[str],
                    sockets: Sequence[socket.socket] = ()) -> list[str]:
        """Listen on every address and on every listening socket given (systemd's); return the
        bound addresses, one per listening socket."""
        bound: list[str] = []
        try:
            for address in addresses:
                bound += await self._listen(address)
            for sock in sockets:
                server = await asyncio.start_server(
                    self._accept, sock=sock, ssl=self._ssl,
                    ssl_handshake_timeout=self._header_timeout if self._ssl else None)
                self._servers.append(server)
                bound.append(_format_address(sock.getsockname()))
        except BaseException:
            await self._stop_listening()
            raise
        return bound

    async def _listen(self, address: str) -> list[str]:
        host, port = parse_listen_address(address)
        try:
            # Resolved here rather than by asyncio, which would start the default executor's
            # thread for it; listen hosts are numeric or local names, so this is quick.
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            hosts = list(dict.fromkeys(str(info[4][0]) for info in infos))
            server = await asyncio.start_server(
                self._accept, hosts, port, ssl=self._ssl,
                ssl_handshake_timeout=self._header_timeout if self._ssl else None,
            )
        except OSError as exc:
            # asyncio's own message repeats the address as a tuple; keep the cause only.
            errno = None if isinstance(exc, socket.gaierror) else exc.errno
            cause = os.strerror(errno) if errno else exc.strerror or str(exc)
            error = OSError(f"listen on {address}: {cause.lower()}")
            error.errno = exc.errno
            raise error from exc
        self._servers.append(server)
        return [_format_address(sock.getsockname()) for sock in server.sockets]

    async def _stop_listening(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
            # Connections still in their TLS handshake are not in _clients yet: Python 3.13+ can
            # abort them, older versions leave them to ssl_handshake_timeout.
            abort_clients = getattr(server, "abort_clients", None)
            if abort_clients is not None:
                abort_clients()
        waits = [asyncio.ensure_future(server.wait_closed()) for server in servers]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=_CLOSE_GRACE_SECONDS)
            for future in pending:
                future.cancel()

    async def close(self) -> None:
        """Stop listening, close every connection and cancel running handlers."""
        self._closing = True
        clients = list(self._clients)
        for client in clients:
            client.abort()
        tasks = [client.task for client in clients if client.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE_SECONDS)
        await self._stop_listening()

    def _make_room(self) -> bool:
        if len(self._clients) < self._max_connections:
            return True
        waiting = [client for client in self._clients if not client.busy]
        if not waiting:
            return False
        victim = min(waiting, key=lambda client: client.waiting_since)
        log.debug("connection limit reached, closing idle connection from %s", victim.peer)
        self._clients.discard(victim)
        victim.abort()
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _format_address(writer.get_extra_info("peername"))
        loop = asyncio.get_running_loop()
        client = _Client(reader, writer, asyncio.current_task(), peer, loop.time())
        if self._closing or not self._make_room() or not self._admitted(writer):
            writer.transport.abort()
            writer.close()
            return
        self._clients.add(client)
        try:
            await self._serve(client)
        except (asyncio.TimeoutError, OSError):
            pass  # a slow, vanished or reset client: just close
        except asyncio.CancelledError:
            # Evicted or closing. Ending normally matters: Python 3.11's StreamReaderProtocol
            # logs a cancelled connection task as an unhandled error.
            pass
        except Exception:
            log.exception("connection from %s failed", peer)
        finally:
            client.busy, client.waiting_since = False, -math.inf  # first to go if room is needed
        with contextlib.suppress(Exception, asyncio.CancelledError):
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), self._write_timeout)
        writer.transport.abort()
        self._clients.discard(client)

    def _admitted(self, writer: asyncio.StreamWriter) -> bool:
        if self._admit is None or writer.get_extra_info("sslcontext") is None:
            return True
        try:
            return self._admit(writer.get_extra_info("peercert"))
        except Exception:
            log.exception("checking the client certificate failed")
            return False

    async def _serve(self, client: _Client) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_request_bytes)
        loop = asyncio.get_running_loop()
        first = True
        while True:
            client.busy, client.waiting_since = False, loop.time()
            try:
                request = await self._receive(client, conn, first)
            except h11.RemoteProtocolError as exc:
                return await self._refuse(client, conn, exc.error_status_hint)
            except _TooLarge:
                return await self._refuse(client, conn, 413)
            if request is None:
                return
            first, client.busy = False, True
            response = await self._dispatch(request)
            await self._send(client, conn, response, head_only=request.method == "HEAD")
            if conn.our_state is not h11.DONE:
                return  # h11 decided the connection must close (and said so in the response)
            conn.start_next_cycle()

    async def _receive(self, client: _Client, conn: h11.Connection, first: bool) -> Request | None:
        loop = asyncio.get_running_loop()
        # A request is due header_timeout after the connection's start, or after the previous
        # response if its first bytes are already here; an idle keep-alive connection has
        # idle_timeout to start one, and then header_timeout from its first byte.
        started = first or bool(conn.trailing_data[0])
        deadline = loop.time() + (self._header_timeout if started else self._idle_timeout)
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    continue_ = h11.InformationalResponse(status_code=100, headers=[])
                    client.writer.write(conn.send(continue_) or b"")
                if deadline - loop.time() <= 0:
                    raise asyncio.TimeoutError
                data = await _before(deadline, client.reader.read(_READ_CHUNK))
                if data and not started:
                    started, deadline = True, loop.time() + self._header_timeout
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
                length = _content_length(event)
                if length is not None and length > self._max_request_bytes:
                    raise _TooLarge
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_request_bytes:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return _make_request(head, bytes(body), client.peer)
            else:
                return None  # ConnectionClosed: the client left between requests

    async def _dispatch(self, request: Request) -> Response:
        path = self._prefix.strip(request.path)
        if path is not None:
            request = _with_path(request, path)
        # The guard runs outside the handler limit: slow authentication holds no handler slot.
        if self._guard is not None:
            try:
                refusal = await self._guard(request)
            except Exception:
                log.exception("guard for %s %s failed", request.method, request.path)
                return Response(500, b"internal server error\n")
            if refusal is not None:
                return refusal
        if path is None:  # outside the prefix: its root, and "/", lead to the status page
            if request.path in ("/", self._prefix.route) and request.method in ("GET", "HEAD"):
                query = f"?{urlencode(request.query)}" if request.query else ""
                return Response(302, b"", headers=(("Location", self._prefix.home() + query),))
            return Response(404, b"not found\n")
        route = self._routes.get(path) or self._routes.get(_wildcard(path))
        if route is None:
            return Response(404, b"not found\n")
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            return Response(405, b"method not allowed\n", headers=(("Allow", allow),))
        if path in self._unlimited:
            return await self._handle(route, request)
        if self._max_handlers and self._running >= self._max_handlers:
            return Response(503, f"{self._running} requests in flight, as many as "
                            "--web.max-requests allows; try again\n".encode(),
                            headers=(("Retry-After", "1"),))
        self._running += 1
        try:
            return await self._handle(route, request)
        finally:
            self._running -= 1

    async def _handle(self, route: Route, request: Request) -> Response:
        try:
            response = await route.handler(request)
            if not isinstance(response, Response):
                raise TypeError(f"handler returned {type(response).__name__}, not Response")
            return response
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            return Response(500, b"internal server error\n")

    async def _send(self, client: _Client, conn: h11.Connection, response: Response, *,
                    head_only: bool = False, close: bool = False) -> None:
        try:
            head = _response_head(response, close, self._headers())
        except (h11.LocalProtocolError, UnicodeError):
            log.exception("invalid response with status %r", response.status)
            response = Response(500, b"internal server error\n")
            head = _response_head(response, close, self._headers())
        client.writer.write(conn.send(head) or b"")
        if response.stream is not None:
            async with contextlib.aclosing(response.stream) as stream:
                if not head_only:
                    async for chunk in stream:
                        if chunk:
                            await self._write(client, conn, chunk)
        elif response.body and not head_only:
            await self._write(client, conn, response.body)
        client.writer.write(conn.send(h11.EndOfMessage()) or b"")
        if client.writer.transport.get_write_buffer_size():  # else drain() has nothing to wait for
            await asyncio.wait_for(client.writer.drain(), self._write_timeout)

    async def _write(self, client: _Client, conn: h11.Connection, data: bytes) -> None:
        # Passed through, not copied. With more than _STREAM_QUEUE_BYTES queued, waits until the
        # client has taken most of it: a slow client holds a stream's next chunk back, and the
        # memory it costs stays bounded.
        client.writer.writelines(conn.send_with_data_passthrough(h11.Data(data=data)) or ())
        if client.writer.transport.get_write_buffer_size() > _STREAM_QUEUE_BYTES:
            await asyncio.wait_for(client.writer.drain(), self._write_timeout)

    async def _refuse(self, client: _Client, conn: h11.Connection, status: int) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        client.busy = True
        body = f"{_reason(status) or 'error'}\n".lower().encode()
        await self._send(client, conn, Response(status, body), close=True)
        # Closing with unread request bytes makes the kernel send a reset, which can destroy the
        # response before the client reads it: half-close and discard the rest for a moment.
        client.busy = False
        if client.writer.can_write_eof():
            client.writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self._header_timeout, _LINGER_SECONDS)
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            while (remaining := deadline - loop.time()) > 0:
                if not await asyncio.wait_for(client.reader.read(_READ_CHUNK), remaining):
                    break


if sys.version_info >= (3, 11):

    async def _before(deadline: float, awaitable: Awaitable[bytes]) -> bytes:
        """`awaitable`'s result, or TimeoutError at `deadline` (loop time); no task is made,
        unlike wait_for, which costs a task per read on every request."""
        async with asyncio.timeout_at(deadline):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _before(deadline: float, awaitable: Awaitable[bytes]) -> bytes:
        remaining = deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(awaitable, max(remaining, 0))


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has already checked it is one valid number
    return None


def _make_request(head: h11.Request, body: bytes, peer: str) -> Request:
    target = head.target.decode("latin-1")
    if target.startswith("/"):
        path, _, query = target.partition("?")
    else:  # absolute form, "http://host/path?query"
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    return Request(
        method=head.method.decode("latin-1"),
        path=unquote(path),
        query={k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()},
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
        body=body,
        peer=peer,
    )


def _with_path(request: Request, path: str) -> Request:
    if path == request.path:
        return request
    return Request(request.method, path, request.query, request.headers, request.body,
                   request.peer)


def _response_head(response: Response, close: bool,
                   defaults: Sequence[tuple[str, str]] = ()) -> h11.Response:
    headers = [("Content-Type", response.content_type)]
    if response.stream is None:  # else h11 frames it: chunked, or up to the close
        headers.append(("Content-Length", str(len(response.body))))
    headers += [(k, v) for k, v in response.headers if k.lower() not in _FRAMING_HEADERS]
    own = {k.lower() for k, _ in response.headers}
    headers += [(k, v) for k, v in defaults if k.lower() not in own]
    if close:
        headers.append(("Connection", "close"))
    return h11.Response(status_code=response.status, headers=headers,
                        reason=_reason(response.status))


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _format_address(sockaddr: Any) -> str:
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return str(sockaddr)
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _wildcard(path: str) -> str:
    """The prefix route that serves `path`: "/badge/*" serves every path under /badge/."""
    slash = path.find("/", 1)
    return path[:slash + 1] + "*" if slash > 0 else ""
