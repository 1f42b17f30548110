"""One refresh of a `targets_url` (Prometheus' http_sd) or a `targets_srv` (dns_sd, type SRV).

Each is asked as a check would ask (`Runner.call`): the http kind's request, with its TLS,
basic auth, headers, body cap and deadline, and the dns kind's query; so what goes wrong has
the reasons and words of a failed check. A refresh raises CheckError or TargetGroupError; the
caller keeps the last good targets.
"""

from __future__ import annotations

import dataclasses

from exporter.checks import dns, http
from exporter.codecs.target_groups import (
    TargetGroup,
    TargetGroupError,
    nameservers,
    parse,
    srv_targets,
)
from exporter.config.model import TargetSource
from exporter.config.targets import HostPort, parse_servers
from exporter.errors import CheckError, Reason
from exporter.runner import Runner

MAX_REFRESH_SECONDS = 10.0  # or half the refresh interval, if that is shorter
RESOLV_CONF = "/etc/resolv.conf"


def refresh_timeout(source: TargetSource) -> float:
    return min(MAX_REFRESH_SECONDS, source.refresh / 2)


async def fetch_url(source: TargetSource, runner: Runner) -> list[TargetGroup]:
    """The target groups the URL answers with: status 200, JSON (as Prometheus requires)."""
    settings = source.request
    response, _, _ = await runner.call(lambda run: http.fetch(settings, run),
                                       refresh_timeout(source), f"targets_url {source.spec}")
    if response.status != 200:
        raise TargetGroupError(f"HTTP status {response.status}, expected 200")
    kind = dict(response.headers).get("content-type", "")
    if kind.split(";")[0].strip().lower() != "application/json":
        raise TargetGroupError(f"Content-Type {kind or 'missing'!r}, expected "
                               "application/json (Prometheus' http_sd format)")
    try:
        text = response.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetGroupError(f"not UTF-8: {exc.reason}") from None
    return parse(text, "json")


async def ask_srv(source: TargetSource, runner: Runner,
                  resolv_conf: str = RESOLV_CONF) -> list[TargetGroup]:
    """The SRV targets of the name, one group; a name that does not exist has none (as in
    Prometheus). Without `server`, the nameservers of resolv.conf, read each time."""
    settings = source.request
    if not settings.server:
        settings = dataclasses.replace(settings, server=_system_nameservers(resolv_conf))
    try:
        answers = await runner.call(lambda run: dns.ask(settings, run),
                                    refresh_timeout(source), f"targets_srv {source.spec}")
    except CheckError as exc:
        if exc.reason is Reason.NXDOMAIN:
            return [TargetGroup(())]
        raise
    return [srv_targets(answers)]


def _system_nameservers(path: str) -> tuple[HostPort, ...]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read(1 << 16)
    except OSError as exc:
        raise CheckError(Reason.RESOLVE_ERROR, f"cannot read {path}: "
                         f"{exc.strerror or exc}") from None
    found = nameservers(text)
    if not found:
        raise CheckError(Reason.RESOLVE_ERROR, f"{path} names no nameserver")
    return parse_servers([f"[{a}]" if ":" in a else a for a in found], "udp", 0)
