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
from pathlib import Path

from exporter.codecs import ntp as codec
from tests.support.daemon import Daemon

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


class Chronyd(Daemon):
    """Start chronyd (in __init__) and wait until it answers; stop() or the `with` block ends it.

    .log (its stderr lines) is filled by a thread: complete only after stop().
    """

    name = "chronyd"
    port_taken = ("Could not open", "in use")
    not_ready = (OSError, codec.NtpCodecError)

    def __init__(self, stratum: int = 3, *, ready_timeout: float = 10) -> None:
        super().__init__()
        self.stratum = stratum
        self.start(free_udp_port, ready_timeout=ready_timeout)

    def argv_for(self, port: int) -> list[str]:
        config = Path(self.temp_dir(), "chronyd.conf")
        config.write_text(chronyd_config(port, self.stratum, self.temp_dir()))
        user = ["-u", "root"] if os.geteuid() == 0 else ["-U"]
        return [CHRONYD, "-d", "-x", *user, "-f", str(config)]

    def answers(self) -> bool:
        self.ask()  # raises unless a valid reply came
        return True

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
