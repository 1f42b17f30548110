"""A real nginx (Debian's nginx-light) on loopback: HTTP/2 and HTTP/1.1 over TLS on one port,
chosen by ALPN, and cleartext HTTP/2 with prior knowledge (h2c) on another.

    with Nginx(make_cert(tmp_path, "web.test")) as web:
        ...  # https://web.test:{web.port}/ (ALPN h2 or http/1.1), h2c on web.h2c_port

It serves `/` (a short text), `/big` (`BIG_BYTES` of text, gzip-compressed when asked),
`/missing` (404), `/redirect` (302 to /) and, given an `upstream` port, `/upstream/...`
proxied there (the prefix stripped) and `/netsentry/...` too (the path passed as it is), for a
route prefix under a reverse proxy. One process (no master), no access log; its
stderr is the error log.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.certs import CertFiles
from tests.support.daemon import Daemon
from tests.support.servers import closed_port

NGINX = "/usr/sbin/nginx"
HELLO = "hello from nginx\n"
BIG_BYTES = 200_000

_CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        listen 127.0.0.1:{h2c_port} http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location = / {{ default_type text/plain; return 200 "{hello}"; }}
        location = /big {{
            default_type text/plain; alias {dir}/big.txt;
            gzip on; gzip_types text/plain; gzip_min_length 1;
        }}
        location = /missing {{ return 404; }}
        location = /redirect {{ return 302 /; }}
        {upstream}
    }}
}}
"""


def _proxy(port: int) -> str:
    """`/upstream/...` proxied to a server of the test's on `port` (one that answers slowly
    makes nginx's processing time, and so the phases, measurable)."""
    if not port:
        return ""
    return (f"location /upstream/ {{ proxy_pass http://127.0.0.1:{port}/; }}\n"
            f"location /netsentry/ {{ proxy_pass http://127.0.0.1:{port}; }}")


class Nginx(Daemon):
    """Start it with start() or the `with` block; stop() ends it."""

    name = "nginx"
    port_taken = ("Address already in use",)

    def __init__(self, certs: CertFiles, upstream: int = 0) -> None:
        super().__init__()
        self.certs = certs
        self.upstream = upstream
        self.h2c_port = 0
        big = Path(self.temp_dir()) / "big.txt"
        line = b"netsentry reads every byte of this line, and nginx compresses it well.\n"
        big.write_bytes((line * (BIG_BYTES // len(line) + 1))[:BIG_BYTES])
        self.start(closed_port)

    def argv_for(self, port: int) -> list[str]:
        self.h2c_port = closed_port()  # free now: nothing listens on it
        conf = Path(self.temp_dir()) / "nginx.conf"
        conf.write_text(_CONFIG.format(dir=self.temp_dir(), port=port, h2c_port=self.h2c_port,
                                       cert=self.certs.cert, key=self.certs.key,
                                       hello=HELLO.replace("\n", "\\n"),
                                       upstream=_proxy(self.upstream)))
        return [NGINX, "-e", "stderr", "-p", self.temp_dir(), "-c", str(conf)]

    def answers(self) -> bool:
        for port in self.port, self.h2c_port:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True
