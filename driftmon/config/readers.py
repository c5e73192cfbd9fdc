"""Readers: one YAML value in, a typed value (or ``None`` after an error) out."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias, TypeVar

from driftmon.config.errors import (
    ConfigError,
    Errors,
    did_you_mean,
    format_number,
    join_path,
    one_line,
    show,
    show_path,
)
from driftmon.config.model import MAX_BINS
from driftmon.config.units import parse_duration, parse_size

_T = TypeVar("_T")
# A reader returns the typed value, or None after adding an error.
_Reader: TypeAlias = Callable[[object, str, Errors], _T]


class Section:
    """A mapping being read: unknown keys are reported, ``null`` values count as absent."""

    def __init__(
        self, value: dict[object, object], path: str, errs: Errors, keys: Sequence[str]
    ) -> None:
        self.path = path
        self.errs = errs
        self.values: dict[str, object] = {}
        self.nulls: set[str] = set()
        for key, item in value.items():
            if isinstance(key, str) and key in keys:
                if item is None:
                    self.nulls.add(key)
                else:
                    self.values[key] = item
            else:
                hint = did_you_mean(key, keys) if isinstance(key, str) else ""
                if not hint:
                    hint = f" (expected one of: {', '.join(keys)})"
                errs.add(join_path(path, key), f"unknown key{hint}")

    def at(self, key: str) -> str:
        """The path of ``key`` in this mapping."""
        return join_path(self.path, key)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def raw(self, key: str) -> object | None:
        """The value as YAML gave it, ``None`` when absent or null."""
        return self.values.get(key)

    def read(self, key: str, reader: _Reader[_T]) -> _T | None:
        """``reader`` applied to the key's value; ``None`` when absent or invalid."""
        if key not in self.values:
            return None
        return reader(self.values[key], self.at(key), self.errs)

    def require(self, key: str, reader: _Reader[_T]) -> _T | None:
        """Like :meth:`read`, but an absent key is an error."""
        if key in self.nulls:
            self.errs.add(self.at(key), "required, got null")
            return None
        if key not in self.values:
            self.errs.add(self.at(key), "missing required key")
            return None
        return reader(self.values[key], self.at(key), self.errs)


def open_section(value: object, path: str, errs: Errors, keys: Sequence[str]) -> Section | None:
    """``value`` as a :class:`Section`; absent (``None``) is an empty mapping."""
    if value is None:
        return Section({}, path, errs, keys)
    if not isinstance(value, dict):
        errs.add(path, f"expected a mapping, got {show(value)}")
        return None
    return Section(value, path, errs, keys)


def read_list(value: object, path: str, errs: Errors) -> list[object] | None:
    if not isinstance(value, list):
        errs.add(path, f"expected a list, got {show(value)}")
        return None
    return value


def read_str(value: object, path: str, errs: Errors) -> str | None:
    if not isinstance(value, str):
        errs.add(path, f"expected a string, got {show(value)}")
        return None
    if not value.strip():
        errs.add(path, "must not be empty")
        return None
    return value


def read_bool(value: object, path: str, errs: Errors) -> bool | None:
    if not isinstance(value, bool):
        errs.add(path, f"expected true or false, got {show(value)}")
        return None
    return value


def int_reader(minimum: int, maximum: int | None = None) -> _Reader[int | None]:
    """A reader of integers in ``[minimum, maximum]``; integral floats (``20.0``) are accepted."""

    def read(value: object, path: str, errs: Errors) -> int | None:
        number: int
        if isinstance(value, bool) or not isinstance(value, int | float):
            errs.add(path, f"expected an integer, got {show(value)}")
            return None
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                errs.add(path, f"expected an integer, got {show(value)}")
                return None
            number = int(value)
        else:
            number = value
        if number < minimum:
            bound = "> 0" if minimum == 1 else f">= {minimum}"
            errs.add(path, f"must be {bound}, got {show(value)}")
            return None
        if maximum is not None and number > maximum:
            errs.add(path, f"must be <= {maximum}, got {show(value)}")
            return None
        return number

    return read


