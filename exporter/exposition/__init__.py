"""The expositions of `/metrics` and `/probe`, in each format Prometheus negotiates:
text 0.0.4 and OpenMetrics 1.0.0 (`text`), protobuf with native histograms (`protobuf`), and
which one a request's `Accept` header asks for (`formats`)."""

from exporter.exposition.text import (
    CONTENT_TYPE,
    OPENMETRICS_END,
    AgentSnapshot,
    SourceStatus,
    Texts,
    escape_label,
    format_value,
    render,
    render_probe,
    render_slices,
)

__all__ = ["CONTENT_TYPE", "OPENMETRICS_END", "AgentSnapshot", "SourceStatus", "Texts",
           "escape_label", "format_value", "render", "render_probe", "render_slices"]
