"""What a check records about reaching its target: the name resolved (timed), and of a
connection it made, the kernel's TCP_INFO and the TLS session.

Shared by the kinds that reach a server (tcp, http, udp, ping, path), so every kind exports
the same series the same way: absent, never zero, when something cannot be read.
"""

from __future__ import annotations

import _ssl
import os
import socket
import ssl
import time
import weakref
from typing import Any

from exporter import humanize, metrics
from exporter.checks.base import Run
from exporter.codecs import tcp_info, x509
from exporter.errors import Reason
from exporter.net.resolve import FAMILIES, Address
from exporter.net.tcp import read_tcp_info
from exporter.net.tls import tls_client_context

# What record_tcp_info and record_tls may record: a kind that calls them lists these.
TCP_INFO_SPECS = (metrics.TCP_RTT, metrics.TCP_RTTVAR, metrics.TCP_RETRANSMITS,
                  metrics.TCP_SND_CWND, metrics.TCP_PMTU)
TLS_SPECS = (metrics.TLS_VERSION, metrics.TLS_CERT_EXPIRY)

# How the kinds that reach a server can fail before it answers: the name (resolving is part of
# the deadline), and for TCP the connection. A kind lists these first, then its own.
RESOLVE_REASONS = (Reason.TIMEOUT, Reason.RESOLVE_ERROR, Reason.NXDOMAIN)
CONNECT_REASONS = (*RESOLVE_REASONS, Reason.REFUSED, Reason.NETWORK_ERROR)


async def resolve_target(run: Run, host: str, port: int, family: str,
                         kind: int = socket.SOCK_STREAM) -> Address:
    """The first address of `host` for `family` ("any", "ipv4", "ipv6"), the lookup timed
    (netsentry_dns_lookup_seconds) and the address a detail of the run."""
    started = time.perf_counter()
    address = (await run.resolver.resolve(host, port, FAMILIES[family], kind))[0]
    run.gauge(metrics.DNS_LOOKUP, time.perf_counter() - started)
    run.detail("address", str(address) if port else address.host)
    return address


# Contexts shared by the checks that ask for the same roots, for as long as one of them is
# loaded: a context with the system's roots costs 20 ms of CPU and 0.8 MiB to build, which
# 10,000 https checks must not pay each.
_CONTEXTS: weakref.WeakValueDictionary[tuple[Any, ...], ssl.SSLContext] = (
    weakref.WeakValueDictionary())


def tls_context(run: Run, ca_file: str, insecure_skip_verify: bool,
                alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """The check's TLS client context, chosen once per loaded check (it lives in the check's
    memory) and shared with every loaded check that trusts the same roots. A `ca_file` that
    changed on disk makes a new context for the checks loaded (or reloaded) after the change.
    `alpn` is what the context offers ("h2", "http/1.1"), fixed per check."""
    context: ssl.SSLContext | None = run.memory.get("tls")
    if context is None:
        key = (ca_file, insecure_skip_verify, alpn, _file_version(ca_file))
        context = _CONTEXTS.get(key)
        if context is None:
            context = _CONTEXTS[key] = tls_client_context(ca_file or None,
                                                              insecure_skip_verify, alpn)
        run.memory["tls"] = context
    return context


def _file_version(path: str) -> tuple[int, ...]:
    try:
        found = os.stat(path) if path else None
    except OSError:
        return ()  # loading it will say why
    return (found.st_ino, found.st_size, found.st_mtime_ns) if found else ()


def record_tcp_info(run: Run, sock: socket.socket | Any) -> tcp_info.TcpInfo | None:
    """The path as the kernel sees it; absent where the platform has no TCP_INFO.

    Returns what it read, for a kind that records more of it (the socket check: the MSS).
    """
    raw = read_tcp_info(sock, tcp_info.REQUEST_SIZE)
    if raw is None:
        return None
    try:
        info = tcp_info.parse(raw)
    except tcp_info.TcpInfoError as exc:
        run.detail("tcp_info", str(exc))
        return None
    run.gauge(metrics.TCP_RTT, info.rtt_seconds)
    run.gauge(metrics.TCP_RTTVAR, info.rttvar_seconds)
    run.gauge(metrics.TCP_RETRANSMITS, info.total_retrans)
    run.gauge(metrics.TCP_SND_CWND, info.snd_cwnd)
    run.gauge(metrics.TCP_PMTU, info.pmtu_bytes)
    return info


def peer_chain(session: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The certificates the peer sent, unverified, as DER, leaf first: the whole chain, read
    with get_unverified_chain (public since 3.13; on 3.10-3.12 only the `_ssl` object beneath
    has it, returning `_ssl.Certificate`s), else where neither exists, the leaf alone."""
    public = getattr(session, "get_unverified_chain", None)
    if public is not None:
        chain: list[bytes] = list(public() or [])
    else:
        beneath = getattr(getattr(session, "_sslobj", None), "get_unverified_chain", None)
        certificates = beneath() if beneath is not None else None
        chain = [c.public_bytes(_ssl.ENCODING_DER) for c in certificates or []]
    if not chain:
        leaf = session.getpeercert(binary_form=True)
        chain = [leaf] if leaf else []
    return chain


def record_tls(run: Run, session: ssl.SSLObject | ssl.SSLSocket) -> None:
    """The negotiated version and the earliest expiry among the peer's certificates."""
    version = session.version()
    if version:
        run.gauge(metrics.TLS_VERSION, 1, version)
        run.detail("tls version", version)
    chain = peer_chain(session)
    expiries = []
    for der in chain:
        try:
            expiries.append(x509.validity(der).not_after)
        except x509.X509Error as exc:
            run.detail("certificate", str(exc))
    if expiries:
        earliest = min(expiries)
        run.gauge(metrics.TLS_CERT_EXPIRY, earliest)
        run.detail("certificate expires", humanize.timestamp(earliest, now=time.time()))
