"""Values ingested per monitor and kind (``driftmon_ingest_values_total``), as one array op.

Every packed bin belongs to one kind of value (§2 bin order): numeric monitors
have ``underflow``, ``ok`` (the regular bins), ``overflow``, ``missing``,
``invalid``; categorical ones ``ok`` (the listed categories), ``other``,
``missing``, ``invalid``. :class:`KindLayout` maps each bin to a
``(monitor, kind)`` slot once per packing, so a scrape's totals are one copy
of the engine's ingested counts (under the ingest lock) and one
``np.bincount`` (outside it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

VALUE_KINDS: tuple[str, ...] = ("ok", "missing", "invalid", "other", "underflow", "overflow")
"""Every kind, in the order of a slot's columns."""

_OK, _MISSING, _INVALID, _OTHER, _UNDERFLOW, _OVERFLOW = range(len(VALUE_KINDS))
# The kinds each monitor type has, in the order its totals are listed (and exported).
NUMERIC_KINDS = (_OK, _UNDERFLOW, _OVERFLOW, _MISSING, _INVALID)
CATEGORICAL_KINDS = (_OK, _OTHER, _MISSING, _INVALID)


@dataclass(frozen=True)
class KindLayout:
    """Which ``(monitor, kind)`` slot each packed bin counts into; fixed per packing."""

    names: tuple[tuple[str, str], ...]
    numeric: np.ndarray  # bool[M]
    slots: np.ndarray  # int64[B]: monitor * len(VALUE_KINDS) + kind

    @classmethod
    def build(
        cls, names: Sequence[tuple[str, str]], n_bins: Sequence[int], numeric: Sequence[bool]
    ) -> KindLayout:
        """The layout of monitors ``names`` with ``n_bins`` bins each, packed in order."""
        sizes = np.asarray(n_bins, dtype=np.int64)
        is_numeric = np.asarray(numeric, dtype=bool)
        monitor = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        position = np.arange(int(sizes.sum()), dtype=np.int64) - starts[monitor]
        from_end = sizes[monitor] - position
        bin_numeric = is_numeric[monitor]
        kind = np.full(position.size, _OK, dtype=np.int64)
        kind[bin_numeric & (position == 0)] = _UNDERFLOW
        kind[from_end == 3] = np.where(bin_numeric[from_end == 3], _OVERFLOW, _OTHER)
        kind[from_end == 2] = _MISSING
        kind[from_end == 1] = _INVALID
        return cls(tuple(names), is_numeric, monitor * len(VALUE_KINDS) + kind)

    def totals(self, ingested: np.ndarray) -> ValueKindTotals:
        """Totals of ``ingested`` (float64[B], not kept: pass a copy taken under the lock)."""
        sums = np.bincount(
            self.slots, weights=ingested, minlength=len(self.names) * len(VALUE_KINDS)
        )
        return ValueKindTotals(self, sums.reshape(len(self.names), len(VALUE_KINDS)))


@dataclass(frozen=True)
class ValueKindTotals:
    """Values binned since start per monitor and kind; iterates as the exporter reads it."""

    layout: KindLayout
    sums: np.ndarray  # float64[M, len(VALUE_KINDS)]

    def __iter__(self) -> Iterator[tuple[str, str, Mapping[str, float]]]:
        """``(stream, feature, {kind: total})`` per monitor, in packing order."""
        rows = self.sums.tolist()
        for (stream, feature), numeric, row in zip(
            self.layout.names, self.layout.numeric.tolist(), rows, strict=True
        ):
            kinds = NUMERIC_KINDS if numeric else CATEGORICAL_KINDS
            yield stream, feature, {VALUE_KINDS[k]: row[k] for k in kinds}

    def __len__(self) -> int:
        return len(self.layout.names)
