"""The config: TOML text in, typed and validated frozen dataclasses out.

Every problem is collected before anything is reported, each as
`FILE:LINE: checks[N] "name".key: message`, so one run of `check-config` shows them all.
TOML parsers do not keep line numbers, so a small scanner (`locate`) maps table headers and keys
back to the lines they were written on.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import socket
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from exporter.allow import AllowList, parse_allow, parse_entry
from exporter.checks import KINDS
from exporter.checks.base import COMMON_KEYS
from exporter.durations import parse_duration
from exporter.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 5.0
EMBEDDED = "<embedded default>"
MAX_NAME_LENGTH = 200

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One configured check. Equal configs mean an unchanged check across reloads."""

    name: str
    kind: str
    target: str  # as written, for the info metric and the status page ("" if the kind has none)
    interval: float
    timeout: float
    settings: Any  # the kind's settings dataclass


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
class Config:
    checks: tuple[CheckConfig, ...]
    source: str
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)

    def check(self, name: str) -> CheckConfig | None:
        return next((c for c in self.checks if c.name == name), None)


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
        raise ConfigError(problems.lines)
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
    check = _build_check(table, (), DEFAULT_INTERVAL, DEFAULT_TIMEOUT, problems)
    if problems.lines or check is None:
        raise ConfigError(problems.lines or [f"{source}: invalid check"])
    return check


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


class Problems:
    """Collects problems with where they are: a path of keys that `locate` turns into a line."""

    def __init__(self, source: str, lines: dict[PathKey, int] | None) -> None:
        self.source = source
        self._where = lines
        self._names: dict[int, str] = {}
        self.lines: list[str] = []

    def name_check(self, index: int, name: str) -> None:
        self._names[index] = name

    def add(self, path: PathKey, message: str) -> None:
        where = self.source if self._where is None else f"{self.source}:{self.line(path)}"
        what = self.describe(path)
        self.lines.append(f"{where}: {what}: {message}" if what else f"{where}: {message}")

    def line(self, path: PathKey) -> int:
        if self._where is None:
            return 0
        for end in range(len(path), 0, -1):
            if path[:end] in self._where:
                return self._where[path[:end]]
        return 1

    def describe(self, path: PathKey) -> str:
        text = ""
        for i, part in enumerate(path):
            if isinstance(part, int):
                text += f"[{part}]"
                if path[:i] == ("checks",) and part in self._names:
                    text += f' "{self._names[part]}"'
            else:
                text += f".{part}" if text else part
        return text


# --- validation ----------------------------------------------------------------------------------

TOP_LEVEL_KEYS = ("defaults", "checks", "probe")
DEFAULTS_KEYS = ("interval", "timeout")


def _build(document: dict[str, Any], source: str, problems: Problems) -> Config | None:
    _unknown_keys(document, TOP_LEVEL_KEYS, (), problems)
    defaults = _table(document, "defaults", problems) or {}
    _unknown_keys(defaults, DEFAULTS_KEYS, ("defaults",), problems)
    interval = _duration(defaults, "interval", ("defaults",), DEFAULT_INTERVAL, problems)
    timeout = _duration(defaults, "timeout", ("defaults",), DEFAULT_TIMEOUT, problems)
    if interval is not None and timeout is not None and timeout >= interval:
        problems.add(("defaults", "timeout"), f"must be shorter than the interval ({interval:g}s)")

    raw_checks = document.get("checks", [])
    if not isinstance(raw_checks, list):
        problems.add(("checks",), "must be an array of tables: write each check as [[checks]]")
        raw_checks = []
    checks: list[CheckConfig] = []
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
        check = _build_check(table, where, interval or DEFAULT_INTERVAL,
                             timeout or DEFAULT_TIMEOUT, problems)
        if check is not None:
            checks.append(check)
    probe = _build_probe(document, timeout or DEFAULT_TIMEOUT, problems)
    return Config(tuple(checks), source, probe)


