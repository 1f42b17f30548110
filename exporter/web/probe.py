"""`/probe`: one check run now, its metrics in an exposition of its own.

    /probe?check=NAME                        a configured check
    /probe?kind=K&target=T[&template=NAME]   an ad-hoc check, blackbox_exporter's multi-target
                                             style, for targets `[probe] allow` lets through
    /probe?module=NAME&target=T              the same: `module` is blackbox_exporter's name for
                                             a template, so its scrape configs and
                                             prometheus-operator's Probe drive netsentry as is
    ...&debug=true                           a readable trace of the run instead of metrics

A bad request — an unknown check, kind or template, a malformed or disallowed target — is 400
with the reason; a probe that ran and failed is 200 with `netsentry_probe_success 0` and the
reason. The timeout is the check's (the template's), shortened to the scrape timeout Prometheus
sends (`X-Prometheus-Scrape-Timeout-Seconds`) minus `[probe] timeout_offset`, so that the answer
arrives before Prometheus gives up. At most `[probe] max_in_flight` probes run at a time; one
more is answered 503 at once rather than queued behind them.

Ad-hoc probes resolve through an `AllowedResolver`: every address a check gets, the target's
and every redirect's, has passed the allow-list, and the check connects to exactly that address.
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Callable, Mapping
from typing import Any

from exporter.checks import KINDS
from exporter.checks.base import UNTIL_RELOAD
from exporter.config.allow import AllowList
from exporter.config.model import CheckConfig, Config
from exporter.config.settings import adhoc_check
from exporter.errors import CheckError, ConfigError, Reason
from exporter.exposition import OPENMETRICS_END, formats, protobuf, render_probe
from exporter.net.resolve import Address, Resolver
from exporter.report import describe
from exporter.runner import Runner
from exporter.store import Result, Store
from exporter.web.server import Request, Response

TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
USAGE = "give check=NAME, or kind=K&target=T (and template=NAME, or module=NAME)"


class BadRequest(ValueError):
    """What is wrong with a /probe request, for a 400."""


class ProbeEndpoint:
    """The `/probe` handler; `config` returns the running config (None before the first),
    `store` holds the configured checks' states."""

    def __init__(self, config: Callable[[], Config | None], resolver: Resolver,
                 store: Store | None = None) -> None:
        self._config = config
        self._resolver = resolver
        self._store = store
        self._runner = Runner(resolver)
        self.in_flight = 0

    async def handle(self, request: Request) -> Response:
        config = self._config()
        if config is None:
            return _text(503, "the config is not loaded yet")
        header = request.headers.get(TIMEOUT_HEADER)
        try:
            check, allow = _check(config, request.query)
            timeout = probe_timeout(check.timeout, header, config.probe.timeout_offset)
        except BadRequest as exc:
            return _text(400, str(exc))
        if self.in_flight >= config.probe.max_in_flight:
            return _text(503, f"{self.in_flight} probes in flight, as many as [probe] "
                         "max_in_flight allows; try again")
        resolver = AllowedResolver(self._resolver, allow) if allow is not None else None
        runner = self._runner if resolver is None else Runner(resolver)
        self.in_flight += 1
        try:
            result = await runner.run(check, timeout=timeout, memory=self.memory(check))
        finally:
            self.in_flight -= 1
        debug = request.query.get("debug", "").lower() in ("true", "1")
        trace = resolver.trace if resolver is not None else []
        if resolver is not None and resolver.refused_target is not None:
            lines = [f"target {check.target!r} is not allowed by [probe] allow: "
                     f"{resolver.refused_target}", *(trace if debug else [])]
            return _text(400, "\n".join(lines))
        reasons = KINDS[check.kind].reasons
        if debug:
            return _text(200, debug_text(check, result, timeout, header, trace, reasons))
        return _answer(result, reasons, request.headers.get("accept", ""))


    def memory(self, check: CheckConfig) -> dict[str, Any]:
        """A memory of its own for the run (it must not disturb the scheduled runs' answer
        tracking, and may overlap one), sharing with a configured check only what it keeps
        until a reload: an NTP server's Kiss-o'-Death backoff holds for probes too."""
        state = self._store.states.get(check.key) if self._store is not None else None
        if state is None or state.check is not check:
            return {}
        return {UNTIL_RELOAD: state.memory.setdefault(UNTIL_RELOAD, {})}


def _configured(config: Config, name: str, query: Mapping[str, str],
                adhoc: list[str]) -> CheckConfig:
    """The configured check `check=` names; of a target list's, the one `target=` names."""
    targets = config.targets(name)
    if targets and "target" in query:
        adhoc.remove("target")
        if query["target"] not in targets:
            raise BadRequest(f"check {name!r} has no target {query['target']!r}")
    elif targets:
        raise BadRequest(f"check {name!r} has {len(targets)} targets; name one with target=")
    if adhoc:
        raise BadRequest(f"check= runs a configured check; {adhoc[0]}= does not go with it")
    check = config.check(name, query.get("target"))
    if check is None:
        raise BadRequest(f"unknown check {name!r}")
    return check


