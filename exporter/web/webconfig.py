"""The web config file (`--web.config.file`): TLS, basic auth and headers for the HTTP server.

The format is Prometheus' exporter-toolkit one, so that `promtool check web-config` approves
the files netsentry accepts and one file serves every exporter on a host:

    tls_server_config:   {cert_file, key_file, client_auth_type, client_ca_file,
                          client_allowed_sans, min_version, max_version, cipher_suites,
                          prefer_server_cipher_suites, curve_preferences}
    http_server_config:  {http2, headers}
    basic_auth_users:    {user: bcrypt hash}
    rate_limit:          {interval, burst}

As in exporter-toolkit, unknown keys and duplicate keys are errors and relative paths are
relative to the file's directory. netsentry is stricter where the toolkit is lax or where
Python's ssl module cannot do what Go does, and says so: TLS 1.0 and 1.1 are refused, a
client certificate is always verified against `client_ca_file`, and one curve at most can be
preferred; a `rate_limit` needs a positive interval and burst (the toolkit reads an interval
of 0 as no limit, and a burst of 0 as refusing everything), and `client_allowed_sans` needs
RequireAndVerifyClientCert. Every problem is reported at once, as
`FILE:LINE: key.path: message`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.codecs import yaml_document as yaml
from exporter.config.problems import PathKey, Problems
from exporter.errors import ConfigError

Node = yaml.Node


@dataclass(frozen=True, slots=True)
class RateLimit:
    """exporter-toolkit's token bucket: `burst` requests at once, then one per `interval`."""

    interval: float  # seconds
    burst: int


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A validated web config; the empty one means plain HTTP, no auth, no extra headers."""

    source: str = ""
    tls: ssl.SSLContext | None = field(default=None, compare=False)
    users: Mapping[str, bytes] = field(default_factory=dict)  # user name -> bcrypt hash
    headers: tuple[tuple[str, str], ...] = ()
    # What a listener keeps from its start to its end, as (key, value): whether it serves TLS,
    # and the TLS settings OpenSSL copies into each connection before a handshake can switch
    # to a newer context (versions, client authentication, suites, curve). See web.reload.
    fixed: tuple[tuple[str, str], ...] = (("tls_server_config", "off"),)
    tls_files: tuple[str, ...] = ()  # the certificate, key and client CA files it was built from
    rate_limit: RateLimit | None = None
    # A verified client certificate must also carry one of these SANs (DNS, IP, e-mail, URI).
    client_allowed_sans: tuple[str, ...] = ()


def needs_restart(running: WebConfig, new: WebConfig) -> list[str]:
    """The settings of `new` a running listener cannot take, as "key: old -> new"."""
    old, now = dict(running.fixed), dict(new.fixed)
    key = "tls_server_config"
    keys = [key] if old[key] != now[key] else [k for k in now if now[k] != old[k]]
    return [f"{k}: {old[k]} -> {now[k]}" for k in keys]


TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "cipher_suites",
            "prefer_server_cipher_suites", "curve_preferences", "min_version", "max_version",
            "client_allowed_sans")
HTTP_KEYS = ("http2", "headers")
RATE_KEYS = ("interval", "burst")

# Go's time.ParseDuration, which reads the toolkit's interval: decimal numbers with units.
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}

VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
OLD_VERSIONS = ("TLS10", "TLS11")

# Go's client_auth_type -> Python's verify mode; None: Python cannot do it (see CLIENT_AUTH_NOTE).
CLIENT_AUTH: dict[str, ssl.VerifyMode | None] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
CLIENT_AUTH_NOTE = ("is not supported: Python's ssl module cannot take a client certificate "
                    "without verifying it; use VerifyClientCertIfGiven or "
                    "RequireAndVerifyClientCert with client_ca_file")

# Go's names of the TLS 1.2 suites it calls secure (tls.CipherSuites()) -> OpenSSL's names.
CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# TLS 1.3 suites are not configurable, in Go as in OpenSSL's defaults here: accepted, no effect.
TLS13_CIPHERS = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                 "TLS_CHACHA20_POLY1305_SHA256")
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}

# exporter-toolkit lets only these headers be set, some only to these values.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# A bcrypt hash in modular crypt format: $2a$, $2b$, $2x$ or $2y$, a cost, 53 characters.
BCRYPT = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")


def load_file(path: str) -> WebConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the web config file: "
                           f"{exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: the web config file is not UTF-8: {exc.reason}"]) from None
    return load_text(text, path, Path(path).parent)


def load_text(text: str, source: str, directory: Path) -> WebConfig:
    """Validate a web config; file names in it are relative to `directory`."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    except RecursionError:  # the composer recurses per level of nested sequences and maps
        raise ConfigError([f"{source}: YAML syntax error: sequences or mappings nested too "
                           "deeply"]) from None
    lines: dict[PathKey, int] = {}
    problems = Problems(source, lines)
    reader = _Reader(problems, lines)
    config = _build(reader, root, source, directory)
    if problems.lines:
        raise ConfigError(problems.lines)
    return config


