"""The http check over HTTP/2: against a real nginx that speaks HTTP/2 and HTTP/1.1 on one TLS
port (ALPN) and cleartext HTTP/2 with prior knowledge on another; `http_version` and `h2c`."""

from __future__ import annotations

import html
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.config.load import load_check, load_text
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError, Reason
from exporter.store import Store
from exporter.web import pages
from exporter.web.status import Filter, checks_json, overview
from tests.support.certs import CertFiles, make_cert, server_context
from tests.support.checks import gauges, run_check
from tests.support.httpservers import HttpServer, Reply
from tests.support.nginx import BIG_BYTES, HELLO, Nginx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("h2"), "web.test", ips=("127.0.0.1",))


@pytest.fixture(scope="module")
def nginx(certs: CertFiles) -> Iterator[Nginx]:
    with Nginx(certs) as server:
        yield server


def http_check(target: str, certs: CertFiles | None = None, **keys: Any) -> CheckConfig:
    tls = {"server_name": "web.test", "ca_file": str(certs.ca)} if certs else {}
    return load_check({"name": "h", "kind": "http", "interval": "1m", "timeout": "2s",
                       "target": target, **tls, **keys}, "test")


def test_any_version_gets_http2_from_nginx_with_every_phase(nginx: Nginx,
                                                            certs: CertFiles) -> None:
    result = run_check(http_check(f"https://127.0.0.1:{nginx.port}/", certs))
    assert result.success, result
    got = gauges(result)
    assert got["netsentry_http_version"] == 2
    assert got["netsentry_http_status_code"] == 200
    assert got["netsentry_http_response_bytes"] == len(HELLO)
    assert {k for k in got if k.startswith("netsentry_http_phase")} == {
        f"netsentry_http_phase_seconds{p}"
        for p in ("resolve", "connect", "tls", "processing", "transfer")}
    assert got["netsentry_tls_version_infoTLSv1.3"] == 1
    assert "netsentry_tcp_rtt_seconds" in got
    assert dict(result.details)["status"] == f"200 HTTP/2, {len(HELLO)} bytes"


def test_the_status_page_and_api_show_the_version(nginx: Nginx, certs: CertFiles) -> None:
    check = http_check(f"https://127.0.0.1:{nginx.port}/", certs)
    store = Store()
    store.load([check])
    store.record(check.name, check, run_check(check))
    snapshot = overview(store, time.time(), "test", "t.toml", True)
    assert f"status: 200 HTTP/2, {len(HELLO)} bytes" in html.unescape(
        pages.status_page(snapshot, Filter()))
    shown = json.loads(checks_json(snapshot, Filter()))["checks"][0]["last"]["details"]
    assert shown["status"] == f"200 HTTP/2, {len(HELLO)} bytes"


def test_version_11_from_the_same_port(nginx: Nginx, certs: CertFiles) -> None:
    result = run_check(http_check(f"https://127.0.0.1:{nginx.port}/", certs,
                                  http_version="1.1"))
    assert result.success, result
    assert gauges(result)["netsentry_http_version"] == 1.1


def test_gzip_over_http2_decoded(nginx: Nginx, certs: CertFiles) -> None:
    result = run_check(http_check(f"https://127.0.0.1:{nginx.port}/big", certs,
                                  http_version="2"))
    assert result.success, result
    assert gauges(result)["netsentry_http_response_bytes"] == BIG_BYTES
    assert "received)" in dict(result.details)["status"]  # fewer bytes came over the wire


def test_version_2_required_of_a_server_without_it(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "web.test")
    with HttpServer({"/": Reply(200, b"ok")}, tls=server_context(files)) as server:
        result = run_check(http_check(server.url(), files, http_version="2"))
        assert server.requests == []  # judged on the handshake, before any request
    assert (result.reason, result.message) == (
        Reason.UNEXPECTED_RESPONSE,
        'the server did not negotiate HTTP/2 (http_version = "2"): ALPN chose nothing, so '
        "HTTP/1.1")
    with HttpServer({"/": Reply(200, b"ok")}, tls=server_context(files)) as server:
        assert run_check(http_check(server.url(), files)).success  # "any" takes HTTP/1.1


def test_h2c_with_prior_knowledge(nginx: Nginx) -> None:
    result = run_check(http_check(f"http://127.0.0.1:{nginx.h2c_port}/", h2c=True,
                                  http_version="2"))
    assert result.success, result
    assert gauges(result)["netsentry_http_version"] == 2
    assert "netsentry_http_phase_secondstls" not in gauges(result)


def test_a_404_over_http2_is_a_bad_status(nginx: Nginx, certs: CertFiles) -> None:
    result = run_check(http_check(f"https://127.0.0.1:{nginx.port}/missing", certs))
    assert (result.reason, result.message) == (Reason.BAD_STATUS,
                                               "HTTP status 404, expected 2xx")


def test_a_redirect_over_http2_is_followed(nginx: Nginx, certs: CertFiles) -> None:
    result = run_check(http_check(f"https://127.0.0.1:{nginx.port}/redirect", certs))
    assert result.success, result
    assert gauges(result)["netsentry_http_redirects"] == 1


@pytest.mark.parametrize(("body", "expected"), [
    ('target = "https://example.org/"\nhttp_version = "3"\n',
     "f.toml:5: checks[0] \"web\".http_version: must be one of 'any', '1.1', '2', got '3'"),
    ('target = "https://example.org/"\nh2c = true\n',
     "checks[0] \"web\".h2c: is cleartext HTTP/2: over TLS (https://), ALPN chooses HTTP/2"),
    ('target = "http://example.org/"\nhttp_version = "2"\n',
     "checks[0] \"web\".http_version: an http:// URL speaks HTTP/1.1 unless h2c = true"),
])
def test_config_errors(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text('[[checks]]\nname = "web"\nkind = "http"\n' + body, "f.toml")
    (problem,) = caught.value.problems
    assert expected in problem, problem
    assert problem.startswith("f.toml:")


# --- beside curl -------------------------------------------------------------------------------

DELAY = 0.2  # the upstream's think time: the processing phase of both clients contains it


@pytest.mark.parametrize("version", ["2", "1.1"])
def test_phases_agree_with_curl(certs: CertFiles, version: str) -> None:
    def slow(_request: Any) -> Reply:
        time.sleep(DELAY)
        return Reply(200, b"slow answer")

    with HttpServer({"/": slow}) as upstream, Nginx(certs, upstream.port) as web:
        url = f"https://web.test:{web.port}/upstream/"
        curl = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "--http2" if version == "2" else "--http1.1",
             "--cacert", str(certs.ca), "--resolve", f"web.test:{web.port}:127.0.0.1",
             "-w", "%{http_version} %{time_appconnect} "
                   "%{time_starttransfer} %{time_total}", url],
            capture_output=True, text=True, timeout=30, check=True).stdout.split()
        result = run_check(http_check(f"https://127.0.0.1:{web.port}/upstream/", certs,
                                      http_version=version))
    assert result.success, result
    got = gauges(result)
    assert got["netsentry_http_version"] == float(version) == float(curl[0])
    appconnect, starttransfer, total = map(float, curl[1:])
    curl_phases = {"processing": starttransfer - appconnect, "transfer": total - starttransfer}
    ours = {p: got[f"netsentry_http_phase_seconds{p}"] for p in curl_phases}
    # Both clients put the upstream's delay in processing (it cannot answer sooner), and
    # neither in transfer, a few bytes after the first.
    for phases in curl_phases, ours:
        assert phases["processing"] >= DELAY > phases["transfer"], (curl_phases, ours)
