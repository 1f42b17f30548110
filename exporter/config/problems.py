"""Problems with a config, each with where it was written: `FILE:LINE: path.key: message`;
and the checks of keys and values that every section shares.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from exporter.config.durations import parse_duration

PathKey = tuple[str | int, ...]


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
        # Without a source (the options of one /probe request) a problem names its key only.
        self.lines.append(": ".join(part for part in (where, what, message) if part))

    def distinct(self) -> list[str]:
        """The problems, each once: a target list's checks share their keys and so their
        problems, which are told once for the list."""
        return list(dict.fromkeys(self.lines))

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


def toml_type(value: Any) -> str:
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


def section(document: dict[str, Any], key: str, problems: Problems) -> dict[str, Any] | None:
    value = document.get(key)
    if value is None or isinstance(value, dict):
        return value
    problems.add((key,), f"must be a table: write [{key}]")
    return None


def duration_key(
    table: dict[str, Any], key: str, where: PathKey, default: float, problems: Problems
) -> float | None:
    if key not in table:
        return default
    raw = table[key]
    if not isinstance(raw, str):
        problems.add((*where, key), f'expected a duration string like "15s", got {toml_type(raw)}')
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


def unknown_keys(
    table: dict[str, Any], allowed: tuple[str, ...], where: PathKey, problems: Problems
) -> None:
    for key in table:
        if key not in allowed:
            problems.add((*where, key), f"unknown key{suggest(key, allowed)}")


def suggest(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
