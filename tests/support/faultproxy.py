"""A fault-injecting relay on loopback: what netem would do, without a qdisc or root.

    with FaultProxy("udp", ("127.0.0.1", server_port)) as proxy:
        proxy.faults = Faults(delay_down=0.05, drop=0.3)   # switch at any time
        ...  # point the client at proxy.address

UDP: each datagram from a client is relayed from a socket of the proxy's own per client (so
the server's replies find their way back) and each reply is sent back from the proxy's
address, as the client expects. TCP: each accepted connection gets its own connection to the
server and bytes are relayed both ways. Faults apply per direction ("up" is client → server):

- `delay_up`, `delay_down`: seconds added to every datagram or byte, order kept. Different
  values make the path asymmetric, which NTP cannot see and must not claim to see.
- `drop`, `duplicate` (UDP): the chance that a datagram is lost, or delivered twice, in each
  direction; drawn from a seeded generator, so a run repeats.
- `reset_after` (TCP): after this many bytes from the server have reached the client, both
  connections are reset (SO_LINGER 0: an RST, not a FIN); 0 resets every connection as soon
  as it is accepted. None: never.

It is a ThreadedServer (tests/support/server.py): one daemon thread with a selector, every wait
with a timeout; the proxy's sockets join that selector, its delays are timers the loop runs.
The number of UDP flows and TCP connections and the bytes queued in each are capped, and a
connection lives 60 s at most, so nothing here can grow or hang a test.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import selectors
import socket
import struct
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from tests.support.server import MAX_PER_WAKEUP, POLL, ThreadedServer

_MAX_FLOWS = 256  # UDP clients remembered (oldest forgotten first)
_MAX_CONNECTIONS = 256  # TCP connections at once (more are reset at accept)
_MAX_QUEUED = 4 << 20  # bytes waiting in one direction of one connection; more closes it
_LIFETIME = 60.0  # seconds a TCP connection may live, whatever it does
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Faults:
    delay_up: float = 0.0
    delay_down: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    reset_after: int | None = None

    def delay(self, up: bool) -> float:
        return self.delay_up if up else self.delay_down


NO_FAULTS = Faults()


class _Pipe:
    """One relayed TCP connection: client side, server side, and bytes in flight each way."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.born = time.monotonic()
        self.queued = {True: 0, False: 0}  # up/down: bytes scheduled and not yet written
        self.out = {True: b"", False: b""}  # up/down: bytes the socket has not taken yet
        self.eof = {True: False, False: False}  # up/down: EOF scheduled for the far side
        self.shut = {True: False, False: False}  # up/down: EOF passed on
        self.delivered_down = 0
        self.closed = False

    def sink(self, up: bool) -> socket.socket:
        return self.server if up else self.client


