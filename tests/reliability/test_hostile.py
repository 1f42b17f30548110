"""Hostile input: every codec and the config loader, fed random and mutated bytes and TOML.

A codec may raise its own error type and nothing else, whatever arrives; the config loader
raises ConfigError and nothing else; `check-config` exits 0 or 2 and never prints a traceback.
Mutations start from valid inputs (a real DNS reply, NTP packet, TCP_INFO, struct timex,
certificate), so they reach past the first length check into the decoding itself.

Every module of exporter/codecs must have an entry in CODECS: a new codec fails
`test_every_codec_is_fuzzed` until it is added here.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pkgutil
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter.codecs
from exporter.checks import KINDS, udp
from exporter.checks.base import COMMON_KEYS
from exporter.cli.main import check_config
from exporter.codecs import (
    availability,
    dns,
    errqueue,
    grpc,
    icmp,
    metrics_proto,
    ntp,
    target_groups,
    tcp_info,
    timex,
    x509,
    yaml_document,
)
from exporter.config.load import load_check, load_text, tomllib
from exporter.errors import ConfigError
from exporter.web import webconfig
from tests.support.certs import DAY, Authority

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- seeds: valid inputs to mutate -----------------------------------------------------------

QUERY = dns.build_query("host.test.", "A", id=0x1234)


def _dns_reply() -> bytes:
    return dns.build_reply(QUERY.wire, answers=[("host.test.", 60, "A", "127.0.0.5"),
                                                ("host.test.", 60, "A", "127.0.0.6")])


NTP_ORIGIN = 0x0123456789ABCDEF


def _ntp_reply() -> bytes:
    return ntp.encode(ntp.Packet(
        leap=0, version=4, mode=4, stratum=2, poll=6, precision=-20, root_delay=0x80,
        root_dispersion=0x100, reference_id=b"\x7f\x00\x00\x01", reference=NTP_ORIGIN - 1000,
        origin=NTP_ORIGIN, receive=NTP_ORIGIN + 100, transmit=NTP_ORIGIN + 200))


def _tcp_info() -> bytes:
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        data = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, tcp_info.REQUEST_SIZE)
        server.accept()[0].close()
        return data


LAYOUTS = [timex.layout(size, order) for size in (4, 8) for order in ("little", "big")]


def _timex() -> bytes:
    layout = LAYOUTS[3]  # LP64 big-endian; the other layouts read it as garbage, as they should
    values = [1000 * (i + 1) for i in range(len(layout.struct.unpack(bytes(layout.size))))]
    return layout.struct.pack(*values)


def _certificate() -> bytes:
    starts = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    return Authority("hostile.test", starts=starts, ends=starts + 90 * DAY, serial=7).der()


def _icmp_error_v4() -> bytes:
    """A raw IPv4 socket's time exceeded, outer header first, quoting an echo of ours."""
    def ipv4(source: bytes, destination: bytes, payload: bytes) -> bytes:
        return bytes([0x45, 0]) + (20 + len(payload)).to_bytes(2, "big") + bytes(
            [0, 1, 0, 0, 64, 1, 0, 0]) + source + destination + payload

    quoted = ipv4(b"\x0a\0\0\x01", b"\x0a\0\0\x09", icmp.build_echo(4, 7, 8, b"x" * 8))
    error = bytes([11, 0, 0, 0, 0, 0, 0, 0]) + quoted
    error = error[:2] + icmp.checksum(error).to_bytes(2, "big") + error[4:]
    return ipv4(b"\x0a\0\0\x02", b"\x0a\0\0\x01", error)


def _icmp_error_v6() -> bytes:
    quoted = (bytes([0x60, 0, 0, 0, 0, 16, 58, 1]) + bytes(15) + b"\x01" + bytes(15) + b"\x02"
              + icmp.build_echo(6, 7, 8, b"x" * 8))
    return bytes([3, 0, 0, 0, 0, 0, 0, 0]) + quoted


def _ntp_judge(data: bytes) -> object:
    # The origin the mutated packet carries, so that mutations get past the bogus test.
    origin = int.from_bytes(data[24:32], "big") if len(data) >= 32 else NTP_ORIGIN
    packet = ntp.read_reply(data, origin)
    return ntp.sample(packet, 1_700_000_000_000_000_000, 1_700_000_000_000_100_000)


@dataclass(frozen=True)
class Codec:
    """One entry point of a codec: hostile bytes in, its own `error` or a value out."""

    name: str
    error: type[Exception]
    decode: Callable[[bytes], object]
    seed: Callable[[], bytes]


