"""One run of one check: the deadline, the timing, and the reason when it fails.

This is the one place that catches the unexpected. Everything a check raises ends up as a
`Reason` from the closed set; what nobody foresaw is `internal_error`, logged with its
traceback, and fails that run only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import sys
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from exporter.checks import KINDS
from exporter.checks.base import Kind, Run
from exporter.config import CheckConfig
from exporter.errors import CheckError, Reason
from exporter.net import Resolver
from exporter.store import Result

log = logging.getLogger(__name__)

# getaddrinfo's answers that mean "no such name" rather than "could not find out".
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_EAI_NAMES = {
    getattr(socket, name): name for name in dir(socket)
    if name.startswith("EAI_") and isinstance(getattr(socket, name), int)
}
_NETWORK_ERRNOS = {
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "connection reset by peer",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "broken pipe",
}

if sys.version_info >= (3, 11):

    async def _within(coro: Coroutine[Any, Any, None], deadline: float) -> None:
        async with asyncio.timeout_at(deadline):
            await coro

else:  # pragma: no cover - Python 3.10

    async def _within(coro: Coroutine[Any, Any, None], deadline: float) -> None:
        await asyncio.wait_for(coro, max(deadline - asyncio.get_running_loop().time(), 0))


def classify(exc: BaseException) -> tuple[Reason, str]:
    """The reason and message for an exception a check let through."""
    if isinstance(exc, CheckError):
        return exc.reason, exc.message
    if isinstance(exc, socket.gaierror):
        name = _EAI_NAMES.get(exc.errno, "EAI_?")
        reason = Reason.NXDOMAIN if exc.errno in _NO_SUCH_NAME else Reason.RESOLVE_ERROR
        return reason, f"{name}: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError):
        return Reason.REFUSED, "connection refused"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Reason.TLS_ERROR, getattr(exc, "verify_message", None) or str(exc)
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, "timed out"
    if isinstance(exc, OSError):
        if exc.errno in _NETWORK_ERRNOS:
            return Reason.NETWORK_ERROR, _NETWORK_ERRNOS[exc.errno]
        return Reason.NETWORK_ERROR, exc.strerror or str(exc)
    return Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"


class Runner:
    """Runs checks under their deadline and turns what happens into `Result`s."""

    def __init__(self, resolver: Resolver, kinds: Mapping[str, Kind[Any]] = KINDS) -> None:
        self.resolver = resolver
        self.kinds = kinds

    async def run(self, check: CheckConfig, timeout: float | None = None,
                  memory: dict[str, Any] | None = None) -> Result:
        """Run `check` once; never raises except when cancelled from outside.

        `memory` is the check's state carried from run to run (see `Run.memory`).
        """
        loop = asyncio.get_running_loop()
        timeout = check.timeout if timeout is None else timeout
        started = time.perf_counter()
        run = Run(loop.time() + timeout, self.resolver, memory)
        reason: Reason | None = None
        message = ""
        try:
            await _within(self.kinds[check.kind].check(check.settings, run), run.deadline)
        except asyncio.TimeoutError:
            reason, message = Reason.TIMEOUT, f"no result within the {timeout:g}s timeout"
        except Exception as exc:
            reason, message = classify(exc)
            if reason is Reason.INTERNAL_ERROR:
                log.error("internal error in check check=%s kind=%s", check.name, check.kind,
                          exc_info=exc)
        duration = time.perf_counter() - started
        return Result(
            success=reason is None,
            reason=reason,
            message=message,
            duration=duration,
            finished=time.time(),
            observations=tuple(run.observations),
            counts=tuple(run.counts),
            details=tuple(run.details),
        )
