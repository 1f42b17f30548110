"""The `path` check: traceroute in one burst — every hop's probes at once, the answers from the
socket error queue.

Probes for every TTL from 1 to `max_hops` leave together, `probes_per_hop` each, nearest TTL
first; the run then takes about one round trip, plus the wait for hops that stay silent, not
one round trip per hop. `protocol = "udp"` (the default, as traceroute's): one UDP socket per
TTL, its TTL (hop limit) set, its ICMP errors queued (IP_RECVERR / IPV6_RECVERR,
exporter/net/errqueue.py), so no raw socket is needed; probe `i` of TTL `t` goes to port
`port + (t - 1) × probes_per_hop + i`, so the port the kernel gives back with each error says
which probe it answers. `protocol = "icmp"`: echo requests, from one echo socket
(exporter/net/icmp.py: a ping socket where `ping_group_range` allows, else raw), the TTL set
before each send and the probe in the echo's sequence number.

What answers a probe:
- an ICMP time exceeded: a router, hop `t`, the offender its address;
- anything from the destination's address — a port unreachable (UDP), an echo reply (ICMP),
  any other ICMP error, a UDP reply from an open port: the destination, reached at `t`.
  The destination is at the smallest TTL it answered; answers to larger TTLs are ignored;
- an ICMP destination unreachable (or another error) from a router: the path ends there, and
  the run fails as `network_error` naming the hop (traceroute's !N, !H, !X).

The wait. A run ends once every probe to the hops up to the destination (or to the router that
said unreachable) has its answer. Probes still unanswered then are waited for ten times the
slowest answer from that farthest hop, at least `_MIN_GRACE`: a router that has not answered by
then is silent (rate-limited ICMP, or none at all) — traceroute's "near" wait. Without the
destination's answer the run waits until just before its deadline, then fails as `timeout`:
the destination was not heard from within `max_hops`.

Metrics by hop, hop = "1" up to the destination's distance (or `max_hops` when not reached):
the median round trip of the answered probes and the share unanswered; no addresses in labels.
The hop addresses (and names with `resolve_hops`) are details, as traceroute's table.

Changes. Each run's path is the set of addresses that answered at each hop; the previous run's
is in `run.memory`. The path changed when a hop that answered in both runs answered from
addresses disjoint from the previous run's (sets that share an address are the same hop seen
through ECMP), or when the destination was reached in both at a different distance. A silent
hop is unknown, not different: it neither counts as a change nor forgets what the hop was
before (the remembered path keeps the last address heard there), and a run that does not reach
the destination is compared hop by hop but not by length. The first run counts no change.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import secrets
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter import humanize, metrics
from exporter.checks.base import Kind, Observation, Run, between, option
from exporter.checks.connection import RESOLVE_REASONS, resolve_target
from exporter.codecs import icmp as codec
from exporter.config.targets import bare_host_problem
from exporter.deadline import within
from exporter.errors import CheckError, Reason
from exporter.net import errqueue
from exporter.net.icmp import EchoSocket, EchoUnavailable, Received, open_echo_socket
from exporter.net.resolve import FAMILIES, Address

MAX_HOPS = 64  # traceroute's limit is 255; no path worth watching has more than 64 hops
MAX_PROBES = 10  # per hop
# The check stops waiting this long before the run's deadline (a tenth of the run at most), so
# that it, not the runner's cancellation, ends the run and reports what it saw.
_MARGIN = 0.05
_NEAR = 10  # unanswered probes are waited for this many times the farthest hop's round trip
_MIN_GRACE = 0.1  # ... and at least this long (s), for routers slow to make their ICMP
_NAMES_SHARE = 0.2  # with resolve_hops, the share of the run kept for the reverse lookups
_MAX_WAKEUPS = 10_000  # wakeups of one run: a flood of datagrams is bounded by the deadline too
_MAX_READS = 64  # datagrams read per socket per wakeup
_TOKEN = 8  # random bytes every probe carries: a quote of other bytes is not about our probe
# traceroute's marks for the unreachables that end a path (by version, type, code).
_MARKS = {(4, 3, 0): "!N", (4, 3, 1): "!H", (4, 3, 2): "!P", (4, 3, 9): "!X", (4, 3, 10): "!X",
          (4, 3, 13): "!X", (6, 1, 0): "!N", (6, 1, 1): "!X", (6, 1, 3): "!H", (6, 1, 6): "!X"}


# --- settings -----------------------------------------------------------------------------------



def _port(n: int) -> str | None:
    return None if 1 <= n <= 65535 else f"port {n} is out of range 1-65535"


@dataclass(frozen=True, slots=True)
class PathSettings:
    target: str = option(check=lambda text: bare_host_problem(text, "path"))
    family: str = option("any", choices=tuple(FAMILIES))
    protocol: str = option("udp", choices=("udp", "icmp"))
    max_hops: int = option(30, check=between(1, MAX_HOPS, "hops"))
    probes_per_hop: int = option(3, check=between(1, MAX_PROBES, "probes"))
    port: int = option(33434, check=_port)  # UDP: the first probe's destination port
    resolve_hops: bool = option(False)

    def problems(self) -> list[tuple[str, str]]:
        last = self.port + self.max_hops * self.probes_per_hop - 1
        if self.protocol == "udp" and last > 65535:
            return [("port", f"the probes use ports {self.port} to {last} (one per probe: "
                             f"max_hops × probes_per_hop), past 65535: lower port to at most "
                             f"{65536 - self.max_hops * self.probes_per_hop}")]
        return []


# --- what a run saw -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Probe:
    ttl: int
    index: int
    key: int  # UDP: its destination port; ICMP: its echo sequence
    sent: int = 0  # wall clock (ns) just before its send
    sent_at: float = 0.0  # event-loop time of its send
    rtt: float | None = None  # seconds, once answered
    source: str = ""  # who answered
    answer: str = ""  # "hop" (time exceeded), "destination", "unreachable" (a router's)
    icmp: tuple[int, int] | None = None  # the answer's ICMP type and code, if an error


@dataclass(slots=True)
class _Trace:
    probes: list[_Probe]
    target: str
    version: int
    by_key: dict[int, _Probe] = field(default_factory=dict)
    ignored: int = 0  # answers to no probe of ours, duplicates
    changed: Callable[[], None] = lambda: None  # called at each answer: the wait wakes

    def take(self, probe: _Probe | None, source: str, received: int, now: float,
             kind: int | None, code: int, destination: bool) -> None:
        """Settle `probe` with an answer from `source` (an ICMP error of `kind` and `code`, or,
        with kind None, a reply: echo reply or UDP data)."""
        if probe is None or probe.sent == 0 or probe.rtt is not None:
            self.ignored += 1
            return
        rtt = (received - probe.sent) / 1e9
        elapsed = now - probe.sent_at  # the event loop's clock: no step of the wall clock in it
        if not 0 <= rtt <= elapsed + 0.001:
            rtt = max(elapsed, 0.0)
        probe.rtt, probe.source = rtt, source
        if destination or _canonical(source) == self.target:
            probe.answer = "destination"
        elif kind is not None and codec.category(self.version, kind, code) == "time_exceeded":
            probe.answer = "hop"
        else:
            probe.answer = "unreachable"
        if kind is not None:
            probe.icmp = (kind, code)
        self.changed()

    def end_ttl(self) -> tuple[int | None, int | None]:
        """(the destination's TTL, the TTL of a router's unreachable before it)."""
        reached = [p.ttl for p in self.probes if p.answer == "destination"]
        dest = min(reached) if reached else None
        stopped = [p.ttl for p in self.probes if p.answer == "unreachable"
                   and (dest is None or p.ttl < dest)]
        return dest, (min(stopped) if stopped else None)

    def settle_time(self, start: float) -> float | None:
        """When the run may end (event-loop time), or None: wait until the deadline."""
        dest, stopped = self.end_ttl()
        last = stopped or dest
        if last is None:
            return None
        wanted = [p for p in self.probes if p.ttl <= last]
        if all(p.rtt is not None for p in wanted):
            return start
        slowest = max(p.rtt for p in self.probes if p.ttl == last and p.rtt is not None)
        first = min(p.sent_at for p in wanted)
        return first + max(_NEAR * slowest, _MIN_GRACE)


# --- the check ----------------------------------------------------------------------------------


async def check(settings: PathSettings, run: Run) -> None:
    address = await resolve_target(run, settings.target, 0, settings.family, socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = run.deadline - min(_MARGIN, max(run.deadline - start, 0) / 10)
    wait_end = start + (end - start) * (1 - _NAMES_SHARE) if settings.resolve_hops else end
    version = 4 if address.family == socket.AF_INET else 6
    per = settings.probes_per_hop
    first_key = settings.port if settings.protocol == "udp" else secrets.randbits(16)
    probes = [_Probe(ttl, i, (first_key + (ttl - 1) * per + i) & 0xFFFF)
              for ttl in range(1, settings.max_hops + 1) for i in range(per)]
    trace = _Trace(probes, _canonical(address.host), version)
    trace.by_key = {p.key: p for p in probes}
    token = secrets.token_bytes(_TOKEN)
    if settings.protocol == "udp":
        await _udp(trace, address, token, wait_end)
    else:
        await _icmp(trace, address, token, wait_end)
    names = await _names(run, trace, end) if settings.resolve_hops else {}
    _record(settings, run, trace, names)


async def _udp(trace: _Trace, address: Address, token: bytes, end: float) -> None:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        per_ttl: dict[int, list[_Probe]] = {}
        for probe in trace.probes:
            per_ttl.setdefault(probe.ttl, []).append(probe)
        for ttl in per_ttl:
            sock = socket.socket(address.family, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setblocking(False)
            errqueue.enable_errors(sock, address.family)
            if address.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)

        def read(sock: socket.socket, ttl: int) -> None:
            now = loop.time()
            queued, skipped = errqueue.read_errors(sock, _MAX_READS)
            trace.ignored += skipped
            for q in queued:
                probe = trace.by_key.get(q.destination[1])
                ours = (probe is not None and probe.ttl == ttl
                        and _canonical(q.destination[0]) == trace.target
                        and q.payload == token[:len(q.payload)] and q.error.from_icmp)
                trace.take(probe if ours else None, q.error.offender_address, q.received, now,
                           q.error.type, q.error.code, False)
            for _ in range(_MAX_READS):  # a UDP reply: the destination's port was open
                try:
                    _, ancillary, _, source = sock.recvmsg(1, 256)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # the pending error of a queued one, read above or next time
                    continue
                stamp = errqueue.timestamp(ancillary) or time.time_ns()
                probe = trace.by_key.get(int(source[1]))
                ours = probe is not None and probe.ttl == ttl and _canonical(
                    source[0]) == trace.target
                trace.take(probe if ours else None, source[0], stamp, now, None, 0, True)

        for sock, (ttl, probes) in zip(socks, per_ttl.items(), strict=True):
            loop.add_reader(sock.fileno(), read, sock, ttl)
            for probe in probes:
                sockaddr = (address.host, probe.key, *address.sockaddr[2:])
                probe.sent_at = loop.time()
                try:
                    probe.sent = errqueue.send(sock, token, sockaddr)
                except OSError as exc:
                    raise _send_error(exc, address) from exc
        await _wait(trace, end)
    finally:
        for sock in socks:
            loop.remove_reader(sock.fileno())
            sock.close()


async def _icmp(trace: _Trace, address: Address, token: bytes, end: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        sock = open_echo_socket(address.family)
    except EchoUnavailable as exc:
        raise CheckError(Reason.NETWORK_ERROR, str(exc)) from None
    try:
        sock.configure(1, False, len(token))

        def read() -> None:
            now = loop.time()
            for received in sock.read():
                _take_icmp(trace, sock, received, token, now)

        loop.add_reader(sock.sock.fileno(), read)
        try:
            for probe in trace.probes:
                sock.configure(probe.ttl, False, len(token))
                packet = codec.build_echo(trace.version, sock.identifier, probe.key, token)
                probe.sent_at = loop.time()
                try:
                    probe.sent = await sock.send(packet, address.host)
                except OSError as exc:
                    raise _send_error(exc, address) from exc
            await _wait(trace, end)
        finally:
            loop.remove_reader(sock.sock.fileno())
    finally:
        sock.close()


def _take_icmp(trace: _Trace, sock: EchoSocket, received: Received, token: bytes,
               now: float) -> None:
    queued = received.error is not None
    try:
        message = codec.parse(received.data, trace.version, sock.ip_header and not queued,
                              verify=not queued)
    except codec.IcmpCodecError:
        trace.ignored += 1
        return
    body = message.body
    if received.error is not None:  # a ping socket's queued error: `data` is our echo
        if not isinstance(body, codec.Echo) or body.reply or _canonical(
                received.error.destination) != trace.target:
            trace.ignored += 1
            return
        trace.take(trace.by_key.get(body.sequence), received.source, received.received, now,
                   received.error.type, received.error.code, False)
        return
    if isinstance(body, codec.IcmpError):
        quoted = body.quoted
        hop = message.outer.source if message.outer is not None else received.source
        if (not quoted.echo_request or quoted.identifier != sock.identifier
                or quoted.sequence is None or _canonical(quoted.ip.destination) != trace.target):
            trace.ignored += 1
            return
        trace.take(trace.by_key.get(quoted.sequence), hop, received.received, now, body.type,
                   body.code, False)
        return
    if (isinstance(body, codec.Echo) and body.reply and body.identifier == sock.identifier
            and body.payload == token and _canonical(received.source) == trace.target):
        trace.take(trace.by_key.get(body.sequence), received.source, received.received, now,
                   None, 0, True)
        return
    trace.ignored += 1


async def _wait(trace: _Trace, end: float) -> None:
    """Until the answers that matter are in (see the module docstring) or `end`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    woken = asyncio.Event()
    trace.changed = woken.set
    for _ in range(_MAX_WAKEUPS):
        settle = trace.settle_time(start)
        until = end if settle is None else min(settle, end)
        if loop.time() >= until:
            return
        woken.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await within(woken.wait(), until)


