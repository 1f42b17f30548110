"""DNS messages: queries built and replies parsed, over bytes, with dnspython's message layer.

This is the only module of the project that imports dnspython, so it also owns the validation of
the DNS values a config holds (names, record types, expected answers). It does no I/O: transports
(UDP, TCP, TLS, HTTPS) send `Query.wire` and hand whatever comes back to `parse_reply`, which
raises nothing but `DnsCodecError`, whatever the bytes.
"""

from __future__ import annotations

import functools
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.nsbase
import dns.rrset
import dns.wire

# RFC 6891 §6.2.5 leaves the size open; 1232 is the DNS Flag Day 2020 value that fits an
# IPv6 minimum MTU (1280) without fragmentation.
_PAYLOAD = 1232
_HEADER = struct.Struct("!HH")  # ID, flags: all a transport needs to pre-screen a datagram
# Plain ints: dns.flags' enums cost a microsecond an operation.
_QR, _TC, _AA, _RA, _AD = (int(flag) for flag in (dns.flags.QR, dns.flags.TC, dns.flags.AA,
                                                  dns.flags.RA, dns.flags.AD))
_RT = dns.rdatatype.RdataType
# Meta types (RFC 6895 §3.1) other than ANY are not data one can ask a resolver for: OPT lives
# in the additional section, TSIG/TKEY sign, AXFR/IXFR need a stream, MAILA/MAILB are obsolete.
_UNASKABLE = frozenset({_RT.NONE, _RT.OPT, _RT.TSIG, _RT.TKEY, _RT.AXFR, _RT.IXFR,
                        _RT.MAILA, _RT.MAILB})
_NAME_ERRORS: dict[type[Exception], str] = {
    dns.name.EmptyLabel: "empty label (a leading dot or two dots in a row)",
    dns.name.LabelTooLong: "a label is longer than 63 octets",
    dns.name.NameTooLong: "longer than 255 octets",
}
# Enum iteration skips aliases (BADSIG is BADVERS, 16), as dns.rcode.to_text does.
_RCODE_NAMES = tuple(dns.rcode.to_text(rcode) for rcode in dns.rcode.Rcode)


class DnsCodecError(Exception):
    """A message that cannot be built or parsed; str() says why."""


class NotOurReply(DnsCodecError):
    """Well-formed, but not the reply to this query (wrong ID, not a response, other question):
    a transport ignores it and keeps waiting (RFC 5452 §9.1)."""


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    name: str  # absolute, lower-case, with trailing dot, e.g. "www.example.org."
    rdtype: str  # canonical upper-case mnemonic, e.g. "A", "MX"
    wire: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    rcode: str  # dns.rcode.to_text, EDNS extended bits included; unknown codes as digits
    truncated: bool  # TC
    authoritative: bool  # AA
    recursion_available: bool  # RA
    authenticated_data: bool  # AD
    answers: tuple[str, ...]  # rdata text of the asked type at the name or its aliases, wire order
    answer_count: int
    min_ttl: int | None  # over the answers and the aliases followed; None without answers
    cnames: tuple[str, ...]  # the alias targets followed, in order


def _name(text: str) -> dns.name.Name:
    if not text:
        raise ValueError("empty DNS name")
    if any(char.isspace() for char in text):
        raise ValueError(f"invalid DNS name {text!r}: contains whitespace")
    try:
        # Unicode names go through dnspython's IDNA codec (2008 with the `idna` package,
        # else 2003); the label and name limits (RFC 1035 §2.3.4) apply to the encoded form.
        return dns.name.from_text(text).canonicalize()
    except (dns.exception.DNSException, ValueError) as error:
        why = _NAME_ERRORS.get(type(error), str(error))
        raise ValueError(f"invalid DNS name {text!r}: {why}") from None


