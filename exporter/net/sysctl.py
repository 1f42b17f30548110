"""The kernel settings behind socket options, read from /proc/sys (Linux).

Each setting is named as `sysctl` names it (`net.core.rmem_max`); a setting holding several
numbers gets one name per field, as the kernel's documentation (ip-sysctl.rst) names them:
`net.ipv4.tcp_rmem.min`, `.default`, `.max`. A setting that is missing (another OS, an older
kernel, a container hiding /proc/sys) or unreadable is absent from the result, never zero.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_SYS = Path("/proc/sys")

# name -> the names of its fields, () for a single number.
SETTINGS: dict[str, tuple[str, ...]] = {
    "net.core.rmem_max": (),  # SO_RCVBUF is clamped here (then doubled)
    "net.core.wmem_max": (),  # SO_SNDBUF likewise
    "net.core.rmem_default": (),  # SO_RCVBUF of a new non-TCP socket
    "net.core.wmem_default": (),
    "net.core.somaxconn": (),  # listen() backlogs are clamped here
    "net.ipv4.tcp_rmem": ("min", "default", "max"),  # TCP's own autotuning range, in bytes
    "net.ipv4.tcp_wmem": ("min", "default", "max"),
    "net.ipv4.ip_local_port_range": ("first", "last"),  # ephemeral ports for connect()
    "net.ipv4.ip_unprivileged_port_start": (),  # binding below it needs privilege (EACCES)
    "net.ipv4.tcp_keepalive_time": (),  # TCP_KEEPIDLE's default, seconds
    "net.ipv4.tcp_keepalive_intvl": (),  # TCP_KEEPINTVL's default, seconds
    "net.ipv4.tcp_keepalive_probes": (),  # TCP_KEEPCNT's default
    "net.ipv4.tcp_notsent_lowat": (),  # TCP_NOTSENT_LOWAT's default, bytes
    "net.ipv4.ip_default_ttl": (),  # IP_TTL's default
    "net.ipv6.bindv6only": (),  # IPV6_V6ONLY's default
}


def parse(name: str, text: str, fields: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """(setting, value) pairs from the text of one /proc/sys file; ValueError if malformed."""
    words = text.split()
    expected = len(fields) or 1
    if len(words) != expected or not all(w.lstrip("-").isdigit() for w in words):
        raise ValueError(f"expected {expected} integer(s), got {text.strip()[:40]!r}")
    if not fields:
        return [(name, int(words[0]))]
    return [(f"{name}.{field}", int(word)) for field, word in zip(fields, words, strict=True)]


def read(root: Path = PROC_SYS,
         settings: dict[str, tuple[str, ...]] = SETTINGS) -> tuple[dict[str, int], list[str]]:
    """The readable settings, and a note for each one that is not (for people, not metrics)."""
    values: dict[str, int] = {}
    notes: list[str] = []
    for name, fields in settings.items():
        try:
            values.update(parse(name, _read(os.path.join(root, *name.split("."))), fields))
        except OSError as exc:
            notes.append(f"{name}: {exc.strerror or exc}")
        except (ValueError, UnicodeDecodeError) as exc:
            notes.append(f"{name}: {exc}")
    return values, notes


def _read(path: str) -> str:
    # os-level I/O: a third of the cost of open().read() (about 6 µs a file), on every run.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode("ascii")
    finally:
        os.close(fd)
