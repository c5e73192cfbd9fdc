"""References: bin layouts and reference counts of a stream (docs/configuration.md).

A stream's reference comes from a data file (Parquet, Arrow IPC, CSV, NDJSON,
JSON; read by :mod:`driftmon.sources.columnar`), from its first N rows (``warmup``),
or from a snapshot written by ``driftmon reference build``. Layouts that are
learned from data (quantile edges, top-k categories) are fixed here, once,
from the reference's rows.

Snapshot format: one ``.npz`` file (loaded with ``allow_pickle=False``, so
loading never executes anything) holding ``counts/<i>`` (float64 counts of
feature i over its bins), ``edges/<i>`` (numeric features) and ``meta``, the
UTF-8 bytes of a JSON document: format version, stream, rows, created time,
the config hash of the stream's features, and each feature's name, type and
layout (edges or categories).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftmon.binning import (
    CategoricalBinner,
    NumericBinner,
    edges_from_quantiles,
    quantile_levels,
    top_k_categories,
)
from driftmon.coded import FloatChunks
from driftmon.config.model import (
    EdgesBins,
    FeatureConfig,
    QuantileBins,
    StreamConfig,
    UniformBins,
)
from driftmon.files import open_regular
from driftmon.quantiles import QuantileSearch, finite_numbers, quantile_edges
from driftmon.storage import write_atomically

Binner = NumericBinner | CategoricalBinner

_THREADED_ROWS = 1 << 16  # smaller references are built on the calling thread
_MAX_THREADS = 8

SNAPSHOT_FORMAT = "driftmon-reference"
SNAPSHOT_VERSION = 1


class ReferenceError(ValueError):
    """A reference that cannot be built or loaded; the message says what to change."""


def layout_key(binner: Binner) -> tuple[object, ...]:
    """A hashable identity of a bin layout: equal keys bin every value alike."""
    if isinstance(binner, NumericBinner):
        return ("numeric", tuple(float(e) for e in binner.edges))
    return ("categorical", tuple(binner.categories))


def learns_layout(feature: FeatureConfig) -> bool:
    """Whether the feature's bins come from the reference's data."""
    return isinstance(feature.bins, QuantileBins) or (
        feature.type == "categorical" and feature.categories is None
    )


def configured_binner(feature: FeatureConfig) -> Binner | None:
    """The binner the config fixes on its own, or ``None`` when data must decide."""
    if feature.type == "categorical":
        if feature.categories is None:
            return None
        return CategoricalBinner(feature.categories)
    bins = feature.bins
    if isinstance(bins, UniformBins):
        return NumericBinner.uniform(bins.lo, bins.hi, bins.count)
    if isinstance(bins, EdgesBins):
        return NumericBinner.from_edges(bins.edges)
    return None


def learn_binner(feature: FeatureConfig, values: Sequence[object] | np.ndarray) -> Binner:
    """The feature's binner, learning quantile edges or top-k categories from ``values``."""
    binner = configured_binner(feature)
    if binner is not None:
        return binner
    if feature.type == "categorical":
        assert feature.top_k is not None
        categories = top_k_categories(values, feature.top_k)
        if not categories:
            raise ReferenceError(
                f"feature {feature.name!r}: the reference has no valid category to learn top_k from"
            )
        return CategoricalBinner(categories)
    assert isinstance(feature.bins, QuantileBins)
    try:
        edges = quantile_edges(finite_numbers(values), feature.bins.count)
    except ValueError as exc:
        raise ReferenceError(
            f"feature {feature.name!r}: cannot learn quantile bins: {exc}"
        ) from exc
    return NumericBinner.from_edges(edges)


def _float_chunks(values: Sequence[object] | np.ndarray) -> list[np.ndarray] | None:
    if isinstance(values, FloatChunks):
        return list(values.chunks)
    if isinstance(values, np.ndarray) and values.dtype == np.float64 and values.ndim == 1:
        return [values]
    return None


def _learn_and_count_quantiles(
    feature: FeatureConfig, count: int, chunks: list[np.ndarray]
) -> tuple[Binner, np.ndarray]:
    """Quantile edges and the counts under them from one bucket pass (driftmon.quantiles);
    a column it cannot count is binned again."""
    search = QuantileSearch(chunks)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                quantiles = search.quantiles(quantile_levels(count))
            except ValueError:
                raise ValueError("values has no finite number to take quantiles of") from None
        binner = NumericBinner.from_edges(edges_from_quantiles(quantiles))
    except ValueError as exc:
        raise ReferenceError(
            f"feature {feature.name!r}: cannot learn quantile bins: {exc}"
        ) from exc
    counts = search.counts(binner)
    if counts is None:
        counts = np.zeros(binner.n_bins, dtype=np.float64)
        for chunk in chunks:
            binner.add(chunk, counts)
    return binner, counts