CODECS: dict[str, list[Codec]] = {
    "dns": [
        Codec("parse_reply", dns.DnsCodecError, lambda b: dns.parse_reply(b, QUERY), _dns_reply),
        Codec("looks_like_reply_to", dns.DnsCodecError,
              lambda b: dns.looks_like_reply_to(b, QUERY), _dns_reply),
        Codec("build_reply", dns.DnsCodecError, dns.build_reply, lambda: QUERY.wire),
    ],
    "ntp": [
        Codec("parse", ntp.NtpCodecError, ntp.parse, _ntp_reply),
        Codec("read_reply+sample", ntp.NtpCodecError, _ntp_judge, _ntp_reply),
        Codec("reference_text", ntp.NtpCodecError,
              lambda b: ntp.reference_text(b[:4], b[4] if len(b) > 4 else 0), _ntp_reply),
    ],
    "icmp": [
        Codec("parse v4 raw", icmp.IcmpCodecError, lambda b: icmp.parse(b, 4, True),
              _icmp_error_v4),
        Codec("parse v6", icmp.IcmpCodecError, lambda b: icmp.parse(b, 6), _icmp_error_v6),
        Codec("parse v4 echo", icmp.IcmpCodecError, lambda b: icmp.parse(b, 4),
              lambda: icmp.build_echo(4, 1, 2, b"abcdefgh")),
    ],
    "errqueue": [
        Codec("parse", errqueue.ErrQueueCodecError, errqueue.parse,
              lambda: errqueue.build(errqueue.ExtendedError(113, 2, 11, 0, 0, 0,
                                                            (2, "10.231.1.2")))),
        Codec("find", errqueue.ErrQueueCodecError,
              lambda b: errqueue.find([(errqueue.SOL_IPV6, errqueue.IPV6_RECVERR, b)]),
              lambda: errqueue.build(errqueue.ExtendedError(111, 3, 1, 4, 0, 0,
                                                            (10, "fd00:231:9::1")))),
    ],
    "grpc": [
        Codec("decode_response", grpc.GrpcCodecError, grpc.decode_response,
              lambda: b"\x08\x01\x12\x03abc"),  # status SERVING, an unknown field
        Codec("unframe", grpc.GrpcCodecError, grpc.unframe,
              lambda: grpc.frame(b"\x08\x01") + grpc.frame(b"")),
        Codec("decode_message", grpc.GrpcCodecError,
              lambda b: grpc.decode_message(b.decode("latin-1")), lambda: b"not%20found%ZZ"),
    ],
    "tcp_info": [Codec("parse", tcp_info.TcpInfoError, tcp_info.parse, _tcp_info)],
    "timex": [
        Codec(f"parse {layout.name}", timex.TimexError,
              lambda b, layout=layout: timex.parse(b, b[0] % 8 - 1 if b else 0, layout),
              _timex)
        for layout in LAYOUTS
    ],
    "x509": [Codec("validity", x509.X509Error, x509.validity, _certificate)],
    "target_groups": [
        Codec(f"parse {form}", target_groups.TargetGroupError,
              lambda b, form=form: target_groups.parse(b.decode("utf-8", "replace"), form),
              lambda: b'[{"targets": ["10.0.0.1:80", "[::1]:443"], "labels": {"team": "db"}}]')
        for form in ("json", "yaml")
    ] + [
        Codec("srv_targets", target_groups.TargetGroupError,
              lambda b: target_groups.srv_targets(b.decode("latin-1").split("\n")),
              lambda: b"10 5 80 web1.test.\n20 0 443 [::1].\n0 0 0 ."),
        Codec("nameservers", target_groups.TargetGroupError,
              lambda b: target_groups.nameservers(b.decode("latin-1")),
              lambda: b"# x\nsearch test\nnameserver 127.0.0.53 ; y\nnameserver ::1\n"),
    ],
    "availability": [
        Codec("decode", availability.AvailabilityCodecError, availability.decode,
              lambda: availability.HEADER + availability.encode(
                  [availability.Name(1, "web"), availability.Minutes(5, ((1, 3, 2, 900),)),
                   availability.Quarters(0, ((1, 3, 2),))])),
    ],
    # An encoder: whatever text a label holds (a check's name, a discovered target group's
    # label), it encodes; tests/test_formats.py decodes random ones with protobuf's parser.
    "metrics_proto": [
        Codec("label_pairs", ValueError,
              lambda b: metrics_proto.label_pairs([("check", b.decode("utf-8", "replace"))]),
              lambda: "caf\u00e9 \"x\"\n".encode()),
        Codec("histogram", ValueError, lambda b: metrics_proto.histogram(
            b[:8], len(b), float(len(b)), metrics_proto.classic_buckets(
                metrics_proto.bucket_bounds([0.1]), [len(b) * 99]),
            metrics_proto.histogram_created(len(b) / 7),
            (3, 2.0 ** -128, 0, [(-len(b), 1)], [len(b) - 128])), lambda: b"\x80" * 9),
    ],
    "yaml_document": [
        Codec(name, yaml_document.YAMLError, lambda b, f=f: f(b.decode("utf-8", "replace")),
              lambda: b"a: [1, {b: c}]\nd: !!str 5\n? e\n: f\n")
        for name, f in (("compose", yaml_document.compose), ("load", yaml_document.load))
    ],
}
ENTRIES = [pytest.param(c, id=f"{module}.{c.name}") for module, cs in CODECS.items() for c in cs]


