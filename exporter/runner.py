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
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from exporter.checks import KINDS
from exporter.checks.base import Kind, Run
from exporter.config.model import CheckConfig
from exporter.deadline import within, within_if_waiting
from exporter.errors import CheckError, Reason
from exporter.metrics import Series, Spec
from exporter.net.resolve import Resolver
from exporter.store import Result

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def _forget_frames(exc: BaseException | None) -> None:
    """Drop the locals of the finished frames a failed run's exception passed through.

    A frame that still holds the exception raised through it (a check that keeps a failure in
    a local or an object before raising it) is a reference cycle: garbage that only a full GC
    pass frees, and thousands of checks timing out make those passes much longer (tests:
    tests/reliability/test_gc.py). The runner is the last to see the exception, so it cuts
    every such cycle, whichever kind made it; the traceback text stays as it was.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)  # skips frames still running (ours)
        exc = exc.__cause__ or exc.__context__


def _undeclared(kind: Kind[Any], series: Series,
                counted: list[tuple[Spec, tuple[str, ...]]]) -> list[str]:
    """The names of the metrics a run recorded that its kind does not declare, sorted (the
    series only when they changed: unchanged ones were checked when they were new)."""
    names = [spec.name for spec, _ in (*series, *counted)]
    return sorted({name for name in names if name not in kind.declared})


class Runner:
    """Runs checks under their deadline and turns what happens into `Result`s."""

    def __init__(self, resolver: Resolver, kinds: Mapping[str, Kind[Any]] = KINDS) -> None:
        self.resolver = resolver
        self.kinds = kinds

    async def call(self, function: Callable[[Run], Awaitable[T]], timeout: float,
                   what: str) -> T:
        """`function`'s answer, asked as a check's run is (its deadline, the resolver, the same
        reasons for what goes wrong): for the requests that are not checks, service discovery's.
        Raises CheckError with the reason and message a failed run would have had."""
        loop = asyncio.get_running_loop()
        run = Run(loop.time() + timeout, self.resolver)
        try:
            return await within(function(run), run.deadline)
        except asyncio.TimeoutError as exc:
            _forget_frames(exc)
            raise CheckError(Reason.TIMEOUT, f"no answer within {timeout:g}s") from None
        except CheckError:
            raise
        except Exception as exc:
            reason, message = classify(exc)
            if reason is Reason.INTERNAL_ERROR:
                log.error("internal error in %s", what, exc_info=exc)
            _forget_frames(exc)
            raise CheckError(reason, message) from None

    async def run(self, check: CheckConfig, timeout: float | None = None,
                  memory: dict[str, Any] | None = None, previous: Result | None = None) -> Result:
        """Run `check` once; never raises except when cancelled from outside.

        `memory` is the check's state carried from run to run (see `Run.memory`); `previous`,
        its last result, whose `series` the new result shares while the gauges are the same.
        """
        loop = asyncio.get_running_loop()
        timeout = check.timeout if timeout is None else timeout
        started = time.perf_counter()
        run = Run(loop.time() + timeout, self.resolver, memory)
        kind = self.kinds[check.kind]
        reason: Reason | None = None
        message = ""
        try:
            await within_if_waiting(kind.check(check.settings, run), run.deadline)
        except asyncio.TimeoutError as exc:
            reason, message = Reason.TIMEOUT, f"no result within the {timeout:g}s timeout"
            _forget_frames(exc)
        except Exception as exc:
            reason, message = classify(exc)
            if reason is Reason.INTERNAL_ERROR:
                log.error("internal error in check check=%s kind=%s", check.name, check.kind,
                          exc_info=exc)
            _forget_frames(exc)
        duration = time.perf_counter() - started
        series = tuple(run.series)
        unchanged = previous is not None and series == previous.series
        if previous is not None and unchanged:
            series = previous.series  # one tuple per check, not per run (see Result)
        if undeclared := _undeclared(kind, () if unchanged else series,
                                     [*run.counted, *run.observed]):
            # A metric the kind did not declare would have no family to render in: the kind is
            # wrong, so its run fails loudly, never a series dropped without a word.
            reason, message = Reason.INTERNAL_ERROR, (
                f"the {kind.name} kind recorded {', '.join(undeclared)}, which it does not "
                "declare in its specs")
            log.error("internal error in check check=%s kind=%s: %s", check.name, check.kind,
                      message)
        return Result(
            success=reason is None,
            reason=reason,
            message=message,
            duration=duration,
            finished=time.time(),
            series=series,
            values=tuple(run.values),
            counted=tuple(run.counted),
            increments=tuple(run.increments),
            details=tuple(run.details),
            observed=tuple(run.observed),
            samples=tuple(run.samples),
        )