def _rdtype(text: str) -> dns.rdatatype.RdataType:
    try:
        rdtype = dns.rdatatype.from_text(text)
    except (dns.exception.DNSException, ValueError):  # ValueError: TYPE65536 and beyond
        raise ValueError(f"unknown DNS record type {text!r}") from None
    if rdtype in _UNASKABLE:
        raise ValueError(f"DNS record type {dns.rdatatype.to_text(rdtype)} cannot be asked for "
                         "in a query; use a data type such as A, AAAA, MX, TXT, or ANY")
    return rdtype


# Cached: the checks of a big config repeat names and answers, and dnspython's parsers were a
# fifth of the load of 10,000 checks. Only successes are cached; errors are raised anew.
@functools.lru_cache(maxsize=4096)
def parse_name(text: str) -> str:
    """The absolute, lower-case text of a query name; ValueError says what is wrong with it."""
    return _name(text).to_text()


def parse_rdtype(text: str) -> str:
    """The canonical mnemonic of a queryable record type ("mx" -> "MX", "TYPE65" -> "HTTPS")."""
    return dns.rdatatype.to_text(_rdtype(text))


@functools.lru_cache(maxsize=4096)
def check_answer_text(rdtype: str, text: str) -> str:
    """The canonical rdata text of `text` as a record of `rdtype`, to compare with answers."""
    kind = parse_rdtype(rdtype)
    try:
        # relativize=False: otherwise names come back relative to the root, without their dot.
        rdata = dns.rdata.from_text(dns.rdataclass.IN, kind, text, origin=dns.name.root,
                                    relativize=False)
        return rdata.to_text()
    except Exception as error:  # rdata parsers raise more than DNSException on odd text
        raise ValueError(f"{text!r} is not a valid {kind} record: {error}") from None


def rcode_names() -> tuple[str, ...]:
    """Every rcode mnemonic `Reply.rcode` can hold (other values come as digits)."""
    return _RCODE_NAMES


def build_query(name: str, rdtype: str = "A", *, recursion_desired: bool = True,
                dnssec_ok: bool = False, id: int | None = None) -> Query:
    """A query with EDNS0 (RFC 6891), a 1232-byte payload and the DO bit if asked (RFC 3225)."""
    try:
        qname, qtype = _name(name), _rdtype(rdtype)
    except ValueError as error:
        raise DnsCodecError(str(error)) from None
    if id is None:
        id = secrets.randbits(16)  # RFC 5452 §9.2: an unpredictable ID over the full range
    elif not 0 <= id <= 0xFFFF:
        raise DnsCodecError(f"query ID {id} is not a 16-bit number")
    message = dns.message.make_query(
        qname, qtype, use_edns=0, want_dnssec=dnssec_ok, payload=_PAYLOAD, id=id,
        flags=dns.flags.RD if recursion_desired else 0)
    return Query(id, qname.to_text(), dns.rdatatype.to_text(qtype), message.to_wire())


def renumbered(query: Query, id: int | None = None) -> Query:
    """The same query with a new ID (random if None): a check builds its query once."""
    if id is None:
        id = secrets.randbits(16)  # RFC 5452 §9.2
    elif not 0 <= id <= 0xFFFF:
        raise DnsCodecError(f"query ID {id} is not a 16-bit number")
    return Query(id, query.name, query.rdtype, id.to_bytes(2, "big") + query.wire[2:])


@functools.lru_cache(maxsize=4096)
def _question(name: str, rdtype: str) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
    return dns.name.from_text(name), dns.rdatatype.from_text(rdtype)


def looks_like_reply_to(wire: bytes, query: Query) -> bool:
    """A cheap pre-check for transports: a header with the query's ID and QR set."""
    if len(wire) < 12:
        return False
    reply_id, flags = _HEADER.unpack_from(wire)
    return reply_id == query.id and bool(flags & _QR)