def _check(config: Config, query: Mapping[str, str]) -> tuple[CheckConfig, AllowList | None]:
    """The check a request asks for, and the allow-list its run must keep to (None: a
    configured check, trusted as the config is)."""
    adhoc = [key for key in ("kind", "target", "template", "module") if key in query]
    name = query.get("check")
    if name is not None:
        return _configured(config, name, query, adhoc), None
    if not adhoc:
        raise BadRequest(USAGE)
    if "module" in query:  # blackbox_exporter's name for a template (prometheus-operator's Probe)
        if "template" in query and query["template"] != query["module"]:
            raise BadRequest("module= is blackbox_exporter's name for template=; give one of "
                             "them")
        query = {**query, "template": query["module"]}
    probe = config.probe
    if not probe.allow:
        raise BadRequest("ad-hoc probes are off: the config's [probe] allow lists no host "
                         "patterns or networks")
    template = None
    template_name = query.get("template")
    if template_name is not None:
        template = probe.template(template_name)
        if template is None:
            known = ", ".join(t.name for t in probe.templates) or "none"
            raise BadRequest(f"unknown template {template_name!r}; templates: {known}")
    kind = query.get("kind") or (template.kind if template is not None else "")
    if not kind:
        raise BadRequest(f"missing kind: {USAGE}")
    if kind not in KINDS:
        raise BadRequest(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if template is not None and template.kind != kind:
        raise BadRequest(f"template {template.name!r} is for {template.kind} checks, not {kind}")
    try:
        check = adhoc_check(kind, template, query.get("target", ""),
                                          probe.timeout)
    except ConfigError as exc:
        raise BadRequest("; ".join(exc.problems)) from None
    return check, probe.allow


def probe_timeout(configured: float, header: str | None, offset: float) -> float:
    """The run's timeout: `configured`, shortened to the scrape timeout in `header` minus
    `offset` — but never to less than half the scrape timeout."""
    if header is None:
        return configured
    try:
        scrape = float(header)
    except ValueError:
        scrape = math.nan
    if not (0 < scrape < math.inf):
        raise BadRequest(f"X-Prometheus-Scrape-Timeout-Seconds: {header!r} is not a positive "
                         "number of seconds")
    return min(configured, max(scrape - offset, scrape / 2))


def debug_text(check: CheckConfig, result: Result, timeout: float, header: str | None,
               trace: list[str], reasons: tuple[Reason, ...]) -> str:
    """A trace of the run for people: what ran, with which options, what it found, which
    addresses it was allowed to reach, and the metrics. Secrets show as <secret>."""
    from_header = f", shortened for a scrape timeout of {header} s" if header is not None else ""
    parts = [describe(check, result),
             f"timeout {timeout:g} s (the check's: {check.timeout:g} s{from_header})"]
    options = [f"  {field.name} = {getattr(check.settings, field.name)!r}"
               for field in dataclasses.fields(check.settings)
               if field.name != "target"
               and getattr(check.settings, field.name) != field.default]
    if options:
        parts.append("options\n" + "\n".join(options))
    if trace:
        parts.append("allow-list\n" + "\n".join(f"  {line}" for line in trace))
    parts.append("metrics\n" + render_probe(result, reasons).rstrip("\n"))
    return "\n\n".join(parts)


def _text(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode())


class AllowedResolver(Resolver):
    """A resolver for one ad-hoc probe: it resolves through `inner` and returns the addresses
    only if the allow-list permits every one of them; else the run fails.

    Checks connect to the addresses their resolver returns, for every hop (an http redirect
    resolves its new host here too), so every connection of the run goes to an address that
    passed. `refused_target` says why the run's first resolution — the target — was refused,
    for the caller to answer 400 rather than report a failed probe; `trace` is the story for
    `debug=true`.
    """

    def __init__(self, inner: Resolver, allow: AllowList) -> None:  # no pool of its own
        self._inner = inner
        self._allow = allow
        self._resolutions = 0
        self.refused_target: str | None = None
        self.trace: list[str] = []

    async def resolve(
        self, host: str, port: int, family: int = socket.AF_UNSPEC, type: int = socket.SOCK_STREAM
    ) -> list[Address]:
        first = self._resolutions == 0
        self._resolutions += 1
        addresses = await self._inner.resolve(host, port, family, type)
        why = self._allow.refusal(host, [a.host for a in addresses])
        if why is not None:
            self.trace.append(f"{host}: refused: {why}")
            if first:
                self.refused_target = why
            # Past the first resolution this is where the target led (an http redirect).
            raise CheckError(Reason.UNEXPECTED_RESPONSE, f"not allowed by [probe] allow: {why}")
        for address in addresses:
            self.trace.append(f"{host} -> {address.host}: allowed, "
                              f"{self._allow.explain(address.host)}")
        return addresses

    async def reverse(self, host: str) -> str | None:
        """A name for an address the run met (a traceroute hop): looking it up reaches no
        host of the target's, so the allow-list has no say."""
        return await self._inner.reverse(host)


def _answer(result: Result, reasons: tuple[Reason, ...], accept: str) -> Response:
    """The run's exposition in the format the scraper asks for (`formats.negotiate`)."""
    chosen = formats.negotiate(accept)
    if chosen.name == "protobuf":
        body = protobuf.render_probe(result, reasons)
    elif chosen.name == "openmetrics":
        body = (render_probe(result, reasons, openmetrics=True) + OPENMETRICS_END).encode()
    else:
        body = render_probe(result, reasons).encode()
    return Response(200, body, chosen.content_type, (("Vary", "Accept"),))
