"""Live windows: the recent data of one stream, as counts over its bins (docs/configuration.md).

A stream's monitors own a contiguous slice of the engine's packed bin arrays.
A window keeps the live counts of that slice up to date incrementally, so an
evaluation reads them as they stand and its cost never depends on the window
length:

- :class:`PaneWindow` (``{length, panes}``): a ring ``[pane, bin]`` of time
  panes; the live counts are the sum of the newest ``panes`` panes, the
  current one included. A pane that falls out is subtracted whole.
- :class:`SampleWindow` (``{samples: N}``): a ring of the last N rows' bin
  indices ``[row, feature]``; each new row evicts the oldest once the ring is
  full, so the live counts are exactly those of the last N rows.

Both follow :class:`LiveWindow`, so the engine never asks which kind it
holds. Counts are float64 holding whole numbers (exact up to 2**53 rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

NOT_REACHED = -1
"""Index of a feature a row did not reach (a CloudEvent maps only some features)."""


class Carry(NamedTuple):
    """One feature whose window state survives a repack: where its bins were, and are."""

    old_column: int
    new_column: int
    old_start: int
    new_start: int
    n_bins: int


class LiveWindow(Protocol):
    """What the engine needs of a window; every window kind implements all of it.

    ``live`` is the window's counts over its stream's bins, kept up to date
    by :meth:`add` and :meth:`advance`. ``keeps_rows`` says whether
    :meth:`add` needs each row's bin ``indices`` (else they may be ``None``).
    """

    live: np.ndarray
    keeps_rows: bool

    def add(self, counts: np.ndarray, now: float, indices: np.ndarray | None = None) -> None:
        """Add a batch: its ``counts`` over the window's bins, at time ``now``."""
        ...

    def advance(self, now: float) -> None:
        """Let time pass to ``now``: expire what fell out of the window."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this window (checkpoints)."""
        ...

    def restore(self, state: dict[str, np.ndarray], now: float) -> None:
        """Load arrays written by :meth:`state`, then :meth:`advance` to ``now``."""
        ...

    def carried(
        self, state: Mapping[str, np.ndarray], carries: Sequence[Carry]
    ) -> dict[str, np.ndarray]:
        """``state`` of a window of another layout, moved into this one's (others empty)."""
        ...


class PaneWindow:
    """A time window of ``panes`` panes, each ``pane_width_s`` seconds wide.

    ``live`` is the caller's array (usually a view into the engine's packed
    live counts) and is kept equal to ``pane_counts.sum(axis=0)``. Panes are
    numbered by ``floor(time / pane_width_s)``; slot ``n % panes`` of the ring
    holds pane ``n``.
    """

    def __init__(self, live: np.ndarray, panes: int, pane_width_s: float) -> None:
        if panes < 1:
            raise ValueError(f"panes must be >= 1, got {panes}")
        if not pane_width_s > 0:
            raise ValueError(f"pane_width_s must be > 0, got {pane_width_s}")
        self.live = live
        self.panes = panes
        self.pane_width_s = pane_width_s
        self.pane_counts = np.zeros((panes, live.shape[0]), dtype=np.float64)
        self.current_pane: int | None = None

    keeps_rows = False

    def pane_of(self, now: float) -> int:
        """The number of the pane that holds time ``now`` (seconds)."""
        return math.floor(now / self.pane_width_s)

    def advance(self, now: float) -> None:
        """Rotate to the pane holding ``now``, dropping panes that fell out whole.

        Time never runs backwards for a window: a ``now`` older than the
        current pane leaves it where it is (late rows land in the current pane).
        """
        pane = self.pane_of(now)
        if self.current_pane is None:
            self.current_pane = pane
            return
        steps = pane - self.current_pane
        if steps <= 0:
            return
        if steps >= self.panes:
            # A gap longer than the window: everything in it has expired.
            self.pane_counts[:] = 0.0
            self.live[:] = 0.0
        else:
            for n in range(self.current_pane + 1, pane + 1):
                slot = n % self.panes
                self.live -= self.pane_counts[slot]
                self.pane_counts[slot] = 0.0
        self.current_pane = pane

    def add(self, counts: np.ndarray, now: float, indices: np.ndarray | None = None) -> None:
        """Add a batch's ``counts`` (over this window's bins) at time ``now``; no ``indices``."""
        self.advance(now)
        assert self.current_pane is not None
        self.pane_counts[self.current_pane % self.panes] += counts
        self.live += counts

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this window (checkpoints)."""
        current = -1 if self.current_pane is None else self.current_pane
        return {
            "pane_counts": self.pane_counts.copy(),
            "current_pane": np.array([current], dtype=np.int64),
        }

    def restore(self, state: dict[str, np.ndarray], now: float) -> None:
        """Load arrays written by :meth:`state`, then drop panes expired by ``now``."""
        pane_counts = np.asarray(state["pane_counts"], dtype=np.float64)
        if pane_counts.shape != self.pane_counts.shape:
            raise ValueError(
                f"pane_counts has shape {pane_counts.shape}, expected {self.pane_counts.shape}"
            )
        self.pane_counts[:] = pane_counts
        current = int(state["current_pane"][0])
        self.current_pane = None if current < 0 else current
        self.live[:] = self.pane_counts.sum(axis=0)
        self.advance(now)

    def carried(
        self, state: Mapping[str, np.ndarray], carries: Sequence[Carry]
    ) -> dict[str, np.ndarray]:
        """``state`` of another layout with each carried feature's panes moved to its new bins."""
        old_panes = np.asarray(state["pane_counts"], dtype=np.float64)
        panes = np.zeros_like(self.pane_counts)
        for carry in carries:
            panes[:, carry.new_start : carry.new_start + carry.n_bins] = old_panes[
                :, carry.old_start : carry.old_start + carry.n_bins
            ]
        return {"pane_counts": panes, "current_pane": state["current_pane"]}


