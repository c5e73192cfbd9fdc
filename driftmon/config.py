"""Configuration: the only module that sees YAML (DESIGN.md §12).

``load_config`` turns a YAML file into frozen, typed objects; every other
module takes these objects (or plain arguments), never dictionaries. Every
error of a file is collected and reported at once, each with its path
(``streams[0].features[2].bins.count: must be > 0, got 0``).

Choices where DESIGN.md is silent (user-visible, so written down here):

- ``null`` means the same as leaving a key out (the default applies);
  a required key given as ``null`` is an error.
- ``ingest.workers`` left out is stored as 0, meaning the core count at
  run time (:attr:`IngestConfig.worker_count`); written out it must be > 0.
- ``state.dir`` left out is ``None``: no checkpoints.
- Sizes: ``KiB``/``MiB``/``GiB``/``TiB`` are powers of 1024,
  ``kB``/``KB``/``MB``/``GB``/``TB`` powers of 1000 (:func:`parse_size`).
- Durations follow Prometheus: ``1h30m``, units ``w d h m s ms`` largest
  first; a plain number is seconds (:func:`parse_duration`).
- Keys written twice in one YAML mapping are errors (YAML would silently
  keep the last), and so are unquoted ``yes``/``no`` in ``categories``
  (YAML 1.1 reads them as booleans).
- Stream names are ``[A-Za-z0-9_][A-Za-z0-9_.-]*`` and feature names hold
  no ``/``: both are URL path segments (§6).
- At most :data:`MAX_BINS` bins per monitor and :data:`MAX_PANES` panes.
- Rules that can never fire are errors: ``js`` at or above its ceiling
  (log 2), ``hellinger`` at or above 1, ``wasserstein`` over categorical
  monitors only, ``min_samples`` above every selected ``{samples: N}`` window.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias, TypeVar

import yaml

# --- the typed configuration -------------------------------------------------

FeatureType = Literal["numeric", "categorical"]
LogBase = Literal["e", "2"]
ReferenceKind = Literal["file", "warmup", "snapshot"]
DataFormat = Literal["csv", "ndjson", "json"]
AlertMetric = Literal["kl", "kl_reverse", "js", "psi", "hellinger", "wasserstein"]

ALERT_METRICS: tuple[str, ...] = ("kl", "kl_reverse", "js", "psi", "hellinger", "wasserstein")


@dataclass(frozen=True)
class UniformBins:
    """``count`` regular bins of equal width over ``[lo, hi)``."""

    lo: float
    hi: float
    count: int
    kind: Literal["uniform"] = "uniform"


@dataclass(frozen=True)
class EdgesBins:
    """Explicit increasing edges ``e0 < e1 < ... < en`` (n regular bins)."""

    edges: tuple[float, ...]
    kind: Literal["edges"] = "edges"


@dataclass(frozen=True)
class QuantileBins:
    """``count`` bins at the reference's quantiles, fixed when it is loaded or frozen."""

    count: int
    kind: Literal["quantile"] = "quantile"


NumericBins = UniformBins | EdgesBins | QuantileBins


@dataclass(frozen=True)
class FeatureConfig:
    """One monitored field of a stream.

    Numeric features have ``bins``; categorical ones have either
    ``categories`` (fixed list) or ``top_k`` (learned from the reference).
    ``smoothing`` is already resolved from feature → stream → defaults.
    """

    name: str
    type: FeatureType
    smoothing: float
    bins: NumericBins | None = None
    categories: tuple[str, ...] | None = None
    top_k: int | None = None


@dataclass(frozen=True)
class ReferenceConfig:
    """Where a stream's reference distribution comes from (§4).

    ``path`` is absolute (resolved against the config file's folder).
    """

    kind: ReferenceKind
    path: Path | None = None
    format: DataFormat | None = None
    warmup_rows: int | None = None


@dataclass(frozen=True)
class TimeWindow:
    """A ring of ``panes`` panes covering ``length_s`` seconds."""

    length_s: float
    panes: int

    @property
    def pane_width_s(self) -> float:
        """Seconds covered by one pane."""
        return self.length_s / self.panes


@dataclass(frozen=True)
class SampleWindow:
    """Exactly the last ``samples`` rows."""

    samples: int


Window = TimeWindow | SampleWindow


@dataclass(frozen=True)
class CloudEventsMapping:
    """How CloudEvents payload logs map onto a stream's features (§6)."""

    service: str
    namespace: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamConfig:
    """A named source of rows and the features monitored on it."""

    name: str
    reference: ReferenceConfig
    window: Window
    features: tuple[FeatureConfig, ...]
    time_field: str | None = None
    cloudevents: CloudEventsMapping | None = None


@dataclass(frozen=True)
class AlertRule:
    """One ``alerts:`` entry (§5). Durations are seconds."""

    name: str
    stream_pattern: str
    feature_pattern: str
    metric: AlertMetric
    threshold: float
    for_s: float = 0.0
    clear_below: float | None = None
    min_samples: int = 0
    max_p_value: float | None = None
    keep_firing_for_s: float = 0.0
    severity: str = "warning"

    @property
    def clear_threshold(self) -> float:
        """The value at or below which a firing alert's condition clears."""
        return self.threshold if self.clear_below is None else self.clear_below


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: int = 9108
    max_body_bytes: int = 16 * 1024 * 1024
    auth_token_file: Path | None = None
    external_url: str | None = None  # None: http://<listen address>

    def base_url(self) -> str:
        """Where users reach the daemon: ``external_url`` (no trailing slash), else the
        listen address."""
        if self.external_url is not None:
            return self.external_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class IngestConfig:
    """Ingest workers, parse processes and the bound of the ingest queue."""

    workers: int = 0  # 0: the core count
    queue_rows: int = 1_000_000
    cloudevents_root: bool = False
    processes: int = 0  # parse processes beside the workers; 0: parse in the workers

    @property
    def worker_count(self) -> int:
        """The number of ingest workers to start: ``workers``, or the usable core count for 0.

        The core count is read when this is called (the CPUs this process may run on,
        which in a container can be fewer than the machine's), so a config loaded on
        one machine and used on another still follows the machine it runs on.
        """
        if self.workers > 0:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EngineConfig:
    """Evaluation cadence and the log base of every divergence."""

    evaluate_every_s: float = 15.0
    log_base: LogBase = "e"
    history_length_s: float = 3600.0  # engine.history.length; 0 keeps no history
    history_every_s: float = 60.0  # engine.history.every: at most one entry per this long

    @property
    def history_capacity(self) -> int:
        """Entries of each monitor's history ring (see :mod:`driftmon.history`)."""
        step_s = max(self.history_every_s, self.evaluate_every_s)
        return math.ceil(self.history_length_s / step_s - 1e-9)


