"""Where keys were written: TOML parsers do not keep line numbers, so a small scanner maps
table headers and keys back to the lines they were written on.
"""

from __future__ import annotations

import re

from exporter.config.problems import PathKey

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

    Arrays of tables get their index: the second `[[checks]]` is ("checks", 1), and so do the
    elements of an array value: the third target of `targets = [...]` is (..., "targets", 2).
    Content of multi-line strings is skipped. Never raises.
    """
    all_lines = text.splitlines()
    lines: dict[PathKey, int] = {}
    arrays: dict[tuple[str, ...], int] = {}
    table: PathKey = ()
    depth = 0
    open_string: str | None = None
    for number, line in enumerate(all_lines, 1):
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
                path = (*table, *_key_parts(key[1]))
                lines.setdefault(path, number)
                rest = line[key.end():]
                if _SIMPLE_VALUE.fullmatch(rest):  # most lines: no bracket, no open string
                    continue
                if rest.lstrip().startswith("["):
                    for index, element_line in enumerate(_elements(all_lines, number, rest)):
                        lines.setdefault((*path, index), element_line)
        depth, open_string = _scan(rest, depth)
    return lines


def _elements(all_lines: list[str], number: int, rest: str) -> list[int]:
    """The line each element of the array that `rest` (of line `number`) opens starts on."""
    starts: list[int] = []
    depth, expecting = 0, True
    for line_number in range(number, len(all_lines) + 1):
        text = rest if line_number == number else all_lines[line_number - 1]
        i = 0
        while i < len(text):
            c = text[i]
            if c == "#":
                break
            if c.isspace():
                i += 1
                continue
            if depth == 1 and expecting and c not in ",]":
                starts.append(line_number)
                expecting = False
            if c in "\"'":
                if text.startswith(c * 3, i):  # a multi-line string: one element, no index
                    return starts
                i += 1
                while i < len(text) and text[i] != c:
                    i += 2 if c == '"' and text[i] == "\\" else 1
            elif c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return starts
            elif c == "," and depth == 1:
                expecting = True
            i += 1
    return starts


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
