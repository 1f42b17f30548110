import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.codecs.dns import (
    DnsCodecError,
    NotOurReply,
    Query,
    Reply,
    build_query,
    build_reply,
    check_answer_text,
    looks_like_reply_to,
    parse_name,
    parse_rdtype,
    parse_reply,
    rcode_names,
    renumbered,
)

QID = 0x1234
WWW = "www.example.org."
# The question of a query for www.example.org A/IN, as RFC 1035 §4.1.2 lays it out.
WWW_A_QUESTION = b"\x03www\x07example\x03org\x00\x00\x01\x00\x01"


def query(name: str = WWW, rdtype: str = "A", **options: bool) -> Query:
    return build_query(name, rdtype, id=QID, **options)


def header(wire: bytes) -> tuple[int, int, int, int, int, int]:
    fields: tuple[int, int, int, int, int, int] = struct.unpack_from("!HHHHHH", wire)
    return fields


def opt_record(wire: bytes) -> tuple[int, int, int, int, int]:
    """(type, payload, extended rcode and version, flags, rdlength) of a query's trailing OPT."""
    assert wire[-11] == 0  # the root owner name (RFC 6891 §6.1.2)
    fields: tuple[int, int, int, int, int] = struct.unpack("!HHHHH", wire[-10:])
    return fields


# --- round trips -------------------------------------------------------------------------------

CHAIN = [
    (WWW, 300, "CNAME", "web.example.org"),
    ("web.example.org", 60, "CNAME", "host.example.net."),
    ("host.example.net", 120, "A", "127.0.0.1"),
    ("host.example.net", 90, "A", "127.0.0.2"),
    ("unrelated.example.org", 5, "A", "10.0.0.1"),
]


@pytest.mark.parametrize(
    ("rdtype", "answers", "options", "expected"),
    [
        pytest.param(
            "A", [(WWW, 300, "A", "127.0.0.1"), (WWW, 200, "A", "127.0.0.2")], {},
            {"answers": ("127.0.0.1", "127.0.0.2"), "min_ttl": 200}, id="A"),
        pytest.param(
            "AAAA", [(WWW, 60, "AAAA", "2001:0db8:0:0::1")], {},
            {"answers": ("2001:db8::1",), "min_ttl": 60}, id="AAAA"),
        pytest.param(
            "MX", [(WWW, 3600, "MX", "10 mail.example.org"), (WWW, 3600, "MX", "20 mx2.ex.net.")],
            {}, {"answers": ("10 mail.example.org.", "20 mx2.ex.net."), "min_ttl": 3600}, id="MX"),
        pytest.param(
            "TXT", [(WWW, 10, "TXT", '"v=spf1 -all"')], {},
            {"answers": ('"v=spf1 -all"',), "min_ttl": 10}, id="TXT"),
        pytest.param(
            "A", CHAIN, {},
            {"answers": ("127.0.0.1", "127.0.0.2"), "min_ttl": 60,
             "cnames": ("web.example.org.", "host.example.net.")}, id="CNAME-chain"),
        pytest.param(
            "CNAME", CHAIN, {},
            {"answers": ("web.example.org.",), "min_ttl": 300}, id="CNAME-query-not-followed"),
        pytest.param(
            "A", CHAIN[:2], {},
            {"answers": (), "min_ttl": None, "cnames": ("web.example.org.", "host.example.net.")},
            id="chain-without-answer"),
        pytest.param(
            "A",
            [("example.org", 40, "DNAME", "example.net"), ("www.example.net", 50, "A", "1.2.3.4")],
            {}, {"answers": ("1.2.3.4",), "min_ttl": 40, "cnames": ("www.example.net.",)},
            id="DNAME"),
        pytest.param(
            "A", [("host.example.net", 7, "A", "127.0.0.9"), (WWW, 8, "CNAME", "host.example.net")],
            {}, {"answers": ("127.0.0.9",), "min_ttl": 7, "cnames": ("host.example.net.",)},
            id="CNAME-after-its-target"),
        pytest.param(
            "A", [(WWW, 9, "CNAME", "a.example.org"), ("a.example.org", 9, "CNAME", WWW)], {},
            {"answers": (), "cnames": ("a.example.org.",)}, id="CNAME-loop"),
        pytest.param(
            "ANY", [(WWW, 9, "A", "1.1.1.1"), (WWW, 8, "TXT", "x"), ("x.org", 1, "A", "2.2.2.2")],
            {}, {"answers": ("1.1.1.1", '"x"'), "min_ttl": 8}, id="ANY"),
        pytest.param(
            "A", [(WWW, 9, "A", "1.1.1.1"), (WWW, 9, "A", "1.1.1.1")], {},
            {"answers": ("1.1.1.1", "1.1.1.1")}, id="duplicates-kept"),
        pytest.param("A", [], {"rcode": "NXDOMAIN"}, {"rcode": "NXDOMAIN"}, id="NXDOMAIN"),
        pytest.param("A", [], {"rcode": "SERVFAIL"}, {"rcode": "SERVFAIL"}, id="SERVFAIL"),
        pytest.param("A", [], {"rcode": "BADVERS"}, {"rcode": "BADVERS"}, id="extended-rcode"),
        pytest.param(
            "A", [(WWW, 5, "A", "1.2.3.4")], {"truncated": True},
            {"truncated": True, "answers": ("1.2.3.4",)}, id="TC"),
        pytest.param(
            "A", [(WWW, 5, "A", "1.2.3.4")], {"authenticated_data": True},
            {"authenticated_data": True}, id="AD"),
    ],
)
def test_round_trip(rdtype: str, answers: list[tuple[str, int, str, str]],
                    options: dict[str, object], expected: dict[str, object]) -> None:
    q = query(rdtype=rdtype)
    reply = parse_reply(build_reply(q.wire, answers=answers, **options), q)  # type: ignore[arg-type]
    defaults = {"id": QID, "rcode": "NOERROR", "truncated": False, "authoritative": False,
                "recursion_available": False, "authenticated_data": False, "cnames": ()}
    for field, value in {**defaults, **expected}.items():
        assert getattr(reply, field) == value, field
    assert reply.answer_count == len(reply.answers)
    assert (reply.min_ttl is None) == (not reply.answers)
    assert reply.rcode in rcode_names()


