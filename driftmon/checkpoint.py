"""Checkpoints: the engine's state on disk, written atomically, verified on load.

A checkpoint holds everything :meth:`driftmon.engine.Engine.export_state`
returns: every stream's reference (frozen bin layouts and counts), window
panes or sample ring, warmup progress (rows collected so far, raw values
included) and the alert states with their pending / firing / cleared times.

File layout of ``<state.dir>/checkpoint.driftmon`` (format version 1)::

    DRIFTMON-CHECKPOINT\\n                                  magic line
    {"version":1,"sha256":"<64 hex>","length":N}\\n        header line (exactly this JSON)
    <N bytes of payload>                                   nothing after it

The payload is an uncompressed ``.npz`` archive (a zip of ``.npy`` files, as
``numpy.savez`` writes it); ``sha256`` is the SHA-256 of those N bytes. The
archive holds:

- ``meta``: uint8, the UTF-8 bytes of a JSON document ``{"saved_at",
  "writer", "streams": [...], "alerts": [...]}``. Each stream entry has its
  ``name``, ``fingerprint``, ``reference`` (``null`` or ``{"rows", "binners"}``,
  a binner being ``{"type": "numeric", "kind": "uniform"|"edges", "edges":
  [floats]}`` or ``{"type": "categorical", "categories": [strings]}``),
  ``window`` (``null``, ``{"kind": "time", "length_s", "panes", "layouts"}`` or
  ``{"kind": "samples", "samples", "layouts"}``, a layout being ``[feature,
  layout key, offset]`` with the key ``["numeric", [edges]]`` or
  ``["categorical", [categories]]``) and ``warmup_rows``. Each alert entry
  has the ``rule`` (every :class:`~driftmon.config.AlertRule` field by name),
  ``stream``, ``feature``, ``state`` (0 inactive, 1 pending, 2 firing) and
  ``active_at``, ``fired_at``, ``cleared_at`` (seconds, ``NaN`` when unset).
  An optional ``history`` entry ``{"monitors": [[stream, feature, layout
  key], ...]}`` describes the arrays ``history/times`` (float64 ``[n]``,
  oldest first), ``history/values`` (float32 ``[n, monitors, 7]``, the
  metrics of :data:`driftmon.history.HISTORY_METRICS`), ``history/samples``
  (float64 ``[n, monitors]``) and ``history/firing`` (uint8 ``[n,
  monitors]``). Files written before it existed have no ``history`` entry and
  load with an empty history.
- ``streams/<i>/reference/<j>``: float64 reference counts of feature ``j``
  of stream ``i`` (the index in ``meta.streams``).
- ``streams/<i>/window/pane_counts`` (float64 ``[panes, bins]``) and
  ``streams/<i>/window/current_pane`` (int64 ``[1]``, -1 for none) of a time
  window; ``streams/<i>/window/ring`` (int32 ``[samples, features]``) and
  ``streams/<i>/window/head`` (int64 ``[head, filled]``) of a sample window.
- ``streams/<i>/warmup``: uint8, UTF-8 JSON ``[[feature, [values...]], ...]``,
  the raw warmup values. They are decoded JSON (``None``, bools, ints, floats
  including NaN and ±Infinity, strings, lists, string-keyed dicts) and
  round-trip exactly: an int of more than :data:`_BIG_INT_BITS` bits is
  written as ``{"$int": "<hex>"}`` (Python refuses to print very long ints in
  decimal), and a dict with a key starting with ``$`` as ``{"$dict": [[key,
  value], ...]}``, so no user value is mistaken for a tag. Tuples come back as
  lists (JSON bodies never hold tuples).

Loading executes nothing: the archive is read with :mod:`zipfile` and each
member's ``.npy`` header is parsed by numpy's header reader (a literal
parser); only the plain numeric dtypes listed above are accepted, so an object
array (which would need unpickling) is refused from its header, before any of
its bytes are looked at. Every structural property :meth:`Engine.adopt
<driftmon.engine.Engine.adopt>` relies on is checked (shapes, dtypes, finite
non-negative counts, ring indices inside their monitor's bins, contiguous
layouts, alert times consistent with their state...), so a file with a right
checksum but a wrong structure fails as cleanly as a flipped bit.

Writes go through :func:`driftmon.storage.write_atomically` (a temporary
``.checkpoint.driftmon.tmp-<pid>-<random>`` of mode 0600, since warmup rows are
user data; fsync, rename, fsync of the folder). A crash at any point leaves the previous
checkpoint whole; :func:`remove_stale_temporaries` removes what it left.

A checkpoint that fails any check is renamed aside
(``checkpoint.driftmon.corrupt-20261125T011500Z``) with an error logged on
``driftmon.checkpoint``: never overwritten, never deleted, never fatal.

Writer and reader are one module of about 1 100 lines on purpose: the
format is its contract, and each field's encoding sits beside the checks
that read it back (as the standard library keeps ``zipfile`` whole), so a
format change is made, and reviewed, in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import mmap
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, NoReturn, cast

import numpy as np

from driftmon import __version__, storage
from driftmon.alerting import AlertTable
from driftmon.binning import CategoricalBinner, NumericBinner
from driftmon.config import (
    ALERT_METRICS,
    P_VALUE_CORRECTIONS,
    AlertRule,
    SampleWindow,
    TimeWindow,
)
from driftmon.engine import EngineState, StreamState, WindowState
from driftmon.files import NotARegularFile, open_regular
from driftmon.history import HISTORY_METRICS, HistoryState
from driftmon.reference import Binner, Reference, layout_key
from driftmon.storage import remove_temporaries

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "LoadedCheckpoint",
    "move_aside",
    "read_checkpoint",
    "remove_stale_temporaries",
    "restore_or_move_aside",
    "write_checkpoint",
]

logger = logging.getLogger("driftmon.checkpoint")

CHECKPOINT_NAME: Final = "checkpoint.driftmon"
"""File name of the checkpoint inside ``state.dir``."""

FORMAT_VERSION: Final = 1
"""The checkpoint format this module writes and reads."""

MAGIC: Final = b"DRIFTMON-CHECKPOINT\n"
_TEMPORARY_PREFIX: Final = f".{CHECKPOINT_NAME}.tmp-"
# The header line is tiny; a missing newline within this many bytes is corruption.
_MAX_HEADER_BYTES: Final = 1024
_CHUNK_BYTES: Final = 1 << 20  # how much of a checkpoint is copied or hashed at a time
# Python refuses int <-> decimal str beyond 640..4300 digits (sys.int_max_str_digits);
# 2000 bits is about 603 digits, under the lowest limit a user can set.
_BIG_INT_BITS: Final = 2000
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
_HEX_INT = re.compile(r"-?[0-9a-f]+\Z")

# Window arrays by window kind: name -> (dtype, ndim), as the windows export them.
_WINDOW_ARRAYS: Final[Mapping[str, Mapping[str, tuple[np.dtype, int]]]] = {
    "time": {"pane_counts": (np.dtype(np.float64), 2), "current_pane": (np.dtype(np.int64), 1)},
    "samples": {"ring": (np.dtype(np.int32), 2), "head": (np.dtype(np.int64), 1)},
}
_PARSE_ERRORS: Final = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    MemoryError,
    EOFError,
    zipfile.BadZipFile,
)
_NOT_REACHED: Final = -1  # driftmon.window.NOT_REACHED: a feature the row did not reach


class CheckpointError(Exception):
    """A checkpoint file that cannot be used; the message says why (for the logs)."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read and verified by :func:`read_checkpoint`.

    ``saved_at`` is the ``saved_at`` given to :func:`write_checkpoint`
    (seconds on the daemon's clock); ``path`` is the file it was read from.
    """

    state: EngineState
    saved_at: float
    path: Path


# --- writing ---------------------------------------------------------------------


def write_checkpoint(state_dir: Path, state: EngineState, *, saved_at: float) -> Path:
    """Write ``state`` as ``state_dir / CHECKPOINT_NAME`` atomically; returns that path.

    ``state_dir`` is created when missing. The file is written to a temporary
    file in ``state_dir`` (flushed and fsynced), renamed over the checkpoint
    with :func:`os.replace`, then the folder is fsynced. On any failure the
    temporary file is removed and the previous checkpoint is left as it was.
    Reads ``state`` only (the caller may run this in a thread while the
    engine goes on). ``saved_at`` is seconds on the daemon's clock, finite.

    Raises ``OSError`` for I/O failures and ``ValueError`` for a state that
    cannot be stored (a warmup value that is not decoded JSON, a non-finite
    ``saved_at``, window arrays of an unknown shape).
    """
    saved_at = float(saved_at)
    if not math.isfinite(saved_at):
        raise ValueError(f"saved_at must be a finite number of seconds, got {saved_at!r}")
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CHECKPOINT_NAME
    # The archive goes to a file of its own first: its checksum and length lead the
    # checkpoint, and writing it to disk in chunks (not to memory) keeps a large
    # {samples: N} ring from being copied whole two or three times over.
    payload_path = storage.new_temporary(path, "-payload")
    try:
        with _create(payload_path, "w+b") as payload:
            _encode_payload(state, saved_at, payload)
            payload.flush()
            length = payload.seek(0, os.SEEK_END)
            payload.seek(0)
            digest = hashlib.sha256()
            while chunk := payload.read(_CHUNK_BYTES):
                digest.update(chunk)
            with storage.atomic_writer(path) as handle:
                handle.write(MAGIC + _header_line(FORMAT_VERSION, digest.hexdigest(), length))
                payload.seek(0)
                shutil.copyfileobj(payload, handle, _CHUNK_BYTES)
    finally:
        try:
            os.unlink(payload_path)
        except OSError:
            pass
    logger.debug("wrote checkpoint %s (%d payload bytes)", path, length)
    return path


def _create(path: Path, mode: str) -> BinaryIO:
    """A new file (never an existing one), readable by the owner only: warmup rows are user data."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, mode)  # type: ignore[return-value]


def _header_line(version: int, sha256: str, length: int) -> bytes:
    header = {"version": version, "sha256": sha256, "length": length}
    return json.dumps(header, separators=(",", ":")).encode("ascii") + b"\n"



def _encode_payload(state: EngineState, saved_at: float, out: BinaryIO) -> None:
    arrays: dict[str, np.ndarray] = {}
    streams_meta: list[dict[str, object]] = []
    for i, (name, stream) in enumerate(state.streams.items()):
        prefix = f"streams/{i}"
        reference_meta: dict[str, object] | None = None
        if stream.reference is not None:
            reference_meta = {
                "rows": int(stream.reference.rows),
                "binners": [_describe_binner(b) for b in stream.reference.binners],
            }
            for j, counts in enumerate(stream.reference.counts):
                arrays[f"{prefix}/reference/{j}"] = np.asarray(counts, dtype=np.float64)
        window_meta: dict[str, object] | None = None
        if stream.window is not None:
            window_meta = _describe_window(name, stream.window)
            kind = str(window_meta["kind"])
            if set(stream.window.arrays) != set(_WINDOW_ARRAYS[kind]):
                raise ValueError(
                    f"stream {name!r}: window arrays {sorted(stream.window.arrays)}, "
                    f"expected {sorted(_WINDOW_ARRAYS[kind])}"
                )
            for array_name, (dtype, ndim) in _WINDOW_ARRAYS[kind].items():
                array = np.asarray(stream.window.arrays[array_name], dtype=dtype)
                if array.ndim != ndim:
                    raise ValueError(
                        f"stream {name!r}: window array {array_name!r} has {array.ndim} "
                        f"dimensions, expected {ndim}"
                    )
                arrays[f"{prefix}/window/{array_name}"] = array
        warmup = [
            [feature, _encode_column(name, feature, values)]
            for feature, values in stream.warmup_columns.items()
        ]
        arrays[f"{prefix}/warmup"] = _json_bytes(warmup)
        streams_meta.append(
            {
                "name": name,
                "fingerprint": stream.fingerprint,
                "reference": reference_meta,
                "window": window_meta,
                "warmup_rows": int(stream.warmup_rows),
            }
        )
    alerts_meta = []
    for (rule_name, stream_name, feature), kept in state.alerts.items():
        rule, alert_state, active_at, fired_at, cleared_at = kept
        if not isinstance(rule, AlertRule) or rule.name != rule_name:
            raise ValueError(f"alert state {(rule_name, stream_name, feature)!r} has rule {rule!r}")
        alerts_meta.append(
            {
                "rule": dataclasses.asdict(rule),
                "stream": stream_name,
                "feature": feature,
                "state": int(alert_state),
                "active_at": float(active_at),
                "fired_at": float(fired_at),
                "cleared_at": float(cleared_at),
            }
        )
    meta: dict[str, object] = {
        "saved_at": saved_at,
        "writer": f"driftmon {__version__}",
        "streams": streams_meta,
        "alerts": alerts_meta,
    }
    if state.history is not None:
        meta["history"] = _encode_history(state.history, arrays)
    arrays["meta"] = _json_bytes(meta)
    np.savez(out, **arrays)  # type: ignore[arg-type]


def _json_bytes(document: object) -> np.ndarray:
    # ensure_ascii: lone surrogates in user strings survive (they have no UTF-8 form).
    text = json.dumps(document, ensure_ascii=True, allow_nan=True, separators=(",", ":"))
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8)