def _send_error(exc: OSError, address: Address) -> Exception:
    """What a failed send means: no route, or a send the host refuses, is `network_error`;
    anything else is not ours to explain (the runner's internal_error)."""
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM,
                     errno.EADDRNOTAVAIL, errno.ENOBUFS, errno.EAGAIN):
        return CheckError(Reason.NETWORK_ERROR,
                          f"cannot send to {address.host}: {exc.strerror or exc}")
    return exc


async def _names(run: Run, trace: _Trace, end: float) -> dict[str, str]:
    """The names of the hops' addresses by reverse lookup, those found by `end`."""
    addresses = sorted({p.source for p in trace.probes if p.source})
    if not addresses:
        return {}
    tasks = [asyncio.ensure_future(run.resolver.reverse(a)) for a in addresses]
    with contextlib.suppress(asyncio.TimeoutError):
        await within(asyncio.wait(tasks), end)
    names: dict[str, str] = {}
    for a, task in zip(addresses, tasks, strict=True):
        if task.done() and not task.cancelled() and task.exception() is None:
            name = task.result()
            if name:
                names[a] = name
        task.cancel()
    return names


# --- recording ----------------------------------------------------------------------------------


def _record(settings: PathSettings, run: Run, trace: _Trace, names: dict[str, str]) -> None:
    dest, stopped = trace.end_ttl()
    reached = dest is not None and stopped is None
    hops = dest if reached and dest is not None else (stopped or settings.max_hops)
    run.gauge(metrics.PATH_HOPS, hops)
    run.gauge(metrics.PATH_REACHED, 1 if reached else 0)
    path: list[list[str]] = []
    for ttl in range(1, hops + 1):
        probes = [p for p in trace.probes if p.ttl == ttl]
        answered = [p for p in probes if p.rtt is not None]
        hop = str(ttl)
        if answered:
            run.gauge(metrics.PATH_HOP_RTT, statistics.median(p.rtt or 0.0 for p in answered),
                      hop)
        run.gauge(metrics.PATH_HOP_LOSS, 1 - len(answered) / len(probes), hop)
        path.append(sorted({p.source for p in answered}))
        run.detail(f"hop {ttl}", _hop_line(probes, names, trace.version))
    _changes(run, path, reached)
    if trace.ignored:
        run.detail("ignored", f"{trace.ignored} answers that were not to this run's probes, "
                              "duplicates, or to probes past the destination")
    if stopped is not None:
        probe = next(p for p in trace.probes if p.ttl == stopped and p.answer == "unreachable")
        text = codec.describe(trace.version, *(probe.icmp or (0, 0)))
        raise CheckError(Reason.NETWORK_ERROR,
                         f"hop {stopped} ({probe.source}) answered {text}: "
                         f"{settings.target} is unreachable from there")
    if not reached:
        heard = [p for p in trace.probes if p.rtt is not None]
        last = (f"; the last hop that answered: {max(heard, key=lambda p: p.ttl).ttl} "
                f"({max(heard, key=lambda p: p.ttl).source})" if heard else "; no hop answered")
        raise CheckError(Reason.TIMEOUT, f"no answer from {trace.target} within "
                                         f"{settings.max_hops} hops{last}")


