"""One JSON loader for everything read from a request or a file.

orjson first; the standard library only where orjson refuses (``NaN``,
``Infinity``, integers past 64 bits), with orjson's other rules kept. One
nesting bound (``max_depth``) and one way of naming where a problem is
(line, column in characters, byte offset): rows bodies, data files and
CloudEvents payloads all go through :func:`load_document`. docs/ingest.md
lists the formats and messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "BodyError",
    "Source",
    "UnsupportedMediaType",
    "check_depth",
    "field_ref",
    "json_type",
    "load_document",
    "load_json",
    "strip_bom",
]

DEFAULT_MAX_DEPTH: Final = 64
"""Default bound on container nesting in a JSON document (see the module docstring)."""

UTF8_BOM: Final = b"\xef\xbb\xbf"
_MESSAGE_NAME_CHARS: Final = 60
_SCAN_BLOCK: Final = 1 << 20

_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
# Every escape sequence of a JSON text, in order; a \uXXXX escape keeps its digits.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NOT_STRUCTURAL: Final = bytes(code for code in range(256) if code not in b'"[]{}')
# What the standard library decodes and orjson refuses: where orjson stopped at one of
# these, an error the standard library finds further on is the one to report.
_STDLIB_ONLY_AT = re.compile(r"NaN|-?Infinity|-?[0-9]")
_STDLIB_ONLY_BEFORE = re.compile(r"-Infinity")
ORJSON_MAX_DEPTH: Final = 1024


class BodyError(ValueError):
    """A body or data file that does not parse; nothing of it is applied.

    The message names the place of the problem: the line and column (from 1,
    columns in characters) of a JSON syntax error, the byte offset (from 0) of
    invalid UTF-8, the row (from 1) or NDJSON line of a row that is not an
    object, or the ``columns.<feature>`` entry at fault. Messages about files
    start with the file's path. The HTTP server answers it with a 400.
    """


class UnsupportedMediaType(BodyError):
    """A ``Content-Type`` that :func:`parse_body` does not read (the server answers 415).

    Raised for a missing header, a media type outside :data:`JSON_MEDIA_TYPES`
    and :data:`NDJSON_MEDIA_TYPES`, or a ``charset`` other than UTF-8.
    """


# --- where an error is: positions in bodies and files -------------------------


@dataclass(frozen=True)
class Source:
    """The bytes being parsed and how to name a place in them in a message.

    ``data`` is a whole body, a whole file, or a run of lines of a file that
    starts at line ``first_line`` and byte ``base_offset`` of that file.
    """

    data: bytes
    label: str = "body"
    prefix: str = ""
    first_line: int = 1
    base_offset: int = 0
    empty_message: str = "empty body"
    # A CloudEvents payload names a place as it always has: "data: invalid JSON at line 1,
    # column 3: detail" (a body: "line 1, column 3: invalid JSON (detail)"), at the place
    # the standard library's decoder stopped (a body: the later of orjson's and its).
    payload: bool = False

    def error(self, message: str) -> BodyError:
        return BodyError(self.prefix + message)

    def whole(self, message: str) -> BodyError:
        """An error about the document as a whole."""
        return BodyError(f"{self.label}: {message}")

    def line_column(self, offset: int) -> tuple[int, int]:
        """Line and character column (both from 1) of byte ``offset`` of ``data``."""
        line_start = self.data.rfind(b"\n", 0, offset) + 1
        if line_start == 0 and self.base_offset == 0 and self.data.startswith(UTF8_BOM):
            # A byte order mark is invisible in an editor: columns start after it.
            line_start = min(len(UTF8_BOM), offset)
        line = self.first_line + self.data.count(b"\n", 0, offset)
        column = len(self.data[line_start:offset].decode("utf-8", "replace")) + 1
        return line, column

    def at(self, offset: int, problem: str, detail: str = "") -> BodyError:
        """An error at byte ``offset`` of ``data``."""
        line, column = self.line_column(offset)
        if self.payload:
            return self.error(
                f"{problem} at line {line}, column {column}" + (f": {detail}" if detail else "")
            )
        return self.error(
            f"line {line}, column {column}: {problem}" + (f" ({detail})" if detail else "")
        )

    def bad_utf8(self, offset: int) -> BodyError:
        """Invalid UTF-8 starting at byte ``offset`` of ``data``."""
        if self.payload:
            byte = self.base_offset + offset
            return self.error(f"invalid UTF-8 at byte {byte} (0x{self.data[offset]:02x})")
        line, column = self.line_column(offset)
        return self.error(
            f"line {line}, column {column}, byte {self.base_offset + offset}: "
            f"invalid UTF-8 (0x{self.data[offset]:02x})"
        )


def json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def field_ref(container: str, name: str) -> str:
    """``columns.age``, or ``columns["odd name"]`` for a name that is not plain."""
    if len(name) <= _MESSAGE_NAME_CHARS and _PLAIN_NAME.fullmatch(name):
        return f"{container}.{name}"
    shown = name if len(name) <= _MESSAGE_NAME_CHARS else name[:_MESSAGE_NAME_CHARS] + "..."
    return f"{container}[{json.dumps(shown)}]"


# --- nesting depth -------------------------------------------------------------


def _without_escaped_quotes(data: bytes) -> bytes:
    """``data`` with every escaped backslash and escaped quote blanked, offsets kept.

    Left to right, ``\\\\`` pairs go first, so a backslash left before a quote is
    the odd one of its run and escapes it; then every remaining quote delimits
    a string. Two C-speed passes and one copy, whatever the text.
    """
    if b"\\" not in data:
        return data
    return data.replace(b"\\\\", b"__").replace(b'\\"', b"__")


def _first_over(codes: np.ndarray, max_depth: int) -> int | None:
    """Index of the first bracket in ``codes`` that opens a container deeper than ``max_depth``.

    ``codes`` are the bytes of a JSON text without escaped quotes; brackets
    between quotes do not count. Blocks of ``_SCAN_BLOCK`` bytes bound the
    temporaries (about ten bytes per input byte of a block).
    """
    in_string = 0
    depth = 0
    for start in range(0, codes.size, _SCAN_BLOCK):
        block = codes[start : start + _SCAN_BLOCK]
        # uint8 wrap-around keeps the parity, which is all that is needed.
        inside = np.cumsum(block == 0x22, dtype=np.uint8) & 1
        if in_string:
            inside ^= 1
        steps = (block == 0x5B).view(np.int8) + (block == 0x7B).view(np.int8)
        steps -= (block == 0x5D).view(np.int8)
        steps -= (block == 0x7D).view(np.int8)
        steps[inside.view(np.bool_)] = 0
        levels = np.cumsum(steps, dtype=np.int64)
        levels += depth
        too_deep = levels > max_depth
        if too_deep.any():
            return start + int(too_deep.argmax())
        depth, in_string = int(levels[-1]), int(inside[-1])
    return None


def _first_too_deep(data: bytes, max_depth: int) -> int | None:
    """Byte offset of the first bracket opening a container deeper than ``max_depth``.

    Brackets inside strings do not count. ``None`` when no container is too
    deep. Vectorised; on text that is not valid JSON the answer is a best
    effort, never an exception.
    """
    data = _without_escaped_quotes(data)
    # Deleting every byte but quotes and brackets (C speed) leaves a small text to scan
    # for the answer; only on the way to an error is the place worth a pass over every byte.
    if (
        _first_over(np.frombuffer(data.translate(None, _NOT_STRUCTURAL), np.uint8), max_depth)
        is None
    ):
        return None
    return _first_over(np.frombuffer(data, np.uint8), max_depth)


def check_depth(
    src: Source, work: bytes, max_depth: int, containers: int, structural_depth: int
) -> None:
    """Raise when ``work`` (a parsed document) nests deeper than ``max_depth``.

    ``containers`` is the number of containers the caller knows the document
    holds and ``structural_depth`` their nesting. When the bytes hold no more
    opening brackets than that, those brackets are exactly the known
    containers (brackets inside strings and nested values would add to the
    count), so the depth is known without a scan.
    """
    codes = np.frombuffer(work, dtype=np.uint8)
    open_brackets = int(np.count_nonzero(codes == 0x7B)) + int(np.count_nonzero(codes == 0x5B))
    if open_brackets <= max_depth:
        return
    if open_brackets == containers and structural_depth <= max_depth:
        return
    offset = _first_too_deep(work, max_depth)
    if offset is not None:
        raise src.at(offset, f"nesting deeper than {max_depth} levels")


# --- one JSON document -----------------------------------------------------------


def _json_int(digits: str) -> int | float:
    """Decode a JSON integer as orjson does: 64-bit ints stay ints, larger ones are floats."""
    if len(digits) <= 20:
        value = int(digits)
        if -(2**63) <= value < 2**64:
            return value
    # float() of a digit string has no length limit and gives ±inf past the double range.
    return float(digits)


def _unpaired_surrogate(text: str) -> int | None:
    """Character offset of the first ``\\uD800``-``\\uDFFF`` escape not in a valid pair."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    pending_high: int | None = None
    pending_end = -1
    for match in _ESCAPE.finditer(text):
        digits = match.group(1)
        code = int(digits, 16) if digits is not None else -1
        is_low = 0xDC00 <= code <= 0xDFFF
        if pending_high is not None:
            if is_low and match.start() == pending_end:
                pending_high = None
                continue
            return pending_high
        if 0xD800 <= code <= 0xDBFF:
            pending_high, pending_end = match.start(), match.end()
        elif is_low:
            return match.start()
    return pending_high