def test_rcode_names() -> None:
    names = rcode_names()
    for rcode in ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
                  "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "BADVERS"):
        assert rcode in names
    assert len(set(names)) == len(names)


def test_ttl_with_top_bit_set_counts_as_zero() -> None:
    # RFC 2181 §8: a TTL with the top bit set is treated as zero.
    q = query()
    wire = bytearray(build_reply(q.wire, answers=[(WWW, 300, "A", "1.2.3.4")]))
    ttl_at = 12 + len(WWW_A_QUESTION) + 2 + 4  # compressed owner, type, class
    wire[ttl_at:ttl_at + 4] = b"\x80\x00\x00\x00"
    assert parse_reply(bytes(wire), q).min_ttl == 0


def test_reply_without_question_is_accepted() -> None:
    # Some servers leave the question out of FORMERR/NOTIMP/NXDOMAIN replies.
    wire = struct.pack("!HHHHHH", QID, 0x8183, 0, 0, 0, 0)
    reply = parse_reply(wire, query())
    assert (reply.rcode, reply.answers, reply.recursion_available) == ("NXDOMAIN", (), True)


def test_question_compared_case_insensitively() -> None:
    # Resolvers echo a 0x20-randomised question as it was sent; ours is lower-case, a server
    # may still change case (RFC 4343).
    q = query()
    wire = build_reply(q.wire, answers=[(WWW, 5, "A", "1.2.3.4")]).replace(b"www", b"WwW", 1)
    assert parse_reply(wire, q).answers == ("1.2.3.4",)


# --- the query on the wire ---------------------------------------------------------------------

@pytest.mark.parametrize(("recursion_desired", "flags"), [(True, 0x0100), (False, 0x0000)])
def test_query_header(recursion_desired: bool, flags: int) -> None:
    q = query(recursion_desired=recursion_desired)
    assert header(q.wire) == (QID, flags, 1, 0, 0, 1)
    assert q.wire[12:12 + len(WWW_A_QUESTION)] == WWW_A_QUESTION
    assert (q.id, q.name, q.rdtype) == (QID, WWW, "A")


@pytest.mark.parametrize(("dnssec_ok", "ednsflags"), [(False, 0), (True, 0x8000)])
def test_query_edns(dnssec_ok: bool, ednsflags: int) -> None:
    # RFC 6891 §6.1.2: type 41, class = UDP payload size, TTL = ext-rcode, version, DO|Z.
    assert opt_record(query(dnssec_ok=dnssec_ok).wire) == (41, 1232, 0, ednsflags, 0)