def _describe_binner(binner: Binner) -> dict[str, object]:
    if isinstance(binner, NumericBinner):
        return {
            "type": "numeric",
            "kind": binner.kind,
            "edges": [float(e) for e in binner.edges],
        }
    return {"type": "categorical", "categories": list(binner.categories)}


def _describe_layout_key(stream: str, key: tuple[object, ...]) -> list[object]:
    kind, values = key
    if kind == "numeric" and isinstance(values, tuple):
        return ["numeric", [float(v) for v in values]]
    if kind == "categorical" and isinstance(values, tuple):
        return ["categorical", [str(v) for v in values]]
    raise ValueError(f"stream {stream!r}: unknown layout key {key!r}")


def _describe_window(stream: str, window: WindowState) -> dict[str, object]:
    layouts = [
        [feature, _describe_layout_key(stream, key), int(offset)]
        for feature, key, offset in window.layouts
    ]
    if isinstance(window.window, TimeWindow):
        return {
            "kind": "time",
            "length_s": float(window.window.length_s),
            "panes": int(window.window.panes),
            "layouts": layouts,
        }
    if isinstance(window.window, SampleWindow):
        return {"kind": "samples", "samples": int(window.window.samples), "layouts": layouts}
    raise ValueError(f"stream {stream!r}: unknown window {window.window!r}")


