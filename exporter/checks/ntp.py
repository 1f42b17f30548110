"""The `ntp` check: an SNTP client (RFC 4330) whose offsets can be trusted.

Each request is a fresh socket and 64 random bits as its transmit timestamp; a reply counts
only if it comes from the server's address and port and the codec's rules accept it (it echoes
those bits, is mode 4, has sane timestamps). Anything else is ignored and counted while the
deadline lasts, so a spoofed or stray datagram can neither end the wait nor become an offset.
The times the request left and the reply arrived are the kernel's where it tells them.

`samples = N` requests go to a server 2 s apart (servers rate-limit bursts), and the sample
with the least delay is used: it is the one least skewed by queueing. With `servers = [...]`,
every server is measured at once and RFC 5905's selection (`ntp_selection.py` beside it) marks
the falsetickers; the truechimers' combined offset is exported, and the other values are the
system peer's (the truechimer of lowest stratum and root distance).

Kiss-o'-Death: RATE makes the check skip the server for 1, 3, 7, ... runs (the interval, in
effect, doubles with each RATE until the server answers again); DENY and RSTR stop it asking
that server until the config is reloaded.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from exporter import humanize, metrics
from exporter.checks.base import UNTIL_RELOAD, Kind, Run, option
from exporter.checks.connection import RESOLVE_REASONS
from exporter.checks.ntp_selection import Candidate, combine, select
from exporter.codecs import ntp as codec
from exporter.config.durations import parse_duration
from exporter.config.targets import HostPort, parse_server, parse_servers
from exporter.deadline import within
from exporter.errors import CheckError, Reason
from exporter.net.resolve import FAMILIES, Address
from exporter.net.udp import timed_udp_exchange

SAMPLE_SPACING = 2.0  # seconds between two requests to one server in a run, at the least
# RFC 4330 §10: "A client MUST NOT under any conditions use a poll interval less than 15 s."
MIN_INTERVAL = 15.0
# The check stops waiting this long before the run's deadline (a tenth of the run at most),
# so that it, not the runner's cancellation, ends a run that got no valid reply, and can say
# what it saw: a busy event loop needs a few iterations, each maybe milliseconds late, for that.
_REPLY_MARGIN = 0.05
_MAX_BACKOFF = 6  # RATE: skip at most 2**6 - 1 = 63 runs
_DENIALS = ("DENY", "RSTR")  # RFC 5905 §7.4: stop talking to the server
MAXDIST = 1.5  # RFC 5905 Figure 27: root distance threshold; also the selection's stratum weight
_LEAP = {0: "none", 1: "a second is inserted at the end of the day",
         2: "a second is deleted at the end of the day", 3: "unsynchronized"}


# --- settings -----------------------------------------------------------------------------------


def _server(text: str) -> HostPort:
    return parse_server(text, "udp", codec.PORT)


def _servers(raw: list[Any]) -> tuple[HostPort, ...]:
    return parse_servers(raw, "udp", codec.PORT)


def _seconds(raw: float | str) -> float:
    """A number of seconds, or a duration such as "100ms"; more than zero."""
    value = parse_duration(raw) if isinstance(raw, str) else float(raw)
    if not value > 0:
        raise ValueError(f"must be more than 0 seconds, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class NtpSettings:
    target: HostPort | None = option(None, parse=_server, raw=str)
    servers: tuple[HostPort, ...] = option((), parse=_servers, raw=list)
    samples: int = option(1, check=lambda n: None if n >= 1 else f"must be 1 or more, got {n}")
    # ntpd's step threshold: a clock that far off is one a time daemon would step, not slew.
    max_offset: float = option(0.128, parse=_seconds, raw=(float, str))
    max_root_distance: float = option(MAXDIST, parse=_seconds, raw=(float, str))
    family: str = option("any", choices=tuple(FAMILIES))

    def problems(self) -> list[tuple[str, str]]:
        if self.target is None and not self.servers:
            return [("target", "missing: set `target` to one server (host[:port]), or "
                               "`servers` to several")]
        if self.target is not None and self.servers:
            return [("servers", "set `target` (one server) or `servers` (several), not both")]
        return []


def schedule_problems(settings: NtpSettings, interval: float,
                      timeout: float) -> list[tuple[str, str]]:
    found = []
    if interval < MIN_INTERVAL:
        found.append(("interval", f"{interval:g}s is too often for an NTP server: at least "
                                  f"{MIN_INTERVAL:g}s (RFC 4330 §10)"))
    spread = (settings.samples - 1) * SAMPLE_SPACING
    if spread >= timeout:
        found.append(("samples", f"{settings.samples} samples {SAMPLE_SPACING:g}s apart take "
                                 f"{spread:g}s, but the timeout is {timeout:g}s: raise the "
                                 "timeout or take fewer samples"))
    return found


# --- the check ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    """What asking one server gave: its best sample, or why there is none."""

    server: HostPort
    sample: codec.Sample | None = None
    failure: Exception | None = None
    kernel: bool = False  # the sample's times came from the kernel
    sent: int = 0
    answered: int = 0


@dataclass(slots=True)
class _Backoff:
    """A server's last Kiss-o'-Death, kept in the check's memory until a reload."""

    code: str
    level: int = 0  # RATEs since the last valid reply
    skip: int = 0  # runs still to skip


