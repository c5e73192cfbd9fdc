"""How a config's monitors lie in the engine's packed arrays, and rows binned into them.

A packing puts each stream's monitors side by side (a stream's bins are one
slice) and derives everything that follows from the layouts alone: offsets,
reference counts, the divergence and Wasserstein kernels' inputs, the alert
pairs and their p-value families. It holds no live counts, so it is built
without the ingest lock (a reload, a warmup freeze). :func:`bin_rows` bins a
batch against one stream's slice of it, in the daemon or a parse process.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from driftmon.alerting import RuleParams
from driftmon.binning import NumericBinner
from driftmon.config import Config
from driftmon.divergence import PackedDivergence, PackedWasserstein
from driftmon.evaluation import ALL_METRICS, AlertPair, Monitor
from driftmon.kinds import KindLayout
from driftmon.multiple_testing import PValueFamilies
from driftmon.reference import Binner, Reference
from driftmon.window import NOT_REACHED

__all__ = [
    "Packing",
    "StreamLayout",
    "add_values",
    "bin_rows",
    "build_packing",
    "families",
    "is_float_column",
]

# Packing generations are unique across Engine instances, so a batch binned
# against one engine is binned again when applied to the engine a reload made.
_GENERATIONS = itertools.count(1)


@dataclass(frozen=True)
class Packing:
    """What one packing derives from the streams' layouts: monitors, offsets, reference
    counts, kernels and alert pairs; no live counts, so it is built without the lock."""

    generation: int
    slices: tuple[tuple[int, int, tuple[Monitor, ...]], ...]  # per stream: start, stop, monitors
    monitors: tuple[Monitor, ...]
    n_bins: int
    reference: np.ndarray
    bin_offsets: np.ndarray
    reference_samples: np.ndarray
    divergence: PackedDivergence
    kind_layout: KindLayout
    numeric_index: np.ndarray
    wasserstein: PackedWasserstein
    alert_pairs: tuple[AlertPair, ...]
    pair_rules: np.ndarray  # each pair's rule, as its index in ``config.alerts``
    alert_params: RuleParams
    alert_metric_rows: np.ndarray
    alert_monitors: np.ndarray
    p_value_families: PValueFamilies


def build_packing(config: Config, references: Sequence[Reference | None]) -> Packing:
    """Pack ``config``'s streams (``references[i]`` is stream ``i``'s; ``None``: no monitors)."""
    monitors: list[Monitor] = []
    offset = 0
    reference_parts: list[np.ndarray] = []
    slices: list[tuple[int, int, tuple[Monitor, ...]]] = []
    for stream_config, stream_reference in zip(config.streams, references, strict=True):
        start = offset
        stream_monitors: list[Monitor] = []
        if stream_reference is not None:
            for feature, binner, counts in zip(
                stream_config.features,
                stream_reference.binners,
                stream_reference.counts,
                strict=True,
            ):
                monitor = Monitor(
                    stream=stream_config.name,
                    feature=feature.name,
                    type=feature.type,
                    index=len(monitors),
                    offset=offset,
                    binner=binner,
                    smoothing=feature.smoothing,
                )
                monitors.append(monitor)
                stream_monitors.append(monitor)
                reference_parts.append(counts)
                offset += binner.n_bins
        slices.append((start, offset, tuple(stream_monitors)))
    reference = (
        np.concatenate(reference_parts) if reference_parts else np.zeros(0, dtype=np.float64)
    )
    bin_offsets = np.array([m.offset for m in monitors] + [offset], dtype=np.int64)
    smoothing = np.array([m.smoothing for m in monitors], dtype=np.float64)
    numeric = [m for m in monitors if isinstance(m.binner, NumericBinner)]
    pairs: list[AlertPair] = []
    pair_rules: list[int] = []
    for r, rule in enumerate(config.alerts):
        for monitor in monitors:
            if not rule.selects(monitor.stream, monitor.feature):
                continue
            if rule.metric == "wasserstein" and monitor.type != "numeric":
                continue
            pairs.append(AlertPair(rule, monitor.index))
            pair_rules.append(r)
    return Packing(
        generation=next(_GENERATIONS),
        slices=tuple(slices),
        monitors=tuple(monitors),
        n_bins=offset,
        reference=reference,
        bin_offsets=bin_offsets,
        reference_samples=(
            np.add.reduceat(reference, bin_offsets[:-1])
            if monitors
            else np.zeros(0, dtype=np.float64)
        ),
        divergence=PackedDivergence(reference, bin_offsets, smoothing, base=config.engine.log_base),
        kind_layout=KindLayout.build(
            [(m.stream, m.feature) for m in monitors],
            [m.n_bins for m in monitors],
            [isinstance(m.binner, NumericBinner) for m in monitors],
        ),
        numeric_index=np.array([m.index for m in numeric], dtype=np.int64),
        wasserstein=PackedWasserstein(
            reference,
            np.array([m.offset for m in numeric], dtype=np.int64),
            [np.asarray(m.binner.edges, dtype=np.float64) for m in numeric],  # type: ignore[union-attr]
        ),
        alert_pairs=tuple(pairs),
        pair_rules=np.array(pair_rules, dtype=np.int64),
        alert_params=RuleParams.from_rules([p.rule for p in pairs]),
        alert_metric_rows=np.array(
            [ALL_METRICS.index(p.rule.metric) for p in pairs], dtype=np.int64
        ),
        alert_monitors=np.array([p.monitor for p in pairs], dtype=np.int64),
        p_value_families=families(pairs, monitors),
    )


def families(pairs: Sequence[AlertPair], monitors: Sequence[Monitor]) -> PValueFamilies:
    """One family per (rule with a ``p_value_correction``, stream) over ``pairs``."""
    members: dict[tuple[int, str], list[int]] = {}
    methods: dict[tuple[int, str], str] = {}
    for i, pair in enumerate(pairs):
        if pair.rule.p_value_correction == "none":
            continue
        key = (id(pair.rule), monitors[pair.monitor].stream)
        members.setdefault(key, []).append(i)
        methods[key] = pair.rule.p_value_correction
    return PValueFamilies(list(members.values()), [methods[key] for key in members], len(pairs))


def is_float_column(binner: Binner, values: Sequence[object] | np.ndarray) -> bool:
    """Whether ``values`` can take the numeric kernels' float64 fast path."""
    return (
        isinstance(binner, NumericBinner)
        and isinstance(values, np.ndarray)
        and values.dtype == np.float64
        and values.ndim == 1
    )