class FaultProxy(ThreadedServer):
    name = "faultproxy"

    def __init__(self, protocol: str, upstream: tuple[str, int], faults: Faults = NO_FAULTS,
                 seed: int = 1) -> None:
        if protocol not in ("udp", "tcp"):
            raise ValueError("protocol must be 'udp' or 'tcp'")
        if not upstream[0].startswith("127."):
            raise ValueError("the proxy relays to loopback only")
        super().__init__(udp=protocol == "udp", tcp=protocol == "tcp", backlog=128)
        self.protocol = protocol
        self.upstream = upstream  # may be changed at run time: a server restarted elsewhere
        self.faults = faults  # replaced whole to switch faults; read once per datagram/chunk
        self.stats: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._timers: list[tuple[float, int, object]] = []  # (due, order, action) heap
        self._order = itertools.count()
        self._flows: OrderedDict[tuple[str, int], socket.socket] = OrderedDict()
        self._pipes: set[_Pipe] = set()
        self.start()

    # --- the loop (the base's, with the proxy's sockets and timers) --------------------------

    def wait(self) -> float:
        if self._timers:
            return min(POLL, max(self._timers[0][0] - time.monotonic(), 0.0))
        return POLL

    def tick(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            with contextlib.suppress(OSError):
                action()  # type: ignore[operator]
        for pipe in [p for p in self._pipes if now - p.born > _LIFETIME]:
            self._close_pipe(pipe, reset=True)

    def closing(self) -> None:
        for sock in self._flows.values():
            sock.close()
        for pipe in list(self._pipes):
            self._close_pipe(pipe, reset=False)

    def on_ready(self, key: selectors.SelectorKey, events: int) -> None:
        data, sock = key.data, key.fileobj
        if data[0] == "flow":
            self._from_server(sock, data[1])  # type: ignore[arg-type]
        elif data[0] == "pipe":
            pipe, up = data[1], data[2]
            if events & selectors.EVENT_WRITE:
                self._flush(pipe, not up)
            if events & selectors.EVENT_READ:
                self._relay(pipe, up)

    def _later(self, delay: float, action: object) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._order), action))

    # --- UDP ----------------------------------------------------------------------------------

    def handle_datagram(self, data: bytes, client: tuple[str, int]) -> None:
        flow = self._flows.get(client)
        if flow is not None and flow.getpeername() != self.upstream:
            self.selector.unregister(flow)  # the server moved (restarted elsewhere)
            flow.close()
            del self._flows[client]
            flow = None
        if flow is None:
            flow = self._new_flow(client)
        self._datagram(data, up=True, send=lambda d, s=flow: s.send(d))

    def _new_flow(self, client: tuple[str, int]) -> socket.socket:
        if len(self._flows) >= _MAX_FLOWS:
            _, oldest = self._flows.popitem(last=False)
            self.selector.unregister(oldest)
            oldest.close()
        flow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flow.setblocking(False)
        flow.connect(self.upstream)
        self._flows[client] = flow
        self.selector.register(flow, selectors.EVENT_READ, ("flow", client))
        return flow

    def _from_server(self, flow: socket.socket, client: tuple[str, int]) -> None:
        for _ in range(MAX_PER_WAKEUP):
            try:
                data = flow.recv(_CHUNK)
            except BlockingIOError:
                return
            except ConnectionRefusedError:  # ICMP from a dead server: the client sees silence
                self.stats["refused"] += 1
                continue
            self._datagram(data, up=False,
                           send=lambda d, c=client: self.udp.sendto(d, c))  # type: ignore[union-attr]

    def _datagram(self, data: bytes, up: bool, send: object) -> None:
        faults = self.faults
        direction = "up" if up else "down"
        if faults.drop and self._random.random() < faults.drop:
            self.stats[f"dropped_{direction}"] += 1
            return
        copies = 2 if faults.duplicate and self._random.random() < faults.duplicate else 1
        self.stats[f"duplicated_{direction}"] += copies - 1
        for _ in range(copies):
            self.stats[f"relayed_{direction}"] += 1
            self._later(faults.delay(up), lambda: send(data))  # type: ignore[operator]

    # --- TCP ----------------------------------------------------------------------------------

    def on_accept(self, client: socket.socket) -> None:
        self.stats["connections"] += 1
        if self.faults.reset_after == 0 or len(self._pipes) >= _MAX_CONNECTIONS:
            self.stats["resets"] += 1
            _reset(client)
            return
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.settimeout(1.0)
        try:
            server.connect(self.upstream)
        except OSError:  # the server is down: the client is reset, as a refusal would
            server.close()
            self.stats["refused"] += 1
            _reset(client)
            return
        client.setblocking(False)
        server.setblocking(False)
        pipe = _Pipe(client, server)
        self._pipes.add(pipe)
        self.selector.register(client, selectors.EVENT_READ, ("pipe", pipe, True))
        self.selector.register(server, selectors.EVENT_READ, ("pipe", pipe, False))

    def _relay(self, pipe: _Pipe, up: bool) -> None:
        source = pipe.client if up else pipe.server
        try:
            data = source.recv(_CHUNK)
        except ConnectionResetError:
            self._close_pipe(pipe, reset=True)
            return
        if not data:  # EOF: pass it on once the bytes before it have arrived
            self._watch(pipe, source, read=False)
            pipe.eof[up] = True
            self._later(self.faults.delay(up), lambda: self._deliver(pipe, up, b""))
            return
        pipe.queued[up] += len(data)
        if pipe.queued[up] > _MAX_QUEUED:
            self._close_pipe(pipe, reset=True)
            return
        self.stats["bytes_up" if up else "bytes_down"] += len(data)
        self._later(self.faults.delay(up), lambda: self._deliver(pipe, up, data))

    def _deliver(self, pipe: _Pipe, up: bool, data: bytes) -> None:
        if pipe.closed:
            return
        limit = self.faults.reset_after
        if not up and data and limit is not None:
            room = max(limit - pipe.delivered_down, 0)
            if room < len(data):
                pipe.out[up] += data[:room]
                self._flush(pipe, up)
                self.stats["resets"] += 1
                self._close_pipe(pipe, reset=True)
                return
        if not up:
            pipe.delivered_down += len(data)
        pipe.queued[up] -= len(data)
        if data:
            pipe.out[up] += data
            self._flush(pipe, up)
        elif not pipe.out[up]:
            self._shutdown(pipe, up)

    def _flush(self, pipe: _Pipe, up: bool) -> None:
        if pipe.closed:
            return
        sink = pipe.sink(up)
        while pipe.out[up]:
            try:
                sent = sink.send(pipe.out[up])
            except BlockingIOError:
                break
            except OSError:
                self._close_pipe(pipe, reset=True)
                return
            pipe.out[up] = pipe.out[up][sent:]
        self._watch(pipe, sink, write=bool(pipe.out[up]))
        if not pipe.out[up] and pipe.eof[up] and pipe.queued[up] == 0:
            self._shutdown(pipe, up)

    def _shutdown(self, pipe: _Pipe, up: bool) -> None:
        with contextlib.suppress(OSError):
            pipe.sink(up).shutdown(socket.SHUT_WR)
        pipe.shut[up] = True
        if pipe.shut[True] and pipe.shut[False]:
            self._close_pipe(pipe, reset=False)

    def _watch(self, pipe: _Pipe, sock: socket.socket, read: bool | None = None,
               write: bool | None = None) -> None:
        """Change what the selector waits for on one side of `pipe`."""
        if pipe.closed:
            return
        try:
            old = self.selector.get_key(sock).events
        except KeyError:
            old = 0
        events = old
        if read is not None:
            events = events | selectors.EVENT_READ if read else events & ~selectors.EVENT_READ
        if write is not None:
            events = events | selectors.EVENT_WRITE if write else events & ~selectors.EVENT_WRITE
        data = ("pipe", pipe, sock is pipe.client)
        if events == old:
            return
        if not old:
            self.selector.register(sock, events, data)
        elif not events:
            self.selector.unregister(sock)
        else:
            self.selector.modify(sock, events, data)

    def _close_pipe(self, pipe: _Pipe, reset: bool) -> None:
        if pipe.closed:
            return
        pipe.closed = True
        self._pipes.discard(pipe)
        for sock in (pipe.client, pipe.server):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN (SO_LINGER on, zero seconds)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
