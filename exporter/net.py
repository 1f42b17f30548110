"""The only socket code of netsentry: name resolution and connections, on the event loop.

`getaddrinfo` cannot be awaited or cancelled, so it runs on a `BlockingPool`: bounded
(thousands of checks in flight cost memory, not threads), shared by identical lookups in flight
at the same time, and abandoned by the caller at its deadline (a stuck lookup keeps its thread,
not the check and not the agent's shutdown).

The DNS transports (`udp_exchange`, `stream_exchange`) move bytes and know no protocol: the
caller encodes the query and says, with a predicate, which datagram is the reply. They run
until cancelled; the caller's deadline ends them, and their socket is closed whatever happens.
`timed_udp_exchange` is `udp_exchange` with the times the request left and the reply arrived,
from the kernel where it can tell them (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from exporter.blocking import BlockingPool

FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


@dataclass(frozen=True, slots=True)
class Address:
    """One resolved address to connect to."""

    family: int
    sockaddr: tuple[Any, ...]

    @property
    def host(self) -> str:
        return str(self.sockaddr[0])

    def __str__(self) -> str:
        host, port = self.sockaddr[0], self.sockaddr[1]
        return f"[{host}]:{port}" if self.family == socket.AF_INET6 else f"{host}:{port}"


def literal_address(host: str, port: int, family: int) -> Address | None:
    """The address itself when `host` is an IP literal of an allowed family, else None."""
    # inet_pton rather than ipaddress: this runs on every run of every check.
    if family != socket.AF_INET6:
        try:
            socket.inet_pton(socket.AF_INET, host)
        except OSError:
            pass
        else:
            return Address(socket.AF_INET, (host, port))
    if family != socket.AF_INET and ":" in host:
        try:
            socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        except OSError:
            return None
        return Address(socket.AF_INET6, (host, port, 0, 0))
    return None


class Resolver:
    """The system resolver (getaddrinfo), as applications see it, made awaitable."""

    def __init__(self, pool: BlockingPool) -> None:
        self._pool = pool
        self._in_flight: dict[tuple[str, int, int, int], asyncio.Future[Any]] = {}

    async def resolve(
        self, host: str, port: int, family: int = socket.AF_UNSPEC, type: int = socket.SOCK_STREAM
    ) -> list[Address]:
        """Addresses for `host` in getaddrinfo's order; raises socket.gaierror."""
        literal = literal_address(host, port, family)
        if literal is not None:
            return [literal]
        key = (host, port, family, type)
        future = self._in_flight.get(key)
        if future is None:
            future = self._pool.submit(lambda: socket.getaddrinfo(host, port, family, type))
            self._in_flight[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one caller's deadline must not cancel the lookup others are waiting for.
        infos = await asyncio.shield(future)
        return [Address(info[0], info[4]) for info in infos]

    def _forget(self, key: tuple[str, int, int, int], done: asyncio.Future[Any]) -> None:
        del self._in_flight[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have given up on it already


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


async def tls_handshake(sock: socket.socket, context: ssl.SSLContext,
                        server_hostname: str) -> ssl.SSLSocket:
    """TLS over a connected non-blocking socket, the handshake driven on the loop.

    The returned SSLSocket owns the connection from now on (`sock` is detached into it; the
    caller closes the SSLSocket). This path is for a handshake and nothing or little after
    it: asyncio's TLS transport allocates a 256 KiB read buffer per connection, which costs
    about a third of a check that only wants the handshake and the certificate.
    """
    loop = asyncio.get_running_loop()
    tls = context.wrap_socket(sock, server_hostname=server_hostname,
                              do_handshake_on_connect=False)
    try:
        for _ in range(1000):  # a handshake takes a few round trips; the deadline bounds time
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                await _ready(loop, tls.fileno(), write=False)
            except ssl.SSLWantWriteError:
                await _ready(loop, tls.fileno(), write=True)
        raise ssl.SSLError("the TLS handshake did not complete in 1000 steps")
    except BaseException:
        tls.close()
        raise


def tcp_info(sock: socket.socket, size: int) -> bytes | None:
    """Up to `size` bytes of a connected socket's TCP_INFO; None where the platform has none."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, option, size)
    except OSError:
        return None


# Sockets whose options are the point (the socket check): opened, tuned, read back, then
# connected, bound or just closed by the caller.
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


def _source_key(address: Address) -> tuple[str, int]:
    """(host, port) spelt as recvfrom reports a datagram's source, to compare with."""
    # recvfrom gives inet_ntop's canonical text without a %scope suffix, while a configured
    # literal may be spelt otherwise ("0:0::1", "fe80::1%eth0"): canonicalise it once here.
    host = address.host.partition("%")[0]
    with contextlib.suppress(OSError, ValueError):
        host = socket.inet_ntop(address.family, socket.inet_pton(address.family, host))
    return host, int(address.sockaddr[1])


async def udp_exchange(
    address: Address, payload: bytes, accept: Callable[[bytes], bool], max_size: int = 65535
) -> tuple[bytes, int]:
    """Send `payload` in one datagram to `address` and return (the reply, datagrams ignored).

    A datagram is the reply only if it comes from exactly the server's address and port and
    `accept(datagram)` is true (accept must not raise); anything else is counted and ignored,
    and the wait goes on (RFC 5452 §9.1: an off-path attacker can send datagrams, so a wrong
    one must not end the exchange). Runs until cancelled; the socket is always closed.
    """
    # An unconnected socket, so that datagrams from other sources reach us and are counted
    # rather than silently dropped by the kernel. The price: Linux reports no ICMP errors to
    # unconnected UDP sockets, so a closed port is a timeout, not "refused". The kernel binds
    # the socket to a random ephemeral port at the first sendto (RFC 5452 §9.2).
    loop = asyncio.get_running_loop()
    host, port = _source_key(address)
    sock = socket.socket(address.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if sys.version_info >= (3, 11):
            await loop.sock_sendto(sock, payload, address.sockaddr)
        else:  # pragma: no cover - Python 3.10
            await _sendto(loop, sock, payload, address.sockaddr)
        ignored = 0
        while True:
            # A datagram longer than max_size is cut to it by the kernel, silently.
            if sys.version_info >= (3, 11):
                data, source = await loop.sock_recvfrom(sock, max_size)
            else:  # pragma: no cover - Python 3.10
                data, source = await _recvfrom(loop, sock, max_size)
            # The port first: the cheapest test, and the one a spoofer most often gets wrong.
            if source[1] == port and source[0] == host and accept(data):
                return data, ignored
            ignored += 1
    finally:
        sock.close()


# Python 3.10 has no loop.sock_recvfrom / sock_sendto: these do the same with add_reader /
# add_writer. Defined on every version so that the tests exercise them.


async def _recvfrom(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> tuple[bytes, Any]:
    while True:
        try:
            return sock.recvfrom(size)
        except (BlockingIOError, InterruptedError):
            await _ready(loop, sock.fileno(), write=False)


async def _sendto(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes, sockaddr: tuple[Any, ...]
) -> int:
    """Send one datagram; return the wall-clock time (ns) read just before the send that went."""
    while True:
        try:
            sent = time.time_ns()
            sock.sendto(data, sockaddr)
            return sent
        except (BlockingIOError, InterruptedError):
            await _ready(loop, sock.fileno(), write=True)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool) -> None:
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
# last so that the error queue gives back the timestamp alone, not a copy of the datagram).
_SO_TIMESTAMPING = 37
_TIMESTAMPING_FLAGS = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 11)
_TIMESPEC = struct.Struct("@ll")  # the first of scm_timestamping's three: the software one
_ANCILLARY_SIZE = 512  # the timestamps, and sock_extended_err on the error queue
_MAX_ERROR_QUEUE = 16  # entries read per wakeup (one datagram sent: one entry)
_MAX_DATAGRAMS_PER_WAKEUP = 64  # a flood is read in bounded bites, the deadline ends it


@dataclass(frozen=True, slots=True)
class TimedDatagram:
    """A reply, and the wall-clock times (ns since the Unix epoch) of the exchange."""

    data: bytes
    ignored: int  # datagrams ignored before it
    sent: int  # when the request left
    received: int  # when the reply arrived
    kernel: bool  # both times from the kernel; else both read by us around the syscalls


async def timed_udp_exchange(
    address: Address, payload: bytes, accept: Callable[[bytes], bool], *,
    foreign: Callable[[tuple[Any, ...]], None] | None = None, kernel_timestamps: bool = True,
    max_size: int = 65535,
) -> TimedDatagram:
    """`udp_exchange`, with the times the request left and the reply arrived.

    Where the kernel tells them (Linux's SO_TIMESTAMPING), both are its software timestamps,
    taken as the datagram passes the network stack: the time the agent's event loop, the
    interpreter and the syscalls take (tens of microseconds, more on a busy loop) stays out
    of them. Otherwise, or with `kernel_timestamps=False`, both are time.time_ns() read just
    before the send and just after the receive. Never one of each: a delay on one side only
    would not cancel out of an NTP offset, whose error is half the difference of the two.
    `foreign(source)`, if given, hears of each datagram from another address or port (the
    caller's `accept` sees only the server's). Runs until cancelled; the socket is always
    closed.
    """
    loop = asyncio.get_running_loop()
    host, port = _source_key(address)  # unconnected, as in udp_exchange, for the same reasons
    sock = socket.socket(address.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        kernel = kernel_timestamps and _enable_timestamping(sock)
        user_sent = await _sendto(loop, sock, payload, address.sockaddr)
        kernel_sent = None
        ignored = 0
        while True:
            # Wait first: no reply can be in yet, and going to sleep at once leaves the CPU to
            # a server on this host (a server preempted between its transmit timestamp and
            # its send adds that time to the offset; on loopback, this saved about 0.5 µs).
            await _ready(loop, sock.fileno(), write=False)
            if kernel:  # the transmit timestamp waits in the error queue (POLLERR): empty it
                kernel_sent = _drain_error_queue(sock) or kernel_sent
            for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
                try:
                    data, ancillary, _, source = sock.recvmsg(max_size, _ANCILLARY_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                user_received = time.time_ns()
                if source[1] != port or source[0] != host:
                    ignored += 1
                    if foreign is not None:
                        foreign(source)
                    continue
                if not accept(data):
                    ignored += 1
                    continue
                kernel_received = _timestamp(ancillary) if kernel else None
                if kernel_sent is not None and kernel_received is not None:
                    return TimedDatagram(data, ignored, kernel_sent, kernel_received, True)
                return TimedDatagram(data, ignored, user_sent, user_received, False)
    finally:
        sock.close()


def _enable_timestamping(sock: socket.socket) -> bool:
    """Ask for kernel timestamps; False where the platform has no SO_TIMESTAMPING."""
    if sys.platform != "linux":
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _TIMESTAMPING_FLAGS)
        return bool(sock.getsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING) == _TIMESTAMPING_FLAGS)
    except OSError:
        return False


def _drain_error_queue(sock: socket.socket) -> int | None:
    """Read the socket's error queue empty; the last transmit timestamp in it, if any."""
    stamp = None
    for _ in range(_MAX_ERROR_QUEUE):
        try:
            _, ancillary, _, _ = sock.recvmsg(1, _ANCILLARY_SIZE, socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # nothing we can read it with: the user-space times will do
            break
        stamp = _timestamp(ancillary) or stamp
    return stamp


def _timestamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The software timestamp of an SCM_TIMESTAMPING message, in ns; None if there is none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPING and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            if seconds or nanoseconds:
                return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


async def stream_exchange(
    address: Address,
    payload: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timings: dict[str, float] | None = None,
) -> bytes:
    """One DNS message over TCP (RFC 1035 §4.2.2, RFC 7766), or over TLS (RFC 7858).

    Connects, with `ssl_context` does the TLS handshake (`server_hostname` for SNI and the
    certificate check; by default the address itself, which then must be in the certificate),
    sends the 2-byte length and `payload`, and returns the reply: exactly as many bytes as its
    2-byte length says. `timings`, if given, gets "connect" and with TLS "tls", in seconds.
    A peer that closes early raises ConnectionResetError. Runs until cancelled; the socket is
    always closed.
    """
    if len(payload) > 0xFFFF:
        raise ValueError(f"a DNS message over a stream is at most 65535 bytes, not {len(payload)}")
    # RFC 7766 §8: the length and the message in one write, so that they leave in one segment.
    message = len(payload).to_bytes(2, "big") + payload
    if ssl_context is None:  # plain TCP: the lean path, no transport or stream objects
        started = time.perf_counter()
        sock = await connect_tcp(address)
        try:
            if timings is not None:
                timings["connect"] = time.perf_counter() - started
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, message)
            return await _read_frame(lambda size: loop.sock_recv(sock, size))
        finally:
            sock.close()
    async with open_stream(address, ssl_context=ssl_context, server_hostname=server_hostname,
                           timings=timings) as stream:
        await stream.write(message)
        return await _read_frame(stream.read)


class Stream:
    """A connected TCP socket, plain or TLS, read and written on the event loop directly.

    Leaner than asyncio's streams: no transport or protocol objects, no 256 KiB read buffer
    per TLS connection (a third of the CPU of a check that wants one handshake), and closing
    is closing — no close_notify owed, no wait for the peer's.
    """

    __slots__ = ("_buffer", "_loop", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock  # non-blocking; an ssl.SSLSocket once TLS is on
        self._loop = asyncio.get_running_loop()
        self._buffer = b""  # read but not yet consumed (readline reads ahead)

    @property
    def tls(self) -> ssl.SSLSocket | None:
        return self.sock if isinstance(self.sock, ssl.SSLSocket) else None

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        if self._buffer:
            # Plaintext that arrived before the handshake and would be taken as coming over
            # TLS: the STARTTLS command-injection attack (RFC 3207 §6, CVE-2011-0411).
            raise ssl.SSLError("the server sent data before the TLS handshake began")
        self.sock = await tls_handshake(self.sock, context, server_hostname)

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end of the stream."""
        if self._buffer:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
            return data
        return await self._recv(size)

    async def readline(self, limit: int = 65536) -> bytes:
        """One line with its b"\n", or what is left at the end of the stream; a line longer
        than `limit` raises ValueError."""
        while True:
            end = self._buffer.find(b"\n") + 1
            if end:
                line, self._buffer = self._buffer[:end], self._buffer[end:]
                return line
            if len(self._buffer) > limit:
                raise ValueError(f"a line longer than {limit} bytes")
            chunk = await self._recv(_READ_SIZE)
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk

    async def _recv(self, size: int) -> bytes:
        tls = self.tls
        if tls is None:
            return await self._loop.sock_recv(self.sock, size)
        while True:
            try:
                return tls.recv(size)
            except ssl.SSLWantReadError:
                await _ready(self._loop, tls.fileno(), write=False)
            except ssl.SSLWantWriteError:  # a renegotiation or key update
                await _ready(self._loop, tls.fileno(), write=True)

    async def write(self, data: bytes) -> None:
        """All of `data`."""
        tls = self.tls
        if tls is None:
            await self._loop.sock_sendall(self.sock, data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[tls.send(view):]
            except ssl.SSLWantWriteError:
                await _ready(self._loop, tls.fileno(), write=True)
            except ssl.SSLWantReadError:
                await _ready(self._loop, tls.fileno(), write=False)

    def close(self) -> None:
        self.sock.close()


_READ_SIZE = 65536


@contextlib.asynccontextmanager
async def open_stream(
    address: Address,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timings: dict[str, float] | None = None,
) -> AsyncIterator[Stream]:
    """A connected stream, through TLS with `ssl_context`, closed on exit.

    `server_hostname` is for SNI and the certificate check (by default the address itself,
    which then must be in the certificate); `timings`, if given, gets "connect" and with TLS
    "tls", in seconds.
    """
    started = time.perf_counter()
    stream = Stream(await connect_tcp(address))
    try:
        connected = time.perf_counter()
        if timings is not None:
            timings["connect"] = connected - started
        if ssl_context is not None:
            await stream.start_tls(ssl_context,
                                   server_hostname or address.host.partition("%")[0])
            if timings is not None:
                timings["tls"] = time.perf_counter() - connected
        yield stream
    finally:
        stream.close()


async def _read_frame(read: Callable[[int], Awaitable[bytes]]) -> bytes:
    """One length-prefixed message (RFC 1035 §4.2.2) from `read` (b"" at end of stream)."""
    received = bytearray()
    total = 2
    while len(received) < total:
        chunk = await read(total - len(received))
        if not chunk:
            raise ConnectionResetError(f"connection closed after {len(received)} of {total} bytes")
        received += chunk
        if total == 2 and len(received) == 2:
            total += int.from_bytes(received, "big")
    return bytes(received[2:])


def tls_client_context(
    ca_file: str | None = None, insecure_skip_verify: bool = False
) -> ssl.SSLContext:
    """A TLS client context: the system's roots, or only `ca_file`'s; TLS 1.2 at least.

    Build it once per configuration, not per run: loading the system's roots takes
    milliseconds.
    """
    if insecure_skip_verify:
        # No roots loaded at all: nothing would be verified against them.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_file)
    # RFC 8310 §9 and BCP 195 (RFC 9325 §3.1.1): nothing older than TLS 1.2.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
