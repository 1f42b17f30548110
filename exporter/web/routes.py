"""The agent's pages: what each path answers, from what the agent shows them.

`/metrics`, the status page and `/api/v1/checks` stream as they render, between runs;
`/-/healthy`, `/-/ready`, `/-/reload` and the badges (`/badge/…`, `web.badges`) answer at
once; `/probe` is `web.probe`'s.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, field

from exporter import exposition, process_metrics
from exporter.exposition import formats, protobuf
from exporter.store import CheckState, Store
from exporter.web import badges, pages, status
from exporter.web.probe import ProbeEndpoint
from exporter.web.server import Request, Response, Route

# A gzip level of 1 compresses metrics text about 10:1 at a fraction of level 6's cost.
GZIP_LEVEL = 1
STREAM_PIECE = 64 * 1024  # bytes of a streamed page sent at once, at least (but the last)
# Open without basic auth, for load balancers' health checks; everything else needs it.
OPEN_PATHS = frozenset({"/-/healthy"})


@dataclass(frozen=True, slots=True)
class Routes:
    """The handlers, over the agent's store and what it knows of itself."""

    store: Store
    probe: ProbeEndpoint
    agent_snapshot: Callable[[], exposition.AgentSnapshot]
    status_overview: Callable[[], status.Overview]
    ready: Callable[[], bool]
    reload: Callable[[], list[str]]  # the problems of a reload that failed, else []
    texts: exposition.Texts = field(default_factory=exposition.Texts)  # kept between scrapes
    protos: protobuf.Protos = field(default_factory=protobuf.Protos)  # likewise, for protobuf
    # [metrics] classic_histograms: the classic buckets beside the native ones (protobuf).
    classic_histograms: Callable[[], bool] = lambda: True

    def table(self) -> list[Route]:
        return [
            Route("/metrics", self.handle_metrics),
            Route("/-/healthy", self.handle_healthy),
            Route("/-/ready", self.handle_ready),
            Route("/-/reload", self.handle_reload, frozenset({"POST", "PUT"})),
            Route("/probe", self.probe.handle),
            Route("/", self.handle_index),
            Route("/api/v1/checks", self.handle_checks),
            Route("/badge/*", self.handle_badge),
        ]

    async def handle_metrics(self, request: Request) -> Response:
        chosen = formats.negotiate(request.headers.get("accept", ""))
        parts = _metrics_parts(chosen, self.store.snapshot(), self.agent_snapshot(), self.texts,
                               self.protos, self.classic_histograms())
        stream, encoding = _stream_between_runs(parts, request)
        return Response(200, b"", chosen.content_type, (("Vary", "Accept"), *encoding), stream)

    async def handle_healthy(self, request: Request) -> Response:
        return Response(200, b"Healthy.\n")

    async def handle_ready(self, request: Request) -> Response:
        if self.ready():
            return Response(200, b"Ready.\n")
        return Response(503, b"Not ready: the config is not loaded or the scheduler is stopped.\n")

    async def handle_reload(self, request: Request) -> Response:
        problems = self.reload()
        if problems:
            return Response(500, ("\n".join(problems) + "\n").encode())
        return Response(200, b"Reloaded.\n")

    async def handle_index(self, request: Request) -> Response:
        parts = pages.status_page_parts(self.status_overview(),
                                        status.Filter.from_query(request.query))
        stream, encoding = _stream_between_runs(parts, request)
        return Response(200, b"", "text/html; charset=utf-8", pages.HEADERS + encoding, stream)

    async def handle_checks(self, request: Request) -> Response:
        parts = status.checks_json_parts(self.status_overview(),
                                         status.Filter.from_query(request.query))
        stream, encoding = _stream_between_runs(parts, request)
        return Response(200, b"", "application/json", (
            ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"), *encoding),
            stream)


    async def handle_badge(self, request: Request) -> Response:
        asked = badges.parse_path(request.path, request.query)
        made = asked and badges.badge(asked, self.store.states, self.store.histories,
                                      request.query, time.time())
        if not made:
            return Response(404, badges.missing(asked).encode(), badges.CONTENT_TYPE,
                            badges.HEADERS)
        svg = made.svg()
        tag = badges.etag(svg)
        headers = (("ETag", tag), *badges.HEADERS)
        if request.headers.get("if-none-match") == tag:
            return Response(304, b"", badges.CONTENT_TYPE, headers)
        return Response(200, svg.encode(), badges.CONTENT_TYPE, headers)


def _metrics_parts(chosen: formats.Format, states: tuple[CheckState, ...],
                   agent: exposition.AgentSnapshot, texts: exposition.Texts,
                   protos: protobuf.Protos, classic: bool) -> Iterator[str | bytes]:
    """The exposition in the chosen format; the process metrics last, read once the agent's
    own are rendered."""
    if chosen.name == "protobuf":
        yield from protobuf.render_slices(states, agent, protos, classic)
        yield b"".join(protobuf.process_families(process_metrics.families()))
    elif chosen.name == "openmetrics":
        yield from exposition.render_slices(states, agent, texts, openmetrics=True)
        yield process_metrics.render_openmetrics()
        yield exposition.OPENMETRICS_END
    else:
        yield from exposition.render_slices(states, agent, texts)
        yield process_metrics.render()


def _stream_between_runs(
    parts: Iterable[str | bytes], request: Request
) -> tuple[AsyncGenerator[bytes, None], tuple[tuple[str, str], ...]]:
    """A page streamed as it is rendered, part by part, gzipped when asked; and its headers.

    Between parts the loop runs (10,000 checks take a fifth of a second to render: their runs
    must not wait for it), and no part is kept once sent: the page, tens of MiB at 10,000
    checks, is never whole in memory. Parts are deflated on the loop, as they come: a thread
    for the large ones (zlib lets go of the GIL) loses more in its hand-offs than it gains
    (docs/performance.md)."""
    gzip = "gzip" in request.headers.get("accept-encoding", "")
    return _encoded(parts, gzip), ((("Content-Encoding", "gzip"),) if gzip else ())


async def _encoded(parts: Iterable[str | bytes], gzip: bool) -> AsyncGenerator[bytes, None]:
    """The parts encoded, deflated if asked, and sent in pieces of at least STREAM_PIECE bytes:
    zlib hands out a few hundred bytes at a time, and each piece is a write and, for the
    client, a chunk to parse."""
    compressor = zlib.compressobj(GZIP_LEVEL, wbits=31) if gzip else None  # wbits: gzip
    pending: list[bytes] = []
    size = 0
    for text in parts:
        data = text.encode() if isinstance(text, str) else text
        if compressor is not None:
            data = compressor.compress(data)
        pending.append(data)
        size += len(data)
        if size >= STREAM_PIECE:
            yield b"".join(pending)
            pending, size = [], 0
        await asyncio.sleep(0)
    if compressor is not None:
        pending.append(compressor.flush())
    yield b"".join(pending)