def _hop_line(probes: list[_Probe], names: dict[str, str], version: int) -> str:
    """One row of traceroute's table: each address once, then each probe's round trip or *."""
    parts: list[str] = []
    shown = ""
    for probe in probes:
        if probe.rtt is None:
            parts.append("*")
            continue
        if probe.source != shown:
            name = names.get(probe.source)
            parts.append(f"{name} ({probe.source})" if name else probe.source)
            shown = probe.source
        mark = ""
        if probe.answer == "unreachable" and probe.icmp is not None:
            kind, code = probe.icmp
            mark = " " + _MARKS.get((version, kind, code), f"!<{kind}/{code}>")
        parts.append(f"{probe.rtt * 1000:.3f} ms{mark}")
    return "  ".join(parts)


def _changes(run: Run, path: list[list[str]], reached: bool) -> None:
    previous = run.memory.get("path")
    if previous is None:
        run.memory["path"] = {"hops": path, "reached": reached}
        run.count(metrics.PATH_CHANGES, n=0)
        run.detail("path", "first run")
        return
    before: list[list[str]] = previous["hops"]
    differences = [f"hop {i}: {', '.join(a)} -> {', '.join(b)}"
                   for i, (a, b) in enumerate(zip(before, path, strict=False), 1)
                   if a and b and not set(a) & set(b)]
    if reached and previous["reached"] and len(before) != len(path):
        differences.append(f"{len(before)} hops -> {len(path)}")
    run.count(metrics.PATH_CHANGES, n=1 if differences else 0)
    run.detail("path", "changed: " + "; ".join(differences) if differences else "unchanged")
    # Silent hops keep what was heard there before; a run that did not reach the destination
    # changes no length.
    merged = [b or (before[i] if i < len(before) else []) for i, b in enumerate(path)]
    if not reached and previous["reached"]:
        merged = merged[:len(before)] + before[len(merged):]
        reached = True
    run.memory["path"] = {"hops": merged, "reached": reached}


