"""The DNS transports of exporter/net/ (udp, stream) against the fakes of
tests/support/fakedns.py."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest

from exporter.errors import Reason
from exporter.net.resolve import Address
from exporter.net.stream import stream_exchange
from exporter.net.tls import tls_client_context
from exporter.net.udp import _recvfrom, _sendto, udp_exchange
from exporter.runner import classify
from tests.support.certs import CertFiles, make_cert, server_context
from tests.support.fakedns import DEFAULT_ANSWER, SPOOFED_ANSWER, FakeDns, FakeDot
from tests.support.servers import closed_port

RECORDS = {"host.test": [("A", "192.0.2.1", 60), ("A", "192.0.2.2", 30), ("TXT", '"hi"', 5)]}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def address(port: int) -> Address:
    return Address(socket.AF_INET, ("127.0.0.1", port))


def query(name: str = "host.test", rdtype: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


def reply_to(sent: dns.message.Message) -> Callable[[bytes], bool]:
    """The reply predicate a DNS check gives udp_exchange: parses, same ID, QR set."""

    def accept(wire: bytes) -> bool:
        try:
            reply = dns.message.from_wire(wire)
        except Exception:
            return False
        return reply.id == sent.id and bool(reply.flags & dns.flags.QR)

    return accept


def answers(wire: bytes) -> list[str]:
    return sorted(
        rdata.to_text() for rrset in dns.message.from_wire(wire).answer for rdata in rrset
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("tls"), ips=("127.0.0.1",))


# --- udp_exchange ----------------------------------------------------------------------------


def test_udp_answer() -> None:
    q = query()
    with FakeDns("answer", RECORDS) as fake:
        reply, ignored = run(udp_exchange(address(fake.port), q.to_wire(), reply_to(q)))
        assert fake.queries == [q.to_wire()]
    assert ignored == 0
    message = dns.message.from_wire(reply)
    assert message.rcode() == dns.rcode.NOERROR
    assert answers(reply) == ["192.0.2.1", "192.0.2.2"]
    assert message.answer[0].ttl == 30


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "expected"),
    [
        ("host.test", "TXT", dns.rcode.NOERROR, ['"hi"']),
        ("host.test", "AAAA", dns.rcode.NOERROR, []),
        ("missing.test", "A", dns.rcode.NXDOMAIN, []),
    ],
)
def test_udp_answer_behaviour_follows_records(
    name: str, rdtype: str, rcode: dns.rcode.Rcode, expected: list[str]
) -> None:
    q = query(name, rdtype)
    with FakeDns("answer", RECORDS) as fake:
        reply, _ = run(udp_exchange(address(fake.port), q.to_wire(), reply_to(q)))
    assert dns.message.from_wire(reply).rcode() == rcode
    assert answers(reply) == expected


def test_udp_servfail_is_a_reply_like_any_other() -> None:
    q = query()
    with FakeDns("servfail") as fake:
        reply, ignored = run(udp_exchange(address(fake.port), q.to_wire(), reply_to(q)))
    assert (dns.message.from_wire(reply).rcode(), ignored) == (dns.rcode.SERVFAIL, 0)


def test_udp_ignores_wrong_id_and_spoofed_source() -> None:
    q = query()
    with FakeDns("wrong_id_first") as fake:
        reply, ignored = run(udp_exchange(address(fake.port), q.to_wire(), reply_to(q)))
        assert (fake.sent, fake.decoys) == (3, 2)
    # The spoofed datagram had the right ID and QR: only its source port gave it away.
    assert answers(reply) == [DEFAULT_ANSWER] != [SPOOFED_ANSWER]
    assert ignored >= 2
    assert ignored == fake.decoys


def test_udp_garbage_never_accepted_and_deadline_ends_the_wait() -> None:
    q = query()
    with FakeDns("garbage") as fake:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            run(asyncio.wait_for(udp_exchange(address(fake.port), q.to_wire(), reply_to(q)), 0.3))
        elapsed = time.monotonic() - started
        assert len(fake.queries) == 1
        assert fake.decoys == 3
    assert 0.3 <= elapsed < 0.3 + 0.2


def test_udp_closed_port_is_a_timeout_not_refused() -> None:
    # Unconnected socket: Linux does not report the ICMP port unreachable to it.
    q = query()
    with pytest.raises(asyncio.TimeoutError):
        run(asyncio.wait_for(udp_exchange(address(closed_port()), q.to_wire(), reply_to(q)), 0.2))


@pytest.mark.parametrize("spelling", ["::ffff:127.0.0.1", "0:0:0:0:0:ffff:7f00:1"])
def test_udp_ipv6_source_compared_canonically(spelling: str) -> None:
    # An AF_INET6 socket reaching the 127.0.0.1 server through a v4-mapped address: the
    # sockaddr has four fields and the configured spelling need not be inet_ntop's.
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    q = query()
    with FakeDns("answer", RECORDS) as fake:
        target = Address(socket.AF_INET6, (spelling, fake.port, 0, 0))
        try:
            reply, ignored = run(
                asyncio.wait_for(udp_exchange(target, q.to_wire(), reply_to(q)), 2)
            )
        except OSError as exc:  # IPV6_V6ONLY by default, or IPv6 off
            pytest.skip(f"v4-mapped addresses unusable here: {exc}")
    assert (answers(reply), ignored) == (["192.0.2.1", "192.0.2.2"], 0)


def test_udp_max_size_cuts_the_datagram() -> None:
    q = query()
    with FakeDns("answer", RECORDS) as fake:
        reply, _ = run(
            udp_exchange(address(fake.port), q.to_wire(), lambda wire: True, max_size=12)
        )
    assert len(reply) == 12


def test_udp_socket_closed_after_cancellation() -> None:
    q = query()

    async def many() -> tuple[int, int]:
        before = open_fds()
        for _ in range(20):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    udp_exchange(address(fake.port), q.to_wire(), reply_to(q)), 0.01
                )
        return before, open_fds()

    with FakeDns("silent") as fake:
        before, after = run(many())
        assert len(fake.queries) == 20
    assert after == before


STAMPED_SOCKETS = """
import socket, sys
from exporter.net import udp
first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
assert udp._enable_timestamping(first)
first.close()  # the exchange that asked first is over; its successors still get stamps
stamped = 0
for _ in range(20):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert udp._enable_timestamping(sock)
        sock.sendto(b"x", sock.getsockname())
        _, ancillary, _, _ = sock.recvmsg(1, 512)
        stamped += udp._timestamp(ancillary) is not None
