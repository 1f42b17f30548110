"""The `tcp` check: resolve the target, connect, read TCP_INFO, close — each phase timed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from exporter import metrics
from exporter.checks.base import Kind, Run, option
from exporter.checks.connection import record_tcp_info
from exporter.errors import Reason
from exporter.net import FAMILIES, connect_tcp
from exporter.targets import HostPort, parse_host_port


@dataclass(frozen=True, slots=True)
class TcpSettings:
    target: HostPort = option(parse=lambda text: parse_host_port(text, "tcp"), raw=str)
    family: str = option("any", choices=tuple(FAMILIES))


async def check(settings: TcpSettings, run: Run) -> None:
    target = settings.target
    started = time.perf_counter()
    addresses = await run.resolver.resolve(target.host, target.port, FAMILIES[settings.family])
    resolved = time.perf_counter()
    run.gauge(metrics.DNS_LOOKUP, resolved - started)
    address = addresses[0]
    run.detail("address", str(address))
    sock = await connect_tcp(address)
    try:
        run.gauge(metrics.TCP_CONNECT, time.perf_counter() - resolved)
        record_tcp_info(run, sock)
    finally:
        sock.close()


KIND = Kind(
    name="tcp",
    settings=TcpSettings,
    check=check,
    reasons=(
        Reason.TIMEOUT,
        Reason.RESOLVE_ERROR,
        Reason.NXDOMAIN,
        Reason.REFUSED,
        Reason.NETWORK_ERROR,
        Reason.INTERNAL_ERROR,
    ),
    specs=(metrics.DNS_LOOKUP, metrics.TCP_CONNECT, metrics.TCP_RTT, metrics.TCP_RTTVAR,
           metrics.TCP_RETRANSMITS, metrics.TCP_SND_CWND, metrics.TCP_PMTU),
    summary="connect to host:port (the port may be a service name) and time each phase",
)