async def check(settings: NtpSettings, run: Run) -> None:
    servers = settings.servers or ((settings.target,) if settings.target else ())
    left = run.deadline - asyncio.get_running_loop().time()
    deadline = run.deadline - min(_REPLY_MARGIN, left / 10)
    outcomes = await asyncio.gather(*(_measure(settings, run, s, deadline) for s in servers))
    if settings.servers:
        _record_several(settings, run, outcomes)
        return
    outcome = outcomes[0]
    if outcome.sample is None:
        run.gauge(metrics.NTP_SANITY, 0)
        assert outcome.failure is not None
        raise outcome.failure
    _details(run, outcome)
    _record(settings, run, outcome.sample, outcome.sample.offset)


async def _measure(settings: NtpSettings, run: Run, server: HostPort,
                   deadline: float) -> _Outcome:
    """Ask one server `samples` times; never raises but for the unexpected."""
    outcome = _Outcome(server)
    backoffs: dict[str, _Backoff] = run.memory.setdefault(UNTIL_RELOAD, {}).setdefault(
        "ntp_kiss", {})
    name = str(server)
    refusal = _refusal(backoffs.get(name), name)
    if refusal is not None:
        outcome.failure = refusal
        return outcome
    ignored: list[str] = []
    try:
        address = (await run.resolver.resolve(server.host, server.port,
                                              FAMILIES[settings.family],
                                              socket.SOCK_DGRAM))[0]
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(settings.samples):
            send_at = start + i * SAMPLE_SPACING
            if send_at >= deadline:
                break
            await asyncio.sleep(send_at - loop.time())
            last = i == settings.samples - 1
            wait_until = deadline if last else min(send_at + SAMPLE_SPACING, deadline)
            outcome.sent += 1
            try:
                sample, kernel = await _ask(address, wait_until, ignored)
            except asyncio.TimeoutError:
                continue  # no reply in this sample's time: the next sample may have one
            outcome.answered += 1
            if outcome.sample is None or sample.delay < outcome.sample.delay:
                outcome.sample, outcome.kernel = sample, kernel
    except codec.KissOfDeath as kiss:
        run.count(metrics.NTP_KISS_OF_DEATH, kiss.code)
        outcome.sample = None
        then = _back_off(backoffs, name, kiss.code)
        outcome.failure = CheckError(Reason.KISS_OF_DEATH, f"{name}: {kiss}{then}")
    except codec.Unsynchronized as exc:
        outcome.sample = None
        outcome.failure = CheckError(Reason.UNSYNCHRONIZED, f"{name}: {exc}")
    except OSError as exc:  # resolution (gaierror) and sending; the runner names them
        outcome.sample = None
        outcome.failure = exc
    run.count(metrics.NTP_IGNORED_REPLIES, n=len(ignored))
    if outcome.sample is not None:
        backoffs.pop(name, None)
    elif outcome.failure is None:
        if ignored:
            # The server, or someone, did send datagrams: only never a valid reply.
            outcome.failure = CheckError(
                Reason.MALFORMED_RESPONSE, f"no valid reply from {name}; {len(ignored)} "
                f"datagram(s) ignored, the last: {ignored[-1]}")
        else:
            outcome.failure = CheckError(Reason.TIMEOUT, f"no reply from {name}")
    return outcome


