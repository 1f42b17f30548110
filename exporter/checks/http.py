"""The `http` check: one request to a URL, redirects followed, each phase timed as blackbox does.

Per hop: resolve, connect, TLS (https), processing (request sent → first byte of the response)
and transfer (first byte → end of the body), summed over the hops. The final response is held
against `valid_status` and the body regexes; the body is capped as received and decompressed.
Secrets (`basic_auth`, `secret_headers`) are `Secret`s: shown as "<secret>" everywhere, and sent
only to the origin of the configured URL, never to another host a redirect points at.
"""

from __future__ import annotations

import base64
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from exporter import __version__, humanize, metrics
from exporter.checks.base import Kind, Run, option, read_file, readable_file, regex
from exporter.checks.connection import (
    CONNECT_REASONS,
    TCP_INFO_SPECS,
    TLS_SPECS,
    record_tcp_info,
    record_tls,
    tls_context,
)
from exporter.errors import CheckError, Reason
from exporter.net import http2_client, http_client
from exporter.net.resolve import FAMILIES
from exporter.net.stream import open_stream

PHASES = ("resolve", "connect", "tls", "processing", "transfer")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_VALUE = re.compile(r"[\t\x20-\x7e]*")  # printable ASCII: h11 sends nothing else
_URL_CHARS = re.compile(r"[\x21-\x7e]+")  # no spaces or controls in a request target
_FRAMING = ("content-length", "transfer-encoding", "connection")
_STATUS_CLASS = re.compile(r"[1-5]xx")
# Readable causes for the commonest OpenSSL verification errors (X509_V_ERR_*).
_VERIFY = {9: "the certificate is not yet valid", 10: "the certificate has expired",
           18: "unknown issuer: the certificate is self-signed",
           19: "unknown issuer: a self-signed certificate in the chain",
           20: "unknown issuer: the issuer's certificate is not trusted",
           21: "unknown issuer: cannot verify the first certificate"}


class Secret:
    """A value that shows as "<secret>" in every repr, log line and message; equal by value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Url:
    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent in the request line

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == (443 if self.scheme == "https" else 80)
        return host if default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: Secret


def parse_url(text: str) -> Url:
    """An http(s) URL; the message never quotes a URL that may hold credentials."""
    return Url(*split_url(text, {"http": 80, "https": 443}, "an http:// or https://",
                         "basic_auth"))


def split_url(text: str, default_ports: dict[str, int], expected: str,
              credentials_instead: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, target) of a URL with one of `default_ports`' schemes (http's, or
    the websocket kind's; `expected` names them for people); the message never quotes a URL
    that may hold credentials, and names `credentials_instead` as where they go."""
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise ValueError("the URL holds a user name or password: use "
                         f"{credentials_instead} instead")
    if parts.scheme not in default_ports or not parts.netloc:
        raise ValueError(f"expected {expected} URL, got {text!r}")
    if not _URL_CHARS.fullmatch(text):
        raise ValueError(f"invalid URL {text!r}: percent-encode spaces and non-ASCII characters")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid URL {text!r}: the port must be a number 1-65535") from None
    if not parts.hostname or port == 0:
        raise ValueError(f"invalid URL {text!r}: " + ("the port must be a number 1-65535"
                                                      if parts.hostname else "the host is empty"))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or default_ports[parts.scheme], target


def _header_problem(name: Any, value: Any, secret: bool) -> str | None:
    if not _TOKEN.fullmatch(name):
        return f"invalid header name {name!r}"
    if name.lower() in _FRAMING:
        return f"header {name!r} is set by netsentry"
    if not isinstance(value, str):
        return f"header {name!r}: expected a string value"
    if not _VALUE.fullmatch(value):
        shown = "" if secret else f" {value!r}"
        return f"header {name!r}: the value{shown} must be printable ASCII on one line"
    return None


