"""The registry of check kinds: adding a kind adds one line here."""

from __future__ import annotations

from typing import Any

from exporter.checks import clock, dns, http, ntp, socket, tcp
from exporter.checks.base import Kind

KINDS: dict[str, Kind[Any]] = {
    kind.name: kind
    for kind in (
        tcp.KIND,
        dns.KIND,
        http.KIND,
        socket.KIND,
        ntp.KIND,
        clock.KIND,
    )
}
