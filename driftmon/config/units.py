"""Durations (``1h30m``, as Prometheus writes them) and sizes (``16MiB``)."""

from __future__ import annotations

import math
import re

from driftmon.config.errors import did_you_mean, show

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
        raise ValueError(f'expected a duration like "15s", got {show(text)}')
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ValueError(f"must be a finite duration, got {show(text)}")
        if seconds < 0:
            raise ValueError(f"must be >= 0, got {show(text)}")
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
                raise ValueError(f'expected a duration like "15s", got {show(text)}')
            last_rank = ranks.index(part.group(2))
            seconds += float(part.group(1)) * _DURATION_UNITS_S[part.group(2)]
            position = part.end()
        if position == 0:
            raise ValueError(f'expected a duration like "15s", got {show(text)}')
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {show(text)}")
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
        raise ValueError(f'expected a size like "16MiB", got {show(text)}')
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"must be >= 0, got {show(text)}")
        return text
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f'expected a size like "16MiB", got {show(text)}')
    number, unit = match.group(1), match.group(2) or "B"
    if unit not in _SIZE_UNITS_BYTES:
        # Unit typos are mostly case ("mib", "Mb"): suggest by case first.
        same_letters = [known for known in _SIZE_UNITS_BYTES if known.lower() == unit.lower()]
        hint = (
            f' (did you mean "{same_letters[0]}"?)'
            if same_letters
            else did_you_mean(unit, list(_SIZE_UNITS_BYTES))
        )
        raise ValueError(f'unknown size unit "{unit}"{hint}')
    if "." in number:
        whole, fraction = number.split(".")
        # Exact arithmetic: floats would turn "1.1MB" into 1100000.0000000002 bytes.
        numerator = int(whole + fraction) * _SIZE_UNITS_BYTES[unit]
        denominator = 10 ** len(fraction)
        if numerator % denominator:
            raise ValueError(f"is not a whole number of bytes: {show(text)}")
        return numerator // denominator
    return int(number) * _SIZE_UNITS_BYTES[unit]
