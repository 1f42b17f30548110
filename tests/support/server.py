"""The skeleton every fake server of the tests shares: loopback sockets, one thread, a clean stop.

A `ThreadedServer` binds UDP, TCP or both (on the same port number, as a real DNS server does)
on 127.0.0.1, port 0, and serves them from one daemon thread with a selector. A subclass says
what to do with each datagram (`handle_datagram`) and each TCP connection (`handle_connection`,
on a thread of its own, behind TLS when the server has a context), and may watch sockets of
its own (`on_ready`, `wait`, `tick`). Everything is bounded: the selector wakes every POLL
seconds to look at the stop flag, each wakeup reads at most MAX_PER_WAKEUP datagrams or
connections, a connection lives `connection_lifetime` seconds, at most MAX_CONNECTIONS run at
once, and the server itself serves LIFETIME seconds at the most. `close()` (or the end of the
`with` block) stops the thread, waits for the connections and closes every socket.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from typing import ClassVar, TypeVar

S = TypeVar("S", bound="Served")
T = TypeVar("T", bound="ThreadedServer")

POLL = 0.05  # the longest the serving thread sleeps without looking at its stop flag
MAX_PER_WAKEUP = 64  # datagrams read, or connections accepted, per wakeup
MAX_CONNECTIONS = 256  # connection threads at once; more are closed at accept
LIFETIME = 1800.0  # seconds a server serves at the most, longer than any test module
HANDSHAKE_TIMEOUT = 2.0  # seconds for a TLS handshake, and the first timeout of a connection


class Served:
    """What every test server offers: its port on 127.0.0.1, and close() at the end of a
    `with` block (for the servers that are not a ThreadedServer: FakeDoh's asyncio one)."""

    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sockaddr(self) -> tuple[str, int]:
        """The address as a socket's connect() takes it."""
        return ("127.0.0.1", self.port)

    @property
    def target(self) -> str:
        """The address as a check's `target` reads it (the same "127.0.0.1:port")."""
        return self.address

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedServer(Served):
    """A server on 127.0.0.1 (see the module docstring); a subclass calls `start()` last."""

    name: ClassVar[str] = "testserver"
    # Each connection on a thread of its own; False: one after the other on the serving thread.
    connection_threads: ClassVar[bool] = True
    connection_lifetime: ClassVar[float] = 10.0

    def __init__(self, *, udp: bool = False, tcp: bool = False,
                 tls: ssl.SSLContext | None = None, backlog: int = 64) -> None:
        self.tls = tls
        self.udp, self.tcp = _bind(udp, tcp, backlog)
        self.port: int = (self.tcp or self.udp).getsockname()[1]  # type: ignore[union-attr]
        # Made here, not in the thread: once the constructor returns, the server holds every
        # fd it will hold (tests count them).
        self.selector = selectors.DefaultSelector()
        for sock in (self.udp, self.tcp):
            if sock is not None:
                self.selector.register(sock, selectors.EVENT_READ)
        self._extra: list[socket.socket] = []
        self._connections: list[threading.Thread] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)

    @property
    def stopping(self) -> bool:
        """True once close() was called: long handlers look at it between waits."""
        return self._stop.is_set()

    def start(self: T) -> T:
        self._thread.start()
        return self

    def loopback_socket(self, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """Another socket bound on 127.0.0.1 (a spoofer's), closed with the server."""
        sock = socket.socket(socket.AF_INET, kind)
        sock.bind(("127.0.0.1", 0))
        self._extra.append(sock)
        return sock

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for thread in self._connections:
            thread.join(self.connection_lifetime)
        self.closing()
        for sock in (self.udp, self.tcp, *self._extra):
            if sock is not None:
                sock.close()
        self.selector.close()

    # --- what a subclass says -------------------------------------------------------------

    def handle_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        """One datagram that arrived on `self.udp` from `peer`."""
        raise NotImplementedError

    def handle_connection(self, conn: socket.socket, deadline: float) -> None:
        """One TCP connection (TLS already done with `self.tls`), until `deadline`
        (time.monotonic()); closed after it returns."""
        raise NotImplementedError

    def on_accept(self, conn: socket.socket) -> None:
        """A connection just accepted: by default served by `handle_connection`."""
        if not self.connection_threads:
            self._connection(conn)
            return
        self._connections = [thread for thread in self._connections if thread.is_alive()]
        if len(self._connections) >= MAX_CONNECTIONS:
            conn.close()
            return
        thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
        self._connections.append(thread)
        thread.start()

    def on_ready(self, key: selectors.SelectorKey, events: int) -> None:
        """A socket the subclass registered with `self.selector` is ready."""

    def wait(self) -> float:
        """How long the selector may wait now (at most POLL, so that a stop is seen)."""
        return POLL

    def tick(self) -> None:
        """Called after every wakeup, whatever woke the thread (timers, lifetimes)."""

    def closing(self) -> None:
        """Called by close() once the threads ended, before the sockets close."""

    # --- the loop -------------------------------------------------------------------------

    def _serve(self) -> None:
        ends = time.monotonic() + LIFETIME
        while not self._stop.is_set() and time.monotonic() < ends:
            for key, events in self.selector.select(self.wait()):
                # A peer that went away is no reason to stop serving the others.
                with contextlib.suppress(OSError):
                    if key.fileobj is self.udp:
                        self._datagrams()
                    elif key.fileobj is self.tcp:
                        self._accept()
                    else:
                        self.on_ready(key, events)
            self.tick()

    def _datagrams(self) -> None:
        assert self.udp is not None
        for _ in range(MAX_PER_WAKEUP):
            try:
                data, peer = self.udp.recvfrom(65535)
            except BlockingIOError:
                return
            self.handle_datagram(data, peer)

    def _accept(self) -> None:
        assert self.tcp is not None
        for _ in range(MAX_PER_WAKEUP):
            try:
                conn, _ = self.tcp.accept()
            except BlockingIOError:
                return
            self.on_accept(conn)

    def _connection(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.connection_lifetime
        stream = conn
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            if self.tls is not None:
                stream = self.tls.wrap_socket(conn, server_side=True)
            self.handle_connection(stream, deadline)
        except (OSError, ValueError):
            pass  # the client went away or failed the handshake (ssl.SSLError is an OSError)
        finally:
            stream.close()
            conn.close()


def _bind(udp: bool, tcp: bool, backlog: int) -> tuple[socket.socket | None, socket.socket | None]:
    """A UDP socket, a TCP listener, or both on the same port, on 127.0.0.1, non-blocking."""
    if not (udp or tcp):
        raise ValueError("a server needs UDP, TCP or both")
    for _ in range(50):
        udp_sock = tcp_sock = None
        port = 0
        if udp:
            udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp_sock.bind(("127.0.0.1", 0))
            udp_sock.setblocking(False)
            port = udp_sock.getsockname()[1]
        if tcp:
            tcp_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp_sock.bind(("127.0.0.1", port))
            except OSError:  # that port is taken for TCP: try another
                tcp_sock.close()
                if udp_sock is not None:
                    udp_sock.close()
                continue
            tcp_sock.listen(backlog)
            tcp_sock.setblocking(False)
        return udp_sock, tcp_sock
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
