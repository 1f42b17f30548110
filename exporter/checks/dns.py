"""The `dns` check: the system resolver as applications see it, or a nameserver asked directly.

Without `server`, the target goes through `getaddrinfo` — /etc/hosts, nsswitch and search
domains included — and the check measures what applications get. With `server`, a query built
by the DNS codec goes to each listed nameserver in turn (the next one when a server fails)
over UDP (retried over TCP when the reply is truncated), TCP, TLS or HTTPS, and the reply's rcode,
answers, TTLs and AD flag are measured and held against the expectations.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass, fields

from exporter import metrics
from exporter.checks.base import Kind, Run, option, readable_file, regex
from exporter.checks.connection import RESOLVE_REASONS, tls_context
from exporter.codecs import dns as codec
from exporter.config.targets import HostPort, parse_servers
from exporter.deadline import within
from exporter.errors import CheckError, Reason
from exporter.net import http2_client, http_client
from exporter.net.resolve import FAMILIES, Address
from exporter.net.stream import open_stream, stream_exchange
from exporter.net.udp import udp_exchange

TRANSPORTS = ("udp", "tcp", "tls", "https")
DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}
DOH_TYPE = "application/dns-message"  # RFC 8484 §6
# DoH offers HTTP/2 first (RFC 8484 §5.2 names it the minimum recommended version) and speaks
# HTTP/1.1 where the server's ALPN chooses it, or chooses nothing.
DOH_ALPN = ("h2", "http/1.1")
# Keys that only mean something when a nameserver is asked directly.
SERVER_ONLY = ("transport", "record", "recursion_desired", "dnssec_ok", "expect_rcode",
               "expect_ad", "compare_with_system", "server_name", "ca_file",
               "tls_insecure_skip_verify", "path", "doh_method")
# A reply must reach us this long before the run's deadline, so that a run that saw only
# malformed datagrams says so instead of just "timeout".
_REPLY_MARGIN = 0.005


def _name_problem(text: str) -> str | None:
    try:
        codec.parse_name(text)
    except ValueError as exc:
        return str(exc)
    return None


def _servers(raw: str | list[str]) -> tuple[HostPort, ...]:
    """`host[:port]` or a list of them; port 0 stands for the transport's default."""
    return parse_servers(raw, "udp", 0)


def _rcode(text: str) -> str:
    upper = text.upper()
    if upper not in codec.rcode_names():
        raise ValueError(f"unknown rcode {text!r}; known: {', '.join(codec.rcode_names())}")
    return upper


