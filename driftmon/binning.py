"""Bin layouts and the checked binning API (docs/configuration.md#bins).

A :class:`NumericBinner` or :class:`CategoricalBinner` is one monitor's bin layout:
immutable, cheap to share between ingest threads, and the only way the rest of
driftmon reaches the numba kernels of :mod:`driftmon.kernels.binning`. Every
method that enters JIT code first checks dtype, shape and writeability and raises
``ValueError`` naming the argument.

Layouts, fixed by docs/configuration.md#bins:

- numeric, ``n`` regular bins, ``K = n + 4``: ``0`` underflow, ``1 .. n`` regular,
  ``n + 1`` overflow, ``n + 2`` missing, ``n + 3`` invalid;
- categorical, ``c`` categories, ``K = c + 3``: ``0 .. c - 1`` the categories in
  config order, ``c`` other, ``c + 1`` missing, ``c + 2`` invalid.

Counting methods (``add``, ``add_values``, ``add_codes``) add into a caller-owned
float64 buffer, so per-worker buffers merge with ``+=``; indexing methods return
one int32 layout index per value.

The ``*_values`` methods take one column of decoded JSON or CSV (Python objects)
and apply the type rules of docs/configuration.md#bins: see :meth:`NumericBinner.add_values` and
:meth:`CategoricalBinner.codes`.

One module of about 850 lines on purpose: the two binners share the checks
made before every kernel call and the type rules of a value, which are read
and changed together; split by binner they would be copied.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Final

import numpy as np

from driftmon.coded import CodedColumn, FloatChunks
from driftmon.kernels import binning as kernels

__all__ = [
    "CategoricalBinner",
    "NumericBinner",
    "cover_maximum",
    "top_k_categories",
]

# Explicit-edges lookup tables: at least this many cells per regular bin, doubled
# while some cell still holds more than one interior edge, up to MAX_GRID_CELLS
# (an int32 table of 32 KiB, which stays in L1 next to the values being binned).
GRID_CELLS_PER_BIN: Final = 4
MIN_GRID_CELLS: Final = 64
MAX_GRID_CELLS: Final = 8192

_NUMBER_TYPES: Final = frozenset({float, int})
_BINADE_BITS: Final = 1 << 52  # one binade (a factor of 2) in float64 bit patterns
_NUMBER_OR_NONE_TYPES: Final = frozenset({float, int, type(None)})


# --- explicit-edges lookup table -------------------------------------------------


@dataclass(frozen=True)
class _EdgesGrid:
    """The lookup table of an explicit-edges layout, as the kernels take it.

    ``search_edges`` holds the edges then ``kernels.SEARCH_PADDING`` +inf entries;
    ``cell_start[g]`` is the number of interior edges whose grid cell is below
    ``g``; ``steps`` is the most interior edges in one cell (the length of the
    correction after the table lookup). See ``kernels._edges_index_block``.
    """

    search_edges: np.ndarray
    cell_start: np.ndarray
    steps: int
    grid_kind: int
    scale: float
    key_floor: int
    key0: int
    shift: int


def _float_bits(value: float) -> int:
    """The IEEE-754 bit pattern of a float64 as a signed int64 value."""
    return int(np.array(value, dtype=np.float64).view(np.int64))


def _ordered_key(value: float, key_floor: int) -> int:
    """Python twin of ``kernels._ordered_key``, used only to size the grid."""
    bits = _float_bits(value)
    magnitude = (bits & 0x7FFF_FFFF_FFFF_FFFF) - key_floor
    magnitude = magnitude >> 1 if magnitude > 0 else 0
    return magnitude if bits >= 0 else -magnitude


def _grid_candidate(
    edges: np.ndarray, grid_kind: int, target_cells: int
) -> tuple[int, int, float, int, int, int] | None:
    """(steps, cells, scale, key_floor, key0, shift) of one grid, or None if unusable.

    ``target_cells`` is a power of two; an ordered-bits grid may use fewer cells
    (its cell width is a power of two in key units).
    """
    e0, en = float(edges[0]), float(edges[-1])
    scale, key_floor, key0, shift = 0.0, 0, 0, 0
    if grid_kind == kernels.GRID_LINEAR:
        scale = target_cells / (en - e0)
        # A span that overflows (scale 0) or underflows (scale inf) defeats a
        # linear grid; the ordered-bits grid covers both.
        if not (math.isfinite(scale) and scale > 0.0):
            return None
        n_cells = target_cells
    else:
        magnitudes = np.abs(edges[edges != 0.0])
        key_floor = max(0, _float_bits(float(magnitudes.min())) - _BINADE_BITS)
        key0 = _ordered_key(e0, key_floor)
        span = _ordered_key(en, key_floor) - key0
        shift = max(0, span.bit_length() - (target_cells - 1).bit_length())
        n_cells = (span >> shift) + 1
    cells = kernels.edges_grid_cells(
        _kernel_input(edges[1:-1]),
        grid_kind,
        e0,
        scale,
        key_floor,
        key0,
        shift,
        n_cells - 1,
    )
    per_cell = np.bincount(cells, minlength=n_cells)
    steps = int(per_cell.max()) if per_cell.size else 0
    return steps, n_cells, scale, key_floor, key0, shift


def _build_edges_grid(
    edges: np.ndarray,
    *,
    max_cells: int = MAX_GRID_CELLS,
    grid_kinds: tuple[int, ...] = (kernels.GRID_LINEAR, kernels.GRID_ORDERED_BITS),
) -> _EdgesGrid:
    """Choose and build the lookup table of strictly increasing finite ``edges``.

    Tries a linear and an ordered-bits grid of ``GRID_CELLS_PER_BIN`` cells per
    bin (a power of two, at least ``MIN_GRID_CELLS``), doubling the cell count
    while every candidate leaves some cell with two or more interior edges and
    ``max_cells`` allows; keeps the candidate with the fewest correction steps,
    then the fewest cells, then the linear grid. Every choice is exact (the tests
    force each one); the choice only decides speed. ``max_cells`` and
    ``grid_kinds`` are parameters so tests can force the slow paths.
    """
    n_regular = edges.size - 1
    target = max(MIN_GRID_CELLS, 1 << (GRID_CELLS_PER_BIN * n_regular - 1).bit_length())
    target = min(target, 1 << (max(1, max_cells).bit_length() - 1))
    best: tuple[int, int, int, float, int, int, int] | None = None
    while True:
        for grid_kind in grid_kinds:
            candidate = _grid_candidate(edges, grid_kind, target)
            if candidate is None:
                continue
            steps, n_cells, scale, key_floor, key0, shift = candidate
            ranked = (steps, n_cells, grid_kind, scale, key_floor, key0, shift)
            if best is None or ranked[:3] < best[:3]:
                best = ranked
        if (best is not None and best[0] <= 1) or target * 2 > max_cells:
            break
        target *= 2
    if best is None:
        # Only a linear-only request on a span that overflows float64 gets here:
        # one cell, every value takes the full (still exact) search.
        best = (n_regular - 1, 1, kernels.GRID_LINEAR, 0.0, 0, 0, 0)
    steps, n_cells, grid_kind, scale, key_floor, key0, shift = best
    cells = kernels.edges_grid_cells(
        _kernel_input(edges[1:-1]), grid_kind, float(edges[0]), scale,
        key_floor, key0, shift, n_cells - 1,
    )  # fmt: skip
    cell_start = np.zeros(n_cells + 1, dtype=np.int32)
    np.cumsum(np.bincount(cells, minlength=n_cells), out=cell_start[1:])
    search_edges = np.concatenate([edges, np.full(kernels.SEARCH_PADDING, np.inf)])
    search_edges.flags.writeable = False
    cell_start.flags.writeable = False
    return _EdgesGrid(search_edges, cell_start, steps, grid_kind, scale, key_floor, key0, shift)


# --- argument checks -------------------------------------------------------------


def _kernel_input(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, read-only view (a copy if strided) of an array a kernel reads.

    numba compiles one machine-code version per argument type, and contiguity
    and writeability are part of the type: passing every read-only input the
    same way means one compiled signature (the one ``warm_up`` loads) serves
    writeable, read-only (``np.frombuffer``) and strided arrays alike.
    """
    view = np.ascontiguousarray(array).view()
    view.flags.writeable = False
    return view