def test_query_normalises_name_and_type() -> None:
    q = build_query("WWW.Example.ORG", "mx", id=7)
    assert (q.name, q.rdtype, header(q.wire)[0]) == (WWW, "MX", 7)
    assert build_query("Bücher.example", "a").name == "xn--bcher-kva.example."


def test_query_ids_are_random_16_bit() -> None:
    ids = {build_query("example.org").id for _ in range(64)}
    assert len(ids) > 50
    assert all(0 <= i <= 0xFFFF for i in ids)
    for q in (build_query("example.org", id=0), build_query("example.org", id=0xFFFF)):
        assert header(q.wire)[0] == q.id


@pytest.mark.parametrize(
    ("name", "rdtype", "id", "message"),
    [
        ("a..b", "A", None, "invalid DNS name 'a..b': empty label"),
        ("a" * 64 + ".org", "A", None, "a label is longer than 63 octets"),
        ("", "A", None, "empty DNS name"),
        ("example.org", "XYZ", None, "unknown DNS record type 'XYZ'"),
        ("example.org", "AXFR", None, "DNS record type AXFR cannot be asked for in a query"),
        ("example.org", "A", 65536, "query ID 65536 is not a 16-bit number"),
        ("example.org", "A", -1, "query ID -1 is not a 16-bit number"),
    ],
)
def test_build_query_errors(name: str, rdtype: str, id: int | None, message: str) -> None:
    with pytest.raises(DnsCodecError) as caught:
        build_query(name, rdtype, id=id)
    assert message in str(caught.value)
    assert type(caught.value) is DnsCodecError


# --- replies to someone else -------------------------------------------------------------------

def test_wrong_id_is_not_ours() -> None:
    q = query()
    wire = build_reply(q.wire, id=QID + 1)
    assert not looks_like_reply_to(wire, q)
    with pytest.raises(NotOurReply, match="reply ID 4661 is not the query ID 4660"):
        parse_reply(wire, q)


def test_echoed_query_is_not_ours() -> None:
    q = query()
    assert not looks_like_reply_to(q.wire, q)
    with pytest.raises(NotOurReply, match="QR bit clear"):
        parse_reply(q.wire, q)


@pytest.mark.parametrize(("name", "rdtype"), [("other.example.org", "A"), (WWW, "AAAA")])
def test_other_question_is_not_ours(name: str, rdtype: str) -> None:
    other = build_query(name, rdtype, id=QID)
    rdata = "::1" if rdtype == "AAAA" else "1.1.1.1"
    wire = build_reply(other.wire, answers=[(name, 5, rdtype, rdata)])
    assert looks_like_reply_to(wire, query())  # only the full parse sees the question
    with pytest.raises(NotOurReply, match=f"reply is for another question: {name.rstrip('.')}."):
        parse_reply(wire, query())


def test_two_questions_are_not_ours() -> None:
    q = query()
    reply = bytearray(build_reply(q.wire))
    reply[4:6] = b"\x00\x02"  # QDCOUNT 2, the question repeated
    end = 12 + len(WWW_A_QUESTION)
    wire = bytes(reply[:end]) + WWW_A_QUESTION + bytes(reply[end:])
    with pytest.raises(NotOurReply, match="another question"):
        parse_reply(wire, q)


def test_other_opcode_is_not_ours() -> None:
    q = query()
    wire = bytearray(build_reply(q.wire))
    wire[2] |= 2 << 3  # opcode STATUS
    with pytest.raises(NotOurReply, match="opcode is STATUS"):
        parse_reply(bytes(wire), q)


def test_looks_like_reply_to() -> None:
    q = query()
    wire = build_reply(q.wire)
    assert looks_like_reply_to(wire, q)
    assert looks_like_reply_to(wire[:12], q)
    assert not looks_like_reply_to(wire[:11], q)
    assert not looks_like_reply_to(b"", q)


# --- garbage -----------------------------------------------------------------------------------

VALID_QUERY = query()
VALID_REPLY = build_reply(VALID_QUERY.wire, answers=CHAIN)


def parse_or_codec_error(wire: bytes) -> None:
    try:
        assert isinstance(parse_reply(wire, VALID_QUERY), Reply)
    except DnsCodecError as error:
        assert str(error)