def parse_reply(wire: bytes, query: Query) -> Reply:
    """The reply to `query` in `wire`; NotOurReply for someone else's, DnsCodecError if broken."""
    if len(wire) < 12:
        raise DnsCodecError(f"reply is {len(wire)} bytes, shorter than a DNS header")
    reply_id, flags = _HEADER.unpack_from(wire)
    # RFC 5452 §9.1: match ID and question before trusting anything, so a spoofed or stray
    # datagram is dropped instead of failing the check.
    if reply_id != query.id:
        raise NotOurReply(f"reply ID {reply_id} is not the query ID {query.id}")
    if not flags & _QR:
        raise NotOurReply("QR bit clear: a query, not a reply")
    reply = _lean_reply(wire, query, flags)
    return reply if reply is not None else _full_reply(wire, query, reply_id)


def _full_reply(wire: bytes, query: Query, reply_id: int) -> Reply:
    """The reply through dnspython's whole message layer: every shape, and every error's words."""
    try:
        # one RR per RRset keeps wire order, duplicates and each record's own TTL.
        message = dns.message.from_wire(wire, one_rr_per_rrset=True, raise_on_truncation=True)
    except dns.message.Truncated as truncated:
        # RFC 2181 §9: a TC reply may hold part of the answer, cut anywhere by some servers;
        # dnspython hands over the records it read completely.
        message = truncated.message()  # type: ignore[no-untyped-call]  # not annotated in 2.9
    except Exception as error:  # dozens of rdata parsers, not all promising DNSException
        raise DnsCodecError(f"malformed reply: {error}") from None
    qname, qtype = _question(query.name, query.rdtype)  # parsed once per check, not per run
    # RFC 1035 §4.1.1: the opcode is copied from the query. Some servers drop the question
    # from FORMERR/NOTIMP replies, so only a question that is present must match.
    if message.opcode() != dns.opcode.QUERY:
        raise NotOurReply(f"reply opcode is {dns.opcode.to_text(message.opcode())}, not QUERY")
    asked = (qname, dns.rdataclass.IN, qtype)
    if message.question and [(q.name, q.rdclass, q.rdtype) for q in message.question] != [asked]:
        got = ", ".join(f"{q.name} {dns.rdataclass.to_text(q.rdclass)} "
                        f"{dns.rdatatype.to_text(q.rdtype)}" for q in message.question)
        raise NotOurReply(f"reply is for another question: {got}")
    records = [(rrset.name, rrset.rdtype, rrset.ttl, rdata) for rrset in message.answer
               if rrset.rdclass == dns.rdataclass.IN for rdata in rrset]
    return _reply(reply_id, int(message.flags), message.rcode(), records, qname, qtype)


# --- the common reply, read cheaply ------------------------------------------------------------
#
# dns.message.from_wire builds a Message of RRsets of Rdatasets of Rdata objects, converting
# every type and class to an enum on the way: some 100 µs a reply, a quarter of a check's
# CPU. The check reads the header, the answer records and the EDNS rcode bits only, so the
# common reply (one question, ours, no TC, no TSIG, every record of class IN) is walked
# record by record with dnspython's own wire parser, name parser and rdata classes, and no
# Message. Whatever that walk does not expect, it leaves to the full parse, which has the
# last word: the walk accepts only what the full parse accepts, with the same result
# (tests/codecs/test_dns_lean.py holds the two side by side over hostile bytes).

_COUNTS = struct.Struct("!HHHH")  # QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (RFC 1035 §4.1.1)
_RR = struct.Struct("!HHIH")  # TYPE, CLASS, TTL, RDLENGTH (RFC 1035 §4.1.3)
_LEAN_NOT = _TC | 0x7800  # TC, or an opcode other than QUERY (0): for the full parse
# A compression pointer to offset 12 (RFC 1035 §4.1.4), where the question's name starts:
# how servers write an answer's owner name when it is the name asked.
_TO_QUESTION = b"\xc0\x0c"
_IN = int(dns.rdataclass.IN)
# Types whose rdata holds no domain name, so that its text depends on its own bytes alone
# (a name may point into the rest of the message): their text is memoised by those bytes.
_SELF_CONTAINED = frozenset({int(_RT.A), int(_RT.AAAA), int(_RT.TXT), int(_RT.OPT)})
# Up to 1,024 rdata of up to 256 octets, each with a text of at most 4 characters an octet:
# the memo stays under 2 MiB whatever servers send.
_MEMO_BYTES = 256
# An answer record as both reads give it: owner, type, TTL, and the rdata (or its text).
_Record = tuple[dns.name.Name, int, int, dns.rdata.Rdata | str]


