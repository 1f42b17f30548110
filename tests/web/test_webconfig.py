"""The web config (`--web.config.file`): parsing against promtool, basic auth, TLS on the agent."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import re
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter.errors import ConfigError
from exporter.web import webconfig
from exporter.web.auth import BasicAuth
from exporter.web.server import Request, Response, Route, WebServer
from exporter.web.webconfig import RateLimit
from tests.support.agent import ROOT, Agent
from tests.support.certs import CertFiles, make_cert, make_client_cert

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cret pass"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast tests
OTHER = bcrypt.hashpw(b"other", bcrypt.gensalt(5)).decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("server"), "localhost", ips=["127.0.0.1"])


@pytest.fixture(scope="module")
def client_certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_client_cert(tmp_path_factory.mktemp("client"))


def write(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def promtool(path: Path) -> subprocess.CompletedProcess[str]:
    # From another directory: relative file names must be relative to the file, for both.
    return subprocess.run(["promtool", "check", "web-config", str(path)], cwd="/",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        webconfig.load_file(str(path))
    return caught.value.problems


# --- the file format, against promtool ------------------------------------------------------------

ACCEPTED = {
    "empty": "",
    "tls": """\
        tls_server_config:
          cert_file: leaf.pem
          key_file: leaf.key
        """,
    "everything": f"""\
        tls_server_config:
          cert_file: leaf.pem
          key_file: leaf.key
          client_auth_type: VerifyClientCertIfGiven
          client_ca_file: ca.pem
          min_version: TLS12
          max_version: TLS13
          cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
          prefer_server_cipher_suites: false
          curve_preferences: [CurveP256]
        http_server_config:
          http2: false
          headers:
            Strict-Transport-Security: max-age=31536000
            X-Content-Type-Options: nosniff
            X-Frame-Options: sameorigin
            X-XSS-Protection: "1; mode=block"
            Content-Security-Policy: default-src 'self'
        basic_auth_users:
          alice: {HASH}
          bob: '{OTHER}'
        """,
    "empty tls table: plain HTTP": "tls_server_config: {}\n",
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_files_netsentry_accepts_promtool_approves(case: str, certs: CertFiles) -> None:
    path = write(certs.cert.parent, ACCEPTED[case], f"{case.split(':')[0]}.yml")
    config = webconfig.load_file(str(path))
    assert (config.tls is not None) == ("cert_file" in ACCEPTED[case])
    proc = promtool(path)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout


def test_what_a_file_sets(certs: CertFiles) -> None:
    config = webconfig.load_file(str(write(certs.cert.parent, ACCEPTED["everything"])))
    assert config.users == {"alice": HASH.encode(), "bob": OTHER.encode()}
    assert dict(config.headers)["X-Frame-Options"] == "sameorigin"
    assert config.tls is not None
    assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.tls.verify_mode == ssl.CERT_OPTIONAL
    assert not config.tls.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {c["name"] for c in config.tls.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}


# Refused by both; (file, netsentry's exact problems, a piece of promtool's message).
REFUSED = {
    "misspelt key": ("tls_server_confg: {}\n",
                     ['{p}:1: tls_server_confg: unknown key (did you mean "tls_server_config"?)'],
                     "field tls_server_confg not found"),
    "missing key_file": ("tls_server_config:\n  cert_file: leaf.pem\n",
                         ["{p}:1: tls_server_config: missing key_file"], "missing key_file"),
    "unreadable cert": ("tls_server_config:\n  cert_file: nope.pem\n  key_file: leaf.key\n",
                        ["{p}:2: tls_server_config.cert_file: cannot read {d}/nope.pem: "
                         "No such file or directory"], "no such file"),
    "header": ("http_server_config:\n  headers:\n    X-Foo: bar\n",
               ["{p}:3: http_server_config.headers.X-Foo: this header cannot be configured; the "
                "ones that can: Strict-Transport-Security, X-Content-Type-Options, "
                "X-Frame-Options, X-XSS-Protection, Content-Security-Policy"],
               'HTTP header "X-Foo" can not be configured'),
    "header value": ("http_server_config:\n  headers:\n    X-Frame-Options: DENY\n",
                     ["{p}:3: http_server_config.headers.X-Frame-Options: must be one of 'deny', "
                      "'sameorigin', got 'DENY'"], "invalid value for X-Frame-Options"),
    "not a hash": ("basic_auth_users:\n  alice: hunter2\n",
                   ["{p}:2: basic_auth_users.alice: expected a bcrypt hash like $2y$10$ followed "
                    "by 53 characters (make one with `htpasswd -nBC 10 USER`)"], "too short"),
    "cost": (f"basic_auth_users:\n  alice: {HASH[:4]}03{HASH[6:]}\n",
             ["{p}:2: basic_auth_users.alice: bcrypt cost 3 is outside 4-31"], "cost 3"),
    "duplicate user": (f"basic_auth_users:\n  alice: {HASH}\n  alice: {HASH}\n",
                       ["{p}:3: basic_auth_users.alice: duplicate key, first on line 2"],
                       "already set"),
    "users as a list": ("basic_auth_users: [alice]\n",
                        ["{p}:1: basic_auth_users: expected a mapping, got a list"],
                        "cannot unmarshal !!seq"),
    "cipher": ("tls_server_config:\n  cert_file: leaf.pem\n  key_file: leaf.key\n"
               "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
               ["{p}:4: tls_server_config.cipher_suites[0]: unknown or insecure cipher suite "
                "'TLS_RSA_WITH_RC4_128_SHA' (did you mean \"TLS_RSA_WITH_AES_128_CBC_SHA\"?)"],
               "unknown cipher"),
    "client auth type": ("tls_server_config:\n  cert_file: leaf.pem\n  key_file: leaf.key\n"
                         "  client_auth_type: VerifyClientCert\n",
                         ["{p}:4: tls_server_config.client_auth_type: unknown value "
                          "'VerifyClientCert' (did you mean \"VerifyClientCertIfGiven\"?); known: "
                          "NoClientCert, RequestClientCert, RequireAnyClientCert, "
                          "VerifyClientCertIfGiven, RequireAndVerifyClientCert"],
                         "Invalid ClientAuth"),
    "client CA without client auth": (
        "tls_server_config:\n  cert_file: leaf.pem\n  key_file: leaf.key\n"
        "  client_ca_file: ca.pem\n",
        ["{p}:4: tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert: "
         "set client_auth_type to VerifyClientCertIfGiven or RequireAndVerifyClientCert"],
        "without a Client Auth Policy"),
    "cert and key swapped": ("tls_server_config:\n  cert_file: leaf.key\n  key_file: leaf.pem\n",
                             ["{p}:2: tls_server_config.cert_file: {d}/leaf.key and {d}/leaf.pem "
                              "are not a PEM certificate and its key: "],
                             "PEM inputs may have been switched"),
    "YAML syntax": ("basic_auth_users: [\n", ["{p}:2:1: YAML syntax error: "], "yaml:"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_files_both_refuse(case: str, certs: CertFiles) -> None:
    text, expected, promtool_says = REFUSED[case]
    directory = certs.cert.parent
    path = write(directory, text)
    found = problems(path)
    wanted = [line.format(p=path, d=directory) for line in expected]
    assert len(found) == len(wanted), found
    for got, want in zip(found, wanted, strict=True):
        assert got.startswith(want) if want.endswith(": ") else got == want
    proc = promtool(path)
    assert proc.returncode != 0 and promtool_says.lower() in proc.stdout.lower(), proc.stdout


# netsentry is stricter than exporter-toolkit here, on purpose (see the README).
STRICTER = {
    "TLS 1.1": ("  min_version: TLS11\n", "{p}:4: tls_server_config.min_version: TLS11 is "
                "refused: TLS 1.0 and 1.1 are broken and deprecated (RFC 8996); use TLS12 or "
                "TLS13"),
    "max below min": ("  min_version: TLS13\n  max_version: TLS12\n",
                      "{p}:5: tls_server_config.max_version: TLS12 is older than min_version "
                      "TLS13"),
    "unverified client cert": ("  client_auth_type: RequireAnyClientCert\n  client_ca_file: "
                               "ca.pem\n", "{p}:4: tls_server_config.client_auth_type: "
                               "RequireAnyClientCert " + webconfig.CLIENT_AUTH_NOTE),
    "client auth without CA": ("  client_auth_type: RequireAndVerifyClientCert\n",
                               "{p}:4: tls_server_config.client_auth_type: "
                               "RequireAndVerifyClientCert needs client_ca_file, the CAs that "
                               "sign the client certificates"),
    "two curves": ("  curve_preferences: [X25519, CurveP256]\n",
                   "{p}:4: tls_server_config.curve_preferences: list one curve: Python's ssl "
                   "module can set only one"),
}


@pytest.mark.parametrize("case", STRICTER)
def test_files_only_netsentry_refuses(case: str, certs: CertFiles) -> None:
    extra, expected = STRICTER[case]
    path = write(certs.cert.parent,
                 "tls_server_config:\n  cert_file: leaf.pem\n  key_file: leaf.key\n" + extra)
    assert problems(path) == [expected.format(p=path)]
    assert promtool(path).returncode == 0


# Keys newer than the exporter-toolkit in Debian's promtool 2.42 (its web.Config has neither):
# netsentry reads them as today's toolkit does. promtool's one complaint about such a file is
# the key it does not know, and the same file without the new keys is one it approves.
NEWER_KEYS = {
    "rate limit": ("rate_limit:\n  interval: 1s\n  burst: 20\n", ("rate_limit",),
                   RateLimit(1.0, 20), ()),
    "rate limit, Go duration": ("rate_limit:\n  interval: 1m30.5s\n  burst: 1\n",
                                ("rate_limit",), RateLimit(90.5, 1), ()),
    "allowed SANs": ("tls_server_config:\n  cert_file: leaf.pem\n  key_file: leaf.key\n"
                     "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
                     "  client_allowed_sans: [prometheus.example.org, 127.0.0.2, "
                     "spiffe://example.org/prometheus]\n", ("client_allowed_sans",), None,
                     ("prometheus.example.org", "127.0.0.2", "spiffe://example.org/prometheus")),
}


@pytest.mark.parametrize("case", NEWER_KEYS)
def test_keys_newer_than_promtool_are_all_it_does_not_know(case: str, certs: CertFiles) -> None:
    text, keys, rate_limit, sans = NEWER_KEYS[case]
    path = write(certs.cert.parent, text, "newer.yml")
    config = webconfig.load_file(str(path))
    assert (config.rate_limit, config.client_allowed_sans) == (rate_limit, sans)
    unknown = re.findall(r"field (\w+) not found", promtool(path).stdout)
    assert tuple(unknown) == keys
    lines = [line for line in text.splitlines(keepends=True)
             if not line.lstrip().startswith(tuple(keys)) and not line.startswith("  interval")
             and not line.startswith("  burst")]
    older = write(certs.cert.parent, "".join(lines), "older.yml")
    webconfig.load_file(str(older))
    proc = promtool(older)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout


TLS_SANS = ("tls_server_config:\n  cert_file: leaf.pem\n  key_file: leaf.key\n"
            "  client_ca_file: ca.pem\n")
# The new keys' bad input: (file, netsentry's exact problems).
NEWER_REFUSED = {
    "zero interval": ("rate_limit:\n  interval: 0s\n  burst: 5\n",
                      ["{p}:2: rate_limit.interval: must be more than 0 (exporter-toolkit reads 0 "
                       "as no rate limit: to have none, leave rate_limit out)"]),
    "bare zero": ("rate_limit:\n  interval: 0\n  burst: 5\n",
                  ["{p}:2: rate_limit.interval: must be more than 0 (exporter-toolkit reads 0 as "
                   "no rate limit: to have none, leave rate_limit out)"]),
    "no unit": ("rate_limit:\n  interval: 1\n  burst: 5\n",
                ["{p}:2: rate_limit.interval: '1' is not a duration (a number needs its unit); "
                 "write e.g. 1s, 500ms or 1m30s (units ns, us, ms, s, m, h)"]),
    "Prometheus' days": ("rate_limit:\n  interval: 1d\n  burst: 5\n",
                         ["{p}:2: rate_limit.interval: '1d' is not a duration; write e.g. 1s, "
                          "500ms or 1m30s (units ns, us, ms, s, m, h)"]),
    "negative": ("rate_limit:\n  interval: -1s\n  burst: 5\n",
                 ["{p}:2: rate_limit.interval: '-1s' is negative"]),
    "zero burst": ("rate_limit:\n  interval: 1s\n  burst: 0\n",
                   ["{p}:3: rate_limit.burst: must be at least 1, got 0 (0 would refuse every "
                    "request)"]),
    "burst as text": ("rate_limit:\n  interval: 1s\n  burst: lots\n",
                      ["{p}:3: rate_limit.burst: expected a whole number, got 'lots'"]),
    "missing both, misspelt": ("rate_limit:\n  intervall: 1s\n", [
        '{p}:2: rate_limit.intervall: unknown key (did you mean "interval"?)',
        "{p}:1: rate_limit: missing interval, the time one request's token takes to come "
        "back (e.g. 1s)",
        "{p}:1: rate_limit: missing burst, how many requests may come at once (0, the default, "
        "would refuse every request)"]),
    "not a mapping": ("rate_limit: 10\n", ["{p}:1: rate_limit: expected a mapping, got '10'"]),
    "SANs without required certs": (
        TLS_SANS + "  client_auth_type: VerifyClientCertIfGiven\n  client_allowed_sans: [a]\n",
        ["{p}:6: tls_server_config.client_allowed_sans: needs client_auth_type "
         "RequireAndVerifyClientCert (with VerifyClientCertIfGiven a client may come without a "
         "certificate to match)"]),
    "empty SAN list": (
        TLS_SANS + "  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: []\n",
        ["{p}:6: tls_server_config.client_allowed_sans: an empty list would refuse every client; "
         "leave it out to accept any certificate client_ca_file verifies"]),
    "SANs not a list": (
        TLS_SANS + "  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: a\n",
        ["{p}:6: tls_server_config.client_allowed_sans: expected a list, got 'a'"]),
}


@pytest.mark.parametrize("case", NEWER_REFUSED)
def test_bad_rate_limits_and_allowed_sans(case: str, certs: CertFiles) -> None:
    text, expected = NEWER_REFUSED[case]
    path = write(certs.cert.parent, text, "bad-newer.yml")
    assert problems(path) == [line.format(p=path) for line in expected]


def test_user_with_a_colon(tmp_path: Path) -> None:
    path = write(tmp_path, f'basic_auth_users:\n  "a:b": {HASH}\n')
    assert problems(path) == [f"{path}:2: basic_auth_users.a:b: a user name cannot contain ':' "
                              "(RFC 7617 splits the credentials at the first colon)"]


def test_every_problem_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        tls_server_config:
          min_version: TLS10
        http_server_config:
          http3: true
        basic_auth_users:
          alice: nope
        """)
    assert problems(path) == [
        f"{path}:1: tls_server_config: min_version set without cert_file and key_file; set "
        "both to serve TLS",
        f'{path}:4: http_server_config.http3: unknown key (did you mean "http2"?)',
        f"{path}:6: basic_auth_users.alice: expected a bcrypt hash like $2y$10$ followed by 53 "
        "characters (make one with `htpasswd -nBC 10 USER`)",
    ]