async def _ask(address: Address, wait_until: float,
               ignored: list[str]) -> tuple[codec.Sample, bool]:
    """One request and its reply; raises KissOfDeath, Unsynchronized or TimeoutError."""
    transmit = secrets.randbits(64) or 1
    verdicts: list[codec.Packet | codec.NtpCodecError] = []

    def accept(data: bytes) -> bool:
        try:
            verdicts.append(codec.read_reply(data, transmit))
        except codec.BogusReply as exc:
            ignored.append(str(exc))
            return False
        except codec.NtpCodecError as exc:  # the server's own word on itself: the wait ends
            verdicts.append(exc)
        return True

    def foreign(source: tuple[Any, ...]) -> None:
        ignored.append(f"a datagram from {source[0]} port {source[1]}, not the server")

    reply = await within(
        timed_udp_exchange(address, codec.build_request(transmit), accept, foreign=foreign),
        wait_until)
    verdict = verdicts[-1]
    if isinstance(verdict, codec.NtpCodecError):
        raise verdict
    return codec.sample(verdict, reply.sent, reply.received), reply.kernel


def _refusal(backoff: _Backoff | None, name: str) -> CheckError | None:
    """Why the server is not to be asked this run, after its Kiss-o'-Death; or None."""
    if backoff is None:
        return None
    if backoff.code in _DENIALS:
        return CheckError(Reason.KISS_OF_DEATH, f"{name} sent {backoff.code} (access denied): "
                          "not asked again until the config is reloaded")
    if backoff.skip > 0:
        backoff.skip -= 1
        more = f" or the next {backoff.skip}" if backoff.skip else ""
        return CheckError(Reason.KISS_OF_DEATH, f"{name} sent {backoff.code}: backing off, not "
                          f"asked this run{more}")
    return None


def _back_off(backoffs: dict[str, _Backoff], name: str, code: str) -> str:
    """Remember a Kiss-o'-Death; what the check will do about it, for the message."""
    previous = backoffs.get(name)
    if code in _DENIALS:
        backoffs[name] = _Backoff(code)
        return "; not asked again until the config is reloaded"
    if code == "RATE":
        level = min((previous.level if previous else 0) + 1, _MAX_BACKOFF)
        backoffs[name] = _Backoff(code, level, 2**level - 1)
        return f"; skipping it for the next {2**level - 1} run(s)"
    return ""


# --- recording ----------------------------------------------------------------------------------


def _record(settings: NtpSettings, run: Run, sample: codec.Sample, offset: float) -> None:
    """The exported values of a valid sample (with `offset`, the sample's or the combined one),
    and the verdict; raises when the verdict is not sane."""
    packet = sample.packet
    distance = sample.root_distance
    run.gauge(metrics.NTP_OFFSET, offset)
    run.gauge(metrics.NTP_RTT, sample.delay)
    run.gauge(metrics.NTP_STRATUM, packet.stratum)
    run.gauge(metrics.NTP_LEAP, packet.leap)
    run.gauge(metrics.NTP_ROOT_DELAY, packet.root_delay_seconds)
    run.gauge(metrics.NTP_ROOT_DISPERSION, packet.root_dispersion_seconds)
    run.gauge(metrics.NTP_ROOT_DISTANCE, distance)
    run.gauge(metrics.NTP_PRECISION, packet.precision_seconds)
    run.gauge(metrics.NTP_REFERENCE, 1, packet.reference_text)
    problems = []
    if distance > settings.max_root_distance:
        problems.append(f"root distance {distance:.6f} s over max_root_distance "
                        f"{settings.max_root_distance:g} s")
    if abs(offset) > settings.max_offset:
        problems.append(f"offset {offset:+.6f} s beyond ±max_offset {settings.max_offset:g} s")
    run.gauge(metrics.NTP_SANITY, 0 if problems else 1)
    run.detail("offset", humanize.duration(offset, signed=True))
    run.detail("delay", humanize.duration(sample.delay))
    run.detail("stratum", str(packet.stratum))
    run.detail("leap", f"{packet.leap} ({_LEAP[packet.leap]})")
    run.detail("refid", packet.reference_text)
    run.detail("root distance", f"{humanize.duration(distance)} (root delay "
               f"{humanize.duration(packet.root_delay_seconds)}, root dispersion "
               f"{humanize.duration(packet.root_dispersion_seconds)})")
    run.detail("precision", f"2^{packet.precision} s "
               f"({humanize.duration(packet.precision_seconds)})")
    run.detail("verdict", "; ".join(problems) if problems else
               f"sane (|offset| ≤ {settings.max_offset:g} s, root distance ≤ "
               f"{settings.max_root_distance:g} s)")
    if problems:
        raise CheckError(Reason.UNEXPECTED_RESPONSE, "; ".join(problems))


