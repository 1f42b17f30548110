"""A kind's settings from TOML values: the one builder behind checks, /probe templates and
ad-hoc probes, driven by the fields the kind declared with `option()`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from exporter.checks import KINDS
from exporter.config.model import CheckConfig, ProbeTemplate
from exporter.config.problems import PathKey, Problems, toml_type
from exporter.errors import ConfigError


def build_settings(cls: type, table: dict[str, Any], where: PathKey, problems: Problems,
                   given: Mapping[str, Any] | None = None,
                   paths: Mapping[str, PathKey] | None = None) -> Any:
    """The settings of `cls` from `table`'s TOML values and the `given` ones (already converted:
    a template's, or a target list's common keys), or None once the problems are added: each
    value against its field, every required field present, then the problems between keys that
    the settings see themselves. A problem with a key is told at `where`.key, or at the path
    `paths` gives the key (one target of a list: `targets[2]`)."""
    before = len(problems.lines)
    values = {**(given or {}),
              **_convert_fields(cls, table, where, problems, given or {}, paths=paths)}
    if len(problems.lines) > before:
        return None
    settings = cls(**values)
    # Problems between keys (a record type and its expected answers): the settings say.
    for key, message in getattr(settings, "problems", lambda: [])():
        problems.add((paths or {}).get(key) or (*where, key), message)
    return None if len(problems.lines) > before else settings


def template_values(cls: type, table: dict[str, Any], where: PathKey,
                    problems: Problems) -> dict[str, Any] | None:
    """The settings of `cls` but the target, converted once: a `/probe` template's, whose
    requests give the target, and a target list's, whose checks are one `build_settings` per
    target with these as `given`. Checked like a check's, as far as a draft without the target
    can be."""
    before = len(problems.lines)
    values = _convert_fields(cls, table, where, problems, {}, skip="target")
    if len(problems.lines) == before:
        for key, message in draft_problems(cls, values):
            problems.add((*where, key), message)
    return None if len(problems.lines) > before else values


def check_value(cls: type, key: str, raw: Any, path: PathKey, problems: Problems) -> None:
    """Adds the problem, if any, of `raw` as the value of `cls`'s field `key` (a target list's
    targets, checked even where the list's other keys have problems)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == key)
    try:
        convert(raw, type_hints(cls)[key], field.metadata)
    except ValueError as exc:
        problems.add(path, str(exc))


def _convert_fields(cls: type, table: dict[str, Any], where: PathKey, problems: Problems,
                    given: Mapping[str, Any], skip: str = "",
                    paths: Mapping[str, PathKey] | None = None) -> dict[str, Any]:
    """The fields of `cls` that `table` gives, converted; a problem for each bad value and for
    each required field that neither `table` nor `given` has. Keys that are no field of `cls`
    are the caller's to report."""
    hints = type_hints(cls)  # once per class: per check, it would dominate a large config's load
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name == skip:
            continue
        if field.name not in table:
            required = field.default is dataclasses.MISSING
            if (required and field.default_factory is dataclasses.MISSING
                    and field.name not in given):
                problems.add(where, f"missing required key {field.name!r}")
            continue
        try:
            values[field.name] = convert(table[field.name], hints[field.name], field.metadata)
        except ValueError as exc:
            problems.add((paths or {}).get(field.name) or (*where, field.name), str(exc))
    return values


def draft_problems(cls: type, values: dict[str, Any]) -> list[tuple[str, str]]:
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


def type_hints(cls: type) -> dict[str, Any]:
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
    takes_target = any(f.name == "target" for f in dataclasses.fields(cls))
    if not takes_target and target:
        raise ConfigError([f"target: the {kind_name} kind takes no target"])
    table: dict[str, Any] = {"target": target} if target else {}
    problems = Problems("", None)
    settings = build_settings(cls, table, (), problems,
                              given=dict(template.values) if template is not None else {})
    if settings is None:
        if takes_target and not target and "missing required key 'target'" in problems.lines:
            raise ConfigError([f"target: missing; a {kind_name} check needs one (&target=)"])
        raise ConfigError(problems.lines)
    name = template.name if template is not None else kind_name
    # Never scheduled: the interval is only there to complete the record.
    return CheckConfig(name, kind_name, target, 0.0,
                       template.timeout if template is not None else timeout, settings)


def convert(raw: Any, annotation: Any, meta: typing.Mapping[str, Any]) -> Any:
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
            raise ValueError(f"expected an array, got {toml_type(raw)}")
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
    raise ValueError(f"expected {wanted}, got {toml_type(raw)}")