class _Reader:
    """Typed access to YAML nodes, recording each key's line; problems go to `problems`."""

    def __init__(self, problems: Problems, lines: dict[PathKey, int]) -> None:
        self.problems = problems
        self.lines = lines

    def mapping(self, node: Node | None, path: PathKey,
                allowed: tuple[str, ...] | None = None) -> dict[str, Node]:
        if node is None or _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.problems.add(path, f"expected a mapping, got {_describe(node)}")
            return {}
        out: dict[str, Node] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.lines.setdefault(path, key_node.start_mark.line + 1)
                self.problems.add(path, f"keys must be strings, got {_describe(key_node)}")
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            first = self.lines.setdefault((*path, key), line)
            if key in out:
                problems = self.problems
                problems.lines.append(f"{problems.source}:{line}: "
                                      f"{problems.describe((*path, key))}: duplicate key, "
                                      f"first on line {first}")
            elif allowed is not None and key not in allowed:
                self.problems.add((*path, key), f"unknown key{_suggest(key, allowed)}")
            else:
                out[key] = value
        return out

    def text(self, node: Node | None, path: PathKey) -> str:
        if node is None or _is_null(node):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            self.problems.add(path, f"expected a string, got {_describe(node)}")
            return ""
        return str(node.value)

    def flag(self, node: Node | None, path: PathKey, default: bool) -> bool:
        if node is None or _is_null(node):
            return default
        if not (isinstance(node, yaml.ScalarNode) and node.tag == yaml.BOOL_TAG):
            self.problems.add(path, f"expected true or false, got {_describe(node)}")
            return default
        return bool(yaml.load(node.value))

    def texts(self, node: Node | None, path: PathKey) -> list[str]:
        if node is None or _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.problems.add(path, f"expected a list, got {_describe(node)}")
            return []
        return [self.text(item, (*path, i)) for i, item in enumerate(node.value)]