def test_unreadable_file_and_the_agent_refusing_to_start(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    assert problems(missing) == [f"{missing}: cannot read the web config file: No such file or "
                                 "directory"]
    bad = write(tmp_path, "basic_auth_users:\n  alice: nope\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "--web.listen-address",
                           "127.0.0.1:0", "--web.config.file", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{bad}:2: basic_auth_users.alice: expected a bcrypt "
                                        "hash like $2y$10$ followed by 53 characters (make one "
                                        "with `htpasswd -nBC 10 USER`)"]


# --- basic auth, in-process ----------------------------------------------------------------------


def basic(user: str, password: str | bytes) -> str:
    raw = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()


class Counting:
    """bcrypt's checkpw, counting its calls (what timing would otherwise have to show)."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls.append(hashed)
        return bool(bcrypt.checkpw(password, hashed))


def authenticate(auth: BasicAuth, *headers: str) -> list[bool]:
    async def main() -> list[bool]:
        return [await auth.authenticate(h) for h in headers]

    return asyncio.run(main())


@pytest.fixture
def counting() -> Iterator[tuple[BasicAuth, Counting]]:
    verify = Counting()
    auth = BasicAuth({"alice": HASH.encode(), "bob": OTHER.encode()}, verify=verify)
    yield auth, verify
    auth.close()


def test_a_right_password_costs_bcrypt_once(counting: tuple[BasicAuth, Counting]) -> None:
    auth, verify = counting
    assert authenticate(auth, *[basic("alice", PASSWORD)] * 3) == [True] * 3
    assert verify.calls == [HASH.encode()]  # then remembered


def test_every_wrong_password_costs_bcrypt(counting: tuple[BasicAuth, Counting]) -> None:
    auth, verify = counting
    assert authenticate(auth, basic("alice", PASSWORD), *[basic("alice", "guess")] * 3) == [
        True, False, False, False]
    assert verify.calls == [HASH.encode()] * 4  # failures are never remembered


def test_unknown_users_cost_as_much_as_known_ones(counting: tuple[BasicAuth, Counting]) -> None:
    auth, verify = counting
    # Even with a password that matches the hash it is checked against, an unknown user is
    # refused after one bcrypt run on the costliest configured hash (bob's, cost 5).
    assert authenticate(auth, basic("mallory", "other"), basic("mallory", PASSWORD)) == [
        False, False]
    assert verify.calls == [OTHER.encode()] * 2


@pytest.mark.parametrize("header", [
    "", "Bearer abc", "Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"alice").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:" + PASSWORD.encode()).decode(),
])
def test_malformed_credentials(counting: tuple[BasicAuth, Counting], header: str) -> None:
    auth, verify = counting
    assert authenticate(auth, header) == [False]
    assert verify.calls == []


def test_scheme_is_case_insensitive(counting: tuple[BasicAuth, Counting]) -> None:
    auth, _ = counting
    assert authenticate(auth, basic("alice", PASSWORD).replace("Basic", "bASIC")) == [True]


def test_the_memory_is_bounded() -> None:
    verify = Counting()
    auth = BasicAuth({"alice": HASH.encode(), "bob": OTHER.encode()}, verify=verify,
                     cache_size=1)
    try:
        assert authenticate(auth, basic("alice", PASSWORD), basic("bob", "other"),
                            basic("alice", PASSWORD)) == [True] * 3
        assert verify.calls == [HASH.encode(), OTHER.encode(), HASH.encode()]  # alice evicted
    finally:
        auth.close()


def test_only_72_bytes_of_a_password_count_as_in_go() -> None:
    long = b"x" * 72
    auth = BasicAuth({"alice": bcrypt.hashpw(long, bcrypt.gensalt(4))})
    try:
        assert authenticate(auth, basic("alice", long + b"tail"), basic("alice", long[:-1])) == [
            True, False]
    finally:
        auth.close()


def test_guard_answers_401_and_leaves_open_paths_open() -> None:
    auth = BasicAuth({"alice": HASH.encode()}, open_paths=frozenset({"/-/healthy"}))

    def request(path: str, authorization: str = "") -> Request:
        headers = {"authorization": authorization} if authorization else {}
        return Request("GET", path, {}, headers, b"", "127.0.0.1:1")

    async def main() -> None:
        assert await auth(request("/-/healthy")) is None
        assert await auth(request("/metrics", basic("alice", PASSWORD))) is None
        refusal = await auth(request("/metrics", basic("alice", "wrong")))
        assert refusal is not None and refusal.status == 401
        assert dict(refusal.headers)["WWW-Authenticate"].startswith("Basic realm=")

    try:
        asyncio.run(main())
    finally:
        auth.close()


def test_configured_headers_do_not_override_a_handlers_own() -> None:
    async def own(request: Request) -> Response:
        return Response(200, b"x", headers=(("X-Frame-Options", "sameorigin"),))

    async def plain(request: Request) -> Response:
        return Response(200, b"y")

    async def main() -> None:
        server = WebServer([Route("/own", own), Route("/plain", plain)],
                           headers=lambda: (("X-Frame-Options", "deny"),))
        (address,) = await server.start(["127.0.0.1:0"])
        try:
            for path, want in (("/own", ["sameorigin"]), ("/plain", ["deny"]),
                               ("/nope", ["deny"])):
                reader, writer = await asyncio.open_connection(*address.rsplit(":", 1))
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                             .encode())
                head = (await reader.read()).split(b"\r\n\r\n")[0].decode().lower()
                writer.close()
                values = [line.split(":", 1)[1].strip() for line in head.split("\r\n")
                          if line.startswith("x-frame-options:")]
                assert values == want, (path, head)
        finally:
            await server.close()

    asyncio.run(main())


# --- the agent, serving TLS and basic auth -------------------------------------------------------

CONFIG = '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'  # no checks: the endpoints matter


def client_context(certs: CertFiles, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    for name, version in versions.items():
        setattr(context, name, version)
    return context


def get(port: int, context: ssl.SSLContext, path: str, authorization: str = "",
        timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": authorization} if authorization
                     else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def tls_agent(certs: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    directory = certs.cert.parent
    web = write(directory, f"""\
        tls_server_config:
          cert_file: leaf.pem
          key_file: leaf.key
        http_server_config:
          headers:
            X-Content-Type-Options: nosniff
        basic_auth_users:
          alice: {HASH}
        """, "agent-web.yml")
    config = tmp_path_factory.mktemp("agent") / "netsentry.toml"
    config.write_text(CONFIG)
    with Agent(config, "--web.config.file", str(web)) as agent:
        yield agent


def test_auth_good_bad_and_missing(tls_agent: Agent, certs: CertFiles) -> None:
    port, context = tls_agent.port, client_context(certs)
    status, headers, body = get(port, context, "/metrics", basic("alice", PASSWORD))
    assert status == 200 and b"netsentry_build_info" in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    for authorization in ("", basic("alice", "wrong"), basic("mallory", PASSWORD)):
        status, headers, body = get(port, context, "/metrics", authorization)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert b"netsentry" not in body
    # Everything but /-/healthy is behind auth, even what does not exist.
    assert get(port, context, "/-/healthy")[0] == 200
    for path in ("/", "/-/ready", "/nope"):
        assert get(port, context, path)[0] == 401
    assert get(port, context, "/nope", basic("alice", PASSWORD))[0] == 404


def test_plain_http_gets_no_answer_from_a_tls_port(tls_agent: Agent) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", tls_agent.port, timeout=10)
    try:
        conn.request("GET", "/-/healthy")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.getresponse()
    finally:
        conn.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_is_refused(tls_agent: Agent, certs: CertFiles) -> None:
    def handshake(port: int, maximum: ssl.TLSVersion) -> str:
        context = client_context(certs, minimum_version=ssl.TLSVersion.TLSv1,
                                 maximum_version=maximum)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
                context.wrap_socket(sock, server_hostname="localhost") as tls:
            return str(tls.version())

    # The client does speak TLS 1.1, to a server that allows it...
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lax.load_cert_chain(certs.cert, certs.key)
    lax.minimum_version = ssl.TLSVersion.TLSv1
    lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), lax.wrap_socket(conn, server_side=True):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert handshake(listener.getsockname()[1], ssl.TLSVersion.TLSv1_1) == "TLSv1.1"
        thread.join(10)
    # ... and TLS 1.2 to the agent, which refuses TLS 1.1.
    assert handshake(tls_agent.port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    # The server refuses the ClientHello; asyncio closes without flushing OpenSSL's alert, so
    # the client may see either the alert or the end of the stream.
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|EOF"):
        handshake(tls_agent.port, ssl.TLSVersion.TLSv1_1)


def test_a_scrape_is_answered_while_200_tls_connections_idle(
    tls_agent: Agent, certs: CertFiles
) -> None:
    context = client_context(certs)
    idle: list[socket.socket] = []
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", tls_agent.port), timeout=10)
            if i % 3 == 1:  # handshake done, then silence
                sock = context.wrap_socket(sock, server_hostname="localhost")
            elif i % 3 == 2:  # half a ClientHello record header, then silence
                sock.sendall(b"\x16\x03\x01")
            idle.append(sock)  # else: connected, never a byte
        # Well within the 10 s the server gives a handshake or a request: no idle connection
        # is waited for.
        status, _, body = get(tls_agent.port, context, "/metrics", basic("alice", PASSWORD),
                              timeout=5)
        assert status == 200 and b"netsentry_build_info" in body
    finally:
        for sock in idle:
            sock.close()


def test_client_certificates(certs: CertFiles, client_certs: CertFiles, tmp_path: Path) -> None:
    web = write(tmp_path, f"""\
        tls_server_config:
          cert_file: {certs.cert}
          key_file: {certs.key}
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: {client_certs.ca}
          min_version: TLS13
        """)
    config = tmp_path / "netsentry.toml"
    config.write_text(CONFIG)
    with Agent(config, "--web.config.file", str(web)) as agent:
        context = client_context(certs)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(agent.port, context, "/-/healthy")  # no certificate
        context.load_cert_chain(client_certs.cert, client_certs.key)
        assert get(agent.port, context, "/-/healthy")[0] == 200
        old = client_context(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
        old.load_cert_chain(client_certs.cert, client_certs.key)
        with pytest.raises(ssl.SSLError):
            get(agent.port, old, "/-/healthy")  # min_version TLS13
