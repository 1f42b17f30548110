"""TCP connections on the event loop, and the kernel's TCP_INFO of a connected socket.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket

from exporter.net.ready import wait_ready
from exporter.net.resolve import Address


async def connect_tcp(address: Address) -> socket.socket:
    """A connected non-blocking TCP socket; closed again if the connect fails or is cancelled.

    The connect is the socket's own: `connect_ex`, then a wait until the socket is writable
    and its SO_ERROR read, which is what asyncio's `sock_connect` does underneath, without
    its bookkeeping per call (the address checked for being resolved again, a future with
    done-callbacks). A connect to this host (loopback, a sidecar) has completed within its
    own call, so the socket is asked first, without waiting, whether it is writable already:
    only a connect still under way is handed to the event loop (registered, waited for and
    unregistered). A remote target pays one poll() more. Figures in docs/performance.md.
    """
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex(address.sockaddr)
        # Only EINPROGRESS means "under way": a TCP connect's EAGAIN is a failure (no room in
        # the routing cache), whose socket would poll writable without being connected.
        if error == errno.EINPROGRESS:
            if not _writable_now(sock):
                await wait_ready(asyncio.get_running_loop(), sock.fileno(), write=True)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))  # ConnectionRefusedError for ECONNREFUSED
    except BaseException:
        sock.close()
        raise
    return sock


def _writable_now(sock: socket.socket) -> bool:
    """Whether `sock` is writable (or failed) at this very moment: poll() with no wait."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    return bool(poller.poll(0))



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
