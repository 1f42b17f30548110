"""What ad-hoc probes may reach: the `[probe] allow` list (`web.probe` enforces it).

An entry is a network (`10.0.0.0/8`, `2001:db8::/32`, or one address) or a host pattern
(`db.example.org`, `*.example.org` for any name below it, `*` for any name). A connection that
a check makes for a host, to an address, is allowed when

- the address lies in an allowed network (whatever name led there), or
- the host is a name matching a pattern and the address is a public one (`is_global`: not
  loopback, private, link-local, shared, reserved or documentation space).

So a name that matches a pattern but resolves (or flips) to 127.0.0.1, 10.x or the cloud
metadata address is refused unless a network entry allows that address too, and an IP
literal needs a network entry. It is the address that is checked, after resolution, and
`web.probe.AllowedResolver` hands a check only addresses that passed: the check connects to exactly
those, never resolving again behind the check's back — DNS rebinding gains nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


@dataclass(frozen=True, slots=True)
class AllowList:
    """Host patterns (lower case, without a trailing dot) and networks."""

    patterns: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.patterns or self.networks)

    def refusal(self, host: str, addresses: Iterable[str]) -> str | None:
        """Why connecting for `host` to one of `addresses` is not allowed; None if all are."""
        literal = _ip(host)
        named = literal is None and self.matches(host)
        for text in addresses:
            address = _ip(text)
            if address is None:  # not an IP address: nothing to hold against the networks
                return f"{host} resolves to {text!r}, not an IP address"
            if any(address in network for network in self.networks):
                continue
            if named and address.is_global:
                continue
            if literal is not None:
                return f"{text} is not in an allowed network"
            if named:
                return (f"{host} resolves to {text}, which is not a public address and not in "
                        "an allowed network")
            return (f"{host} matches no allowed host pattern, and its address {text} is not "
                    "in an allowed network")
        return None

    def matches(self, host: str) -> bool:
        """True if the name `host` matches a host pattern."""
        name = host.rstrip(".").lower()
        for pattern in self.patterns:
            if pattern == "*" or name == pattern or (
                    pattern.startswith("*.") and name.endswith(pattern[1:])):
                return True
        return False

    def explain(self, address: str) -> str:
        """Which entry lets `address` through, for the debug trace."""
        ip = _ip(address)
        for network in self.networks:
            if ip is not None and ip in network:
                return f"in {network}"
        return "a public address of an allowed host name"


def parse_entry(text: str) -> str | Network:
    """One allow-list entry: a network, or a host pattern; raises ValueError for the user."""
    entry = text.strip()
    if not entry:
        raise ValueError("an empty entry; write a host pattern or a network")
    if "/" in entry or _ip(entry) is not None:
        bare = entry.strip("[]")
        try:
            network = ipaddress.ip_network(bare, strict=True)
            mapped = network.network_address
            if (isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None
                    and network.prefixlen >= 96):  # ::ffff:10.0.0.0/104 is 10.0.0.0/8
                return ipaddress.IPv4Network((mapped.ipv4_mapped, network.prefixlen - 96))
            return network
        except ValueError as exc:
            if "host bits set" in str(exc):
                loose = ipaddress.ip_network(bare, strict=False)
                raise ValueError(f"{entry!r} has host bits set; did you mean {loose}?") from None
            raise ValueError(f"{entry!r} is not a valid network: {exc}") from None
    name = entry.rstrip(".").lower()
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if not labels:
            return "*"
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{entry!r} is not a host name, a *.domain pattern or a network "
                         "(10.0.0.0/8)")
    return name


def parse_allow(entries: Iterable[str]) -> AllowList:
    """The allow list from its entries; raises ValueError at the first bad one."""
    patterns: list[str] = []
    networks: list[Network] = []
    for text in entries:
        entry = parse_entry(text)
        if isinstance(entry, str):
            patterns.append(entry)
        else:
            networks.append(entry)
    return AllowList(tuple(patterns), tuple(networks))


@functools.lru_cache(maxsize=4096)  # probes repeat their targets: parse each once
def _ip(text: str) -> IPAddress | None:
    """The IP address `text` spells (IPv4-mapped IPv6 as the IPv4 address), or None."""
    try:
        address = ipaddress.ip_address(text.strip("[]").partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