def _check_values(values: object) -> np.ndarray:
    """``values`` as a kernel input, or ValueError unless it is a 1-D float64 array."""
    if not isinstance(values, np.ndarray) or values.dtype != np.float64 or values.ndim != 1:
        raise ValueError(f"values must be a 1-D float64 numpy array, got {_describe(values)}")
    return _kernel_input(values)


def _check_counts(counts: object, n_bins: int) -> np.ndarray:
    if (
        not isinstance(counts, np.ndarray)
        or counts.dtype != np.float64
        or counts.shape != (n_bins,)
    ):
        raise ValueError(
            f"counts must be a float64 numpy array of shape ({n_bins},), got {_describe(counts)}"
        )
    if not counts.flags.writeable:
        raise ValueError("counts must be writeable (it is added to in place)")
    return counts


def _describe(obj: object) -> str:
    if isinstance(obj, np.ndarray):
        return f"an array of dtype {obj.dtype} and shape {obj.shape}"
    return f"a {type(obj).__name__}"


def _format_edge(edge: float) -> str:
    """Shortest round-trip text of an edge, without a trailing ``.0``."""
    text = repr(float(edge) + 0.0)  # + 0.0 turns -0.0 into 0.0
    return text[:-2] if text.endswith(".0") else text


# --- numeric columns of Python objects ------------------------------------------


