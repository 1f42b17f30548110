"""The allow-list of ad-hoc probes: entries, verdicts, and a resolver that enforces them — a
name that flips to a forbidden address between runs, or within one, gets no connection there."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.config.allow import AllowList, parse_allow, parse_entry
from exporter.config.model import CheckConfig
from exporter.config.settings import adhoc_check
from exporter.errors import CheckError, Reason
from exporter.net.resolve import Address, Resolver, literal_address
from exporter.runner import Runner
from exporter.store import Result
from exporter.web.probe import AllowedResolver
from tests.support.servers import Listener

# --- entries --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [
    ("db.example.org", "db.example.org"),
    ("DB.Example.org.", "db.example.org"),
    ("*.example.org", "*.example.org"),
    ("*", "*"),
    ("_dns.resolver.arpa", "_dns.resolver.arpa"),
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("192.0.2.7", "192.0.2.7/32"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("[::1]", "::1/128"),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8"),  # IPv4-mapped: addresses are compared as IPv4
])
def test_entries(text: str, parsed: str) -> None:
    assert str(parse_entry(text)) == parsed


@pytest.mark.parametrize(("text", "message"), [
    ("", "an empty entry; write a host pattern or a network"),
    ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not a valid network: '10.0.0.0/33' does not appear to "
     "be an IPv4 or IPv6 network"),
    ("foo*.example.org", "'foo*.example.org' is not a host name, a *.domain pattern or a "
     "network (10.0.0.0/8)"),
    ("a.*.org", "'a.*.org' is not a host name, a *.domain pattern or a network (10.0.0.0/8)"),
    ("http://x.org/", "'http://x.org/' is not a valid network: 'http://x.org/' does not "
     "appear to be an IPv4 or IPv6 network"),
])
def test_bad_entries(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_entry(text)
    assert str(info.value) == message


# --- verdicts -------------------------------------------------------------------------------

ALLOW = parse_allow(["*.example.org", "db.corp", "10.1.0.0/16", "fd00::/8"])


@pytest.mark.parametrize(("host", "addresses", "refusal"), [
    # A name matching a pattern may reach public addresses, and networks of the list.
    ("www.example.org", ["93.184.215.14"], None),
    ("a.b.example.org", ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"], None),
    ("db.corp", ["10.1.2.3"], None),
    # ... but not loopback, private, link-local or documentation space outside them.
    ("www.example.org", ["127.0.0.1"], "www.example.org resolves to 127.0.0.1, which is not "
     "a public address and not in an allowed network"),
    ("db.corp", ["169.254.169.254"], "db.corp resolves to 169.254.169.254, which is not a "
     "public address and not in an allowed network"),
    ("db.corp", ["::ffff:127.0.0.1"], "db.corp resolves to ::ffff:127.0.0.1, which is not a "
     "public address and not in an allowed network"),
    # One bad address of several is enough: rebinding answers often mix them.
    ("www.example.org", ["93.184.215.14", "10.9.9.9"], "www.example.org resolves to 10.9.9.9, "
     "which is not a public address and not in an allowed network"),
    # The apex is not "*.example.org".
    ("example.org", ["93.184.215.14"], "example.org matches no allowed host pattern, and its "
     "address 93.184.215.14 is not in an allowed network"),
    # Any name may reach the networks of the list; literals need them.
    ("printer.lan", ["10.1.7.7"], None),
    ("10.1.7.7", ["10.1.7.7"], None),
    ("fd00::5", ["fd00::5"], None),
    ("::ffff:10.1.7.7", ["::ffff:10.1.7.7"], None),
    ("93.184.215.14", ["93.184.215.14"], "93.184.215.14 is not in an allowed network"),
    ("127.0.0.1", ["127.0.0.1"], "127.0.0.1 is not in an allowed network"),
])
def test_refusal(host: str, addresses: list[str], refusal: str | None) -> None:
    assert ALLOW.refusal(host, addresses) == refusal


def test_star_allows_any_name_to_public_addresses_only() -> None:
    star = parse_allow(["*"])
    assert star.refusal("anything.test", ["8.8.8.8"]) is None
    assert star.refusal("anything.test", ["10.0.0.1"]) is not None
    assert star.refusal("8.8.8.8", ["8.8.8.8"]) == "8.8.8.8 is not in an allowed network"


def test_an_empty_list_is_false() -> None:
    assert not AllowList()
    assert parse_allow(["x.test"])


# --- the resolver that enforces it ------------------------------------------------------------


class FlippingResolver(Resolver):
    """Answers from a script: each name's answers in turn, the last one for ever after —
    a DNS server that flips its answer (rebinding). Records every lookup; IP literals are
    their own answer, as with the real resolver."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC,
                      type: int = socket.SOCK_STREAM) -> list[Address]:
        literal = literal_address(host, port, family)
        if literal is not None:
            return [literal]
        self.lookups.append(host)
        script = self.answers[host]
        address = script.pop(0) if len(script) > 1 else script[0]
        return [Address(socket.AF_INET, (address, port))]