@functools.lru_cache(maxsize=4096)
def _question_wire(name: str, rdtype: str) -> bytes:
    """The question of the query, name lower-case, as the reply must repeat it (§4.1.2)."""
    qname, qtype = _question(name, rdtype)
    return cast(bytes, qname.to_wire()) + struct.pack("!HH", qtype, _IN)


@functools.lru_cache(maxsize=1024)
def _self_contained_text(rdclass: int, rdtype: int, data: bytes) -> str:
    # Only successes are memoised: a broken rdata raises again each time.
    rdata = dns.rdata.from_wire(dns.rdataclass.RdataClass.make(rdclass),
                                dns.rdatatype.RdataType.make(rdtype), data, 0, len(data))
    return rdata.to_text() if rdtype != _RT.OPT else ""


@functools.lru_cache(maxsize=4096)
def _rcode_text(value: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode.make(value))


def _lean_reply(wire: bytes, query: Query, flags: int) -> Reply | None:
    """The reply read without a Message, or None where the full parse must decide."""
    if flags & _LEAN_NOT:
        return None
    question = _question_wire(query.name, query.rdtype)
    end = 12 + len(question)
    # The name compares case-insensitively (RFC 4343; length octets are below 64, so
    # bytes.lower() touches letters only), type and class exactly.
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(wire, 4)
    if (qdcount != 1 or wire[12:end - 4].lower() != question[:-4]
            or wire[end - 4:end] != question[-4:]):
        return None  # no question (FORMERR), several, another one, or a compressed one
    qname, qtype = _question(query.name, query.rdtype)
    parser = dns.wire.Parser(wire, end)
    records: list[_Record] = []
    ednsflags = 0
    opt = False
    try:
        for section, count in enumerate((ancount, nscount, arcount)):
            for _ in range(count):
                at = parser.current
                if wire[at:at + 2] == _TO_QUESTION:
                    parser.get_bytes(2)
                    name = qname
                elif wire[at:at + 1] == b"\0":  # the root, as OPT's owner always is
                    parser.get_bytes(1)
                    name = dns.name.root
                else:
                    name = dns.name.from_wire_parser(parser)
                rdtype, rdclass, ttl, rdlen = _RR.unpack(parser.get_bytes(10))
                if rdtype == _RT.OPT:
                    # RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
                    if section != 2 or opt or name != dns.name.root:
                        return None
                    opt, ednsflags = True, ttl
                elif rdtype == _RT.TSIG or rdclass != _IN:
                    return None
                rdata: dns.rdata.Rdata | str
                if rdtype in _SELF_CONTAINED and rdlen <= _MEMO_BYTES:
                    rdata = _self_contained_text(rdclass, rdtype, parser.get_bytes(rdlen))
                else:
                    with parser.restrict_to(rdlen):
                        rdata = dns.rdata.from_wire_parser(rdclass, rdtype, parser)
                if section == 0:
                    # RFC 2181 §8: a TTL with the top bit set counts as zero, as dnspython has it.
                    records.append((name, rdtype, ttl if ttl <= 0x7FFFFFFF else 0, rdata))
    except Exception:  # any surprise is the full parse's to name
        return None
    if parser.remaining():
        return None  # trailing bytes: the full parse names them
    rcode = (flags & 0xF) | ((ednsflags >> 20) & 0xFF0)  # RFC 6891 §6.1.3
    return _reply(query.id, flags, rcode, records, qname, qtype)


