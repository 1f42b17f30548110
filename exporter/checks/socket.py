"""The `socket` check: do the socket options a service asks for take effect on this host?

Each run opens a socket, sets the requested options, reads every option it knows back, and
holds the effective values against the requests. Linux keeps double the SO_SNDBUF/SO_RCVBUF
asked for (socket(7): the other half is bookkeeping) and clamps the request at
`net.core.wmem_max`/`rmem_max` first, so a buffer is in effect when it reads back at least
twice the request; a clamp is a finding, not noise. With a `target` the socket then connects
and its options are read again (TCP's autotuning shows there) with its TCP_INFO; with `bind`
it binds and listens, as a server about to start would. The kernel settings behind the
options come from /proc/sys (`exporter.net.sysctl`). No options at all is an audit of what a new
socket gets on this host.

Every socket call is in `exporter.net`; this module imports the standard `socket` module for
its constants only (absolute imports: this module's name shadows nothing).
"""

from __future__ import annotations

import difflib
import errno
import functools
import socket
import sys
from dataclasses import dataclass
from typing import Any

from exporter import metrics
from exporter.checks.base import Kind, Observation, Run, option
from exporter.checks.connection import CONNECT_REASONS, TCP_INFO_SPECS, record_tcp_info
from exporter.config.targets import HostPort, parse_host_port
from exporter.errors import CheckError, Reason
from exporter.net import sysctl
from exporter.net.resolve import FAMILIES, Address, literal_address
from exporter.net.sockopt import (
    SOCKET_TYPES,
    bind_socket,
    connect_socket,
    get_int_option,
    open_socket,
    set_int_option,
)

# How an effective value is held against the request.
BUFFER = "buffer"  # at least the request, doubled on Linux (socket(7))
FLAG = "flag"  # on or off: Linux reads back 1 for any non-zero request
EXACT = "exact"  # the value itself

INT_MAX = 2**31 - 1
TCP = ("tcp",)
PROTOCOLS = ("tcp", "udp")
FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
# Linux doubles the buffer sizes it is given; other kernels keep what they are given.
DOUBLES_BUFFERS = sys.platform.startswith("linux")


@dataclass(frozen=True, slots=True)
class Known:
    """A socket option the check knows: where it lives, how it reads back, what governs it."""

    level: str  # the level's name in the socket module
    rule: str  # BUFFER, FLAG or EXACT
    high: int  # the largest value the kernel takes
    low: int = 0
    protocols: tuple[str, ...] = PROTOCOLS
    family: str = ""  # "ipv4" or "ipv6" for IP-level options
    twin: str = ""  # the same option for the other IP family
    sysctl: str = ""  # the kernel setting that limits it or gives its default


