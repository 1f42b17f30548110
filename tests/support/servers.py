"""Small loopback servers for the tests: they run in a thread and stop when asked."""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import threading
import time
from typing import Any


class AcceptServer:
    """A TCP listener on 127.0.0.1 that accepts and closes every connection."""

    def __init__(self, backlog: int = 4096) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for _ in sel.select(0.1):
                    while True:
                        try:
                            conn, _ = self.sock.accept()
                        except BlockingIOError:
                            break
                        conn.close()
                        self.accepted += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> AcceptServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_port() -> int:
    """A loopback port with no listener (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LineServer:
    """A TCP server on 127.0.0.1 that plays one scripted line dialog per connection.

    `script` is a list of ("send", line) / ("expect", prefix) / ("starttls", "") steps, seen
    from the server; with `tls`, the connection is TLS from the start. The server closes the
    connection at the end of the script. What each connection received is kept in
    `.received`. Every wait has a timeout; it stops when closed.
    """

    def __init__(self, script: list[tuple[str, str]], ssl_context: Any = None,
                 tls: bool = False) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.tls = tls
        self.received: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with contextlib.suppress(OSError, ValueError):
                self._play(conn)
            conn.close()

    def _play(self, conn: Any) -> None:
        conn.settimeout(2)
        if self.tls:
            conn = self.ssl_context.wrap_socket(conn, server_side=True)
        lines = conn.makefile("rb")
        for action, text in self.script:
            if action == "send":
                conn.sendall(text.encode() + b"\r\n")
            elif action == "expect":
                line = lines.readline().decode().rstrip("\r\n")
                self.received.append(line)
                if not line.startswith(text):
                    return
            else:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                lines = conn.makefile("rb")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3)
        self.sock.close()

    def __enter__(self) -> LineServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