def add_values(binner: Binner, values: Sequence[object] | np.ndarray, counts: np.ndarray) -> None:
    """Bin a column into ``counts``: the fast float path for float arrays."""
    if is_float_column(binner, values):
        assert isinstance(binner, NumericBinner) and isinstance(values, np.ndarray)
        binner.add(np.ascontiguousarray(values), counts)
    else:
        binner.add_values(values, counts)


@dataclass(frozen=True)
class StreamLayout:
    """A stream's monitors and bins in one packing (``generation``) of an engine."""

    monitors: tuple[Monitor, ...]
    start: int
    size: int
    samples: bool  # a {samples: N} window: per-row bin indices too
    generation: int


def bin_rows(
    layout: StreamLayout,
    columns: Mapping[str, Sequence[object] | np.ndarray],
    n_rows: int,
    first_row: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Counts over the stream's bins of rows ``first_row:``; per-row indices for samples.

    A feature absent from ``columns`` is not reached (its counts stay zero,
    its indices ``NOT_REACHED``). Touches no shared state.
    """
    size = layout.size
    if layout.samples:
        shape = (n_rows - first_row, len(layout.monitors))
        picked = [columns.get(monitor.feature) for monitor in layout.monitors]
        if all(values is not None for values in picked):
            indices = np.empty(shape, dtype=np.int32)  # every cell is written below
        else:
            indices = np.full(shape, NOT_REACHED, dtype=np.int32)
        counts = np.zeros(size, dtype=np.float64)
        for j, (monitor, values) in enumerate(zip(layout.monitors, picked, strict=True)):
            if values is None:
                continue
            if first_row:
                values = values[first_row:]
            rel = monitor.offset - layout.start
            layout_index = monitor.binner.index_values(values)
            np.add(layout_index, np.int32(rel), out=indices[:, j])
            view = counts[rel : rel + monitor.n_bins]
            binner = monitor.binner
            if is_float_column(binner, values) and getattr(binner, "kind", "") == "uniform":
                # The uniform counting kernel reads the floats again faster
                # than np.bincount reads the indices (it widens them to
                # int64); the explicit-edges kernel does not (bench_engine).
                add_values(binner, values, view)
            else:
                view += np.bincount(layout_index, minlength=monitor.n_bins)
        return counts, indices
    counts = np.zeros(size, dtype=np.float64)
    for monitor in layout.monitors:
        values = columns.get(monitor.feature)
        if values is None:
            continue
        rel = monitor.offset - layout.start
        view = counts[rel : rel + monitor.n_bins]
        add_values(monitor.binner, values[first_row:] if first_row else values, view)
    return counts, None