@dataclass(frozen=True)
class Reference:
    """A stream's reference: one binner and one count array per feature, in config order."""

    binners: tuple[Binner, ...]
    counts: tuple[np.ndarray, ...]
    rows: int

    def __post_init__(self) -> None:
        for binner, counts in zip(self.binners, self.counts, strict=True):
            if counts.shape != (binner.n_bins,):
                raise ReferenceError(
                    f"reference counts have shape {counts.shape}, expected ({binner.n_bins},)"
                )


def build_reference(
    stream: StreamConfig, n_rows: int, columns: Mapping[str, Sequence[object] | np.ndarray]
) -> Reference:
    """Learn the layouts and bin ``columns`` (one list per feature) into a reference.

    Large references are learned and binned on a few threads, a feature each
    (the quantile search and the binning kernels release the GIL).
    """

    def one(feature: FeatureConfig) -> tuple[Binner, np.ndarray]:
        values = columns.get(feature.name)
        if values is None:
            values = [None] * n_rows
        if learns_layout(feature) and isinstance(values, list) and all(v is None for v in values):
            # Most likely the wrong file: say so rather than "no number to take quantiles of".
            what = "top_k categories" if feature.type == "categorical" else "quantile bins"
            raise ReferenceError(
                f"column {feature.name!r} is absent from the input (no row has a value for it), "
                f"so its {what} cannot be learned: is this the right file?"
            )
        if isinstance(feature.bins, QuantileBins):
            chunks = _float_chunks(values)
            if chunks is not None:
                return _learn_and_count_quantiles(feature, feature.bins.count, chunks)
        binner = learn_binner(feature, values)
        feature_counts = np.zeros(binner.n_bins, dtype=np.float64)
        if isinstance(values, FloatChunks) and isinstance(binner, NumericBinner):
            for chunk in values.chunks:
                binner.add(chunk, feature_counts)
        else:
            binner.add_values(values, feature_counts)
        return binner, feature_counts

    threads = min(os.cpu_count() or 1, len(stream.features), _MAX_THREADS)
    if n_rows < _THREADED_ROWS or threads < 2:
        learned = list(map(one, stream.features))
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="driftmon-reference") as pool:
            learned = list(pool.map(one, stream.features))
    binners = tuple(binner for binner, _ in learned)
    counts = tuple(feature_counts for _, feature_counts in learned)
    return Reference(binners, counts, n_rows)


def numeric_fields(stream: StreamConfig) -> list[str]:
    """Names of the stream's numeric features (their CSV cells parse as floats)."""
    return [f.name for f in stream.features if f.type == "numeric"]