@pytest.mark.parametrize("length", [0, 1, 7, 11])
def test_short_reply(length: int) -> None:
    with pytest.raises(DnsCodecError) as caught:
        parse_reply(VALID_REPLY[:length], VALID_QUERY)
    assert str(caught.value) == f"reply is {length} bytes, shorter than a DNS header"
    assert type(caught.value) is DnsCodecError


def test_every_prefix_of_a_reply_is_an_error() -> None:
    for length in range(len(VALID_REPLY)):
        with pytest.raises(DnsCodecError):
            parse_reply(VALID_REPLY[:length], VALID_QUERY)
    assert parse_reply(VALID_REPLY, VALID_QUERY).answer_count == 2


def test_every_prefix_of_a_truncated_reply_parses_what_is_there() -> None:
    wire = build_reply(VALID_QUERY.wire, answers=CHAIN, truncated=True)
    counts = []
    for length in range(12, len(wire) + 1):
        reply = parse_reply(wire[:length], VALID_QUERY)
        assert reply.truncated
        counts.append(reply.answer_count)
    assert counts == sorted(counts)
    assert counts[-1] == 2


def test_trailing_junk_is_malformed() -> None:
    with pytest.raises(DnsCodecError, match=r"^malformed reply: "):
        parse_reply(VALID_REPLY + b"\x00", VALID_QUERY)


@settings(max_examples=400)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes(wire: bytes, ours: bool) -> None:
    if ours and len(wire) >= 12:
        # Our ID and QR, so the bytes reach the full parser instead of NotOurReply.
        wire = struct.pack("!HB", QID, wire[2] | 0x80) + wire[3:]
    parse_or_codec_error(wire)


@settings(max_examples=400)
@given(st.lists(st.tuples(st.integers(0, len(VALID_REPLY) - 1), st.integers(0, 255)),
                min_size=1, max_size=8),
       st.integers(0, len(VALID_REPLY) + 8), st.binary(max_size=8))
def test_mutated_reply(edits: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    wire = bytearray(VALID_REPLY)
    for at, value in edits:
        wire[at] = value
    parse_or_codec_error(bytes(wire[:cut]) + tail)


def test_build_reply_errors() -> None:
    with pytest.raises(DnsCodecError, match=r"^cannot build a reply: "):
        build_reply(b"\x00" * 5)
    with pytest.raises(DnsCodecError, match=r"^cannot build a reply: "):
        build_reply(VALID_QUERY.wire, answers=[(WWW, 5, "A", "not-an-address")])
    with pytest.raises(DnsCodecError, match=r"^cannot build a reply: "):
        build_reply(VALID_QUERY.wire, rcode="NOPE")


# --- config validation -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [("a", "A"), ("mx", "MX"), ("Aaaa", "AAAA"), ("TYPE65", "HTTPS"), ("type1", "A"),
     ("TYPE12345", "TYPE12345"), ("ANY", "ANY"), ("caa", "CAA"), ("SRV", "SRV")],
)
def test_parse_rdtype(text: str, expected: str) -> None:
    assert parse_rdtype(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("XYZ", "unknown DNS record type 'XYZ'"), ("", "unknown DNS record type ''"),
     ("1", "unknown DNS record type '1'"), ("A ", "unknown DNS record type 'A '"),
     ("TYPE65536", "unknown DNS record type 'TYPE65536'")]
    + [(meta, f"DNS record type {meta} cannot be asked for in a query; use a data type such as "
               "A, AAAA, MX, TXT, or ANY")
       for meta in ("OPT", "TSIG", "TKEY", "AXFR", "IXFR", "MAILA", "MAILB")]
    + [("NONE", "DNS record type TYPE0 cannot be asked for in a query; use a data type such as "
                "A, AAAA, MX, TXT, or ANY")],
)
def test_parse_rdtype_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rdtype(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("example.org", "example.org."), ("Example.ORG.", "example.org."), (".", "."),
     ("localhost", "localhost."), ("_sip._tcp.example.org", "_sip._tcp.example.org."),
     ("Bücher.example", "xn--bcher-kva.example."),
     ("My\\032Printer.local", "my\\032printer.local."),
     ("a" * 63 + ".org", "a" * 63 + ".org."), (".".join(["a" * 63] * 3 + ["a" * 61]),
                                               ".".join(["a" * 63] * 3 + ["a" * 61]) + ".")],
)
def test_parse_name(text: str, expected: str) -> None:
    assert parse_name(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty DNS name"),
     ("a..b", "invalid DNS name 'a..b': empty label (a leading dot or two dots in a row)"),
     (".org", "invalid DNS name '.org': empty label (a leading dot or two dots in a row)"),
     ("a" * 64, f"invalid DNS name '{'a' * 64}': a label is longer than 63 octets"),
     ("ü" * 60, f"invalid DNS name '{'ü' * 60}': a label is longer than 63 octets"),
     (".".join(["a" * 63] * 4), f"invalid DNS name '{'.'.join(['a' * 63] * 4)}': "
                                "longer than 255 octets"),
     (" example.org", "invalid DNS name ' example.org': contains whitespace"),
     ("exa mple.org", "invalid DNS name 'exa mple.org': contains whitespace"),
     ("bad\\", "invalid DNS name 'bad\\\\': An escaped code in a text format of DNS name is "
               "invalid.")],
)
def test_parse_name_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_name(text)
    assert str(caught.value) == message


