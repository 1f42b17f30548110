"""The config: TOML text in, typed and validated frozen dataclasses out.

Every problem is collected before anything is reported, each as
`FILE:LINE: checks[N] "name".key: message`, so one run of `check-config` shows them all.
TOML parsers do not keep line numbers, so a small scanner (`locate`) maps table headers and keys
back to the lines they were written on.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import sys
from pathlib import Path
from string import Template
from typing import Any

from exporter.checks import KINDS
from exporter.checks.base import COMMON_KEYS, Kind
from exporter.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib
from exporter.config.expand import MAX_TARGET_LENGTH, target_check
from exporter.config.labels import DEFAULT_MAX_LABELS, label_problems
from exporter.config.locate import locate
from exporter.config.model import (
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    CheckBase,
    CheckConfig,
    Config,
    DiscoveredCheck,
    MetricsConfig,
)
from exporter.config.probe import build_probe
from exporter.config.problems import (
    PathKey,
    Problems,
    duration_key,
    section,
    suggest,
    toml_type,
    unknown_keys,
)
from exporter.config.settings import build_settings, check_value, template_values
from exporter.config.sources import SOURCE_KEYS, TARGET_KEYS, build_source

EMBEDDED = "<embedded default>"
MAX_NAME_LENGTH = 200
MAX_TARGETS = 10_000  # in one `targets` list; discovery has no such limit


# --- loading ------------------------------------------------------------------------------------


def load_file(path: str) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: the config file is not UTF-8: {exc.reason}"]) from None
    return load_text(text, path)


def default_text(self_target: str) -> str:
    """The embedded default config, monitoring this host; `self_target` is the agent's port."""
    template = (Path(__file__).parent / "default.toml").read_text(encoding="utf-8")
    return Template(template).substitute(self_target=self_target, hostname=socket.gethostname())


def load_default(self_target: str) -> Config:
    return load_text(default_text(self_target), EMBEDDED)


def load_text(text: str, source: str) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(source, exc)]) from None
    except RecursionError:  # the parser recurses per level of nested arrays and tables
        raise ConfigError([f"{source}: TOML syntax error: arrays or tables nested too deeply"]
                          ) from None
    except ValueError as exc:  # an integer of more than 4300 digits (int's own limit)
        why = str(exc).partition("; use sys.set_int_max_str_digits")[0]
        raise ConfigError([f"{source}: TOML syntax error: {why}"]) from None
    problems = Problems(source, locate(text))
    config = _build(document, source, problems)
    if problems.lines:
        raise ConfigError(problems.distinct())
    assert config is not None
    return config


