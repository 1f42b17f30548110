"""The HTTP/1.1 client: one request on a stream that `net.stream` opened (DNS over HTTPS, the http
check), h11 doing the protocol.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import h11

_READ_CHUNK = 65536


# Content-Encodings decoded (RFC 9110 §8.4.1); zlib's "+32" reads a gzip or a zlib header.
DECODED = frozenset({"gzip", "x-gzip", "deflate"})


class ResponseError(Exception):
    """The server's response broke HTTP/1.1 or our limits; str() says how."""


class ResponseTooLarge(ResponseError):
    """The body went over the caller's cap, as received or once decompressed."""


@dataclass(frozen=True, slots=True)
class ClientResponse:
    status: int
    headers: tuple[tuple[str, str], ...]  # lower-case names, in order
    body: bytes  # decompressed when the request asked for it
    http_version: str
    received: int = 0  # body bytes as they came over the wire
    trailers: tuple[tuple[str, str], ...] = ()  # HTTP/2's, after the body (gRPC's status)


class ByteStream(Protocol):
    """What the client needs of a connection (net.stream.Stream is one)."""

    async def read(self, size: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


async def request(
    stream: ByteStream,
    method: str,
    host: str,
    target: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    max_body: int = 1 << 20,
    decode: bool = False,
    timings: dict[str, float] | None = None,
) -> ClientResponse:
    """Send one HTTP/1.1 request on an open stream and read the whole response.

    A response that breaks the protocol, or a body over `max_body` bytes (so that a hostile
    server cannot make us buffer without bound), raises ResponseError. With `decode`, a gzip or
    deflate body is decompressed as it arrives, under the same cap, so a gzip bomb stops there.
    `timings`, if given, gets "processing" (request sent → first byte of the response) and
    "transfer" (that byte → end of the body), in seconds. The caller's deadline bounds the time.
    A `host` header in `headers` replaces the default one.
    """
    conn = h11.Connection(h11.CLIENT)
    own = {name.lower() for name, _ in headers}
    head = [*([("Host", host)] if "host" not in own else []), ("Connection", "close"), *headers]
    if body or method in ("POST", "PUT"):
        head.append(("Content-Length", str(len(body))))
    try:
        out = conn.send(h11.Request(method=method, target=target, headers=head)) or b""
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        # h11's message would quote the offending header, and header values may be secrets.
        raise ResponseError("cannot send the request: a header or the target is not valid "
                            "HTTP/1.1") from None
    await stream.write(out)
    try:
        return await _read_response(conn, stream, max_body, decode, timings)
    except h11.ProtocolError as exc:
        if conn.their_http_version is None and _looks_like_http2(conn.trailing_data[0]):
            raise ResponseError("the server answered with HTTP/2 frames, not HTTP/1.1 (it "
                                "speaks HTTP/2 only)") from None
        raise ResponseError(f"invalid HTTP response: {exc}") from None


def _looks_like_http2(data: bytes) -> bool:
    """Whether `data` opens as an HTTP/2 server does: a SETTINGS frame on stream 0 (RFC 9113
    §3.4), a 9-byte header whose length is a whole number of 6-byte settings."""
    return (len(data) >= 9 and data[3] == 0x4 and data[5:9] == bytes(4)
            and int.from_bytes(data[:3], "big") % 6 == 0)


async def _read_response(conn: h11.Connection, stream: ByteStream, max_body: int,
                         decode: bool, timings: dict[str, float] | None) -> ClientResponse:
    sent = time.perf_counter()
    first_byte: float | None = None
    response: h11.Response | None = None
    decoder: Any = None
    encoding = ""
    data = bytearray()
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.read(_READ_CHUNK)
            if first_byte is None:
                first_byte = time.perf_counter()
            if not chunk and response is None:
                raise ResponseError("the server closed the connection without an HTTP/1.1 "
                                    "response (it may speak HTTP/2 only)")
            conn.receive_data(chunk)
        elif isinstance(event, h11.Response):
            response = event
            encoding = dict(event.headers).get(b"content-encoding", b"").decode(
                "latin-1").strip().lower()
            if decode and encoding in DECODED:
                decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
        elif isinstance(event, h11.Data):
            received += len(event.data)
            if received > max_body:
                raise ResponseTooLarge(f"response body larger than {max_body} bytes")
            data += event.data if decoder is None else inflate(decoder, encoding, event.data,
                                                               max_body, len(data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if response is None:  # h11 ends a response it has not seen only by raising
        raise ResponseError("the server sent no HTTP/1.1 response")
    if decoder is not None and received:
        data += inflate(decoder, encoding, b"", max_body, len(data))
        if not decoder.eof:
            raise ResponseError(f"the {encoding} body is cut short")
    if timings is not None and first_byte is not None:
        timings["processing"] = first_byte - sent
        timings["transfer"] = time.perf_counter() - first_byte
    return ClientResponse(
        status=response.status_code,
        headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers),
        body=bytes(data),
        http_version=response.http_version.decode("ascii"),
        received=received,
    )


def inflate(decoder: Any, encoding: str, data: bytes, max_body: int, have: int) -> bytes:
    """Decompress `data` to at most one byte over the cap, and raise if it got there."""
    limit = max_body + 1 - have  # ≥ 1: the cap was not passed yet (0 would mean "no limit")
    try:
        out = decoder.decompress(data, limit) if data else decoder.flush(limit)
    except zlib.error as exc:
        raise ResponseError(f"invalid {encoding} body: {exc}") from None
    if have + len(out) > max_body:
        raise ResponseTooLarge(f"decompressed response body larger than {max_body} bytes")
    return bytes(out)
