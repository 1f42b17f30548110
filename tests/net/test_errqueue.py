"""The error queue on loopback: datagrams to a closed port come back as ICMP port
unreachable errors, with the offender, the original's payload and destination, the kernel's
arrival time; reading is bounded and never blocks."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator

import pytest

from exporter.codecs.errqueue import ORIGIN_ICMP, ORIGIN_ICMP6
from exporter.net.errqueue import QueuedError, enable_errors, read_errors, send


def closed_port(family: int, host: str) -> int:
    """A UDP port on `host` nobody listens on (bound, then released)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sock4() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        enable_errors(sock, socket.AF_INET)
        yield sock


def wait_errors(sock: socket.socket, want: int, **kwargs: int) -> list[QueuedError]:
    """Read until `want` errors came (bounded: 200 tries of 10 ms)."""
    got: list[QueuedError] = []
    for _ in range(200):
        batch, skipped = read_errors(sock, **kwargs)
        assert skipped == 0
        got += batch
        if len(got) >= want:
            return got
        time.sleep(0.01)
    return got


def test_a_closed_ipv4_port_is_an_icmp_port_unreachable(sock4: socket.socket) -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    before = time.time_ns()
    sock4.sendto(b"probe 1", ("127.0.0.1", port))
    (got,) = wait_errors(sock4, 1)
    assert got.error.errno == errno.ECONNREFUSED
    assert (got.error.origin, got.error.type, got.error.code) == (ORIGIN_ICMP, 3, 3)
    assert got.error.offender == (socket.AF_INET, "127.0.0.1")
    assert got.payload == b"probe 1" and not got.truncated
    assert got.destination == ("127.0.0.1", port)
    assert got.kernel and before <= got.received <= time.time_ns()
    assert read_errors(sock4) == ([], 0)  # read once only


def test_a_closed_ipv6_port_is_an_icmpv6_port_unreachable() -> None:
    port = closed_port(socket.AF_INET6, "::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        enable_errors(sock, socket.AF_INET6)
        sock.sendto(b"six", ("::1", port))
        (got,) = wait_errors(sock, 1)
    assert (got.error.origin, got.error.type, got.error.code) == (ORIGIN_ICMP6, 1, 4)
    assert got.error.errno == errno.ECONNREFUSED
    assert got.error.offender == (socket.AF_INET6, "::1")
    assert (got.payload, got.destination) == (b"six", ("::1", port))


def test_each_datagram_has_its_own_entry_with_its_destination_port(sock4: socket.socket) -> None:
    ports = [closed_port(socket.AF_INET, "127.0.0.1") for _ in range(3)]
    for i, port in enumerate(ports):
        send(sock4, f"n{i}".encode(), ("127.0.0.1", port))
    got = wait_errors(sock4, 3)
    assert sorted((g.destination[1], g.payload) for g in got) == sorted(
        (port, f"n{i}".encode()) for i, port in enumerate(ports))


def test_reading_is_bounded_and_the_rest_stays_queued(sock4: socket.socket) -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    for i in range(5):
        send(sock4, bytes([i]), ("127.0.0.1", port))
    time.sleep(0.05)
    first, _ = read_errors(sock4, limit=2)
    assert [g.payload for g in first] == [b"\0", b"\1"]
    rest = wait_errors(sock4, 3)
    assert [g.payload for g in rest] == [b"\2", b"\3", b"\4"]


def test_a_payload_longer_than_the_buffer_is_cut_and_said_so(sock4: socket.socket) -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    sock4.sendto(b"x" * 100, ("127.0.0.1", port))
    (got,) = wait_errors(sock4, 1, max_payload=10)
    assert (got.payload, got.truncated) == (b"x" * 10, True)


def test_an_empty_queue_returns_at_once(sock4: socket.socket) -> None:
    assert read_errors(sock4) == ([], 0)


def test_without_timestamps_the_time_is_ours() -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        enable_errors(sock, socket.AF_INET, timestamps=False)
        sock.sendto(b"t", ("127.0.0.1", port))
        (got,) = wait_errors(sock, 1)
    assert not got.kernel and got.received > 0


def test_an_ipv4_error_on_a_dual_stack_socket() -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        enable_errors(sock, socket.AF_INET6)
        sock.sendto(b"m", ("::ffff:127.0.0.1", port))
        (got,) = wait_errors(sock, 1)
    assert (got.error.origin, got.error.type, got.error.code) == (ORIGIN_ICMP, 3, 3)
    assert got.error.offender == (socket.AF_INET, "127.0.0.1")


def test_without_recverr_nothing_is_queued() -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(b"n", ("127.0.0.1", port))
        time.sleep(0.05)
        assert read_errors(sock) == ([], 0)


def test_a_pending_error_does_not_stop_the_next_send(sock4: socket.socket) -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    sock4.sendto(b"a", ("127.0.0.1", port))
    time.sleep(0.02)
    with pytest.raises(ConnectionRefusedError):  # what the kernel does to a plain sendto
        sock4.sendto(b"b", ("127.0.0.1", port))
    send(sock4, b"c", ("127.0.0.1", port))
    send(sock4, b"d", ("127.0.0.1", port))  # the error of "c" is pending: tried again
    assert [g.payload for g in wait_errors(sock4, 3)] == [b"a", b"c", b"d"]


def test_an_error_that_stays_is_raised() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        enable_errors(sock, socket.AF_INET)
        with pytest.raises(OSError) as caught:
            send(sock, b"x", ("255.255.255.255", 9))  # broadcast without SO_BROADCAST
    assert caught.value.errno == errno.EACCES