def toml_value(text: str) -> Any:
    """`text` read as a TOML value (`true`, `3`, `"x"`, `[1, 2]`), or the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (ValueError, RecursionError):  # TOMLDecodeError is a ValueError
        return text


def load_check(table: dict[str, Any], source: str) -> CheckConfig:
    """One check from a table that is not in a file (the probe command's options)."""
    problems = Problems(source, None)
    checks = _build_check(table, (), DEFAULT_INTERVAL, DEFAULT_TIMEOUT, problems, "")
    if problems.lines or len(checks) != 1 or not isinstance(checks[0], CheckConfig):
        raise ConfigError(problems.distinct() or [f"{source}: give one target"])
    return checks[0]


def _syntax_problem(source: str, exc: Exception) -> str:
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        return f"{source}:{match[1]}:{match[2]}: TOML syntax error: {message[: match.start()]}"
    match = re.search(r"\s*\(at end of document\)$", message)
    if match:
        lines = message.count("\n")
        return f"{source}:{lines + 1}: TOML syntax error: {message[: match.start()]} at the end"
    return f"{source}: TOML syntax error: {message}"


# --- validation ----------------------------------------------------------------------------------

TOP_LEVEL_KEYS = ("defaults", "checks", "probe", "metrics")
METRICS_KEYS = ("native_histogram_factor", "classic_histograms")
DEFAULTS_KEYS = ("interval", "timeout")


def _build(document: dict[str, Any], source: str, problems: Problems) -> Config | None:
    unknown_keys(document, TOP_LEVEL_KEYS, (), problems)
    defaults = section(document, "defaults", problems) or {}
    unknown_keys(defaults, DEFAULTS_KEYS, ("defaults",), problems)
    interval = duration_key(defaults, "interval", ("defaults",), DEFAULT_INTERVAL, problems)
    timeout = duration_key(defaults, "timeout", ("defaults",), DEFAULT_TIMEOUT, problems)
    if interval is not None and timeout is not None and timeout >= interval:
        problems.add(("defaults", "timeout"), f"must be shorter than the interval ({interval:g}s)")

    raw_checks = document.get("checks", [])
    if not isinstance(raw_checks, list):
        problems.add(("checks",), "must be an array of tables: write each check as [[checks]]")
        raw_checks = []
    built: list[CheckConfig | DiscoveredCheck] = []
    # A relative targets_file starts where the config file is, as in Prometheus.
    base_dir = "" if source == EMBEDDED else str(Path(source).parent)
    seen: dict[str, int] = {}
    for index, table in enumerate(raw_checks):
        if isinstance(table, dict) and isinstance(table.get("name"), str):
            problems.name_check(index, table["name"])
    for index, table in enumerate(raw_checks):
        where: PathKey = ("checks", index)
        if not isinstance(table, dict):
            problems.add(where, "must be a table: write each check as [[checks]]")
            continue
        name = table.get("name")
        if isinstance(name, str) and name in seen:
            first = seen[name]
            problems.add((*where, "name"), f"duplicate name; checks[{first}] "
                         f"(line {problems.line(('checks', first))}) has it already")
        elif isinstance(name, str):
            seen[name] = index
        built += _build_check(table, where, interval or DEFAULT_INTERVAL,
                              timeout or DEFAULT_TIMEOUT, problems, base_dir)
    probe = build_probe(document, timeout or DEFAULT_TIMEOUT, problems)
    checks = tuple(c for c in built if isinstance(c, CheckConfig))
    discovered = tuple(c for c in built if isinstance(c, DiscoveredCheck))
    return Config(checks, source, probe, discovered, _metrics(document, problems))


def _metrics(document: dict[str, Any], problems: Problems) -> MetricsConfig:
    """`[metrics]`: the native histograms' bucket factor, and whether the classic buckets are
    sent beside them."""
    table = section(document, "metrics", problems) or {}
    unknown_keys(table, METRICS_KEYS, ("metrics",), problems)
    default = MetricsConfig()
    factor = table.get("native_histogram_factor", default.native_histogram_factor)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        problems.add(("metrics", "native_histogram_factor"), "expected a number above 1 (the "
                     "growth of a bucket's width from one to the next; 1.1 as client_golang), "
                     f"got {toml_type(factor)}")
        factor = default.native_histogram_factor
    classic = table.get("classic_histograms", True)
    if not isinstance(classic, bool):
        problems.add(("metrics", "classic_histograms"), f"expected true or false, got "
                     f"{toml_type(classic)}")
        classic = True
    return MetricsConfig(float(factor), classic)


def _build_check(
    table: dict[str, Any],
    where: PathKey,
    default_interval: float,
    default_timeout: float,
    problems: Problems,
    base_dir: str,
) -> list[CheckConfig | DiscoveredCheck]:
    """The check of a [[checks]] table: one, one per target of its `targets` list, or the
    table whose targets a source discovers; none once its problems are added."""
    before = len(problems.lines)
    name = table.get("name")
    if name is None:
        problems.add(where, "missing required key 'name'")
    elif not isinstance(name, str):
        problems.add((*where, "name"), f"expected a string, got {toml_type(name)}")
    elif not name.strip():
        problems.add((*where, "name"), "must not be empty")
    elif len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in name):
        problems.add((*where, "name"), f"must be at most {MAX_NAME_LENGTH} printable characters")

    kind_name = table.get("kind")
    kind = None
    if kind_name is None:
        problems.add(where, f"missing required key 'kind'; known kinds: {', '.join(KINDS)}")
    elif not isinstance(kind_name, str):
        problems.add((*where, "kind"), f"expected a string, got {toml_type(kind_name)}")
    elif kind_name not in KINDS:
        problems.add((*where, "kind"), f"unknown kind {kind_name!r}{suggest(kind_name, KINDS)};"
                     f" known kinds: {', '.join(KINDS)}")
    else:
        kind = KINDS[kind_name]

    interval = duration_key(table, "interval", where, default_interval, problems)
    timeout = duration_key(table, "timeout", where, default_timeout, problems)
    given = "timeout" in table or "interval" in table  # else [defaults] was already reported
    if given and interval is not None and timeout is not None and timeout >= interval:
        key = "timeout" if "timeout" in table else "interval"
        problems.add((*where, key), f"the timeout ({timeout:g}s) must be shorter than the "
                     f"interval ({interval:g}s)")

    if kind is None:
        return []
    fields = {f.name for f in dataclasses.fields(kind.settings)}
    given_keys = [key for key in TARGET_KEYS if key in table]
    if "target" not in fields:  # a kind that checks this host (clock)
        for key in given_keys:
            problems.add((*where, key), f"a {kind.name} check takes no target: it checks "
                         "this host; remove the key")
        given_keys = []
    elif len(given_keys) > 1:
        problems.add((*where, given_keys[1]), f"give one of {', '.join(TARGET_KEYS)}; "
                     f"this table has {' and '.join(given_keys)}")
    unknown_keys({k: v for k, v in table.items() if k not in TARGET_KEYS},
                 (*COMMON_KEYS, *sorted(fields)), where, problems)
    if "refresh_interval" in table and not set(given_keys) & set(SOURCE_KEYS):
        problems.add((*where, "refresh_interval"), "is for targets_url and targets_srv only")
    labels, max_labels = _labels(table, where, problems)
    group = _group(table, where, problems)
    own = {k: v for k, v in table.items() if k in fields}
    how = given_keys[0] if len(given_keys) == 1 else "target"
    if how == "target":
        settings = build_settings(kind.settings, own, where, problems)
        _schedule_problems(kind, settings, interval, timeout, where, problems)
        if len(problems.lines) > before or interval is None or timeout is None:
            return []
        target = str(table.get("target", ""))
        return [CheckConfig(str(name), kind.name, target, interval, timeout, settings, labels,
                            group=group)]
    # Many targets: the keys but the target converted once, then one check per target.
    values = template_values(kind.settings, own, where, problems)
    targets = _targets(table, where, problems) if how == "targets" else []
    source = build_source(table, where, problems, base_dir) if how != "targets" else None
    if values is None:  # the targets' own problems are still worth telling
        for index, target in targets:
            check_value(kind.settings, "target", target, (*where, "targets", index), problems)
    if values is None or interval is None or timeout is None:
        return []
    base = CheckBase(str(name), kind.name, interval, timeout, tuple(values.items()), labels,
                     max_labels, group)
    if how != "targets":
        return [DiscoveredCheck(base, source)] if source and len(problems.lines) == before else []
    checks = [target_check(base, target, problems, where, (*where, "targets", index))
              for index, target in targets]
    return [] if len(problems.lines) > before else [c for c in checks if c is not None]


