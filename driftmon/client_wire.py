"""The client's wire format: the ingest URL, rows encoded as one body, what answers say.

Pure functions, no state: :mod:`driftmon.client` sends what :func:`encode_rows`
makes to the :class:`Target` that :func:`ingest_target` checked, and reads answers
with :func:`retry_after_s` and :func:`error_text`.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

MAX_RETRY_AFTER_S = 300.0
"""The longest ``Retry-After`` honoured; a larger (or garbled) one is cut to this."""


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True)
class Target:
    """Where batches go: a parsed, checked ``url`` and ``stream``."""

    url: str
    https: bool
    host: str
    port: int | None
    path: str


def ingest_target(url: object, stream: object) -> Target:
    """Check ``url`` and ``stream`` and build the ingest URL; ``ValueError`` names the argument."""
    if not isinstance(url, str):
        raise ValueError(f"url: expected a string like 'http://127.0.0.1:9108', got {url!r}")
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream: expected a non-empty stream name, got {stream!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url: expected an http:// or https:// URL, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url: no host in {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"url: give the daemon's base URL, without ?query or #fragment: {url!r}")
    if parts.username or parts.password:
        raise ValueError("url: credentials in the URL are not supported; use token=...")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url: bad port in {url!r}") from None
    prefix = parts.path.rstrip("/")
    path = f"{prefix}/v1/streams/{quote(stream, safe='')}/rows"
    return Target(url, parts.scheme == "https", parts.hostname, port, path)


def check_positive(name: str, value: object, *, integer: bool) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number of seconds"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")
    assert isinstance(value, int | float)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: must be > 0 and finite, got {value!r}")


# --- encoding -----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-friendly stand-in for a value neither encoder knows (the ``default`` hook).

    numpy scalars and arrays become Python numbers and lists, enums their
    value, dates ISO 8601 text, other numbers (``Decimal``, ``Fraction``)
    floats; anything else its ``str()``, which the daemon counts as
    ``invalid`` in a numeric feature rather than losing the row.
    """
    if isinstance(value, enum.Enum):
        return value.value
    for method in ("item", "tolist"):  # numpy scalars, then arrays
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return convert()
            except (TypeError, ValueError):
                pass
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "__float__"):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    return str(value)


def _is_non_finite(value: object) -> bool:
    """Whether ``value`` is a scalar NaN or ±Infinity (floats, numpy floats, Decimals)."""
    if value is None or isinstance(value, str | int):
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if hasattr(value, "__float__"):
        try:
            return not math.isfinite(float(value))
        except (TypeError, ValueError, OverflowError):
            return False
    return False


def encode_rows(rows: list[dict[Any, Any]]) -> bytes:
    """One ingest body for ``rows``: ``{"columns": {...}}`` over the union of their keys.

    Columns follow the order in which keys first appear; a row without a key
    has ``null`` there. Rows with no key at all are sent as a JSON array of
    empty objects instead (a columns object with no column holds no rows).
    NaN and ±Infinity are written as the literals ``NaN``/``Infinity``/
    ``-Infinity`` (standard-library ``json``), which the daemon accepts.
    Values neither encoder knows go through :func:`_plain`.

    Raises ``ValueError`` when the rows cannot be encoded at all (a
    circular reference). A string with a lone surrogate is sent escaped;
    the daemon answers that body with a 400.
    """
    names = dict.fromkeys(itertools.chain.from_iterable(rows))
    document: object
    if names:
        columns = {name: list(map(dict.get, rows, itertools.repeat(name))) for name in names}
        document = {"columns": columns}
        scalars: Iterable[object] = itertools.chain.from_iterable(columns.values())
    else:
        document = rows
        scalars = ()
    try:
        body = orjson.dumps(document, default=_plain, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        body = b""
    # orjson writes NaN and ±Infinity as null: where it wrote no null there was none.
    if body and (b"null" not in body or not any(map(_is_non_finite, scalars))):
        return body
    try:
        text = json.dumps(document, default=_plain, allow_nan=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"rows cannot be encoded as JSON: {exc}") from None
    return text.encode("utf-8", "surrogatepass")


# --- HTTP answers -------------------------------------------------------------------


def retry_after_s(header: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait, or ``None`` when absent or unreadable.

    Takes delta-seconds (``"1"``) or an HTTP date; the result is clamped to
    ``[0, MAX_RETRY_AFTER_S]``. ``now`` (Unix seconds) is for tests.
    """
    if header is None:
        return None
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def error_text(status: int, reason: str, body: bytes) -> str:
    """``HTTP 404: unknown stream 'x'`` from an answer (the daemon's ``{"error": ...}``)."""
    message = ""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        message = body.decode("utf-8", "replace").strip()
    else:
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            message = decoded["error"]
    message = " ".join(message.split())[:300] or reason
    return f"HTTP {status}: {message}"