class SampleWindow:
    """Exactly the last ``samples`` rows of a stream.

    ``live`` is the caller's array over the stream's bins. Each row is stored
    as one bin index per feature, relative to the start of the stream's slice
    (``NOT_REACHED`` for a feature the row did not reach).
    """

    def __init__(self, live: np.ndarray, samples: int, n_features: int) -> None:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.live = live
        self.samples = samples
        self.ring = np.full((samples, n_features), NOT_REACHED, dtype=np.int32)
        self.head = 0  # slot of the next row
        self.filled = 0

    keeps_rows = True

    def add(self, counts: np.ndarray, now: float, indices: np.ndarray | None = None) -> None:
        """Append the rows ``indices`` (``int32[rows, features]``); ``counts`` are theirs."""
        if indices is None:
            raise ValueError("a samples window needs each row's bin indices")
        self.add_rows(indices, counts)

    def advance(self, now: float) -> None:
        """Nothing expires with time in a samples window."""

    def add_rows(self, indices: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Append rows given as bin indices ``int32[rows, features]``.

        ``counts``, when given, is the caller's count of those same rows over
        this window's bins (``np.bincount`` of the reached indices, as the
        engine gets it while binning); it saves counting them again.
        """
        n = indices.shape[0]
        if n == 0:
            return
        if n > self.samples:
            # Only the newest `samples` rows survive; the others would be added
            # and evicted within this same call.
            indices = indices[n - self.samples :]
            n = self.samples
            counts = None
        n_bins = self.live.shape[0]
        # The slots to overwrite as at most two contiguous runs of the ring
        # (slices, not fancy indexing: no gather or scatter copies).
        stop = self.head + n
        runs = [(self.head, min(stop, self.samples), 0)]
        if stop > self.samples:
            runs.append((0, stop - self.samples, self.samples - self.head))
        for start, end, taken in runs:
            slots = self.ring[start:end]
            # Slots at or past `filled` were never written while the ring fills
            # up (it fills from slot 0): nothing to evict there.
            if start < self.filled:
                self.live -= _bincount(slots, n_bins)
            slots[:] = indices[taken : taken + end - start]
        self.live += _bincount(indices, n_bins) if counts is None else counts
        self.head = int(stop % self.samples)
        self.filled = min(self.samples, self.filled + n)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this window (checkpoints)."""
        return {
            "ring": self.ring.copy(),
            "head": np.array([self.head, self.filled], dtype=np.int64),
        }

    def restore(self, state: dict[str, np.ndarray], now: float = 0.0) -> None:
        """Load arrays written by :meth:`state` (``now`` is unused: rows do not expire)."""
        ring = np.asarray(state["ring"])
        if ring.shape != self.ring.shape:
            raise ValueError(f"ring has shape {ring.shape}, expected {self.ring.shape}")
        n_bins = self.live.shape[0]
        if ring.size and (ring.max() >= n_bins or ring.min() < NOT_REACHED):
            raise ValueError("ring holds bin indices outside the stream's bins")
        self.ring[:] = ring
        self.head, self.filled = (int(v) for v in state["head"][:2])
        if not (0 <= self.head < self.samples and 0 <= self.filled <= self.samples):
            raise ValueError("ring head or fill count out of range")
        valid = self.ring[self.ring >= 0]
        self.live[:] = np.bincount(valid, minlength=n_bins)

    def carried(
        self, state: Mapping[str, np.ndarray], carries: Sequence[Carry]
    ) -> dict[str, np.ndarray]:
        """``state`` of another layout with each carried feature's column re-based."""
        old_ring = np.asarray(state["ring"])
        ring = np.full_like(self.ring, NOT_REACHED)
        for carry in carries:
            column = old_ring[:, carry.old_column]
            shift = carry.new_start - carry.old_start
            ring[:, carry.new_column] = np.where(column >= 0, column + shift, NOT_REACHED)
        return {"ring": ring, "head": state["head"]}


def _bincount(indices: np.ndarray, n_bins: int) -> np.ndarray:
    """Occurrences of each bin in ``indices``, ``NOT_REACHED`` entries left out."""
    flat = indices.reshape(-1)
    if flat.size and flat.min() < 0:
        flat = flat[flat >= 0]
    return np.bincount(flat, minlength=n_bins)
