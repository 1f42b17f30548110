"""The process and Python runtime metrics (`process_*`, `python_*`) from prometheus_client.

prometheus_client's collectors for these are well kept and cheap (a few dozen series), so
/metrics appends them to netsentry's own families. This is the only module importing it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

_registry = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=_registry)
PlatformCollector(registry=_registry)
GCCollector(registry=_registry)


def render() -> str:
    return generate_latest(_registry).decode()


def render_openmetrics() -> str:
    """The same families in OpenMetrics, without the `# EOF` that ends the whole exposition."""
    text: str = generate_openmetrics(_registry).decode()  # type: ignore[no-untyped-call]
    return text.removesuffix("# EOF\n")


# A family as (name, help, type, samples); a sample as (labels, value, created or None).
Family = tuple[str, str, str, list[tuple[tuple[tuple[str, str], ...], float, float | None]]]


def families() -> list[Family]:
    """The same families as plain data, for the protobuf encoder: a counter's sample is its
    `_total` with the created time of its `_created` sample, as metrics.proto has them."""
    out: list[Family] = []
    for family in _registry.collect():
        kind = family.type if family.type in ("counter", "gauge") else "untyped"
        name = family.name + "_total" if kind == "counter" else family.name
        created = {tuple(sorted(s.labels.items())): s.value for s in family.samples
                   if s.name.endswith("_created")}
        samples = [(tuple(sorted(s.labels.items())), s.value,
                    created.get(tuple(sorted(s.labels.items()))))
                   for s in family.samples if not s.name.endswith("_created")]
        out.append((name, family.documentation, kind, samples))
    return out
