"""Binning kernels: float values and category codes to layout indices (docs/configuration.md#bins).

Pure numba functions over arrays; the checked public API is ``driftmon.binning``.
Nothing here validates its arguments: a wrong dtype, shape or layout parameter is
undefined behaviour, which is why only ``driftmon.binning`` calls these.

Numeric layout with ``n`` regular bins (``K = n + 4``)::

    0 underflow | 1 .. n regular | n + 1 overflow | n + 2 missing | n + 3 invalid

A float value is never invalid (that bin is filled by the Python type rules in
``driftmon.binning``); NaN is missing, ``-inf`` underflow and ``+inf`` overflow.

Two kinds of kernels:

- ``*_count`` add one per value into a caller-owned float64 count buffer (``+=``, so
  per-worker buffers merge by addition). Counts are accumulated in private int64
  sub-histograms first: four interleaved copies, so that a run of equal values does
  not serialise on one memory slot, then added to the buffer once per call.
- ``*_index`` write each value's layout index into a caller-owned int32 array (the
  engine keeps per-row indices for "last N rows" windows).

Explicit edges use a lookup table over a uniform grid (see ``edges_grid_cells``)
and then a short, exact correction; see ``_edges_index_block`` for why the result
equals a binary search for every value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Values per block in the count kernels: the int32 index buffer (8 KiB) and the
# block of values (16 KiB) stay in L1 while the block is scattered.
BLOCK_VALUES = 2048

# Above this many bins the four sub-histograms would cost more to zero and sum
# than they save: large layouts rarely hit the same bin twice in a row.
MAX_BINS_FOR_LANES = 4096

# Grid kinds of an explicit-edges lookup table.
GRID_LINEAR = 0
"""Cells of equal width in value: ``floor((v - e0) * scale)``."""
GRID_ORDERED_BITS = 1
"""Cells of equal width in the order-preserving integer image of a float64.