def _encode_column(stream: str, feature: str, values: Sequence[object]) -> list[object]:
    kinds = set(map(type, values))
    # The usual column (numbers, strings, nulls) is its own JSON: no per-value
    # work. json writes str and float subclasses (numpy's too) as their values.
    plain = all(k in (type(None), bool, int) or issubclass(k, str | float) for k in kinds)
    if plain and (
        int not in kinds or all(v.bit_length() <= _BIG_INT_BITS for v in values if type(v) is int)
    ):
        return list(values)
    try:
        return [_encode_value(v) for v in values]
    except (TypeError, RecursionError) as exc:
        raise ValueError(
            f"stream {stream!r}, feature {feature!r}: cannot checkpoint a warmup value: {exc}"
        ) from None


def _encode_value(value: object) -> object:
    """A decoded-JSON value as JSON that :func:`_decode_warmup_object` turns back into it."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return value
    if kind is int:
        assert isinstance(value, int)
        if value.bit_length() > _BIG_INT_BITS:
            return {"$int": format(value, "x")}
        return value
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"a dict key {key!r} is not a string")
        if any(key.startswith("$") for key in value):
            return {"$dict": [[key, _encode_value(v)] for key, v in value.items()]}
        return {key: _encode_value(v) for key, v in value.items()}
    if isinstance(value, np.generic):
        return _encode_value(value.item())
    # Subclasses (an IntEnum, a str subclass) are stored as their plain value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _encode_value(int(value))
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise TypeError(f"{kind.__name__} is not a decoded JSON value")


# --- reading -----------------------------------------------------------------------


def read_checkpoint(state_dir: Path) -> LoadedCheckpoint | None:
    """Read and verify ``state_dir / CHECKPOINT_NAME``; ``None`` when there is none.

    Raises :class:`CheckpointError` for a file that fails any check: unreadable,
    wrong magic, unknown format version, non-canonical header, length or
    SHA-256 mismatch, an archive that does not parse, a missing, extra or
    non-numeric array, wrong shapes or ranges, malformed metadata (an unknown
    window kind, a bad layout, inconsistent alert times...). Nothing is
    returned partially: either everything checks or nothing is loaded.
    """
    path = Path(state_dir) / CHECKPOINT_NAME
    try:
        # A FIFO or a link to a device is refused from its type, a huge file from its
        # size, before a byte is read (a FIFO would hang the start, /dev/zero eat memory).
        handle = open_regular(path, max_bytes=max_checkpoint_bytes())
    except FileNotFoundError:
        return None
    except NotARegularFile as exc:
        raise CheckpointError(str(exc)) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        try:
            _verify_frame(handle)
            # zipfile reads an archive behind a prefix (the magic and header lines);
            # each array is read once, straight into its final numpy buffer.
            state, saved_at = _decode_payload(handle)
        except CheckpointError:
            raise
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except _PARSE_ERRORS as exc:
            # Whatever the checks let through to numpy, zipfile or json still
            # makes the file unusable, never a crash.
            raise CheckpointError(f"malformed payload: {type(exc).__name__}: {exc}") from exc
    return LoadedCheckpoint(state=state, saved_at=saved_at, path=path)


def max_checkpoint_bytes() -> int:
    """The largest checkpoint a start reads: half the machine's physical memory.

    Decoding needs a few times the file's size; a file this large could not
    have been written by a daemon that fits in memory, so it is refused.
    """
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        total = 16 << 30
    return max(total // 2, 1 << 20)


def _verify_frame(handle: BinaryIO) -> None:
    """Check the magic, header, length and checksum of an open checkpoint file.

    The payload is hashed through a memory map: the file's pages, not a copy.
    """
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        raise CheckpointError("empty file (zero bytes)")
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            _unframe(view)
        finally:
            view.release()


def _unframe(data: memoryview) -> None:
    """Verify a checkpoint file's bytes (frame, length, checksum); CheckpointError otherwise."""
    if not data:
        raise CheckpointError("empty file (zero bytes)")
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise CheckpointError("not a driftmon checkpoint (wrong magic line)")
    end = bytes(data[len(MAGIC) : len(MAGIC) + _MAX_HEADER_BYTES]).find(b"\n")
    if end < 0:
        raise CheckpointError("truncated or malformed header line")
    end += len(MAGIC)
    line = bytes(data[len(MAGIC) : end + 1])
    try:
        header = json.loads(line.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"malformed header line: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError("malformed header line: not a JSON object")
    version = header.get("version")
    if version != FORMAT_VERSION or type(version) is not int:
        raise CheckpointError(
            f"format version {version!r}, this driftmon reads version {FORMAT_VERSION}"
        )
    sha256, length = header.get("sha256"), header.get("length")
    if (
        not isinstance(sha256, str)
        or not _SHA256_HEX.match(sha256)
        or type(length) is not int
        or length < 0
        or _header_line(FORMAT_VERSION, sha256, length) != line
    ):
        # Exactly the bytes the writer produces, so a flipped bit in the
        # header can never yield an equivalent header that slips through.
        raise CheckpointError("malformed header line")
    found = len(data) - (end + 1)
    if found < length:
        raise CheckpointError(f"truncated: {length} payload bytes expected, {found} found")
    if found > length:
        raise CheckpointError(f"{found - length} unexpected bytes after the payload")
    # Released before any error is raised: a memory map cannot close while a view lives.
    with data[end + 1 :] as payload:
        digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise CheckpointError("checksum mismatch: the payload is not what was written")


class _Members:
    """The ``.npy`` members of a checkpoint's archive by array name (no ``.npy`` suffix).

    Names are listed at once; an array's bytes are read only when it is asked for.
    """

    def __init__(self, archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]) -> None:
        self.archive = archive
        self.infos = infos

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __contains__(self, name: object) -> bool:
        return name in self.infos


