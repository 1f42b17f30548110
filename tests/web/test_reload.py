"""The web config followed while serving: renewed certificates, changed users, headers and
client CAs apply to new connections without a restart; a broken or unappliable change keeps the
running settings (`exporter.webreload`)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import os
import shutil
import socket
import ssl
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import bcrypt
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from exporter.web import webconfig
from exporter.web.reload import LiveWebConfig
from exporter.web.server import Request, Response, Route, WebServer
from tests.support.agent import Agent
from tests.support.certs import CertFiles, make_cert, make_client_cert

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
ALICE = bcrypt.hashpw(b"alice's", bcrypt.gensalt(4)).decode()  # cost 4: fast tests
BOB = bcrypt.hashpw(b"bob's", bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("old"), "old.test", ips=["127.0.0.1"])


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("new"), "new.test", ips=["127.0.0.1"])


def install(certs: CertFiles, directory: Path) -> None:
    """Put a certificate and its key where the web config names them, each by a rename (as
    cert-manager's and certbot's renewals replace files)."""
    for source, name in ((certs.cert, "server.pem"), (certs.key, "server.key")):
        shutil.copyfile(source, directory / f".{name}.tmp")
        os.replace(directory / f".{name}.tmp", directory / name)


def write(path: Path, text: str) -> None:
    path.with_suffix(".tmp").write_text(textwrap.dedent(text))
    os.replace(path.with_suffix(".tmp"), path)


TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"


def served_name(port: int, client: ssl.SSLContext | None = None,
                server_name: str = "127.0.0.1") -> str:
    """The common name of the certificate a new connection is shown (an address as the
    server name sends no SNI)."""
    if client is None:
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            client.wrap_socket(sock, server_hostname=server_name) as tls:
        tls.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = tls.recv(100)
        assert answer.startswith(b"HTTP/1.1 200"), answer  # the handshake was all of it
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    [name] = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    return str(name.value)


@asynccontextmanager
async def serving(path: Path) -> AsyncIterator[tuple[LiveWebConfig, int]]:
    """A web server on loopback whose TLS, users and headers follow the web config at `path`
    (polled by the test, through `poll_once`, instead of every second)."""
    async def ok(request: Request) -> Response:
        return Response(200, b"ok\n")

    live = LiveWebConfig(webconfig.load_file(str(path)), poll=3600)
    server = WebServer([Route("/x", ok)], ssl=live.tls, guard=live.guard,
                       headers=lambda: live.headers)
    (address,) = await server.start(["127.0.0.1:0"])
    try:
        yield live, int(address.rsplit(":", 1)[1])
    finally:
        await server.close()
        live.close()


def settle(live: LiveWebConfig) -> None:
    """Two polls: the first sees the change, the second sees it stand still and loads it."""
    live.poll_once()
    live.poll_once()


async def in_thread(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


def test_a_renewed_certificate_is_served_without_a_restart(
    old: CertFiles, new: CertFiles, tmp_path: Path
) -> None:
    install(old, tmp_path)
    write(tmp_path / "web.yml", TLS)

    async def main() -> None:
        async with serving(tmp_path / "web.yml") as (live, port):
            assert await in_thread(lambda: served_name(port)) == "old.test"
            install(new, tmp_path)
            live.poll_once()  # the change is seen, not yet loaded: a key may still be coming
            assert await in_thread(lambda: served_name(port)) == "old.test"
            live.poll_once()
            assert live.ok
            assert await in_thread(lambda: served_name(port)) == "new.test"
            # A client that trusts only the new CA verifies the new certificate, with SNI too.
            trusting = ssl.create_default_context(cafile=str(new.ca))
            assert await in_thread(lambda: served_name(port, trusting)) == "new.test"
            assert await in_thread(lambda: served_name(port, trusting, "new.test")) == "new.test"

    asyncio.run(main())


def test_a_broken_change_keeps_the_running_certificate(
    old: CertFiles, new: CertFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(old, tmp_path)
    write(tmp_path / "web.yml", TLS)

    async def main() -> None:
        async with serving(tmp_path / "web.yml") as (live, port):
            # The new certificate with the old key: a pair that does not match.
            shutil.copyfile(new.cert, tmp_path / "server.pem")
            with caplog.at_level(logging.ERROR, logger="exporter.web.reload"):
                settle(live)
                for _ in range(3):  # tried again each poll, said once
                    live.poll_once()
            assert not live.ok
            [record] = [r for r in caplog.records if r.name == "exporter.web.reload"]
            assert "keeping the running web config" in record.getMessage()
            assert "are not a PEM certificate and its key" in str(vars(record)["problems"])
            assert await in_thread(lambda: served_name(port)) == "old.test"
            # The key arrives: the pair loads at the next poll, though nothing else changed.
            shutil.copyfile(new.key, tmp_path / "server.key")
            settle(live)
            assert live.ok
            assert await in_thread(lambda: served_name(port)) == "new.test"

    asyncio.run(main())


def test_settings_a_listener_keeps_are_refused_until_a_restart(
    old: CertFiles, tmp_path: Path
) -> None:
    install(old, tmp_path)
    write(tmp_path / "web.yml", TLS)

    async def main() -> None:
        async with serving(tmp_path / "web.yml") as (live, port):
            write(tmp_path / "web.yml", TLS + "  min_version: TLS13\n")
            assert live.reload() == [
                f"{tmp_path / 'web.yml'}: tls_server_config.min_version: TLS12 -> TLS13: cannot "
                "change while running; restart netsentry to apply it"]
            assert not live.ok
            write(tmp_path / "web.yml", "basic_auth_users: {}\n")  # TLS off
            assert live.reload() == [
                f"{tmp_path / 'web.yml'}: tls_server_config: on -> off: cannot change while "
                "running; restart netsentry to apply it"]
            # Still TLS 1.2 and up, as started.
            client = ssl.create_default_context(cafile=str(old.ca))
            client.maximum_version = ssl.TLSVersion.TLSv1_2
            assert await in_thread(lambda: served_name(port, client)) == "old.test"
            write(tmp_path / "web.yml", TLS)
            assert live.reload() == [] and live.ok

    asyncio.run(main())


def get(port: int, user: str, password: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        conn.request("GET", "/x", headers={"Authorization": f"Basic {token}"})
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def test_users_and_headers_follow_the_file(tmp_path: Path) -> None:
    write(tmp_path / "web.yml", f"""\
        basic_auth_users:
          alice: {ALICE}
        """)

    async def main() -> None:
        async with serving(tmp_path / "web.yml") as (live, port):
            status, headers = await in_thread(lambda: get(port, "alice", "alice's"))
            assert status == 200 and "X-Frame-Options" not in headers
            assert (await in_thread(lambda: get(port, "bob", "bob's")))[0] == 401
            write(tmp_path / "web.yml", f"""\
                http_server_config:
                  headers:
                    X-Frame-Options: deny
                basic_auth_users:
                  bob: {BOB}
                """)
            settle(live)
            assert live.ok
            assert (await in_thread(lambda: get(port, "alice", "alice's")))[0] == 401
            status, headers = await in_thread(lambda: get(port, "bob", "bob's"))
            assert status == 200 and headers["X-Frame-Options"] == "deny"
            write(tmp_path / "web.yml", "")  # no users: open again
            settle(live)
            assert (await in_thread(lambda: get(port, "anyone", "x")))[0] == 200

    asyncio.run(main())


def test_a_new_client_ca_applies_to_new_connections(old: CertFiles, tmp_path: Path) -> None:
    first, second = make_client_cert(tmp_path / "first"), make_client_cert(tmp_path / "second")
    install(old, tmp_path)
    shutil.copyfile(first.ca, tmp_path / "clients.pem")
    write(tmp_path / "web.yml", TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                                      "  client_ca_file: clients.pem\n")

    port = 0

    def client(certs: CertFiles) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(old.ca))
        context.load_cert_chain(certs.cert, certs.key)
        return context

    def refused(certs: CertFiles) -> bool:
        try:
            served_name(port, client(certs))
        except (ssl.SSLError, ConnectionError, AssertionError):
            return True
        return False

    async def main() -> None:
        nonlocal port
        async with serving(tmp_path / "web.yml") as (live, port):
            assert await in_thread(lambda: served_name(port, client(first))) == "old.test"
            assert await in_thread(lambda: refused(second))
            shutil.copyfile(second.ca, tmp_path / "clients.pem")
            settle(live)
            assert live.ok
            assert await in_thread(lambda: served_name(port, client(second))) == "old.test"
            assert await in_thread(lambda: refused(first))

    asyncio.run(main())


def test_the_agent_says_whether_its_web_config_is_in_effect(
    old: CertFiles, new: CertFiles, tmp_path: Path
) -> None:
    """Through the real agent: polled every second, the gauge follows the files."""
    install(old, tmp_path)
    web = tmp_path / "web.yml"
    write(web, TLS)
    config = tmp_path / "netsentry.toml"
    config.write_text('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n')
    metric = "netsentry_web_config_last_reload_successful"

    def gauge(client: ssl.SSLContext) -> str:
        conn = http.client.HTTPSConnection("127.0.0.1", agent.port, context=client, timeout=10)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        return next(line.split()[1] for line in body.splitlines()
                    if line.startswith(metric + " "))

    def wait_for(client: ssl.SSLContext, value: str) -> None:
        deadline = time.monotonic() + 20  # polled every second, loaded when settled: ~2 s
        while True:
            try:
                if gauge(client) == value:
                    return
            except ssl.SSLCertVerificationError:
                pass  # the certificate this client trusts is not served yet
            assert time.monotonic() < deadline, f"{metric} never became {value}"
            time.sleep(0.2)

    trusting_old = ssl.create_default_context(cafile=str(old.ca))
    trusting_new = ssl.create_default_context(cafile=str(new.ca))
    with Agent(config, "--web.config.file", str(web)) as agent:
        assert gauge(trusting_old) == "1"
        write(web, TLS.replace("server.pem", "missing.pem"))
        wait_for(trusting_old, "0")
        assert agent.proc.poll() is None
        assert any("web config reload failed" in line and "missing.pem" in line
                   for line in agent.lines)
        write(web, TLS)
        install(new, tmp_path)
        wait_for(trusting_new, "1")
