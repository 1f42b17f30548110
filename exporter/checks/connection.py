"""What a check records about a connection it made: the kernel's TCP_INFO and the TLS session.

Shared by the kinds that connect (tcp, http), so every kind exports the same series the same
way: absent, never zero, when something cannot be read.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

from exporter import metrics, net
from exporter.checks.base import Run
from exporter.codecs import tcp_info, x509

# What record_tcp_info and record_tls may record: a kind that calls them lists these.
TCP_INFO_SPECS = (metrics.TCP_RTT, metrics.TCP_RTTVAR, metrics.TCP_RETRANSMITS,
                  metrics.TCP_SND_CWND, metrics.TCP_PMTU)
TLS_SPECS = (metrics.TLS_VERSION, metrics.TLS_CERT_EXPIRY)


def tls_context(run: Run, ca_file: str, insecure_skip_verify: bool) -> ssl.SSLContext:
    """The check's TLS client context, built once per loaded check (it lives in the check's
    memory): loading the system's roots takes milliseconds."""
    context: ssl.SSLContext | None = run.memory.get("tls")
    if context is None:
        context = run.memory["tls"] = net.tls_client_context(ca_file or None,
                                                             insecure_skip_verify)
    return context


def record_tcp_info(run: Run, sock: socket.socket | Any) -> None:
    """The path as the kernel sees it; absent where the platform has no TCP_INFO."""
    raw = net.tcp_info(sock, tcp_info.REQUEST_SIZE)
    if raw is None:
        return
    try:
        info = tcp_info.parse(raw)
    except tcp_info.TcpInfoError as exc:
        run.detail("tcp_info", str(exc))
        return
    run.gauge(metrics.TCP_RTT, info.rtt_seconds)
    run.gauge(metrics.TCP_RTTVAR, info.rttvar_seconds)
    run.gauge(metrics.TCP_RETRANSMITS, info.total_retrans)
    run.gauge(metrics.TCP_SND_CWND, info.snd_cwnd)
    run.gauge(metrics.TCP_PMTU, info.pmtu_bytes)


def record_tls(run: Run, session: ssl.SSLObject | ssl.SSLSocket) -> None:
    """The negotiated version and the earliest expiry among the peer's certificates."""
    version = session.version()
    if version:
        run.gauge(metrics.TLS_VERSION, 1, version)
        run.detail("tls version", version)
    # The whole chain the peer sent where Python can say (3.13+), else the leaf alone.
    unverified_chain = getattr(session, "get_unverified_chain", None)
    chain: list[bytes] = []
    if unverified_chain is not None:
        chain = [c if isinstance(c, bytes) else c.public_bytes(ssl.Encoding.DER)  # type: ignore[attr-defined]
                 for c in unverified_chain() or []]
    if not chain:
        leaf = session.getpeercert(binary_form=True)
        chain = [leaf] if leaf else []
    expiries = []
    for der in chain:
        try:
            expiries.append(x509.validity(der).not_after)
        except x509.X509Error as exc:
            run.detail("certificate", str(exc))
    if expiries:
        earliest = min(expiries)
        run.gauge(metrics.TLS_CERT_EXPIRY, earliest)
        run.detail("certificate expires", time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                        time.gmtime(earliest)))
