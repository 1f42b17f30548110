"""Waiting on the event loop until a socket is readable or writable.
"""

from __future__ import annotations

import asyncio


async def wait_ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool) -> None:
    """Wait until `fd` is readable (or writable)."""
    ready: asyncio.Future[None] = loop.create_future()
    if write:
        loop.add_writer(fd, _wake, ready)
    else:
        loop.add_reader(fd, _wake, ready)
    try:
        await ready
    finally:
        # Unregistered before the caller can close the fd: a number the kernel reuses for
        # the next socket must not inherit this registration.
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


# Linux's SO_TIMESTAMPING, which Python does not name: 37 in include/uapi/asm-generic/socket.h
# (x86, arm, riscv and most others; a platform where 37 means something else fails the
# read-back below), asking for software timestamps of the datagrams sent and received
# (include/uapi/linux/net_tstamp.h: TX_SOFTWARE | RX_SOFTWARE | SOFTWARE | OPT_TSONLY, the
