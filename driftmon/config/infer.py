"""Which columns of a reference file to monitor, and how (``driftmon init``, ``features: infer``).

One feature per useful column, typed from the data:

- floating and decimal columns → numeric, quantile bins;
- string, boolean and dictionary columns → categorical: the full category
  list when it is short, else ``top_k``;
- integer columns → categorical when they hold few distinct values (codes,
  ratings, counts of a few), else numeric;
- left out, each with its reason: all-null columns, columns unique per row
  (IDs), timestamps (offered as ``time_field``), constant numbers (no bins to
  learn), and types that carry no distribution (binary, lists, structs).

Categories and quantile layouts are learned through the same reader the
daemon uses for the reference (:func:`driftmon.sources.columnar.read_batch`), so a
config written from them always loads: a column whose layout cannot be
learned is left out with the reason rather than written.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import pyarrow as pa
import pyarrow.compute as pc

from driftmon.binning import top_k_categories
from driftmon.config.model import FeatureConfig, QuantileBins
from driftmon.quantiles import finite_numbers, quantile_edges
from driftmon.sources.columnar import read_arrow_table, read_batch

QUANTILE_BINS: Final = 10
"""Quantile bins of an inferred numeric feature."""

MAX_LISTED_CATEGORIES: Final = 20
"""Up to this many distinct categories are listed in full; more get ``top_k``."""

TOP_K: Final = 20
"""``top_k`` of a categorical feature with more distinct categories than are listed."""

MAX_CODE_VALUES: Final = 20
"""An integer column with at most this many distinct values is categorical."""

MIN_ROWS_FOR_ID: Final = 20
"""A column is taken for an ID (unique per row) only in a table of at least this many rows."""

_LARGE_FILE_BYTES: Final = 50 << 20  # progress lines on stderr for files larger than this
_TIME_NAME = re.compile(r"(^|_)(time|timestamp|ts|datetime|date)$|_at$", re.IGNORECASE)
_EPOCH_SECONDS: Final = (9.0e8, 4.1e9)  # 1998 .. 2099
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class InferredFeature:
    """A column to monitor: its type and layout, and what the data showed (``note``)."""

    name: str
    type: Kind
    note: str
    categories: tuple[str, ...] | None = None
    top_k: int | None = None

    def config(self, smoothing: float) -> FeatureConfig:
        """The feature as the config loader would have read it."""
        if self.type == "numeric":
            return FeatureConfig(self.name, "numeric", smoothing, bins=QuantileBins(QUANTILE_BINS))
        return FeatureConfig(
            self.name, "categorical", smoothing, categories=self.categories, top_k=self.top_k
        )


@dataclass(frozen=True)
class Inference:
    """What a reference file's columns gave: features, skipped columns and why, time fields."""

    path: Path
    rows: int
    columns: int
    features: tuple[InferredFeature, ...]
    skipped: tuple[tuple[str, str], ...]
    time_fields: tuple[str, ...]

    def summary(self) -> str:
        """One paragraph for humans: columns seen, features kept, columns skipped and why."""
        lines = [
            f"{self.path}: {self.rows} rows, {self.columns} columns: "
            f"{len(self.features)} features, {len(self.skipped)} skipped"
        ]
        lines += [f"  skipped {name!r}: {reason}" for name, reason in self.skipped]
        if self.time_fields:
            lines.append(f"  time_field candidates: {', '.join(self.time_fields)}")
        return "\n".join(lines)


def _distinct(column: pa.ChunkedArray) -> int:
    return int(pc.count_distinct(column, mode="only_valid").as_py())


def _looks_like_epoch_seconds(name: str, column: pa.ChunkedArray) -> bool:
    if not _TIME_NAME.search(name):
        return False
    low, high = pc.min_max(column).values()
    lo, hi = low.as_py(), high.as_py()
    return lo is not None and _EPOCH_SECONDS[0] <= lo and hi <= _EPOCH_SECONDS[1]


def _looks_like_rfc3339(column: pa.ChunkedArray) -> bool:
    sample = pc.drop_null(column.slice(0, 200)).to_pylist()
    return bool(sample) and all(
        isinstance(value, str) and _RFC3339.match(value) for value in sample
    )


def _classify(name: str, column: pa.ChunkedArray, rows: int) -> tuple[Kind | None, str]:
    """(the feature type, a note) or (None, the reason the column is left out)."""
    arrow_type = column.type
    if pa.types.is_dictionary(arrow_type):
        column = column.cast(arrow_type.value_type)
        arrow_type = column.type
    present = rows - column.null_count
    if present == 0 or pa.types.is_null(arrow_type):
        return None, "all values are null"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return None, f"a timestamp ({arrow_type}): offered as time_field"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        if pa.types.is_floating(arrow_type) and _looks_like_epoch_seconds(name, column):
            return None, "epoch seconds by its name and values: offered as time_field"
        distinct = _distinct(column)
        if distinct < 2:
            return None, "constant: one value, no bins to learn"
        return "numeric", f"{arrow_type}, {distinct} distinct values"
    if pa.types.is_integer(arrow_type):
        distinct = _distinct(column)
        if distinct == rows and rows >= MIN_ROWS_FOR_ID:
            return None, "unique per row: an ID"
        if _looks_like_epoch_seconds(name, column):
            return None, "epoch seconds by its name and values: offered as time_field"
        if distinct <= MAX_CODE_VALUES:
            return "categorical", f"{arrow_type} with {distinct} distinct values: codes"
        return "numeric", f"{arrow_type}, {distinct} distinct values"
    if pa.types.is_boolean(arrow_type):
        return "categorical", "boolean"
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        distinct = _distinct(column)
        if distinct == rows and rows >= MIN_ROWS_FOR_ID:
            return None, "unique per row: an ID"
        if _looks_like_rfc3339(column):
            return None, "RFC 3339 timestamps: offered as time_field"
        return "categorical", f"{arrow_type}, {distinct} distinct values"
    return None, f"type {arrow_type} has no distribution to monitor"


