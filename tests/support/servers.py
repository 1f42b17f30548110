"""Small loopback servers for the tests: one that accepts and closes, one that plays a line
dialog, an echo (UDP, TCP or both), a listener whose backlog the test counts, and a port nobody
listens on."""

from __future__ import annotations

import select
import socket
import ssl
import time

from tests.support.server import POLL, ThreadedServer


class AcceptServer(ThreadedServer):
    """A TCP listener on 127.0.0.1 that accepts and closes every connection, counting them."""

    name = "acceptserver"

    def __init__(self, backlog: int = 4096) -> None:
        super().__init__(tcp=True, backlog=backlog)
        self.accepted = 0
        self.start()

    def on_accept(self, conn: socket.socket) -> None:
        conn.close()
        self.accepted += 1


def closed_port() -> int:
    """A loopback port with no listener (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LineServer(ThreadedServer):
    """A TCP server on 127.0.0.1 that plays one scripted line dialog per connection.

    `script` is a list of ("send", line) / ("expect", prefix) / ("starttls", "") steps, seen
    from the server; with `tls`, the connection is TLS from the start, and `ssl_context` is
    what it and STARTTLS present. Connections are played one after the other, and closed at
    the end of the script. What each connection received is kept in `.received`.
    """

    name = "lineserver"
    connection_threads = False

    def __init__(self, script: list[tuple[str, str]], ssl_context: ssl.SSLContext | None = None,
                 tls: bool = False) -> None:
        super().__init__(tcp=True, tls=ssl_context if tls else None)
        self.script = script
        self.ssl_context = ssl_context
        self.received: list[str] = []
        self.start()

    def handle_connection(self, conn: socket.socket, deadline: float) -> None:
        lines = conn.makefile("rb")
        try:
            for action, text in self.script:
                if action == "send":
                    conn.sendall(text.encode() + b"\r\n")
                elif action == "expect":
                    line = lines.readline().decode().rstrip("\r\n")
                    self.received.append(line)
                    if not line.startswith(text):
                        return
                else:
                    assert self.ssl_context is not None, "STARTTLS needs an ssl_context"
                    conn = self.ssl_context.wrap_socket(conn, server_side=True)
                    lines = conn.makefile("rb")
        finally:
            conn.close()  # after STARTTLS, the TLS socket the caller does not know


class EchoServer(ThreadedServer):
    """Echoes every datagram, and on TCP sends `greeting` then echoes until the client closes
    (or the connection's lifetime ends). `.received` counts the datagrams."""

    name = "echoserver"

    def __init__(self, *, udp: bool = False, tcp: bool = False, greeting: bytes = b"") -> None:
        super().__init__(udp=udp, tcp=tcp)
        self.greeting = greeting
        self.received = 0
        self.start()

    def handle_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        assert self.udp is not None
        self.received += 1
        self.udp.sendto(data, peer)

    def handle_connection(self, conn: socket.socket, deadline: float) -> None:
        if self.greeting:
            conn.sendall(self.greeting)
        while not self.stopping and time.monotonic() < deadline:
            if not select.select([conn], [], [], POLL)[0]:
                continue
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


class Listener:
    """A TCP listener on `host` whose connections the test counts (they wait in its backlog)."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.create_server((host, port))
        self.port = self.sock.getsockname()[1]

    def connections(self, expected: int, wait: float) -> int:
        """Accept (and close) what arrived: stops at `expected`, or after `wait` seconds."""
        count = 0
        deadline = time.monotonic() + wait
        while count < expected or expected == 0:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                break
            self.sock.accept()[0].close()
            count += 1
        return count

    def close(self) -> None:
        self.sock.close()