print(stamped)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPING is Linux's")
def test_receive_timestamps_stay_on_for_sockets_opened_one_after_another() -> None:
    # Each fresh process starts with no socket asking for receive stamps; without the one
    # the module keeps open, a whole process's sockets could go without (1 of 40, measured).
    procs = [subprocess.Popen([sys.executable, "-c", STAMPED_SOCKETS], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    counts = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert counts == ["20"] * 6


def test_python310_fallbacks() -> None:
    # _sendto / _recvfrom stand in for loop.sock_sendto / sock_recvfrom on Python 3.10.
    async def exchange() -> tuple[bytes, Any]:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await _sendto(loop, sock, q.to_wire(), ("127.0.0.1", fake.port))
            data, source = await _recvfrom(loop, sock, 65535)
            # The waits left no registration behind on the fd.
            assert not loop.remove_reader(sock.fileno())
            assert not loop.remove_writer(sock.fileno())
            return data, source

    q = query()
    with FakeDns("answer", RECORDS) as fake:
        data, source = run(exchange())
        assert source == ("127.0.0.1", fake.port)
    assert answers(data) == ["192.0.2.1", "192.0.2.2"]


# --- stream_exchange -------------------------------------------------------------------------


def test_tcp_answer() -> None:
    q = query()
    timings: dict[str, float] = {}
    with FakeDns("answer", RECORDS) as fake:
        reply = run(stream_exchange(address(fake.port), q.to_wire(), timings=timings))
        assert fake.tcp_queries == [q.to_wire()]
    assert reply_to(q)(reply)
    assert answers(reply) == ["192.0.2.1", "192.0.2.2"]
    assert set(timings) == {"connect"}
    assert 0 < timings["connect"] < 1


def test_tcp_long_reply_read_whole() -> None:
    # Longer than one read of most kernels' first segment, shorter than the 65535 limit.
    records = {"big.test": [("TXT", f'"{i:04d}{"x" * 200}"', 60) for i in range(200)]}
    q = query("big.test", "TXT")
    with FakeDns("answer", records) as fake:
        reply = run(stream_exchange(address(fake.port), q.to_wire()))
    assert len(reply) > 40000
    assert len(answers(reply)) == 200


def test_tls_answer_with_timings(certs: CertFiles) -> None:
    q = query()
    timings: dict[str, float] = {}
    context = tls_client_context(ca_file=str(certs.ca))
    with FakeDot(server_context(certs), "answer", RECORDS) as fake:
        reply = run(
            stream_exchange(
                address(fake.port),
                q.to_wire(),
                ssl_context=context,
                server_hostname="dns.test",
                timings=timings,
            )
        )
        assert fake.tcp_queries == [q.to_wire()]
    assert answers(reply) == ["192.0.2.1", "192.0.2.2"]
    assert set(timings) == {"connect", "tls"}
    assert all(0 < seconds < 2 for seconds in timings.values())


def test_tls_hostname_defaults_to_the_address(certs: CertFiles) -> None:
    q = query()
    context = tls_client_context(ca_file=str(certs.ca))
    with FakeDot(server_context(certs), "answer", RECORDS) as fake:
        reply = run(stream_exchange(address(fake.port), q.to_wire(), ssl_context=context))
    assert answers(reply) == ["192.0.2.1", "192.0.2.2"]


@pytest.mark.parametrize(
    ("hostname", "ca"),
    [("other.test", True), ("dns.test", False)],
    ids=["wrong-hostname", "system-roots"],
)
def test_tls_verification_failures(certs: CertFiles, hostname: str, ca: bool) -> None:
    q = query()
    context = tls_client_context(ca_file=str(certs.ca) if ca else None)
    with (
        FakeDot(server_context(certs), "answer", RECORDS) as fake,
        pytest.raises(ssl.SSLCertVerificationError) as caught,
    ):
        run(
            stream_exchange(
                address(fake.port), q.to_wire(), ssl_context=context, server_hostname=hostname
            )
        )
    assert classify(caught.value)[0] is Reason.TLS_ERROR


def test_tls_insecure_skip_verify(certs: CertFiles) -> None:
    q = query()
    context = tls_client_context(insecure_skip_verify=True)
    with FakeDot(server_context(certs), "answer", RECORDS) as fake:
        reply = run(
            stream_exchange(
                address(fake.port), q.to_wire(), ssl_context=context, server_hostname="other.test"
            )
        )
    assert answers(reply) == ["192.0.2.1", "192.0.2.2"]


def test_tls_client_context_defaults() -> None:
    context = tls_client_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    insecure = tls_client_context(insecure_skip_verify=True)
    assert (insecure.verify_mode, insecure.check_hostname) == (ssl.CERT_NONE, False)
    assert insecure.minimum_version == ssl.TLSVersion.TLSv1_2


def test_closed_after_one_byte_raises_connection_reset() -> None:
    q = query()
    with (
        FakeDns("close_early", RECORDS, cut=1) as fake,
        pytest.raises(ConnectionResetError) as caught,
    ):
        run(stream_exchange(address(fake.port), q.to_wire()))
    assert str(caught.value) == "connection closed after 1 of 2 bytes"
    assert classify(caught.value) == (Reason.NETWORK_ERROR, "connection closed after 1 of 2 bytes")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("cut", [0, 10])
def test_closed_early_says_how_far_it_got(certs: CertFiles, tls: bool, cut: int) -> None:
    q = query()
    fake = (
        FakeDot(server_context(certs), "close_early", RECORDS, cut=cut)
        if tls
        else FakeDns("close_early", RECORDS, cut=cut)
    )
    context = tls_client_context(ca_file=str(certs.ca)) if tls else None
    with fake, pytest.raises(ConnectionResetError) as caught:
        run(
            stream_exchange(
                address(fake.port), q.to_wire(), ssl_context=context, server_hostname="dns.test"
            )
        )
    got, _, total = str(caught.value).removeprefix("connection closed after ").partition(" of ")
    assert int(got) == cut
    # Before the length prefix is in, 2 bytes are expected; after it, the whole framed reply.
    with FakeDns("answer", RECORDS) as whole:
        framed = 2 + len(run(stream_exchange(address(whole.port), q.to_wire())))
    assert total == ("2 bytes" if cut < 2 else f"{framed} bytes")


def test_refused() -> None:
    before = open_fds()
    with pytest.raises(ConnectionRefusedError):
        run(stream_exchange(address(closed_port()), query().to_wire()))
    assert open_fds() == before


def test_payload_too_long_for_a_stream() -> None:
    with pytest.raises(ValueError, match="at most 65535"):
        run(stream_exchange(address(closed_port()), b"\0" * 65536))


def test_truncated_udp_then_tcp_end_to_end() -> None:
    q = query("anything.test")
    with FakeDns("truncate") as fake:
        target = address(fake.port)

        async def resolve() -> tuple[bytes, bytes]:
            udp_reply, _ = await udp_exchange(target, q.to_wire(), reply_to(q))
            return udp_reply, await stream_exchange(target, q.to_wire())

        udp_reply, tcp_reply = run(resolve())
        assert fake.queries == [q.to_wire(), q.to_wire()]
        assert fake.tcp_queries == [q.to_wire()]
    truncated = dns.message.from_wire(udp_reply)
    assert truncated.flags & dns.flags.TC
    assert truncated.answer == []
    full = dns.message.from_wire(tcp_reply)
    assert not full.flags & dns.flags.TC
    assert answers(tcp_reply) == [DEFAULT_ANSWER]


@pytest.mark.parametrize("case", ["tcp-read", "tls-handshake", "tls-read"])
def test_stream_socket_closed_after_cancellation(certs: CertFiles, case: str) -> None:
    # A silent plain server stalls a TLS handshake; a silent FakeDot stalls after it.
    q = query()
    context = tls_client_context(ca_file=str(certs.ca)) if case.startswith("tls") else None
    before = open_fds()
    fake = FakeDot(server_context(certs), "silent") if case == "tls-read" else FakeDns("silent")
    with fake:

        async def cancelled() -> None:
            for _ in range(5):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        stream_exchange(
                            address(fake.port),
                            q.to_wire(),
                            ssl_context=context,
                            server_hostname="dns.test",
                        ),
                        0.2,
                    )

        run(cancelled())
        if case != "tls-handshake":
            assert len(fake.tcp_queries) == 5
    assert open_fds() == before


def test_transport_errors_map_to_closed_reasons() -> None:
    # Every failure of the transports is a reason of the closed set, never internal_error.
    errors: list[BaseException] = [
        ConnectionResetError("connection closed after 0 of 2 bytes"),
        ConnectionRefusedError(),
        ssl.SSLCertVerificationError("certificate verify failed"),
        TimeoutError(),
    ]
    assert [classify(exc)[0] for exc in errors] == [
        Reason.NETWORK_ERROR,
        Reason.REFUSED,
        Reason.TLS_ERROR,
        Reason.TIMEOUT,
    ]