def _canonical(host: str) -> str:
    """An address as inet_ntop spells it (the kernel's and the codec's spelling)."""
    bare = host.partition("%")[0]
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(bare)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(address)
    return bare


# --- netsentry probe ----------------------------------------------------------------------------


def probe_table(observations: tuple[Observation, ...]) -> tuple[list[tuple[str, ...]],
                                                                 tuple[Observation, ...]]:
    """mtr's report beside traceroute's table: by hop, the median round trip and the loss."""
    per_hop: dict[str, dict[str, float]] = {}
    rest = []
    for spec, labels, value in observations:
        if spec in (metrics.PATH_HOP_RTT, metrics.PATH_HOP_LOSS):
            per_hop.setdefault(labels[0], {})[spec.name] = value
        else:
            rest.append((spec, labels, value))
    rows: list[tuple[str, ...]] = [("hop", "median rtt", "loss")]
    for hop in sorted(per_hop, key=int):
        values = per_hop[hop]
        rtt = values.get(metrics.PATH_HOP_RTT.name)
        rows.append((hop, "*" if rtt is None else humanize.duration(rtt),
                     humanize.ratio(values.get(metrics.PATH_HOP_LOSS.name, 1.0))))
    return (rows if len(rows) > 1 else []), tuple(rest)


KIND = Kind(
    name="path",
    settings=PathSettings,
    check=check,
    reasons=(*RESOLVE_REASONS, Reason.NETWORK_ERROR, Reason.INTERNAL_ERROR),
    specs=(metrics.DNS_LOOKUP, metrics.PATH_HOPS, metrics.PATH_REACHED, metrics.PATH_CHANGES,
           metrics.PATH_HOP_RTT, metrics.PATH_HOP_LOSS),
    summary="traceroute to a host in one burst (UDP or ICMP probes): hops, their round trip "
            "and loss, and path changes",
    probe_table=probe_table,
)