def _build_check(
    table: dict[str, Any],
    where: PathKey,
    default_interval: float,
    default_timeout: float,
    problems: Problems,
) -> CheckConfig | None:
    before = len(problems.lines)
    name = table.get("name")
    if name is None:
        problems.add(where, "missing required key 'name'")
    elif not isinstance(name, str):
        problems.add((*where, "name"), f"expected a string, got {_toml_type(name)}")
    elif not name.strip():
        problems.add((*where, "name"), "must not be empty")
    elif len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in name):
        problems.add((*where, "name"), f"must be at most {MAX_NAME_LENGTH} printable characters")

    kind_name = table.get("kind")
    kind = None
    if kind_name is None:
        problems.add(where, f"missing required key 'kind'; known kinds: {', '.join(KINDS)}")
    elif not isinstance(kind_name, str):
        problems.add((*where, "kind"), f"expected a string, got {_toml_type(kind_name)}")
    elif kind_name not in KINDS:
        problems.add((*where, "kind"), f"unknown kind {kind_name!r}{_suggest(kind_name, KINDS)};"
                     f" known kinds: {', '.join(KINDS)}")
    else:
        kind = KINDS[kind_name]

    interval = _duration(table, "interval", where, default_interval, problems)
    timeout = _duration(table, "timeout", where, default_timeout, problems)
    own = "timeout" in table or "interval" in table  # else [defaults] was already reported
    if own and interval is not None and timeout is not None and timeout >= interval:
        key = "timeout" if "timeout" in table else "interval"
        problems.add((*where, key), f"the timeout ({timeout:g}s) must be shorter than the "
                     f"interval ({interval:g}s)")

    if kind is None:
        return None
    fields = {f.name for f in dataclasses.fields(kind.settings)}
    if "target" in table and "target" not in fields:  # a kind that checks this host (clock)
        problems.add((*where, "target"), f"a {kind.name} check takes no target: it checks "
                     "this host; remove the key")
    _unknown_keys({k: v for k, v in table.items() if k != "target"},
                  (*COMMON_KEYS, *sorted(fields)), where, problems)
    settings = build_settings(kind.settings, {k: v for k, v in table.items() if k in fields},
                              where, problems)
    if (settings is not None and interval is not None and timeout is not None
            and kind.schedule_problems is not None):
        for key, message in kind.schedule_problems(settings, interval, timeout):
            problems.add((*where, key), message)
    if len(problems.lines) > before or interval is None or timeout is None:
        return None
    target = table.get("target", "")
    return CheckConfig(str(name), kind.name, str(target), interval, timeout, settings)


def build_settings(cls: type, table: dict[str, Any], where: PathKey, problems: Problems) -> Any:
    """Validate `table` against the settings dataclass `cls`; None if there were problems."""
    before = len(problems.lines)
    hints = _type_hints(cls)  # once per class: per check, it was most of a big config's load
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        path = (*where, field.name)
        if field.name not in table:
            required = field.default is dataclasses.MISSING
            if required and field.default_factory is dataclasses.MISSING:
                problems.add(where, f"missing required key {field.name!r}")
            continue
        try:
            values[field.name] = _convert(table[field.name], hints[field.name], field.metadata)
        except ValueError as exc:
            problems.add(path, str(exc))
    if len(problems.lines) > before:
        return None
    settings = cls(**values)
    # Problems between keys (a record type and its expected answers): the settings say.
    for key, message in getattr(settings, "problems", lambda: [])():
        problems.add((*where, key), message)
    return None if len(problems.lines) > before else settings


# --- [probe]: the allow-list and the templates of ad-hoc probes ----------------------------------

PROBE_KEYS = ("allow", "templates", "max_in_flight", "timeout_offset")
# The web server runs 32 handlers at a time: probes must leave room for /metrics and the rest.
MAX_PROBES_IN_FLIGHT = 24


