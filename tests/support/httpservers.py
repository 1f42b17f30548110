"""In-process HTTP(S) servers for the http check's tests.

A `HttpServer` is a ThreadedServer (tests/support/server.py) on TCP, 127.0.0.1 port 0, HTTPS
with `tls`: it serves one request per connection from a table of routes (path -> `Reply`, or a
function of the `Request`), and records every request. A reply can be chunked or trickle its
body one byte at a time. Every wait has a timeout and every connection a lifetime (the base's),
so closing never hangs.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.support.server import POLL, ThreadedServer

_MAX_HEAD = 65536


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    chunk: int = 0  # > 0: Transfer-Encoding: chunked, in chunks of this size
    trickle: float = 0.0  # > 0: the body one byte at a time, this many seconds apart
    version: str = "1.1"


Route = Reply | Callable[[Request], Reply]


class HttpServer(ThreadedServer):
    name = "httpserver"

    def __init__(self, routes: Mapping[str, Route], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(tcp=True, tls=tls)
        self.routes = routes
        self.requests: list[Request] = []
        self.trickled = 0  # body bytes sent one at a time (Reply.trickle), all connections
        self.start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def handle_connection(self, conn: socket.socket, deadline: float) -> None:
        request = self._read(conn, deadline)
        if request is None:
            return
        self.requests.append(request)
        route = self.routes.get(request.target.partition("?")[0], Reply(404, b"not found"))
        self._send(conn, route(request) if callable(route) else route, deadline)

    def _read(self, conn: socket.socket, deadline: float) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk or len(data) > _MAX_HEAD or time.monotonic() > deadline:
                return None
            data += chunk
            if not data[:1].isalpha():  # not HTTP (a TLS ClientHello): answer as servers do
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                return None
        head, _, body = data.partition(b"\r\n\r\n")
        line, *fields = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length and time.monotonic() < deadline:
            chunk = conn.recv(length - len(body))
            if not chunk:
                break
            body += chunk
        return Request(method, target, headers, body)

    def _send(self, conn: socket.socket, reply: Reply, deadline: float) -> None:
        head = [f"HTTP/{reply.version} {reply.status} X", "Connection: close",
                *(f"{k}: {v}" for k, v in reply.headers)]
        head.append("Transfer-Encoding: chunked" if reply.chunk
                    else f"Content-Length: {len(reply.body)}")
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if reply.chunk:
            for i in range(0, len(reply.body), reply.chunk):
                piece = reply.body[i:i + reply.chunk]
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.sendall(b"0\r\n\r\n")
        elif reply.trickle:
            for i in range(len(reply.body)):
                if self.stopping or time.monotonic() > deadline:
                    return
                conn.sendall(reply.body[i:i + 1])
                self.trickled += 1
                time.sleep(reply.trickle)
        else:
            conn.sendall(reply.body)
        # Linger until the client has read it all and closed (or the lifetime ends), so a
        # close here never resets a response still in flight.
        while time.monotonic() < deadline and not self.stopping:
            if select.select([conn], [], [], POLL)[0]:
                try:
                    if not conn.recv(4096):
                        return
                except OSError:
                    return