@dataclass(frozen=True)
class StateConfig:
    """Where and how often checkpoints are written."""

    dir: Path | None = None
    checkpoint_every_s: float = 60.0


@dataclass(frozen=True)
class Config:
    """A whole, validated driftmon configuration."""

    streams: tuple[StreamConfig, ...]
    alerts: tuple[AlertRule, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    state: StateConfig = field(default_factory=StateConfig)
    source: Path | None = None

    def stream(self, name: str) -> StreamConfig:
        """The stream called ``name``; ``KeyError`` when there is none."""
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)


# --- limits ------------------------------------------------------------------

#: Most regular bins (``count``, edges - 1, categories, ``top_k``) one monitor may have.
#: Every bin costs memory in every pane of every window, so a typo such as
#: ``count: 2000000`` is an error here rather than an out-of-memory in the engine.
MAX_BINS = 100_000
#: Most panes a time window may have, for the same reason.
MAX_PANES = 100_000

_DEFAULT_WINDOW = TimeWindow(length_s=15 * 60.0, panes=15)
_DEFAULT_SMOOTHING = 0.5

# --- errors ------------------------------------------------------------------


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


class _Errors:
    """Collects ``path: message`` lines while a document is read."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path or '<file>'}: {message}")

    def __len__(self) -> int:
        return len(self.lines)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def _join(path: str, key: object) -> str:
    """``path.key``; keys that are not plain words are quoted so a path stays one line."""
    text = str(key) if isinstance(key, str) and _PLAIN_KEY.match(key) else _show(key)
    return f"{path}.{text}" if path else text


def _show(value: object) -> str:
    """A short, one-line, YAML/JSON-like rendering of a value read from YAML."""
    text = _render(value, 0)
    return text if len(text) <= 80 else text[:77] + "..."


# Line breaks that json.dumps leaves alone but str.splitlines() (and terminals) honour.
_UNICODE_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _quote(text: str) -> str:
    """``text`` as a JSON string literal that is certainly one line."""
    return json.dumps(text, ensure_ascii=False).translate(_UNICODE_LINE_BREAKS)


def _show_path(path: Path) -> str:
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
        return _fmt_number(value)
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


def _fmt_number(value: float) -> str:
    """``1`` for 1.0, ``0.1`` for 0.1: numbers as a user would have written them."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f" (expected one of: {', '.join(choices)})"


# --- durations and sizes -----------------------------------------------------

_DURATION_UNITS_S = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Units must appear largest first, each at most once ("1h30m", not "30m1h"), as in
# Prometheus durations; the alternation tries "ms" before "m".
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|w|d|h|m|s)")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as ``"500ms"``, ``"15s"``, ``"5m"``, ``"1h30m"`` or ``"7d"``.

    Units are ``w`` (7 days), ``d``, ``h``, ``m``, ``s`` and ``ms``; a
    duration is one or more ``<number><unit>`` parts, largest unit first,
    each unit at most once; the numbers may have decimals (``"1.5h"``).
    A plain number, or a string holding only one, is seconds (``15``,
    ``0.5``, ``"90"``). Zero is allowed (``"0s"``, ``0``); callers that need
    a positive duration check that themselves.

    Raises ``ValueError`` for anything else: negative, infinite or NaN
    values, booleans, unknown or repeated units. The message is meant to
    follow a config path: ``expected a duration like "15s", got "15x"``.
    """
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f'expected a duration like "15s", got {_show(text)}')
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ValueError(f"must be a finite duration, got {_show(text)}")
        if seconds < 0:
            raise ValueError(f"must be >= 0, got {_show(text)}")
        return seconds
    stripped = text.strip()
    if _NUMBER.match(stripped):
        seconds = float(stripped)
    else:
        seconds = 0.0
        position = 0
        last_rank = -1
        ranks = list(_DURATION_UNITS_S)
        while position < len(stripped):
            part = _DURATION_PART.match(stripped, position)
            if part is None or ranks.index(part.group(2)) <= last_rank:
                raise ValueError(f'expected a duration like "15s", got {_show(text)}')
            last_rank = ranks.index(part.group(2))
            seconds += float(part.group(1)) * _DURATION_UNITS_S[part.group(2)]
            position = part.end()
        if position == 0:
            raise ValueError(f'expected a duration like "15s", got {_show(text)}')
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {_show(text)}")
    return seconds


_SIZE_UNITS_BYTES = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]*)\Z")


def parse_size(text: str | int) -> int:
    """Bytes in a size such as ``"512KiB"``, ``"16MiB"``, ``"1GiB"`` or ``"1000"``.

    Binary units ``KiB``, ``MiB``, ``GiB``, ``TiB`` are powers of 1024; the
    decimal units ``kB`` (or ``KB``), ``MB``, ``GB``, ``TB`` are powers of
    1000, as SI and IEC 80000-13 define them (note that Prometheus's own
    flags read ``MB`` as 2^20: write ``MiB`` when that is what you mean).
    ``B`` or no unit is bytes; an int is bytes. Units are case-sensitive
    (``mb`` would be millibits). A fraction is allowed when the result is a
    whole number of bytes (``"1.5KiB"`` is 1536).

    Raises ``ValueError`` for negative values, booleans, floats, unknown
    units and fractional byte counts, with a message meant to follow a
    config path: ``expected a size like "16MiB", got "16 megs"``.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f'expected a size like "16MiB", got {_show(text)}')
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"must be >= 0, got {_show(text)}")
        return text
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f'expected a size like "16MiB", got {_show(text)}')
    number, unit = match.group(1), match.group(2) or "B"
    if unit not in _SIZE_UNITS_BYTES:
        # Unit typos are mostly case ("mib", "Mb"): suggest by case first.
        same_letters = [known for known in _SIZE_UNITS_BYTES if known.lower() == unit.lower()]
        hint = (
            f' (did you mean "{same_letters[0]}"?)'
            if same_letters
            else _did_you_mean(unit, list(_SIZE_UNITS_BYTES))
        )
        raise ValueError(f'unknown size unit "{unit}"{hint}')
    if "." in number:
        whole, fraction = number.split(".")
        # Exact arithmetic: floats would turn "1.1MB" into 1100000.0000000002 bytes.
        numerator = int(whole + fraction) * _SIZE_UNITS_BYTES[unit]
        denominator = 10 ** len(fraction)
        if numerator % denominator:
            raise ValueError(f"is not a whole number of bytes: {_show(text)}")
        return numerator // denominator
    return int(number) * _SIZE_UNITS_BYTES[unit]


# --- readers: one YAML value in, a typed value (or None after an error) out ---

