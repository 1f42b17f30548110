"""Fake DNS servers for what a real one will not do on demand.

SERVFAIL, truncation, garbage, a reply with the wrong ID and one from the wrong port before the
right one, silence, a stream cut short, and DNS over TLS (certificates from tests/support/certs.py).
Each server runs in daemon threads on 127.0.0.1, port 0 (UDP and TCP on the same port number,
like a real server), answers with dnspython's message API, and stops when closed: every wait in
it has a timeout, so closing never hangs and nothing loops unboundedly.
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

BEHAVIOURS = (
    "answer",  # a normal answer from `records`
    "servfail",  # SERVFAIL, over UDP and TCP
    "truncate",  # UDP: TC set and no answers; TCP: the full answer
    "garbage",  # random bytes (never with the query's ID), over UDP and TCP
    "wrong_id_first",  # UDP: wrong ID, then right ID from another port, then the reply
    "silent",  # reads, never replies
    "close_early",  # TCP: the first `cut` bytes of the framed reply, then close; UDP: silent
)

# The answer of the spoofed datagram (TEST-NET-1, RFC 5737): a test can tell it from the real one.
SPOOFED_ANSWER = "192.0.2.66"
# What every A query gets when no records are given.
DEFAULT_ANSWER = "127.0.0.7"

Records = Mapping[str, Sequence[tuple[str, str, int]]]  # name -> [(rdtype, rdata, ttl)]

_POLL = 0.05  # how often every blocking wait looks at the stop flag
_CONNECTION_LIFETIME = 10.0  # a TCP client is dropped after this, whatever it does
_HANDSHAKE_TIMEOUT = 2.0
_MAX_DATAGRAMS_PER_WAKEUP = 64


class FakeDns:
    """A fake DNS server with one `behaviour` (see BEHAVIOURS).

    `records` maps names to [(rdtype, rdata, ttl)]; a name not in it is NXDOMAIN. Without
    `records`, every A query is answered with DEFAULT_ANSWER. With `tls`, it serves DNS over
    TLS (RFC 7858) on TCP only (see FakeDot).
    """

    def __init__(
        self,
        behaviour: str = "answer",
        records: Records | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        cut: int = 1,
    ) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}")
        self.behaviour = behaviour
        self.cut = cut
        self._tls = tls
        self._records = None if records is None else _index(records)
        self.queries: list[bytes] = []  # every query received, UDP and TCP, in order
        self.tcp_queries: list[bytes] = []  # those that came over TCP (or TLS)
        self.sent = 0  # datagrams and stream messages sent, decoys included
        self.decoys = 0  # of those, the ones a client must ignore (wrong ID, wrong port, garbage)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._udp, self._tcp = _bind(udp=tls is None)
        self.port: int = self._tcp.getsockname()[1]
        # The spoofer: same host, another port (only the source port betrays it).
        self._spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._spoofer.bind(("127.0.0.1", 0))
        self._connections: list[threading.Thread] = []
        # Made here, not in the thread: once the constructor returns, the server holds every
        # fd it will hold (the tests count them).
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._tcp, selectors.EVENT_READ)
        if self._udp is not None:
            self._selector.register(self._udp, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="fakedns", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for thread in self._connections:
            thread.join(_HANDSHAKE_TIMEOUT + 1)
        for sock in (self._udp, self._tcp, self._spoofer):
            if sock is not None:
                sock.close()

    def __enter__(self) -> FakeDns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- serving -------------------------------------------------------------------------

    def _serve(self) -> None:
        with self._selector as selector:
            while not self._stop.is_set():
                for key, _ in selector.select(_POLL):
                    if key.fileobj is self._tcp:
                        self._accept()
                    else:
                        self._on_datagrams()

    def _accept(self) -> None:
        try:
            conn, _ = self._tcp.accept()
        except BlockingIOError:
            return
        thread = threading.Thread(target=self._serve_stream, args=(conn,), daemon=True)
        self._connections.append(thread)
        thread.start()

    def _on_datagrams(self) -> None:
        assert self._udp is not None
        for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, peer = self._udp.recvfrom(65535)
            except BlockingIOError:
                return
            self.queries.append(data)
            self._answer_datagram(data, peer)

    def _answer_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        if self.behaviour in ("silent", "close_early"):
            return
        if self.behaviour == "garbage":
            for _ in range(3):
                self._send_datagram(self._udp, _garbage(data), peer, decoy=True)
            return
        query = _parse(data)
        if query is None:
            return
        if self.behaviour == "truncate":
            # RFC 1035 §4.1.1 / RFC 7766 §5: TC set, the answer left for TCP.
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
            self._send_datagram(self._udp, response.to_wire(), peer)
            return
        response = self._response(query)
        if self.behaviour == "wrong_id_first":
            wrong = self._response(query)
            wrong.id = (query.id + 1) & 0xFFFF
            self._send_datagram(self._udp, wrong.to_wire(), peer, decoy=True)
            time.sleep(0.005)
            spoofed = dns.message.make_response(query)
            spoofed.answer.append(
                dns.rrset.from_text(query.question[0].name, 300, "IN", "A", SPOOFED_ANSWER)
            )
            self._send_datagram(self._spoofer, spoofed.to_wire(), peer, decoy=True)
            time.sleep(0.005)
        self._send_datagram(self._udp, response.to_wire(), peer)

    def _send_datagram(
        self, sock: socket.socket | None, wire: bytes, peer: tuple[str, int], decoy: bool = False
    ) -> None:
        assert sock is not None
        # Counted before it leaves: the client may have its answer before sendto returns.
        with self._lock:
            self.sent += 1
            self.decoys += decoy
        sock.sendto(wire, peer)

    def _serve_stream(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + _CONNECTION_LIFETIME
        stream: socket.socket = conn
        try:
            if self._tls is not None:
                conn.settimeout(_HANDSHAKE_TIMEOUT)
                try:
                    stream = self._tls.wrap_socket(conn, server_side=True)
                except OSError:  # ssl.SSLError included: the client gave up on us
                    return
            stream.settimeout(_POLL)
            while True:
                header = self._read(stream, 2, deadline)
                if header is None:
                    return
                data = self._read(stream, int.from_bytes(header, "big"), deadline)
                if data is None:
                    return
                self.queries.append(data)
                self.tcp_queries.append(data)
                reply = self._stream_reply(data)
                if reply is None:
                    continue
                framed = len(reply).to_bytes(2, "big") + reply
                if self.behaviour == "close_early":
                    stream.sendall(framed[: self.cut])
                    return
                with self._lock:
                    self.sent += 1
                    self.decoys += self.behaviour == "garbage"
                stream.sendall(framed)
        except OSError:
            return
        finally:
            stream.close()
            conn.close()

    def _stream_reply(self, data: bytes) -> bytes | None:
        if self.behaviour == "silent":
            return None
        if self.behaviour == "garbage":
            return _garbage(data)
        query = _parse(data)
        if query is None:
            return None
        # Over a stream, wrong_id_first and truncate answer straight away: nobody can spoof
        # a TCP segment on loopback, and truncation is what TCP is the cure for.
        return self._response(query).to_wire()

    def _read(self, stream: socket.socket, size: int, deadline: float) -> bytes | None:
        """Exactly `size` bytes, or None at end of stream, at the deadline or when stopped."""
        data = bytearray()
        while len(data) < size:
            if self._stop.is_set() or time.monotonic() > deadline:
                return None
            try:
                chunk = stream.recv(size - len(data))
            except TimeoutError:
                continue
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    # --- answers -------------------------------------------------------------------------

    def _response(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        if self.behaviour == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        if self._records is None:
            if question.rdtype == dns.rdatatype.A:
                response.answer.append(
                    dns.rrset.from_text(question.name, 300, "IN", "A", DEFAULT_ANSWER)
                )
            return response
        entries = self._records.get(question.name)
        if entries is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        matching = [(rdata, ttl) for rdtype, rdata, ttl in entries if rdtype == question.rdtype]
        if matching:
            rrset = dns.rrset.from_text_list(
                question.name,
                min(ttl for _, ttl in matching),
                dns.rdataclass.IN,
                question.rdtype,
                [rdata for rdata, _ in matching],
            )
            response.answer.append(rrset)
        return response


class FakeDot(FakeDns):
    """The same handler behind TLS on TCP: DNS over TLS (RFC 7858), with `ssl_context`."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        behaviour: str = "answer",
        records: Records | None = None,
        cut: int = 1,
    ) -> None:
        super().__init__(behaviour, records, tls=ssl_context, cut=cut)