def _build_probe(document: dict[str, Any], default_timeout: float,
                 problems: Problems) -> ProbeConfig:
    table = _table(document, "probe", problems)
    if table is None:
        return ProbeConfig(timeout=default_timeout)
    where: PathKey = ("probe",)
    _unknown_keys(table, PROBE_KEYS, where, problems)
    entries: list[str] = []
    raw_allow = table.get("allow", [])
    if not isinstance(raw_allow, list):
        problems.add((*where, "allow"), "expected an array of host patterns and networks, got "
                     f"{_toml_type(raw_allow)}")
        raw_allow = []
    for index, entry in enumerate(raw_allow):
        try:
            if not isinstance(entry, str):
                raise ValueError(f"expected a string, got {_toml_type(entry)}")
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
                     f"{_toml_type(max_in_flight)}")
        max_in_flight = defaults.max_in_flight
    offset = _duration(table, "timeout_offset", where, defaults.timeout_offset, problems)
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
                         f"{_suggest(str(kind_name), KINDS)}; known kinds: {', '.join(KINDS)}")
        return None
    kind = KINDS[kind_name]
    timeout = _duration(table, "timeout", where, default_timeout, problems)
    fields = {f.name: f for f in dataclasses.fields(kind.settings) if f.name != "target"}
    if "target" in table:
        problems.add((*where, "target"), "a template has no target: each request gives it "
                     "(&target=)")
    _unknown_keys({k: v for k, v in table.items() if k != "target"},
                  ("kind", "timeout", *sorted(fields)), where, problems)
    hints = _type_hints(kind.settings)
    values: dict[str, Any] = {}
    for key, field in fields.items():
        if key in table:
            try:
                values[key] = _convert(table[key], hints[key], field.metadata)
            except ValueError as exc:
                problems.add((*where, key), str(exc))
        elif field.default is dataclasses.MISSING:
            problems.add(where, f"missing required key {key!r}")
    if len(problems.lines) == before:
        for key, message in _draft_problems(kind.settings, values):
            problems.add((*where, key), message)
    if len(problems.lines) > before or timeout is None:
        return None
    return ProbeTemplate(name, kind.name, timeout, tuple(values.items()))


