"""The HTTP/2 client: one request on one stream of a connection that `net.stream` opened,
python-hyper's h2 doing the framing (RFC 9113).

Over TLS it is used where ALPN chose "h2"; in the clear only with prior knowledge (h2c), where
the caller asks. The response comes back as `http_client.ClientResponse`, with the same body
cap and decompression as HTTP/1.1, and the trailers a gRPC call ends with. A hostile server is
bounded three ways besides the caller's deadline: the bytes it may send in all (the body cap
plus a header allowance, so an endless HEADERS/CONTINUATION block or a SETTINGS flood ends
there), the frames it may send that carry no body, and h2's own protocol checks.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from exporter.net.http_client import (
    DECODED,
    ByteStream,
    ClientResponse,
    ResponseError,
    ResponseTooLarge,
    inflate,
)

_READ_CHUNK = 65536
MAX_HEADER_BYTES = 1 << 20  # wire bytes besides the body: headers, trailers, control frames
MAX_CONTROL_FRAMES = 1000  # frames without body data (SETTINGS, PING, PRIORITY, ...)
_WINDOW = 1 << 24  # the receive window we grant; the body cap ends a larger body first
# One configuration for every connection (it holds no state). Header names come lower-cased
# and values checked by the config; h2 still validates them (and rejects the HTTP/1.1-only
# ones, RFC 9113 §8.2.2) and every inbound header.
_CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                    validate_inbound_headers=True,
                                    normalize_outbound_headers=False)


async def request(
    stream: ByteStream,
    method: str,
    authority: str,
    target: str,
    *,
    scheme: str = "https",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    max_body: int = 1 << 20,
    decode: bool = False,
    timings: dict[str, float] | None = None,
) -> ClientResponse:
    """Send one HTTP/2 request on an open stream and read the whole response.

    As `http_client.request`: a response that breaks the protocol or our limits raises
    ResponseError (ResponseTooLarge past `max_body`, as received or decompressed); `timings`
    gets "processing" (request sent → the first HEADERS frame of the response) and
    "transfer" (that frame → END_STREAM). A `host` header becomes the `:authority`.
    """
    conn = h2.connection.H2Connection(_CONFIG)
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_BYTES,
    })
    conn.initiate_connection()
    conn.increment_flow_control_window(_WINDOW)
    own = {name.lower(): value for name, value in headers}
    authority = own.pop("host", authority)
    head = [(":method", method), (":scheme", scheme), (":authority", authority),
            (":path", target),
            *((n.lower(), v.strip()) for n, v in headers
              if n.lower() not in ("host", "connection"))]
    if body or method in ("POST", "PUT"):
        head.append(("content-length", str(len(body))))
    stream_id = conn.get_next_available_stream_id()
    try:
        conn.send_headers(stream_id, [(n.encode(), v.encode()) for n, v in head],
                          end_stream=not body)
        if body:  # the server's initial window is at least 65,535 bytes: enough for ours
            conn.send_data(stream_id, body, end_stream=True)
    except (h2.exceptions.H2Error, ValueError, UnicodeEncodeError):
        raise ResponseError("cannot send the request: a header or the target is not valid "
                            "HTTP/2") from None
    await stream.write(conn.data_to_send())
    return await _Response(conn, stream, stream_id, max_body, decode).read(timings)


class _Response:
    """The events of one stream, gathered into a ClientResponse."""

    def __init__(self, conn: h2.connection.H2Connection, stream: ByteStream, stream_id: int,
                 max_body: int, decode: bool) -> None:
        self.conn, self.stream, self.stream_id = conn, stream, stream_id
        self.max_body, self.decode = max_body, decode
        self.status: int | None = None
        self.headers: tuple[tuple[str, str], ...] = ()
        self.trailers: tuple[tuple[str, str], ...] = ()
        self.data = bytearray()
        self.received = 0
        self.decoder: Any = None
        self.encoding = ""
        self.ended = False

    async def read(self, timings: dict[str, float] | None) -> ClientResponse:
        sent = time.perf_counter()
        first_headers: float | None = None
        wire = control = 0
        while not self.ended:
            chunk = await self.stream.read(_READ_CHUNK)
            if not chunk:
                raise ConnectionResetError(
                    "the server closed the connection before the end of the HTTP/2 response"
                    if self.status is not None else
                    "the server closed the connection before an HTTP/2 response")
            wire += len(chunk)
            if wire > self.max_body + MAX_HEADER_BYTES:
                raise ResponseTooLarge(f"the server sent more than {self.max_body} body bytes "
                                       f"and {MAX_HEADER_BYTES} bytes of headers and frames")
            try:
                events = self.conn.receive_data(chunk)
            except h2.exceptions.H2Error as exc:
                raise ResponseError(f"invalid HTTP/2 from the server: {_describe(exc)}"
                                    ) from None
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    self._body(event)
                else:
                    control += 1
                    if control > MAX_CONTROL_FRAMES:
                        raise ResponseError(f"more than {MAX_CONTROL_FRAMES} HTTP/2 frames "
                                            "without body data (a SETTINGS or PING flood?)")
                    had_status = self.status is not None
                    self._event(event)
                    if first_headers is None and not had_status and self.status is not None:
                        first_headers = time.perf_counter()
            pending = self.conn.data_to_send()
            if pending and not self.ended:  # SETTINGS and PING acknowledgements, windows
                await self.stream.write(pending)
        if self.status is None:
            raise ResponseError("the HTTP/2 stream ended without a response")
        if self.decoder is not None and self.received:
            self.data += inflate(self.decoder, self.encoding, b"", self.max_body, len(self.data))
            if not self.decoder.eof:
                raise ResponseError(f"the {self.encoding} body is cut short")
        if timings is not None and first_headers is not None:
            timings["processing"] = first_headers - sent
            timings["transfer"] = time.perf_counter() - first_headers
        return ClientResponse(status=self.status, headers=self.headers, body=bytes(self.data),
                              http_version="2", received=self.received, trailers=self.trailers)

    def _body(self, event: h2.events.DataReceived) -> None:
        if event.stream_id != self.stream_id:
            return
        data = event.data or b""
        self.received += len(data)
        if self.received > self.max_body:
            raise ResponseTooLarge(f"response body larger than {self.max_body} bytes")
        self.data += data if self.decoder is None else inflate(
            self.decoder, self.encoding, data, self.max_body, len(self.data))
        if event.flow_controlled_length:
            self.conn.acknowledge_received_data(event.flow_controlled_length, self.stream_id)
        if event.stream_ended is not None:
            self.ended = True

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            if event.stream_id != self.stream_id:
                return
            fields = tuple((bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                           for n, v in event.headers or ())
            if isinstance(event, h2.events.TrailersReceived):
                self.trailers = fields
            else:
                self._head(fields)
            if event.stream_ended is not None:
                self.ended = True
        elif isinstance(event, h2.events.InformationalResponseReceived):
            return  # 1xx: the final response follows
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == self.stream_id:
            raise ResponseError(f"the server reset the HTTP/2 stream ({_error(event.error_code)})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise ResponseError(f"the server ended the HTTP/2 connection (GOAWAY, "
                                f"{_error(event.error_code)}) before the response was complete")
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self.stream_id:
            self.ended = True

    def _head(self, fields: tuple[tuple[str, str], ...]) -> None:
        status = next((v for n, v in fields if n == ":status"), "")
        if not status.isdigit():
            raise ResponseError("the HTTP/2 response has no valid :status")
        self.status = int(status)
        self.headers = tuple((n, v) for n, v in fields if not n.startswith(":"))
        self.encoding = dict(self.headers).get("content-encoding", "").strip().lower()
        if self.decode and self.encoding in DECODED:
            self.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)


def _error(code: Any) -> str:
    """An HTTP/2 error code by its RFC 9113 §7 name."""
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else f"error code {code}"


def _describe(exc: h2.exceptions.H2Error) -> str:
    """h2's message, which names the frame or setting at fault and quotes no header values."""
    text = str(exc) or type(exc).__name__
    return text[:200]
