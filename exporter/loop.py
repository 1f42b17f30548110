"""The event loop the agent runs on: asyncio's own, or uvloop's where asked for and installed.

uvloop (`pip install netsentry[uvloop]`) is imported here and nowhere else; every other module
uses only the `asyncio.AbstractEventLoop` API. uvloop 0.23 departs from asyncio's loop in two
ways this agent would notice, and `_UvLoop` puts both right so that nothing outside this module
has to know which loop it runs on:

- `loop.time()` is libuv's millisecond clock (`uv_now`): checks time their phases with it
  (ping and path RTTs, NTP's send spacing, UDP response times), and a loopback echo of 40 µs
  would read 0 or 1 ms. Here it is `time.monotonic()`, asyncio's own clock (the same
  CLOCK_MONOTONIC libuv reads), so deadlines given to `call_at` still land where they should:
  uvloop's `call_at(when)` is `call_later(when - self.time())`.
- `sock_sendto` / `sock_recvfrom` raise NotImplementedError: here they are the same
  non-blocking try-then-wait-for-readiness that asyncio's loop does, over `add_reader` /
  `add_writer`, which uvloop has.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

CHOICES = ("auto", "asyncio", "uvloop")
DEFAULT = "asyncio"  # the figures in docs/performance.md (2026-12-07) do not pay for uvloop

T = TypeVar("T")



def available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str) -> str:
    """The loop `choice` means here: "auto" is uvloop when installed, else asyncio."""
    if choice not in CHOICES:
        raise ValueError(f"unknown event loop {choice!r}; one of {', '.join(CHOICES)}")
    if choice == "auto":
        return "uvloop" if available() else "asyncio"
    if choice == "uvloop" and not available():
        raise ValueError("uvloop is not installed: pip install 'netsentry[uvloop]', "
                         "or --event-loop=asyncio")
    return choice


def new_event_loop(choice: str = DEFAULT) -> asyncio.AbstractEventLoop:
    if resolve(choice) == "uvloop":
        return _uvloop_class()()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T], choice: str = DEFAULT) -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    factory: Callable[[], asyncio.AbstractEventLoop] = lambda: new_event_loop(choice)  # noqa: E731
    if sys.version_info < (3, 11):  # pragma: no cover - asyncio.run takes no loop factory
        return _run_310(main, factory())
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _run_310(main: Coroutine[Any, Any, T],
             loop: asyncio.AbstractEventLoop) -> T:  # pragma: no cover - Python 3.10
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__ == __name__ else "asyncio"


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:  # pragma: no cover - Python 3.10
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


@functools.cache
def _uvloop_class() -> type[asyncio.AbstractEventLoop]:
    import uvloop  # here only, so that an agent on asyncio's loop never loads it

    class UvLoop(uvloop.Loop):
        def time(self) -> float:
            return time.monotonic()

        async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> Any:
            while True:
                try:
                    return sock.recvfrom(bufsize)
                except (BlockingIOError, InterruptedError):
                    await self._ready(sock, write=False)

        async def sock_sendto(self, sock: socket.socket, data: Any, address: Any) -> Any:
            while True:
                try:
                    return sock.sendto(data, address)
                except (BlockingIOError, InterruptedError):
                    await self._ready(sock, write=True)

        async def _ready(self, sock: socket.socket, write: bool) -> None:
            fd = sock.fileno()
            ready: asyncio.Future[None] = self.create_future()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            (self.add_writer if write else self.add_reader)(fd, wake)
            try:
                await ready
            finally:
                (self.remove_writer if write else self.remove_reader)(fd)

    return UvLoop
