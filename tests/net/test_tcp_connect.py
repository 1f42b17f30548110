"""exporter/net/tcp.py's connect_tcp against real loopback listeners: connected, refused,
and a connect that never completes, cancelled, leaving no socket and no registration."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator

import pytest

from exporter.errors import Reason
from exporter.net.resolve import Address
from exporter.net.tcp import connect_tcp
from exporter.runner import classify
from tests.support.servers import closed_port


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def listener(backlog: int = 16) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        yield sock
    finally:
        sock.close()


def test_connects_and_the_peer_sees_it() -> None:
    async def main(server: socket.socket) -> tuple[tuple[str, int], tuple[str, int]]:
        sock = await connect_tcp(Address(socket.AF_INET, server.getsockname()))
        try:
            assert sock.getblocking() is False
            accepted, peer = server.accept()
            accepted.close()
            return sock.getsockname(), peer
        finally:
            sock.close()

    with listener() as server:
        ours, seen = asyncio.run(main(server))
    assert ours == seen


def test_refused_is_connection_refused_and_closes_the_socket() -> None:
    port = closed_port()

    async def main() -> BaseException:
        with pytest.raises(ConnectionRefusedError) as caught:
            await connect_tcp(Address(socket.AF_INET, ("127.0.0.1", port)))
        return caught.value

    before = open_fds()
    error = asyncio.run(main())
    assert open_fds() == before
    assert classify(error)[0] is Reason.REFUSED


def test_a_connect_that_never_completes_is_cancelled_cleanly() -> None:
    # A listener that never accepts, its queue filled: the kernel drops further SYNs, so the
    # next connect stays in progress until the deadline cancels it.
    async def main(server: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        target = Address(socket.AF_INET, server.getsockname())
        fillers = []
        try:
            for _ in range(8):  # bounded: the queue of a backlog-0 listener holds one or two
                try:
                    fillers.append(await asyncio.wait_for(connect_tcp(target), 0.3))
                except TimeoutError:
                    break
            else:
                pytest.fail("the listener's queue never filled")
            before = open_fds()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(connect_tcp(target), 0.3)
            assert open_fds() == before
            # The cancelled connect left no writer behind on its fd number, which the kernel
            # hands out again to the next socket.
            with socket.socket() as reused:
                assert loop.remove_writer(reused.fileno()) is False
            with listener() as other:
                fresh = await connect_tcp(Address(socket.AF_INET, other.getsockname()))
                fresh.close()
        finally:
            for sock in fillers:
                sock.close()

    with listener(backlog=0) as server:
        asyncio.run(main(server))


def test_a_connect_done_within_its_call_never_waits_on_the_loop() -> None:
    # On loopback the kernel completes the handshake inside connect(): the socket is writable
    # at once, so the loop is not asked to watch it (no add_writer, no turn of the loop).
    async def main(server: socket.socket) -> tuple[int, int]:
        connected = 0
        loop = asyncio.get_running_loop()
        watched = []
        add_writer = loop.add_writer

        def counting(fd: int, *args: object) -> None:
            watched.append(fd)
            add_writer(fd, *args)

        loop.add_writer = counting  # type: ignore[method-assign]
        target = Address(socket.AF_INET, server.getsockname())
        for _ in range(20):
            sock = await connect_tcp(target)
            accepted, peer = server.accept()
            connected += peer == sock.getsockname()
            accepted.close()
            sock.close()
        with pytest.raises(ConnectionRefusedError):
            await connect_tcp(Address(socket.AF_INET, ("127.0.0.1", closed_port())))
        return len(watched), connected

    with listener() as server:
        watched, connects = asyncio.run(main(server))
    assert connects == 20
    assert watched == 0