def _reply(reply_id: int, flags: int, rcode: int,
           records: Sequence[_Record], qname: dns.name.Name, qtype: _RT) -> Reply:
    try:
        answers, ttls, cnames = _answers(records, qname, qtype)
    except Exception as error:  # e.g. a DNAME that makes a name too long (RFC 6672 §2.2)
        raise DnsCodecError(f"malformed reply: {error}") from None
    return Reply(
        id=reply_id,
        rcode=_rcode_text(rcode),
        truncated=bool(flags & _TC),
        authoritative=bool(flags & _AA),
        recursion_available=bool(flags & _RA),
        authenticated_data=bool(flags & _AD),
        answers=answers,
        answer_count=len(answers),
        min_ttl=min(ttls) if answers else None,
        cnames=cnames,
    )


def _answers(records: Sequence[_Record], qname: dns.name.Name, qtype: _RT,
             ) -> tuple[tuple[str, ...], list[int], tuple[str, ...]]:
    """The answers (text), the TTLs that bound them and the aliases followed, from the answer
    section's IN records in wire order."""
    names, ttls, cnames, current = {qname}, [], [], qname
    # RFC 1034 §3.6.2: a CNAME (or ANY) query gets the alias itself, which is not followed.
    if qtype not in (_RT.CNAME, _RT.ANY):
        # Each hop uses one record, so the loop is bounded; a repeated name ends a loop.
        for _ in records:
            hop = _next_hop(records, current)
            if hop is None or hop[0] in names:
                break
            current = hop[0]
            names.add(current)
            ttls.append(hop[1])
            cnames.append(current.to_text())
    answers: list[str] = []
    for name, rdtype, ttl, rdata in records:
        if name in names and qtype in (rdtype, _RT.ANY):
            answers.append(rdata if isinstance(rdata, str) else rdata.to_text())
            ttls.append(ttl)
    return tuple(answers), ttls, tuple(cnames)


def _next_hop(records: Sequence[_Record], name: dns.name.Name,
              ) -> tuple[dns.name.Name, int] | None:
    for owner, rdtype, ttl, rdata in records:
        if rdtype == _RT.CNAME and owner == name:
            return cast(dns.rdtypes.nsbase.NSBase, rdata).target, ttl
    # A DNAME (RFC 6672 §2.2) rewrites the owner suffix of names strictly below it. Servers
    # also synthesise the CNAME (§3.1), found above; this covers those that do not.
    for owner, rdtype, ttl, rdata in records:
        if rdtype == _RT.DNAME and name.is_subdomain(owner) and name != owner:
            target = cast(dns.rdtypes.nsbase.NSBase, rdata).target
            return name.relativize(owner).derelativize(target), ttl
    return None


def build_reply(query_wire: bytes, *, rcode: str = "NOERROR",
                answers: Sequence[tuple[str, int, str, str]] = (), truncated: bool = False,
                authenticated_data: bool = False, id: int | None = None) -> bytes:
    """For fake servers: a reply to `query_wire`, answers as (name, ttl, rdtype, rdata text)."""
    try:
        reply = dns.message.make_response(dns.message.from_wire(query_wire))
        reply.set_rcode(dns.rcode.from_text(rcode))
        for name, ttl, rdtype, text in answers:
            reply.answer.append(dns.rrset.from_text_list(
                dns.name.from_text(name), ttl, dns.rdataclass.IN, rdtype, [text],
                origin=dns.name.root, relativize=False))
        reply.flags |= dns.flags.TC if truncated else 0
        reply.flags |= dns.flags.AD if authenticated_data else 0
        if id is not None:
            reply.id = id
        # Up to the TCP limit: truncating for UDP is the fake's choice, made with `truncated`.
        return reply.to_wire(max_size=65535)
    except Exception as error:
        raise DnsCodecError(f"cannot build a reply: {error}") from None
