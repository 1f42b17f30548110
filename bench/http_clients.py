"""The HTTP clients alone: what one request costs netsentry's HTTP/1.1 client (h11) and its
HTTP/2 client (h2), with no socket, no TLS and no event-loop wait, against the bytes a real
nginx sent.

    .venv/bin/python bench/http_clients.py [--requests 3000] [--rounds 5]

Starts Debian's nginx (as bench/tls_http.py does: one process, TLS, `http2`), fetches `/` once
over HTTP/1.1 and once over HTTP/2 through the clients, recording every chunk nginx sent,
then replays those chunks to `http_client.request` and `http2_client.request` over an
in-memory stream, `--requests` times per round, the two clients alternating, `--rounds`
rounds; prints the median CPU per request of each and their difference. This is the floor of
the HTTP/2 check's extra cost over the HTTP/1.1 one: the framing library's own work (HPACK
with Huffman coding both ways, SETTINGS, WINDOW_UPDATE and HEADERS frames parsed and
validated, the connection and stream state machines), which no change to the check or the
event loop can remove. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common
import tls_http

from exporter.net import http2_client, http_client
from exporter.net.resolve import Address
from exporter.net.stream import open_stream
from exporter.net.tls import tls_client_context

HEADERS = [("user-agent", "netsentry/bench"), ("accept-encoding", "gzip")]


class Recorder:
    """A stream that passes through and keeps what the server sent, chunk by chunk."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.chunks = stream, []

    async def read(self, size: int) -> bytes:
        data: bytes = await self.stream.read(size)
        self.chunks.append(data)
        return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)


class Replay:
    """A stream that answers with recorded chunks and swallows what is written."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = iter(chunks)

    async def read(self, size: int) -> bytes:
        return next(self.chunks, b"")

    async def write(self, data: bytes) -> None:
        pass


def client(version: str) -> Any:
    return http2_client if version == "2" else http_client


async def record(port: int, ca: Path, version: str) -> list[bytes]:
    alpn = ("h2",) if version == "2" else ("http/1.1",)
    context = tls_client_context(str(ca), alpn=alpn)
    address = Address(socket.AF_INET, (tls_http.HOST, port))
    async with open_stream(address, ssl_context=context,
                           server_hostname=tls_http.SERVER_NAME) as stream:
        chosen = stream.tls.selected_alpn_protocol() if stream.tls else None
        if chosen != alpn[0]:
            raise RuntimeError(f"nginx chose {chosen!r}, not {alpn[0]}")
        recorder = Recorder(stream)
        response = await client(version).request(recorder, "GET", tls_http.SERVER_NAME, "/",
                                                 headers=HEADERS, decode=True)
    if response.status != 200 or response.http_version != ("2" if version == "2" else "1.1"):
        raise RuntimeError(f"nginx answered {response.status} over HTTP/{response.http_version}")
    return recorder.chunks


async def replay(version: str, chunks: list[bytes], requests: int) -> None:
    request = client(version).request
    for _ in range(requests):
        await request(Replay(chunks), "GET", tls_http.SERVER_NAME, "/", headers=HEADERS,
                      decode=True, timings={})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians are quoted)")
    args = parser.parse_args(argv)
    recorded: dict[str, list[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="netsentry-bench-clients-") as workdir, \
            common.Children() as children:
        certs = tls_http.make_certs(Path(workdir) / "certs")
        nginx = tls_http.start_nginx(children, certs, Path(workdir))
        for version in ("1.1", "2"):
            recorded[version] = asyncio.run(record(nginx.port, certs.ca, version))
    cpu: dict[str, list[float]] = {"1.1": [], "2": []}
    for _ in range(args.rounds):
        for version in ("1.1", "2"):
            started = time.process_time()
            asyncio.run(replay(version, recorded[version], args.requests))
            cpu[version].append((time.process_time() - started) / args.requests * 1e6)
    table = common.Table(["in memory, nginx's recorded bytes", "HTTP/1.1 (h11)", "HTTP/2 (h2)"])
    table.add("chunks nginx sent", *(len(recorded[v]) for v in ("1.1", "2")))
    table.add("bytes nginx sent", *(sum(map(len, recorded[v])) for v in ("1.1", "2")))
    table.add(f"CPU per request, median of {args.rounds}",
              *(common.fmt(common.median(cpu[v]), ".1f", " µs") for v in ("1.1", "2")))
    table.add("rounds", *(" ".join(f"{x:.0f}" for x in cpu[v]) for v in ("1.1", "2")))
    print(table.render())
    extra = common.median(cpu["2"]) - common.median(cpu["1.1"])
    print(f"\nHTTP/2 over HTTP/1.1, the clients alone: +{extra:.0f} µs per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
