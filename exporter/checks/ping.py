"""The `ping` check: `count` ICMP echoes spaced `spacing` apart; loss, round trips, reply TTL.

Every echo has a slot: it leaves at `start + i × spacing` and its reply must come within the
same wait as every other echo's — what the timeout leaves after the last one leaves — so each
echo has the same chance, as with fping's per-echo timeout. A reply counts when it comes from
the target, carries the run's identifier, the sequence of an echo of this run and that echo's
payload; each echo counts once. Everything else is counted by why and never taken for a reply:
a second reply (a duplicate), one after its slot (late), someone else's echo or an ICMP error
about a datagram this run never sent (other), bytes that are no ICMP message or a reply whose
data differs (malformed). An ICMP error about one of our echoes (unreachable, time exceeded, ...)
is counted by its type, settles that echo as lost, and names the hop that sent it.

Loss above `max_loss` fails the run as `packet_loss`; so does losing every echo, whatever
`max_loss` (a target that never answers is loss, not a timeout: the run ended on its own
schedule). The round trips are the kernel's receive time (SO_TIMESTAMPNS) less the time read
just before each send, as iputils ping measures them.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import secrets
import socket
import statistics
from dataclasses import dataclass, field

from exporter import metrics
from exporter.checks.base import Kind, Run, between, option
from exporter.checks.connection import RESOLVE_REASONS, resolve_target
from exporter.codecs import icmp as codec
from exporter.config.durations import parse_duration
from exporter.config.targets import bare_host_problem
from exporter.deadline import within
from exporter.errors import CheckError, Reason
from exporter.net.icmp import EchoSocket, EchoUnavailable, Received, open_echo_socket, unavailable
from exporter.net.resolve import FAMILIES, Address

MAX_COUNT = 10_000  # echoes in one run; more belong in a longer series of runs
MIN_SPACING = 0.001  # 1 ms, a flood below it (iputils refuses less than 2 ms to non-root)
# The check stops waiting this long before the run's deadline (a tenth of the run at most), so
# that it, not the runner's cancellation, ends the run and reports what it saw.
_MARGIN = 0.05
_MAX_DETAILS = 10  # errors and ignored messages described per run; all are counted
# The categories of errors that settle an echo as lost (a redirect or source quench does not:
# the datagram went on).
_FATAL = frozenset({"unreachable", "time_exceeded", "packet_too_big", "parameter_problem"})


# --- settings -----------------------------------------------------------------------------------



def _spacing(raw: float | int | str) -> float:
    value = parse_duration(raw) if isinstance(raw, str) else float(raw)
    if not value >= MIN_SPACING:
        raise ValueError(f"must be at least {MIN_SPACING * 1000:g}ms, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class PingSettings:
    target: str = option(check=lambda text: bare_host_problem(text, "ping"))
    family: str = option("any", choices=tuple(FAMILIES))
    count: int = option(5, check=between(1, MAX_COUNT))
    spacing: float = option(0.2, parse=_spacing, raw=(float, int, str))
    size: int = option(56)  # payload bytes, ping's default: 64 bytes of ICMP
    ttl: int | None = option(None, raw=int, check=between(1, 255))
    dont_fragment: bool = option(False)
    max_loss: float = option(1.0, raw=(float, int), parse=float,
                             check=between(0, 1, "(a share of the echoes)"))

    def problems(self) -> list[tuple[str, str]]:
        # IPv4's limit when the family is open: an address of either may come back.
        limit = codec.MAX_PAYLOAD[6 if self.family == "ipv6" else 4]
        if not 0 <= self.size <= limit:
            over = "IPv6" if self.family == "ipv6" else "IPv4"
            return [("size", f"{self.size} bytes of payload: must be 0 to {limit}, what fits "
                             f"one {over} datagram with its headers")]
        return []


def schedule_problems(settings: PingSettings, interval: float,
                      timeout: float) -> list[tuple[str, str]]:
    spread = (settings.count - 1) * settings.spacing
    if spread >= timeout:
        return [("spacing", f"{settings.count} echoes {settings.spacing * 1000:g}ms apart take "
                            f"{spread:g}s to send, but the timeout is {timeout:g}s and the last "
                            "echo needs time for its reply: raise the timeout, or lower count "
                            "or spacing")]
    return []


# --- the run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Echo:
    sequence: int
    due: float  # event-loop time it is to leave
    sent: int = 0  # wall clock (ns) just before its send
    sent_at: float = 0.0  # event-loop time of its send
    rtt: float | None = None  # seconds, once answered
    failed: bool = False  # settled as lost: by an ICMP error, a late reply, or never left
    late: bool = False  # its reply came after its slot


@dataclass(slots=True)
class _Tally:
    """What a run saw besides its replies."""

    duplicates: int = 0
    ignored: dict[str, int] = field(default_factory=dict)  # why -> how many
    errors: dict[str, int] = field(default_factory=dict)  # category -> how many
    told: list[tuple[str, str]] = field(default_factory=list)  # details for people
    ttl: int | None = None  # of the last reply

    def ignore(self, why: str, what: str) -> None:
        self.ignored[why] = self.ignored.get(why, 0) + 1
        if len(self.told) < _MAX_DETAILS:
            self.told.append((f"ignored ({why})", what))

    def error(self, category: str, what: str) -> None:
        self.errors[category] = self.errors.get(category, 0) + 1
        if len(self.told) < _MAX_DETAILS:
            self.told.append(("icmp error", what))


async def check(settings: PingSettings, run: Run) -> None:
    address = await resolve_target(run, settings.target, 0, settings.family, socket.SOCK_DGRAM)
    try:
        sock = open_echo_socket(address.family)
    except EchoUnavailable as exc:
        raise CheckError(Reason.NETWORK_ERROR, str(exc)) from None
    try:
        sock.configure(settings.ttl, settings.dont_fragment, settings.size)
        run.detail("socket", f"{sock.kind}, identifier {sock.identifier}")
        echoes, wait, tally = await _exchange(settings, run, sock, address)
    finally:
        sock.close()
    _record(settings, run, echoes, wait, tally)


async def _exchange(settings: PingSettings, run: Run, sock: EchoSocket,
                    address: Address) -> tuple[list[_Echo], float, _Tally]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = run.deadline - min(_MARGIN, (run.deadline - start) / 10)
    count, spacing = settings.count, settings.spacing
    if (count - 1) * spacing >= end - start:
        # A shorter timeout than the config's (a /probe for an impatient scrape): as many echoes
        # as fit in the first half, the second half to answer them.
        count = max(1, min(count, 1 + math.floor((end - start) / 2 / spacing)))
        run.detail("echoes", f"{count} of {settings.count}: only they fit the timeout")
    wait = end - start - (count - 1) * spacing
    first = secrets.randbits(16)
    echoes = [_Echo((first + i) & 0xFFFF, start + i * spacing) for i in range(count)]
    by_sequence = {echo.sequence: echo for echo in echoes}
    version = sock.version
    # The data every echo carries: 8 random bytes first, so that a reply to another run with
    # the same identifier and sequence cannot pass for ours, then ping's counting bytes.
    payload = (secrets.token_bytes(8) + bytes(i & 0xFF for i in range(8, settings.size))
               )[:settings.size]
    target = _canonical(address)
    tally = _Tally()
    pending = count  # echoes neither answered nor settled
    next_send = 0
    while True:
        now = loop.time()
        while next_send < count and echoes[next_send].due <= now:
            echo = echoes[next_send]
            next_send += 1
            packet = codec.build_echo(version, sock.identifier, echo.sequence, payload)
            echo.sent_at = loop.time()
            try:
                echo.sent = await sock.send(packet, address.host)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:  # the path MTU is smaller, dont_fragment set
                    raise
                echo.failed = True
                pending -= 1
                tally.error("packet_too_big", f"seq {echo.sequence}: {len(packet)} bytes do "
                            "not fit the MTU here without fragments (the kernel said "
                            "EMSGSIZE)")
        now = loop.time()
        # Slots end in the order the echoes left: the last one sent closes last.
        last_slot = echoes[next_send - 1].sent_at + wait if next_send else end
        if next_send >= count and (pending == 0 or now >= last_slot):
            break
        until = min(echoes[next_send].due if next_send < count else last_slot, end)
        try:
            await within(sock.wait(), until)
        except asyncio.TimeoutError:
            if loop.time() >= end:
                break
            continue
        now = loop.time()
        for received in sock.read():
            pending -= _take(received, sock, version, target, payload, by_sequence, wait,
                             now, tally)
    return echoes[:next_send], wait, tally


def _take(received: Received, sock: EchoSocket, version: int, target: str, payload: bytes,
          by_sequence: dict[int, _Echo], wait: float, now: float, tally: _Tally) -> int:
    """Sort one datagram or queued error; 1 if it settled one of our echoes, else 0."""
    if received.truncated:
        tally.ignore("malformed", f"{len(received.data)}+ bytes from {received.source}, more "
                     "than the buffer")
        return 0
    try:
        queued = received.error is not None  # its data: what the error quoted of our echo
        message = codec.parse(received.data, version, sock.ip_header and not queued,
                              verify=not queued)
    except codec.IcmpCodecError as exc:
        tally.ignore("malformed", f"from {received.source}: {exc}")
        return 0
    body = message.body
    if received.error is not None:  # a ping socket's queued error
        queued_error = received.error
        if not isinstance(body, codec.Echo) or body.reply:
            tally.ignore("other", f"an error from {received.source} about no echo of ours")
            return 0
        return _error(by_sequence, tally, body.identifier, body.sequence, sock.identifier,
                      queued_error.destination, target,
                      codec.category(version, queued_error.type, queued_error.code),
                      codec.describe(version, queued_error.type, queued_error.code,
                                     queued_error.info or None),
                      received.source)
    if isinstance(body, codec.IcmpError):
        quoted = body.quoted
        hop = message.outer.source if message.outer is not None else received.source
        if not quoted.echo_request:
            tally.ignore("other", f"{body.describe()} from {hop} about a datagram of someone "
                         "else")
            return 0
        return _error(by_sequence, tally, quoted.identifier, quoted.sequence, sock.identifier,
                      _canonical_text(quoted.ip.destination), target, body.category,
                      body.describe(), hop)
    if not isinstance(body, codec.Echo) or not body.reply:
        tally.ignore("other", f"ICMP type {message.type} from {received.source}")
        return 0
    echo = by_sequence.get(body.sequence)
    if (body.identifier != sock.identifier or echo is None or echo.sent == 0
            or _canonical_text(received.source) != target):
        tally.ignore("other", f"an echo reply from {received.source}, identifier "
                     f"{body.identifier} sequence {body.sequence}: not to this run")
        return 0
    if body.payload != payload:
        tally.ignore("malformed", f"a reply to seq {body.sequence} whose data differs from "
                     "the echo's")
        return 0
    if echo.rtt is not None:
        tally.duplicates += 1
        return 0
    if echo.failed:  # after its slot, or after an error settled it: not counted as a reply
        tally.ignore("late", f"a reply to seq {body.sequence} after "
                     + ("its slot" if echo.late else "an ICMP error about it"))
        return 0
    rtt = (received.received - echo.sent) / 1e9
    elapsed = now - echo.sent_at  # the event loop's clock: no step of the wall clock in it
    if not 0 <= rtt <= elapsed + 0.001:
        rtt = elapsed  # the wall clock stepped between the send and the kernel's timestamp
    if rtt > wait:
        tally.ignore("late", f"a reply to seq {body.sequence} after {rtt * 1000:.3f} ms, its "
                     f"slot {wait * 1000:.0f} ms")
        echo.failed = echo.late = True
        return 1
    echo.rtt = rtt
    tally.ttl = received.ttl
    return 1


def _error(by_sequence: dict[int, _Echo], tally: _Tally, identifier: int | None,
           sequence: int | None, ours: int, destination: str, target: str, category: str,
           what: str, hop: str) -> int:
    echo = by_sequence.get(sequence) if sequence is not None else None
    if identifier != ours or echo is None or echo.sent == 0 or destination != target:
        tally.ignore("other", f"{what} from {hop} about an echo this run did not send")
        return 0
    tally.error(category, f"seq {sequence}: {what} from {hop}")
    if category not in _FATAL or echo.rtt is not None or echo.failed:
        return 0
    echo.failed = True
    return 1


def _canonical(address: Address) -> str:
    return _canonical_text(address.host)


def _canonical_text(host: str) -> str:
    """An address as inet_ntop spells it (recvfrom's and the codec's spelling)."""
    bare = host.partition("%")[0]
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare


# --- recording ----------------------------------------------------------------------------------


def _record(settings: PingSettings, run: Run, echoes: list[_Echo], wait: float,
            tally: _Tally) -> None:
    sent = len(echoes)
    rtts = [echo.rtt for echo in echoes if echo.rtt is not None]
    received = len(rtts)
    loss = 1 - received / sent if sent else 1.0
    run.count(metrics.PING_SENT, n=sent)
    run.count(metrics.PING_RECEIVED, n=received)
    run.count(metrics.PING_DUPLICATES, n=tally.duplicates)
    for category, n in sorted(tally.errors.items()):
        run.count(metrics.PING_ERRORS, category, n=n)
    for why, n in sorted(tally.ignored.items()):
        run.count(metrics.PING_IGNORED, why, n=n)
    run.gauge(metrics.PING_LOSS, loss)
    for rtt in rtts:
        run.observe(metrics.PING_RTT, rtt)
    summary = (f"{sent} packets transmitted, {received} received"
               + (f", +{tally.duplicates} duplicates" if tally.duplicates else "")
               + (f", +{sum(tally.errors.values())} errors" if tally.errors else "")
               + f", {loss * 100:.4g}% packet loss")
    run.detail("ping", summary)
    if rtts:
        low, mean, high = min(rtts), statistics.fmean(rtts), max(rtts)
        deviation = statistics.pstdev(rtts)  # iputils' mdev: the population's
        run.gauge(metrics.PING_RTT_MIN, low)
        run.gauge(metrics.PING_RTT_MEAN, mean)
        run.gauge(metrics.PING_RTT_MAX, high)
        run.gauge(metrics.PING_RTT_STDDEV, deviation)
        if tally.ttl is not None:
            run.gauge(metrics.PING_REPLY_TTL, tally.ttl)
        run.detail("rtt", "min/avg/max/mdev = " + "/".join(
            f"{v * 1000:.3f}" for v in (low, mean, high, deviation)) + " ms")
    run.detail("slot", f"{wait * 1000:.0f} ms for each reply"
               + (f", echoes {settings.spacing * 1000:g} ms apart" if sent > 1 else ""))
    for name, text in tally.told:
        run.detail(name, text)
    if received == 0 or loss > settings.max_loss:
        errors = "; ".join(text for name, text in tally.told if name == "icmp error")
        raise CheckError(Reason.PACKET_LOSS, f"{sent - received} of {sent} echoes lost "
                         f"({loss * 100:.4g}%" + (f", max_loss {settings.max_loss:g})"
                                                   if received else ")")
                         + (f": {errors}" if errors else ""))


def host_problem() -> str | None:
    """Why no ping check can run in this process (no ping socket, no CAP_NET_RAW), or None."""
    return unavailable()


KIND = Kind(
    name="ping",
    settings=PingSettings,
    check=check,
    reasons=(*RESOLVE_REASONS, Reason.NETWORK_ERROR, Reason.PACKET_LOSS, Reason.INTERNAL_ERROR),
    specs=(metrics.DNS_LOOKUP, metrics.PING_SENT, metrics.PING_RECEIVED,
           metrics.PING_DUPLICATES, metrics.PING_ERRORS, metrics.PING_IGNORED, metrics.PING_LOSS,
           metrics.PING_RTT, metrics.PING_RTT_MIN, metrics.PING_RTT_MEAN, metrics.PING_RTT_MAX,
           metrics.PING_RTT_STDDEV, metrics.PING_REPLY_TTL),
    summary="ICMP echo to a host or address: loss, round trips (histogram and min/mean/max/"
            "stddev), reply TTL, duplicates, ICMP errors by hop",
    schedule_problems=schedule_problems,
    host_problem=host_problem,
)