The image (``_ordered_key``) grows like ``log2 |v|`` with linear pieces inside
each binade, so this grid resolves edges spread over many orders of magnitude
(quantiles of heavy-tailed data) on both sides of zero.
"""

# Searches of at most this many steps walk the edges linearly (branch-free);
# longer ones use a fixed six-step binary search (below).
MAX_LINEAR_STEPS = 2

# +inf entries appended to the edges so that the fixed-depth searches may read
# past the last edge without a bounds test: the six-step search reads at most
# 63 entries past the start of its range.
SEARCH_PADDING = 64

_MAGNITUDE_MASK = np.int64(0x7FFF_FFFF_FFFF_FFFF)


# --- uniform bins ------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def _uniform_bin(value, lo, hi, scale, top, overflow, missing):
    """Layout index of one value, uniform bins (scalars only: no array refcounts).

    ``floor((value - lo) * scale)`` clamped to ``[0, count - 1]``, plus one for the
    underflow bin, exactly as ``tests/naive.py`` ``uniform_bin``. Written with
    selects, not branches, so mixed in/out-of-range data costs no mispredictions.
    """
    position = (value - lo) * scale
    # NaN, negative and huge positions are clamped first so that the int
    # conversion is always defined; the selects below override them anyway.
    position = position if position > 0.0 else 0.0
    position = position if position < top else top
    index = np.int32(position) + np.int32(1)
    index = np.int32(0) if value < lo else index
    index = overflow if value >= hi else index
    index = missing if value != value else index
    return index


@njit(nogil=True, cache=True)
def _uniform_index_block(values, lo, hi, scale, count, out):
    top = np.float64(count - 1)
    overflow = np.int32(count + 1)
    missing = np.int32(count + 2)
    for j in range(values.size):
        out[j] = _uniform_bin(values[j], lo, hi, scale, top, overflow, missing)


@njit(nogil=True, cache=True)
def uniform_index(values, lo, hi, scale, count, out):
    """Write the layout index of every value into ``out`` (uniform bins).

    values: float64[m]; lo < hi finite; scale = count / (hi - lo) as computed in
    Python (the same rounding as the reference); count >= 1 regular bins;
    out: int32[m], overwritten. Indices are in ``[0, count + 2]``.
    """
    _uniform_index_block(values, lo, hi, scale, count, out)


@njit(nogil=True, cache=True)
def _new_lanes(n_bins):
    """Zeroed int64 sub-histograms and the stride between them (0: one shared lane)."""
    if n_bins <= MAX_BINS_FOR_LANES:
        return np.zeros(4 * n_bins, np.int64), n_bins
    return np.zeros(n_bins, np.int64), 0


@njit(nogil=True, cache=True)
def _scatter(indices, m, lanes, stride):
    """Add one per index of ``indices[:m]`` into the sub-histograms, round-robin."""
    m4 = m - m % 4
    for j in range(0, m4, 4):
        lanes[indices[j]] += 1
        lanes[stride + indices[j + 1]] += 1
        lanes[2 * stride + indices[j + 2]] += 1
        lanes[3 * stride + indices[j + 3]] += 1
    for j in range(m4, m):
        lanes[indices[j]] += 1


@njit(nogil=True, cache=True)
def _merge_lanes(lanes, stride, counts):
    """counts += the sum of the sub-histograms (exact below 2**53 per bin)."""
    n_bins = counts.size
    n_lanes = 4 if stride > 0 else 1
    for u in range(n_lanes):
        for i in range(n_bins):
            counts[i] += lanes[u * stride + i]


@njit(nogil=True, cache=True)
def uniform_count(values, lo, hi, scale, count, counts):
    """Add one per value into ``counts`` at its layout index (uniform bins).

    Arguments as ``uniform_index``; counts: float64[count + 4], added to.
    """
    if values.size == 0:
        return
    lanes, stride = _new_lanes(counts.size)
    block = np.empty(BLOCK_VALUES, np.int32)
    for start in range(0, values.size, BLOCK_VALUES):
        chunk = values[start : start + BLOCK_VALUES]
        _uniform_index_block(chunk, lo, hi, scale, count, block)
        _scatter(block, chunk.size, lanes, stride)
    _merge_lanes(lanes, stride, counts)


# --- explicit edges ----------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def _ordered_key(bits, key_floor):
    """Order-preserving int64 image of a float64 given by its int64 bit pattern.

    Magnitudes more than a binade below the smallest non-zero edge ``e`` collapse
    onto 0 (``key_floor`` is the magnitude bits of ``e / 2``, or 0), so the
    denormal and tiny binades take no grid cells when the edges straddle or start
    at zero, while ``-e``, 0 and ``e`` stay a binade apart in key space. One bit
    is dropped so that key differences of any two finite values fit in an int64.
    -0.0 and +0.0 share the key 0 (``key_floor >= 0``). Non-decreasing in the
    float value.
    """
    magnitude = max((bits & _MAGNITUDE_MASK) - key_floor, np.int64(0)) >> 1
    sign = bits >> 63  # all ones for a negative value: negate without a branch
    return (magnitude ^ sign) - sign


@njit(nogil=True, cache=True)
def _grid_cells_block(values, bits, grid_kind, e0, scale, key_floor, key0, shift, last_cell, cells):
    """Grid cell of every value into ``cells``, clamped to ``[0, last_cell]``.

    Non-decreasing in the value; NaN and out-of-range values get a valid cell too,
    so the search can run before knowing whether a value is in range. One loop
    per grid kind (no per-value test of the kind).
    """
    if grid_kind == GRID_ORDERED_BITS:
        for j in range(values.size):
            cell = (_ordered_key(bits[j], key_floor) - key0) >> shift
            cell = max(cell, np.int64(0))
            cells[j] = min(cell, last_cell)
    else:
        for j in range(values.size):
            position = (values[j] - e0) * scale
            position = position if position > 0.0 else 0.0
            cells[j] = np.int64(position) if position < last_cell else last_cell


@njit(nogil=True, cache=True)
def edges_grid_cells(edges, grid_kind, e0, scale, key_floor, key0, shift, last_cell):
    """Grid cell of every edge, by the very arithmetic the search kernels use.

    edges: float64[m] (C-contiguous); the grid parameters as for ``edges_index``.
    Returns int64[m]. A lookup table built from these cells is exact only because
    it shares ``_grid_cells_block`` with the search (see ``_edges_index_block``).
    """
    cells = np.empty(edges.size, np.int64)
    _grid_cells_block(
        edges, edges.view(np.int64), grid_kind, e0, scale, key_floor, key0, shift, last_cell, cells
    )
    return cells


@njit(nogil=True, cache=True)
def _edges_index_block(
    values,
    bits,
    search_edges,
    n_regular,
    cell_start,
    steps,
    grid_kind,
    scale,
    key_floor,
    key0,
    shift,
    out,
):
    """Layout index of every value against explicit edges, into ``out``.

    Why this is exact. Let ``cell(v)`` be the (non-decreasing) grid cell of a
    value and ``cell_start[g]`` the number of interior edges ``e_1..e_{n-1}``
    whose cell is below ``g``. For ``e0 <= v < en`` in cell ``g`` the regular bin
    ``i`` (the number of interior edges ``<= v``) satisfies
    ``cell_start[g] <= i <= cell_start[g + 1]``: an edge in a lower cell is below
    ``v`` (monotonicity), an edge in a higher cell is above it. So the bin is
    found by counting, from ``cell_start[g]``, the edges of cell ``g`` that are
    ``<= v``; ``steps`` (the most interior edges in any one cell) bounds that
    count. Values exactly on an edge, edges closer than a cell and rounding in
    the cell arithmetic are all covered by the same argument: it needs only
    monotonicity and the table being built with the same ``_grid_cells_block``.

    Two passes per block: the cells of all values first (``out`` holds them, a
    cell number is below ``2**31``), then the search. Each loop is small and
    branch-free, which keeps the machine code fast however numba links it (a
    single fused loop ran at half speed when loaded from numba's cache). The
    search runs for every value, in range or not, and its result is then
    overridden for NaN and out-of-range values. ``search_edges`` is the edges
    followed by ``SEARCH_PADDING`` +inf entries, so the fixed-length searches
    never read past the array.
    """
    e0 = search_edges[0]
    en = search_edges[n_regular]
    last_cell = np.int64(cell_start.size - 2)
    underflow = np.int32(0)
    overflow = np.int32(n_regular + 1)
    missing = np.int32(n_regular + 2)
    _grid_cells_block(values, bits, grid_kind, e0, scale, key_floor, key0, shift, last_cell, out)
    if steps <= MAX_LINEAR_STEPS:
        for j in range(values.size):
            value = values[j]
            regular = np.int64(cell_start[out[j]])
            for _ in range(steps):
                regular += np.int64(search_edges[regular + 1] <= value)
            index = np.int32(regular + 1)
            index = underflow if value < e0 else index
            index = overflow if value >= en else index
            index = missing if value != value else index
            out[j] = index
    else:
        for j in range(values.size):
            value = values[j]
            cell = out[j]
            regular = np.int64(cell_start[cell])
            # Candidates are regular .. regular + span. A cell holding 64 or
            # more edges (pathological clustering) is first narrowed by an
            # ordinary binary search; then six unrolled steps with constant
            # strides, which compile to conditional moves (a loop with a
            # variable trip count is turned back into mispredicted branches).
            span = np.int64(cell_start[cell + 1]) - regular
            while span >= SEARCH_PADDING:
                half = (span + 1) >> 1
                if search_edges[regular + half] <= value:
                    regular += half
                    span -= half
                else:
                    span = half - 1
            regular += 32 if search_edges[regular + 32] <= value else 0
            regular += 16 if search_edges[regular + 16] <= value else 0
            regular += 8 if search_edges[regular + 8] <= value else 0
            regular += 4 if search_edges[regular + 4] <= value else 0
            regular += 2 if search_edges[regular + 2] <= value else 0
            regular += 1 if search_edges[regular + 1] <= value else 0
            index = np.int32(regular + 1)
            index = underflow if value < e0 else index
            index = overflow if value >= en else index
            index = missing if value != value else index
            out[j] = index


@njit(nogil=True, cache=True)
def edges_index(
    values,
    search_edges,
    n_regular,
    cell_start,
    steps,
    grid_kind,
    scale,
    key_floor,
    key0,
    shift,
    out,
):
    """Write the layout index of every value into ``out`` (explicit edges).

    values: float64[m], C-contiguous. search_edges: float64[n_regular + 1 +
    SEARCH_PADDING], the strictly increasing edges ``e0 < ... < en`` then +inf.
    cell_start: int32[cells + 1], cell_start[g] = number of interior edges whose
    grid cell is below g (so cell_start[-1] = n_regular - 1). steps: the most
    interior edges in one cell. grid_kind, scale, key_floor, key0, shift: the grid
    (``GRID_LINEAR`` uses ``e0`` and ``scale``, ``GRID_ORDERED_BITS`` the three
    integers). out: int32[m], overwritten. Bin i holds e_i <= v < e_{i+1};
    v < e0 is underflow, v >= en overflow, NaN missing.
    """
    _edges_index_block(
        values,
        values.view(np.int64),
        search_edges,
        n_regular,
        cell_start,
        steps,
        grid_kind,
        scale,
        key_floor,
        key0,
        shift,
        out,
    )


@njit(nogil=True, cache=True)
def edges_count(
    values,
    search_edges,
    n_regular,
    cell_start,
    steps,
    grid_kind,
    scale,
    key_floor,
    key0,
    shift,
    counts,
):
    """Add one per value into ``counts`` at its layout index (explicit edges).

    Arguments as ``edges_index``; counts: float64[n_regular + 4], added to.
    """
    if values.size == 0:
        return
    bits = values.view(np.int64)
    lanes, stride = _new_lanes(counts.size)
    block = np.empty(BLOCK_VALUES, np.int32)
    for start in range(0, values.size, BLOCK_VALUES):
        stop = min(start + BLOCK_VALUES, values.size)
        _edges_index_block(
            values[start:stop],
            bits[start:stop],
            search_edges,
            n_regular,
            cell_start,
            steps,
            grid_kind,
            scale,
            key_floor,
            key0,
            shift,
            block,
        )
        _scatter(block, stop - start, lanes, stride)
    _merge_lanes(lanes, stride, counts)


# --- category codes ----------------------------------------------------------


@njit(nogil=True, cache=True)
def codes_count(codes, counts):
    """Add one per code into ``counts[code]`` (a bincount that adds).

    codes: int32[m], every code in ``[0, counts.size)`` (checked by the caller);
    counts: float64[K], added to.
    """
    if codes.size == 0:
        return
    lanes, stride = _new_lanes(counts.size)
    _scatter(codes, codes.size, lanes, stride)
    _merge_lanes(lanes, stride, counts)


# --- start-up ----------------------------------------------------------------


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) every kernel on tiny inputs.

    The argument types are those ``driftmon.binning`` passes (read-only,
    C-contiguous inputs; writeable outputs), so after this the first real batch
    runs no JIT compiler.
    """

    def readonly(array: np.ndarray) -> np.ndarray:
        array.flags.writeable = False
        return array

    values = readonly(np.array([-1.0, 0.0, 0.25, 0.5, 1.0, np.inf, np.nan]))
    index = np.empty(values.size, np.int32)
    counts = np.zeros(6)
    uniform_index(values, 0.0, 1.0, 2.0, 2, index)
    uniform_count(values, 0.0, 1.0, 2.0, 2, counts)
    # edges [0, 0.5, 1] on a 3-cell grid; the interior edge 0.5 is in cell 1
    edges = readonly(np.array([0.0, 0.5, 1.0]))
    search_edges = readonly(np.concatenate([edges, np.full(SEARCH_PADDING, np.inf)]))
    cell_start = readonly(np.array([0, 0, 1, 1], np.int32))
    for grid_kind in (GRID_LINEAR, GRID_ORDERED_BITS):
        edges_grid_cells(edges[1:2], grid_kind, 0.0, 3.0, 0, 0, 60, 2)
        edges_index(values, search_edges, 2, cell_start, 1, grid_kind, 3.0, 0, 0, 60, index)
        edges_count(values, search_edges, 2, cell_start, 1, grid_kind, 3.0, 0, 0, 60, counts)
    codes_count(readonly(np.array([0, 1, 5], np.int32)), counts)
