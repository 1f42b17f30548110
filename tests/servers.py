"""Small loopback servers for the tests: they run in a thread and stop when asked."""

from __future__ import annotations

import selectors
import socket
import threading


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
