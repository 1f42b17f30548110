"""The `websocket` check: the RFC 6455 opening handshake to a ws:// or wss:// URL, optionally one
text message sent (`send`) and the first message received held against a regex (`expect`), then
the close handshake.

Phases as the tcp check names them (resolve, connect, TLS), and the handshake: the upgrade
request sent → the 101 response read and its Sec-WebSocket-Accept verified.
"""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import dataclass
from typing import Any

from exporter import __version__, humanize, metrics
from exporter.checks.base import Kind, Run, option, readable_file, regex
from exporter.checks.connection import (
    CONNECT_REASONS,
    TCP_INFO_SPECS,
    TLS_SPECS,
    record_tcp_info,
    record_tls,
    tls_context,
)
from exporter.checks.http import _VERIFY, _header_problem, split_url
from exporter.errors import CheckError, Reason
from exporter.net import websocket_client
from exporter.net.resolve import FAMILIES
from exporter.net.stream import open_stream


@dataclass(frozen=True, slots=True)
class WsUrl:
    scheme: str  # "ws" | "wss"
    host: str
    port: int
    target: str  # path and query, as sent in the request line

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "wss" else 80) else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


def parse_ws_url(text: str) -> WsUrl:
    url = WsUrl(*split_url(text, {"ws": 80, "wss": 443}, "a ws:// or wss://", "headers"))
    if "#" in text:
        raise ValueError(f"invalid URL {text!r}: a WebSocket URL has no fragment (RFC 6455 §3)")
    return url


def _headers(table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    for name, value in table.items():
        if name.lower() in websocket_client.RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the WebSocket handshake")
        if (problem := _header_problem(name, value, False)) is not None:
            raise ValueError(problem)
    return tuple(table.items())


@dataclass(frozen=True, slots=True)
class WebsocketSettings:
    target: WsUrl = option(parse=parse_ws_url, raw=str)
    send: str = option("")
    expect: str = option("", parse=regex, raw=str)
    headers: tuple[tuple[str, str], ...] = option((), parse=_headers, raw=dict)
    server_name: str = option("")
    ca_file: str = option("", check=readable_file)
    tls_insecure_skip_verify: bool = option(False)
    family: str = option("any", choices=tuple(FAMILIES))
    max_message_bytes: int = option(1 << 20, check=lambda n: "must be more than 0" if n <= 0
                                    else None)

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.target.scheme == "ws":
            for key, given in (("server_name", self.server_name), ("ca_file", self.ca_file),
                               ("tls_insecure_skip_verify", self.tls_insecure_skip_verify)):
                if given:
                    found.append((key, "is for TLS: use a wss:// URL"))
        return found


async def check(settings: WebsocketSettings, run: Run) -> None:
    url = settings.target
    started = time.perf_counter()
    address = (await run.resolver.resolve(url.host, url.port, FAMILIES[settings.family]))[0]
    run.gauge(metrics.DNS_LOOKUP, time.perf_counter() - started)
    run.detail("address", str(address))
    context = (tls_context(run, settings.ca_file, settings.tls_insecure_skip_verify,
                           ("http/1.1",)) if url.scheme == "wss" else None)
    server_name = (settings.server_name or url.host) if context is not None else None
    timings: dict[str, float] = {}
    headers = [("User-Agent", f"netsentry/{__version__}")]
    given = {name.lower() for name, _ in settings.headers}
    headers = [(n, v) for n, v in headers if n.lower() not in given] + list(settings.headers)
    try:
        async with open_stream(address, ssl_context=context, server_hostname=server_name,
                               timings=timings) as stream:
            run.gauge(metrics.TCP_CONNECT, timings["connect"])
            if stream.tls is not None:
                run.gauge(metrics.TLS_HANDSHAKE, timings["tls"])
                record_tls(run, stream.tls)
            try:
                session = await websocket_client.session(
                    stream, url.authority, url.target, headers=headers,
                    send=settings.send or None, receive=bool(settings.expect),
                    max_message=settings.max_message_bytes)
            except websocket_client.UpgradeRefused as exc:
                run.gauge(metrics.HTTP_STATUS, exc.status)
                raise CheckError(Reason.BAD_STATUS, str(exc)) from None
            except websocket_client.HandshakeError as exc:
                raise CheckError(Reason.MALFORMED_RESPONSE, str(exc)) from None
            except websocket_client.WebSocketError as exc:  # too large, closed early
                raise CheckError(Reason.UNEXPECTED_RESPONSE, str(exc)) from None
            record_tcp_info(run, stream.sock)
    except ssl.SSLCertVerificationError as exc:
        cause = _VERIFY.get(exc.verify_code, exc.verify_message or str(exc))
        if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            cause = f"the certificate is not valid for {server_name}"
        raise CheckError(Reason.TLS_ERROR, f"certificate of {url.authority}: {cause}") from None
    except ssl.SSLError as exc:
        raise CheckError(Reason.TLS_ERROR, f"TLS with {url.authority}: "
                         f"{(exc.reason or str(exc)).lower().replace('_', ' ')}") from None
    run.gauge(metrics.HTTP_STATUS, 101)
    run.gauge(metrics.WEBSOCKET_HANDSHAKE, session.handshake_seconds)
    run.detail("url", str(url))
    run.detail("handshake", humanize.duration(session.handshake_seconds))
    if session.message is not None:
        run.detail("message", f"{session.message_bytes} bytes in "
                   f"{humanize.duration(session.message_seconds or 0.0)}")
    run.detail("close", "without a close frame" if session.close_code is None
               else f"code {session.close_code}")
    if settings.expect and (session.message is None
                            or not re.search(settings.expect, session.message)):
        raise CheckError(Reason.UNEXPECTED_RESPONSE,
                         f"the first message does not match /{settings.expect}/")


KIND = Kind(
    name="websocket",
    settings=WebsocketSettings,
    check=check,
    reasons=(*CONNECT_REASONS, Reason.TLS_ERROR, Reason.BAD_STATUS,
             Reason.UNEXPECTED_RESPONSE, Reason.MALFORMED_RESPONSE, Reason.INTERNAL_ERROR),
    specs=(metrics.DNS_LOOKUP, metrics.TCP_CONNECT, *TCP_INFO_SPECS, metrics.TLS_HANDSHAKE,
           *TLS_SPECS, metrics.HTTP_STATUS, metrics.WEBSOCKET_HANDSHAKE),
    summary="open a WebSocket (ws:// or wss://), optionally send and expect a message, close",
)