def _record(text: str) -> str:
    return codec.parse_rdtype(text)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    target: str = option(check=_name_problem)
    server: tuple[HostPort, ...] = option((), parse=_servers, raw=(str, list))
    transport: str = option("udp", choices=TRANSPORTS)
    record: str = option("A", parse=_record, raw=str)
    family: str = option("any", choices=tuple(FAMILIES))
    recursion_desired: bool = option(True)
    dnssec_ok: bool = option(False)
    expect_rcode: str = option("NOERROR", parse=_rcode, raw=str)
    min_answers: int = option(1, check=lambda n: "must be 0 or more" if n < 0 else None)
    expect_answers: tuple[str, ...] = option(())
    answer_regex: str = option("", parse=regex, raw=str)
    expect_ad: bool = option(False)
    track_changes: bool = option(True)
    ignore_order: bool = option(True)
    compare_with_system: bool = option(False)
    server_name: str = option("")
    ca_file: str = option("", check=readable_file)
    tls_insecure_skip_verify: bool = option(False)
    path: str = option("/dns-query", check=lambda p: None if p.startswith("/") else
                       "must start with /")
    doh_method: str = option("POST", choices=("POST", "GET"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.server:
            defaults = {f.name: f.default for f in fields(self)}
            found += [(key, "needs `server`: the system resolver (getaddrinfo) answers "
                            "addresses only, with no rcode or flags")
                      for key in SERVER_ONLY if getattr(self, key) != defaults[key]]
        elif self.transport != "https":
            defaults = {f.name: f.default for f in fields(self)}
            found += [(key, 'is for DNS over HTTPS only (transport = "https")')
                      for key in ("path", "doh_method") if getattr(self, key) != defaults[key]]
        record = self.record if self.server else ("AAAA" if self.family == "ipv6" else "A")
        for text in self.expect_answers:
            try:
                if self.server or self.family != "any":
                    codec.check_answer_text(record, text)
                else:
                    socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
            except (ValueError, OSError):
                found.append(("expect_answers", f"{text!r} is not a valid {record} answer"))
        if self.compare_with_system and self.record not in ("A", "AAAA"):
            found.append(("compare_with_system", "works for A and AAAA records only"))
        return found


# --- the check ----------------------------------------------------------------------------------


async def check(settings: DnsSettings, run: Run) -> None:
    _expect_answers(settings, await ask(settings, run))


async def ask(settings: DnsSettings, run: Run) -> list[str]:
    """The answers to the question of `settings`, as text (also what service discovery's
    `targets_srv` asks with); a reply with another rcode than expected raises CheckError."""
    if settings.server:
        return await _ask_nameservers(settings, run)
    return await _ask_system(settings, run)


async def _system_addresses(run: Run, name: str, family: int) -> list[str]:
    addresses = await run.resolver.resolve(name, 0, family)
    return list(dict.fromkeys(a.host for a in addresses))


async def _ask_system(settings: DnsSettings, run: Run) -> list[str]:
    started = time.perf_counter()
    answers = await _system_addresses(run, settings.target, FAMILIES[settings.family])
    run.gauge(metrics.DNS_LOOKUP, time.perf_counter() - started)
    run.gauge(metrics.DNS_ANSWERS, len(answers))
    run.detail("answers", " ".join(answers))
    _track_changes(settings, run, answers)
    return answers


async def _ask_nameservers(settings: DnsSettings, run: Run) -> list[str]:
    loop = asyncio.get_running_loop()
    # Built once per loaded check; each run only draws a new ID.
    query = run.memory.get("query")
    if query is None:
        query = run.memory["query"] = codec.build_query(
            settings.target, settings.record, recursion_desired=settings.recursion_desired,
            dnssec_ok=settings.dnssec_ok)
    query = codec.renumbered(query)
    failure: BaseException | None = None
    for i, server in enumerate(settings.server):
        # A silent server must leave time for the next ones: share what is left equally.
        left = len(settings.server) - i
        deadline = loop.time() + (run.deadline - loop.time()) / left
        try:
            started = time.perf_counter()
            reply = await within(_ask(settings, run, server, query, deadline), deadline)
            took = time.perf_counter() - started
            break
        except (OSError, asyncio.TimeoutError, CheckError) as exc:
            failure = exc
            run.detail(f"server {_address_text(settings, server)}", _why(exc))
    else:
        assert failure is not None
        try:
            if isinstance(failure, asyncio.TimeoutError):
                raise CheckError(Reason.TIMEOUT, "no reply from "
                                 + ", ".join(_address_text(settings, s) for s in settings.server))
            raise failure
        finally:
            # The exception's traceback holds this frame: a frame that still held the
            # exception would be a reference cycle, left for the slow full GC passes
            # (tests/reliability/test_gc.py).
            failure = None
    failure = None  # (the same, after a server failed and the next one answered)
    run.detail("server", _address_text(settings, server))
    # A hostile server can send any of 4,096 rcodes: the label keeps to the named ones.
    run.count(metrics.DNS_RESPONSES,
              reply.rcode if reply.rcode in codec.rcode_names() else "OTHER")
    run.gauge(metrics.DNS_LOOKUP, took)
    run.gauge(metrics.DNS_ANSWERS, reply.answer_count)
    if reply.min_ttl is not None:
        run.gauge(metrics.DNS_MIN_TTL, reply.min_ttl)
    run.gauge(metrics.DNS_AUTHENTICATED, int(reply.authenticated_data))
    flags = [name for name, on in (("aa", reply.authoritative), ("tc", reply.truncated),
                                   ("ra", reply.recursion_available),
                                   ("ad", reply.authenticated_data)) if on]
    run.detail("rcode", reply.rcode)
    run.detail("flags", " ".join(flags))
    run.detail("answers", " | ".join(reply.answers))
    if reply.min_ttl is not None:
        run.detail("min ttl", f"{reply.min_ttl}s")
    if reply.cnames:
        run.detail("cnames", " ".join(reply.cnames))
    answers = list(reply.answers)
    if reply.rcode == "NOERROR":
        _track_changes(settings, run, answers)
    if settings.compare_with_system:
        family = socket.AF_INET6 if settings.record == "AAAA" else socket.AF_INET
        system = await _system_addresses(run, settings.target, family)
        mismatch = set(system) != set(answers)
        run.gauge(metrics.DNS_RESOLVER_MISMATCH, int(mismatch))
        if mismatch:
            run.detail("system resolver", " ".join(system))
    if reply.rcode != settings.expect_rcode:
        reason = {"NXDOMAIN": Reason.NXDOMAIN, "SERVFAIL": Reason.SERVFAIL,
                  "NOERROR": Reason.UNEXPECTED_RESPONSE}.get(reply.rcode, Reason.DNS_RCODE)
        raise CheckError(reason, f"rcode {reply.rcode}, expected {settings.expect_rcode}")
    if settings.expect_ad and not reply.authenticated_data:
        raise CheckError(Reason.UNEXPECTED_RESPONSE, "the reply is not authenticated (no AD)")
    return answers


async def _ask(settings: DnsSettings, run: Run, server: HostPort, query: codec.Query,
               deadline: float) -> codec.Reply:
    port = server.port or DEFAULT_PORTS[settings.transport]
    kind = socket.SOCK_DGRAM if settings.transport == "udp" else socket.SOCK_STREAM
    address = (await run.resolver.resolve(server.host, port, FAMILIES[settings.family],
                                          kind))[0]
    if settings.transport == "udp":
        reply = await _ask_udp(run, address, query, deadline)
        if not reply.truncated:
            return reply
        run.detail("truncated", "the UDP reply had TC set; asked again over TCP")
        return _parse(await stream_exchange(address, query.wire), query)
    context = None
    if settings.transport in ("tls", "https"):
        context = tls_context(run, settings.ca_file, settings.tls_insecure_skip_verify,
                              DOH_ALPN if settings.transport == "https" else ())
    timings: dict[str, float] = {}
    server_name = settings.server_name or server.host
    if settings.transport == "https":
        wire = await _ask_https(settings, run, address, server, query, context, timings)
    else:
        wire = await stream_exchange(address, query.wire, ssl_context=context,
                                         server_hostname=server_name, timings=timings)
    if "tls" in timings:
        run.gauge(metrics.TLS_HANDSHAKE, timings["tls"])
    return _parse(wire, query)


async def _ask_https(settings: DnsSettings, run: Run, address: Address, server: HostPort,
                     query: codec.Query, context: ssl.SSLContext | None,
                     timings: dict[str, float]) -> bytes:
    """DNS over HTTPS (RFC 8484 §4.1): the query as the body of a POST, or base64url in the
    `dns` parameter of a GET; over HTTP/2 where ALPN chose it, else HTTP/1.1."""
    port = server.port or DEFAULT_PORTS["https"]
    host = settings.server_name or (server.host if port == 443 else
                                    str(HostPort(server.host, port)))
    headers = [("Accept", DOH_TYPE)]
    if settings.doh_method == "GET":
        encoded = base64.urlsafe_b64encode(query.wire).rstrip(b"=").decode("ascii")
        target, body = f"{settings.path}{'&' if '?' in settings.path else '?'}dns={encoded}", b""
    else:
        target, body = settings.path, query.wire
        headers.append(("Content-Type", DOH_TYPE))
    async with open_stream(address, ssl_context=context,
                               server_hostname=settings.server_name or server.host,
                               timings=timings) as stream:
        h2 = stream.tls is not None and stream.tls.selected_alpn_protocol() == "h2"
        try:
            if h2:
                response = await http2_client.request(stream, settings.doh_method, host, target,
                                                      headers=headers, body=body, max_body=65535)
            else:
                response = await http_client.request(stream, settings.doh_method, host, target,
                                                     headers=headers, body=body, max_body=65535)
        except http_client.ResponseError as exc:
            raise CheckError(Reason.MALFORMED_RESPONSE, str(exc)) from None
    run.detail("doh", f"HTTP/{response.http_version} {settings.doh_method}")
    if response.status != 200:
        raise CheckError(Reason.BAD_STATUS, f"HTTP status {response.status} from the DoH server")
    content_type = dict(response.headers).get("content-type", "")
    if content_type.split(";")[0].strip().lower() != DOH_TYPE:
        raise CheckError(Reason.MALFORMED_RESPONSE, f"content type {content_type!r}, not "
                         f"{DOH_TYPE}")
    return response.body


async def _ask_udp(run: Run, address: Address, query: codec.Query,
                   deadline: float) -> codec.Reply:
    rejected: list[str] = []  # why each datagram from the server was not the reply
    replies: list[codec.Reply] = []

    def accept(wire: bytes) -> bool:
        try:
            replies.append(codec.parse_reply(wire, query))
        except codec.DnsCodecError as exc:  # NotOurReply included: wrong ID, other question
            rejected.append(str(exc))
            return False
        return True

    try:
        _, ignored = await within(udp_exchange(address, query.wire, accept),
                                  deadline - _REPLY_MARGIN)
    except asyncio.TimeoutError:
        if rejected:
            # The server did answer, only never properly: that is not silence.
            run.count(metrics.DNS_IGNORED_REPLIES, n=len(rejected))
            raise CheckError(Reason.MALFORMED_RESPONSE,
                             f"no valid reply; {len(rejected)} datagram(s) from the server "
                             f"ignored, the last: {rejected[-1]}") from None
        raise
    if ignored:
        run.count(metrics.DNS_IGNORED_REPLIES, n=ignored)
    return replies[-1]


def _parse(wire: bytes, query: codec.Query) -> codec.Reply:
    try:
        return codec.parse_reply(wire, query)
    except codec.DnsCodecError as exc:
        raise CheckError(Reason.MALFORMED_RESPONSE, str(exc)) from None


def _track_changes(settings: DnsSettings, run: Run, answers: list[str]) -> None:
    if not settings.track_changes or not answers:
        return
    current = tuple(sorted(answers)) if settings.ignore_order else tuple(answers)
    previous = run.memory.get("answers")
    run.memory["answers"] = current
    if previous is not None and previous != current:
        run.count(metrics.DNS_ANSWER_CHANGES)
        run.detail("changed", "the answers differ from the previous run's")
    elif previous is None:
        run.count(metrics.DNS_ANSWER_CHANGES, n=0)  # the series exists from the first answer


def _expect_answers(settings: DnsSettings, answers: list[str]) -> None:
    if settings.expect_rcode != "NOERROR":
        return
    if len(answers) < settings.min_answers:
        raise CheckError(Reason.UNEXPECTED_RESPONSE,
                         f"{len(answers)} answer(s), expected at least {settings.min_answers}")
    if settings.expect_answers:
        expected = {codec.check_answer_text(settings.record, t) if settings.server
                    else ipaddress.ip_address(t).compressed for t in settings.expect_answers}
        if set(answers) != expected:
            raise CheckError(Reason.UNEXPECTED_RESPONSE,
                             f"answers {sorted(answers)}, expected {sorted(expected)}")
    if settings.answer_regex:
        pattern = re.compile(settings.answer_regex)
        if not any(pattern.search(a) for a in answers):
            raise CheckError(Reason.UNEXPECTED_RESPONSE,
                             f"no answer matches /{settings.answer_regex}/")


def _address_text(settings: DnsSettings, server: HostPort) -> str:
    return str(HostPort(server.host, server.port or DEFAULT_PORTS[settings.transport]))


def _why(exc: BaseException) -> str:
    if isinstance(exc, CheckError):
        return f"{exc.reason}: {exc.message}"
    if isinstance(exc, asyncio.TimeoutError):
        return "no reply in its share of the timeout"
    return f"{type(exc).__name__}: {exc}"


KIND = Kind(
    name="dns",
    settings=DnsSettings,
    check=check,
    reasons=(*RESOLVE_REASONS, Reason.SERVFAIL, Reason.DNS_RCODE, Reason.REFUSED,
             Reason.NETWORK_ERROR, Reason.TLS_ERROR, Reason.BAD_STATUS,
             Reason.UNEXPECTED_RESPONSE, Reason.MALFORMED_RESPONSE, Reason.INTERNAL_ERROR),
    specs=(metrics.DNS_LOOKUP, metrics.DNS_ANSWERS, metrics.DNS_MIN_TTL,
           metrics.DNS_AUTHENTICATED, metrics.DNS_RESPONSES, metrics.DNS_ANSWER_CHANGES,
           metrics.DNS_RESOLVER_MISMATCH, metrics.DNS_IGNORED_REPLIES, metrics.TLS_HANDSHAKE),
    summary="resolve a name through the system resolver, or ask nameservers directly",
)