_T = TypeVar("_T")
# A reader returns the typed value, or None after adding an error.
_Reader: TypeAlias = Callable[[object, str, _Errors], _T]


class _Map:
    """A mapping being read: unknown keys are reported, ``null`` values count as absent."""

    def __init__(
        self, value: dict[object, object], path: str, errs: _Errors, keys: Sequence[str]
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
                hint = _did_you_mean(key, keys) if isinstance(key, str) else ""
                if not hint:
                    hint = f" (expected one of: {', '.join(keys)})"
                errs.add(_join(path, key), f"unknown key{hint}")

    def at(self, key: str) -> str:
        """The path of ``key`` in this mapping."""
        return _join(self.path, key)

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


def _open(value: object, path: str, errs: _Errors, keys: Sequence[str]) -> _Map | None:
    """``value`` as a :class:`_Map`; absent (``None``) is an empty mapping."""
    if value is None:
        return _Map({}, path, errs, keys)
    if not isinstance(value, dict):
        errs.add(path, f"expected a mapping, got {_show(value)}")
        return None
    return _Map(value, path, errs, keys)


def _read_list(value: object, path: str, errs: _Errors) -> list[object] | None:
    if not isinstance(value, list):
        errs.add(path, f"expected a list, got {_show(value)}")
        return None
    return value


def _read_str(value: object, path: str, errs: _Errors) -> str | None:
    if not isinstance(value, str):
        errs.add(path, f"expected a string, got {_show(value)}")
        return None
    if not value.strip():
        errs.add(path, "must not be empty")
        return None
    return value


def _read_bool(value: object, path: str, errs: _Errors) -> bool | None:
    if not isinstance(value, bool):
        errs.add(path, f"expected true or false, got {_show(value)}")
        return None
    return value


def _int_reader(minimum: int, maximum: int | None = None) -> _Reader[int | None]:
    """A reader of integers in ``[minimum, maximum]``; integral floats (``20.0``) are accepted."""

    def read(value: object, path: str, errs: _Errors) -> int | None:
        number: int
        if isinstance(value, bool) or not isinstance(value, int | float):
            errs.add(path, f"expected an integer, got {_show(value)}")
            return None
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                errs.add(path, f"expected an integer, got {_show(value)}")
                return None
            number = int(value)
        else:
            number = value
        if number < minimum:
            bound = "> 0" if minimum == 1 else f">= {minimum}"
            errs.add(path, f"must be {bound}, got {_show(value)}")
            return None
        if maximum is not None and number > maximum:
            errs.add(path, f"must be <= {maximum}, got {_show(value)}")
            return None
        return number

    return read


def _float_reader(*, at_least: float | None = None) -> _Reader[float | None]:
    """A reader of finite numbers, at least ``at_least`` when given."""

    def read(value: object, path: str, errs: _Errors) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errs.add(path, f"expected a number, got {_show(value)}")
            return None
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            errs.add(path, f"expected a finite number, got {_show(value)}")
            return None
        if at_least is not None and number < at_least:
            errs.add(path, f"must be >= {_fmt_number(at_least)}, got {_show(value)}")
            return None
        return number

    return read


def _duration_reader(*, positive: bool) -> _Reader[float | None]:
    def read(value: object, path: str, errs: _Errors) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            errs.add(path, f'expected a duration like "15s", got {_show(value)}')
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            errs.add(path, str(exc))
            return None
        if positive and seconds <= 0:
            errs.add(path, f"must be > 0, got {_show(value)}")
            return None
        return seconds

    return read


def _read_size(value: object, path: str, errs: _Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        errs.add(path, f'expected a size like "16MiB", got {_show(value)}')
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        errs.add(path, str(exc))
        return None
    if size <= 0:
        errs.add(path, f"must be > 0, got {_show(value)}")
        return None
    return size


def _choice_reader(what: str, choices: Sequence[str]) -> _Reader[str | None]:
    """A reader of one word out of ``choices``, with a "did you mean" for typos."""

    def read(value: object, path: str, errs: _Errors) -> str | None:
        if not isinstance(value, str):
            errs.add(path, f"expected one of {', '.join(choices)}, got {_show(value)}")
            return None
        if value not in choices:
            errs.add(path, f"unknown {what} {_show(value)}{_did_you_mean(value, choices)}")
            return None
        return value

    return read


_POSITIVE_INT = _int_reader(1)
_NON_NEGATIVE_INT = _int_reader(0)
_BIN_COUNT = _int_reader(1, MAX_BINS)
_SMOOTHING = _float_reader(at_least=0.0)

# --- server.listen -----------------------------------------------------------

_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\Z")
_LISTEN_EXAMPLE = 'expected "host:port" like "127.0.0.1:9108" or "[::1]:9108"'


def _read_listen(value: object, path: str, errs: _Errors) -> tuple[str, int] | None:
    """``host:port`` → (host, port); IPv6 hosts go in brackets, port 0 means any free port."""
    if not isinstance(value, str):
        errs.add(path, f"{_LISTEN_EXAMPLE}, got {_show(value)}")
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep:
        errs.add(path, f"{_LISTEN_EXAMPLE}, got {_show(value)}")
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            errs.add(path, f"not an IPv6 address in brackets: {_show(value)}")
            return None
    elif ":" in host:
        errs.add(path, f'IPv6 addresses go in brackets, like "[::1]:9108", got {_show(value)}')
        return None
    elif not host:
        errs.add(
            path,
            f'the host is empty: write "0.0.0.0:PORT" for every IPv4 interface or '
            f'"[::]:PORT" for every IPv6 one, got {_show(value)}',
        )
        return None
    elif not _HOSTNAME.match(host):
        errs.add(path, f"not a host name or address: {_show(host)}")
        return None
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        errs.add(path, f"the port must be a number from 0 to 65535, got {_show(port_text)}")
        return None
    return host, int(port_text)


def parse_listen(text: str) -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)``, as ``server.listen`` reads it; ``ConfigError`` if bad."""
    errs = _Errors()
    result = _read_listen(text, "listen", errs)
    if result is None:
        raise ConfigError(errs.lines)
    return result


# --- paths -------------------------------------------------------------------


def _path_reader(base_dir: Path, *, must_exist: bool) -> _Reader[Path | None]:
    """A reader of file paths, resolved against ``base_dir``; ``~`` is the home folder."""

    def read(value: object, path: str, errs: _Errors) -> Path | None:
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            errs.add(path, f"expected a file path, got {_show(value)}")
            return None
        try:
            resolved = (base_dir / Path(value).expanduser()).resolve()
        except (OSError, RuntimeError) as exc:
            errs.add(path, f"cannot resolve {_show(value)}: {_one_line(str(exc))}")
            return None
        if must_exist:
            try:
                exists, is_file = resolved.exists(), resolved.is_file()
            except OSError as exc:
                errs.add(path, f"cannot read {_show_path(resolved)}: {_one_line(str(exc))}")
                return None
            if not exists:
                errs.add(path, f"no such file: {_show_path(resolved)}")
                return None
            if not is_file:
                errs.add(path, f"not a file: {_show_path(resolved)}")
                return None
        return resolved

    return read


# --- sections ----------------------------------------------------------------


def _parse_server(value: object, errs: _Errors, base_dir: Path) -> ServerConfig:
    section = _open(
        value, "server", errs, ("listen", "max_body_bytes", "auth_token_file", "external_url")
    )
    defaults = ServerConfig()
    if section is None:
        return defaults
    listen = section.read("listen", _read_listen) or (defaults.host, defaults.port)
    max_body_bytes = section.read("max_body_bytes", _read_size)
    return ServerConfig(
        host=listen[0],
        port=listen[1],
        max_body_bytes=max_body_bytes or defaults.max_body_bytes,
        auth_token_file=section.read("auth_token_file", _path_reader(base_dir, must_exist=True)),
        external_url=section.read("external_url", _read_external_url),
    )


def _read_external_url(value: object, path: str, errs: _Errors) -> str | None:
    if (
        not isinstance(value, str)
        or not value.startswith(("http://", "https://"))
        or len(value) <= len("https://")
        or any(c.isspace() or c in "\"'<>" for c in value)
    ):
        errs.add(path, f'expected an http:// or https:// URL like "https://driftmon.example", '
                 f"got {_show(value)}")
        return None
    return value


def _parse_ingest(value: object, errs: _Errors) -> IngestConfig:
    section = _open(value, "ingest", errs, ("workers", "queue_rows", "processes", "cloudevents"))
    defaults = IngestConfig()
    if section is None:
        return defaults
    cloudevents_root = defaults.cloudevents_root
    cloudevents = _open(section.raw("cloudevents"), section.at("cloudevents"), errs, ("root",))
    if cloudevents is not None:
        root = cloudevents.read("root", _read_bool)
        cloudevents_root = cloudevents_root if root is None else root
    workers = section.read("workers", _POSITIVE_INT)
    queue_rows = section.read("queue_rows", _POSITIVE_INT)
    processes = section.read("processes", _int_reader(0, 64))
    return IngestConfig(
        workers=workers or defaults.workers,
        queue_rows=queue_rows or defaults.queue_rows,
        cloudevents_root=cloudevents_root,
        processes=defaults.processes if processes is None else processes,
    )


def _read_log_base(value: object, path: str, errs: _Errors) -> LogBase | None:
    # YAML reads `log_base: 2` as an int; both spellings mean bits.
    if value == "e":
        return "e"
    if (value == 2 and not isinstance(value, bool)) or value == "2":
        return "2"
    errs.add(path, f'must be "e" or 2, got {_show(value)}')
    return None


def _parse_engine(value: object, errs: _Errors) -> EngineConfig:
    section = _open(value, "engine", errs, ("evaluate_every", "log_base", "history"))
    defaults = EngineConfig()
    if section is None:
        return defaults
    evaluate_every_s = section.read("evaluate_every", _duration_reader(positive=True))
    log_base = section.read("log_base", _read_log_base)
    history_length_s, history_every_s = defaults.history_length_s, defaults.history_every_s
    history = _open(section.raw("history"), section.at("history"), errs, ("length", "every"))
    if history is not None:
        length_s = history.read("length", _duration_reader(positive=False))
        every_s = history.read("every", _duration_reader(positive=True))
        history_length_s = history_length_s if length_s is None else length_s
        history_every_s = history_every_s if every_s is None else every_s
        if length_s is not None and length_s > _MAX_HISTORY_S:
            shown = _show(history.raw("length"))
            errs.add(history.at("length"), f"must be at most 30d, got {shown}")
    return EngineConfig(
        evaluate_every_s=evaluate_every_s or defaults.evaluate_every_s,
        log_base=log_base or defaults.log_base,
        history_length_s=history_length_s,
        history_every_s=history_every_s,
    )


_MAX_HISTORY_S = 30 * 86400.0


def _parse_state(value: object, errs: _Errors, base_dir: Path) -> StateConfig:
    section = _open(value, "state", errs, ("dir", "checkpoint_every"))
    defaults = StateConfig()
    if section is None:
        return defaults
    checkpoint_every_s = section.read("checkpoint_every", _duration_reader(positive=True))
    return StateConfig(
        dir=section.read("dir", _path_reader(base_dir, must_exist=False)),
        checkpoint_every_s=checkpoint_every_s or defaults.checkpoint_every_s,
    )


def _read_window(value: object, path: str, errs: _Errors) -> Window | None:
    section = _open(value, path, errs, ("length", "panes", "samples"))
    if section is None:
        return None
    if "samples" in section:
        if "length" in section or "panes" in section:
            errs.add(path, "expected either {length, panes} or {samples}, got both")
            return None
        samples = section.read("samples", _POSITIVE_INT)
        return None if samples is None else SampleWindow(samples=samples)
    if "length" not in section and "panes" not in section:
        errs.add(path, "expected {length: 15m, panes: 15} or {samples: N}")
        return None
    length_s = section.require("length", _duration_reader(positive=True))
    panes = section.require("panes", _int_reader(1, MAX_PANES))
    if length_s is None or panes is None:
        return None
    return TimeWindow(length_s=length_s, panes=panes)


@dataclass(frozen=True)
class _Defaults:
    window: Window | None  # None after an error in defaults.window
    smoothing: float


def _parse_defaults(value: object, errs: _Errors) -> _Defaults:
    section = _open(value, "defaults", errs, ("window", "smoothing"))
    if section is None:
        return _Defaults(window=None, smoothing=_DEFAULT_SMOOTHING)
    window: Window | None = _DEFAULT_WINDOW
    if "window" in section:
        window = section.read("window", _read_window)
    smoothing = section.read("smoothing", _SMOOTHING)
    return _Defaults(
        window=window, smoothing=_DEFAULT_SMOOTHING if smoothing is None else smoothing
    )


# --- streams -----------------------------------------------------------------

_STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_FORMAT_BY_SUFFIX: dict[str, DataFormat] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
}
_FORMATS: tuple[DataFormat, ...] = ("csv", "ndjson", "json")


def _read_stream_name(value: object, path: str, errs: _Errors) -> str | None:
    name = _read_str(value, path, errs)
    if name is not None and not _STREAM_NAME.match(name):
        errs.add(
            path,
            'may hold only letters, digits, "_", "." and "-" (it is part of URLs), '
            f"got {_show(name)}",
        )
        return None
    return name


def _read_feature_name(value: object, path: str, errs: _Errors) -> str | None:
    name = _read_str(value, path, errs)
    if name is not None and ("/" in name or not name.isprintable()):
        errs.add(
            path,
            f'may not hold "/" or unprintable characters (it is part of URLs), got {_show(name)}',
        )
        return None
    return name


def _read_reference(
    value: object, path: str, errs: _Errors, base_dir: Path, snapshots_must_exist: bool
) -> ReferenceConfig | None:
    section = _open(value, path, errs, ("file", "warmup", "snapshot", "format"))
    if section is None:
        return None
    given = [kind for kind in ("file", "warmup", "snapshot") if kind in section]
    if len(given) != 1:
        got = "none" if not given else " and ".join(given)
        errs.add(path, f"expected exactly one of file, warmup, snapshot, got {got}")
        return None
    kind = given[0]
    if "format" in section and kind != "file":
        errs.add(section.at("format"), f"only with file, not with {kind}")
        return None
    if kind == "warmup":
        rows = section.read("warmup", _POSITIVE_INT)
        return None if rows is None else ReferenceConfig(kind="warmup", warmup_rows=rows)
    must_exist = snapshots_must_exist or kind != "snapshot"
    reference_path = section.read(kind, _path_reader(base_dir, must_exist=must_exist))
    if kind == "snapshot":
        if reference_path is None:
            return None
        return ReferenceConfig(kind="snapshot", path=reference_path)
    data_format: DataFormat | None = None
    if "format" in section:
        chosen = section.read("format", _choice_reader("format", _FORMATS))
        data_format = next((known for known in _FORMATS if known == chosen), None)
    elif reference_path is not None:
        data_format = _FORMAT_BY_SUFFIX.get(reference_path.suffix.lower())
        if data_format is None:
            errs.add(
                section.at("file"),
                f"cannot tell the format from the suffix {_show(reference_path.suffix)}: "
                "add format: csv, ndjson or json",
            )
    if reference_path is None or data_format is None:
        return None
    return ReferenceConfig(kind="file", path=reference_path, format=data_format)


def _read_bins(value: object, path: str, errs: _Errors) -> NumericBins | None:
    if not isinstance(value, dict):
        errs.add(path, f"expected a mapping, got {_show(value)}")
        return None
    kinds = ("uniform", "edges", "quantile")
    kind_path = _join(path, "kind")
    kind_value = value.get("kind")
    if kind_value is None:
        errs.add(kind_path, "missing required key (uniform, edges or quantile)")
        _Map(value, path, errs, ("kind", "lo", "hi", "count", "edges"))
        return None
    kind = _choice_reader("bins kind", kinds)(kind_value, kind_path, errs)
    if kind is None:
        _Map(value, path, errs, ("kind", "lo", "hi", "count", "edges"))
        return None
    if kind == "uniform":
        section = _Map(value, path, errs, ("kind", "lo", "hi", "count"))
        lo = section.require("lo", _float_reader())
        hi = section.require("hi", _float_reader())
        count = section.require("count", _BIN_COUNT)
        if lo is not None and hi is not None and hi <= lo:
            errs.add(
                section.at("hi"),
                f"must be > lo ({_fmt_number(lo)}), got {_show(section.raw('hi'))}",
            )
            return None
        if lo is None or hi is None or count is None:
            return None
        width = (hi - lo) / count
        if not (math.isfinite(width) and width > 0 and lo + width > lo):
            # Binning computes floor((v - lo) / width): the width must be a usable float.
            errs.add(
                path,
                f"[lo, hi) = [{_fmt_number(lo)}, {_fmt_number(hi)}) cannot be cut into "
                f"{count} bins in floating point",
            )
            return None
        return UniformBins(lo=lo, hi=hi, count=count)
    if kind == "quantile":
        section = _Map(value, path, errs, ("kind", "count"))
        count = section.require("count", _BIN_COUNT)
        return None if count is None else QuantileBins(count=count)
    section = _Map(value, path, errs, ("kind", "edges"))
    edges = section.require("edges", _read_list)
    if edges is None:
        return None
    edges_path = section.at("edges")
    if len(edges) < 2:
        errs.add(edges_path, f"needs at least 2 edges (1 bin), got {len(edges)}")
        return None
    if len(edges) > MAX_BINS + 1:
        errs.add(edges_path, f"must be at most {MAX_BINS + 1} edges, got {len(edges)}")
        return None
    read_edge = _float_reader()
    parsed: list[float] = []
    ok = True
    for index, item in enumerate(edges):
        edge_path = f"{edges_path}[{index}]"
        edge = read_edge(item, edge_path, errs)
        if edge is None:
            ok = False
            continue
        if parsed and ok and edge <= parsed[-1]:
            errs.add(
                edge_path,
                f"edges must increase: must be > the previous edge ({_fmt_number(parsed[-1])}), "
                f"got {_show(item)}",
            )
            ok = False
        parsed.append(edge)
    return EdgesBins(edges=tuple(parsed)) if ok else None


def _read_categories(value: object, path: str, errs: _Errors) -> tuple[str, ...] | None:
    items = _read_list(value, path, errs)
    if items is None:
        return None
    if not items:
        errs.add(path, "must list at least one category")
        return None
    if len(items) > MAX_BINS:
        errs.add(path, f"must list at most {MAX_BINS} categories, got {len(items)}")
        return None
    categories: list[str] = []
    first_at: dict[str, int] = {}
    ok = True
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        # Data values that are ints match by their text (DESIGN §2), so integer-coded
        # categories may be written as YAML ints. YAML 1.1 also reads yes/no/on/off as
        # booleans; taking them silently would turn a "no" category into "false".
        if isinstance(item, bool):
            spellings = "yes, on and true" if item else "no, off and false"
            errs.add(
                item_path,
                f"YAML reads an unquoted {spellings} as the boolean {_show(item)}: "
                "quote the category",
            )
            ok = False
            continue
        if isinstance(item, int):
            text = str(item) if item.bit_length() <= 200 else None
            if text is None:
                errs.add(item_path, "integer too large to be a category")
                ok = False
                continue
        elif isinstance(item, str):
            text = item
        else:
            errs.add(item_path, f"expected a string or an integer, got {_show(item)}")
            ok = False
            continue
        if text == "":
            errs.add(item_path, "must not be empty")
            ok = False
            continue
        if text in first_at:
            errs.add(
                item_path, f"duplicate category {_show(text)} (first at {path}[{first_at[text]}])"
            )
            ok = False
            continue
        first_at[text] = index
        categories.append(text)
    return tuple(categories) if ok else None


_FEATURE_KEYS = ("name", "type", "bins", "categories", "top_k", "smoothing")


@dataclass
class _Monitor:
    """What alert matching needs of a feature, kept even when the rest of its stream is bad."""

    stream: str
    feature: str
    type: FeatureType | None
    window: Window | None


def _read_feature(
    value: object, path: str, errs: _Errors, smoothing_default: float
) -> tuple[FeatureConfig | None, str | None, FeatureType | None]:
    """(the feature or None, its name if valid, its type if valid)."""
    section = _open(value, path, errs, _FEATURE_KEYS)
    if section is None:
        return None, None, None
    errors_before = len(errs)
    name = section.require("name", _read_feature_name)
    type_name = section.require("type", _choice_reader("type", ("numeric", "categorical")))
    feature_type: FeatureType | None = None
    if type_name == "numeric":
        feature_type = "numeric"
    elif type_name == "categorical":
        feature_type = "categorical"
    smoothing = section.read("smoothing", _SMOOTHING)
    if smoothing is None:
        smoothing = smoothing_default
    bins: NumericBins | None = None
    categories: tuple[str, ...] | None = None
    top_k: int | None = None
    if feature_type == "numeric":
        for key in ("categories", "top_k"):
            if key in section:
                errs.add(section.at(key), "only for categorical features")
        bins = section.require("bins", _read_bins)
    elif feature_type == "categorical":
        if "bins" in section:
            errs.add(section.at("bins"), "only for numeric features")
        if "categories" in section and "top_k" in section:
            errs.add(path, "expected exactly one of categories, top_k, got both")
        elif "categories" not in section and "top_k" not in section:
            errs.add(path, "a categorical feature needs categories: [...] or top_k: N")
        else:
            categories = section.read("categories", _read_categories)
            top_k = section.read("top_k", _BIN_COUNT)
    if len(errs) > errors_before or name is None or feature_type is None:
        return None, name, feature_type
    return (
        FeatureConfig(
            name=name,
            type=feature_type,
            smoothing=smoothing,
            bins=bins,
            categories=categories,
            top_k=top_k,
        ),
        name,
        feature_type,
    )


def _read_feature_names(
    value: object, path: str, errs: _Errors, known: Sequence[str] | None, stream: str
) -> tuple[str, ...] | None:
    items = _read_list(value, path, errs)
    if items is None:
        return None
    names: list[str] = []
    first_at: dict[str, int] = {}
    ok = True
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        name = _read_str(item, item_path, errs)
        if name is None:
            ok = False
        elif name in first_at:
            errs.add(
                item_path, f"{_show(name)} is listed twice (first at {path}[{first_at[name]}])"
            )
            ok = False
        elif known is not None and name not in known:
            hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
            errs.add(item_path, f"no feature {_show(name)} in stream {_show(stream)}{suffix}")
            ok = False
        else:
            first_at[name] = index
            names.append(name)
    return tuple(names) if ok else None


def _read_cloudevents(
    value: object, path: str, errs: _Errors, known: Sequence[str] | None, stream: str
) -> CloudEventsMapping | None:
    section = _open(value, path, errs, ("service", "namespace", "inputs", "outputs"))
    if section is None:
        return None
    errors_before = len(errs)
    service = section.require("service", _read_str)
    namespace = section.read("namespace", _read_str)
    inputs = (
        section.read("inputs", lambda v, p, e: _read_feature_names(v, p, e, known, stream)) or ()
    )
    outputs = (
        section.read("outputs", lambda v, p, e: _read_feature_names(v, p, e, known, stream)) or ()
    )
    for index, name in enumerate(outputs):
        if name in inputs:
            # A feature fed by both requests and responses would count each row twice.
            errs.add(
                f"{section.at('outputs')}[{index}]",
                f"{_show(name)} is already an input (inputs[{inputs.index(name)}])",
            )
    if "inputs" not in section and "outputs" not in section:
        errs.add(path, "maps no feature: give inputs: [...] or outputs: [...]")
    if len(errs) > errors_before or service is None:
        return None
    return CloudEventsMapping(service=service, namespace=namespace, inputs=inputs, outputs=outputs)


_STREAM_KEYS = ("name", "time_field", "reference", "window", "smoothing", "features", "cloudevents")


def _read_stream(
    value: object,
    path: str,
    errs: _Errors,
    defaults: _Defaults,
    base_dir: Path,
    monitors: list[_Monitor],
    snapshots_must_exist: bool,
) -> tuple[StreamConfig | None, str | None, bool]:
    """(the stream or None, its name if valid, whether every feature name was readable)."""
    section = _open(value, path, errs, _STREAM_KEYS)
    if section is None:
        return None, None, False
    errors_before = len(errs)
    name = section.require("name", _read_stream_name)
    time_field = section.read("time_field", _read_str)
    reference = section.require(
        "reference", lambda v, p, e: _read_reference(v, p, e, base_dir, snapshots_must_exist)
    )
    window = section.read("window", _read_window) if "window" in section else defaults.window
    smoothing = section.read("smoothing", _SMOOTHING)
    if smoothing is None:
        smoothing = defaults.smoothing
    features: list[FeatureConfig] = []
    names_complete = True
    feature_items = section.require("features", _read_list)
    if feature_items is None:
        names_complete = False
    elif not feature_items:
        errs.add(section.at("features"), "must list at least one feature")
    first_at: dict[str, int] = {}
    for index, item in enumerate(feature_items or ()):
        feature_path = f"{section.at('features')}[{index}]"
        feature, feature_name, feature_type = _read_feature(item, feature_path, errs, smoothing)
        if feature_name is None:
            names_complete = False
            continue
        if feature_name in first_at:
            errs.add(
                _join(feature_path, "name"),
                f"duplicate feature name {_show(feature_name)} "
                f"(first at {section.at('features')}[{first_at[feature_name]}])",
            )
            continue
        first_at[feature_name] = index
        if name is not None:
            monitors.append(_Monitor(name, feature_name, feature_type, window))
        if feature is not None:
            features.append(feature)
    cloudevents: CloudEventsMapping | None = None
    if "cloudevents" in section:
        known = list(first_at) if names_complete else None
        cloudevents = section.read(
            "cloudevents",
            lambda v, p, e: _read_cloudevents(v, p, e, known, name or "?"),
        )
    if len(errs) > errors_before or name is None or reference is None or window is None:
        return None, name, names_complete and name is not None
    stream = StreamConfig(
        name=name,
        reference=reference,
        window=window,
        features=tuple(features),
        time_field=time_field,
        cloudevents=cloudevents,
    )
    return stream, name, names_complete


# --- alerts ------------------------------------------------------------------

# ALERT_METRICS typed as the Literal, so a checked name can become an AlertMetric.
_METRICS: tuple[AlertMetric, ...] = ("kl", "kl_reverse", "js", "psi", "hellinger", "wasserstein")

_ALERT_KEYS = (
    "name",
    "match",
    "metric",
    "threshold",
    "for",
    "clear_below",
    "min_samples",
    "max_p_value",
    "keep_firing_for",
    "severity",
)


def _metric_ceiling(metric: str, log_base: LogBase) -> tuple[float, str] | None:
    """The largest value ``metric`` can take, when it is bounded, and how to say it."""
    if metric == "hellinger":
        return 1.0, "1"
    if metric == "js":
        return (1.0, "1 (log 2 in bits)") if log_base == "2" else (math.log(2), "0.693147 (log 2)")
    return None


def _globs_match(stream_pattern: str, feature_pattern: str, stream: str, feature: str) -> bool:
    return fnmatch.fnmatchcase(stream, stream_pattern) and fnmatch.fnmatchcase(
        feature, feature_pattern
    )


def _read_alert(
    value: object,
    path: str,
    errs: _Errors,
    log_base: LogBase,
    monitors: Sequence[_Monitor],
    monitors_complete: bool,
) -> tuple[AlertRule | None, str | None]:
    section = _open(value, path, errs, _ALERT_KEYS)
    if section is None:
        return None, None
    errors_before = len(errs)
    name = section.require("name", _read_str)
    stream_pattern: str | None = "*"
    feature_pattern: str | None = "*"
    match = _open(section.raw("match"), section.at("match"), errs, ("stream", "feature"))
    if match is None:
        stream_pattern = feature_pattern = None
    else:
        if "stream" in match:
            stream_pattern = match.read("stream", _read_str)
        if "feature" in match:
            feature_pattern = match.read("feature", _read_str)
    metric_name = section.require("metric", _choice_reader("metric", _METRICS))
    metric: AlertMetric | None = next((m for m in _METRICS if m == metric_name), None)
    threshold = section.require("threshold", _float_reader(at_least=0.0))
    for_s = section.read("for", _duration_reader(positive=False))
    clear_below = section.read("clear_below", _float_reader(at_least=0.0))
    min_samples = section.read("min_samples", _NON_NEGATIVE_INT)
    max_p_value = section.read("max_p_value", _read_p_value)
    keep_firing_for_s = section.read("keep_firing_for", _duration_reader(positive=False))
    severity = section.read("severity", _read_str)
    if threshold is not None and clear_below is not None and clear_below > threshold:
        errs.add(
            section.at("clear_below"),
            f"must be <= threshold ({_fmt_number(threshold)}), "
            f"got {_show(section.raw('clear_below'))}",
        )
    if metric is not None and threshold is not None:
        ceiling = _metric_ceiling(metric, log_base)
        if ceiling is not None and threshold >= ceiling[0]:
            errs.add(
                section.at("threshold"),
                f"{metric} never exceeds {ceiling[1]}, so a rule on {metric} > "
                f"{_fmt_number(threshold)} can never fire",
            )
    if stream_pattern is not None and feature_pattern is not None and monitors_complete:
        selected = [
            monitor
            for monitor in monitors
            if _globs_match(stream_pattern, feature_pattern, monitor.stream, monitor.feature)
        ]
        if not selected:
            errs.add(
                section.at("match"),
                f"selects no monitor (stream {_show(stream_pattern)}, "
                f"feature {_show(feature_pattern)})",
            )
        elif metric == "wasserstein" and all(m.type == "categorical" for m in selected):
            shown = ", ".join(f"{m.stream}/{m.feature}" for m in selected[:5])
            errs.add(
                section.at("match"),
                "wasserstein is defined for numeric features only, and this match selects "
                f"only categorical ones ({shown}{', ...' if len(selected) > 5 else ''})",
            )
        elif min_samples is not None and min_samples > 0:
            capacities = [
                m.window.samples if isinstance(m.window, SampleWindow) else None for m in selected
            ]
            if all(c is not None and c < min_samples for c in capacities):
                largest = max(c for c in capacities if c is not None)
                errs.add(
                    section.at("min_samples"),
                    f"every window this rule selects holds at most {largest} rows, "
                    f"so it could never reach {min_samples}",
                )
    if (
        len(errs) > errors_before
        or name is None
        or metric is None
        or threshold is None
        or stream_pattern is None
        or feature_pattern is None
    ):
        return None, name
    rule = AlertRule(
        name=name,
        stream_pattern=stream_pattern,
        feature_pattern=feature_pattern,
        metric=metric,
        threshold=threshold,
        for_s=for_s or 0.0,
        clear_below=clear_below,
        min_samples=min_samples or 0,
        max_p_value=max_p_value,
        keep_firing_for_s=keep_firing_for_s or 0.0,
        severity=severity or "warning",
    )
    return rule, name


def _read_p_value(value: object, path: str, errs: _Errors) -> float | None:
    number = _float_reader()(value, path, errs)
    if number is not None and not 0.0 < number <= 1.0:
        errs.add(path, f"must be in (0, 1], got {_show(value)}")
        return None
    return number


# --- the document --------------------------------------------------------------

_TOP_KEYS = ("server", "ingest", "engine", "state", "defaults", "streams", "alerts")


def parse_config(
    data: object,
    *,
    base_dir: Path,
    source: Path | None = None,
    snapshots_must_exist: bool = True,
) -> Config:
    """Validate a document already read from YAML (or built in Python) into a :class:`Config`.

    ``base_dir`` is the folder relative paths resolve against (the config
    file's folder); ``source`` is recorded as ``Config.source``. Reference
    files and snapshots, and ``server.auth_token_file``, must exist; no file
    is read. With ``snapshots_must_exist=False`` a missing reference snapshot
    is no error: the daemon passes it, because a snapshot is state it may
    have moved aside itself (unusable at an earlier start) and a start or
    reload must not fail on that; it logs the stream as having no reference
    instead (or uses the copy its checkpoint kept). ``driftmon check`` keeps
    the default and reports the missing file.

    ``ingest.workers`` absent is stored as 0, meaning the core count
    (see :attr:`IngestConfig.worker_count`); ``state.dir`` absent is ``None``:
    no checkpoints. ``log_base`` is stored as ``"e"`` or ``"2"``. A
    ``null`` value means the same as leaving the key out.

    Raises :class:`ConfigError` listing every problem, for any input:
    whatever ``data`` holds, nothing else is raised.
    """
    errs = _Errors()
    if data is None:
        raise ConfigError(
            ["<file>: the document is empty: expected a mapping (server:, streams:, alerts:, ...)"]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [f"<file>: expected a mapping (server:, streams:, alerts:, ...), got {_show(data)}"]
        )
    root = _Map(data, "", errs, _TOP_KEYS)
    server = _parse_server(root.raw("server"), errs, base_dir)
    ingest = _parse_ingest(root.raw("ingest"), errs)
    engine = _parse_engine(root.raw("engine"), errs)
    state = _parse_state(root.raw("state"), errs, base_dir)
    defaults = _parse_defaults(root.raw("defaults"), errs)

    streams: list[StreamConfig] = []
    monitors: list[_Monitor] = []
    monitors_complete = True
    stream_items = root.require("streams", _read_list)
    if stream_items is None:
        monitors_complete = False
    elif not stream_items:
        errs.add("streams", "must list at least one stream")
        monitors_complete = False  # "selects no monitor" would only repeat this error
    stream_first_at: dict[str, int] = {}
    service_first_at: dict[tuple[str, str | None], int] = {}
    for index, item in enumerate(stream_items or ()):
        stream_path = f"streams[{index}]"
        stream_monitors: list[_Monitor] = []
        stream, name, names_complete = _read_stream(
            item, stream_path, errs, defaults, base_dir, stream_monitors, snapshots_must_exist
        )
        monitors_complete = monitors_complete and names_complete
        if name is None:
            continue
        if name in stream_first_at:
            errs.add(
                f"{stream_path}.name",
                f"duplicate stream name {_show(name)} (first at streams[{stream_first_at[name]}])",
            )
            continue
        stream_first_at[name] = index
        monitors.extend(stream_monitors)
        if stream is not None and stream.cloudevents is not None:
            # An event must have one home: two streams may not claim the same service.
            service = (stream.cloudevents.service, stream.cloudevents.namespace)
            if service in service_first_at:
                errs.add(
                    f"{stream_path}.cloudevents.service",
                    f"service {_show(service[0])} (namespace {_show(service[1])}) is already "
                    f"mapped by streams[{service_first_at[service]}]",
                )
            else:
                service_first_at[service] = index
        if stream is not None:
            streams.append(stream)

    alerts: list[AlertRule] = []
    alert_items = root.read("alerts", _read_list) or []
    alert_first_at: dict[str, int] = {}
    for index, item in enumerate(alert_items):
        alert_path = f"alerts[{index}]"
        rule, name = _read_alert(
            item, alert_path, errs, engine.log_base, monitors, monitors_complete
        )
        if name is not None:
            if name in alert_first_at:
                errs.add(
                    f"{alert_path}.name",
                    f"duplicate alert name {_show(name)} (first at alerts[{alert_first_at[name]}])",
                )
                continue
            alert_first_at[name] = index
        if rule is not None:
            alerts.append(rule)

    if errs.lines:
        raise ConfigError(errs.lines)
    return Config(
        streams=tuple(streams),
        alerts=tuple(alerts),
        server=server,
        ingest=ingest,
        engine=engine,
        state=state,
        source=source,
    )


# --- files -------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, snapshots_must_exist: bool = True) -> Config:
    """Read and validate the YAML config file at ``path``.

    The file is parsed with ``yaml.safe_load`` (no tags that build objects);
    it is also composed (``yaml.compose`` with the safe loader, which builds
    nodes only) to find keys written twice in one mapping, which YAML would
    otherwise let the last one win silently. Relative paths inside resolve
    against the file's folder. See :func:`parse_config` for what is stored
    and for ``snapshots_must_exist``.

    Raises :class:`ConfigError` with every problem found: an unreadable file,
    a YAML syntax error (``<file>: line 3, column 7: ...``), and everything
    :func:`parse_config` reports.
    """
    file_path = Path(path)
    try:
        raw = file_path.read_bytes()
    except OSError as exc:
        reason = _one_line(exc.strerror or str(exc))
        raise ConfigError([f"<file>: cannot read {_show_path(file_path)}: {reason}"]) from None
    try:
        data = yaml.safe_load(raw)
        duplicates = _duplicate_keys(raw)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([f"<file>: {_yaml_problem(exc)}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"<file>: {_one_line(str(exc))}"]) from None
    except RecursionError:
        raise ConfigError(["<file>: the document is nested too deeply"]) from None
    except Exception as exc:  # noqa: BLE001 - e.g. an int too long to convert: still a config error
        raise ConfigError([f"<file>: cannot read the YAML: {_one_line(str(exc))}"]) from None
    absolute = file_path.absolute()
    try:
        config = parse_config(
            data,
            base_dir=absolute.parent,
            source=absolute,
            snapshots_must_exist=snapshots_must_exist,
        )
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.errors) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = exc.problem or "YAML syntax error"
    context = f" ({exc.context})" if exc.context else ""
    return _one_line(f"{where}{problem}{context}")


def _duplicate_keys(raw: bytes) -> list[str]:
    """``path: duplicate key`` for every key written twice in one mapping of the document."""
    root = yaml.compose(raw, Loader=yaml.SafeLoader)
    found: list[tuple[int, str]] = []
    seen: set[int] = set()
    # Iterative walk: a document may be deep, and aliases may make it a graph.
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            children: list[tuple[yaml.Node, str]] = []
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str) or key == "<<":
                    continue
                key_path = _join(path, key)
                if key in first_line:
                    line = key_node.start_mark.line + 1
                    found.append(
                        (
                            line,
                            f"{key_path}: duplicate key (first at line {first_line[key]}, "
                            f"again at line {line})",
                        )
                    )
                else:
                    first_line[key] = key_node.start_mark.line + 1
                children.append((value_node, key_path))
            stack.extend(reversed(children))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(
                (item, f"{path}[{index}]") for index, item in reversed(list(enumerate(node.value)))
            )
    return [message for _, message in sorted(found, key=lambda pair: pair[0])]


# --- summaries -----------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe(config: Config) -> str:
    """A one-line summary such as ``"2 streams, 7 monitors, 1 alert rule"``."""
    monitors = sum(len(stream.features) for stream in config.streams)
    return (
        f"{_plural(len(config.streams), 'stream')}, {_plural(monitors, 'monitor')}, "
        f"{_plural(len(config.alerts), 'alert rule')}"
    )


def match_monitors(rule: AlertRule, config: Config) -> list[tuple[str, str]]:
    """The (stream, feature) pairs whose names ``rule``'s globs match, in config order.

    Globs are ``fnmatch.fnmatchcase`` patterns (``*``, ``?``, ``[seq]``),
    case-sensitive, matched against the whole name. Every monitor matches;
    whether a metric exists for it (``wasserstein`` is absent for categorical
    monitors) is the engine's business.
    """
    return [
        (stream.name, feature.name)
        for stream in config.streams
        for feature in stream.features
        if _globs_match(rule.stream_pattern, rule.feature_pattern, stream.name, feature.name)
    ]
