"""Sockets whose options are the point (the socket check): opened, tuned, read back, then
connected, bound or just closed by the caller.
"""

from __future__ import annotations

import asyncio
import socket

from exporter.net.resolve import Address

SOCKET_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def open_socket(family: int, protocol: str) -> socket.socket:
    """A new non-blocking "tcp" or "udp" socket; the caller closes it."""
    sock = socket.socket(family, SOCKET_TYPES[protocol])
    sock.setblocking(False)
    return sock


def set_int_option(sock: socket.socket, level: int, option: int, value: int) -> None:
    """setsockopt with an int value; raises OSError when the kernel refuses it."""
    sock.setsockopt(level, option, value)


def get_int_option(sock: socket.socket, level: int, option: int) -> int:
    """getsockopt of an int-valued option; raises OSError."""
    return sock.getsockopt(level, option)


async def connect_socket(sock: socket.socket, address: Address) -> None:
    """Connect a non-blocking socket the caller opened (and closes, whatever happens)."""
    await asyncio.get_running_loop().sock_connect(sock, address.sockaddr)


def bind_socket(sock: socket.socket, address: Address, listen: bool) -> None:
    """Bind, and with `listen` listen: what a server does at start; raises OSError."""
    sock.bind(address.sockaddr)
    if listen:
        sock.listen(1)  # the backlog does not matter: nothing is accepted, the socket closes