def _draft_problems(cls: type, values: dict[str, Any]) -> list[tuple[str, str]]:
    """The problems between a template's keys, from a draft of its settings without a target.

    A kind's `problems()` that needs the target cannot run on the draft (AttributeError): those
    are found per request, where every problem is checked again with the target.
    """
    if not hasattr(cls, "problems"):
        return []
    draft: Any = object.__new__(cls)
    for field in dataclasses.fields(cls):
        value = values.get(field.name, field.default)
        if value is not dataclasses.MISSING:
            object.__setattr__(draft, field.name, value)
    try:
        return list(draft.problems())
    except AttributeError:
        return []


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """The settings' annotations, evaluated once per class (per request would cost)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def adhoc_check(kind_name: str, template: ProbeTemplate | None, target: str,
                timeout: float) -> CheckConfig:
    """The check one ad-hoc probe runs: `target` with `template`'s options (or the kind's
    defaults and `timeout`); raises ConfigError saying what is wrong, one line per problem."""
    cls = KINDS[kind_name].settings
    values = dict(template.values) if template is not None else {}
    field = next((f for f in dataclasses.fields(cls) if f.name == "target"), None)
    if field is not None and not target and field.default is dataclasses.MISSING:
        raise ConfigError([f"target: missing; a {kind_name} check needs one (&target=)"])
    if field is not None and target:
        try:
            values["target"] = _convert(target, _type_hints(cls)["target"], field.metadata)
        except ValueError as exc:
            raise ConfigError([f"target: {exc}"]) from None
    elif target:
        raise ConfigError([f"target: the {kind_name} kind takes no target"])
    settings = cls(**values)
    found: list[tuple[str, str]] = getattr(settings, "problems", list)()
    if found:
        raise ConfigError([f"{key}: {message}" for key, message in found])
    name = template.name if template is not None else kind_name
    # Never scheduled: the interval is only there to complete the record.
    return CheckConfig(name, kind_name, target, 0.0,
                       template.timeout if template is not None else timeout, settings)


def _convert(raw: Any, annotation: Any, meta: typing.Mapping[str, Any]) -> Any:
    expected = meta.get("raw") or annotation
    _expect_type(raw, expected)
    choices = meta.get("choices")
    if choices is not None and raw not in choices:
        raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {raw!r}")
    value = raw
    if meta.get("parse") is not None:
        value = meta["parse"](raw)
    elif annotation is float:
        value = float(raw)
    elif typing.get_origin(annotation) is tuple:
        value = tuple(raw)
    check = meta.get("check")
    if check is not None and (problem := check(value)) is not None:
        raise ValueError(problem)
    return value


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "a table"}


def _expect_type(raw: Any, expected: Any) -> None:
    origin = typing.get_origin(expected)
    if origin is tuple or expected is list:
        if not isinstance(raw, list):
            raise ValueError(f"expected an array, got {_toml_type(raw)}")
        item = typing.get_args(expected)[0] if origin is tuple else Any
        for element in raw:
            if item is not Any:
                _expect_type(element, item)
        return
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
    elif isinstance(expected, tuple):
        options = expected
    else:
        options = (expected,)
    for option in options:
        if option is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return
        if option is int and isinstance(raw, bool):
            continue
        if isinstance(option, type) and isinstance(raw, option):
            return
    wanted = " or ".join(_TYPE_NAMES.get(o, getattr(o, "__name__", str(o))) for o in options)
    raise ValueError(f"expected {wanted}, got {_toml_type(raw)}")


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _table(document: dict[str, Any], key: str, problems: Problems) -> dict[str, Any] | None:
    value = document.get(key)
    if value is None or isinstance(value, dict):
        return value
    problems.add((key,), f"must be a table: write [{key}]")
    return None


def _duration(
    table: dict[str, Any], key: str, where: PathKey, default: float, problems: Problems
) -> float | None:
    if key not in table:
        return default
    raw = table[key]
    if not isinstance(raw, str):
        problems.add((*where, key), f'expected a duration string like "15s", got {_toml_type(raw)}')
        return None
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        problems.add((*where, key), str(exc))
        return None
    if seconds <= 0:
        problems.add((*where, key), "must be longer than 0s")
        return None
    return seconds


def _unknown_keys(
    table: dict[str, Any], allowed: tuple[str, ...], where: PathKey, problems: Problems
) -> None:
    for key in table:
        if key not in allowed:
            problems.add((*where, key), f"unknown key{_suggest(key, allowed)}")


def _suggest(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


# --- locating keys ------------------------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_KEY_PART = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER = re.compile(rf"\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?")
# A one-line basic string or bare scalar (number, boolean, date), and maybe a comment.
_SIMPLE_VALUE = re.compile(r'\s*(?:"(?:[^"\\]|\\.)*"|[\w.:+-]+)\s*(?:#.*)?')


def _key_parts(text: str) -> list[str]:
    parts = re.findall(_KEY_PART, text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def locate(text: str) -> dict[PathKey, int]:
    """Map table paths and keys to the line they first appear on (1-based), best effort.

    Arrays of tables get their index: the second `[[checks]]` is ("checks", 1). Content of
    multi-line strings and arrays is skipped. Never raises.
    """
    lines: dict[PathKey, int] = {}
    arrays: dict[tuple[str, ...], int] = {}
    table: PathKey = ()
    depth = 0
    open_string: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        rest = line
        if open_string is not None:
            end = rest.find(open_string)
            if end < 0:
                continue
            rest = rest[end + 3:]
            open_string = None
        elif depth == 0:
            header = _HEADER.match(line)
            key = None if header else _KEY.match(line)
            if header:
                parts = _key_parts(header[2])
                if header[1] == "[[":
                    index = arrays.get(tuple(parts), -1) + 1
                    arrays[tuple(parts)] = index
                    table = (*_resolve(parts, arrays, last_is_array=True), index)
                else:
                    table = _resolve(parts, arrays)
                lines.setdefault(table, number)
                continue
            if key:
                lines.setdefault((*table, *_key_parts(key[1])), number)
                rest = line[key.end():]
                if _SIMPLE_VALUE.fullmatch(rest):  # most lines: no bracket, no open string
                    continue
        depth, open_string = _scan(rest, depth)
    return lines


def _resolve(parts: list[str], arrays: dict[tuple[str, ...], int],
             last_is_array: bool = False) -> PathKey:
    path: list[str | int] = []
    for i, part in enumerate(parts):
        path.append(part)
        is_last = i == len(parts) - 1
        if tuple(parts[: i + 1]) in arrays and not (is_last and last_is_array):
            path.append(arrays[tuple(parts[: i + 1])])
    return tuple(path)


def _scan(text: str, depth: int) -> tuple[int, str | None]:
    """Track bracket depth through `text`; report a multi-line string left open."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "#":
            break
        if text.startswith(('"""', "'''"), i):
            quote = text[i:i + 3]
            end = text.find(quote, i + 3)
            if end < 0:
                return depth, quote
            i = end + 3
            continue
        if c in "\"'":
            i += 1
            while i < len(text) and text[i] != c:
                i += 2 if c == '"' and text[i] == "\\" else 1
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return depth, None
