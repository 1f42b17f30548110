"""Where a check's targets come from: `target`, `targets`, or one of Prometheus' service-discovery
formats — `targets_file` (file_sd), `targets_url` (http_sd), `targets_srv` (dns_sd, type SRV).

The request of a `targets_url` is an http check's request (the same TLS, basic-auth and header
options, body cap and deadline), and the query of a `targets_srv` a dns check's query: the
options are checked by those kinds' own settings, so they mean what they mean there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from exporter.checks import KINDS
from exporter.config.model import TargetSource
from exporter.config.problems import PathKey, Problems, duration_key, toml_type, unknown_keys
from exporter.config.settings import build_settings

TARGET_KEYS = ("target", "targets", "targets_file", "targets_url", "targets_srv")
SOURCE_KEYS = ("targets_file", "targets_url", "targets_srv")
DEFAULT_REFRESH = {"http": 60.0, "srv": 30.0}  # Prometheus' http_sd and dns_sd defaults
FILE_SUFFIXES = (".json", ".yml", ".yaml")
# The http check's options that a targets_url request takes (the rest are about checking).
HTTP_KEYS = ("url", "ca_file", "server_name", "tls_insecure_skip_verify", "basic_auth",
             "headers", "secret_headers", "max_body_bytes", "http_version", "family")
SRV_KEYS = ("name", "server", "transport", "server_name", "ca_file",
            "tls_insecure_skip_verify")
MAX_SD_BODY = 16 << 20  # a targets_url answer of 100,000 targets is some 5 MB of JSON


def build_source(table: dict[str, Any], where: PathKey, problems: Problems,
                 base_dir: str) -> TargetSource | None:
    """The source of a table with one of SOURCE_KEYS, or None once its problems are added."""
    before = len(problems.lines)
    key = next(k for k in SOURCE_KEYS if k in table)
    raw, at = table[key], (*where, key)
    if key == "targets_file":
        if "refresh_interval" in table:
            problems.add((*where, "refresh_interval"), "targets_file is watched: its files are "
                         "read again as soon as they change; remove the key")
        if not isinstance(raw, str) or not raw.strip():
            problems.add(at, f'expected a file or a glob, like "sd/*.json", got {toml_type(raw)}')
        elif not raw.endswith(FILE_SUFFIXES):
            problems.add(at, f"{raw!r}: Prometheus' file_sd files end in .json, .yml or .yaml")
        return (TargetSource("file", raw, base_dir=base_dir)
                if len(problems.lines) == before else None)
    kind = "http" if key == "targets_url" else "srv"
    refresh = duration_key(table, "refresh_interval", where, DEFAULT_REFRESH[kind], problems)
    first = "url" if kind == "http" else "name"
    if isinstance(raw, str):
        options: dict[str, Any] = {first: raw}
    elif isinstance(raw, dict):
        options = raw
        unknown_keys(options, HTTP_KEYS if kind == "http" else SRV_KEYS, at, problems)
        if first not in options:
            problems.add(at, f"missing required key {first!r}")
    else:
        problems.add(at, f"expected a {'URL' if kind == 'http' else 'name'} or a table, "
                     f"got {toml_type(raw)}")
        return None
    spec = options.get(first)
    if len(problems.lines) > before or not isinstance(spec, str):
        if spec is not None and not isinstance(spec, str):
            problems.add((*at, first) if isinstance(raw, dict) else at,
                         f"expected a string, got {toml_type(spec)}")
        return None
    spec_at = (*at, first) if isinstance(raw, dict) else at
    request = (_http if kind == "http" else _srv)(options, at, spec_at, problems)
    if request is None or refresh is None:
        return None
    return TargetSource(kind, spec, refresh, request=request)


def _http(options: dict[str, Any], at: PathKey, spec_at: PathKey, problems: Problems) -> Any:
    values = {"max_body_bytes": MAX_SD_BODY, **options, "target": options["url"]}
    del values["url"]
    return build_settings(KINDS["http"].settings, values, at, problems,
                          paths={"target": spec_at})


def _srv(options: dict[str, Any], at: PathKey, spec_at: PathKey, problems: Problems) -> Any:
    values = {**options, "target": options["name"], "record": "SRV", "min_answers": 0,
              "track_changes": False}
    del values["name"]
    # Without `server`, the system's nameservers, read from /etc/resolv.conf at each refresh as
    # Prometheus does; one stands in here so that the query's options can be checked.
    values.setdefault("server", "127.0.0.1")
    settings = build_settings(KINDS["dns"].settings, values, at, problems,
                              paths={"target": spec_at})
    if settings is None or "server" in options:
        return settings
    return dataclasses.replace(settings, server=())