@pytest.fixture
def twins() -> Iterator[tuple[Listener, Listener]]:
    """Listeners on the same port of 127.0.0.2 (allowed) and 127.0.0.1 (forbidden)."""
    for _ in range(20):
        allowed = Listener("127.0.0.2")
        try:
            forbidden = Listener("127.0.0.1", allowed.port)
        except OSError:  # that port is taken on 127.0.0.1: another one
            allowed.close()
            continue
        try:
            yield allowed, forbidden
        finally:
            allowed.close()
            forbidden.close()
        return
    pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")


def probe(check: CheckConfig, inner: Resolver, allow: AllowList,
          ) -> tuple[Result, AllowedResolver]:
    guard = AllowedResolver(inner, allow)
    result = asyncio.run(Runner(guard).run(check, timeout=2))
    return result, guard


def tcp(target: str) -> CheckConfig:
    return adhoc_check("tcp", None, target, 2.0)


def test_a_name_that_flips_to_loopback_between_probes_gets_no_connection(
        twins: tuple[Listener, Listener]) -> None:
    allowed, forbidden = twins
    allow = parse_allow(["flip.test", "127.0.0.2/32"])
    inner = FlippingResolver({"flip.test": ["127.0.0.2", "127.0.0.1"]})
    first, guard = probe(tcp(f"flip.test:{allowed.port}"), inner, allow)
    assert first.success, first
    assert guard.refused_target is None
    assert guard.trace == ["flip.test -> 127.0.0.2: allowed, in 127.0.0.2/32"]
    second, guard = probe(tcp(f"flip.test:{allowed.port}"), inner, allow)
    assert not second.success
    assert guard.refused_target == ("flip.test resolves to 127.0.0.1, which is not a public "
                                    "address and not in an allowed network")
    assert inner.lookups == ["flip.test", "flip.test"]  # one lookup per run, never a second
    assert allowed.connections(1, wait=5) == 1
    assert forbidden.connections(0, wait=0.5) == 0


def test_a_literal_outside_the_list_gets_no_connection(twins: tuple[Listener, Listener]) -> None:
    allowed, forbidden = twins
    allow = parse_allow(["127.0.0.2/32"])
    inner = FlippingResolver({})
    result, guard = probe(tcp(f"127.0.0.1:{forbidden.port}"), inner, allow)
    assert guard.refused_target == "127.0.0.1 is not in an allowed network"
    assert not result.success
    ok, _ = probe(tcp(f"127.0.0.2:{allowed.port}"), inner, allow)
    assert ok.success, ok
    assert allowed.connections(1, wait=5) == 1
    assert forbidden.connections(0, wait=0.5) == 0


def test_a_later_refusal_fails_the_run_with_a_reason() -> None:
    # Past the first resolution (an http redirect's host, a second nameserver), a refusal is
    # a failed probe, not a bad request.
    async def go() -> tuple[Any, Any]:
        guard = AllowedResolver(FlippingResolver({"a.test": ["127.0.0.2"],
                                                  "b.test": ["127.0.0.1"]}),
                                parse_allow(["127.0.0.2/32"]))
        await guard.resolve("a.test", 80)
        with pytest.raises(CheckError) as info:
            await guard.resolve("b.test", 80)
        return guard, info.value

    guard, error = asyncio.run(go())
    assert guard.refused_target is None
    assert error.reason is Reason.UNEXPECTED_RESPONSE
    assert error.message == ("not allowed by [probe] allow: b.test matches no allowed host "
                             "pattern, and its address 127.0.0.1 is not in an allowed network")
    assert guard.trace[-1].startswith("b.test: refused: ")