def _headers(secret: bool) -> Any:
    def parse(table: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        for name, value in table.items():
            if (problem := _header_problem(name, value, secret)) is not None:
                raise ValueError(problem)
        return tuple((n, Secret(v) if secret else v) for n, v in table.items())
    return parse


def _basic_auth(table: dict[str, Any]) -> BasicAuth:
    unknown = sorted(set(table) - {"username", "password", "password_file"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; expected username and password or "
                         "password_file")
    username = table.get("username")
    if not isinstance(username, str) or ":" in username or not _VALUE.fullmatch(username):
        raise ValueError("needs a username: a string without ':' (RFC 7617)")
    if ("password" in table) == ("password_file" in table):
        raise ValueError("needs exactly one of password and password_file")
    if "password" in table:
        if not isinstance(table["password"], str):
            raise ValueError("the password must be a string")
        return BasicAuth(username, Secret(table["password"]))
    path = table["password_file"]
    if not isinstance(path, str):
        raise ValueError("password_file must be a string")
    try:
        password = read_file(path).decode("utf-8").rstrip("\r\n")
    except ValueError as exc:  # UnicodeDecodeError is one too
        if isinstance(exc, UnicodeDecodeError):
            raise ValueError(f"password_file {path} is not UTF-8") from None
        raise ValueError(f"cannot read password_file {path}: {exc}") from None
    return BasicAuth(username, Secret(password))


def _statuses(items: list[Any]) -> tuple[int | str, ...]:
    if not items:
        raise ValueError("must list at least one status")
    for item in items:
        valid = (isinstance(item, str) and _STATUS_CLASS.fullmatch(item)) or (
            isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599)
        if not valid:
            raise ValueError(f'invalid status {item!r}: expected a code (200) or a class ("2xx")')
    return tuple(items)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    target: Url = option(parse=parse_url, raw=str)
    method: str = option("GET", check=lambda m: None if re.fullmatch(r"[A-Z]+", m) else
                         "must be an HTTP method in capitals, like GET")
    headers: tuple[tuple[str, str], ...] = option((), parse=_headers(False), raw=dict)
    secret_headers: tuple[tuple[str, Secret], ...] = option((), parse=_headers(True), raw=dict)
    basic_auth: BasicAuth | None = option(None, parse=_basic_auth, raw=dict)
    body: str = option("")
    valid_status: tuple[int | str, ...] = option(("2xx",), parse=_statuses, raw=list)
    body_regex: str = option("", parse=regex, raw=str)
    body_not_regex: str = option("", parse=regex, raw=str)
    follow_redirects: bool = option(True)
    max_redirects: int = option(10, check=lambda n: "must be 0 or more" if n < 0 else None)
    max_body_bytes: int = option(1 << 20, check=lambda n: "must be more than 0" if n <= 0
                                 else None)
    family: str = option("any", choices=tuple(FAMILIES))
    server_name: str = option("")
    ca_file: str = option("", check=readable_file)
    tls_insecure_skip_verify: bool = option(False)
    http_version: str = option("any", choices=("any", "1.1", "2"))
    h2c: bool = option(False)

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.h2c and self.target.scheme == "https":
            found.append(("h2c", "is cleartext HTTP/2: over TLS (https://), ALPN chooses "
                                 "HTTP/2; drop h2c or use an http:// URL"))
        if self.http_version == "2" and self.target.scheme == "http" and not self.h2c:
            found.append(("http_version", 'an http:// URL speaks HTTP/1.1 unless h2c = true '
                                          '(HTTP/2 with prior knowledge)'))
        names = {n.lower() for n, _ in (*self.headers, *self.secret_headers)}
        if self.basic_auth is not None and "authorization" in names:
            found.append(("basic_auth", "conflicts with an Authorization header"))
        return found


# --- the check ----------------------------------------------------------------------------------


async def check(settings: HttpSettings, run: Run) -> None:
    response, url, redirects = await fetch(settings, run)
    run.gauge(metrics.HTTP_STATUS, response.status)
    run.gauge(metrics.HTTP_RESPONSE_BYTES, len(response.body))
    version = f"HTTP/{response.http_version}"
    run.gauge(metrics.HTTP_VERSION, float(response.http_version))
    run.detail("url", str(url))
    run.detail("status", f"{response.status} {version}, {len(response.body)} bytes"
               + (f" ({response.received} received)" if response.received != len(response.body)
                  else ""))
    run.detail("redirects", str(redirects))
    _expect(settings, response)


async def fetch(settings: HttpSettings,
                run: Run) -> tuple[http_client.ClientResponse, Url, int]:
    """The request of `settings`, its redirects followed: the final response, its URL and the
    number of redirects (also what service discovery's `targets_url` asks with)."""
    url, method, body = settings.target, settings.method, settings.body.encode()
    phases: dict[str, float] = {}
    redirects = 0
    try:
        while True:
            response, location = await _hop(settings, run, url, method, body, phases)
            if location is None:
                break
            if redirects >= settings.max_redirects:
                raise CheckError(Reason.UNEXPECTED_RESPONSE, f"more than {redirects} "
                                 f"redirect(s) (max_redirects), the last to {location}")
            redirects += 1
            url = location
            run.detail(f"redirect {redirects}", f"{response.status} to {url}")
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), b""
    finally:
        for phase in PHASES:
            if phase in phases:
                run.gauge(metrics.HTTP_PHASE, phases[phase], phase)
                run.detail(phase, humanize.duration(phases[phase]))
        run.gauge(metrics.HTTP_REDIRECTS, redirects)
    return response, url, redirects


async def _hop(settings: HttpSettings, run: Run, url: Url, method: str, body: bytes,
               phases: dict[str, float]) -> tuple[http_client.ClientResponse, Url | None]:
    """One request; the response and, if it is a redirect to follow, where to."""
    started = time.perf_counter()
    address = (await run.resolver.resolve(url.host, url.port,
                                          FAMILIES[settings.family]))[0]
    _add(phases, "resolve", time.perf_counter() - started)
    own = url.origin == settings.target.origin
    context = (tls_context(run, settings.ca_file, settings.tls_insecure_skip_verify,
                           _ALPN[settings.http_version])
               if url.scheme == "https" else None)
    server_name = (settings.server_name if own and settings.server_name else url.host
                   ) if context is not None else None
    timings: dict[str, float] = {}
    try:
        async with open_stream(address, ssl_context=context, server_hostname=server_name,
                                   timings=timings) as stream:
            for phase, seconds in timings.items():
                _add(phases, phase, seconds)
            timings.clear()
            options: dict[str, Any] = {
                "headers": _request_headers(settings, own), "body": body,
                "max_body": settings.max_body_bytes, "decode": True, "timings": timings}
            try:
                if _speaks_h2(settings, stream.tls):
                    response = await http2_client.request(
                        stream, method, url.authority, url.target, scheme=url.scheme, **options)
                else:
                    response = await http_client.request(
                        stream, method, url.authority, url.target, **options)
            except http_client.ResponseTooLarge as exc:
                raise CheckError(Reason.UNEXPECTED_RESPONSE, str(exc)) from None
            except http_client.ResponseError as exc:
                raise CheckError(Reason.MALFORMED_RESPONSE, str(exc)) from None
            for phase, seconds in timings.items():
                _add(phases, phase, seconds)
            location = _location(settings, url, response)
            if location is None:
                run.detail("address", str(address))
                if stream.tls is not None:
                    record_tls(run, stream.tls)
                record_tcp_info(run, stream.sock)
    except ssl.SSLCertVerificationError as exc:
        cause = _VERIFY.get(exc.verify_code, exc.verify_message or str(exc))
        if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            cause = f"the certificate is not valid for {server_name}"
        raise CheckError(Reason.TLS_ERROR, f"certificate of {url.authority}: {cause}") from None
    except ssl.SSLError as exc:
        raise CheckError(Reason.TLS_ERROR, f"TLS with {url.authority}: "
                         f"{(exc.reason or str(exc)).lower().replace('_', ' ')}") from None
    return response, location


# What TLS offers by ALPN per `http_version`: "2" offers both, to name what the server chose.
_ALPN = {"any": ("h2", "http/1.1"), "1.1": ("http/1.1",), "2": ("h2", "http/1.1")}


def _speaks_h2(settings: HttpSettings, tls: ssl.SSLSocket | None) -> bool:
    """HTTP/2 where ALPN chose it (or h2c asked for it in the clear), else HTTP/1.1."""
    if tls is None:
        return settings.h2c
    chosen = tls.selected_alpn_protocol()
    if chosen == "h2":
        return True
    if settings.http_version == "2":
        raise CheckError(Reason.UNEXPECTED_RESPONSE, "the server did not negotiate HTTP/2 "
                         f"(http_version = \"2\"): ALPN chose {chosen or 'nothing'}, so "
                         "HTTP/1.1")
    return False


def _add(phases: dict[str, float], phase: str, seconds: float) -> None:
    phases[phase] = phases.get(phase, 0.0) + seconds


def _request_headers(settings: HttpSettings, own: bool) -> list[tuple[str, str]]:
    headers = [("User-Agent", f"netsentry/{__version__}"), ("Accept-Encoding", "gzip, deflate")]
    given = {n.lower() for n, _ in (*settings.headers, *settings.secret_headers)}
    headers = [(n, v) for n, v in headers if n.lower() not in given]
    headers += settings.headers
    if own:  # secrets go to the configured origin only, never where a redirect points
        headers += [(n, v.reveal()) for n, v in settings.secret_headers]
        if settings.basic_auth is not None:
            pair = f"{settings.basic_auth.username}:{settings.basic_auth.password.reveal()}"
            headers.append(("Authorization", "Basic " + base64.b64encode(pair.encode()).decode()))
    return headers


def _location(settings: HttpSettings, url: Url, response: http_client.ClientResponse) -> Url | None:
    if not settings.follow_redirects or response.status not in REDIRECTS:
        return None
    location = dict(response.headers).get("location")
    if location is None:
        return None
    try:
        return parse_url(urljoin(str(url), location.strip()))
    except ValueError as exc:
        raise CheckError(Reason.UNEXPECTED_RESPONSE, f"redirect to an unusable URL: {exc}"
                         ) from None


def _expect(settings: HttpSettings, response: http_client.ClientResponse) -> None:
    status = response.status
    if not any(status == v if isinstance(v, int) else str(status)[0] == v[0]
               for v in settings.valid_status):
        raise CheckError(Reason.BAD_STATUS, f"HTTP status {status}, expected "
                         + ", ".join(map(str, settings.valid_status)))
    if settings.body_regex or settings.body_not_regex:
        text = response.body.decode("utf-8", "replace")
        if settings.body_regex and not re.search(settings.body_regex, text):
            raise CheckError(Reason.UNEXPECTED_RESPONSE,
                             f"the body does not match /{settings.body_regex}/")
        if settings.body_not_regex and re.search(settings.body_not_regex, text):
            raise CheckError(Reason.UNEXPECTED_RESPONSE,
                             f"the body matches /{settings.body_not_regex}/")


KIND = Kind(
    name="http",
    settings=HttpSettings,
    check=check,
    reasons=(*CONNECT_REASONS, Reason.TLS_ERROR, Reason.BAD_STATUS,
             Reason.UNEXPECTED_RESPONSE, Reason.MALFORMED_RESPONSE, Reason.INTERNAL_ERROR),
    specs=(metrics.HTTP_PHASE, metrics.HTTP_STATUS, metrics.HTTP_RESPONSE_BYTES,
           metrics.HTTP_REDIRECTS, metrics.HTTP_VERSION, *TLS_SPECS, *TCP_INFO_SPECS),
    summary="request a URL, follow redirects, and time each phase as blackbox_exporter does",
)
