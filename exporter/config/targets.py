"""Parsing of the targets users write: `host:port`, `[v6]:port`, service names for ports, and
bare hosts (a name or an address, for the kinds that send no port: ping, path)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")


def bare_host_problem(text: str, kind: str) -> str | None:
    """What is wrong with `text` as a bare host (a name or an IP address, not host:port or a
    URL) for a check of `kind`, or None."""
    if not text:
        return "empty; write a host name or an IP address"
    try:
        ipaddress.ip_address(text.partition("%")[0])
        return None
    except ValueError:
        pass
    name = text.rstrip(".")
    if len(name) <= 253 and name and all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    if ":" in text or "/" in text:
        return (f"{text!r} is not a host name or an IP address: a {kind} target has no port or "
                "path (write e.g. \"db.example.org\", \"192.0.2.1\" or \"2001:db8::1\")")
    return f"{text!r} is not a host name or an IP address"


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


def parse_server(text: str, protocol: str, default_port: int) -> HostPort:
    """A server as `host`, `host:port`, `[IPv6]:port`, `[IPv6]` or a bare IPv6 address (with a
    `%scope` where link-local); `default_port` where no port is written."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise ValueError("the server is empty")
    if text.startswith("[") or text.count(":") == 1:
        return parse_host_port(text, protocol)
    if ":" in text:
        try:
            ipaddress.IPv6Address(text.partition("%")[0])
        except ValueError:
            raise ValueError(f"invalid target {text!r}: not an IPv6 address; write host, "
                             "host:port or [IPv6]:port") from None
    return HostPort(text, default_port)


def parse_servers(raw: str | list[Any], protocol: str, default_port: int) -> tuple[HostPort, ...]:
    """One server or a list of them (see parse_server), none listed twice."""
    items = [raw] if isinstance(raw, str) else raw
    if not items:
        raise ValueError("the server list is empty; give one or more host[:port]")
    servers: list[HostPort] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected host[:port] strings, got {item!r}")
        server = parse_server(item, protocol, default_port)
        if server in servers:
            raise ValueError(f"{item!r} is listed twice")
        servers.append(server)
    return tuple(servers)
