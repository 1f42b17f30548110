"""`[probe]`: the allow-list and the templates of ad-hoc probes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from exporter.checks import KINDS
from exporter.config.allow import parse_allow, parse_entry
from exporter.config.model import ProbeConfig, ProbeTemplate
from exporter.config.problems import (
    PathKey,
    Problems,
    duration_key,
    section,
    suggest,
    toml_type,
    unknown_keys,
)
from exporter.config.settings import template_values

PROBE_KEYS = ("allow", "templates", "max_in_flight", "timeout_offset")
# The web server runs 32 handlers at a time: probes must leave room for /metrics and the rest.
MAX_PROBES_IN_FLIGHT = 24


def build_probe(document: dict[str, Any], default_timeout: float,
                 problems: Problems) -> ProbeConfig:
    table = section(document, "probe", problems)
    if table is None:
        return ProbeConfig(timeout=default_timeout)
    where: PathKey = ("probe",)
    unknown_keys(table, PROBE_KEYS, where, problems)
    entries: list[str] = []
    raw_allow = table.get("allow", [])
    if not isinstance(raw_allow, list):
        problems.add((*where, "allow"), "expected an array of host patterns and networks, got "
                     f"{toml_type(raw_allow)}")
        raw_allow = []
    for index, entry in enumerate(raw_allow):
        try:
            if not isinstance(entry, str):
                raise ValueError(f"expected a string, got {toml_type(entry)}")
            parse_entry(entry)
        except ValueError as exc:
            problems.add((*where, "allow", index), str(exc))
        else:
            entries.append(entry)
    defaults = ProbeConfig()
    max_in_flight = table.get("max_in_flight", defaults.max_in_flight)
    if (not isinstance(max_in_flight, int) or isinstance(max_in_flight, bool)
            or not 1 <= max_in_flight <= MAX_PROBES_IN_FLIGHT):
        problems.add((*where, "max_in_flight"), f"must be a whole number from 1 to "
                     f"{MAX_PROBES_IN_FLIGHT} (the web server's other handlers need room), got "
                     f"{toml_type(max_in_flight)}")
        max_in_flight = defaults.max_in_flight
    offset = duration_key(table, "timeout_offset", where, defaults.timeout_offset, problems)
    raw_templates = table.get("templates", {})
    if not isinstance(raw_templates, dict):
        problems.add((*where, "templates"), "must be a table: write [probe.templates.NAME]")
        raw_templates = {}
    templates = []
    for name, raw in raw_templates.items():
        if not isinstance(raw, dict):
            problems.add((*where, "templates", name),
                         "must be a table: write [probe.templates.NAME]")
            continue
        template = _build_template(name, raw, (*where, "templates", name), default_timeout,
                                   problems)
        if template is not None:
            templates.append(template)
    return ProbeConfig(parse_allow(entries), tuple(templates), max_in_flight, default_timeout,
                       offset or defaults.timeout_offset)


def _build_template(name: str, table: dict[str, Any], where: PathKey, default_timeout: float,
                    problems: Problems) -> ProbeTemplate | None:
    before = len(problems.lines)
    kind_name = table.get("kind")
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        if kind_name is None:
            problems.add(where, f"missing required key 'kind'; known kinds: {', '.join(KINDS)}")
        else:
            problems.add((*where, "kind"), f"unknown kind {kind_name!r}"
                         f"{suggest(str(kind_name), KINDS)}; known kinds: {', '.join(KINDS)}")
        return None
    kind = KINDS[kind_name]
    timeout = duration_key(table, "timeout", where, default_timeout, problems)
    fields = {f.name: f for f in dataclasses.fields(kind.settings) if f.name != "target"}
    if "target" in table:
        problems.add((*where, "target"), "a template has no target: each request gives it "
                     "(&target=)")
    unknown_keys({k: v for k, v in table.items() if k != "target"},
                  ("kind", "timeout", *sorted(fields)), where, problems)
    values = template_values(kind.settings, table, where, problems)
    if len(problems.lines) > before or timeout is None or values is None:
        return None
    return ProbeTemplate(name, kind.name, timeout, tuple(values.items()))
