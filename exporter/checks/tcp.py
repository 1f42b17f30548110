"""The `tcp` check: resolve, connect, optionally TLS and a dialog, read TCP_INFO, close.

Each phase is timed. The dialog is a list of steps — expect a line matching a regex, send a
line, upgrade with STARTTLS — enough for SMTP, IMAP, POP3 and most line protocols.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from exporter import metrics
from exporter.checks.base import Kind, Run, option, readable_file
from exporter.checks.connection import (
    CONNECT_REASONS,
    TCP_INFO_SPECS,
    TLS_SPECS,
    record_tcp_info,
    record_tls,
    tls_context,
)
from exporter.config.targets import HostPort, parse_host_port
from exporter.errors import CheckError, Reason
from exporter.net.resolve import FAMILIES
from exporter.net.stream import Stream, open_stream
from exporter.net.tcp import connect_tcp
from exporter.net.tls import tls_handshake


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a dialog: wait for a line matching `expect`, `send` a line, or `starttls`."""

    action: str  # "expect" | "send" | "starttls"
    text: str = ""


def _dialog(raw: list[Any]) -> tuple[Step, ...]:
    steps = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"step {i}: write each step as {{expect = \"regex\"}}, "
                             "{send = \"line\"} or {starttls = true}")
        (action, value), = item.items()
        if action == "expect" and isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"step {i}: invalid regular expression: {exc}") from None
        elif action == "send" and isinstance(value, str):
            if "\n" in value or "\r" in value:
                raise ValueError(f"step {i}: send one line; the line ending is added")
        elif not (action == "starttls" and value is True):
            raise ValueError(f"step {i}: unknown step {action!r}; use expect, send or starttls")
        steps.append(Step(action, value if isinstance(value, str) else ""))
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class TcpSettings:
    target: HostPort = option(parse=lambda text: parse_host_port(text, "tcp"), raw=str)
    family: str = option("any", choices=tuple(FAMILIES))
    tls: bool = option(False)
    dialog: tuple[Step, ...] = option((), parse=_dialog, raw=list)
    server_name: str = option("")
    ca_file: str = option("", check=readable_file)
    tls_insecure_skip_verify: bool = option(False)

    def problems(self) -> list[tuple[str, str]]:
        found = []
        starttls = sum(step.action == "starttls" for step in self.dialog)
        if starttls and self.tls:
            found.append(("dialog", "starttls with tls = true: the connection is TLS already"))
        if starttls > 1:
            found.append(("dialog", "starttls more than once"))
        return found


async def check(settings: TcpSettings, run: Run) -> None:
    target = settings.target
    started = time.perf_counter()
    addresses = await run.resolver.resolve(target.host, target.port, FAMILIES[settings.family])
    resolved = time.perf_counter()
    run.gauge(metrics.DNS_LOOKUP, resolved - started)
    address = addresses[0]
    run.detail("address", str(address))
    if not settings.dialog:
        # The lean path: no streams, no transport objects.
        sock: socket.socket = await connect_tcp(address)
        try:
            connected = time.perf_counter()
            run.gauge(metrics.TCP_CONNECT, connected - resolved)
            if settings.tls:
                sock = await tls_handshake(sock, _context(settings, run), _name(settings))
                run.gauge(metrics.TLS_HANDSHAKE, time.perf_counter() - connected)
                record_tls(run, sock)
            record_tcp_info(run, sock)
        finally:
            sock.close()
        return
    timings: dict[str, float] = {}
    context = _context(settings, run) if settings.tls else None
    async with open_stream(address, ssl_context=context,
                           server_hostname=_name(settings) if context else None,
                           timings=timings) as stream:
        run.gauge(metrics.TCP_CONNECT, timings["connect"])
        if stream.tls is not None:
            run.gauge(metrics.TLS_HANDSHAKE, timings["tls"])
            record_tls(run, stream.tls)
        await _converse(settings, run, stream)
        record_tcp_info(run, stream.sock)


def _name(settings: TcpSettings) -> str:
    return settings.server_name or settings.target.host


def _context(settings: TcpSettings, run: Run) -> ssl.SSLContext:
    return tls_context(run, settings.ca_file, settings.tls_insecure_skip_verify)


async def _converse(settings: TcpSettings, run: Run, stream: Stream) -> None:
    for step in settings.dialog:
        if step.action == "send":
            await stream.write(step.text.encode() + b"\r\n")
        elif step.action == "expect":
            await _expect(stream, step.text)
        else:
            started = time.perf_counter()
            await stream.start_tls(_context(settings, run), _name(settings))
            run.gauge(metrics.TLS_HANDSHAKE, time.perf_counter() - started)
            if stream.tls is not None:
                record_tls(run, stream.tls)


async def _expect(stream: Stream, pattern: str) -> None:
    """Read lines until one matches; multi-line replies (SMTP's 250-…) need no special case."""
    regex = re.compile(pattern)
    for _ in range(MAX_LINES):
        try:
            line = await stream.readline(MAX_LINE)
        except ValueError as exc:
            raise CheckError(Reason.UNEXPECTED_RESPONSE, str(exc)) from None
        if not line:
            raise CheckError(Reason.UNEXPECTED_RESPONSE,
                             f"the connection closed before a line matched /{pattern}/")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if regex.search(text):
            return
    raise CheckError(Reason.UNEXPECTED_RESPONSE, f"no line of {MAX_LINES} matched /{pattern}/")


MAX_LINES = 1000  # lines read waiting for one `expect`; the deadline bounds the time
MAX_LINE = 65536  # bytes in one line


KIND = Kind(
    name="tcp",
    settings=TcpSettings,
    check=check,
    reasons=(*CONNECT_REASONS, Reason.TLS_ERROR, Reason.UNEXPECTED_RESPONSE,
             Reason.INTERNAL_ERROR),
    specs=(metrics.DNS_LOOKUP, metrics.TCP_CONNECT, *TCP_INFO_SPECS, metrics.TLS_HANDSHAKE,
           *TLS_SPECS),
    summary="connect to host:port (the port may be a service name) and time each phase",
)