def _stdlib_only_at(text: str, position: int) -> bool:
    """Whether orjson stopped at ``position`` on a literal or number the standard library reads."""
    if _STDLIB_ONLY_AT.match(text, position):
        return True
    return position > 0 and _STDLIB_ONLY_BEFORE.match(text, position - 1) is not None


def _load_with_stdlib(
    src: Source, doc: bytes, start: int, failure: orjson.JSONDecodeError, max_depth: int
) -> object:
    """Decode ``doc`` (at byte ``start`` of ``src.data``) after orjson refused it.

    Raises the :class:`BodyError` that places the first real problem: the
    later of orjson's and the standard library's error positions, since
    orjson stops at a ``NaN`` the standard library accepts.
    """
    try:
        text = doc.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise src.bad_utf8(start + exc.start) from None
    if not text.strip(" \t\r\n"):
        raise src.error(src.empty_message)
    # orjson never decodes deeper documents, so neither does the fallback.
    depth_limit = min(max_depth, ORJSON_MAX_DEPTH)
    too_deep = _first_too_deep(doc, depth_limit)
    if too_deep is not None:
        raise src.at(start + too_deep, f"nesting deeper than {depth_limit} levels")

    def at_char(position: int, detail: str) -> BodyError:
        return src.at(start + len(text[:position].encode("utf-8")), "invalid JSON", detail)

    try:
        value = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        if src.payload or (exc.pos > failure.pos and _stdlib_only_at(text, failure.pos)):
            # A payload's messages have always named the standard library's place and words.
            raise at_char(exc.pos, exc.msg) from None
        raise at_char(failure.pos, failure.msg) from None
    except RecursionError:
        # Nesting close to orjson's limit can still exceed the interpreter's recursion limit.
        raise src.error("invalid JSON (nesting too deep to decode with NaN or Infinity)") from None
    except ValueError as exc:
        raise at_char(failure.pos, str(exc)) from None
    unpaired = _unpaired_surrogate(text)
    if unpaired is not None:
        raise at_char(unpaired, "unpaired surrogate escape")
    return value