def _read_members(payload: BinaryIO) -> _Members:
    """The members of the archive in ``payload`` (an open, already verified file)."""
    size = os.fstat(payload.fileno()).st_size
    try:
        archive = zipfile.ZipFile(payload)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"the payload is not a readable npz archive: {exc}") from None
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"unexpected archive member {info.filename!r}")
        name = info.filename[: -len(".npy")]
        if name in infos:
            raise CheckpointError(f"archive member {info.filename!r} appears twice")
        # numpy.savez stores members uncompressed; refusing anything else
        # bounds every member by the payload's size (no zip bombs).
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
            raise CheckpointError(f"archive member {info.filename!r} is not stored plainly")
        infos[name] = info
    return _Members(archive, infos)


def _read_array(members: _Members, name: str, dtype: np.dtype, ndim: int) -> np.ndarray:
    """Array ``name`` as a fresh C-ordered native ``dtype`` array of ``ndim`` dimensions.

    Only the ``.npy`` header is parsed (numpy's literal-only header reader);
    any dtype but ``dtype`` (in either byte order) is refused before the data
    is looked at, so nothing is ever unpickled. The data is read once, into
    the array's own buffer.
    """
    info = members.infos.get(name)
    if info is None:
        raise CheckpointError(f"array {name!r} is missing")
    try:
        stream = members.archive.open(info)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"archive member {info.filename!r}: {exc}") from None
    with stream:
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, found = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, found = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, SyntaxError, TypeError, EOFError) as exc:
            raise CheckpointError(f"array {name!r}: malformed .npy header: {exc}") from None
        if found.hasobject or found.kind != dtype.kind or found.itemsize != dtype.itemsize:
            raise CheckpointError(f"array {name!r} has dtype {found}, expected {dtype}")
        if len(shape) != ndim:
            raise CheckpointError(f"array {name!r} has shape {shape}, expected {ndim} dimensions")
        count = math.prod(shape)
        data_bytes = info.file_size - stream.tell()
        if data_bytes != count * found.itemsize:
            raise CheckpointError(
                f"array {name!r}: {data_bytes} data bytes for shape {shape} of {found}"
            )
        array = np.empty(shape, dtype=found, order="F" if fortran_order else "C")
        # ravel("K") of a fresh array is a view of its buffer in memory order.
        target = array.ravel(order="K").data.cast("B")
        reader = cast(io.BufferedIOBase, stream)  # zipfile's ZipExtFile
        filled = 0
        while filled < data_bytes:
            # In chunks: zipfile's readinto reads into a bytes object first.
            got = reader.readinto(target[filled : filled + _CHUNK_BYTES])
            if not got:
                raise CheckpointError(f"array {name!r}: truncated data")
            filled += got
        target.release()
    if array.dtype == dtype and array.flags.c_contiguous:
        return array
    return np.array(array, dtype=dtype, order="C", copy=True)