# In the order the probe command lists them.
OPTIONS: dict[str, Known] = {
    "SO_SNDBUF": Known("SOL_SOCKET", BUFFER, INT_MAX // 2, sysctl="net.core.wmem_max"),
    "SO_RCVBUF": Known("SOL_SOCKET", BUFFER, INT_MAX // 2, sysctl="net.core.rmem_max"),
    "SO_REUSEADDR": Known("SOL_SOCKET", FLAG, 1),
    "SO_REUSEPORT": Known("SOL_SOCKET", FLAG, 1),
    "SO_KEEPALIVE": Known("SOL_SOCKET", FLAG, 1, protocols=TCP,
                          sysctl="net.ipv4.tcp_keepalive_time"),
    "TCP_KEEPIDLE": Known("IPPROTO_TCP", EXACT, 32767, 1, TCP,
                          sysctl="net.ipv4.tcp_keepalive_time"),
    "TCP_KEEPINTVL": Known("IPPROTO_TCP", EXACT, 32767, 1, TCP,
                           sysctl="net.ipv4.tcp_keepalive_intvl"),
    "TCP_KEEPCNT": Known("IPPROTO_TCP", EXACT, 127, 1, TCP,
                         sysctl="net.ipv4.tcp_keepalive_probes"),
    "TCP_NODELAY": Known("IPPROTO_TCP", FLAG, 1, protocols=TCP),
    "TCP_USER_TIMEOUT": Known("IPPROTO_TCP", EXACT, INT_MAX, protocols=TCP),
    "TCP_NOTSENT_LOWAT": Known("IPPROTO_TCP", EXACT, INT_MAX, protocols=TCP,
                               sysctl="net.ipv4.tcp_notsent_lowat"),
    "IP_TOS": Known("IPPROTO_IP", EXACT, 255, family="ipv4", twin="IPV6_TCLASS"),
    "IP_TTL": Known("IPPROTO_IP", EXACT, 255, 1, family="ipv4", twin="IPV6_UNICAST_HOPS",
                    sysctl="net.ipv4.ip_default_ttl"),
    "IPV6_TCLASS": Known("IPPROTO_IPV6", EXACT, 255, family="ipv6", twin="IP_TOS"),
    "IPV6_UNICAST_HOPS": Known("IPPROTO_IPV6", EXACT, 255, 1, family="ipv6", twin="IP_TTL"),
    "IPV6_V6ONLY": Known("IPPROTO_IPV6", FLAG, 1, family="ipv6", sysctl="net.ipv6.bindv6only"),
}


def available(name: str, platform: Any = socket) -> bool:
    """Whether this platform's socket module has the option and its level."""
    return hasattr(platform, name) and hasattr(platform, OPTIONS[name].level)


def parse_options(raw: dict[str, Any], platform: Any = socket) -> tuple[tuple[str, int], ...]:
    """`{SO_RCVBUF = 262144, TCP_NODELAY = true}` as (name, value) pairs; ValueError with
    every problem. `platform` is the socket module, or a stand-in for another platform's."""
    problems = []
    parsed = []
    for name, value in raw.items():
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, list(OPTIONS), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.append(f"unknown socket option {name!r}{hint}; the socket check knows "
                            + ", ".join(n for n in OPTIONS if available(n, platform)))
            continue
        if not available(name, platform):
            problems.append(f"{name} is not available on this platform ({sys.platform})")
            continue
        if isinstance(value, bool):
            value = int(value)
        known = OPTIONS[name]
        if not isinstance(value, int):
            problems.append(f"{name}: expected an integer, got {value!r}")
        elif not known.low <= value <= known.high:
            problems.append(f"{name} = {value} is out of range {known.low}-{known.high}")
        else:
            parsed.append((name, value))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(parsed)


def _bind_address(text: str) -> Address:
    target = parse_host_port(text)
    address = literal_address(target.host, target.port, socket.AF_UNSPEC)
    if address is None:
        raise ValueError(f"bind needs an IP address, not {target.host!r}: 0.0.0.0:PORT is "
                         "every IPv4 address, [::]:PORT every IPv6 one")
    return address


@dataclass(frozen=True, slots=True)
class SocketSettings:
    options: tuple[tuple[str, int], ...] = option((), parse=parse_options, raw=dict)
    protocol: str = option("tcp", choices=PROTOCOLS)
    family: str = option("any", choices=tuple(FAMILIES))
    target: HostPort | None = option(None, parse=parse_host_port, raw=str)
    bind: Address | None = option(None, parse=_bind_address, raw=str)

    def socket_family(self) -> str | None:
        """"ipv4" or "ipv6" when the config says which; None when resolution will tell."""
        if self.bind is not None:
            return FAMILY_NAMES[self.bind.family]
        if self.family != "any":
            return self.family
        if self.target is None:
            return "ipv4"
        literal = literal_address(self.target.host, self.target.port, socket.AF_UNSPEC)
        return None if literal is None else FAMILY_NAMES[literal.family]

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.target is not None and self.bind is not None:
            found.append(("bind", "give `target` (connect to it) or `bind` (listen there), "
                                  "not both"))
        if self.bind is not None and self.family != "any":
            found.append(("family", "the bind address gives the family; leave `family` out"))
        family = self.socket_family()
        for name, _ in self.options:
            known = OPTIONS[name]
            if self.protocol not in known.protocols:
                found.append(("options", f"{name} is a TCP option and protocol is "
                                         f"{self.protocol!r}"))
            if known.family and family is None:
                found.append(("options", f"{name} is for {known.family} sockets and the target "
                                         f"may resolve to either: set family = "
                                         f'"{known.family}"'))
            elif known.family and known.family != family:
                instead = f" (use {known.twin})" if known.twin else ""
                found.append(("options", f"{name} is for {known.family} sockets and this one "
                                         f"is {family}{instead}"))
        return found


# --- the check ----------------------------------------------------------------------------------


@functools.cache
def _audited(protocol: str, family: str) -> tuple[tuple[str, int, int], ...]:
    """(name, level, option) of every option a socket of this kind has here."""
    return tuple(
        (name, getattr(socket, known.level), getattr(socket, name))
        for name, known in OPTIONS.items()
        if available(name) and protocol in known.protocols and known.family in ("", family)
    )


def expected(rule: str, requested: int, doubles_buffers: bool = DOUBLES_BUFFERS) -> int:
    """The least effective value that means `requested` took effect."""
    if rule == FLAG:
        return 1 if requested else 0
    if rule == BUFFER and doubles_buffers:
        return 2 * requested
    return requested


def in_effect(rule: str, requested: int, effective: int,
              doubles_buffers: bool = DOUBLES_BUFFERS) -> bool:
    want = expected(rule, requested, doubles_buffers)
    if rule == BUFFER:
        return effective >= want  # the kernel's minimum may raise a small request
    if rule == FLAG:
        return (effective != 0) == (want != 0)
    return effective == want


async def check(settings: SocketSettings, run: Run) -> None:
    limits, unread = sysctl.read()
    for setting, value in limits.items():
        run.gauge(metrics.SOCKET_KERNEL_SETTING, value, setting)
    if unread:
        run.detail("kernel settings unread", "; ".join(unread))
    address = settings.bind
    if settings.target is not None:
        target = settings.target
        address = (await run.resolver.resolve(target.host, target.port,
                                              FAMILIES[settings.family],
                                              SOCKET_TYPES[settings.protocol]))[0]
    if address is not None:
        family = address.family
    else:  # no target: "any" is IPv4
        family = socket.AF_INET6 if settings.family == "ipv6" else socket.AF_INET
    run.detail("socket", f"{settings.protocol} {FAMILY_NAMES.get(family, str(family))}")
    if address is not None:
        run.detail("address", str(address))
    audited = _audited(settings.protocol, FAMILY_NAMES.get(family, ""))
    sock = open_socket(family, settings.protocol)
    try:
        findings = _apply(settings.options, sock, run)
        effective = _read(sock, audited, run, metrics.SOCKET_OPTION_VALUE)
        findings += _compare(settings.options, effective, limits, run)
        if settings.bind is not None:
            _bind(sock, settings.bind, settings.protocol, findings)
        elif address is not None:
            await connect_socket(sock, address)
            _read(sock, audited, run, metrics.SOCKET_CONNECTED_OPTION_VALUE)
            if settings.protocol == "tcp":
                info = record_tcp_info(run, sock)
                if info is not None:
                    run.gauge(metrics.TCP_SND_MSS, info.snd_mss)
    finally:
        sock.close()
    if findings:
        raise CheckError(Reason.UNEXPECTED_RESPONSE, "; ".join(findings))


def _apply(options: tuple[tuple[str, int], ...], sock: socket.socket, run: Run) -> list[str]:
    findings = []
    for name, value in options:
        run.gauge(metrics.SOCKET_OPTION_REQUESTED, value, name)
        try:
            set_int_option(sock, getattr(socket, OPTIONS[name].level),
                               getattr(socket, name), value)
        except OSError as exc:
            findings.append(f"{name} = {value} refused by the kernel: {_errno(exc)}")
    return findings


def _read(sock: socket.socket, audited: tuple[tuple[str, int, int], ...], run: Run,
          spec: metrics.Spec) -> dict[str, int]:
    values = {}
    for name, level, number in audited:
        try:
            values[name] = get_int_option(sock, level, number)
        except OSError as exc:
            run.detail(f"{name} unreadable", _errno(exc))
            continue
        run.gauge(spec, values[name], name)
    return values


def _compare(options: tuple[tuple[str, int], ...], effective: dict[str, int],
             limits: dict[str, int], run: Run) -> list[str]:
    findings = []
    for name, requested in options:
        known = OPTIONS[name]
        value = effective.get(name)
        if value is None:
            findings.append(f"{name} = {requested} cannot be read back")
            continue
        ok = in_effect(known.rule, requested, value)
        run.gauge(metrics.SOCKET_OPTION_SATISFIED, int(ok), name)
        if ok:
            continue
        message = f"{name} = {requested} not in effect: reads back {value}"
        if known.rule == BUFFER:
            message += f", expected at least {expected(known.rule, requested)}"
            notes = ["Linux doubles buffer sizes"] if DOUBLES_BUFFERS else []
            if known.sysctl in limits:
                notes.append(f"{known.sysctl} = {limits[known.sysctl]}")
            message += f" ({', '.join(notes)})" if notes else ""
        findings.append(message)
    return findings


def _bind(sock: socket.socket, address: Address, protocol: str, findings: list[str]) -> None:
    try:
        bind_socket(sock, address, listen=protocol == "tcp")
    except OSError as exc:
        what = "bind and listen on" if protocol == "tcp" else "bind"
        message = f"cannot {what} {address}: {_errno(exc)}"
        raise CheckError(Reason.NETWORK_ERROR, "; ".join([message, *findings])) from None


def _errno(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name} ({exc.strerror})" if name else str(exc)


# --- the probe command --------------------------------------------------------------------------


def probe_keys(options: dict[str, Any]) -> dict[str, Any]:
    """`--option SO_RCVBUF=1048576` (repeatable) into the `options` table."""
    if "option" not in options:
        return options
    if "options" in options:
        raise ValueError("give --option NAME=VALUE (repeatable) or --options {...}, not both")
    given = options.pop("option")
    table: dict[str, Any] = {}
    for item in given if isinstance(given, list) else [given]:
        name, eq, text = str(item).partition("=")
        if not eq or not name:
            raise ValueError(f"--option takes NAME=VALUE (e.g. SO_RCVBUF=1048576), not {item!r}")
        value: Any = text.strip()
        if value.lower() in ("true", "false"):
            value = value.lower() == "true"
        elif value.lstrip("-").isdigit():
            value = int(value)
        table[name.strip()] = value
    return {**options, "options": table}


_COLUMNS = {metrics.SOCKET_OPTION_REQUESTED: 1, metrics.SOCKET_OPTION_VALUE: 2,
            metrics.SOCKET_CONNECTED_OPTION_VALUE: 3, metrics.SOCKET_OPTION_SATISFIED: 4}


def probe_table(
    observations: tuple[Observation, ...],
) -> tuple[list[tuple[str, ...]], tuple[Observation, ...]]:
    """Requested, effective and connected values beside the kernel setting behind each."""
    cells: dict[str, list[str]] = {}
    limits: dict[str, float] = {}
    rest = []
    for observation in observations:
        spec, labels, value = observation
        column = _COLUMNS.get(spec)
        if column is None:
            rest.append(observation)
            if spec is metrics.SOCKET_KERNEL_SETTING:
                limits[labels[0]] = value
            continue
        row = cells.setdefault(labels[0], [labels[0], "", "", "", "", ""])
        row[column] = ("yes" if value else "NO") if column == 4 else f"{value:.0f}"
    if not cells:
        return [], tuple(rest)
    header = ["OPTION", "REQUESTED", "EFFECTIVE", "CONNECTED", "IN EFFECT", "KERNEL SETTING"]
    rows = []
    for name in sorted(cells, key=list(OPTIONS).index):
        setting = OPTIONS[name].sysctl
        if setting in limits:
            cells[name][5] = f"{setting} = {limits[setting]:.0f}"
        rows.append(cells[name])
    # Columns nobody filled (no target: nothing connected) are left out.
    keep = [i for i in range(len(header)) if i == 0 or any(row[i] for row in rows)]
    return ([tuple(header[i] for i in keep)] + [tuple(row[i] for i in keep) for row in rows],
            tuple(rest))


KIND = Kind(
    name="socket",
    settings=SocketSettings,
    check=check,
    reasons=(*CONNECT_REASONS, Reason.UNEXPECTED_RESPONSE, Reason.INTERNAL_ERROR),
    specs=(metrics.SOCKET_OPTION_REQUESTED, metrics.SOCKET_OPTION_VALUE,
           metrics.SOCKET_OPTION_SATISFIED, metrics.SOCKET_CONNECTED_OPTION_VALUE,
           metrics.SOCKET_KERNEL_SETTING, *TCP_INFO_SPECS, metrics.TCP_SND_MSS),
    summary="requested vs effective socket options, the kernel limits behind them",
    probe_keys=probe_keys,
    probe_table=probe_table,
)
