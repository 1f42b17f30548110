"""A fixed set of daemon threads for calls that block, with results handed back to the loop.

Daemon threads, unlike `concurrent.futures`' workers, are not joined at exit: a call stuck in
libc (a resolver waiting 30 s for a dead nameserver) cannot delay the agent's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any


class BlockingPool:
    """A fixed set of daemon threads for calls that block; results come back to the loop."""

    def __init__(self, workers: int = 8, name: str = "netsentry-blocking") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, func: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put((func, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            func, future = job
            if future.cancelled():  # abandoned while queued: do not even start it
                continue
            try:
                result = func()
            except BaseException as exc:  # handed to the awaiting check, never lost
                _settle(future, None, exc)
            else:
                _settle(future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed while the call blocked
        future.get_loop().call_soon_threadsafe(settle)