def test_every_codec_is_fuzzed() -> None:
    modules = {m.name for m in pkgutil.iter_modules(exporter.codecs.__path__)}
    assert modules == set(CODECS), "add the new codec's entry points to CODECS"


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` with a few random edits: flipped bytes, a cut, an insertion, a repeat."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "set", "cut", "insert", "repeat")))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255)))))
        elif op == "cut":
            data = data[:at]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "repeat" and data:
            end = draw(st.integers(at, len(data)))
            data[at:at] = data[at:end]
    return bytes(data)


@pytest.mark.parametrize("codec", ENTRIES)
def test_codec_raises_only_its_own_error(codec: Codec) -> None:
    seed = codec.seed()
    codec.decode(seed)  # the seed itself is valid

    @FUZZ
    @given(st.one_of(st.binary(max_size=2 * len(seed) + 16), mutated(seed)))
    def fuzz(data: bytes) -> None:
        with contextlib.suppress(codec.error):
            codec.decode(data)

    fuzz()


# --- the udp check's judging of replies -------------------------------------------------------
# The udp kind has no codec: a reply is bytes, judged by a regex or a prefix. Whatever arrives,
# judging it and quoting it raise nothing.

UDP_SETTINGS = [load_check({"name": "u", "kind": "udp", "target": "127.0.0.1:7", **keys},
                           "test").settings
                for keys in ({}, {"expect": "^pong"}, {"expect": r"(?s)^\x81\x80.{2}\d+$"},
                             {"expect": "café"}, {"expect_hex": "8180"})]


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(UDP_SETTINGS))
def test_udp_replies_are_judged_without_raising(data: bytes, judged: Any) -> None:
    verdict = udp.matches(judged, data)
    if judged.expect_hex:
        assert verdict == data.startswith(judged.expect_hex)
    elif not judged.expect:
        assert verdict is True  # no expectation: any reply will do
    quoted = udp.excerpt(data)
    assert quoted.isascii() and quoted.isprintable()


# --- the config loader ------------------------------------------------------------------------

KIND_KEYS = sorted({f.name for kind in KINDS.values() for f in fields(kind.settings)})
DURATIONS = ("1s", "500ms", "30s", "1h30m", "0s", "-1s", "1.5s", "10", "", "1d", "99999999h")

scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(DURATIONS),
    st.sampled_from(("127.0.0.1:53", "[::1]:80", "http://127.0.0.1:1/", "host.test", "A",
                     "udp", "tls", "2xx", "/dev/null", "/nonexistent", "de ad", "0x1f", "^pong",
                     "127.0.0.1:domain")),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(("expect", "send", "starttls", "username", "password",
                                       "a", "")), inner, max_size=3),
    max_leaves=8,
)
check_tables = st.dictionaries(
    st.one_of(st.sampled_from((*COMMON_KEYS, *KIND_KEYS)), st.text(min_size=1, max_size=12)),
    values, max_size=8,
)
documents = st.fixed_dictionaries({}, optional={
    "defaults": st.dictionaries(st.sampled_from(("interval", "timeout", "intervl")),
                                st.one_of(st.sampled_from(DURATIONS), scalars), max_size=3),
    "checks": st.lists(
        st.one_of(check_tables, st.builds(
            lambda kind, name, extra: {"name": name, "kind": kind, **extra},
            st.sampled_from((*KINDS, "dnz", "")), st.text(max_size=10), check_tables)),
        max_size=4),
    "probe": st.dictionaries(st.sampled_from(("allow", "templates", "max_in_flight", "x")),
                             values, max_size=3),
})


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def toml_value(value: Any) -> str:
    """TOML for a value: our own few lines, as the standard library only reads TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf"}.get(repr(value), "nan" if value != value
                                                  else repr(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    lines = []
    for table in ("defaults", "probe"):
        if table in document:
            lines.append(f"[{table}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in document[table].items()]
    for check in document.get("checks", []):
        lines.append("[[checks]]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in check.items()]
    return "\n".join(lines) + "\n"


def _load(text: str) -> None:
    try:
        load_text(text, "hostile.toml")
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("hostile.toml") for p in exc.problems)


@FUZZ
@given(documents)
def test_config_loader_random_documents(document: dict[str, Any]) -> None:
    text = toml_document(document)
    assert isinstance(tomllib.loads(text), dict)  # our TOML writer writes TOML
    _load(text)


@FUZZ
@given(st.one_of(st.text(max_size=300), documents.map(toml_document).flatmap(
    lambda text: mutated(text.encode()).map(lambda b: b.decode("utf-8", "replace")))))
def test_config_loader_random_text(text: str) -> None:
    _load(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), documents.map(lambda d: toml_document(d).encode())))
def test_check_config_exits_0_or_2(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "hostile.toml"
        path.write_bytes(data)
        assert check_config([str(path)]) in (0, 2)


WEB_KEYS = ("tls_server_config", "cert_file", "key_file", "min_version", "client_auth_type",
            "http_server_config", "headers", "basic_auth_users", "http2", "TLS13", "- ", ": ",
            "[", "]", "{", "}", "&a", "*a", "!!python/object", "\n", "  ", "$2y$10$")


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(WEB_KEYS), st.text(max_size=8)), max_size=30)
       .map("".join))
def test_web_config_loader_random_yaml(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        try:
            webconfig.load_text(text, "web.yml", Path(directory))
        except ConfigError as exc:
            assert exc.problems and all(p.startswith("web.yml") for p in exc.problems)


def test_web_config_nested_past_the_parser() -> None:
    with pytest.raises(ConfigError) as caught:
        webconfig.load_text("a: " + "[" * 50_000 + "]" * 50_000, "web.yml", Path("."))
    assert caught.value.problems == [
        "web.yml: YAML syntax error: sequences or mappings nested too deeply"]


HOSTILE_FILES = {
    "binary": b"\x00\xff\xfe\x80 garbage \x1b[31m",
    "deep arrays": b"v = " + b"[" * 50_000 + b"]" * 50_000,
    "deep tables": b"v = " + b"{a=" * 50_000 + b"1" + b"}" * 50_000,
    "long line": b"x" * 1_000_000,
    "many keys": b"[[checks]]\n" + b"".join(b"k%d = %d\n" % (i, i) for i in range(20_000)),
    "huge number": b"[defaults]\ninterval = " + b"9" * 5000 + b"\n",
    "nul in string": b'[[checks]]\nname = "a\\u0000b"\nkind = "tcp"\ntarget = "x:1"\n',
    "fifo as ca_file": b'[[checks]]\nname = "t"\nkind = "tcp"\ntarget = "127.0.0.1:1"\n'
                       b'tls = true\nca_file = "FIFO"\n',
    "device as password_file": b'[[checks]]\nname = "w"\nkind = "http"\n'
                               b'target = "http://127.0.0.1:1/"\n'
                               b'basic_auth = { username = "u", password_file = "/dev/zero" }\n',
}


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_check_config_command_on_hostile_files(name: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = tmp_path / "hostile.toml"
    path.write_bytes(HOSTILE_FILES[name].replace(b"FIFO", str(fifo).encode()))
    done = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(str(path)), done.stderr[:300]
    assert done.stderr.rstrip().endswith("problem(s) found")


def test_files_named_by_mistake_are_refused_with_the_reason(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    big = tmp_path / "big.pem"
    with big.open("wb") as f:
        f.truncate(5 << 20)
    text = "".join(
        f'[[checks]]\nname = "t{i}"\nkind = "tcp"\ntarget = "127.0.0.1:1"\ntls = true\n'
        f'ca_file = "{path}"\n' for i, path in enumerate((tmp_path / "fifo", "/dev/zero", big)))
    with pytest.raises(ConfigError) as caught:
        load_text(text, "f.toml")
    assert caught.value.problems == [
        f'f.toml:6: checks[0] "t0".ca_file: cannot read {tmp_path}/fifo: not a regular file',
        'f.toml:12: checks[1] "t1".ca_file: cannot read /dev/zero: not a regular file',
        f'f.toml:18: checks[2] "t2".ca_file: cannot read {big}: 5242880 bytes, more than the '
        '4194304 a file named in the config may have',
    ]