def _json_member(members: _Members, name: str, hook: Callable[..., object]) -> object:
    raw = _read_array(members, name, np.dtype(np.uint8), 1)
    try:
        return json.loads(raw.tobytes().decode("utf-8"), object_pairs_hook=hook)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"array {name!r} is not readable JSON: {exc}") from None


def _unique_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("an object has a key twice")
    return result


def _decode_warmup_object(pairs: list[tuple[str, object]]) -> object:
    """Inverse of :func:`_encode_value` for JSON objects (see the module docstring)."""
    if len(pairs) == 1 and pairs[0][0].startswith("$"):
        tag, body = pairs[0]
        if tag == "$int" and isinstance(body, str) and _HEX_INT.match(body):
            number = int(body, 16)
            if number.bit_length() > _BIG_INT_BITS:
                return number
        if tag == "$dict" and isinstance(body, list):
            items: list[tuple[str, object]] = []
            for item in body:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                    raise ValueError("malformed $dict entry")
                items.append((item[0], item[1]))
            if any(key.startswith("$") for key, _ in items):
                return _unique_object(items)
        raise ValueError(f"malformed tagged value {tag!r}")
    if any(key.startswith("$") for key, _ in pairs):
        raise ValueError("an untagged object has a key starting with '$'")
    return _unique_object(pairs)


def _fail(where: str, message: str) -> NoReturn:
    raise CheckpointError(f"{where}: {message}")


