"""TCP connections on the event loop, and the kernel's TCP_INFO of a connected socket.
"""

from __future__ import annotations

import asyncio
import socket

from exporter.net.resolve import Address


async def connect_tcp(address: Address) -> socket.socket:
    """A connected non-blocking TCP socket; closed again if the connect fails or is cancelled."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address.sockaddr)
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