def load_document(src: Source, doc: bytes, start: int, max_depth: int) -> tuple[object, bool]:
    """Decode one JSON document; the flag says whether its depth was already checked."""
    try:
        return orjson.loads(doc), False
    except orjson.JSONDecodeError as exc:
        return _load_with_stdlib(src, doc, start, exc, max_depth), True


def strip_bom(src: Source) -> bytes:
    """``src.data`` with a leading byte order mark blanked (offsets stay those of ``data``)."""
    if src.base_offset == 0 and src.data.startswith(UTF8_BOM):
        return b"   " + src.data[len(UTF8_BOM) :]
    return src.data


def load_json(data: bytes, where: str, max_depth: int = ORJSON_MAX_DEPTH) -> object:
    """Any JSON document (a CloudEvents event, batch or payload), messages prefixed ``where``.

    The same rules as a rows body: a leading byte order mark is skipped,
    ``NaN``/``Infinity`` and huge integers are read, nesting deeper than
    ``max_depth`` is an error. CloudEvents payloads keep the bound they have
    always had, orjson's 1024 levels, now on the ``NaN`` path too. Raises
    :class:`BodyError`.
    """
    src = Source(
        data,
        label=where,
        prefix=f"{where}: ",
        empty_message="empty, expected a JSON payload",
        payload=True,
    )
    work = strip_bom(src)
    if not work.strip(b" \t\r\n"):
        raise src.error(src.empty_message)
    value, depth_checked = load_document(src, work, 0, max_depth)
    if not depth_checked and max_depth < ORJSON_MAX_DEPTH:
        # Nothing known about the document's shape: any bracket may be a nested container.
        check_depth(src, work, max_depth, containers=-1, structural_depth=0)
    return value
