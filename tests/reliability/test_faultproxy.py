"""The fault proxy itself: each fault does what it says, switched at run time, both protocols.

Delays are asserted as lower bounds only (the proxy never delivers early; how late a loaded
machine delivers is not this test's business).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy, Faults
from tests.support.servers import EchoServer


@pytest.fixture
def udp_echo() -> Iterator[EchoServer]:
    with EchoServer(udp=True) as server:
        yield server


def _client(proxy: FaultProxy) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    sock.connect(proxy.sockaddr)
    return sock


def _replies(sock: socket.socket, limit: int = 10) -> list[bytes]:
    got = []
    for _ in range(limit):
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            break
    return got


def test_udp_relays_replies_from_the_proxys_address(udp_echo: EchoServer) -> None:
    with FaultProxy("udp", udp_echo.sockaddr) as proxy, _client(proxy) as sock:
        sock.send(b"ping")
        data, source = sock.recvfrom(100)
        assert data == b"ping"
        assert source == ("127.0.0.1", proxy.port)
        assert proxy.stats["relayed_up"] == proxy.stats["relayed_down"] == 1


def test_udp_drop_and_duplicate_switched_at_run_time(udp_echo: EchoServer) -> None:
    with FaultProxy("udp", udp_echo.sockaddr) as proxy, _client(proxy) as sock:
        proxy.faults = Faults(drop=1.0)
        sock.send(b"lost")
        assert _replies(sock) == []
        assert udp_echo.received == 0
        assert proxy.stats["dropped_up"] == 1
        proxy.faults = Faults(duplicate=1.0)
        sock.send(b"twice")
        # Doubled on the way up (two echoes), each doubled on the way down.
        assert _replies(sock) == [b"twice"] * 4
        proxy.faults = Faults()
        sock.send(b"once")
        assert _replies(sock) == [b"once"]


def test_udp_loss_rate_follows_the_setting(udp_echo: EchoServer) -> None:
    with FaultProxy("udp", udp_echo.sockaddr, Faults(drop=0.3)) as proxy:
        with _client(proxy) as sock:
            for i in range(200):
                sock.send(b"%d" % i)
            answered = len(set(_replies(sock, 200)))
        # Each exchange survives with 0.7 * 0.7 = 0.49; the generator is seeded, but allow
        # any seed: 200 tries stay within ±0.15 of it with overwhelming probability.
        assert 0.34 < answered / 200 < 0.64
        assert proxy.stats["dropped_up"] + proxy.stats["dropped_down"] > 0


def test_udp_delay_each_direction(udp_echo: EchoServer) -> None:
    with FaultProxy("udp", udp_echo.sockaddr) as proxy, _client(proxy) as sock:
        sock.settimeout(2)
        for faults in (Faults(delay_up=0.15), Faults(delay_down=0.15)):
            proxy.faults = faults
            started = time.monotonic()
            sock.send(b"slow")
            assert sock.recv(100) == b"slow"
            assert time.monotonic() - started >= 0.15


def test_tcp_relays_both_ways_and_passes_eof_on() -> None:
    with EchoServer(tcp=True, greeting=b"hello\n") as server, \
            FaultProxy("tcp", server.sockaddr) as proxy, \
            socket.create_connection(proxy.sockaddr, timeout=2) as sock:
        assert sock.recv(100) == b"hello\n"
        sock.sendall(b"x" * 100_000)
        got = b""
        while len(got) < 100_000:
            got += sock.recv(65536)
        assert got == b"x" * 100_000
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # the server's FIN came through


def test_tcp_delay_is_per_direction() -> None:
    with EchoServer(tcp=True) as server, \
            FaultProxy("tcp", server.sockaddr, Faults(delay_up=0.2)) as proxy, \
            socket.create_connection(proxy.sockaddr, timeout=2) as sock:
        started = time.monotonic()
        sock.sendall(b"a")
        assert sock.recv(10) == b"a"
        assert time.monotonic() - started >= 0.2


def test_tcp_reset_mid_transfer_and_at_accept() -> None:
    with EchoServer(tcp=True, greeting=b"y" * 50_000) as server, \
            FaultProxy("tcp", server.sockaddr, Faults(reset_after=1000)) as proxy:
        got = b""
        # The server writes at once, so the RST can beat connect() back: still a reset.
        with pytest.raises(ConnectionResetError), \
                socket.create_connection(proxy.sockaddr, timeout=2) as sock:
            for _ in range(100):
                data = sock.recv(65536)
                assert data, "closed with a FIN, not reset"
                got += data
        assert len(got) <= 1000
        proxy.faults = Faults(reset_after=0)
        # The RST may come before connect() returns or after: either is a reset.
        with pytest.raises(ConnectionResetError), \
                socket.create_connection(proxy.sockaddr, timeout=2) as sock:
            sock.recv(10)
        assert proxy.stats["resets"] == 2


def test_tcp_dead_server_resets_the_client() -> None:
    with EchoServer(tcp=True) as server:
        address = server.sockaddr
    with FaultProxy("tcp", address) as proxy, pytest.raises(ConnectionResetError), \
            socket.create_connection(proxy.sockaddr, timeout=2) as sock:
        sock.recv(10)
