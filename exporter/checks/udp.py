"""The `udp` check: send a datagram to host:port, and judge the first reply.

The socket is connected (exporter/net/udp.py's `ConnectedUdp`), so only the target's datagrams
reach it and an ICMP port unreachable is `refused`, not silence. With `count = N`, the datagram
goes out up to N times, each try waiting twice as long as the one before, the waits filling the
run's timeout: with 3 tries and a 1 s timeout, 1/7, 2/7 and 4/7 of it. A reply to an earlier
try that comes during a later one's wait still counts (the time is then from the later send).

The first reply is the answer: it matches (`expect`, a regular expression searched in its
bytes; `expect_hex`, a prefix of them), or the run fails as `unexpected_response`. A reply that
does not match is the service's word, not a loss, so the check does not try again for a
better one. No reply to any try by the deadline is `timeout`.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from typing import Any

from exporter import metrics
from exporter.checks.base import Kind, Run, between, option
from exporter.checks.connection import RESOLVE_REASONS, resolve_target
from exporter.config.targets import HostPort, parse_host_port
from exporter.deadline import within
from exporter.errors import CheckError, Reason
from exporter.net.resolve import FAMILIES
from exporter.net.udp import ConnectedUdp, Reply

MAX_PAYLOAD = 65507  # the most a UDP datagram carries over IPv4 (65535 - 20 - 8)
MAX_REPLY = 65536  # the receive buffer: more than any UDP datagram holds, so none is cut
MAX_COUNT = 10  # tries; the first then waits 1/1023 of the timeout
# The check stops waiting this long before the run's deadline (a tenth of the run at most), so
# that it, not the runner's cancellation, says how many tries went unanswered (as ntp does).
_REPLY_MARGIN = 0.05
_EXCERPT = 64  # bytes of a reply quoted in messages and details


# --- settings -----------------------------------------------------------------------------------


def _hex(text: str) -> bytes:
    """Bytes written in hex, pairs of digits, spaces allowed between them ("de ad be ef")."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{text!r} is not hex: write the bytes as pairs of hex digits, "
                         "such as \"0d0a\" or \"de ad be ef\"") from None


def _payload(data: bytes) -> str | None:
    if len(data) > MAX_PAYLOAD:
        return (f"{len(data)} bytes is more than the {MAX_PAYLOAD} a UDP datagram carries; "
                "send less")
    return None


def _bytes_regex(text: str) -> str:
    """A regular expression over bytes: the pattern is compiled as its UTF-8 encoding."""
    try:
        re.compile(text.encode())
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return text


@dataclass(frozen=True, slots=True)
class UdpSettings:
    target: HostPort = option(parse=lambda text: parse_host_port(text, "udp"), raw=str)
    family: str = option("any", choices=tuple(FAMILIES))
    send: str = option("", check=lambda text: _payload(text.encode()))
    send_hex: bytes = option(b"", parse=_hex, raw=str, check=_payload)
    expect: str = option("", parse=_bytes_regex)
    expect_hex: bytes = option(b"", parse=_hex, raw=str)
    count: int = option(3, check=between(1, MAX_COUNT, "tries"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.send and self.send_hex:
            found.append(("send_hex", "set send (text) or send_hex (bytes), not both"))
        if self.expect and self.expect_hex:
            found.append(("expect_hex", "set expect (a regular expression) or expect_hex (a "
                                        "prefix), not both"))
        return found

    @property
    def payload(self) -> bytes:
        return self.send_hex or self.send.encode()


def retry_deadlines(start: float, end: float, count: int) -> tuple[float, ...]:
    """When each of `count` tries stops waiting: each wait twice the one before, the last
    ending at `end`."""
    first = (end - start) / (2**count - 1)
    return (*(start + first * (2 ** (i + 1) - 1) for i in range(count - 1)), end)


# --- the check ----------------------------------------------------------------------------------


async def check(settings: UdpSettings, run: Run) -> None:
    target = settings.target
    address = await resolve_target(run, target.host, target.port, settings.family,
                                   socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    now = loop.time()
    end = run.deadline - min(_REPLY_MARGIN, max(run.deadline - now, 0) / 10)
    payload = settings.payload
    tries = 0
    reply: Reply | None = None
    try:
        with ConnectedUdp(address) as peer:
            for until in retry_deadlines(now, end, settings.count):
                tries += 1
                await peer.send(payload)
                try:
                    reply = await within(peer.receive(MAX_REPLY), until)
                    break
                except asyncio.TimeoutError:
                    continue  # no reply in this try's time: the next may have one
    except ConnectionRefusedError:
        raise CheckError(Reason.REFUSED, f"{address} is unreachable on that port (ICMP port "
                                         f"unreachable after {_tries(tries)}): nothing "
                                         "listens there") from None
    run.detail("tries", f"{tries} of {settings.count}")
    if reply is None:
        raise CheckError(Reason.TIMEOUT, f"no reply from {address} to {_tries(tries)}")
    run.detail("reply", f"{len(reply.data)} bytes: {excerpt(reply.data)}")
    if reply.truncated:
        run.detail("truncated", f"the reply was longer than {MAX_REPLY} bytes")
    if not matches(settings, reply.data):
        wanted = (f"/{settings.expect}/" if settings.expect
                  else f"a start of {settings.expect_hex.hex()}")
        raise CheckError(Reason.UNEXPECTED_RESPONSE,
                         f"the reply of {len(reply.data)} bytes does not match {wanted}: "
                         f"{excerpt(reply.data)}")
    run.detail("timestamps", "kernel" if reply.kernel else "user space")
    run.gauge(metrics.UDP_RESPONSE, reply.elapsed)
    run.gauge(metrics.UDP_RESPONSE_BYTES, len(reply.data))


def matches(settings: UdpSettings, data: bytes) -> bool:
    """True if `data` is the reply the settings expect (any reply, when they expect none)."""
    if settings.expect:
        return re.search(settings.expect.encode(), data) is not None
    return data.startswith(settings.expect_hex)


def excerpt(data: bytes) -> str:
    """The first bytes of a reply as people read them: Python's bytes escapes, cut short."""
    text = repr(data[:_EXCERPT])[2:-1]
    return text + ("..." if len(data) > _EXCERPT else "")


def _tries(n: int) -> str:
    return "1 datagram" if n == 1 else f"{n} datagrams"


def probe_keys(options: dict[str, Any]) -> dict[str, Any]:
    """`netsentry probe udp`: the text keys stay text (`--send_hex 1234` is not a number)."""
    for key in ("send", "send_hex", "expect", "expect_hex"):
        value = options.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            options[key] = str(value)
        elif value is not None and not isinstance(value, str):
            raise ValueError(f"--{key} {value!r} reads as a TOML value: quote it as a string "
                             f"(--{key} '\"...\"')")
    return options


KIND = Kind(
    name="udp",
    settings=UdpSettings,
    check=check,
    reasons=(*RESOLVE_REASONS, Reason.REFUSED, Reason.NETWORK_ERROR,
             Reason.UNEXPECTED_RESPONSE, Reason.INTERNAL_ERROR),
    specs=(metrics.DNS_LOOKUP, metrics.UDP_RESPONSE, metrics.UDP_RESPONSE_BYTES),
    summary="send a datagram to host:port (the port may be a service name) and match the reply",
    probe_keys=probe_keys,
)
