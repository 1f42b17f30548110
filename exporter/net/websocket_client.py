"""The WebSocket client: one session on a stream that `net.stream` opened (the websocket check),
wsproto doing the protocol (RFC 6455 over HTTP/1.1, no extensions, so no compression to bomb).

A session is the opening handshake, optionally one text message sent and the first message
received, then the close handshake. The caller's deadline bounds the time; the message cap and a
bound on control frames bound the memory and the work a hostile server can ask for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from exporter.net.http_client import ByteStream

_READ_CHUNK = 65536
MAX_CONTROL_FRAMES = 1000  # pings and pongs read waiting for one message or the close

# Headers the handshake sets itself (RFC 6455 §4.1); a check's own `headers` may not.
RESERVED_HEADERS = frozenset({"host", "upgrade", "connection", "sec-websocket-key",
                              "sec-websocket-version", "sec-websocket-extensions",
                              "content-length", "transfer-encoding"})

# wsproto's words for a bad 101 response, in ours.
_HANDSHAKE_PROBLEMS = {
    "Bad accept token": "the server's Sec-WebSocket-Accept does not answer our "
                        "Sec-WebSocket-Key (RFC 6455 §4.1)",
    "Bad HTTP message": "the server's response is not valid HTTP/1.1",
}


class WebSocketError(Exception):
    """The session failed; str() says how, in the user's words."""


class UpgradeRefused(WebSocketError):
    """The server answered the upgrade with another status than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the server refused the upgrade with HTTP status {status}, "
                         "expected 101 Switching Protocols")
        self.status = status


class HandshakeError(WebSocketError):
    """The server's 101 response breaks RFC 6455 (a wrong accept key, a missing header)."""


class MessageTooLarge(WebSocketError):
    """The first message went over the caller's cap."""


class UnexpectedClose(WebSocketError):
    """The server closed (or broke the framing) before the message was received."""


@dataclass(frozen=True, slots=True)
class Session:
    message: str | None  # the first message received (bytes decoded as UTF-8), if asked for
    message_bytes: int  # its length as received
    close_code: int | None  # the server's close code; None if it closed without a close frame
    handshake_seconds: float  # request sent → the 101 response read and verified
    message_seconds: float | None  # message sent (or handshake done) → first message complete


async def session(
    stream: ByteStream,
    host: str,
    target: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    send: str | None = None,
    receive: bool = False,
    max_message: int = 1 << 20,
) -> Session:
    """Open a WebSocket on `stream` (Host `host`, request target `target`), send `send` as one
    text message if given, read the first message if `receive` (or `send`), and close.

    Raises UpgradeRefused, HandshakeError, MessageTooLarge or UnexpectedClose; a connection
    closed before the response raises ConnectionResetError."""
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        request = ws.send(Request(host=host, target=target, extra_headers=[
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]))
    except (LocalProtocolError, UnicodeEncodeError):
        raise HandshakeError("cannot send the request: a header or the target is not valid "
                             "HTTP/1.1") from None
    reader = _Reader(stream, ws)
    started = time.perf_counter()
    await stream.write(request)
    accepted = await reader.handshake()
    handshake_seconds = accepted - started
    message: str | None = None
    size = 0
    message_seconds = None
    if send is not None or receive:
        sent = time.perf_counter()
        # A close that came with the 101 (a busy server's 1013) is read below, not sent into.
        if send is not None and ws.state is ConnectionState.OPEN:
            await stream.write(ws.send(TextMessage(data=send)))
        message, size = await reader.message(max_message)
        message_seconds = time.perf_counter() - sent
    close_code = await reader.close()
    return Session(message, size, close_code, handshake_seconds, message_seconds)


class _Reader:
    """The events of one connection, read as they are needed."""

    __slots__ = ("_pending", "_stream", "_ws")

    def __init__(self, stream: ByteStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._pending: list[Event] = []

    async def _next(self) -> Event | None:
        """The next event; None at the end of the stream."""
        while not self._pending:
            chunk = await self._stream.read(_READ_CHUNK)
            try:
                self._ws.receive_data(chunk or None)
                self._pending.extend(self._ws.events())
            except RemoteProtocolError as exc:
                text = str(exc)
                raise HandshakeError(_HANDSHAKE_PROBLEMS.get(text, f"invalid handshake: {text}")
                                     ) from None
            except LocalProtocolError:  # data after the connection closed
                raise UnexpectedClose("the server sent data after the WebSocket closed"
                                      ) from None
            if not chunk and not self._pending:
                return None
        return self._pending.pop(0)

    async def handshake(self) -> float:
        """Read the response to the upgrade; when it was accepted (perf_counter)."""
        event = await self._next()
        if event is None:
            raise ConnectionResetError("the server closed the connection before a response")
        if isinstance(event, RejectConnection):
            raise UpgradeRefused(event.status_code)
        if not isinstance(event, AcceptConnection):  # pragma: no cover - wsproto's contract
            raise HandshakeError(f"unexpected {type(event).__name__} before the handshake")
        return time.perf_counter()

    async def message(self, cap: int) -> tuple[str, int]:
        """The first data message, whole; text as it is, bytes decoded as UTF-8."""
        text: list[str] = []
        data = bytearray()
        size = 0
        controls = 0
        while True:
            event = await self._next()
            if event is None or isinstance(event, CloseConnection):
                raise UnexpectedClose(_closed(event, "before a message"))
            if isinstance(event, TextMessage | BytesMessage):
                if isinstance(event, TextMessage):
                    size += len(event.data.encode())
                    text.append(event.data)
                else:
                    size += len(event.data)
                    data += event.data
                if size > cap:
                    raise MessageTooLarge(f"the first message is larger than {cap} bytes "
                                          "(max_message_bytes)")
                if event.message_finished:
                    return "".join(text) + data.decode("utf-8", "replace"), size
                continue
            controls += 1
            if controls > MAX_CONTROL_FRAMES:
                raise UnexpectedClose(f"more than {MAX_CONTROL_FRAMES} control frames and no "
                                      "message")
            if isinstance(event, Ping):
                await self._stream.write(self._ws.send(event.response()))

    async def close(self) -> int | None:
        """Our close frame, then the server's; its close code (None: closed without one)."""
        await self._stream.write(self._ws.send(CloseConnection(code=1000)))
        for _ in range(MAX_CONTROL_FRAMES):
            event = await self._next()
            if event is None:
                return None
            if isinstance(event, CloseConnection):
                # The 1006 wsproto makes up for a connection lost without a close frame is not
                # the server's.
                return None if event.code == 1006 else int(event.code)
        raise UnexpectedClose(f"no close frame after {MAX_CONTROL_FRAMES} frames")


def _closed(event: CloseConnection | None, when: str) -> str:
    if event is None or event.code == 1006:
        return f"the server closed the connection {when}"
    reason = f" ({event.reason})" if event.reason else ""
    return f"the server closed the WebSocket {when} with code {int(event.code)}{reason}"
