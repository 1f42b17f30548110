"""The test helpers themselves: a real dnsmasq, a network namespace whose resolver is ours, the
certificate factory, the threaded server base of the fakes, and running a check and reading
its samples."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import tests.support.dnsmasq
import tests.support.server
from exporter.codecs.x509 import validity
from exporter.net.tls import tls_client_context
from tests.support.certs import (
    LEAF_DAYS,
    CertFiles,
    make_cert,
    make_client_cert,
    make_expired_cert,
    server_context,
)
from tests.support.checks import counters, gauges, make_check, run_check, sample
from tests.support.dnsmasq import Dnsmasq
from tests.support.fakedns import FakeDns
from tests.support.netns import netns_available, run_in_netns
from tests.support.server import POLL, ThreadedServer
from tests.support.servers import AcceptServer, EchoServer, LineServer

RECORDS = {
    "a": {"host.test": ["127.0.0.5"]},
    "aaaa": {"host.test": ["::5"]},
    "mx": {"test": [("mail.test", 10)]},
    "txt": {"host.test": ["v=spf1 -all"]},
    "cname": {"www.test": "host.test"},
}


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq(**RECORDS) as server:  # type: ignore[arg-type]
        yield server


def query(port: int, name: str, rdtype: str, tcp: bool) -> dns.message.Message:
    wire = dns.message.make_query(name, rdtype).to_wire()
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = sock.recv(65536)
                assert chunk, "connection closed early"
                data += chunk
            return dns.message.from_wire(data[2:])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(wire, ("127.0.0.1", port))
        return dns.message.from_wire(sock.recv(65536))


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("name", "rdtype", "rcode", "answer"), [
    ("host.test", "A", "NOERROR", ["host.test. 0 IN A 127.0.0.5"]),
    ("host.test", "AAAA", "NOERROR", ["host.test. 0 IN AAAA ::5"]),
    ("test", "MX", "NOERROR", ["test. 0 IN MX 10 mail.test."]),
    ("host.test", "TXT", "NOERROR", ['host.test. 0 IN TXT "v=spf1 -all"']),
    ("www.test", "A", "NOERROR", ["www.test. 0 IN CNAME host.test.",
                                  "host.test. 0 IN A 127.0.0.5"]),
    ("nope.test", "A", "NXDOMAIN", []),
    ("sub.host.test", "A", "NXDOMAIN", []),  # records are exact, not wildcards
    ("example.com", "A", "REFUSED", []),  # nothing is forwarded
])
def test_dnsmasq_answers(dnsmasq: Dnsmasq, name: str, rdtype: str, rcode: str,
                         answer: list[str], tcp: bool) -> None:
    response = query(dnsmasq.port, name, rdtype, tcp)
    assert dns.rcode.to_text(response.rcode()) == rcode
    assert [str(rrset) for rrset in response.answer] == answer


def test_dnsmasq_interface_and_stop() -> None:
    server = Dnsmasq(a={"host.test": ["127.0.0.5"]})
    try:
        assert server.proc is not None
        pid = server.proc.pid
        assert server.address == f"127.0.0.1:{server.port}"
        assert server.port > 1024 and Path(f"/proc/{pid}").exists()
    finally:
        server.stop()
    # The log is complete once stop() has returned (a reader thread collects it).
    assert any("using only locally-known addresses for test" in line for line in server.log)
    assert server.proc.returncode is not None
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_dnsmasq_retries_a_busy_port(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with busy:
        busy.bind(("127.0.0.1", 0))
        real_free_port = tests.support.dnsmasq.free_port
        handed_out: list[int] = []

        def busy_first() -> int:
            # The busy port first, then real free ones: a second try may race another process too.
            handed_out.append(real_free_port() if handed_out else busy.getsockname()[1])
            return handed_out[-1]

        monkeypatch.setattr(tests.support.dnsmasq, "free_port", busy_first)
        with Dnsmasq(a={"host.test": ["127.0.0.5"]}) as server:
            assert server.port != busy.getsockname()[1]
            assert handed_out[0] == busy.getsockname()[1] and len(handed_out) >= 2
            assert query(server.port, "host.test", "A", tcp=False).answer


def python_in_netns(code: str, **kwargs: object) -> str:
    result = run_in_netns([sys.executable, "-c", code], **kwargs)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_netns_is_available() -> None:
    assert netns_available()  # never skipped: CI runs as root


def test_netns_resolver_sees_dnsmasq() -> None:
    before = Path("/etc/resolv.conf").read_text()
    code = "import socket; print(socket.getaddrinfo('host.test', 80, socket.AF_INET)[0][4][0])"
    assert python_in_netns(code, dnsmasq_records={"a": {"host.test": ["127.0.0.5"]}}) == (
        "127.0.0.5")
    assert Path("/etc/resolv.conf").read_text() == before  # the bind mount stayed inside


def test_netns_hosts_file() -> None:
    code = ("import socket; print(sorted({a[4][0] for a in socket.getaddrinfo('db.test', 5432)}),"
            " socket.gethostbyname('localhost'))")
    assert python_in_netns(code, hosts={"db.test": ["127.0.0.9", "::9"]}) == (
        "['127.0.0.9', '::9'] 127.0.0.1")


def test_netns_unknown_name_is_eai_noname() -> None:
    code = ("import socket\n"
            "try: socket.getaddrinfo('nope.test', 80)\n"
            "except socket.gaierror as e: print(e.errno == socket.EAI_NONAME, e)")
    out = python_in_netns(code, dnsmasq_records=RECORDS)
    assert out.startswith("True"), out


def test_netns_is_isolated() -> None:
    code = ("import socket, sys\n"
            "print(socket.if_nameindex())\n"
            "try: socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\n"
            "except ConnectionRefusedError: print('refused')")
    with AcceptServer() as outside:
        result = run_in_netns([sys.executable, "-c", code, str(outside.port)])
        assert result.stdout.split("\n")[:2] == ["[(1, 'lo')]", "refused"], result.stderr
        assert outside.accepted == 0


def test_netns_passes_exit_code_and_env() -> None:
    result = run_in_netns(["sh", "-c", 'echo "$GREETING" >&2; exit 3'],
                          env={"GREETING": "hi", "PATH": os.environ["PATH"]})
    assert (result.returncode, result.stderr) == (3, "hi\n")


def test_netns_timeout_kills_everything() -> None:
    # The command prints the pids of the wrapper's children (itself and dnsmasq), then hangs.
    code = ("import os, time\n"
            "kids = [p for p in os.listdir('/proc') if p.isdigit() and\n"
            "        f'PPid:\\t{os.getppid()}\\n' in open(f'/proc/{p}/status').read()]\n"
            "print(os.getppid(), *kids, flush=True); time.sleep(60)")
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_in_netns([sys.executable, "-c", code], timeout=2)
    stdout = info.value.stdout
    pids = (stdout.decode() if isinstance(stdout, bytes) else stdout or "").split()
    assert len(pids) == 3, pids  # wrapper, dnsmasq, command
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


# --- the certificate factory ------------------------------------------------------------------


def handshake(files: CertFiles, client: ssl.SSLContext, server_name: str) -> str:
    """A TLS handshake on loopback with `files` as the server's certificate; its version."""
    with LineServer([], server_context(files), tls=True) as server, \
            socket.create_connection(server.sockaddr, timeout=5) as raw, \
            client.wrap_socket(raw, server_hostname=server_name) as tls:
        return str(tls.version())