def float_reader(*, at_least: float | None = None) -> _Reader[float | None]:
    """A reader of finite numbers, at least ``at_least`` when given."""

    def read(value: object, path: str, errs: Errors) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errs.add(path, f"expected a number, got {show(value)}")
            return None
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            errs.add(path, f"expected a finite number, got {show(value)}")
            return None
        if at_least is not None and number < at_least:
            errs.add(path, f"must be >= {format_number(at_least)}, got {show(value)}")
            return None
        return number

    return read


def duration_reader(*, positive: bool) -> _Reader[float | None]:
    def read(value: object, path: str, errs: Errors) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            errs.add(path, f'expected a duration like "15s", got {show(value)}')
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            errs.add(path, str(exc))
            return None
        if positive and seconds <= 0:
            errs.add(path, f"must be > 0, got {show(value)}")
            return None
        return seconds

    return read


def read_size(value: object, path: str, errs: Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        errs.add(path, f'expected a size like "16MiB", got {show(value)}')
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        errs.add(path, str(exc))
        return None
    if size <= 0:
        errs.add(path, f"must be > 0, got {show(value)}")
        return None
    return size


def choice_reader(what: str, choices: Sequence[str]) -> _Reader[str | None]:
    """A reader of one word out of ``choices``, with a "did you mean" for typos."""

    def read(value: object, path: str, errs: Errors) -> str | None:
        if not isinstance(value, str):
            errs.add(path, f"expected one of {', '.join(choices)}, got {show(value)}")
            return None
        if value not in choices:
            errs.add(path, f"unknown {what} {show(value)}{did_you_mean(value, choices)}")
            return None
        return value

    return read


POSITIVE_INT = int_reader(1)
NON_NEGATIVE_INT = int_reader(0)
BIN_COUNT = int_reader(1, MAX_BINS)
SMOOTHING = float_reader(at_least=0.0)

# --- server.listen -----------------------------------------------------------

_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\Z")
_LISTEN_EXAMPLE = 'expected "host:port" like "127.0.0.1:9108" or "[::1]:9108"'


def read_listen(value: object, path: str, errs: Errors) -> tuple[str, int] | None:
    """``host:port`` → (host, port); IPv6 hosts go in brackets, port 0 means any free port."""
    if not isinstance(value, str):
        errs.add(path, f"{_LISTEN_EXAMPLE}, got {show(value)}")
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep:
        errs.add(path, f"{_LISTEN_EXAMPLE}, got {show(value)}")
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            errs.add(path, f"not an IPv6 address in brackets: {show(value)}")
            return None
    elif ":" in host:
        errs.add(path, f'IPv6 addresses go in brackets, like "[::1]:9108", got {show(value)}')
        return None
    elif not host:
        errs.add(
            path,
            f'the host is empty: write "0.0.0.0:PORT" for every IPv4 interface or '
            f'"[::]:PORT" for every IPv6 one, got {show(value)}',
        )
        return None
    elif not _HOSTNAME.match(host):
        errs.add(path, f"not a host name or address: {show(host)}")
        return None
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        errs.add(path, f"the port must be a number from 0 to 65535, got {show(port_text)}")
        return None
    return host, int(port_text)


def parse_listen(text: str) -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)``, as ``server.listen`` reads it; ``ConfigError`` if bad."""
    errs = Errors()
    result = read_listen(text, "listen", errs)
    if result is None:
        raise ConfigError(errs.lines)
    return result


# --- paths -------------------------------------------------------------------


def path_reader(base_dir: Path, *, must_exist: bool) -> _Reader[Path | None]:
    """A reader of file paths, resolved against ``base_dir``; ``~`` is the home folder."""

    def read(value: object, path: str, errs: Errors) -> Path | None:
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            errs.add(path, f"expected a file path, got {show(value)}")
            return None
        try:
            resolved = (base_dir / Path(value).expanduser()).resolve()
        except (OSError, RuntimeError) as exc:
            errs.add(path, f"cannot resolve {show(value)}: {one_line(str(exc))}")
            return None
        if must_exist:
            try:
                exists, is_file = resolved.exists(), resolved.is_file()
            except OSError as exc:
                errs.add(path, f"cannot read {show_path(resolved)}: {one_line(str(exc))}")
                return None
            if not exists:
                errs.add(path, f"no such file: {show_path(resolved)}")
                return None
            if not is_file:
                errs.add(path, f"not a file: {show_path(resolved)}")
                return None
        return resolved

    return read
