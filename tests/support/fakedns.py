"""Fake DNS servers for what a real one will not do on demand.

SERVFAIL, truncation, garbage, a reply with the wrong ID and one from the wrong port before the
right one, silence, a stream cut short, and DNS over TLS (certificates from tests/support/certs.py).
Each server is a ThreadedServer (tests/support/server.py: 127.0.0.1, port 0, UDP and TCP on
the same port number like a real server, bounded waits, a clean close) that answers with
dnspython's message API. FakeDoh is the project's own asyncio web server on a loop of its own.
"""

from __future__ import annotations

import asyncio
import os
import secrets
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

from tests.support.server import POLL, Served, ThreadedServer

BEHAVIOURS = (
    "answer",  # a normal answer from `records`
    "servfail",  # SERVFAIL, over UDP and TCP
    "truncate",  # UDP: TC set and no answers; TCP: the full answer
    "garbage",  # random bytes (never with the query's ID), over UDP and TCP
    "wrong_id_first",  # UDP: wrong ID, then right ID from another port, then the reply
    "wrong_id",  # UDP: the reply with a wrong ID, and nothing else; TCP: the reply
    "silent",  # reads, never replies
    "close_early",  # TCP: the first `cut` bytes of the framed reply, then close; UDP: silent
)

# The answer of the spoofed datagram (TEST-NET-1, RFC 5737): a test can tell it from the real one.
SPOOFED_ANSWER = "192.0.2.66"
# What every A query gets when no records are given.
DEFAULT_ANSWER = "127.0.0.7"

Records = Mapping[str, Sequence[tuple[str, str, int]]]  # name -> [(rdtype, rdata, ttl)]


class FakeDns(ThreadedServer):
    """A fake DNS server with one `behaviour` (see BEHAVIOURS).

    `records` maps names to [(rdtype, rdata, ttl)]; a name not in it is NXDOMAIN. Without
    `records`, every A query is answered with DEFAULT_ANSWER. With `tls`, it serves DNS over
    TLS (RFC 7858) on TCP only (see FakeDot).
    """

    name = "fakedns"

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
        super().__init__(udp=tls is None, tcp=True, tls=tls)
        self.behaviour = behaviour
        self.cut = cut
        self._records = None if records is None else _index(records)
        self.queries: list[bytes] = []  # every query received, UDP and TCP, in order
        self.tcp_queries: list[bytes] = []  # those that came over TCP (or TLS)
        self.sent = 0  # datagrams and stream messages sent, decoys included
        self.decoys = 0  # of those, the ones a client must ignore (wrong ID, wrong port, garbage)
        self._lock = threading.Lock()
        # The spoofer: same host, another port (only the source port betrays it).
        self._spoofer = self.loopback_socket()
        self.start()

    # --- serving -------------------------------------------------------------------------

    def handle_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        self.queries.append(data)
        self._answer_datagram(data, peer)

    def _answer_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        if self.behaviour in ("silent", "close_early"):
            return
        if self.behaviour == "garbage":
            for _ in range(3):
                self._send_datagram(self.udp, _garbage(data), peer, decoy=True)
            return
        query = _parse(data)
        if query is None:
            return
        if self.behaviour == "truncate":
            # RFC 1035 §4.1.1 / RFC 7766 §5: TC set, the answer left for TCP.
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
            self._send_datagram(self.udp, response.to_wire(), peer)
            return
        response = self._response(query)
        if self.behaviour == "wrong_id":
            response.id = (query.id + 1) & 0xFFFF
            self._send_datagram(self.udp, response.to_wire(), peer, decoy=True)
            return
        if self.behaviour == "wrong_id_first":
            wrong = self._response(query)
            wrong.id = (query.id + 1) & 0xFFFF
            self._send_datagram(self.udp, wrong.to_wire(), peer, decoy=True)
            time.sleep(0.005)
            spoofed = dns.message.make_response(query)
            spoofed.answer.append(
                dns.rrset.from_text(query.question[0].name, 300, "IN", "A", SPOOFED_ANSWER)
            )
            self._send_datagram(self._spoofer, spoofed.to_wire(), peer, decoy=True)
            time.sleep(0.005)
        self._send_datagram(self.udp, response.to_wire(), peer)

    def _send_datagram(
        self, sock: socket.socket | None, wire: bytes, peer: tuple[str, int], decoy: bool = False
    ) -> None:
        assert sock is not None
        # Counted before it leaves: the client may have its answer before sendto returns.
        with self._lock:
            self.sent += 1
            self.decoys += decoy
        sock.sendto(wire, peer)

    def handle_connection(self, stream: socket.socket, deadline: float) -> None:
        stream.settimeout(POLL)
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

    def _stream_reply(self, data: bytes) -> bytes | None:
        if self.behaviour == "silent":
            return None
        if self.behaviour == "garbage":
            return _garbage(data)
        query = _parse(data)
        if query is None:
            return None
        # Over a stream, wrong_id_first, wrong_id and truncate answer straight away: nobody can
        # spoof a TCP segment on loopback, and truncation is what TCP is the cure for.
        return self._response(query).to_wire()

    def _read(self, stream: socket.socket, size: int, deadline: float) -> bytes | None:
        """Exactly `size` bytes, or None at end of stream, at the deadline or when stopped."""
        data = bytearray()
        while len(data) < size:
            if self.stopping or time.monotonic() > deadline:
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


class FakeDoh(Served):
    """DNS over HTTPS (RFC 8484) served by the project's own web server, on a loop of its own.

    POST /dns-query answers A queries for every name with DEFAULT_ANSWER; `status` and
    `content_type` let a test make it misbehave.
    """

    def __init__(self, ssl_context: ssl.SSLContext, *, status: int = 200,
                 content_type: str = "application/dns-message") -> None:
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

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
