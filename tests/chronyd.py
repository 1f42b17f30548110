"""A real chronyd on loopback, serving NTP from this host's own clock, never touching it.

    with Chronyd(stratum=3) as server:
        ...  # ask 127.0.0.1:server.port

chronyd runs in the foreground (-d) with -x (it never adjusts the clock), with a config of its
own in a temp dir: `local stratum N` as its only reference (no servers, no pools), NTP on
127.0.0.1 at a free high port, `cmdport 0` (no command socket to clash with a system chronyd),
its pid file in the temp dir. As root it keeps root (-u root: the temp dir is root's); as
another user, -U lets it start.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from exporter.codecs import ntp as codec

CHRONYD = "/usr/sbin/chronyd"


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chronyd_config(port: int, stratum: int, directory: str, *, address: str = "127.0.0.1",
                   extra: tuple[str, ...] = ()) -> str:
    return "\n".join([
        f"port {port}",
        f"bindaddress {address}",
        f"local stratum {stratum}",
        f"allow {address}",
        "cmdport 0",
        f"pidfile {directory}/chronyd.pid",
        *extra,
    ]) + "\n"


class Chronyd:
    """Start chronyd (in __init__) and wait until it answers; stop() or the `with` block ends it.

    .log (its stderr lines) is filled by a thread: complete only after stop().
    """

    def __init__(self, stratum: int = 3, *, ready_timeout: float = 10) -> None:
        self.stratum = stratum
        self._tmp = tempfile.TemporaryDirectory(prefix="chronyd-")
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        user = ["-u", "root"] if os.geteuid() == 0 else ["-U"]
        for _ in range(3):  # the free port may be taken between finding and binding it
            self.port = free_udp_port()
            config = Path(self._tmp.name, "chronyd.conf")
            config.write_text(chronyd_config(self.port, stratum, self._tmp.name))
            self.argv = [CHRONYD, "-d", "-x", *user, "-f", str(config)]
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
                if not any("Could not open" in line or "in use" in line for line in self.log):
                    self._tmp.cleanup()
                    raise
        self._tmp.cleanup()
        raise RuntimeError(f"chronyd could not bind a port in 3 tries:\n{self.logs}")

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

    def ask(self, timeout: float = 0.2) -> bytes:
        """One NTP request, answered: the raw reply (raises OSError without one)."""
        transmit = secrets.randbits(64) or 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", self.port))
            sock.send(codec.build_request(transmit))
            reply = sock.recv(1024)
        codec.read_reply(reply, transmit)  # raises if it is not a usable reply
        return reply

    def wait_ready(self, timeout: float = 10) -> None:
        """Ask (0.2 s per try) until chronyd answers with a valid reply; raise if it exits or
        does not within `timeout`."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        for _ in range(500):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"chronyd exited with {self.proc.returncode}:\n{self.logs}")
            try:
                self.ask()
                return
            except (OSError, codec.NtpCodecError):
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise RuntimeError(f"chronyd did not answer on {self.address}:\n{self.logs}")

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

    def __enter__(self) -> Chronyd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
