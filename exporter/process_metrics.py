"""The process and Python runtime metrics (`process_*`, `python_*`) from prometheus_client.

prometheus_client's collectors for these are well kept and cheap (a few dozen series), so
/metrics appends them to netsentry's own families. This is the only module importing it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

_registry = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=_registry)
PlatformCollector(registry=_registry)
GCCollector(registry=_registry)


def render() -> str:
    return generate_latest(_registry).decode()
