"""Config errors: :class:`ConfigError` and the helpers that render a problem on one line."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found in it.

    ``errors`` lists each problem as ``"path: message"``, the path naming
    where in the document it is (``streams[0].features[2].bins.count``), in
    document order. Problems with the file as a whole (unreadable, YAML
    syntax, not a mapping) have the path ``<file>``. ``str(exc)`` is the
    errors joined by newlines; each error is a single line.
    """

    errors: list[str]

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class Errors:
    """Collects ``path: message`` lines while a document is read."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path or '<file>'}: {message}")

    def __len__(self) -> int:
        return len(self.lines)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def join_path(path: str, key: object) -> str:
    """``path.key``; keys that are not plain words are quoted so a path stays one line."""
    text = str(key) if isinstance(key, str) and _PLAIN_KEY.match(key) else show(key)
    return f"{path}.{text}" if path else text


def show(value: object) -> str:
    """A short, one-line, YAML/JSON-like rendering of a value read from YAML."""
    text = _render(value, 0)
    return text if len(text) <= 80 else text[:77] + "..."


# Line breaks that json.dumps leaves alone but str.splitlines() (and terminals) honour.
_UNICODE_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _quote(text: str) -> str:
    """``text`` as a JSON string literal that is certainly one line."""
    return json.dumps(text, ensure_ascii=False).translate(_UNICODE_LINE_BREAKS)


def show_path(path: Path) -> str:
    """A file path as is, or quoted when it holds characters that would break the line."""
    text = str(path)
    return text if text.isprintable() else _quote(text)


def _render(value: object, depth: int) -> str:
    # Documents can hold recursive aliases and huge integers: bound the depth and
    # never call str() on an int Python may refuse to convert.
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 200 else "a very large integer"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, str):
        return _quote(value if len(value) <= 100 else value[:100] + "...")
    if isinstance(value, list | tuple | set | frozenset):
        if depth >= 3:
            return "[...]"
        items = [_render(item, depth + 1) for item in list(value)[:10]]
        return "[" + ", ".join(items) + (", ...]" if len(value) > 10 else "]")
    if isinstance(value, dict):
        if depth >= 3:
            return "{...}"
        pairs = [
            f"{_render(key, depth + 1)}: {_render(item, depth + 1)}"
            for key, item in list(value.items())[:10]
        ]
        return "{" + ", ".join(pairs) + (", ...}" if len(value) > 10 else "}")
    return _quote(str(value)[:100])


def format_number(value: float) -> str:
    """``1`` for 1.0, ``0.1`` for 0.1: numbers as a user would have written them."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def exact_number(value: float) -> str:
    """The shortest text that reads back as ``value`` exactly, without a trailing ``.0``:
    PromQL literals and ``le`` labels (``5`` for 5.0, ``1e+20``, ``0.1``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f" (expected one of: {', '.join(choices)})"


def one_line(text: str) -> str:
    return " ".join(text.split())
