"""A real dnsmasq on loopback serving only the records a test gives it; nothing is forwarded.

    with Dnsmasq(a={"host.test": ["127.0.0.5"]}, mx={"test": [("mail.test", 10)]}) as dns:
        ...  # query 127.0.0.1:dns.port

Names under the `local` domains (default: "test") that are not configured answer NXDOMAIN;
any other name answers REFUSED, since there are no upstream servers.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict, Unpack

import dns.exception
import dns.message

from tests.support.daemon import Daemon

DNSMASQ = "/usr/sbin/dnsmasq"


class Served(TypedDict, total=False):
    """What dnsmasq serves: records by type (name -> values), its local domains (default:
    "test"), and more arguments."""

    a: Mapping[str, Sequence[str]]
    aaaa: Mapping[str, Sequence[str]]
    mx: Mapping[str, Sequence[tuple[str, int]]]
    txt: Mapping[str, Sequence[str]]
    cname: Mapping[str, str]
    local: Iterable[str]
    extra_args: Iterable[str]


def dnsmasq_argv(port: int, pid_file: str, **served: Unpack[Served]) -> list[str]:
    """The dnsmasq command line: 127.0.0.1:port only, no upstream, no /etc/hosts, no config."""
    argv = [
        DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
        f"--pid-file={pid_file}", "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--port={port}", "--log-facility=-",
    ]
    argv += [f"--local=/{domain}/" for domain in served.get("local", ("test",))]
    # --host-record is exact (--address=/name/ would also answer every subdomain); one per address.
    for records in served.get("a", {}), served.get("aaaa", {}):
        argv += [f"--host-record={name},{ip}" for name, ips in records.items() for ip in ips]
    argv += [f"--mx-host={name},{host},{pref}" for name, mxs in served.get("mx", {}).items()
             for host, pref in mxs]
    # A comma inside a TXT value splits it into several character-strings of one record.
    argv += [f"--txt-record={name},{text}" for name, texts in served.get("txt", {}).items()
             for text in texts]
    argv += [f"--cname={alias},{target}" for alias, target in served.get("cname", {}).items()]
    return [*argv, *served.get("extra_args", ())]


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

    def __init__(self, *, port: int = 0, ready_timeout: float = 10,
                 **served: Unpack[Served]) -> None:
        super().__init__()
        self._argv = functools.partial(
            dnsmasq_argv, pid_file=f"{self.temp_dir()}/dnsmasq.pid", **served)
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