def test_make_cert_files(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "a.test", ips=["127.0.0.1"])
    other = make_cert(tmp_path, "b.test")
    assert files.cert.exists() and files.key.exists() and files.ca.exists()
    assert files.ca != other.ca
    context = tls_client_context(ca_file=str(files.ca))
    assert context.cert_store_stats()["x509_ca"] == 1
    strict = ssl.create_default_context(cafile=str(files.ca))
    strict.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13 verifies by default
    assert handshake(files, strict, "a.test") == "TLSv1.3"
    assert handshake(files, strict, "127.0.0.1") == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(files, strict, "b.test")
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed"):
        handshake(files.self_signed(), ssl.create_default_context(), "a.test")


def test_validity_periods(tmp_path: Path) -> None:
    def period(path: Path) -> tuple[float, float]:
        got = validity(ssl.PEM_cert_to_DER_cert(path.read_text()))
        return got.not_before, got.not_after

    before, after = period(make_cert(tmp_path, "a.test").cert)
    assert before <= time.time() < after and after - before == LEAF_DAYS * 86400
    before, after = period(make_expired_cert(tmp_path, "a.test").cert)
    assert after < time.time() - 86400 + 60 and after - before == 4 * 86400
    ca_before, ca_after = period(make_expired_cert(tmp_path, "a.test").ca)
    assert ca_before < before and time.time() < ca_after  # the CA itself is valid


def test_client_certificates_are_for_client_auth(tmp_path: Path) -> None:
    files = make_client_cert(tmp_path / "clients", "prometheus")
    text = files.cert.read_bytes()
    certificate = x509.load_pem_x509_certificate(text)
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certificate.subject.rfc4514_string() == "CN=prometheus"
    assert (files.cert.name, files.key.name, files.ca.name) == ("client.pem", "client.key",
                                                                "ca.pem")


# --- the threaded server base -----------------------------------------------------------------


