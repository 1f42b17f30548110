"""Parsing of the targets users write: `host:port`, `[v6]:port`, service names for ports."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_port(text: str, protocol: str) -> int:
    """A port number, or a service name looked up in the services database (`smtp` → 25)."""
    if text.isdigit():
        port = int(text)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range 1-65535")
        return port
    try:
        return socket.getservbyname(text, protocol)
    except OSError:
        raise ValueError(f"unknown service name {text!r} for {protocol}") from None


def parse_host_port(text: str, protocol: str = "tcp") -> HostPort:
    """`host:port` or `[ipv6]:port`; raises ValueError with a message for the user."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid target {text!r}: write an IPv6 address as [::1]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid target {text!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"invalid target {text!r}: write an IPv6 address as [{host}]:port")
    if not host:
        raise ValueError(f"invalid target {text!r}: the host is empty")
    if not port_text:
        raise ValueError(f"invalid target {text!r}: the port is empty")
    return HostPort(host, parse_port(port_text, protocol))
