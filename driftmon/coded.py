"""Dictionary-coded columns: a column as small integer codes into a list of distinct values.

Columnar sources (Arrow bodies, Parquet and CSV references) hand categorical
features over in this form, so that a million rows of a few distinct strings
are binned by one lookup per *distinct* value and one array gather, never by
building a Python string per row. The binner applies the type rules
(docs/configuration.md) to the distinct values only
(:meth:`driftmon.binning.CategoricalBinner.codes`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, overload

import numpy as np

MISSING: Final = -1
"""Code of a missing value (absent, null)."""

INVALID: Final = -2
"""Code of a value of the wrong type whose text does not matter (e.g. a float category)."""


class CodedColumn(Sequence[object]):
    """A column of ``len(codes)`` values: ``values[codes[i]]``, or missing / invalid.

    ``codes`` is a 1-D int32 array of indices into ``values`` (the distinct
    decoded values, any Python objects), or :data:`MISSING` / :data:`INVALID`.
    Behaves as the sequence of decoded values it stands for (``None`` for
    missing; an invalid entry decodes to a list, which §2 counts as invalid),
    so code that does not know the type still sees the same values.
    """

    __slots__ = ("codes", "values")

    def __init__(self, codes: np.ndarray, values: Sequence[object]) -> None:
        if not isinstance(codes, np.ndarray) or codes.dtype != np.int32 or codes.ndim != 1:
            raise ValueError("codes must be a 1-D int32 numpy array")
        if codes.size and (int(codes.min()) < INVALID or int(codes.max()) >= len(values)):
            raise ValueError(f"codes must be in [{INVALID}, {len(values)})")
        self.codes = codes
        self.values = tuple(values)

    def __len__(self) -> int:
        return int(self.codes.size)

    @overload
    def __getitem__(self, index: int) -> object: ...

    @overload
    def __getitem__(self, index: slice) -> CodedColumn: ...

    def __getitem__(self, index: int | slice) -> object:
        if isinstance(index, slice):
            return CodedColumn(self.codes[index], self.values)
        return self._decode(int(self.codes[index]))

    def _decode(self, code: int) -> object:
        if code == MISSING:
            return None
        if code == INVALID:
            return []  # a list: invalid under §2 for either feature type
        return self.values[code]

    def __iter__(self) -> Iterator[object]:
        return iter(self.tolist())

    def tolist(self) -> list[object]:
        """The decoded values, one Python object per row (slow: for rare paths)."""
        table = [*self.values, [], None]  # codes -2 and -1 index the last two
        return [table[code] for code in self.codes.tolist()]

    def value_counts(self) -> list[tuple[object, int]]:
        """``(value, rows)`` for each distinct value that occurs (missing and invalid left out)."""
        valid = self.codes[self.codes >= 0]
        counts = np.bincount(valid, minlength=len(self.values))
        return [(self.values[i], int(n)) for i, n in enumerate(counts.tolist()) if n]

    def layout_codes(self, value_codes: np.ndarray, invalid: int, missing: int) -> np.ndarray:
        """Per-row layout indices, given each distinct value's layout index (int32)."""
        table = np.empty(len(self.values) + 2, dtype=np.int32)
        table[: len(self.values)] = value_codes
        table[INVALID] = invalid
        table[MISSING] = missing
        return table[self.codes]


class FloatChunks(Sequence[float]):
    """A float64 column held as several arrays (the row groups of a Parquet file), uncopied.

    The reference loader learns quantiles and bins chunk by chunk; anything
    else sees the concatenated column (:meth:`array`).
    """

    __slots__ = ("chunks",)

    def __init__(self, chunks: Sequence[np.ndarray]) -> None:
        for chunk in chunks:
            if not isinstance(chunk, np.ndarray) or chunk.dtype != np.float64 or chunk.ndim != 1:
                raise ValueError("chunks must be 1-D float64 numpy arrays")
        self.chunks = tuple(chunks)

    def __len__(self) -> int:
        return sum(chunk.size for chunk in self.chunks)

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> FloatChunks: ...

    def __getitem__(self, index: int | slice) -> float | FloatChunks:
        if isinstance(index, slice):
            return FloatChunks([self.array()[index]])
        return float(self.array()[index])

    def array(self) -> np.ndarray:
        """The whole column as one array (a copy when there are several chunks)."""
        if len(self.chunks) == 1:
            return self.chunks[0]
        if not self.chunks:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate(self.chunks)
