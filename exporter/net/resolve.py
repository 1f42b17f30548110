"""Name resolution: addresses, literals, and `getaddrinfo` on a bounded pool of threads.

`getaddrinfo` cannot be awaited or cancelled, so it runs on a `BlockingPool`: bounded
(thousands of checks in flight cost memory, not threads), shared by identical lookups in
flight at the same time, and abandoned by the caller at its deadline (a stuck lookup keeps
its thread, not the check and not the agent's shutdown).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

from exporter.net.blocking import BlockingPool

FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


@dataclass(frozen=True, slots=True)
class Address:
    """One resolved address to connect to."""

    family: int
    sockaddr: tuple[Any, ...]

    @property
    def host(self) -> str:
        return str(self.sockaddr[0])

    def __str__(self) -> str:
        host, port = self.sockaddr[0], self.sockaddr[1]
        return f"[{host}]:{port}" if self.family == socket.AF_INET6 else f"{host}:{port}"


def literal_address(host: str, port: int, family: int) -> Address | None:
    """The address itself when `host` is an IP literal of an allowed family, else None."""
    # inet_pton rather than ipaddress: this runs on every run of every check.
    if family != socket.AF_INET6:
        try:
            socket.inet_pton(socket.AF_INET, host)
        except OSError:
            pass
        else:
            return Address(socket.AF_INET, (host, port))
    if family != socket.AF_INET and ":" in host:
        try:
            socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        except OSError:
            return None
        return Address(socket.AF_INET6, (host, port, 0, 0))
    return None


class Resolver:
    """The system resolver (getaddrinfo), as applications see it, made awaitable."""

    def __init__(self, pool: BlockingPool) -> None:
        self._pool = pool
        self._in_flight: dict[tuple[str, int, int, int], asyncio.Future[Any]] = {}

    async def resolve(
        self, host: str, port: int, family: int = socket.AF_UNSPEC, type: int = socket.SOCK_STREAM
    ) -> list[Address]:
        """Addresses for `host` in getaddrinfo's order; raises socket.gaierror."""
        literal = literal_address(host, port, family)
        if literal is not None:
            return [literal]
        key = (host, port, family, type)
        future = self._in_flight.get(key)
        if future is None:
            future = self._pool.submit(lambda: socket.getaddrinfo(host, port, family, type))
            self._in_flight[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one caller's deadline must not cancel the lookup others are waiting for.
        infos = await asyncio.shield(future)
        return [Address(info[0], info[4]) for info in infos]

    async def reverse(self, host: str) -> str | None:
        """The name an address has in reverse DNS (or /etc/hosts), None where it has none;
        raises nothing for a missing name (socket.gaierror for an address it cannot read)."""
        def lookup() -> str | None:
            try:
                name, _ = socket.getnameinfo((host, 0), socket.NI_NAMEREQD)
            except socket.gaierror as exc:
                if exc.errno in (socket.EAI_NONAME, socket.EAI_AGAIN, socket.EAI_FAIL):
                    return None
                raise
            return str(name)

        name: str | None = await asyncio.shield(self._pool.submit(lookup))
        return name

    def _forget(self, key: tuple[str, int, int, int], done: asyncio.Future[Any]) -> None:
        del self._in_flight[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have given up on it already