def _object(value: object, where: str, keys: Sequence[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        _fail(where, f"expected an object, got {type(value).__name__}")
    if set(value) != set(keys):
        missing = sorted(set(keys) - set(value))
        extra = sorted(set(value) - set(keys))
        _fail(where, f"expected keys {sorted(keys)} (missing {missing}, unexpected {extra})")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        _fail(where, f"expected a list, got {type(value).__name__}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        _fail(where, f"expected a string, got {type(value).__name__}")
    return value


def _int(value: object, where: str, minimum: int | None = None) -> int:
    if type(value) is not int:
        _fail(where, f"expected an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        _fail(where, f"must be >= {minimum}, got {value}")
    return value


def _number(value: object, where: str, *, finite: bool = True) -> int | float:
    if type(value) is not int and type(value) is not float:
        _fail(where, f"expected a number, got {type(value).__name__}")
    if finite and not math.isfinite(value):
        _fail(where, f"must be finite, got {value}")
    return value


def _decode_payload(payload: BinaryIO) -> tuple[EngineState, float]:
    members = _read_members(payload)
    raw_meta = _json_member(members, "meta", _unique_object)
    keys: tuple[str, ...] = ("saved_at", "writer", "streams", "alerts")
    if isinstance(raw_meta, dict) and "history" in raw_meta:
        keys += ("history",)
    meta = _object(raw_meta, "meta", keys)
    saved_at = float(_number(meta["saved_at"], "meta.saved_at"))
    _str(meta["writer"], "meta.writer")
    expected_members = {"meta"}
    streams: dict[str, StreamState] = {}
    for i, entry in enumerate(_list(meta["streams"], "meta.streams")):
        where = f"meta.streams[{i}]"
        name, stream, used = _decode_stream(members, i, entry, where)
        if name in streams:
            _fail(f"{where}.name", f"stream {name!r} appears twice")
        streams[name] = stream
        expected_members |= used
    history = None
    if "history" in meta:
        history = _decode_history(members, meta["history"])
        expected_members |= {f"history/{name}" for name in _HISTORY_ARRAYS}
    unexpected = sorted(set(members) - expected_members)
    if unexpected:
        raise CheckpointError(f"unexpected arrays {unexpected}")
    alerts = _decode_alerts(meta["alerts"])
    return EngineState(streams=streams, alerts=alerts, history=history), saved_at


# name -> (dtype, ndim) of the history arrays
_HISTORY_ARRAYS: Final[Mapping[str, tuple[np.dtype, int]]] = {
    "times": (np.dtype(np.float64), 1),
    "values": (np.dtype(np.float32), 3),
    "samples": (np.dtype(np.float64), 2),
    "firing": (np.dtype(np.uint8), 2),
}


def _encode_history(history: HistoryState, arrays: dict[str, np.ndarray]) -> dict[str, object]:
    monitors = [
        [stream, feature, _describe_layout_key(stream, key)]
        for stream, feature, key in history.monitors
    ]
    for name, (dtype, _) in _HISTORY_ARRAYS.items():
        arrays[f"history/{name}"] = np.ascontiguousarray(getattr(history, name), dtype=dtype)
    return {"monitors": monitors}


def _decode_history(members: _Members, value: object) -> HistoryState:
    fields = _object(value, "meta.history", ("monitors",))
    monitors = []
    for j, item in enumerate(_list(fields["monitors"], "meta.history.monitors")):
        at = f"meta.history.monitors[{j}]"
        if not (isinstance(item, list) and len(item) == 3):
            _fail(at, "expected [stream, feature, layout key]")
        key, _ = _decode_layout_key(item[2], f"{at}[2]")
        monitors.append((_str(item[0], f"{at}[0]"), _str(item[1], f"{at}[1]"), key))
    if len(set(monitors)) != len(monitors):
        _fail("meta.history.monitors", "a monitor appears twice")
    found = {
        name: _read_array(members, f"history/{name}", dtype, ndim)
        for name, (dtype, ndim) in _HISTORY_ARRAYS.items()
    }
    n, m = len(found["times"]), len(monitors)
    shapes = {"values": (n, m, len(HISTORY_METRICS)), "samples": (n, m), "firing": (n, m)}
    for name, shape in shapes.items():
        if found[name].shape != shape:
            _fail(f"history/{name}", f"has shape {found[name].shape}, expected {shape}")
    if not np.all(np.isfinite(found["times"])):
        _fail("history/times", "times must be finite")
    _check_counts(found["samples"], "history/samples")
    return HistoryState(tuple(monitors), **found)


def _decode_stream(
    members: _Members, i: int, entry: object, where: str
) -> tuple[str, StreamState, set[str]]:
    """One stream's state and the names of the arrays it used."""
    fields = _object(entry, where, ("name", "fingerprint", "reference", "window", "warmup_rows"))
    name = _str(fields["name"], f"{where}.name")
    fingerprint = _str(fields["fingerprint"], f"{where}.fingerprint")
    prefix = f"streams/{i}"
    used: set[str] = set()

    reference: Reference | None = None
    if fields["reference"] is not None:
        reference = _decode_reference(members, prefix, fields["reference"], f"{where}.reference")
        used |= {f"{prefix}/reference/{j}" for j in range(len(reference.binners))}

    window: WindowState | None = None
    if fields["window"] is not None:
        window = _decode_window(members, prefix, fields["window"], f"{where}.window")
        kind = "time" if isinstance(window.window, TimeWindow) else "samples"
        used |= {f"{prefix}/window/{n}" for n in _WINDOW_ARRAYS[kind]}
        # The engine packs a stream's monitors from its reference: a window
        # whose layouts are not the reference's cannot have been exported.
        keys = [key for _, key, _ in window.layouts]
        if reference is None or keys != [layout_key(b) for b in reference.binners]:
            _fail(f"{where}.window.layouts", "do not match the stream's reference")

    warmup_rows = _int(fields["warmup_rows"], f"{where}.warmup_rows", 0)
    warmup_name = f"{prefix}/warmup"
    used.add(warmup_name)
    warmup_columns: dict[str, list[object]] = {}
    columns = _list(_json_member(members, warmup_name, _decode_warmup_object), warmup_name)
    for j, column in enumerate(columns):
        if not (isinstance(column, list) and len(column) == 2):
            _fail(f"{warmup_name}[{j}]", "expected [feature, values]")
        feature = _str(column[0], f"{warmup_name}[{j}][0]")
        values = _list(column[1], f"{warmup_name}[{j}][1]")
        if feature in warmup_columns:
            _fail(f"{warmup_name}[{j}]", f"feature {feature!r} appears twice")
        if len(values) != warmup_rows:
            _fail(
                f"{warmup_name}[{j}]",
                f"feature {feature!r} has {len(values)} values for {warmup_rows} warmup rows",
            )
        warmup_columns[feature] = values

    state = StreamState(
        fingerprint=fingerprint,
        reference=reference,
        window=window,
        warmup_rows=warmup_rows,
        warmup_columns=warmup_columns,
    )
    return name, state, used


def _decode_reference(
    members: _Members, prefix: str, value: object, where: str
) -> Reference:
    fields = _object(value, where, ("rows", "binners"))
    rows = _int(fields["rows"], f"{where}.rows", 0)
    binners: list[Binner] = []
    counts: list[np.ndarray] = []
    for j, described in enumerate(_list(fields["binners"], f"{where}.binners")):
        binner = _decode_binner(described, f"{where}.binners[{j}]")
        name = f"{prefix}/reference/{j}"
        array = _read_array(members, name, np.dtype(np.float64), 1)
        if array.shape != (binner.n_bins,):
            _fail(name, f"has shape {array.shape}, the layout has {binner.n_bins} bins")
        _check_counts(array, name)
        array.flags.writeable = False
        binners.append(binner)
        counts.append(array)
    return Reference(tuple(binners), tuple(counts), rows)


def _check_counts(array: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(array) | (array < 0)
    if np.any(bad):
        first = np.argwhere(bad)[0]
        _fail(where, f"counts must be finite and >= 0, got {array[tuple(first)]} at {first}")


def _decode_binner(value: object, where: str) -> Binner:
    if not isinstance(value, dict):
        _fail(where, f"expected an object, got {type(value).__name__}")
    kind = value.get("type")
    try:
        if kind == "numeric":
            fields = _object(value, where, ("type", "kind", "edges"))
            edges = _edges(fields["edges"], f"{where}.edges")
            if fields["kind"] == "uniform":
                binner = NumericBinner.uniform(edges[0], edges[-1], len(edges) - 1)
                if [float(e) for e in binner.edges] != edges:
                    _fail(f"{where}.edges", "are not the uniform layout of their first and last")
                return binner
            if fields["kind"] == "edges":
                return NumericBinner.from_edges(edges)
            _fail(f"{where}.kind", f"expected 'uniform' or 'edges', got {fields['kind']!r}")
        if kind == "categorical":
            fields = _object(value, where, ("type", "categories"))
            categories = [
                _str(c, f"{where}.categories[{k}]")
                for k, c in enumerate(_list(fields["categories"], f"{where}.categories"))
            ]
            return CategoricalBinner(categories)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    _fail(f"{where}.type", f"expected 'numeric' or 'categorical', got {kind!r}")


def _edges(value: object, where: str) -> list[float]:
    edges = [float(_number(e, f"{where}[{k}]")) for k, e in enumerate(_list(value, where))]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        _fail(where, "must be at least 2 strictly increasing numbers")
    return edges


def _decode_layout_key(value: object, where: str) -> tuple[tuple[object, ...], int]:
    """A layout key as :func:`driftmon.reference.layout_key` makes it, and its bin count."""
    if not (isinstance(value, list) and len(value) == 2):
        _fail(where, "expected [kind, values]")
    kind, values = value
    if kind == "numeric":
        edges = _edges(values, f"{where}[1]")
        return ("numeric", tuple(edges)), len(edges) + 3
    if kind == "categorical":
        categories = [
            _str(c, f"{where}[1][{k}]") for k, c in enumerate(_list(values, f"{where}[1]"))
        ]
        if any(not c for c in categories) or len(set(categories)) != len(categories):
            _fail(f"{where}[1]", "categories must be unique non-empty strings")
        return ("categorical", tuple(categories)), len(categories) + 3
    _fail(f"{where}[0]", f"expected 'numeric' or 'categorical', got {kind!r}")


def _decode_window(
    members: _Members, prefix: str, value: object, where: str
) -> WindowState:
    if not isinstance(value, dict):
        _fail(where, f"expected an object, got {type(value).__name__}")
    kind = value.get("kind")
    config: TimeWindow | SampleWindow
    if kind == "time":
        fields = _object(value, where, ("kind", "length_s", "panes", "layouts"))
        length_s = float(_number(fields["length_s"], f"{where}.length_s"))
        if length_s <= 0:
            _fail(f"{where}.length_s", f"must be > 0, got {length_s}")
        config = TimeWindow(length_s=length_s, panes=_int(fields["panes"], f"{where}.panes", 1))
    elif kind == "samples":
        fields = _object(value, where, ("kind", "samples", "layouts"))
        config = SampleWindow(samples=_int(fields["samples"], f"{where}.samples", 1))
    else:
        _fail(f"{where}.kind", f"unknown window kind {kind!r} (expected 'time' or 'samples')")

    layouts: list[tuple[str, tuple[object, ...], int]] = []
    spans: list[tuple[int, int]] = []  # (offset, bins) per feature
    width = 0
    for j, item in enumerate(_list(fields["layouts"], f"{where}.layouts")):
        at = f"{where}.layouts[{j}]"
        if not (isinstance(item, list) and len(item) == 3):
            _fail(at, "expected [feature, layout key, offset]")
        feature = _str(item[0], f"{at}[0]")
        key, n_bins = _decode_layout_key(item[1], f"{at}[1]")
        offset = _int(item[2], f"{at}[2]")
        if offset != width:
            _fail(f"{at}[2]", f"offset {offset}, expected {width} (monitors are contiguous)")
        if any(feature == f for f, _, _ in layouts):
            _fail(f"{at}[0]", f"feature {feature!r} appears twice")
        layouts.append((feature, key, offset))
        spans.append((offset, n_bins))
        width += n_bins
    if not layouts:
        _fail(f"{where}.layouts", "a window has at least one monitor")

    arrays = {
        name: _read_array(members, f"{prefix}/window/{name}", dtype, ndim)
        for name, (dtype, ndim) in _WINDOW_ARRAYS[kind].items()
    }
    if isinstance(config, TimeWindow):
        _check_pane_arrays(arrays, config, width, f"{prefix}/window")
    else:
        _check_ring_arrays(arrays, config, spans, f"{prefix}/window")
    for array in arrays.values():
        array.flags.writeable = False
    return WindowState(window=config, layouts=tuple(layouts), arrays=arrays)


def _check_pane_arrays(
    arrays: Mapping[str, np.ndarray], config: TimeWindow, width: int, where: str
) -> None:
    pane_counts, current = arrays["pane_counts"], arrays["current_pane"]
    if pane_counts.shape != (config.panes, width):
        _fail(
            f"{where}/pane_counts", f"shape {pane_counts.shape}, expected {(config.panes, width)}"
        )
    _check_counts(pane_counts, f"{where}/pane_counts")
    if current.shape != (1,):
        _fail(f"{where}/current_pane", f"shape {current.shape}, expected (1,)")
    if current[0] < -1:
        _fail(f"{where}/current_pane", f"must be >= -1, got {current[0]}")
    if current[0] == -1 and np.any(pane_counts):
        _fail(where, "a window that never saw a pane (current_pane -1) holds counts")


def _check_ring_arrays(
    arrays: Mapping[str, np.ndarray],
    config: SampleWindow,
    spans: Sequence[tuple[int, int]],
    where: str,
) -> None:
    ring, head = arrays["ring"], arrays["head"]
    if ring.shape != (config.samples, len(spans)):
        _fail(f"{where}/ring", f"shape {ring.shape}, expected {(config.samples, len(spans))}")
    for j, (offset, n_bins) in enumerate(spans):
        column = ring[:, j]
        bad = (column != _NOT_REACHED) & ((column < offset) | (column >= offset + n_bins))
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0])
            _fail(
                f"{where}/ring",
                f"row {row}, feature {j}: bin index {column[row]} outside "
                f"[{offset}, {offset + n_bins}) and not {_NOT_REACHED}",
            )
    if head.shape != (2,):
        _fail(f"{where}/head", f"shape {head.shape}, expected (2,)")
    position, filled = int(head[0]), int(head[1])
    if not (0 <= position < config.samples and 0 <= filled <= config.samples):
        _fail(f"{where}/head", f"head {position} / filled {filled} out of range")
    # A ring that is not full yet was filled from slot 0: the next slot is the
    # fill count and no slot beyond it was ever written.
    if filled < config.samples and (position != filled or np.any(ring[filled:] != _NOT_REACHED)):
        _fail(
            f"{where}/head",
            f"a ring filled to {filled} must have head {filled} and no rows past it",
        )


# AlertRule field -> validator of its stored value (name, patterns and severity
# are strings; numbers finite; optional ones may be null).
_RULE_FIELDS: Final[Mapping[str, Callable[[object, str], object]]] = {
    "name": _str,
    "stream_pattern": _str,
    "feature_pattern": _str,
    "metric": lambda v, w: _str(v, w) if v in ALERT_METRICS else _fail(w, f"unknown metric {v!r}"),
    "threshold": _number,
    "for_s": _number,
    "clear_below": lambda v, w: None if v is None else _number(v, w),
    "min_samples": lambda v, w: _int(v, w, 0),
    "max_p_value": lambda v, w: None if v is None else _number(v, w),
    "keep_firing_for_s": _number,
    "severity": _str,
    "p_value_correction": lambda v, w: (
        _str(v, w) if v in P_VALUE_CORRECTIONS else _fail(w, f"unknown correction {v!r}")
    ),
}
# Fields a checkpoint written before they existed lacks: their default then applies.
_RULE_FIELDS_ADDED_LATER: Final = ("p_value_correction",)


def _decode_rule(value: object, where: str) -> AlertRule:
    present = tuple(
        name
        for name in _RULE_FIELDS
        if name not in _RULE_FIELDS_ADDED_LATER or (isinstance(value, dict) and name in value)
    )
    fields = _object(value, where, present)
    checked = {name: _RULE_FIELDS[name](fields[name], f"{where}.{name}") for name in present}
    return AlertRule(**checked)  # type: ignore[arg-type]


def _decode_alerts(value: object) -> dict[tuple[str, str, str], tuple[object, ...]]:
    alerts: dict[tuple[str, str, str], tuple[object, ...]] = {}
    keys = ("rule", "stream", "feature", "state", "active_at", "fired_at", "cleared_at")
    for i, entry in enumerate(_list(value, "meta.alerts")):
        where = f"meta.alerts[{i}]"
        fields = _object(entry, where, keys)
        rule = _decode_rule(fields["rule"], f"{where}.rule")
        stream = _str(fields["stream"], f"{where}.stream")
        feature = _str(fields["feature"], f"{where}.feature")
        state = _int(fields["state"], f"{where}.state")
        times = [
            float(_number(fields[k], f"{where}.{k}", finite=False))
            for k in ("active_at", "fired_at", "cleared_at")
        ]
        key = (rule.name, stream, feature)
        if key in alerts:
            _fail(where, f"alert state {key!r} appears twice")
        alerts[key] = (rule, state, *times)
    if alerts:
        # The alert table's own checks: states 0..2, times finite or NaN and
        # consistent with the state (a pending pair has an active_at...).
        columns = list(zip(*(kept[1:] for kept in alerts.values()), strict=True))
        try:
            AlertTable(
                state=np.array(columns[0], dtype=np.int64),
                active_at=np.array(columns[1], dtype=np.float64),
                fired_at=np.array(columns[2], dtype=np.float64),
                cleared_at=np.array(columns[3], dtype=np.float64),
            )
        except ValueError as exc:
            raise CheckpointError(f"meta.alerts: {exc} (index into meta.alerts)") from None
    return alerts


# --- start-up housekeeping -----------------------------------------------------------


def remove_stale_temporaries(state_dir: Path) -> list[Path]:
    """Delete temporary files a crashed :func:`write_checkpoint` left in ``state_dir``.

    Call at start, before any write. Only files named like the checkpoint's
    temporaries (``.checkpoint.driftmon.tmp-*``) are touched; directories
    never. Returns the paths removed (empty when ``state_dir`` does not exist).
    """
    return remove_temporaries(state_dir, _TEMPORARY_PREFIX)


def move_aside(path: Path, reason: str, *, now: float | None = None) -> Path:
    """Rename an unusable checkpoint aside (:func:`driftmon.storage.move_aside`); the new path."""
    return storage.move_aside(path, reason, now=now, what="checkpoint", log=logger)


def restore_or_move_aside(state_dir: Path) -> tuple[LoadedCheckpoint | None, str | None]:
    """Read the checkpoint for a start; never raises.

    Returns ``(loaded, None)`` for a good checkpoint, ``(None, None)`` when
    there is none, and ``(None, reason)`` for an unusable one, which is moved
    aside with :func:`move_aside` (if even that fails, the error is logged and
    the file left where it is).
    """
    path = Path(state_dir) / CHECKPOINT_NAME
    try:
        return read_checkpoint(state_dir), None
    except CheckpointError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - a start must survive any checkpoint
        logger.exception("unexpected error reading checkpoint %s", path)
        reason = f"unexpected error: {type(exc).__name__}: {exc}"
    try:
        move_aside(path, reason)
    except OSError as exc:
        logger.error(
            "checkpoint %s is unusable (%s) and cannot be moved aside: %s", path, reason, exc
        )
    return None, reason
