"""TCP connections on the event loop, and the kernel's TCP_INFO of a connected socket.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket

from exporter.net.ready import wait_ready
from exporter.net.resolve import Address

_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)


async def connect_tcp(address: Address) -> socket.socket:
    """A connected non-blocking TCP socket; closed again if the connect fails or is cancelled.

    The connect is the socket's own: `connect_ex`, then one wait until the socket is writable
    and its SO_ERROR read, which is what asyncio's `sock_connect` does underneath, without
    its bookkeeping per call (the address checked for being resolved again, a future with
    done-callbacks): a few µs of every tcp and http check (docs/performance.md).
    """
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex(address.sockaddr)
        if error in _IN_PROGRESS:
            await wait_ready(asyncio.get_running_loop(), sock.fileno(), write=True)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))  # ConnectionRefusedError for ECONNREFUSED
    except BaseException:
        sock.close()
        raise
    return sock



def read_tcp_info(sock: socket.socket, size: int) -> bytes | None:
    """Up to `size` bytes of a connected socket's TCP_INFO; None where the platform has none."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, option, size)
    except OSError:
        return None


# Sockets whose options are the point (the socket check): opened, tuned, read back, then