def infer_table_kinds(
    table: pa.Table,
    exclude: Collection[str] = (),
    progress: Callable[[str], None] | None = None,
) -> tuple[list[tuple[str, Kind, str]], list[tuple[str, str]], list[str]]:
    """Per column: ``(name, type, note)`` kept, ``(name, reason)`` skipped, time fields."""
    kept: list[tuple[str, Kind, str]] = []
    skipped: list[tuple[str, str]] = []
    time_fields: list[str] = []
    names = table.column_names
    started = time.monotonic()
    for index, name in enumerate(names):
        if progress is not None and time.monotonic() - started > 2.0 and index % 50 == 0:
            progress(f"  column {index + 1} of {len(names)}")
        if name in exclude:
            skipped.append((name, "excluded"))
            continue
        if not name or "/" in name or not name.isprintable():
            skipped.append((name, 'a feature name may not be empty or hold "/"'))
            continue
        if names.count(name) > 1:
            skipped.append((name, "the name appears more than once"))
            continue
        kind, note = _classify(name, table.column(name), table.num_rows)
        if kind is None:
            skipped.append((name, note))
            if "time_field" in note:
                time_fields.append(name)
        else:
            kept.append((name, kind, note))
    return kept, skipped, time_fields


def infer_file(
    path: Path | str,
    data_format: str | None = None,
    *,
    exclude: Collection[str] = (),
    progress: Callable[[str], None] | None = None,
) -> Inference:
    """Infer the features of a reference file (Parquet, Arrow IPC, CSV, NDJSON, JSON).

    Raises :class:`~driftmon.sources.BodyError` or ``OSError`` when the file
    cannot be read and ``ValueError`` for an unknown format.
    """
    path = Path(path)
    large = path.stat().st_size > _LARGE_FILE_BYTES
    started = time.monotonic()
    if progress is not None and large:
        progress(f"reading {path} ({path.stat().st_size / (1 << 20):.0f} MiB)")
    table = read_arrow_table(path, data_format)
    if progress is not None and large:
        progress(
            f"  {table.num_rows} rows x {table.num_columns} columns read in "
            f"{time.monotonic() - started:.1f} s; typing the columns"
        )
    kept, skipped, time_fields = infer_table_kinds(table, exclude, progress)
    names = [name for name, _, _ in kept]
    numeric = [name for name, kind, _ in kept if kind == "numeric"]
    # The columns again as the daemon will read them: CSV categories are cell texts.
    if progress is not None and large:
        progress(f"  learning categories and quantile bins of {len(names)} columns")
    batch = read_batch(path, names, format=data_format, numeric_fields=numeric)
    features: list[InferredFeature] = []
    for name, kind, note in kept:
        values = batch.columns[name]
        if kind == "categorical":
            categories = top_k_categories(values, MAX_LISTED_CATEGORIES + 1)
            if not categories:
                skipped.append((name, "no value is a category (all empty or invalid)"))
            elif len(categories) <= MAX_LISTED_CATEGORIES:
                features.append(InferredFeature(name, kind, note, categories=categories))
            else:
                features.append(InferredFeature(name, kind, note, top_k=TOP_K))
            continue
        feature = InferredFeature(name, kind, note)
        try:
            quantile_edges(finite_numbers(values), QUANTILE_BINS)
        except ValueError as exc:
            skipped.append((name, f"no quantile bins to learn ({exc})"))
            continue
        features.append(feature)
    order = {name: i for i, name in enumerate(table.column_names)}
    skipped.sort(key=lambda item: order.get(item[0], len(order)))
    return Inference(
        path=path,
        rows=table.num_rows,
        columns=table.num_columns,
        features=tuple(features),
        skipped=tuple(skipped),
        time_fields=tuple(time_fields),
    )


def merge_features(
    inferred: Sequence[FeatureConfig], explicit: Sequence[FeatureConfig]
) -> list[FeatureConfig]:
    """Inferred features in column order, an explicit one replacing the inferred of its name;
    explicit features of other names follow."""
    by_name = {feature.name: feature for feature in explicit}
    merged = [by_name.pop(feature.name, feature) for feature in inferred]
    return merged + [feature for feature in explicit if feature.name in by_name]
