"""The cheap read of a reply beside dnspython's full parse: whenever the cheap read answers, it
answers exactly what the full parse does (rcode, flags, answers, TTLs, aliases), it never
accepts what the full parse refuses, and it does answer for the replies servers send."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rrset
import dns.tsig
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.codecs import dns as codec
from exporter.codecs.dns import DnsCodecError, Query, Reply, build_query

QID = 0x2345
WWW = "www.example.org."


def query(rdtype: str = "A", name: str = WWW) -> Query:
    return build_query(name, rdtype, id=QID)


def full(wire: bytes, q: Query) -> Reply | DnsCodecError:
    try:
        return codec._full_reply(wire, q, QID)
    except DnsCodecError as error:
        return error


def lean(wire: bytes, q: Query) -> Reply | None:
    return codec._lean_reply(wire, q, struct.unpack_from("!H", wire, 2)[0])


def agree(wire: bytes, q: Query) -> Reply | None:
    """The cheap read (None where it leaves the reply to the full parse), checked against the
    full parse: the same Reply, or None where the full parse refuses the bytes."""
    cheap, reference = lean(wire, q), full(wire, q)
    if isinstance(reference, DnsCodecError):
        assert cheap is None, (reference, cheap)
    elif cheap is not None:
        assert cheap == reference
    return cheap


def make(q: Query, records: Sequence[tuple[str, int, str, str]] = (), *,
         authority: Sequence[tuple[str, int, str, str]] = (), rcode: str = "NOERROR",
         flags: int = 0, edns: bool = True, options: Sequence[dns.edns.Option] = ()) -> bytes:
    """A reply to `q` built by dnspython itself, records as (name, ttl, type, rdata text)."""
    reply = dns.message.make_response(dns.message.from_wire(q.wire))
    if not edns:
        reply.use_edns(False)
    elif options:
        reply.use_edns(0, options=list(options))
    reply.set_rcode(dns.rcode.from_text(rcode))
    reply.flags |= flags
    for section, rows in ((reply.answer, records), (reply.authority, authority)):
        for name, ttl, rdtype, text in rows:
            section.append(dns.rrset.from_text_list(dns.name.from_text(name), ttl,
                                                    dns.rdataclass.IN, rdtype, [text]))
    wire: bytes = reply.to_wire(max_size=65535)
    return wire


SOA = ("example.org", 3600, "SOA", "ns.example.org. admin.example.org. 1 7200 900 86400 300")

# (type asked, the reply): replies the cheap read must take, and agree on.
TAKEN = [
    pytest.param("A", lambda q: make(q, [(WWW, 300, "A", "127.0.0.1"),
                                         (WWW, 200, "A", "127.0.0.2")]), id="A"),
    pytest.param("A", lambda q: make(q, [(WWW, 300, "A", "127.0.0.1")], edns=False),
                 id="A-without-EDNS"),
    pytest.param("AAAA", lambda q: make(q, [(WWW, 60, "AAAA", "2001:db8::1"),
                                            (WWW, 60, "AAAA", "::ffff:1.2.3.4")]), id="AAAA"),
    pytest.param("MX", lambda q: make(q, [(WWW, 3600, "MX", "10 mail.example.org."),
                                          (WWW, 3600, "MX", "20 mx.example.net.")]), id="MX"),
    pytest.param("TXT", lambda q: make(q, [(WWW, 10, "TXT", '"v=spf1 -all" "x\\255y"')]),
                 id="TXT"),
    # Longer than the memo of record texts keeps: read in place.
    pytest.param("TXT", lambda q: make(q, [(WWW, 10, "TXT", f'"{"a" * 250}" "{"b" * 100}"')]),
                 id="TXT-past-the-memo"),
    pytest.param("A", lambda q: make(q, [(WWW, 300, "CNAME", "web.example.org."),
                                         ("web.example.org", 60, "CNAME", "host.example.net."),
                                         ("host.example.net", 120, "A", "127.0.0.1"),
                                         ("unrelated.example.org", 5, "A", "10.0.0.1")]),
                 id="CNAME-chain"),
    pytest.param("CNAME", lambda q: make(q, [(WWW, 300, "CNAME", "web.example.org.")]),
                 id="CNAME-asked"),
    pytest.param("A", lambda q: make(q, [("example.org", 40, "DNAME", "example.net."),
                                         ("www.example.net", 50, "A", "1.2.3.4")]), id="DNAME"),
    pytest.param("A", lambda q: make(q, [(WWW, 9, "CNAME", "a.example.org."),
                                         ("a.example.org", 9, "CNAME", WWW)]), id="CNAME-loop"),
    pytest.param("ANY", lambda q: make(q, [(WWW, 9, "A", "1.1.1.1"), (WWW, 8, "TXT", "x"),
                                           ("x.org", 1, "A", "2.2.2.2")]), id="ANY"),
    pytest.param("A", lambda q: make(q, authority=[SOA], rcode="NXDOMAIN"), id="NXDOMAIN-SOA"),
    pytest.param("A", lambda q: make(q, rcode="SERVFAIL", flags=dns.flags.RA), id="SERVFAIL"),
    pytest.param("A", lambda q: make(q, rcode="BADVERS"), id="extended-rcode"),
    pytest.param("A", lambda q: make(q, [(WWW, 5, "A", "1.2.3.4")],
                                     flags=dns.flags.AD | dns.flags.AA | dns.flags.RA),
                 id="AD-AA-RA"),
    pytest.param("A", lambda q: make(q, [(WWW, 5, "A", "1.2.3.4")], options=[
        dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 24)]), id="EDNS-cookie"),
    pytest.param("A", lambda q: make(q, [(WWW, 5, "A", "1.2.3.4")]).replace(b"www", b"WwW", 1),
                 id="0x20-question"),
]


@pytest.mark.parametrize(("rdtype", "reply"), TAKEN)
def test_cheap_read_is_taken_and_agrees(rdtype: str, reply: object) -> None:
    q = query(rdtype)
    wire = reply(q)  # type: ignore[operator]
    cheap = agree(wire, q)
    assert cheap is not None, "the cheap read left a common reply to the full parse"
    assert codec.parse_reply(wire, q) == cheap


def test_the_check_reads_the_same_fields() -> None:
    q = query()
    wire = make(q, [(WWW, 300, "CNAME", "web.example.org."),
                    ("web.example.org", 60, "A", "127.0.0.1"),
                    ("web.example.org", 70, "A", "127.0.0.2")],
                rcode="BADVERS", flags=dns.flags.AD | dns.flags.RA)
    reply = lean(wire, q)
    assert reply == Reply(id=QID, rcode="BADVERS", truncated=False, authoritative=False,
                          recursion_available=True, authenticated_data=True,
                          answers=("127.0.0.1", "127.0.0.2"), answer_count=2, min_ttl=60,
                          cnames=("web.example.org.",))


def test_ttl_with_top_bit_set_counts_as_zero() -> None:
    q = query()
    wire = bytearray(make(q, [(WWW, 300, "A", "1.2.3.4")]))
    ttl_at = 12 + len(q.name) + 1 + 4 + 2 + 4  # question, compressed owner, type, class
    wire[ttl_at:ttl_at + 4] = b"\x80\x00\x00\x01"
    assert agree(bytes(wire), q) is not None
    assert codec.parse_reply(bytes(wire), q).min_ttl == 0


def _opt_in_answer(q: Query) -> bytes:
    wire = bytearray(make(q))
    # Move the OPT record from the additional section to the answer section.
    wire[6:12] = struct.pack("!HHH", 1, 0, 0)
    return bytes(wire)


def _two_opts(q: Query) -> bytes:
    wire = bytearray(make(q))
    opt = bytes(wire[-11:])
    wire[10:12] = struct.pack("!H", 2)
    return bytes(wire) + opt


def _tsig(q: Query) -> bytes:
    reply = dns.message.make_response(dns.message.from_wire(q.wire))
    reply.use_tsig(dns.tsig.Key("key.", b"secret"))
    wire: bytes = reply.to_wire()
    return wire


def _chaos_record(q: Query) -> bytes:
    reply = dns.message.make_response(dns.message.from_wire(q.wire))
    reply.answer.append(dns.rrset.from_text(WWW, 5, "CH", "TXT", '"x"'))
    wire: bytes = reply.to_wire()
    return wire


def _bad_a(q: Query) -> bytes:
    wire = bytearray(make(q, [(WWW, 5, "A", "1.2.3.4")]))
    rdlen_at = 12 + len(q.name) + 1 + 4 + 2 + 8
    wire[rdlen_at:rdlen_at + 2] = b"\x00\x05"  # five octets of an A record (and so on)
    return bytes(wire)


def _compressed_question(q: Query) -> bytes:
    # A question name that is a pointer into the header: legal to no one, read by no one here.
    wire = make(q)
    return wire[:12] + b"\xc0\x00" + wire[12 + len(q.name) + 1:]


# Shapes the cheap read leaves to the full parse, which accepts or refuses them in its words.
LEFT = [
    pytest.param(lambda q: make(q, [(WWW, 5, "A", "1.2.3.4")], flags=dns.flags.TC), id="TC"),
    pytest.param(lambda q: struct.pack("!6H", QID, 0x8183, 0, 0, 0, 0), id="no-question"),
    pytest.param(lambda q: make(query(name="other.example.org.")), id="other-question"),
    pytest.param(lambda q: make(query("AAAA")), id="other-type"),
    pytest.param(lambda q: make(q)[:2] + b"\xa8\x00" + make(q)[4:], id="opcode-UPDATE"),
    pytest.param(_opt_in_answer, id="OPT-in-answer"),
    pytest.param(_two_opts, id="two-OPTs"),
    pytest.param(_tsig, id="TSIG"),
    pytest.param(_chaos_record, id="class-CH"),
    pytest.param(_bad_a, id="A-of-five-octets"),
    pytest.param(lambda q: make(q, [(WWW, 5, "A", "1.2.3.4")]) + b"\0", id="trailing-octet"),
    pytest.param(lambda q: make(q, [(WWW, 5, "A", "1.2.3.4")])[:-3], id="cut-short"),
    pytest.param(_compressed_question, id="question-pointer"),
]


@pytest.mark.parametrize("reply", LEFT)
def test_unusual_shapes_go_to_the_full_parse(reply: object) -> None:
    q = query()
    wire = reply(q)  # type: ignore[operator]
    if wire[4:6] == b"\x00\x00" or wire[2] & 0x78 or wire[2] & 0x02:
        assert lean(wire, q) is None
    assert agree(wire, q) is None


def test_a_broken_record_is_refused_every_time() -> None:
    # The memo of record texts keeps successes only: the same broken bytes fail again.
    q = query()
    for _ in range(2):
        assert lean(_bad_a(q), q) is None
        with pytest.raises(DnsCodecError, match="malformed reply"):
            codec.parse_reply(_bad_a(q), q)


# --- generated replies, and hostile bytes made from them ----------------------------------------

LABEL = st.text(alphabet="abcXYZ019-", min_size=1, max_size=8)
NAMES = st.lists(LABEL, min_size=1, max_size=3).map(lambda labels: ".".join(labels) + ".")
OWNERS = st.one_of(st.just(WWW), NAMES)
RDATA = st.one_of(
    st.tuples(st.just("A"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("AAAA"), st.ip_addresses(v=6).map(str)),
    st.tuples(st.just("CNAME"), NAMES),
    st.tuples(st.just("MX"), st.tuples(st.integers(0, 65535), NAMES).map(
        lambda mx: f"{mx[0]} {mx[1]}")),
    st.tuples(st.just("TXT"), st.text(alphabet="ab \"\\;", max_size=20).map(
        lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')),
)
RECORDS = st.lists(st.tuples(OWNERS, st.integers(0, 2**31 - 1), RDATA).map(
    lambda r: (r[0], r[1], r[2][0], r[2][1])), max_size=6)
RCODES = st.sampled_from(["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "BADVERS", "BADCOOKIE"])
FLAGS = st.sampled_from([0, dns.flags.AA, dns.flags.RA, dns.flags.AD,
                         dns.flags.AA | dns.flags.RA | dns.flags.AD])


@settings(max_examples=300, deadline=None)
@given(rdtype=st.sampled_from(["A", "AAAA", "MX", "TXT", "CNAME", "ANY"]), records=RECORDS,
       rcode=RCODES, flags=FLAGS, edns=st.booleans())
def test_generated_replies_agree(rdtype: str, records: list[tuple[str, int, str, str]],
                                 rcode: str, flags: int, edns: bool) -> None:
    q = query(rdtype)
    wire = make(q, records, rcode=rcode if edns or rcode in ("NOERROR", "NXDOMAIN", "SERVFAIL",
                                                              "REFUSED") else "NOERROR",
                flags=flags, edns=edns)
    assert agree(wire, q) is not None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=RECORDS, rdtype=st.sampled_from(["A", "MX", "ANY"]), data=st.data())
def test_hostile_bytes_never_make_them_differ(records: list[tuple[str, int, str, str]],
                                              rdtype: str, data: st.DataObject) -> None:
    q = query(rdtype)
    wire = bytearray(make(q, records))
    # Past the ID and flags: those are screened before either read (parse_reply).
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(4, len(wire)), label="at")
        edit = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]), label="edit")
        if edit == "flip" and at < len(wire):
            wire[at] ^= 1 << data.draw(st.integers(0, 7))
        elif edit == "cut":
            del wire[at:at + data.draw(st.integers(1, 8))]
        elif edit == "insert":
            wire[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif at < len(wire):
            wire[at] = data.draw(st.sampled_from([0x00, 0x29, 0xC0, 0x0C, 0xFF, 0x3F, 0x40]))
    if len(wire) >= 12:
        agree(bytes(wire), q)
