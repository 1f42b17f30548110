"""The registry of check kinds: adding a kind adds one line here.

It is the only list of kinds. What the other layers need to know of the kinds is derived from
it: the config's known kinds and their keys, the failure reasons each starts at 0, and the
metric families the exposition renders (`kind_specs`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from exporter.checks import clock, dns, grpc, http, ntp, path, ping, socket, tcp, udp, websocket
from exporter.checks.base import Kind
from exporter.metrics import Spec

KINDS: dict[str, Kind[Any]] = {
    kind.name: kind
    for kind in (
        tcp.KIND,
        dns.KIND,
        http.KIND,
        socket.KIND,
        ntp.KIND,
        clock.KIND,
        udp.KIND,
        ping.KIND,
        path.KIND,
        websocket.KIND,
        grpc.KIND,
    )
}

_DERIVED: list[tuple[tuple[Kind[Any], ...], tuple[Spec, ...]]] = []


def kind_specs() -> tuple[Spec, ...]:
    """Every metric the registered kinds can record, each once, in the order the specs were
    defined (`Spec.order`): the exposition's order of the kinds' families. Derived again only
    when the registry changes (a test may register a kind of its own)."""
    kinds = tuple(KINDS.values())
    if not _DERIVED or len(_DERIVED[0][0]) != len(kinds) or any(
            a is not b for a, b in zip(_DERIVED[0][0], kinds, strict=True)):
        unique = {spec.name: spec for kind in kinds for spec in kind.specs}
        _DERIVED[:] = [(kinds, tuple(sorted(unique.values(), key=lambda spec: spec.order)))]
    return _DERIVED[0][1]


def host_problems(kinds: Iterable[str]) -> dict[str, str]:
    """Why checks of these kinds cannot run in this process (`Kind.host_problem`), by kind;
    kinds without a problem are left out."""
    found = {}
    for name in dict.fromkeys(kinds):
        probe = KINDS[name].host_problem
        problem = probe() if probe is not None else None
        if problem is not None:
            found[name] = problem
    return found