def _schedule_problems(kind: Kind[Any], settings: Any, interval: float | None,
                       timeout: float | None, where: PathKey, problems: Problems) -> None:
    if (settings is not None and interval is not None and timeout is not None
            and kind.schedule_problems is not None):
        for key, message in kind.schedule_problems(settings, interval, timeout):
            problems.add((*where, key), message)


def _targets(table: dict[str, Any], where: PathKey,
             problems: Problems) -> list[tuple[int, str]]:
    """`targets` as (index, target), each a string listed once."""
    raw = table["targets"]
    if not isinstance(raw, list) or not raw:
        problems.add((*where, "targets"), 'expected an array of targets, like targets = '
                     f'["10.0.0.1", "10.0.0.2"], got {toml_type(raw) if raw != [] else "[]"}')
        return []
    if len(raw) > MAX_TARGETS:
        problems.add((*where, "targets"), f"{len(raw)} targets, more than {MAX_TARGETS} in one "
                     "list; split it, or keep them in a targets_file")
        return []
    first: dict[str, int] = {}
    found = []
    for index, target in enumerate(raw):
        path = (*where, "targets", index)
        if not isinstance(target, str) or not target.strip():
            problems.add(path, f"expected a target string, got {toml_type(target)}")
        elif len(target) > MAX_TARGET_LENGTH:
            problems.add(path, f"{len(target):,} characters, more than the "
                         f"{MAX_TARGET_LENGTH:,} a target may have")
        elif target in first:
            problems.add(path, f"{target!r} is listed already, as targets[{first[target]}]")
        else:
            first[target] = index
            found.append((index, target))
    return found


def _group(table: dict[str, Any], where: PathKey, problems: Problems) -> str:
    """The check's `group` (its section of the status page), or "" for its kind's."""
    group = table.get("group", "")
    if "group" not in table:
        return ""
    if not isinstance(group, str):
        problems.add((*where, "group"), f"expected a string, got {toml_type(group)}")
    elif not group.strip():
        problems.add((*where, "group"), "must not be empty; leave it out for the kind's section")
    elif len(group) > MAX_NAME_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in group):
        problems.add((*where, "group"), f"must be at most {MAX_NAME_LENGTH} printable characters")
    else:
        return group
    return ""


def _labels(table: dict[str, Any], where: PathKey,
            problems: Problems) -> tuple[tuple[tuple[str, str], ...], int]:
    """The check's own labels (`labels`) and how many it may have (`max_labels`), checked."""
    labels = table.get("labels", {})
    if not isinstance(labels, dict):
        problems.add((*where, "labels"), f"expected a table of names and strings, like "
                     f'labels = {{ team = "db" }}, got {toml_type(labels)}')
        labels = {}
    max_labels = table.get("max_labels", DEFAULT_MAX_LABELS)
    if isinstance(max_labels, bool) or not isinstance(max_labels, int) or max_labels < 0:
        problems.add((*where, "max_labels"), f"expected a whole number of 0 or more, got "
                     f"{toml_type(max_labels)}")
        max_labels = DEFAULT_MAX_LABELS
    for name, message in label_problems(labels, max_labels):
        problems.add((*where, "labels", name) if name else (*where, "labels"), message)
    return tuple((name, str(value)) for name, value in labels.items()), max_labels
