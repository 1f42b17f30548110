"""Which exposition format a request's `Accept` header asks for, as Prometheus negotiates it
(`scrape_protocols`): protobuf, OpenMetrics 1.0.0 (or 0.0.1), text 1.0.0 or 0.0.4.

The client's preference wins: the highest `q`, then the earlier entry. Anything this agent
cannot serve, or cannot parse, falls back to text 0.0.4, which every scraper reads: a scrape
is never answered with an error for its header. Only the first `MAX_CHARS` of the header and
its first `MAX_ENTRIES` entries are read, so a 64 KiB header costs no more than a short one.
The `escaping` parameter is accepted and, for the formats that carry it, named in the answer:
every name netsentry exports is a classic Prometheus name, the same under every escaping.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.codecs.metrics_proto import CONTENT_TYPE as PROTOBUF_TYPE
from exporter.exposition.text import CONTENT_TYPE as TEXT_TYPE

MAX_CHARS = 4096
MAX_ENTRIES = 32
ESCAPINGS = ("allow-utf-8", "underscores", "dots", "values")


@dataclass(frozen=True, slots=True)
class Format:
    name: str  # "text", "openmetrics" or "protobuf"
    content_type: str


TEXT = Format("text", TEXT_TYPE)
OPENMETRICS = Format("openmetrics", "application/openmetrics-text; version=1.0.0; charset=utf-8")
PROTOBUF = Format("protobuf", PROTOBUF_TYPE)


def negotiate(accept: str) -> Format:
    best: tuple[float, int, Format] | None = None
    for position, entry in enumerate(accept[:MAX_CHARS].split(",")[:MAX_ENTRIES]):
        chosen = _entry(entry)
        if chosen is not None and chosen[0] > 0 and (best is None or chosen[0] > best[0]):
            best = (chosen[0], position, chosen[1])
    return best[2] if best is not None else TEXT


def _entry(entry: str) -> tuple[float, Format] | None:
    media, *raw = (part.strip() for part in entry.split(";"))
    params = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return None
    if not 0 <= q <= 1:
        return None
    media = media.lower()
    version = params.get("version")
    escaping = params.get("escaping")
    suffix = f"; escaping={escaping}" if escaping in ESCAPINGS else ""
    if media == "application/vnd.google.protobuf":
        if (params.get("proto") == "io.prometheus.client.MetricFamily"
                and params.get("encoding") == "delimited"):
            return q, Format("protobuf", PROTOBUF_TYPE + suffix)
        return None
    if media == "application/openmetrics-text":
        if version in (None, "1.0.0", "0.0.1"):
            return q, Format("openmetrics", "application/openmetrics-text; "
                             f"version={version or '1.0.0'}; charset=utf-8{suffix}")
        return None
    if media == "text/plain":
        if version in (None, "0.0.4"):
            return q, TEXT
        if version == "1.0.0":
            return q, Format("text", f"text/plain; version=1.0.0; charset=utf-8{suffix}")
        return None
    if media in ("*/*", "text/*"):
        return q, TEXT
    return None
