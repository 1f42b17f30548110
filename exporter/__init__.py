"""netsentry: a Prometheus exporter and scheduled network-monitoring agent."""

__version__ = "0.1.0"