class Held(ThreadedServer):
    """Holds each connection open, reading, until its lifetime ends or the server closes."""

    name = "held"

    def __init__(self, lifetime: float) -> None:
        super().__init__(tcp=True)
        self.connection_lifetime = lifetime  # type: ignore[misc]
        self.start()

    def handle_connection(self, conn: socket.socket, deadline: float) -> None:
        conn.settimeout(POLL)
        while not self.stopping and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                if not conn.recv(1):
                    return

    def alive(self) -> int:
        return sum(thread.is_alive() for thread in self._connections)

    def ended(self) -> bool:
        """Whether every connection thread ended, given a moment each: a client sees the
        close before the thread that closed it has returned."""
        for thread in self._connections:
            thread.join(5)
        return self.alive() == 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_udp_and_tcp_share_one_port() -> None:
    with EchoServer(udp=True, tcp=True) as server:
        assert server.udp is not None and server.tcp is not None
        assert server.udp.getsockname() == server.tcp.getsockname() == server.sockaddr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(b"over udp", server.sockaddr)
            assert udp.recvfrom(100) == (b"over udp", server.sockaddr)
        with socket.create_connection(server.sockaddr, timeout=5) as tcp:
            tcp.sendall(b"over tcp")
            assert tcp.recv(100) == b"over tcp"
        assert server.received == 1
        assert server.address == server.target == f"127.0.0.1:{server.port}"


def test_close_releases_every_socket_and_thread() -> None:
    fds, threads = open_fds(), set(threading.enumerate())
    server = EchoServer(udp=True, tcp=True)
    server.loopback_socket()  # a spoofer's socket, closed with the server
    assert open_fds() == fds + 4  # UDP, TCP, the selector, the spoofer's: all held from the start
    client = socket.create_connection(server.sockaddr, timeout=5)
    client.sendall(b"x")
    assert client.recv(10) == b"x"  # its connection thread runs
    assert len(set(threading.enumerate()) - threads) == 2  # the serving one and that one
    server.close()  # the client is still connected: the connection ends with the server
    assert client.recv(10) == b""
    client.close()
    assert set(threading.enumerate()) - threads == set()
    assert open_fds() == fds


def test_a_connection_ends_at_its_lifetime() -> None:
    with Held(lifetime=0.2) as server, \
            socket.create_connection(server.sockaddr, timeout=10) as client:
        assert client.recv(10) == b""  # closed by the server, though the client sent nothing
        assert server.ended()


def test_connections_beyond_the_cap_are_closed_at_accept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tests.support.server, "MAX_CONNECTIONS", 2)
    with Held(lifetime=60) as server:
        held = [socket.create_connection(server.sockaddr, timeout=10) for _ in range(2)]
        with socket.create_connection(server.sockaddr, timeout=10) as third:
            assert third.recv(10) == b""  # the first two are accepted before it, in order
        assert server.alive() == 2
        server.close()  # ends the two held connections long before their lifetime
        assert [sock.recv(10) for sock in held] == [b"", b""]
        assert server.ended()
        for sock in held:
            sock.close()


def test_a_server_needs_udp_or_tcp() -> None:
    with pytest.raises(ValueError, match="UDP, TCP or both"):
        ThreadedServer()


# --- running a check, reading a sample --------------------------------------------------------


def test_run_check_builds_the_check_from_its_keys_and_sample_reads_exact_labels() -> None:
    with FakeDns("answer") as server:
        result = run_check("dns", target="host.test", server=server.address)
        again = run_check(make_check("dns", target="host.test", server=server.address))
        assert len(server.queries) == 2
    assert result.success and again.success, (result, again)
    assert sample(result, "netsentry_dns_answers") == 1
    assert sample(result, "netsentry_dns_responses_total", rcode="NOERROR") == 1  # a count
    assert sample(result, "netsentry_dns_responses_total", rcode="SERVFAIL") is None
    assert sample(result, "netsentry_dns_responses_total") is None  # labels are exact
    assert counters(result) == {"netsentry_dns_responses_totalNOERROR": 1,
                                "netsentry_dns_answer_changes_total": 0}
    assert gauges(result)["netsentry_dns_answers"] == 1
    with pytest.raises(TypeError):
        run_check(make_check("dns", target="host.test"), timeout="2s")


def test_sample_reads_exposition_text() -> None:
    text = ('# HELP netsentry_check_runs_total Runs.\n# TYPE netsentry_check_runs_total counter\n'
            'netsentry_check_runs_total{check="a",kind="tcp"} 3\n'
            'netsentry_check_runs_total{check="b",kind="tcp"} 5\n')
    assert sample(text, "netsentry_check_runs_total", check="b", kind="tcp") == 5
    assert sample(text, "netsentry_check_runs_total", check="a") is None
    assert sample(text, "netsentry_check_success", check="a", kind="tcp") is None
