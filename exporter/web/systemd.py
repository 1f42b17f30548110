"""The listening sockets systemd passes (`--web.systemd-socket`), sd_listen_fds(3)'s protocol.

systemd (a `.socket` unit, or `systemd-socket-activate` by hand) binds the sockets, starts the
agent with them open from file descriptor 3 on, and says so in the environment: `LISTEN_FDS`
(how many) and `LISTEN_PID` (for which process; a child that inherits the variables must not
take them). As sd_listen_fds does, the variables are removed once read, and the sockets are
made close-on-exec. The agent serves HTTP on stream sockets only (TCP, or a Unix socket that
a proxy on the host talks to); anything else is a one-line start-up error.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

FIRST_FD = 3  # SD_LISTEN_FDS_START
MAX_FDS = 1024


def listen_fds(environ: MutableMapping[str, str] | None = None,
               pid: int | None = None) -> list[socket.socket]:
    """The sockets passed to this process; ValueError says why there are none usable."""
    env = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    count_text, pid_text = env.pop("LISTEN_FDS", None), env.pop("LISTEN_PID", None)
    env.pop("LISTEN_FDNAMES", None)
    if count_text is None:
        raise ValueError("--web.systemd-socket: no sockets passed (LISTEN_FDS is not set): "
                         "start netsentry from a .socket unit or systemd-socket-activate")
    if pid_text is None or not pid_text.isdigit() or int(pid_text) != pid:
        raise ValueError(f"--web.systemd-socket: LISTEN_PID={pid_text} is not this process "
                         f"({pid}): the sockets were passed to another one")
    if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_FDS:
        raise ValueError(f"--web.systemd-socket: LISTEN_FDS={count_text!r}, want a number of "
                         f"sockets from 1 to {MAX_FDS}")
    sockets = []
    try:
        for fd in range(FIRST_FD, FIRST_FD + int(count_text)):
            sockets.append(_adopt(fd))
    except ValueError:
        for sock in sockets:
            sock.detach()  # they are systemd's; leave them open as they came
        raise
    return sockets


def _adopt(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(f"--web.systemd-socket: file descriptor {fd} is not a socket: "
                         f"{exc.strerror or exc}") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise ValueError(f"--web.systemd-socket: file descriptor {fd} is not a listening "
                         "stream socket (use ListenStream= in the .socket unit)")
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock
