"""The http check against in-process servers: phases, TLS, status and body expectations,
redirects, caps, the deadline, config errors with their lines, and secrets that never show."""

from __future__ import annotations

import base64
import gzip
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.checks.http import Secret
from exporter.cli import probe
from exporter.config.load import load_check, load_text
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError, Reason
from exporter.store import Result
from tests.support.agent import Agent
from tests.support.certs import make_cert, make_chained_cert, make_expired_cert, server_context
from tests.support.checks import gauges, run_check
from tests.support.httpservers import HttpServer, Reply, Request
from tests.support.servers import closed_port

SENTINEL = "s3ntinel-Zq7xW"


def http_check(target: str, **keys: Any) -> CheckConfig:
    table = {"name": "h", "kind": "http", "interval": "1m", "timeout": "2s", "target": target,
             **keys}
    return load_check(table, "test")


def failure(result: Result) -> tuple[Reason | None, str]:
    return result.reason, result.message


# --- success, phases and TLS ----------------------------------------------------------------


def test_get_over_http_times_each_phase() -> None:
    with HttpServer({"/": Reply(200, b"hello world")}) as server:
        result = run_check(http_check(server.url("/?q=1")))
    assert result.success, result
    got = gauges(result)
    assert {k for k in got if k.startswith("netsentry_http_phase")} == {
        f"netsentry_http_phase_seconds{p}"
        for p in ("resolve", "connect", "processing", "transfer")}
    assert got["netsentry_http_status_code"] == 200
    assert got["netsentry_http_response_bytes"] == 11
    assert got["netsentry_http_redirects"] == 0
    assert got["netsentry_http_version"] == 1.1
    assert "netsentry_tcp_rtt_seconds" in got
    details = dict(result.details)
    assert details["url"] == server.url("/?q=1")
    assert details["status"] == "200 HTTP/1.1, 11 bytes"
    (request,) = server.requests
    assert (request.method, request.target) == ("GET", "/?q=1")
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["user-agent"].startswith("netsentry/")


def test_https_with_ca_file_and_server_name(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "web.test")
    with HttpServer({"/": Reply(200, b"ok")}, tls=server_context(files)) as server:
        result = run_check(http_check(server.url(), server_name="web.test", ca_file=str(files.ca)))
    assert result.success, result
    got = gauges(result)
    assert got["netsentry_http_phase_secondstls"] > 0
    assert got["netsentry_tls_version_infoTLSv1.3"] == 1
    # make_cert's certificates are valid for 2 days.
    assert abs(got["netsentry_tls_cert_expiry_timestamp_seconds"] - time.time() - 2 * 86400) < 120
    assert "certificate expires" in dict(result.details)


def test_https_expiry_is_the_earliest_of_the_chain_the_server_sent(tmp_path: Path) -> None:
    # The server sends its leaf and an intermediate that expires 50 days before the leaf.
    files, intermediate_expiry = make_chained_cert(tmp_path, "web.test")
    with HttpServer({"/": Reply(200, b"ok")}, tls=server_context(files)) as server:
        result = run_check(http_check(server.url(), server_name="web.test", ca_file=str(files.ca)))
    assert result.success, result
    assert gauges(result)["netsentry_tls_cert_expiry_timestamp_seconds"] == intermediate_expiry


@pytest.mark.parametrize("case", ["expired", "wrong_host", "self_signed"])
def test_tls_failures_say_why(tmp_path: Path, case: str) -> None:
    good = make_cert(tmp_path, "web.test")
    files, keys, cause = {
        "expired": (make_expired_cert(tmp_path, "web.test"), {},
                    "the certificate has expired"),
        "wrong_host": (good, {"server_name": "other.test"},
                       "the certificate is not valid for other.test"),
        "self_signed": (good.self_signed(), {"ca_file": ""},
                        "unknown issuer: the certificate is self-signed"),
    }[case]
    with HttpServer({"/": Reply()}, tls=server_context(files)) as server:
        keys = {"server_name": "web.test", "ca_file": str(files.ca), **keys}
        result = run_check(http_check(server.url(), **{k: v for k, v in keys.items() if v}))
    assert failure(result) == (Reason.TLS_ERROR,
                               f"certificate of 127.0.0.1:{server.port}: {cause}")
    assert server.requests == []


def test_insecure_skip_verify_passes_a_self_signed_cert_and_exports_its_expiry(
        tmp_path: Path) -> None:
    files = make_cert(tmp_path, "web.test").self_signed()
    with HttpServer({"/": Reply()}, tls=server_context(files)) as server:
        result = run_check(http_check(server.url(), tls_insecure_skip_verify=True))
    assert result.success, result
    assert gauges(result)["netsentry_tls_cert_expiry_timestamp_seconds"] > time.time()


# --- status and body ----------------------------------------------------------------------------


def test_bad_status() -> None:
    with HttpServer({"/": Reply(503, b"down")}) as server:
        result = run_check(http_check(server.url()))
    assert failure(result) == (Reason.BAD_STATUS, "HTTP status 503, expected 2xx")
    assert gauges(result)["netsentry_http_status_code"] == 503


def test_valid_status_list() -> None:
    with HttpServer({"/gone": Reply(404), "/err": Reply(500)}) as server:
        gone = run_check(http_check(server.url("/gone"), valid_status=[200, "4xx"]))
        err = run_check(http_check(server.url("/err"), valid_status=[200, "4xx"]))
    assert gone.success, gone
    assert failure(err) == (Reason.BAD_STATUS, "HTTP status 500, expected 200, 4xx")


def test_body_regex_and_body_not_regex() -> None:
    with HttpServer({"/": Reply(200, b"status: all good")}) as server:
        results = [run_check(http_check(server.url(), **keys)) for keys in (
            {"body_regex": "all good", "body_not_regex": "error"},
            {"body_regex": "^fine"},
            {"body_not_regex": "g(o)+d"},
        )]
    assert results[0].success, results[0]
    assert failure(results[1]) == (Reason.UNEXPECTED_RESPONSE, "the body does not match /^fine/")
    assert failure(results[2]) == (Reason.UNEXPECTED_RESPONSE, "the body matches /g(o)+d/")


def test_malformed_response() -> None:
    with HttpServer({"/": Reply(version="x")}) as server:
        result = run_check(http_check(server.url()))
    assert result.reason is Reason.MALFORMED_RESPONSE
    assert result.message.startswith("invalid HTTP response: ")


# --- redirects ----------------------------------------------------------------------------------


def test_redirects_are_followed_and_counted() -> None:
    routes = {"/a": Reply(301, headers=(("Location", "/b"),)),
              "/b": Reply(302, headers=(("Location", "ok?x=1"),)),
              "/ok": Reply(200, b"there")}
    with HttpServer(routes) as server:
        followed = run_check(http_check(server.url("/a")))
        kept = run_check(http_check(server.url("/a"), follow_redirects=False))
    assert followed.success, followed
    assert gauges(followed)["netsentry_http_redirects"] == 2
    details = dict(followed.details)
    assert details["url"] == server.url("/ok?x=1")
    assert details["redirect 2"] == f"302 to {server.url('/ok?x=1')}"
    assert failure(kept) == (Reason.BAD_STATUS, "HTTP status 301, expected 2xx")


def test_a_redirect_loop_stops_at_max_redirects() -> None:
    with HttpServer({"/loop": Reply(302, headers=(("Location", "/loop"),))}) as server:
        result = run_check(http_check(server.url("/loop"), max_redirects=3))
    assert failure(result) == (Reason.UNEXPECTED_RESPONSE, "more than 3 redirect(s) "
                               f"(max_redirects), the last to {server.url('/loop')}")
    assert len(server.requests) == 4
    assert gauges(result)["netsentry_http_redirects"] == 3


def test_post_after_303_becomes_get_and_secrets_stay_with_the_origin() -> None:
    with HttpServer({"/": Reply(200)}) as other:
        routes = {"/form": Reply(303, headers=(("Location", other.url("/")),))}
        with HttpServer(routes) as server:
            result = run_check(http_check(server.url("/form"), method="POST", body="a=1",
                                       headers={"X-Plain": "p"},
                                       secret_headers={"X-Token": "t"},
                                       basic_auth={"username": "u", "password": "pw"}))
    assert result.success, result
    (first,), (second,) = server.requests, other.requests
    assert (first.method, first.body, first.headers["x-token"]) == ("POST", b"a=1", "t")
    assert (second.method, second.body, second.headers["x-plain"]) == ("GET", b"", "p")
    assert "x-token" not in second.headers and "authorization" not in second.headers


# --- the deadline and the caps ------------------------------------------------------------------


def test_a_trickling_server_is_stopped_at_the_deadline() -> None:
    with HttpServer({"/": Reply(200, b"x" * 1000, trickle=0.05)}) as server:
        result = run_check(http_check(server.url(), timeout="500ms"))
    assert failure(result) == (Reason.TIMEOUT, "no result within the 0.5s timeout")
    # The client hung up at the deadline: the server's next bytes found nobody. All of them,
    # one every 50 ms, would have taken 50 s.
    assert server.trickled < 1000
    assert len(server.requests) == 1


def test_a_gzip_bomb_stops_at_max_body_bytes() -> None:
    bomb = gzip.compress(bytes(10 << 20), 9)
    assert len(bomb) < 20_000
    with HttpServer({"/": Reply(200, bomb, headers=(("Content-Encoding", "gzip"),))}) as server:
        result = run_check(http_check(server.url()))
    assert failure(result) == (Reason.UNEXPECTED_RESPONSE,
                               "decompressed response body larger than 1048576 bytes")


def test_gzip_body_is_decompressed_for_size_and_regex() -> None:
    body = gzip.compress(b"compressed hello " * 100)
    with HttpServer({"/": Reply(200, body, headers=(("Content-Encoding", "gzip"),))}) as server:
        result = run_check(http_check(server.url(), body_regex="hello compressed"))
    assert result.success, result
    assert gauges(result)["netsentry_http_response_bytes"] == 1700
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_body_over_the_cap() -> None:
    with HttpServer({"/": Reply(200, b"x" * 2000)}) as server:
        result = run_check(http_check(server.url(), max_body_bytes=1000))
    assert failure(result) == (Reason.UNEXPECTED_RESPONSE, "response body larger than 1000 bytes")


def test_chunked_response() -> None:
    body = bytes(range(256)) * 400
    with HttpServer({"/": Reply(200, body, chunk=1000)}) as server:
        result = run_check(http_check(server.url()))
    assert result.success, result
    assert gauges(result)["netsentry_http_response_bytes"] == len(body)


# --- requests reaching the server ---------------------------------------------------------------


def test_post_with_body_and_headers() -> None:
    with HttpServer({"/api": Reply(201)}) as server:
        result = run_check(http_check(server.url("/api"), method="POST", body='{"a": 1}',
                                   headers={"Content-Type": "application/json", "X-A": "b"}))
    assert result.success, result
    (request,) = server.requests
    assert (request.method, request.body) == ("POST", b'{"a": 1}')
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-a"] == "b"
    assert request.headers["content-length"] == "8"


def test_basic_auth(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("from-file\n")
    with HttpServer({"/": Reply()}) as server:
        inline = run_check(http_check(server.url(), basic_auth={"username": "ann",
                                                             "password": "pa:ss"}))
        filed = run_check(http_check(server.url(), basic_auth={"username": "bob",
                                                            "password_file": str(secret_file)}))
    assert inline.success and filed.success
    sent = [base64.b64decode(r.headers["authorization"].removeprefix("Basic ")).decode()
            for r in server.requests]
    assert sent == ["ann:pa:ss", "bob:from-file"]


# --- config -------------------------------------------------------------------------------------


def config_problems(tmp_path: Path, body: str) -> list[str]:
    text = '[[checks]]\nname = "web"\nkind = "http"\n' + body
    with pytest.raises(ConfigError) as caught:
        load_text(text, "f.toml")
    return caught.value.problems


@pytest.mark.parametrize(("body", "expected"), [
    ('target = "example.org/"\n',
     "f.toml:4: checks[0] \"web\".target: expected an http:// or https:// URL, got "
     "'example.org/'"),
    ('target = "https://user:hunter2@example.org/"\n',
     "f.toml:4: checks[0] \"web\".target: the URL holds a user name or password: use "
     "basic_auth instead"),
    ('target = "http://example.org/"\nmax_body_bytes = -1\n',
     "f.toml:5: checks[0] \"web\".max_body_bytes: must be more than 0"),
    ('target = "https://example.org/"\nca_file = "/nonexistent/ca.pem"\n',
     "f.toml:5: checks[0] \"web\".ca_file: cannot read /nonexistent/ca.pem: No such file or "
     "directory"),
    ('target = "http://example.org/"\n\n[checks.basic_auth]\nusername = "u"\n'
     'password_file = "/nonexistent/pw"\n',
     "f.toml:6: checks[0] \"web\".basic_auth: cannot read password_file /nonexistent/pw: No "
     "such file or directory"),
    ('target = "http://example.org/"\nvalid_status = ["2xx", 99]\n',
     "f.toml:5: checks[0] \"web\".valid_status: invalid status 99: expected a code (200) or a "
     "class (\"2xx\")"),
    ('target = "http://example.org/"\nsecret_headers = { X-Key = "a\\nb" }\n',
     "f.toml:5: checks[0] \"web\".secret_headers: header 'X-Key': the value must be printable "
     "ASCII on one line"),
    ('target = "http://example.org/"\nbasic_auth = { username = "u" }\n',
     "f.toml:5: checks[0] \"web\".basic_auth: needs exactly one of password and "
     "password_file"),
])
def test_config_errors(tmp_path: Path, body: str, expected: str) -> None:
    assert config_problems(tmp_path, body) == [expected]


def test_secrets_show_as_secret_and_compare_by_value() -> None:
    check = http_check("http://example.org/", secret_headers={"X-Key": SENTINEL},
                       basic_auth={"username": "u", "password": SENTINEL})
    assert SENTINEL not in repr(check) and SENTINEL not in str(check)
    assert "<secret>" in repr(check.settings)
    assert check == http_check("http://example.org/", secret_headers={"X-Key": SENTINEL},
                               basic_auth={"username": "u", "password": SENTINEL})
    assert Secret("a") != Secret("b") and f"{Secret('a')}" == "<secret>"


# --- the sentinel secret ------------------------------------------------------------------------


def test_a_sentinel_secret_shows_nowhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    def unauthorized(request: Request) -> Reply:
        return Reply(401, f"denied {request.headers.get('x-token')}".encode(),
                     headers=(("WWW-Authenticate", 'Basic realm="x"'),))

    (tmp_path / "pw").write_text(SENTINEL)
    refused = f"http://127.0.0.1:{closed_port()}/"
    with HttpServer({"/": unauthorized}) as server:
        # The probe command, as a user would type it.
        outputs = []
        for url in (server.url(), refused):
            code = probe.main(["http", url, "--secret_headers", f'{{X-Token = "{SENTINEL}"}}',
                               "--basic_auth", f'{{username = "u", password = "{SENTINEL}"}}'])
            out, err = capsys.readouterr()
            outputs.append(out + err)
            assert code == 1
        assert "bad_status" in outputs[0] and "refused" in outputs[1]
        # A real agent, its logs, metrics and page.
        text = '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'
        for name, url, auth in (("denied", server.url(), "password"), ("gone", refused, "file")):
            password = (f'password = "{SENTINEL}"' if auth == "password"
                        else f'password_file = "{tmp_path / "pw"}"')
            text += (f'\n[[checks]]\nname = "{name}"\nkind = "http"\ntarget = "{url}"\n'
                     f'headers = {{ X-Plain = "visible" }}\n'
                     f'secret_headers = {{ X-Token = "{SENTINEL}" }}\n'
                     f'basic_auth = {{ username = "u", {password} }}\n')
        path = tmp_path / "netsentry.toml"
        path.write_text(text)
        with Agent(path, "--log.level", "debug") as agent:
            agent.wait_for(lambda: all(
                (agent.value("netsentry_check_runs_total", check=n, kind="http") or 0) >= 2
                for n in ("denied", "gone")), what="two runs of each check")
            status, metrics_text = agent.request("GET", "/metrics")
            _, page = agent.request("GET", "/")
            lines = list(agent.lines)
    assert status == 200 and "bad_status" in metrics_text and "refused" in page
    assert server.requests and all(r.headers["x-token"] == SENTINEL for r in server.requests)
    for where, seen in (("probe", "\n".join(outputs)), ("metrics", metrics_text),
                        ("page", page), ("log", "\n".join(lines))):
        assert SENTINEL not in seen, where
        assert base64.b64encode(f"u:{SENTINEL}".encode()).decode() not in seen, where


def test_https_to_a_plain_http_server_is_a_tls_error() -> None:
    with HttpServer({"/": Reply()}) as server:
        result = run_check(http_check(server.url().replace("http:", "https:")))
    assert failure(result) == (Reason.TLS_ERROR,
                               f"TLS with 127.0.0.1:{server.port}: wrong version number")
