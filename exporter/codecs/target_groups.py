"""Prometheus' target groups, as its service discovery writes them: a file_sd file (JSON or YAML)
or an http_sd answer (JSON), `[{"targets": ["a:80", ...], "labels": {"team": "db"}}, ...]`;
and the targets of a DNS SRV answer, as dns_sd makes them (`target:port`).

Pure: text in, `TargetGroup`s out, or a `TargetGroupError` naming the group and the key. The
names of the labels are the caller's to judge (they become a check's labels); here they are
only required to be strings, as their values are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.codecs import yaml_document


@dataclass(frozen=True, slots=True)
class TargetGroup:
    targets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()


class TargetGroupError(ValueError):
    """The text is not a list of target groups; the message says where and why."""


def parse(text: str, form: str) -> list[TargetGroup]:
    """The groups of `text`, written in `form` ("json" or "yaml")."""
    try:
        data = json.loads(text) if form == "json" else yaml_document.load(text)
    except json.JSONDecodeError as exc:
        raise TargetGroupError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
                               ) from None
    except yaml_document.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise TargetGroupError(f"not YAML: {getattr(exc, 'problem', None) or exc}{at}"
                               ) from None
    except RecursionError:
        raise TargetGroupError("nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits (int's own limit)
        raise TargetGroupError(str(exc).partition("; use sys.set_int_max_str_digits")[0]
                               ) from None
    return from_value(data)


def from_value(data: Any) -> list[TargetGroup]:
    """The groups of a decoded document; an empty document has none."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise TargetGroupError(f"expected a list of target groups, got {_type(data)}")
    return [_group(i, item) for i, item in enumerate(data)]


def _group(index: int, item: Any) -> TargetGroup:
    where = f"target group {index}"
    if not isinstance(item, dict):
        raise TargetGroupError(f"{where}: expected an object with targets and labels, got "
                               f"{_type(item)}")
    unknown = sorted(str(key) for key in item if key not in ("targets", "labels"))
    if unknown:
        raise TargetGroupError(f"{where}: unknown key {unknown[0]!r} (a group has targets "
                               "and labels)")
    targets = item.get("targets")
    if not isinstance(targets, list):
        raise TargetGroupError(f"{where}: targets: expected a list of strings, got "
                               f"{_type(targets)}")
    for i, target in enumerate(targets):
        if not isinstance(target, str) or not target.strip():
            raise TargetGroupError(f"{where}: targets[{i}]: expected a target string, got "
                                   f"{_type(target)}")
    labels = item.get("labels") or {}
    if not isinstance(labels, dict):
        raise TargetGroupError(f"{where}: labels: expected an object of strings, got "
                               f"{_type(labels)}")
    for name, value in labels.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TargetGroupError(f"{where}: labels: {name!r}: names and values are strings, "
                                   f"got {_type(value)}")
    for text in (*targets, *labels, *labels.values()):
        if not _encodable(text):  # a lone surrogate that JSON's \ud800 escapes can make
            raise TargetGroupError(f"{where}: {text!r} is not valid Unicode text")
    return TargetGroup(tuple(targets), tuple(labels.items()))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def srv_targets(answers: Iterable[str]) -> TargetGroup:
    """The targets of SRV answers ("priority weight port target."): `target:port` each, in the
    order given, once each. A target "." (the service is not offered there) gives none."""
    found: dict[str, None] = {}
    for answer in answers:
        parts = answer.split()
        if len(parts) != 4 or not parts[2].isdigit():
            raise TargetGroupError(f"not an SRV answer: {answer!r}")
        host = parts[3].rstrip(".")
        if host:
            found[f"[{host}]:{parts[2]}" if ":" in host else f"{host}:{parts[2]}"] = None
    return TargetGroup(tuple(found))


def nameservers(resolv_conf: str) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, in order (the first three, as the C
    library's resolver uses)."""
    found = []
    for line in resolv_conf.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1])
    return found[:3]


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:60]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
