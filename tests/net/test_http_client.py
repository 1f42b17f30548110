"""The HTTP/1.1 client against servers that do not answer in HTTP/1.1: each failure is named in
the user's words, not h11's (issue 16, defect 2)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from exporter.net import http_client
from exporter.net.resolve import Address
from exporter.net.stream import open_stream

# What an HTTP/2-only server writes first (RFC 9113 §3.4): a SETTINGS frame on stream 0, here
# with one setting (MAX_CONCURRENT_STREAMS = 100).
SETTINGS = bytes([0, 0, 6, 0x4, 0, 0, 0, 0, 0]) + bytes([0, 3, 0, 0, 0, 100])


def against(reply: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Any:
    """One HTTP/1.1 GET against an in-process server that reads the request, then plays
    `reply` and closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reply(writer)
        finally:
            writer.close()

    async def go() -> Any:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with open_stream(Address(socket.AF_INET, ("127.0.0.1", port))) as stream:
                return await asyncio.wait_for(
                    http_client.request(stream, "GET", "peer.test", "/"), 5)
        finally:
            server.close()

    return asyncio.run(go())


async def settings_then_close(writer: asyncio.StreamWriter) -> None:
    writer.write(SETTINGS)
    await writer.drain()


async def close_at_once(writer: asyncio.StreamWriter) -> None:
    pass


async def http10(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.0 200 OK\r\n\r\nhello")
    await writer.drain()


def test_an_http2_only_server_is_named_so() -> None:
    with pytest.raises(http_client.ResponseError) as info:
        against(settings_then_close)
    assert str(info.value) == ("the server answered with HTTP/2 frames, not HTTP/1.1 (it speaks "
                               "HTTP/2 only)")


def test_a_server_closing_without_a_response() -> None:
    with pytest.raises(http_client.ResponseError) as info:
        against(close_at_once)
    assert str(info.value) == ("the server closed the connection without an HTTP/1.1 response "
                               "(it may speak HTTP/2 only)")


def test_garbage_that_is_not_http2_keeps_the_parser_reason() -> None:
    async def garbage(writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\x01 not http at all\r\n\r\n")
        await writer.drain()

    with pytest.raises(http_client.ResponseError) as info:
        against(garbage)
    assert str(info.value).startswith("invalid HTTP response: ")


def test_a_response_closed_by_the_server_still_reads() -> None:
    # The close that ends an HTTP/1.0 body is not mistaken for a close before the response.
    response = against(http10)
    assert (response.status, response.body, response.http_version) == (200, b"hello", "1.0")
