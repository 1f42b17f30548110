"""A real dnsmasq on loopback serving only the records a test gives it; nothing is forwarded.

    with Dnsmasq(a={"host.test": ["127.0.0.5"]}, mx={"test": [("mail.test", 10)]}) as dns:
        ...  # query 127.0.0.1:dns.port

Names under the `local` domains (default: "test") that are not configured answer NXDOMAIN;
any other name answers REFUSED, since there are no upstream servers.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import dns.exception
import dns.message

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


class Dnsmasq:
    """Start dnsmasq (in __init__) and wait until it answers; stop() or the `with` block ends it.

    .log (its stderr lines) is filled by a thread: complete only after stop().
    """

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
        self._tmp = tempfile.TemporaryDirectory(prefix="dnsmasq-")
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        for _ in range(3 if port == 0 else 1):
            self.port = port or free_port()
            self.argv = dnsmasq_argv(
                self.port, f"{self._tmp.name}/dnsmasq.pid", a=a, aaaa=aaaa, mx=mx, txt=txt,
                cname=cname, local=local, extra_args=extra_args)
            self.log = []
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True)
            self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
            self._reader.start()
            try:
                self.wait_ready(ready_timeout)
                return
            except BaseException:
                self._terminate()
                if not any("Address already in use" in line for line in self.log):
                    self._tmp.cleanup()
                    raise
        self._tmp.cleanup()
        raise RuntimeError(f"dnsmasq could not bind a port in 3 tries:\n{self.logs}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def logs(self) -> str:
        return "\n".join(self.log)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 10) -> None:
        """Send real DNS queries (0.2 s each) until dnsmasq answers; raise if it exits or not."""
        assert self.proc is not None
        wire = dns.message.make_query("ready.invalid.", "A").to_wire()
        deadline = time.monotonic() + timeout
        for _ in range(500):  # a connected socket sees "refused" at once while nothing listens
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"dnsmasq exited with {self.proc.returncode}:\n{self.logs}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.2)
                try:
                    sock.connect(("127.0.0.1", self.port))
                    sock.send(wire)
                    dns.message.from_wire(sock.recv(65536))
                    return
                except (OSError, dns.exception.DNSException):
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise RuntimeError(f"dnsmasq did not answer on {self.address}:\n{self.logs}")

    def stop(self) -> None:
        self._terminate()
        self._tmp.cleanup()

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._reader.join(2)
            assert self.proc.stderr is not None
            self.proc.stderr.close()

    def __enter__(self) -> Dnsmasq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