def load_reference_file(
    stream: StreamConfig, path: Path, data_format: str | None = None
) -> Reference:
    """Read a data file (Parquet, Arrow IPC, CSV, NDJSON, JSON) and build the stream's reference."""
    from driftmon.sources.columnar import read_batch  # pyarrow loads only for a file reference

    fields = [f.name for f in stream.features]
    try:
        batch = read_batch(
            path, fields, format=data_format, numeric_fields=numeric_fields(stream), chunked=True
        )
    except OSError as exc:
        raise ReferenceError(f"cannot read reference file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ReferenceError(str(exc)) from exc
    if batch.n_rows == 0:
        raise ReferenceError(f"reference file {path} holds no rows")
    return build_reference(stream, batch.n_rows, batch.columns)


def features_hash(stream: StreamConfig) -> str:
    """A short hash of the stream's feature configuration (names, types, bins)."""
    described = [
        {
            "name": f.name,
            "type": f.type,
            "bins": None if f.bins is None else repr(f.bins),
            "categories": None if f.categories is None else list(f.categories),
            "top_k": f.top_k,
        }
        for f in stream.features
    ]
    text = json.dumps(described, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _describe_binner(binner: Binner) -> dict[str, object]:
    if isinstance(binner, NumericBinner):
        return {"type": "numeric", "edges": [float(e) for e in binner.edges]}
    return {"type": "categorical", "categories": list(binner.categories)}


def save_snapshot(path: Path, stream: StreamConfig, reference: Reference) -> None:
    """Write ``reference`` as a snapshot file (:func:`~driftmon.storage.write_atomically`)."""
    meta = {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "stream": stream.name,
        "rows": reference.rows,
        "created": time.time(),
        "features_hash": features_hash(stream),
        "features": [
            {"name": f.name, **_describe_binner(b)}
            for f, b in zip(stream.features, reference.binners, strict=True)
        ],
    }
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    }
    for i, (binner, counts) in enumerate(zip(reference.binners, reference.counts, strict=True)):
        arrays[f"counts/{i}"] = counts
        if isinstance(binner, NumericBinner):
            arrays[f"edges/{i}"] = np.asarray(binner.edges, dtype=np.float64)
    if not path.parent.is_dir():
        # Else the error would name the temporary file below, which the user never asked for.
        raise ReferenceError(f"cannot write {path}: the folder {path.parent} does not exist")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    write_atomically(path, buffer.getvalue(), mode=0o666)


def load_snapshot(path: Path, stream: StreamConfig) -> Reference:
    """Load a snapshot and check its layout against the stream's config.

    Fixed layouts (uniform, edges, listed categories) must equal the
    snapshot's; learned ones (quantile, top_k) adopt the snapshot's.
    """
    try:
        # Opened here rather than by np.load, which leaks its own handle when the
        # archive turns out unreadable.
        with open_regular(path) as handle:
            if handle.read(4) != b"PK\x03\x04":
                # Not a zip archive: np.load would guess a format, and its error for a
                # foreign file suggests loading it with pickles allowed.
                raise ReferenceError(
                    f"cannot read reference snapshot {path}: not a driftmon reference snapshot "
                    "(not an .npz archive); rows in CSV, NDJSON or JSON are a `file:` reference"
                )
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
    except ReferenceError:
        raise
    except Exception as exc:  # OSError, BadZipFile, ValueError...: any unreadable archive
        raise ReferenceError(f"cannot read reference snapshot {path}: {exc}") from exc
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (KeyError, ValueError) as exc:
        raise ReferenceError(f"reference snapshot {path} has no readable metadata") from exc
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        raise ReferenceError(f"{path} is not a driftmon reference snapshot")
    if meta.get("version") != SNAPSHOT_VERSION:
        raise ReferenceError(
            f"reference snapshot {path} has format version {meta.get('version')!r}, "
            f"this driftmon reads version {SNAPSHOT_VERSION}: rebuild it with "
            "`driftmon reference build`"
        )
    described = meta.get("features")
    names = [f.name for f in stream.features]
    if isinstance(described, list) and not all(isinstance(d, dict) for d in described):
        raise ReferenceError(f"reference snapshot {path} has malformed feature metadata")
    if not isinstance(described, list) or [d.get("name") for d in described] != names:
        found = [d.get("name") for d in described] if isinstance(described, list) else None
        raise ReferenceError(
            f"reference snapshot {path} covers features {found}, the config's stream "
            f"{stream.name!r} has {names}: rebuild it with `driftmon reference build`"
        )
    binners: list[Binner] = []
    counts: list[np.ndarray] = []
    for i, feature in enumerate(stream.features):
        binner = _snapshot_binner(path, i, feature, described[i], arrays)
        stored = arrays.get(f"counts/{i}")
        feature_counts = (
            np.asarray(stored, dtype=np.float64)
            if stored is not None and stored.dtype.kind in "iuf"
            else np.zeros(0)  # absent or not numbers: refused just below
        )
        if feature_counts.shape != (binner.n_bins,) or not np.all(
            np.isfinite(feature_counts) & (feature_counts >= 0)
        ):
            raise ReferenceError(
                f"reference snapshot {path}: feature {feature.name!r} has malformed counts"
            )
        binners.append(binner)
        counts.append(feature_counts)
    rows = meta.get("rows")
    if not isinstance(rows, int) or rows < 0:
        raise ReferenceError(f"reference snapshot {path}: malformed row count {rows!r}")
    return Reference(tuple(binners), tuple(counts), rows)


def _snapshot_binner(
    path: Path,
    i: int,
    feature: FeatureConfig,
    described: Mapping[str, object],
    arrays: Mapping[str, np.ndarray],
) -> Binner:
    if described.get("type") != feature.type:
        raise ReferenceError(
            f"reference snapshot {path}: feature {feature.name!r} is {described.get('type')} "
            f"there and {feature.type} in the config"
        )
    snapshot_binner: Binner
    try:
        if feature.type == "numeric":
            snapshot_binner = NumericBinner.from_edges(
                np.asarray(arrays[f"edges/{i}"], dtype=np.float64).tolist()
            )
        else:
            categories = described.get("categories")
            if not isinstance(categories, list):
                raise ValueError("no category list")
            snapshot_binner = CategoricalBinner([str(c) for c in categories])
    except (KeyError, ValueError) as exc:
        raise ReferenceError(
            f"reference snapshot {path}: feature {feature.name!r} has a malformed layout ({exc})"
        ) from exc
    configured = configured_binner(feature)
    if configured is not None:
        if layout_key(configured) != layout_key(snapshot_binner):
            raise ReferenceError(
                f"reference snapshot {path}: feature {feature.name!r} was built with other bins "
                "than the config's: rebuild it with `driftmon reference build`"
            )
        # The config's own binner: a uniform layout keeps its formula, which
        # the snapshot's edges do not reproduce exactly at every bin boundary.
        return configured
    if (
        isinstance(feature.bins, QuantileBins)
        and isinstance(snapshot_binner, NumericBinner)
        and snapshot_binner.n_regular > feature.bins.count
    ):
        raise ReferenceError(
            f"reference snapshot {path}: feature {feature.name!r} has "
            f"{snapshot_binner.n_regular} quantile bins, the config asks for {feature.bins.count}"
        )
    if (
        feature.type == "categorical"
        and feature.top_k is not None
        and isinstance(snapshot_binner, CategoricalBinner)
        and len(snapshot_binner.categories) > feature.top_k
    ):
        raise ReferenceError(
            f"reference snapshot {path}: feature {feature.name!r} has "
            f"{len(snapshot_binner.categories)} categories, the config's top_k is {feature.top_k}"
        )
    return snapshot_binner