def _is_null(node: Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == yaml.NULL_TAG


def _describe(node: Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}"


def _suggest(word: str, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _build(reader: _Reader, root: Node | None, source: str, directory: Path) -> WebConfig:
    top = reader.mapping(root, (), TOP_KEYS)
    tls, fixed, tls_files = _tls(reader, top.get("tls_server_config"), directory)
    sans = _allowed_sans(reader, top.get("tls_server_config"))
    http = reader.mapping(top.get("http_server_config"), ("http_server_config",), HTTP_KEYS)
    # HTTP/2 is accepted for compatibility and has no effect: the server speaks HTTP/1.1 and
    # says so in ALPN, so HTTP/2 clients (Prometheus among them) fall back to it.
    reader.flag(http.get("http2"), ("http_server_config", "http2"), True)
    headers = _headers(reader, http.get("headers"))
    users = _users(reader, top.get("basic_auth_users"))
    rate_limit = _rate_limit(reader, top.get("rate_limit"))
    return WebConfig(source, tls, users, headers, fixed, tls_files, rate_limit,
                     sans if tls is not None else ())


def _rate_limit(reader: _Reader, node: Node | None) -> RateLimit | None:
    base: PathKey = ("rate_limit",)
    if node is None or _is_null(node):
        return None
    table = reader.mapping(node, base, RATE_KEYS)
    if not isinstance(node, yaml.MappingNode):
        return None  # said by mapping()
    interval = burst = None
    if "interval" not in table:
        reader.problems.add(base, "missing interval, the time one request's token takes to "
                            "come back (e.g. 1s)")
    else:
        interval = _go_duration(reader, table["interval"], (*base, "interval"))
    if "burst" not in table:
        reader.problems.add(base, "missing burst, how many requests may come at once (0, "
                            "the default, would refuse every request)")
    else:
        burst = _positive_int(reader, table["burst"], (*base, "burst"),
                              "0 would refuse every request")
    if interval is None or burst is None:
        return None
    return RateLimit(interval, burst)


def _go_duration(reader: _Reader, node: Node, path: PathKey) -> float | None:
    if not isinstance(node, yaml.ScalarNode) or _is_null(node):
        reader.problems.add(path, f"expected a duration like 1s or 500ms, got {_describe(node)}")
        return None
    text = str(node.value)
    body = text[1:] if text[:1] in "+-" else text
    parts = list(_GO_DURATION_PART.finditer(body))
    if body.strip("0") == "" and body:  # 0 needs no unit, in Go as in YAML
        seconds = 0.0
    elif not parts or "".join(m[0] for m in parts) != body:
        unit = " (a number needs its unit)" if body.replace(".", "", 1).isdigit() else ""
        reader.problems.add(path, f"{text!r} is not a duration{unit}; write e.g. 1s, 500ms "
                            "or 1m30s (units ns, us, ms, s, m, h)")
        return None
    else:
        seconds = sum(float(m[1]) * _GO_UNITS[m[2]] for m in parts)
    if text.startswith("-") and seconds:
        reader.problems.add(path, f"{text!r} is negative")
        return None
    if seconds <= 0:
        reader.problems.add(path, "must be more than 0 (exporter-toolkit reads 0 as no rate "
                            "limit: to have none, leave rate_limit out)")
        return None
    return seconds


def _positive_int(reader: _Reader, node: Node, path: PathKey, zero: str) -> int | None:
    if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int"
            and node.value.lstrip("+-").isdigit()):
        reader.problems.add(path, f"expected a whole number, got {_describe(node)}")
        return None
    value = int(node.value)
    if value <= 0:
        reader.problems.add(path, f"must be at least 1, got {value}"
                            + (f" ({zero})" if value == 0 else ""))
        return None
    return value


def _allowed_sans(reader: _Reader, node: Node | None) -> tuple[str, ...]:
    """The list as written; whether client_auth_type allows it is `_tls`'s to say."""
    if not isinstance(node, yaml.MappingNode):
        return ()
    for key_node, value in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "client_allowed_sans":
            return tuple(dict.fromkeys(reader.texts(value, ("tls_server_config",
                                                            "client_allowed_sans"))))
    return ()


def client_sans(peercert: Mapping[str, Any] | None) -> list[str]:
    """A verified client certificate's SANs as Go's x509 spells them (DNS names, e-mail
    addresses, IPs in their canonical form, URIs), which `client_allowed_sans` is matched
    against exactly, as exporter-toolkit matches."""
    sans = []
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        value = str(value).strip()
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value))
            except ValueError:
                continue
        elif kind not in ("DNS", "email", "URI"):
            continue
        sans.append(value)
    return sans


def _headers(reader: _Reader, node: Node | None) -> tuple[tuple[str, str], ...]:
    path: PathKey = ("http_server_config", "headers")
    out = []
    for name, value_node in reader.mapping(node, path).items():
        value = reader.text(value_node, (*path, name))
        if name not in HEADERS:
            reader.problems.add((*path, name), f"this header cannot be configured; the ones "
                                f"that can: {', '.join(HEADERS)}")
        elif HEADERS[name] and value not in HEADERS[name]:
            reader.problems.add((*path, name), f"must be one of "
                                f"{', '.join(map(repr, HEADERS[name]))}, got {value!r}")
        else:
            out.append((name, value))
    return tuple(out)