@given(st.text(max_size=300))
def test_parse_name_raises_only_value_error(text: str) -> None:
    try:
        assert parse_name(text).endswith(".")
    except ValueError as error:
        assert str(error)


@pytest.mark.parametrize(
    ("rdtype", "text", "expected"),
    [("A", "127.0.0.1", "127.0.0.1"), ("AAAA", "::1", "::1"), ("aaaa", "0:0::0:1", "::1"),
     ("MX", "10 mail.example.org", "10 mail.example.org."),
     ("MX", "10 Mail.Example.org.", "10 Mail.Example.org."),
     ("TXT", '"v=spf1 -all"', '"v=spf1 -all"'), ("TXT", "v=spf1", '"v=spf1"'),
     ("CNAME", "host.example.net", "host.example.net."),
     ("SRV", "0 5 5060 sip.example.org", "0 5 5060 sip.example.org.")],
)
def test_check_answer_text(rdtype: str, text: str, expected: str) -> None:
    assert check_answer_text(rdtype, text) == expected


@pytest.mark.parametrize(
    ("rdtype", "text", "message"),
    [("A", "127.000.000.001",
      "'127.000.000.001' is not a valid A record: Text input is malformed."),
     ("A", "foo", "'foo' is not a valid A record: Text input is malformed."),
     ("A", "1.2.3.4 5", "'1.2.3.4 5' is not a valid A record: expected EOL or EOF, got 3 \"5\""),
     ("AAAA", "127.0.0.1", "'127.0.0.1' is not a valid AAAA record: Text input is malformed."),
     ("MX", "mail.example.org",
      "'mail.example.org' is not a valid MX record: expecting an integer"),
     ("XYZ", "1", "unknown DNS record type 'XYZ'")],
)
def test_check_answer_text_errors(rdtype: str, text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_answer_text(rdtype, text)
    assert str(caught.value) == message


@given(st.sampled_from(["A", "AAAA", "MX", "TXT", "SRV", "CAA", "HTTPS", "SOA"]),
       st.text(max_size=80))
def test_check_answer_text_raises_only_value_error(rdtype: str, text: str) -> None:
    try:
        assert check_answer_text(rdtype, text)
    except ValueError as error:
        assert str(error)


def test_answers_match_checked_texts() -> None:
    # What config's expect_answers holds compares equal to what parse_reply reports.
    q = query(rdtype="MX")
    reply = parse_reply(build_reply(q.wire, answers=[(WWW, 5, "MX", "10 mail.example.org")]), q)
    assert reply.answers == (check_answer_text("MX", "10 mail.example.org"),)


def test_renumbered_changes_only_the_id() -> None:
    query = build_query("host.test", "MX", id=0x1234)
    again = renumbered(query, 0xBEEF)
    assert (again.id, again.name, again.rdtype) == (0xBEEF, query.name, query.rdtype)
    assert again.wire[:2] == b"\xbe\xef" and again.wire[2:] == query.wire[2:]
    assert renumbered(query).wire[2:] == query.wire[2:]
    with pytest.raises(DnsCodecError, match="query ID 65536 is not a 16-bit number"):
        renumbered(query, 65536)
