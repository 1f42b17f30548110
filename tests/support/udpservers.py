"""UDP servers for the udp check's tests: one that answers as told, and one that never does.

`UdpServer` counts every datagram it receives (`.received`, and the payloads in `.payloads`),
drops the first `drop_first` of them unanswered, and answers each of the others with what
`answer(datagram)` returns: a list of datagrams (none, one, or a flood); on port 0, or on a
given `port` (to come back where a stopped one was). `SilentUdp` is a bound
socket that reads nothing: what arrives waits in its buffer, and `.pending()` counts it.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Callable

from tests.support.server import Served, ThreadedServer

Answer = Callable[[bytes], list[bytes]]


def echo(data: bytes) -> list[bytes]:
    return [data]


class UdpServer(ThreadedServer):
    name = "udpserver"

    def __init__(self, answer: Answer = echo, *, drop_first: int = 0, port: int = 0) -> None:
        super().__init__(udp=True)
        if port:  # a given port (a server that comes back where it was) instead of port 0's
            assert self.udp is not None
            self.selector.unregister(self.udp)
            self.udp.close()
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", port))
            self.udp.setblocking(False)
            self.selector.register(self.udp, selectors.EVENT_READ)
            self.port = port
        self.answer = answer
        self.drop_first = drop_first
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        self.start()

    @property
    def received(self) -> int:
        with self._lock:
            return len(self.payloads)

    def handle_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        assert self.udp is not None
        with self._lock:
            self.payloads.append(data)
            dropped = len(self.payloads) <= self.drop_first
        if dropped:
            return
        for reply in self.answer(data):
            try:
                self.udp.sendto(reply, peer)
            except BlockingIOError:  # a flood fills the send buffer: the rest are lost
                return


class SilentUdp(Served):
    """A UDP socket bound on 127.0.0.1 that never answers (so no ICMP either)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def pending(self, limit: int = 1000) -> int:
        """Datagrams that arrived and wait unread; read (and so forgotten) by this call."""
        count = 0
        for _ in range(limit):
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                break
            count += 1
        return count

    def close(self) -> None:
        self.sock.close()


def closed_udp_port() -> int:
    """A loopback UDP port nothing is bound to (a datagram there draws a port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