def _as_number(value: object) -> float | None:
    """The float of one JSON/CSV value under the numeric rules (docs/configuration.md), or None.

    int and float (and numpy's integer and floating scalars) are numbers; an int
    too large for a float64 becomes ±inf (overflow/underflow); None is missing
    (NaN); bool, str, list, dict and anything else are invalid.
    """
    if type(value) is float:
        return value
    if value is None:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, (float, np.floating)):
        return float(value)
    return None


def _numeric_column(values: Sequence[object] | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(numbers, invalid) of a column: float64 numbers with NaN for missing values,
    and a boolean mask of the invalid positions (None when there are none; their
    numbers are NaN placeholders)."""
    if isinstance(values, FloatChunks):
        return values.array(), None
    if isinstance(values, CodedColumn):
        values = values.tolist()  # numbers do not come coded; any other value is invalid
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"values must be one column (1-D), got shape {values.shape}")
        kind = values.dtype.kind
        if kind == "f":
            return np.ascontiguousarray(values, dtype=np.float64), None
        if kind in "iu":
            return values.astype(np.float64), None
        if kind != "O":
            # bool, str, bytes, datetime, complex: every element is the wrong type.
            return np.full(values.size, np.nan), np.ones(values.size, dtype=bool)
        values = values.tolist()
    n = len(values)
    types = set(map(type, values))
    try:
        if types <= _NUMBER_TYPES:
            return np.fromiter(values, dtype=np.float64, count=n), None
        if types <= _NUMBER_OR_NONE_TYPES:
            # numpy turns None into NaN when it builds a float array.
            return np.array(values, dtype=np.float64), None
    except OverflowError:
        pass  # an int beyond float64: the per-value path maps it to ±inf
    converted = list(map(_as_number, values))
    invalid_positions = [i for i, number in enumerate(converted) if number is None]
    for position in invalid_positions:
        converted[position] = math.nan
    invalid = np.zeros(n, dtype=bool)
    invalid[invalid_positions] = True
    return np.array(converted, dtype=np.float64), (invalid if invalid_positions else None)


# --- numeric layouts --------------------------------------------------------------


class NumericBinner:
    """The bin layout of a numeric monitor: ``n_regular`` regular bins, ``K = n + 4``.

    Build one with :meth:`uniform` or :meth:`from_edges`. Immutable: attributes
    cannot be rebound and :attr:`edges` is read-only; safe to share between
    threads (the kernels release the GIL).

    Attributes:
        n_regular: number of regular bins ``n`` (>= 1).
        n_bins: ``K = n_regular + 4``.
        edges: float64[n_regular + 1], read-only; bin ``i`` (layout index
            ``i + 1``) is ``[edges[i], edges[i + 1])``. For uniform layouts
            ``lo + i * (hi - lo) / count`` with the last edge exactly ``hi``:
            used for labels and Wasserstein positions, while values are binned by
            the uniform formula (see :meth:`uniform`).
        kind: ``"uniform"`` or ``"edges"``.
    """

    __slots__ = ("_grid", "_lo", "_hi", "_scale", "edges", "kind", "n_bins", "n_regular")

    UNDERFLOW: Final = 0

    n_regular: int
    n_bins: int
    edges: np.ndarray
    kind: str
    _lo: float
    _hi: float
    _scale: float
    _grid: _EdgesGrid | None

    def __init__(self) -> None:
        raise TypeError("build a NumericBinner with NumericBinner.uniform or .from_edges")

    @classmethod
    def uniform(cls, lo: float, hi: float, count: int) -> NumericBinner:
        """``count`` equal-width bins over ``[lo, hi)``.

        A value ``v`` goes to regular bin ``floor((v - lo) * (count / (hi - lo)))``,
        clamped to ``[0, count - 1]`` against rounding; ``v < lo`` (and -inf) is
        underflow, ``v >= hi`` (and +inf) overflow, NaN missing. Raises ValueError
        unless ``count`` is an int >= 1 and ``lo < hi`` are finite with a width
        ``hi - lo`` that is finite and wide enough for ``count`` distinct edges.
        """
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        count = int(count)
        lo, hi = _check_bound("lo", lo), _check_bound("hi", hi)
        if not lo < hi:
            raise ValueError(f"lo must be < hi, got lo={lo!r}, hi={hi!r}")
        width = hi - lo
        scale = count / width
        if not (math.isfinite(width) and math.isfinite(scale)):
            raise ValueError(f"hi - lo must be a finite, non-tiny width, got lo={lo!r}, hi={hi!r}")
        edges = lo + np.arange(count + 1, dtype=np.float64) * width / count
        edges[-1] = hi
        if not np.all(np.diff(edges) > 0):
            raise ValueError(
                f"{count} bins over [{lo!r}, {hi!r}) are narrower than float64 resolution"
            )
        return cls._make("uniform", edges, lo=lo, hi=hi, scale=scale, grid=None)

    @classmethod
    def from_edges(cls, edges: Sequence[float] | np.ndarray) -> NumericBinner:
        """Explicit bins: bin ``i`` holds ``edges[i] <= v < edges[i + 1]``.

        ``v < edges[0]`` (and -inf) is underflow, ``v >= edges[-1]`` (and +inf)
        overflow, NaN missing. Edges may be spaced arbitrarily unevenly (e.g.
        ``[0, 1e-9, 1, 1e6]``): binning is exact for every value. Raises
        ValueError unless there are at least 2 finite, strictly increasing edges.
        """
        try:
            array = np.array(edges, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"edges must be a sequence of numbers: {exc}") from exc
        if array.ndim != 1 or array.size < 2:
            raise ValueError(
                f"edges must be a flat list of at least 2 numbers, got shape {array.shape}"
            )
        not_finite = np.flatnonzero(~np.isfinite(array))
        if not_finite.size:
            i = int(not_finite[0])
            raise ValueError(f"edges must be finite, got edges[{i}] = {array[i]!r}")
        # Compared, not subtracted: edges spanning more than float64 overflow np.diff.
        not_increasing = np.flatnonzero(array[1:] <= array[:-1])
        if not_increasing.size:
            i = int(not_increasing[0])
            raise ValueError(
                f"edges must be strictly increasing, got edges[{i}] = {array[i]!r} "
                f"and edges[{i + 1}] = {array[i + 1]!r}"
            )
        grid = _build_edges_grid(array)
        return cls._make(
            "edges", array, lo=float(array[0]), hi=float(array[-1]), scale=0.0, grid=grid
        )

    @classmethod
    def _make(
        cls,
        kind: str,
        edges: np.ndarray,
        *,
        lo: float,
        hi: float,
        scale: float,
        grid: _EdgesGrid | None,
    ) -> NumericBinner:
        binner = object.__new__(cls)
        edges.flags.writeable = False
        for name, value in (
            ("kind", kind),
            ("edges", edges),
            ("n_regular", edges.size - 1),
            ("n_bins", edges.size + 3),
            ("_lo", lo),
            ("_hi", hi),
            ("_scale", scale),
            ("_grid", grid),
        ):
            object.__setattr__(binner, name, value)
        return binner

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"NumericBinner is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"NumericBinner is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        """Equal when the kind and every edge are equal: both bin every value alike."""
        if not isinstance(other, NumericBinner):
            return NotImplemented
        return self.kind == other.kind and np.array_equal(self.edges, other.edges)

    def __hash__(self) -> int:
        return hash((self.kind, (self.edges + 0.0).tobytes()))  # + 0.0: -0.0 hashes as 0.0

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Rebuild through the public constructors (copy, deepcopy, pickle)."""
        if self.kind == "uniform":
            return NumericBinner.uniform, (self._lo, self._hi, self.n_regular)
        return NumericBinner.from_edges, (self.edges.tolist(),)

    def __repr__(self) -> str:
        if self.kind == "uniform":
            return f"NumericBinner.uniform({self._lo!r}, {self._hi!r}, {self.n_regular})"
        return f"NumericBinner.from_edges({self.edges.tolist()!r})"

    @property
    def overflow(self) -> int:
        """Layout index of the overflow bin (``n_regular + 1``)."""
        return self.n_regular + 1

    @property
    def missing(self) -> int:
        """Layout index of the missing bin (``n_regular + 2``)."""
        return self.n_regular + 2

    @property
    def invalid(self) -> int:
        """Layout index of the invalid bin (``n_regular + 3``)."""
        return self.n_regular + 3

    def add(self, values: np.ndarray, counts: np.ndarray) -> None:
        """Add one per value into ``counts`` at its layout index.

        values: 1-D float64 array (any strides; NaN missing, ±inf overflow/
        underflow). counts: writeable float64 array of shape ``(n_bins,)``, added
        to in place (never reset). Raises ValueError naming a bad argument before
        any count changes.
        """
        values = _check_values(values)
        counts = _check_counts(counts, self.n_bins)
        if self._grid is None:
            kernels.uniform_count(values, self._lo, self._hi, self._scale, self.n_regular, counts)
        else:
            grid = self._grid
            kernels.edges_count(
                values, grid.search_edges, self.n_regular, grid.cell_start, grid.steps,
                grid.grid_kind, grid.scale, grid.key_floor, grid.key0, grid.shift, counts,
            )  # fmt: skip

    def index(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The layout index of every value, as int32 (``bincount`` of it equals :meth:`add`).

        values: 1-D float64 array. out: optional writeable int32 array of the same
        length, overwritten and returned; a new array otherwise.
        """
        values = _check_values(values)
        if out is None:
            out = np.empty(values.size, dtype=np.int32)
        elif (
            not isinstance(out, np.ndarray)
            or out.dtype != np.int32
            or out.shape != values.shape
            or not out.flags.writeable
        ):
            raise ValueError(
                f"out must be a writeable int32 array of shape {values.shape}, got {_describe(out)}"
            )
        if self._grid is None:
            kernels.uniform_index(values, self._lo, self._hi, self._scale, self.n_regular, out)
        else:
            grid = self._grid
            kernels.edges_index(
                values, grid.search_edges, self.n_regular, grid.cell_start, grid.steps,
                grid.grid_kind, grid.scale, grid.key_floor, grid.key0, grid.shift, out,
            )  # fmt: skip
        return out

    def add_values(self, values: Sequence[object] | np.ndarray, counts: np.ndarray) -> None:
        """Add one column of decoded JSON/CSV values into ``counts`` (docs/configuration.md#bins).

        int and float are numbers (an int beyond float64 range is ±inf, so
        overflow/underflow); None and NaN are missing; bool, str (even ``"1.5"``),
        list, dict and anything else are invalid. A numpy array is taken as is:
        float and int dtypes are numbers, bool and other non-object dtypes are
        invalid. The all-number column (the common case) is converted in one pass.
        """
        counts = _check_counts(counts, self.n_bins)
        numbers, invalid = _numeric_column(values)
        if invalid is None:
            self.add(numbers, counts)
            return
        self.add(numbers[~invalid], counts)
        counts[self.invalid] += np.count_nonzero(invalid)

    def index_values(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """The int32 layout index of every value of a column, by :meth:`add_values`'s rules."""
        numbers, invalid = _numeric_column(values)
        indices = self.index(numbers)
        if invalid is not None:
            indices[invalid] = self.invalid
        return indices

    def bin_labels(self) -> list[str]:
        """Labels in layout order: ``underflow``, ``[a, b)`` per regular bin, ``overflow``,
        ``missing``, ``invalid``; edges in shortest round-trip form (``0.1``, ``1e-09``)."""
        texts = [_format_edge(edge) for edge in self.edges.tolist()]
        regular = [f"[{a}, {b})" for a, b in zip(texts[:-1], texts[1:], strict=True)]
        return ["underflow", *regular, "overflow", "missing", "invalid"]


def _check_bound(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


# --- categorical layouts ----------------------------------------------------------


def _category_text(value: object) -> str | None:
    """Canonical text of a valid categorical value, or None if it is not one.

    str as is; bool ``"true"``/``"false"``; int its decimal text. None, floats,
    lists, dicts and anything else have no text (missing or invalid).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        try:
            return str(int(value))
        except ValueError:
            # Beyond Python's int-to-text digit limit: no category can match it.
            return None
    return None


MAX_KEPT_CATEGORY_CHARS = 1024
"""In a warmup, a categorical value longer than this (or than the longest listed
category, if longer) is kept as ``invalid``: no sensible category is that long, and a
warmup keeps its values until it freezes (a few 1 MiB strings would otherwise fill
memory and the checkpoint)."""


def normalise_numeric(values: Sequence[object] | np.ndarray) -> list[object]:
    """A numeric column reduced to what binning it needs, by the numeric type rules.

    Each value becomes a float (ints beyond float64 are ±inf), ``None`` for
    missing (None, NaN), or ``[]`` for invalid (the wrong type: every kind of
    invalid value bins alike, so one small token stands for them all).
    Binning the result gives exactly the counts of binning ``values``.
    """
    numbers, invalid = _numeric_column(values)
    kept: list[object] = [None if math.isnan(x) else x for x in numbers.tolist()]
    if invalid is not None:
        for position in np.flatnonzero(invalid).tolist():
            kept[position] = []
    return kept


def normalise_categorical(
    values: Sequence[object] | np.ndarray, max_chars: int = MAX_KEPT_CATEGORY_CHARS
) -> list[object]:
    """A categorical column reduced to canonical text, ``None`` (missing) or ``[]`` (invalid).

    ints and bools become their text (``3`` → ``"3"``, ``true`` → ``"true"``);
    a text longer than ``max_chars`` characters, a float, list or dict is
    invalid. Binning the result gives the counts of binning ``values``, except
    that over-long values count as invalid instead of ``other``.
    """
    if isinstance(values, np.ndarray):
        values = values.tolist()
    kept: list[object] = []
    for value in values:
        text = _category_text(value)
        if text is not None:
            kept.append(text if len(text) <= max_chars else [])
        elif value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
            kept.append(None)
        else:
            kept.append([])  # invalid, or an int too long to print: both never a category
    return kept


class CategoricalBinner:
    """The bin layout of a categorical monitor: ``c`` categories, ``K = c + 3``.

    Layout: ``0 .. c - 1`` the categories in the given order, then ``other``,
    ``missing``, ``invalid``. Immutable and thread-safe.

    Args:
        categories: unique non-empty strings (may be empty: every valid value is
            then ``other``). Raises ValueError otherwise.
    """

    __slots__ = ("_lookup", "categories", "n_bins")

    categories: tuple[str, ...]
    n_bins: int
    _lookup: dict[str, int]

    def __init__(self, categories: Sequence[str]) -> None:
        if isinstance(categories, str):
            raise ValueError(f"categories must be a list of strings, got the string {categories!r}")
        names = tuple(categories)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"categories must be non-empty strings, got {name!r}")
        names = tuple(map(str, names))  # numpy str scalars become plain str
        duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
        if duplicates:
            raise ValueError(f"categories must be unique, repeated: {duplicates!r}")
        object.__setattr__(self, "categories", names)
        object.__setattr__(self, "n_bins", len(names) + 3)
        object.__setattr__(self, "_lookup", {name: i for i, name in enumerate(names)})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CategoricalBinner is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"CategoricalBinner is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        """Equal when the categories are equal, in the same order."""
        if not isinstance(other, CategoricalBinner):
            return NotImplemented
        return self.categories == other.categories

    def __hash__(self) -> int:
        return hash(self.categories)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Rebuild through the constructor (copy, deepcopy, pickle)."""
        return CategoricalBinner, (self.categories,)

    def __repr__(self) -> str:
        return f"CategoricalBinner({list(self.categories)!r})"

    @property
    def other(self) -> int:
        """Layout index of the ``other`` bin (``c``)."""
        return len(self.categories)

    @property
    def missing(self) -> int:
        """Layout index of the ``missing`` bin (``c + 1``)."""
        return len(self.categories) + 1

    @property
    def invalid(self) -> int:
        """Layout index of the ``invalid`` bin (``c + 2``)."""
        return len(self.categories) + 2

    def codes(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """The int32 layout index of every value of a column (docs/configuration.md#bins).

        str matches as is (case-sensitive, no trimming); int by its decimal text
        (``3`` matches ``"3"``); bool as ``"true"``/``"false"``; a valid value
        outside the categories is ``other``; None and float NaN are missing; any
        other float, list, dict or other type is invalid. Columns of only str and
        int take a fast path. A :class:`~driftmon.coded.CodedColumn` is matched
        one distinct value at a time.
        """
        if isinstance(values, CodedColumn):
            return values.layout_codes(
                self.codes(list(values.values)), self.invalid, self.missing
            )
        if isinstance(values, np.ndarray):
            if values.ndim != 1:
                raise ValueError(f"values must be one column (1-D), got shape {values.shape}")
            values = values.tolist()
        n = len(values)
        lookup = self._lookup.get
        other = self.other
        types = set(map(type, values))
        if types <= {str}:
            return np.fromiter(map(lookup, values, repeat(other, n)), dtype=np.int32, count=n)
        if types <= {str, int}:
            try:
                # str(s) is s for a str, and the canonical text for an int.
                return np.fromiter(
                    map(lookup, map(str, values), repeat(other, n)), dtype=np.int32, count=n
                )
            except ValueError:
                pass  # an int past the int-to-text digit limit: the per-value path
        codes = np.empty(n, dtype=np.int32)
        missing, invalid = self.missing, self.invalid
        for position, value in enumerate(values):
            text = _category_text(value)
            if text is not None:
                codes[position] = lookup(text, other)
            elif value is None:
                codes[position] = missing
            elif isinstance(value, (float, np.floating)) and math.isnan(value):
                codes[position] = missing
            elif isinstance(value, (int, np.integer)):
                codes[position] = other  # an int too long to print matches no category
            else:
                codes[position] = invalid
        return codes

    def add_codes(self, codes: np.ndarray, counts: np.ndarray) -> None:
        """Add one per code into ``counts[code]``.

        codes: 1-D int32 array of layout indices in ``[0, n_bins)`` (as
        :meth:`codes` returns). counts: writeable float64 array of shape
        ``(n_bins,)``, added to. Raises ValueError before any count changes.
        """
        if not isinstance(codes, np.ndarray) or codes.dtype != np.int32 or codes.ndim != 1:
            raise ValueError(f"codes must be a 1-D int32 numpy array, got {_describe(codes)}")
        counts = _check_counts(counts, self.n_bins)
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= self.n_bins):
            raise ValueError(
                f"codes must be layout indices in [0, {self.n_bins}), "
                f"got values from {int(codes.min())} to {int(codes.max())}"
            )
        kernels.codes_count(_kernel_input(codes), counts)

    def add_values(self, values: Sequence[object] | np.ndarray, counts: np.ndarray) -> None:
        """Add one column of decoded JSON/CSV values into ``counts`` (rules of :meth:`codes`)."""
        counts = _check_counts(counts, self.n_bins)
        self.add_codes(self.codes(values), counts)

    def index_values(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """The int32 layout index of every value (the same as :meth:`codes`)."""
        return self.codes(values)

    def bin_labels(self) -> list[str]:
        """Labels in layout order: the categories, then ``other``, ``missing``, ``invalid``."""
        return [*self.categories, "other", "missing", "invalid"]


# --- learning layouts from a reference -------------------------------------------


def quantile_levels(count: int) -> np.ndarray:
    """The levels ``0, 1/count, ..., 1`` of ``count`` quantile bins."""
    return np.linspace(0.0, 1.0, count + 1)


def edges_from_quantiles(quantiles: np.ndarray) -> np.ndarray:
    """Quantile bin edges from the quantiles at :func:`quantile_levels`: repeats removed.

    Raises ValueError when a quantile is not finite (interpolation overflowed)
    or fewer than 2 distinct ones remain.
    """
    if not np.all(np.isfinite(quantiles)):
        raise ValueError("the finite values span more than float64 can interpolate between")
    edges = np.unique(quantiles)
    if edges.size < 2:
        raise ValueError(
            f"the finite values have fewer than 2 distinct quantiles (all equal to {edges[0]!r})"
        )
    return cover_maximum(edges, float(edges[-1]))


def cover_maximum(edges: np.ndarray, largest: float) -> np.ndarray:
    """``edges`` with the last one set to the next float above ``largest``.

    Bins are half-open (``e_i <= v < e_{i+1}``, ``v >= e_n`` is overflow), so
    a layout learned from data must end just above the data's maximum, never
    at it: otherwise the reference's own maximum lands in overflow, and with
    ``smoothing: 0`` that one count makes KL and PSI +Inf for any window that
    does not repeat it. Every layout learned from values goes through here.
    ``edges``: strictly increasing float64 whose last edge is ``largest``
    (or below it). Raises ValueError when ``largest`` is the largest finite
    float64, above which no finite edge exists.
    """
    top = math.nextafter(largest, math.inf)
    if not math.isfinite(top):
        raise ValueError(
            f"the largest value is {largest!r}, the largest float64: no finite bin edge lies "
            "above it"
        )
    covered = np.array(edges, dtype=np.float64)
    covered[-1] = max(float(covered[-1]), float(top))
    return covered


def top_k_categories(values: Sequence[object] | np.ndarray, k: int) -> tuple[str, ...]:
    """The ``k`` most frequent valid categories of a column, most frequent first.

    Values count by their canonical text (str as is, int ``3`` as ``"3"``, bool
    as ``"true"``/``"false"``, as :meth:`CategoricalBinner.codes` matches them);
    None, floats, lists, dicts and the empty string are not categories. Ties are
    broken by text, ascending. Returns fewer than ``k`` when fewer distinct
    categories occur (an empty tuple for none). Raises ValueError unless
    ``k >= 1``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    frequency: Counter[str | None]
    if isinstance(values, CodedColumn):
        frequency = Counter()
        for value, rows in values.value_counts():
            frequency[_category_text(value)] += rows
        return _ranked(frequency, int(k))
    if isinstance(values, np.ndarray):
        values = values.tolist()
    try:
        if not set(map(type, values)) <= {str, int}:
            raise ValueError("mixed types: take the per-value path")
        frequency = Counter(map(str, values))
    except ValueError:
        # Mixed types, or an int past the int-to-text digit limit.
        frequency = Counter(map(_category_text, values))
    return _ranked(frequency, int(k))


def _ranked(frequency: Counter[str | None], k: int) -> tuple[str, ...]:
    ranked = sorted(
        ((text, n) for text, n in frequency.items() if text),
        key=lambda item: (-item[1], item[0]),
    )
    return tuple(text for text, _ in ranked[:k])
