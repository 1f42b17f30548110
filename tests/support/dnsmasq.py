"""A real dnsmasq on loopback serving only the records a test gives it; nothing is forwarded.

    with Dnsmasq(a={"host.test": ["127.0.0.5"]}, mx={"test": [("mail.test", 10)]}) as dns:
        ...  # query 127.0.0.1:dns.port

Names under the `local` domains (default: "test") that are not configured answer NXDOMAIN;
any other name answers REFUSED, since there are no upstream servers.
"""

from __future__ import annotations

import functools
import socket
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import dns.exception
import dns.message

from tests.support.daemon import Daemon

DNSMASQ = "/usr/sbin/dnsmasq"


def dnsmasq_argv(
    port: int,
    pid_file: str,
    *,
    a: Mapping[str, Sequence[str]] | None = None,
    aaaa: Mapping[str, Sequence[str]] | None = None,
    mx: Mapping[str, Sequence[tuple[str, int]]] | None = None,
    txt: Mapping[str, Sequence[str]] | None = None,
    cname: Mapping[str, str] | None = None,
    local: Iterable[str] = ("test",),
    extra_args: Iterable[str] = (),
) -> list[str]:
    """The dnsmasq command line: 127.0.0.1:port only, no upstream, no /etc/hosts, no config."""
    argv = [
        DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
        f"--pid-file={pid_file}", "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--port={port}", "--log-facility=-",
    ]
    argv += [f"--local=/{domain}/" for domain in local]
    # --host-record is exact (--address=/name/ would also answer every subdomain); one per address.
    for records in (a or {}), (aaaa or {}):
        argv += [f"--host-record={name},{ip}" for name, ips in records.items() for ip in ips]
    argv += [f"--mx-host={name},{host},{pref}" for name, mxs in (mx or {}).items()
             for host, pref in mxs]
    # A comma inside a TXT value splits it into several character-strings of one record.
    argv += [f"--txt-record={name},{text}" for name, texts in (txt or {}).items() for text in texts]
    argv += [f"--cname={alias},{target}" for alias, target in (cname or {}).items()]
    return [*argv, *extra_args]


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP right now (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1 in 50 tries")


class Dnsmasq(Daemon):
    """Start dnsmasq (in __init__) and wait until it answers; stop() or the `with` block ends it.

    .log (its stderr lines) is filled by a thread: complete only after stop().
    """

    name = "dnsmasq"
    port_taken = ("Address already in use",)
    not_ready = (OSError, dns.exception.DNSException)

    def __init__(
        self,
        *,
        a: Mapping[str, Sequence[str]] | None = None,
        aaaa: Mapping[str, Sequence[str]] | None = None,
        mx: Mapping[str, Sequence[tuple[str, int]]] | None = None,
        txt: Mapping[str, Sequence[str]] | None = None,
        cname: Mapping[str, str] | None = None,
        local: Iterable[str] = ("test",),
        extra_args: Iterable[str] = (),
        port: int = 0,
        ready_timeout: float = 10,
    ) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="dnsmasq-")
        self._argv = functools.partial(
            dnsmasq_argv, pid_file=f"{self._tmp.name}/dnsmasq.pid", a=a, aaaa=aaaa, mx=mx,
            txt=txt, cname=cname, local=local, extra_args=extra_args)
        self._ready_query = dns.message.make_query("ready.invalid.", "A").to_wire()
        # free_port is looked up at each call, so that a test can replace it.
        self.start(lambda: free_port(), port, ready_timeout)

    def argv_for(self, port: int) -> list[str]:
        return self._argv(port)

    def answers(self) -> bool:
        # A connected socket sees "refused" at once while nothing listens.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            sock.connect(("127.0.0.1", self.port))
            sock.send(self._ready_query)
            dns.message.from_wire(sock.recv(65536))
        return True

    def cleanup(self) -> None:
        self._tmp.cleanup()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
