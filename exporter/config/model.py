"""The config as the agent holds it: frozen records, equal when unchanged across reloads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from exporter.config.allow import AllowList

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One configured check. Equal configs mean an unchanged check across reloads."""

    name: str
    kind: str
    target: str  # as written, for the info metric and the status page ("" if the kind has none)
    interval: float
    timeout: float
    settings: Any  # the kind's settings dataclass
    labels: tuple[tuple[str, str], ...] = ()  # its own labels, on every series (config order)
    per_target: bool = False  # one of a target list's checks: its series carry `target`
    group: str = ""  # its section of the status page and its group badge; "" is its kind's

    @property
    def section(self) -> str:
        """The status page's section it shows in: its `group`, or else its kind."""
        return self.group or self.kind

    # What tells it apart in the store, the scheduler and the shards: the name, and for one of
    # a target list's checks (which share their name) the target too. Made once: an agent of
    # 100,000 discovered checks asks for it several times per check at every change.
    key: str = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.name}\t{self.target}" if self.per_target
                           else self.name)


@dataclass(frozen=True, slots=True)
class CheckBase:
    """A [[checks]] table with many targets, but the targets: what each of its checks is made
    from (`expand.target_check`), its settings' values converted and checked once."""

    name: str
    kind: str
    interval: float
    timeout: float
    values: tuple[tuple[str, Any], ...]  # the kind's settings but the target
    labels: tuple[tuple[str, str], ...] = ()
    max_labels: int = 8
    group: str = ""


@dataclass(frozen=True, slots=True)
class TargetSource:
    """Where a check's targets are discovered, in one of Prometheus' service-discovery formats:
    `file` (file_sd: a glob of JSON or YAML files, watched), `http` (http_sd: a URL, fetched
    every `refresh` seconds) or `srv` (dns_sd type SRV: a name, asked every `refresh`)."""

    type: str
    spec: str  # as written: the glob, the URL, the SRV name
    refresh: float = 60.0  # seconds between refreshes (http, srv); files are polled each second
    base_dir: str = ""  # file: where a relative glob starts (the config file's directory)
    request: Any = None  # http: the http kind's settings of the request; srv: the dns kind's

    @property
    def label(self) -> str:
        """The `source` label of its netsentry_discovery_* series."""
        return f"{self.type}:{self.spec}"


@dataclass(frozen=True, slots=True)
class DiscoveredCheck:
    """A [[checks]] table whose targets a source discovers: one check per target found."""

    base: CheckBase
    source: TargetSource


@dataclass(frozen=True, slots=True)
class ProbeTemplate:
    """`[probe.templates.NAME]`: a kind and its options, for ad-hoc probes of any target."""

    name: str
    kind: str
    timeout: float
    values: tuple[tuple[str, Any], ...]  # the kind's settings but the target, validated


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """`[probe]`: what `/probe?kind=K&target=T` may reach, and how."""

    allow: AllowList = dataclasses.field(default_factory=AllowList)  # empty: ad-hoc probes off
    templates: tuple[ProbeTemplate, ...] = ()
    max_in_flight: int = 16  # probes at a time; more are answered 503 at once
    timeout: float = DEFAULT_TIMEOUT  # for ad-hoc probes without a template: [defaults] timeout
    timeout_offset: float = 0.5  # taken off X-Prometheus-Scrape-Timeout-Seconds, as blackbox

    def template(self, name: str) -> ProbeTemplate | None:
        return next((t for t in self.templates if t.name == name), None)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: how the histograms are exported."""

    native_histogram_factor: float = 1.1  # growth of a native bucket's width; client_golang's
    classic_histograms: bool = True  # protobuf: the classic buckets too, beside the native


@dataclass(frozen=True, slots=True)
class Config:
    checks: tuple[CheckConfig, ...]
    source: str
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    discovered: tuple[DiscoveredCheck, ...] = ()  # checks whose targets are discovered
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)

    def check(self, name: str, target: str | None = None) -> CheckConfig | None:
        """The check called `name`; of a target list's, the one of `target`."""
        return next((c for c in self.checks if c.name == name
                     and (target is None or not c.per_target or c.target == target)), None)

    def targets(self, name: str) -> tuple[str, ...]:
        """The targets of the target list called `name` (none for another check)."""
        return tuple(c.target for c in self.checks if c.name == name and c.per_target)