def _users(reader: _Reader, node: Node | None) -> dict[str, bytes]:
    path: PathKey = ("basic_auth_users",)
    users: dict[str, bytes] = {}
    for name, value_node in reader.mapping(node, path).items():
        where = (*path, name)
        value = reader.text(value_node, where)
        match = BCRYPT.fullmatch(value)
        if ":" in name:
            reader.problems.add(where, "a user name cannot contain ':' (RFC 7617 splits "
                                "the credentials at the first colon)")
        elif match is None:
            reader.problems.add(where, "expected a bcrypt hash like $2y$10$ followed by 53 "
                                "characters (make one with `htpasswd -nBC 10 USER`)")
        elif not 4 <= int(match[1]) <= 31:
            reader.problems.add(where, f"bcrypt cost {int(match[1])} is outside 4-31")
        else:
            users[name] = value.encode("ascii")
    return users


_Tls = tuple[ssl.SSLContext | None, tuple[tuple[str, str], ...], tuple[str, ...]]
_PLAIN: _Tls = (None, (("tls_server_config", "off"),), ())


def _tls(reader: _Reader, node: Node | None, directory: Path) -> _Tls:
    """The context, the settings fixed per listener (see WebConfig.fixed) and the files read."""
    base: PathKey = ("tls_server_config",)
    before = len(reader.problems.lines)
    table = reader.mapping(node, base, TLS_KEYS)
    text = {key: reader.text(table.get(key), (*base, key)) for key in
            ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version")}
    sans = table.get("client_allowed_sans")
    ciphers = reader.texts(table.get("cipher_suites"), (*base, "cipher_suites"))
    curves = reader.texts(table.get("curve_preferences"), (*base, "curve_preferences"))
    prefer_server = reader.flag(table.get("prefer_server_cipher_suites"),
                                (*base, "prefer_server_cipher_suites"), True)
    cert, key = text["cert_file"], text["key_file"]
    if not cert and not key:
        others = sorted(set(table) - {"cert_file", "key_file"})
        if others:
            reader.problems.add(base, f"{', '.join(others)} set without cert_file and "
                                "key_file; set both to serve TLS")
        return _PLAIN  # plain HTTP, as exporter-toolkit serves an empty tls_server_config
    problems = reader.problems

    def add(key: str, message: str) -> None:
        problems.add((*base, key), message)

    if not cert:
        problems.add(base, "missing cert_file")
    if not key:
        problems.add(base, "missing key_file")

    minimum = _version(text["min_version"] or "TLS12", "min_version", add)
    maximum = _version(text["max_version"] or "TLS13", "max_version", add)
    if minimum and maximum and minimum > maximum:
        add("max_version", f"{text['max_version']} is older than min_version "
            f"{text['min_version'] or 'TLS12'}")

    auth_name = text["client_auth_type"] or "NoClientCert"
    verify = CLIENT_AUTH.get(auth_name)
    if auth_name not in CLIENT_AUTH:
        add("client_auth_type", f"unknown value {auth_name!r}"
            f"{_suggest(auth_name, tuple(CLIENT_AUTH))}; known: {', '.join(CLIENT_AUTH)}")
    elif verify is None:
        add("client_auth_type", f"{auth_name} {CLIENT_AUTH_NOTE}")
    elif verify is ssl.CERT_NONE and text["client_ca_file"]:
        add("client_ca_file", "set, but client_auth_type is NoClientCert: set "
            "client_auth_type to VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    elif verify is not ssl.CERT_NONE and not text["client_ca_file"]:
        add("client_auth_type", f"{auth_name} needs client_ca_file, the CAs that sign "
            "the client certificates")
    if sans is not None and not _is_null(sans):
        if verify is not ssl.CERT_REQUIRED and auth_name in CLIENT_AUTH:
            add("client_allowed_sans", f"needs client_auth_type RequireAndVerifyClientCert "
                f"(with {auth_name} a client may come without a certificate to match)")
        if isinstance(sans, yaml.SequenceNode) and not sans.value:
            add("client_allowed_sans", "an empty list would refuse every client; leave it "
                "out to accept any certificate client_ca_file verifies")
        for i, item in enumerate(sans.value if isinstance(sans, yaml.SequenceNode) else ()):
            if isinstance(item, yaml.ScalarNode) and not str(item.value).strip():
                problems.add((*base, "client_allowed_sans", i), "an empty name matches no "
                             "certificate")

    openssl_ciphers = []
    for i, name in enumerate(ciphers):
        if name in CIPHERS:
            openssl_ciphers.append(CIPHERS[name])
        elif name not in TLS13_CIPHERS:
            problems.add((*base, "cipher_suites", i), f"unknown or insecure cipher suite "
                         f"{name!r}{_suggest(name, tuple(CIPHERS))}")
    if len(curves) > 1:
        add("curve_preferences", "list one curve: Python's ssl module can set only one")
    for i, name in enumerate(curves):
        if name not in CURVES:
            problems.add((*base, "curve_preferences", i), f"unknown curve {name!r}; known: "
                         f"{', '.join(CURVES)}")

    files = {k: str(directory / text[k]) for k in ("cert_file", "key_file", "client_ca_file")
             if text[k]}
    for k, path in files.items():
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            add(k, f"cannot read {path}: {exc.strerror}")
    if len(problems.lines) > before:
        return _PLAIN

    assert minimum is not None and maximum is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = minimum, maximum
    context.set_alpn_protocols(["http/1.1"])
    if not prefer_server:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(files["cert_file"], files["key_file"], password=_no_passphrase)
    except (ssl.SSLError, ValueError) as exc:
        add("cert_file", f"{files['cert_file']} and {files['key_file']} are not a PEM "
            f"certificate and its key: {_ssl_reason(exc)}")
    if openssl_ciphers:
        try:
            context.set_ciphers(":".join(openssl_ciphers))
        except ssl.SSLError as exc:
            add("cipher_suites", f"OpenSSL refuses these suites: {_ssl_reason(exc)}")
    if curves:
        try:
            context.set_ecdh_curve(CURVES[curves[0]])
        except (ssl.SSLError, ValueError):  # Python 3.10 knows only the NIST curves here
            add("curve_preferences", f"this Python's ssl module cannot limit TLS to "
                f"{curves[0]}; use CurveP256, CurveP384 or CurveP521 (or Python 3.11+)")
    if verify is not None and verify is not ssl.CERT_NONE:
        try:
            context.load_verify_locations(cafile=files["client_ca_file"])
        except ssl.SSLError as exc:
            add("client_ca_file", f"{files['client_ca_file']} has no PEM certificate: "
                f"{_ssl_reason(exc)}")
        context.verify_mode = verify
    if len(problems.lines) > before:
        return _PLAIN
    fixed = (("tls_server_config", "on"),
             ("tls_server_config.min_version", text["min_version"] or "TLS12"),
             ("tls_server_config.max_version", text["max_version"] or "TLS13"),
             ("tls_server_config.client_auth_type", auth_name),
             ("tls_server_config.cipher_suites", ",".join(ciphers) or "default"),
             ("tls_server_config.prefer_server_cipher_suites", str(prefer_server).lower()),
             ("tls_server_config.curve_preferences", ",".join(curves) or "default"))
    return context, fixed, tuple(files.values())


def _version(name: str, key: str, add: Any) -> ssl.TLSVersion | None:
    if name in VERSIONS:
        return VERSIONS[name]
    if name in OLD_VERSIONS:
        add(key, f"{name} is refused: TLS 1.0 and 1.1 are broken and deprecated (RFC 8996); "
            "use TLS12 or TLS13")
    else:
        add(key, f"unknown TLS version {name!r}; use TLS12 or TLS13")
    return None


def _no_passphrase() -> bytes:
    raise ValueError("the key is encrypted, and netsentry cannot ask for a passphrase")


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc)