def _details(run: Run, outcome: _Outcome) -> None:
    sample = outcome.sample
    assert sample is not None
    server_time = codec.to_unix_ns(sample.t3, time.time_ns())
    run.detail("server time", datetime.datetime.fromtimestamp(
        server_time / 1e9, datetime.timezone.utc).isoformat(timespec="microseconds"))
    run.detail("samples", f"{outcome.answered} of {outcome.sent} answered; the least delay used")
    run.detail("timestamps", "kernel (SO_TIMESTAMPING)" if outcome.kernel else "user space")


def _record_several(settings: NtpSettings, run: Run, outcomes: list[_Outcome]) -> None:
    """Select the truechimers among the servers that answered; record their combined offset."""
    answered = [o for o in outcomes if o.sample is not None]
    candidates = [Candidate(o.sample.offset, o.sample.root_distance)
                  for o in answered if o.sample is not None]
    selection = select(candidates)
    for i, outcome in enumerate(answered):
        assert outcome.sample is not None
        name = str(outcome.server)
        truechimer = selection is not None and i in selection.truechimers
        if selection is not None:
            run.gauge(metrics.NTP_FALSETICKER, 0 if truechimer else 1, name)
        run.detail(f"server {name}", "offset "
                   f"{humanize.duration(outcome.sample.offset, signed=True)}, delay "
                   f"{humanize.duration(outcome.sample.delay)}, stratum "
                   f"{outcome.sample.packet.stratum}, root distance "
                   f"{humanize.duration(outcome.sample.root_distance)}: "
                   + ("truechimer" if truechimer else
                      "falseticker" if selection is not None else "no majority"))
    for outcome in outcomes:
        if outcome.failure is not None:
            run.detail(f"server {outcome.server}", _why(outcome.failure))
    majority = len(outcomes) // 2 + 1
    if selection is None or len(selection.truechimers) < majority:
        run.gauge(metrics.NTP_SANITY, 0)
        failures = [o.failure for o in outcomes if o.failure is not None]
        if len(answered) < majority and failures:
            raise failures[0]
        raise CheckError(Reason.UNEXPECTED_RESPONSE,
                         f"no majority of the {len(outcomes)} servers agrees on the time")
    chosen = [answered[i] for i in selection.truechimers]
    offset = combine(candidates, selection.truechimers)
    peer = min(chosen, key=lambda o: _merit(o.sample))
    assert peer.sample is not None
    run.detail("system peer", str(peer.server))
    run.detail("truechimers", f"{len(chosen)} of {len(outcomes)} servers; the offset is "
               "their combined offset, the other values the system peer's")
    _record(settings, run, peer.sample, offset)


def _merit(sample: codec.Sample | None) -> float:
    """RFC 5905 §11.2.2's order of preference: stratum first, then root distance."""
    assert sample is not None
    return sample.packet.stratum * MAXDIST + sample.root_distance


def _why(exc: Exception) -> str:
    if isinstance(exc, CheckError):
        return f"{exc.reason}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


KIND = Kind(
    name="ntp",
    settings=NtpSettings,
    check=check,
    reasons=(*RESOLVE_REASONS, Reason.NETWORK_ERROR, Reason.MALFORMED_RESPONSE,
             Reason.KISS_OF_DEATH, Reason.UNSYNCHRONIZED, Reason.UNEXPECTED_RESPONSE,
             Reason.INTERNAL_ERROR),
    specs=(metrics.NTP_OFFSET, metrics.NTP_RTT, metrics.NTP_STRATUM, metrics.NTP_LEAP,
           metrics.NTP_ROOT_DELAY, metrics.NTP_ROOT_DISPERSION, metrics.NTP_ROOT_DISTANCE,
           metrics.NTP_PRECISION, metrics.NTP_REFERENCE, metrics.NTP_SANITY,
           metrics.NTP_KISS_OF_DEATH, metrics.NTP_FALSETICKER, metrics.NTP_IGNORED_REPLIES),
    summary="ask NTP servers the time (SNTP): offset, delay, stratum, root distance, verdict",
    schedule_problems=schedule_problems,
)
