"""A real unbound (Debian's) on loopback, serving only the records a test gives it: DNS over
UDP/TCP on `port`, over TLS on `tls_port` and over HTTPS (HTTP/2 only, RFC 8484's
`/dns-query`) on `https_port`. Nothing is forwarded or recursed.

    with Unbound(make_cert(tmp_path, "dns.test"), a={"host.test": ["127.0.0.7"]}) as dns:
        ...  # https://dns.test:{dns.https_port}/dns-query, dns.test:{dns.tls_port}

Names under the `local` zone ("test") that are not configured answer NXDOMAIN; any other name
is refused (access-control admits 127.0.0.0/8 for local data only).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message

from tests.support.certs import CertFiles
from tests.support.daemon import Daemon
from tests.support.dnsmasq import free_port
from tests.support.servers import closed_port

UNBOUND = "/usr/sbin/unbound"

_CONFIG = """
server:
    verbosity: 1
    use-syslog: no
    logfile: ""
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    do-ip6: no
    do-not-query-localhost: yes
    module-config: "iterator"
    interface: 127.0.0.1@{port}
    interface: 127.0.0.1@{tls_port}
    interface: 127.0.0.1@{https_port}
    tls-port: {tls_port}
    https-port: {https_port}
    http-endpoint: "/dns-query"
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    access-control: 127.0.0.0/8 allow
    local-zone: "test." static
{records}
"""


class Unbound(Daemon):
    """Start unbound (in __init__) and wait until all three ports answer; stop() or the `with`
    block ends it. `.log` holds its stderr lines."""

    name = "unbound"
    port_taken = ("Address already in use", "could not bind", "can't bind")
    not_ready = (OSError, dns.exception.DNSException)

    def __init__(self, certs: CertFiles, *, a: Mapping[str, Sequence[str]] | None = None,
                 ready_timeout: float = 10) -> None:
        super().__init__()
        self.certs = certs
        self.records = dict(a or {})
        self.tls_port = 0
        self.https_port = 0
        self._ready_query = dns.message.make_query("ready.test.", "A").to_wire()
        self.start(free_port, 0, ready_timeout)

    def argv_for(self, port: int) -> list[str]:
        self.tls_port, self.https_port = closed_port(), closed_port()
        records = "\n".join(f'    local-data: "{name}. 60 IN A {ip}"'
                            for name, ips in self.records.items() for ip in ips)
        conf = Path(self.temp_dir()) / "unbound.conf"
        conf.write_text(_CONFIG.format(dir=self.temp_dir(), port=port, tls_port=self.tls_port,
                                       https_port=self.https_port, key=self.certs.key,
                                       cert=self.certs.cert, records=records))
        return [UNBOUND, "-d", "-c", str(conf)]

    def answers(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            sock.connect(("127.0.0.1", self.port))
            sock.send(self._ready_query)
            dns.message.from_wire(sock.recv(65536))
        for port in self.tls_port, self.https_port:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True