def _index(records: Records) -> dict[dns.name.Name, list[tuple[dns.rdatatype.RdataType, str, int]]]:
    return {
        dns.name.from_text(name): [
            (dns.rdatatype.RdataType.make(rdtype), rdata, ttl) for rdtype, rdata, ttl in entries
        ]
        for name, entries in records.items()
    }


def _parse(data: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(data)
    except Exception:  # whatever a broken query raises, the fake server just ignores it
        return None


def _garbage(query: bytes) -> bytes:
    """Random bytes whose first two (where a reply's ID is) never match the query's ID."""
    query_id = int.from_bytes(query[:2].ljust(2, b"\0"), "big")
    wrong_id = (query_id ^ 0xFFFF).to_bytes(2, "big")
    return wrong_id + os.urandom(10 + secrets.randbelow(60))


def _bind(udp: bool) -> tuple[socket.socket | None, socket.socket]:
    """A TCP listener, and with `udp` a UDP socket on the same port, both on 127.0.0.1."""
    for _ in range(50):
        udp_sock = None
        if udp:
            udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp_sock.bind(("127.0.0.1", 0))
            port = udp_sock.getsockname()[1]
        else:
            port = 0
        tcp_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp_sock.bind(("127.0.0.1", port))
        except OSError:  # that port is taken for TCP: try another
            tcp_sock.close()
            if udp_sock is not None:
                udp_sock.close()
            continue
        tcp_sock.listen(64)
        tcp_sock.setblocking(False)
        if udp_sock is not None:
            udp_sock.setblocking(False)
        return udp_sock, tcp_sock
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


class FakeDoh:
    """DNS over HTTPS (RFC 8484) served by the project's own web server, on a loop of its own.

    POST /dns-query answers A queries for every name with DEFAULT_ANSWER; `status` and
    `content_type` let a test make it misbehave.
    """

    def __init__(self, ssl_context: ssl.SSLContext, *, status: int = 200,
                 content_type: str = "application/dns-message") -> None:
        import asyncio

        from exporter.codecs import dns as codec
        from exporter.web.server import Request, Response, Route, WebServer

        async def answer(request: Request) -> Response:
            query = dns.message.from_wire(request.body)
            question = query.question[0]
            reply = codec.build_reply(request.body, answers=[
                (question.name.to_text(), 60, "A", DEFAULT_ANSWER)])
            return Response(status, reply, content_type)

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = WebServer([Route("/dns-query", answer, frozenset({"POST"}))],
                                 ssl=ssl_context)
        bound = asyncio.run_coroutine_threadsafe(
            self._server.start(["127.0.0.1:0"]), self._loop).result(5)
        self.port = int(bound[0].rpartition(":")[2])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FakeDoh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
