"""Soak (issue 7, promise 5): hours of simulated time at steady load, nothing leaks, nothing lost.

Run ``python bench/soak.py`` (24 simulated hours of 15 s panes, a few
minutes of wall time; ``--hours`` to change it). Exits 1 when a bound is
broken, after printing a table over time and the figures.

How time is simulated, honestly: the real :class:`~driftmon.daemon.Daemon`
runs in this process under ``serve_forever`` (its aiohttp listener on a free
loopback port, its evaluation and checkpoint loops, its reload queue), with
a :class:`~driftmon.clock.SimulatedClock` as both its ``clock`` and its
``sleep``. Nothing is called behind the daemon's back: rows go in by HTTP
``POST``, metrics come out of ``GET /metrics`` and the monitors' counts out
of ``/api/v1/monitors/...``. One step of the soak is one pane:

1. post this pane's rows (two batches to the pane-window stream at once, one
   to the sample-window stream; rows, columns and NDJSON bodies in turn;
   every answer must be 200);
2. every ``reload_every_s``, a reload: ``POST /-/reload`` with the config
   switched between two variants, the SIGHUP path (the daemon's reload
   queue), or a broken config (400, old config kept) — in turn;
3. advance the clock one pane width, which wakes the daemon's own loops,
   and wait (bounded, real time) until they have run: the evaluation for the
   new time is published, the checkpoint written when one was due, and both
   loops sleep again;
4. scrape ``/metrics``: the set of series must not change after warm-up,
   counters must match what was posted, no checkpoint may fail.

Every ``sample_every_s`` the process is measured (RSS and peak RSS from
``/proc/self/status``, C heap bytes in use from glibc's ``mallinfo2``, open
descriptors in ``/proc/self/fd``, threads by pool, asyncio tasks, objects
tracked by the garbage collector, frozen ones included, and pymalloc blocks,
which count every small Python object, tracked or not) and every monitor's
live counts are compared, bin by bin, with what the posted rows must give:
the pane-window stream holds exactly the rows of its last ``panes`` panes,
the sample-window stream exactly its last N rows after its warmup, whose
first rows are exactly its frozen reference (and while it warms up,
``driftmon_warmup_rows`` counts them exactly). ``driftmon_ingest_rows_total``
must equal the rows posted. After the last step the daemon is stopped (it
drains and checkpoints, exit status 0) and a new daemon restored from its
state directory must hold the same counts.

Bounds, from the end of warm-up on (the baseline is the measurement there):
RSS, C heap in use, open descriptors and GC-tracked objects at most
``tolerance`` (10 %) above the baseline; pymalloc blocks at most
``blocks_tolerance`` (2 %) above it, tighter because a leak of a few small
objects per request shows there long before it moves RSS (that is how this
soak found the leak fixed in ``driftmon/parse.py``: +0.9k blocks, about
+0.15 MiB, per simulated hour); no thread outside the daemon's two pools
(ingest workers, asyncio's default executor) that was not there at the
baseline, and neither pool above its size; no more asyncio tasks than at
the baseline; the same series; every exact check equal; no error logged but
the expected "reload failed" of the broken configs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import aiohttp
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from driftmon.clock import SimulatedClock
from driftmon.config import load_config
from driftmon.daemon import Daemon

START_S = 19675 * 86400.0
"""Simulated start: 2023-11-14T00:00:00Z, a multiple of every period used here."""

WAIT_S = 60.0
"""Longest real time to wait for the daemon to finish one thing (a stalled loop fails)."""

ABSENT = object()
"""A field left out of a row (missing, docs/configuration.md#bins)."""

CREDIT = "credit"  # reference file, time window
CHURN = "churn"  # warmup reference, sample window
INGEST_THREAD_PREFIX = "driftmon-ingest"  # Daemon's ThreadPoolExecutor
EXECUTOR_THREAD_PREFIX = "asyncio_"  # the event loop's default executor (asyncio.to_thread)


# --- the monitored features: every bin with JSON values that must land in it --------------------


@dataclass(frozen=True)
class Feature:
    """One monitored feature: its config entry and, per bin, values that land there.

    ``tokens[i]`` are JSON values (or :data:`ABSENT`) that docs/configuration.md#bins puts
    in bin ``i``; ``csv[i]`` a CSV cell that does (``None``: none can).
    ``base`` and ``drifted`` are probabilities over the bins.
    """

    name: str
    entry: Mapping[str, object]
    tokens: tuple[tuple[object, ...], ...]
    csv: tuple[str | None, ...]
    base: np.ndarray
    drifted: np.ndarray

    @property
    def n_bins(self) -> int:
        """Bins of the monitor, special bins included."""
        return len(self.tokens)


def _probabilities(weights: Sequence[float]) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    return array / array.sum()


def _bump(n: int, centre: float, width: float) -> list[float]:
    return [math.exp(-(((i - centre) / width) ** 2)) + 0.02 for i in range(n)]


def _numeric(
    name: str,
    bins: Mapping[str, object],
    edges: Sequence[float],
    centre: float,
    drifted_centre: float,
) -> Feature:
    """A numeric feature over ``edges``; values are edges and midpoints, exact in binary."""
    n = len(edges) - 1
    regular = tuple((edges[i], (edges[i] + edges[i + 1]) / 2) for i in range(n))
    tokens = (
        (edges[0] - 1.0, -1e9),  # underflow
        *regular,
        (edges[-1], edges[-1] * 2 + 1, 10**6),  # overflow (an int is numeric too)
        (None, ABSENT),  # missing
        ("12", True, [1.0]),  # invalid: string, boolean, list
    )
    csv = (repr(edges[0] - 1.0), *(repr(t[1]) for t in regular), repr(edges[-1]), "", "abc")
    special = [0.01, 0.01, 0.02, 0.01]  # underflow, overflow, missing, invalid
    base = _bump(n, centre, n / 4)
    drifted = _bump(n, drifted_centre, n / 4)
    total = sum(base)
    weights = [
        special[0] * total,
        *base,
        special[1] * total,
        special[2] * total,
        special[3] * total,
    ]
    total_d = sum(drifted)
    weights_d = [
        special[0] * total_d,
        *drifted,
        special[1] * total_d,
        4 * special[2] * total_d,
        special[3] * total_d,
    ]
    return Feature(
        name,
        {"name": name, "type": "numeric", "bins": dict(bins)},
        tokens,
        csv,
        _probabilities(weights),
        _probabilities(weights_d),
    )


def _categorical(name: str, categories: Sequence[str], base: Sequence[float]) -> Feature:
    """A categorical feature; drifted, the mass of the first two categories swaps."""
    tokens = (
        *((c,) for c in categories),
        ("elsewhere", 7),  # other: an unknown string, an int whose text is not a category
        (None, ABSENT),  # missing
        (1.5, [categories[0]]),  # invalid: float, list
    )
    csv = (*categories, "elsewhere", "", None)
    weights = [*base, 0.02, 0.02, 0.01]
    drifted = list(weights)
    drifted[0], drifted[1] = weights[1], weights[0]
    return Feature(
        name,
        {"name": name, "type": "categorical", "categories": list(categories)},
        tokens,
        csv,
        _probabilities(weights),
        _probabilities(drifted),
    )


def stream_features() -> dict[str, tuple[Feature, ...]]:
    """The two streams' features, in config order."""
    return {
        CREDIT: (
            _numeric(
                "amount",
                {"kind": "uniform", "lo": 0, "hi": 64, "count": 16},
                [4.0 * i for i in range(17)],
                centre=6,
                drifted_centre=10,
            ),
            _numeric(
                "ratio",
                {"kind": "edges", "edges": [0, 0.25, 0.5, 1, 2, 4]},
                [0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
                centre=2,
                drifted_centre=3,
            ),
            _categorical("region", ["north", "south", "east", "west"], [0.4, 0.3, 0.2, 0.1]),
        ),
        CHURN: (
            _numeric(
                "score",
                {"kind": "uniform", "lo": 0, "hi": 1, "count": 8},
                [i / 8 for i in range(9)],
                centre=3,
                drifted_centre=5,
            ),
            _categorical("plan", ["free", "pro", "team"], [0.6, 0.3, 0.1]),
        ),
    }


# --- settings, config files ---------------------------------------------------------------------


@dataclass(frozen=True)
class SoakSettings:
    """One soak's shape; the defaults are the long version (24 simulated hours).

    Times are simulated seconds. Every period must be a multiple of
    ``pane_width_s`` and divide a day, so that the daemon's loops tick on
    the steps' pane boundaries.
    """

    hours: float = 24.0
    warmup_s: float = 3600.0
    pane_width_s: float = 15.0
    panes: int = 60  # a 15 min window
    checkpoint_every_s: float = 300.0
    reload_every_s: float = 300.0
    sample_every_s: float = 900.0
    drift_period_s: float = 6 * 3600.0
    drift_length_s: float = 3600.0  # the last hour of every period is drifted
    warmup_rows: int = 2000  # the churn stream's reference
    sample_window_rows: int = 3000  # the churn stream's window
    credit_rows: tuple[int, int] = (50, 250)  # per batch, two batches per pane
    churn_rows: tuple[int, int] = (20, 80)  # one batch per pane
    workers: int = 2
    tolerance: float = 0.10
    blocks_tolerance: float = 0.02
    seed: int = 7

    @property
    def steps(self) -> int:
        """Panes the soak runs through."""
        return round(self.hours * 3600.0 / self.pane_width_s)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting that cannot work."""
        width = self.pane_width_s
        if not width > 0 or 86400.0 % width:
            raise ValueError(f"pane_width_s must divide a day, got {width}")
        for name in ("checkpoint_every_s", "reload_every_s", "sample_every_s", "warmup_s"):
            value = getattr(self, name)
            if not value > 0 or value % width:
                raise ValueError(f"{name} must be a positive multiple of pane_width_s, got {value}")
        if 86400.0 % self.checkpoint_every_s:
            raise ValueError("checkpoint_every_s must divide a day")
        if self.warmup_s >= self.hours * 3600.0:
            raise ValueError("warmup_s must end before the soak does")


def config_document(settings: SoakSettings, directory: Path, variant: str) -> dict[str, object]:
    """The daemon's config: ``variant`` "a" or "b" (they differ in one alert rule) or "broken"."""
    features = stream_features()
    rule_threshold = 0.1 if variant == "a" else 0.12
    document: dict[str, object] = {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": "4MiB"},
        "ingest": {"workers": settings.workers, "queue_rows": 200_000},
        "engine": {"evaluate_every": f"{settings.pane_width_s:g}s", "log_base": "e"},
        "state": {
            "dir": str(directory / "state"),
            "checkpoint_every": f"{settings.checkpoint_every_s:g}s",
        },
        "defaults": {
            "window": {
                "length": f"{settings.pane_width_s * settings.panes:g}s",
                "panes": settings.panes,
            },
            "smoothing": 0.5,
        },
        "streams": [
            {
                "name": CREDIT,
                "reference": {"file": str(directory / "credit_reference.csv")},
                "features": [dict(f.entry) for f in features[CREDIT]],
            },
            {
                "name": CHURN,
                "reference": {"warmup": settings.warmup_rows},
                "window": {"samples": settings.sample_window_rows},
                "features": [dict(f.entry) for f in features[CHURN]],
            },
        ],
        "alerts": [
            {
                "name": "js-high",
                "match": {"stream": "*", "feature": "*"},
                "metric": "js",
                "threshold": rule_threshold,
                "for": "2m",
                "clear_below": 0.08,
                "min_samples": 200,
                "severity": "warning",
            },
            {
                "name": "psi-significant",
                "match": {"stream": CREDIT, "feature": "*"},
                "metric": "psi",
                "threshold": 0.2,
                "for": "1m",
                "min_samples": 200,
                "max_p_value": 0.001,
                "keep_firing_for": "5m",
                "severity": "critical",
            },
        ],
    }
    if variant == "broken":
        document["engine"] = {**document["engine"], "evaluate_evrey": "15s"}  # type: ignore[dict-item]
    return document


def write_config(path: Path, document: Mapping[str, object]) -> None:
    """Replace ``path`` atomically (a reload never reads half a file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2))
    os.replace(partial, path)


def write_reference(path: Path, features: Sequence[Feature], rows: int, seed: int) -> None:
    """A CSV reference of ``rows`` rows drawn from the features' base distributions."""
    rng = np.random.default_rng(seed)
    columns = []
    for feature in features:
        usable = np.array([cell is not None for cell in feature.csv])
        p = feature.base * usable
        codes = rng.choice(feature.n_bins, rows, p=p / p.sum())
        columns.append([feature.csv[code] for code in codes])
    lines = [",".join(f.name for f in features)]
    lines += [",".join(str(cells[i]) for cells in columns) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


# --- rows and what they must give ---------------------------------------------------------------


@dataclass
class Batch:
    """One request body and the bin of every row for every feature (``codes[feature, row]``)."""

    body: bytes
    content_type: str
    codes: np.ndarray


BODY_FORMATS = ("rows", "columns", "ndjson")


def make_batch(
    rng: np.random.Generator, features: Sequence[Feature], n: int, drifted: bool, body_format: str
) -> Batch:
    """``n`` rows drawn bin first, each value one of the tokens of its bin."""
    codes = np.empty((len(features), n), dtype=np.int64)
    values: list[list[object]] = []
    for j, feature in enumerate(features):
        p = feature.drifted if drifted else feature.base
        codes[j] = rng.choice(feature.n_bins, n, p=p)
        picks = rng.integers(0, 1 << 30, n)
        column = []
        for code, pick in zip(codes[j].tolist(), picks.tolist(), strict=True):
            tokens = feature.tokens[code]
            column.append(tokens[pick % len(tokens)])
        values.append(column)
    if body_format == "columns":
        # A columns body has every column whole: a left-out field is sent as null (also missing).
        document = {
            "columns": {
                f.name: [None if v is ABSENT else v for v in column]
                for f, column in zip(features, values, strict=True)
            }
        }
        return Batch(orjson.dumps(document), "application/json", codes)
    rows = [
        {
            f.name: column[i]
            for f, column in zip(features, values, strict=True)
            if column[i] is not ABSENT
        }
        for i in range(n)
    ]
    if body_format == "ndjson":
        body = b"\n".join(orjson.dumps(row) for row in rows) + b"\n"
        return Batch(body, "application/x-ndjson", codes)
    return Batch(orjson.dumps(rows), "application/json", codes)


class PaneLedger:
    """What a ``{length, panes}`` window must hold: the posted counts of its last panes."""

    def __init__(self, features: Sequence[Feature], panes: int, pane_width_s: float) -> None:
        self.sizes = [f.n_bins for f in features]
        self.panes = panes
        self.pane_width_s = pane_width_s
        self.by_pane: dict[int, list[np.ndarray]] = {}
        self.rows = 0

    def add(self, codes: np.ndarray, now_s: float) -> None:
        """Rows posted (and answered 200) at ``now_s``."""
        pane = math.floor(now_s / self.pane_width_s)
        counts = self.by_pane.setdefault(pane, [np.zeros(k) for k in self.sizes])
        for j, k in enumerate(self.sizes):
            counts[j] += np.bincount(codes[j], minlength=k)
        self.rows += codes.shape[1]

    def expected(self, now_s: float) -> list[np.ndarray]:
        """Per feature, the live counts at ``now_s``; forgets panes that fell out."""
        current = math.floor(now_s / self.pane_width_s)
        for pane in [p for p in self.by_pane if p <= current - self.panes]:
            del self.by_pane[pane]
        total = [np.zeros(k) for k in self.sizes]
        for pane, counts in self.by_pane.items():
            if pane <= current:
                for j in range(len(total)):
                    total[j] += counts[j]
        return total


class SampleLedger:
    """What a warmup reference with a ``{samples: N}`` window must hold."""

    def __init__(self, features: Sequence[Feature], warmup_rows: int, samples: int) -> None:
        self.sizes = [f.n_bins for f in features]
        self.warmup_rows = warmup_rows
        self.reference = [np.zeros(k) for k in self.sizes]
        self.last: deque[tuple[int, ...]] = deque(maxlen=samples)
        self.rows = 0

    def add(self, codes: np.ndarray) -> None:
        """Rows posted in this order: the first ``warmup_rows`` ever make the reference."""
        n = codes.shape[1]
        to_reference = max(0, min(n, self.warmup_rows - self.rows))
        for j, k in enumerate(self.sizes):
            self.reference[j] += np.bincount(codes[j, :to_reference], minlength=k)
        self.last.extend(map(tuple, codes[:, to_reference:].T.tolist()))
        self.rows += n

    def expected(self) -> list[np.ndarray]:
        """Per feature, the live counts of the last N rows after the warmup."""
        if not self.last:
            return [np.zeros(k) for k in self.sizes]
        matrix = np.array(self.last, dtype=np.int64).T
        return [np.bincount(matrix[j], minlength=k).astype(float) for j, k in enumerate(self.sizes)]


# --- measurements -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """The process at one quiet moment of the soak (all loops asleep, no request in flight)."""

    step: int
    sim_s: float
    wall_s: float
    rss_bytes: int
    peak_rss_bytes: int
    fds: int
    threads: int
    ingest_threads: int
    executor_threads: int
    other_threads: frozenset[str]
    tasks: int
    gc_objects: int  # tracked by the collector, frozen ones (gc.freeze) included
    allocated_blocks: int  # pymalloc blocks in use: every small Python object, tracked or not
    heap_in_use_bytes: int | None  # glibc malloc: bytes in use (mallinfo2), None elsewhere
    series: int
    window_rows: int
    checkpoints: int
    reloads: int

    @property
    def sim_hours(self) -> float:
        """Simulated hours since the start."""
        return self.sim_s / 3600.0


class MeasurementLog(Sequence[Measurement]):
    """Measurements kept in arrays allocated up front, so that keeping one allocates nothing.

    A list of :class:`Measurement` objects would grow the very figures it
    records (a dozen Python objects each: +2 % pymalloc blocks over a
    simulated week). Here a measurement is a row of a float64 table (exact
    for integers below 2**53) and its set of thread names is stored only when
    it differs from the previous one. Reading rebuilds the objects.
    """

    _NUMBERS = tuple(f.name for f in dataclasses.fields(Measurement) if f.name != "other_threads")

    def __init__(self, capacity: int) -> None:
        self._table = np.zeros((max(1, capacity), len(self._NUMBERS)), dtype=np.float64)
        self._thread_sets: list[frozenset[str]] = []
        self._thread_set_of = np.zeros(max(1, capacity), dtype=np.int64)
        self._count = 0

    def append(self, sample: Measurement) -> None:
        """Record ``sample`` (grows the table, which allocates, only past its capacity)."""
        if self._count == len(self._table):
            self._table = np.concatenate([self._table, np.zeros_like(self._table)])
            self._thread_set_of = np.concatenate(
                [self._thread_set_of, np.zeros_like(self._thread_set_of)]
            )
        row = self._table[self._count]
        for i, name in enumerate(self._NUMBERS):
            value = getattr(sample, name)
            row[i] = -1.0 if value is None else value
        if not self._thread_sets or self._thread_sets[-1] != sample.other_threads:
            self._thread_sets.append(sample.other_threads)
        self._thread_set_of[self._count] = len(self._thread_sets) - 1
        self._count += 1

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Measurement: ...

    @overload
    def __getitem__(self, index: slice) -> list[Measurement]: ...

    def __getitem__(self, index: int | slice) -> Measurement | list[Measurement]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        values: dict[str, Any] = {}
        for name, value in zip(self._NUMBERS, self._table[index].tolist(), strict=True):
            if name in ("sim_s", "wall_s"):
                values[name] = value
            elif name == "heap_in_use_bytes" and value < 0:
                values[name] = None
            else:
                values[name] = int(value)
        thread_set = self._thread_sets[int(self._thread_set_of[index])]
        return Measurement(other_threads=thread_set, **values)


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name}")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        )
    ]


def _heap_in_use_bytes() -> int | None:
    """Bytes the C heap has handed out and not taken back (glibc ``mallinfo2``), or ``None``.

    RSS also counts heap pages freed but not returned to the system
    (fragmentation); this does not, so the two together tell a leak from a
    fragmented heap.
    """
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _rss_after_heap_trim() -> int | None:
    """RSS once glibc has handed its free heap pages back (``malloc_trim(0)``), or ``None``.

    Measured once, after the soak: how much of the RSS growth was free heap
    the allocator had kept (fragmentation), not memory in use.
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return _status_kib("VmRSS") * 1024


def _thread_census() -> tuple[int, int, int, frozenset[str]]:
    """(all threads, ingest-pool threads, default-executor threads, the names of the others)."""
    ingest = executor = 0
    others = []
    threads = threading.enumerate()
    for thread in threads:
        if thread.name.startswith(INGEST_THREAD_PREFIX):
            ingest += 1
        elif thread.name.startswith(EXECUTOR_THREAD_PREFIX):
            executor += 1
        else:
            others.append(f"{thread.name}#{thread.ident}")
    return len(threads), ingest, executor, frozenset(others)


def measure(step: int, sim_s: float, started: float, **figures: int) -> Measurement:
    """Measure this process now (call it from the event loop, with nothing in flight)."""
    gc.collect()
    threads, ingest, executor, others = _thread_census()
    return Measurement(
        step=step,
        sim_s=sim_s,
        wall_s=time.monotonic() - started,
        rss_bytes=_status_kib("VmRSS") * 1024,
        peak_rss_bytes=_status_kib("VmHWM") * 1024,
        fds=len(os.listdir("/proc/self/fd")),
        threads=threads,
        ingest_threads=ingest,
        executor_threads=executor,
        other_threads=others,
        tasks=len(asyncio.all_tasks()),
        gc_objects=len(gc.get_objects()) + gc.get_freeze_count(),
        allocated_blocks=sys.getallocatedblocks(),
        heap_in_use_bytes=_heap_in_use_bytes(),
        **figures,
    )


def check_bounds(
    samples: Sequence[Measurement],
    warmup_s: float,
    tolerance: float,
    *,
    blocks_tolerance: float,
    ingest_pool: int,
    executor_pool: int,
) -> list[str]:
    """The bounds broken after warm-up, one line each (empty: the soak held).

    The baseline is the last measurement at or before ``warmup_s``; every
    later one must keep RSS, open descriptors, GC-tracked objects and (when
    known) C heap bytes in use at most ``tolerance`` above it and pymalloc
    blocks at most ``blocks_tolerance`` above it (tighter: a leak of a few
    small objects per request shows there long before it shows in RSS), add
    no thread outside the two pools, keep each pool within its size, and have
    no more asyncio tasks.
    """
    before = [s for s in samples if s.sim_s <= warmup_s]
    after = [s for s in samples if s.sim_s > warmup_s]
    if not before or not after:
        return [f"need measurements on both sides of warm-up ({warmup_s:g} s), got {len(samples)}"]
    base = before[-1]
    problems = []
    bounds = [
        ("rss_bytes", "RSS", tolerance),
        ("fds", "open fds", tolerance),
        ("gc_objects", "GC-tracked objects", tolerance),
        ("allocated_blocks", "pymalloc blocks", blocks_tolerance),
    ]
    if base.heap_in_use_bytes is not None:
        bounds.append(("heap_in_use_bytes", "C heap in use", tolerance))
    for name, unit, bound in bounds:
        start = getattr(base, name)
        worst = max(after, key=lambda s: getattr(s, name) or 0)
        value = getattr(worst, name) or 0
        if value > start * (1.0 + bound):
            problems.append(
                f"{unit} grew {value / start - 1.0:+.1%} after warm-up (from {start} at "
                f"{base.sim_hours:.2f} h to {value} at {worst.sim_hours:.2f} h; bound {bound:.0%})"
            )
    new_threads = set().union(*(s.other_threads for s in after)) - base.other_threads
    if new_threads:
        problems.append(f"threads started after warm-up outside the pools: {sorted(new_threads)}")
    for name, size in (("ingest_threads", ingest_pool), ("executor_threads", executor_pool)):
        most = max(getattr(s, name) for s in samples)
        if most > size:
            problems.append(f"{name}: {most} threads in a pool of {size}")
    worst_tasks = max(after, key=lambda s: s.tasks)
    if worst_tasks.tasks > base.tasks:
        problems.append(
            f"asyncio tasks grew after warm-up: {base.tasks} at {base.sim_hours:.2f} h, "
            f"{worst_tasks.tasks} at {worst_tasks.sim_hours:.2f} h"
        )
    return problems


# --- the soak -----------------------------------------------------------------------------------


class Stalled(Exception):
    """The daemon did not finish something within :data:`WAIT_S` of real time."""


async def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` on the event loop until it holds; :class:`Stalled` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise Stalled(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.0005)


SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_series(text: str) -> dict[SeriesKey, float]:
    """``{(sample name, sorted labels): value}`` of a text exposition."""
    found: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class _LogCounter(logging.Handler):
    """Counts the daemon's log records; keeps the unexpected errors' messages (a few)."""

    EXPECTED_ERRORS = ("reload failed",)

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.by_level: dict[str, int] = {}
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.by_level[record.levelname] = self.by_level.get(record.levelname, 0) + 1
        message = record.getMessage()
        if record.levelno >= logging.ERROR and not message.startswith(self.EXPECTED_ERRORS):
            if len(self.unexpected) < 20:
                self.unexpected.append(message)


@dataclass
class SoakContext:
    """What a disturbance (tests that prove the checks can fail) may touch."""

    daemon: Daemon
    session: aiohttp.ClientSession
    url: str
    step: int
    now_s: float  # the simulated clock, Unix seconds
    elapsed_s: float  # simulated seconds since the start
    warmed_up: bool


Disturbance = Callable[[SoakContext], Awaitable[None]]


@dataclass
class SoakResult:
    """Everything a soak measured; ``problems`` empty when every promise held."""

    settings: SoakSettings
    samples: MeasurementLog = field(default_factory=lambda: MeasurementLog(0))
    problems: list[str] = field(default_factory=list)
    steps: int = 0
    rows_posted: int = 0
    requests_posted: int = 0
    checkpoints: int = 0
    reloads: int = 0
    failed_reloads: int = 0
    exact_checks: int = 0
    max_loss_rows: int = 0
    series: int = 0
    alert_transitions: int = 0
    log_records: dict[str, int] = field(default_factory=dict)
    exit_status: int | None = None
    restored_equal: bool = False
    wall_s: float = 0.0
    rss_after_trim_bytes: int | None = None
    reported_kinds: set[str] = field(default_factory=set)

    MAX_PROBLEMS = 200

    def report(self, problem: str, kind: str | None = None) -> None:
        """Record a broken promise; only the first of a ``kind`` (a step-after-step repeat)."""
        if kind is not None:
            if kind in self.reported_kinds:
                return
            self.reported_kinds.add(kind)
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(problem)

    def figures(self) -> dict[str, object]:
        """The closing note's figures (JSON-ready)."""
        figures: dict[str, object] = {
            "simulated_hours": self.steps * self.settings.pane_width_s / 3600.0,
            "wall_s": round(self.wall_s, 1),
            "steps": self.steps,
            "rows_posted": self.rows_posted,
            "requests_posted": self.requests_posted,
            "checkpoints": self.checkpoints,
            "reloads": self.reloads,
            "failed_reloads_expected": self.failed_reloads,
            "exact_checks": self.exact_checks,
            "max_loss_rows": self.max_loss_rows,
            "series": self.series,
            "alert_transitions": self.alert_transitions,
            "exit_status": self.exit_status,
            "restored_equal": self.restored_equal,
            "problems": len(self.problems),
        }
        base = _baseline(self.samples, self.settings.warmup_s)
        if self.samples and base is not None:
            first, last = self.samples[0], self.samples[-1]
            after = [s for s in self.samples if s.sim_s > self.settings.warmup_s] or [last]
            figures.update(
                rss_start_mib=round(first.rss_bytes / 2**20, 1),
                rss_warm_mib=round(base.rss_bytes / 2**20, 1),
                rss_end_mib=round(last.rss_bytes / 2**20, 1),
                rss_drift_pct=round(100 * (last.rss_bytes / base.rss_bytes - 1), 2),
                rss_max_drift_pct=round(
                    100 * (max(s.rss_bytes for s in after) / base.rss_bytes - 1), 2
                ),
                peak_rss_mib=round(last.peak_rss_bytes / 2**20, 1),
                rss_after_heap_trim_mib=(
                    None
                    if self.rss_after_trim_bytes is None
                    else round(self.rss_after_trim_bytes / 2**20, 1)
                ),
                fds_warm=base.fds,
                fds_end=last.fds,
                fds_max=max(s.fds for s in after),
                threads_warm=base.threads,
                threads_end=last.threads,
                threads_max=max(s.threads for s in after),
                tasks_warm=base.tasks,
                tasks_end=last.tasks,
                gc_objects_warm=base.gc_objects,
                gc_objects_end=last.gc_objects,
                gc_objects_drift_pct=round(100 * (last.gc_objects / base.gc_objects - 1), 2),
                blocks_warm=base.allocated_blocks,
                blocks_end=last.allocated_blocks,
                blocks_drift_pct=round(
                    100 * (last.allocated_blocks / base.allocated_blocks - 1), 2
                ),
            )
        if base is not None and base.heap_in_use_bytes and self.samples[-1].heap_in_use_bytes:
            in_use = self.samples[-1].heap_in_use_bytes
            figures.update(
                heap_in_use_warm_mib=round(base.heap_in_use_bytes / 2**20, 2),
                heap_in_use_end_mib=round(in_use / 2**20, 2),
                heap_in_use_drift_pct=round(100 * (in_use / base.heap_in_use_bytes - 1), 2),
            )
        return figures


def _baseline(samples: Sequence[Measurement], warmup_s: float) -> Measurement | None:
    before = [s for s in samples if s.sim_s <= warmup_s]
    return before[-1] if before else None


async def soak(
    settings: SoakSettings,
    directory: Path,
    *,
    disturb: Disturbance | None = None,
    on_sample: Callable[[Measurement], None] | None = None,
) -> SoakResult:
    """Run one soak in ``directory`` (config, reference and state go there); see the module doc.

    ``disturb`` runs after every step, before any measurement (tests use it
    to leak on purpose); ``on_sample`` sees each measurement as it is taken.
    """
    settings.validate()
    started = time.monotonic()
    per_sample = settings.sample_every_s / settings.pane_width_s
    result = SoakResult(settings, samples=MeasurementLog(int(settings.steps / per_sample) + 2))
    features = stream_features()
    write_reference(directory / "credit_reference.csv", features[CREDIT], 5000, settings.seed + 1)
    config_path = directory / "driftmon.json"
    write_config(config_path, config_document(settings, directory, "a"))
    clock = SimulatedClock(START_S)
    daemon = Daemon(config_path, load_config(config_path), clock=clock, sleep=clock.sleep)
    credit = PaneLedger(features[CREDIT], settings.panes, settings.pane_width_s)
    churn = SampleLedger(features[CHURN], settings.warmup_rows, settings.sample_window_rows)
    logs = _LogCounter()
    driftmon_log = logging.getLogger("driftmon")
    driftmon_log.addHandler(logs)
    # Counted, not printed: alerts fire and broken reloads fail on purpose, hundreds of times.
    propagate, driftmon_log.propagate = driftmon_log.propagate, False
    try:
        await _run(
            settings,
            daemon,
            clock,
            features,
            (credit, churn),
            result,
            disturb=disturb,
            on_sample=on_sample,
        )
    finally:
        driftmon_log.removeHandler(logs)
        driftmon_log.propagate = propagate
    result.log_records = dict(logs.by_level)
    result.rss_after_trim_bytes = _rss_after_heap_trim()
    result.problems += [f"unexpected error logged: {m}" for m in logs.unexpected]
    result.wall_s = time.monotonic() - started
    return result


async def _run(
    settings: SoakSettings,
    daemon: Daemon,
    clock: SimulatedClock,
    features: Mapping[str, tuple[Feature, ...]],
    ledgers: tuple[PaneLedger, SampleLedger],
    result: SoakResult,
    *,
    disturb: Disturbance | None,
    on_sample: Callable[[Measurement], None] | None,
) -> None:
    """Serve, drive, stop; then restore a new daemon from the state directory and compare."""
    credit, churn = ledgers
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(daemon.serve_forever(on_listening=listening.set_result))
    try:
        url = await asyncio.wait_for(asyncio.shield(listening), WAIT_S)
        # Ready, and both periodic loops (evaluation, checkpoint) asleep on the clock.
        await wait_until(lambda: daemon.ready and clock.sleepers == 2, "the daemon to be ready")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
            await _drive(
                settings,
                daemon,
                clock,
                session,
                url,
                features,
                (credit, churn),
                result,
                disturb,
                on_sample,
            )
    except Stalled as exc:
        result.report(str(exc))
    finally:
        # TERM's path: drain, checkpoint, exit status 0.
        daemon.request("stop")
        try:
            result.exit_status = await asyncio.wait_for(server, WAIT_S)
        except Exception as exc:  # the stop itself must not hang the soak
            result.report(f"the daemon did not stop cleanly: {exc!r}")
            server.cancel()
            with contextlib.suppress(BaseException):
                await server
    if result.exit_status != 0:
        result.report(f"the daemon exited with status {result.exit_status}")
    else:
        # The checkpoint written at the stop, restored by a new daemon: the same counts.
        restored = Daemon(daemon.config_path, daemon.config, clock=clock, sleep=clock.sleep)
        await asyncio.to_thread(restored.load_state)
        equal = True
        wanted = {CREDIT: credit.expected(clock()), CHURN: churn.expected()}
        if churn.rows < churn.warmup_rows:
            del wanted[CHURN]  # still warming up: no monitor to compare yet
        for stream, live in wanted.items():
            for j, feature in enumerate(features[stream]):
                detail = restored.monitor_detail(stream, feature.name)
                got: Any = detail["live_counts"] if detail is not None else []
                what = f"restored {stream}/{feature.name} live"
                equal = _compare(result, what, got, live[j]) and equal
        result.restored_equal = equal


async def _drive(
    settings: SoakSettings,
    daemon: Daemon,
    clock: SimulatedClock,
    session: aiohttp.ClientSession,
    url: str,
    features: Mapping[str, tuple[Feature, ...]],
    ledgers: tuple[PaneLedger, SampleLedger],
    result: SoakResult,
    disturb: Disturbance | None,
    on_sample: Callable[[Measurement], None] | None,
) -> None:
    """The steps of the soak (see the module docstring), then the bounds over the samples."""
    rng = np.random.default_rng(settings.seed)
    credit, churn = ledgers
    directory = daemon.config_path.parent
    started = time.monotonic()
    base_series: frozenset[SeriesKey] | None = None
    variant = "a"
    reload_ok = True
    firing_before: dict[SeriesKey, float] = {}
    for step in range(settings.steps):
        now = clock()
        elapsed = now - START_S
        drifted = (
            elapsed % settings.drift_period_s >= settings.drift_period_s - settings.drift_length_s
        )
        # 1. this pane's rows: two credit batches and one churn batch, all at once.
        batches = [
            (
                CREDIT,
                make_batch(
                    rng,
                    features[CREDIT],
                    int(rng.integers(*settings.credit_rows)),
                    drifted,
                    BODY_FORMATS[(step + i) % 3],
                ),
            )
            for i in range(2)
        ]
        batches.append(
            (
                CHURN,
                make_batch(
                    rng,
                    features[CHURN],
                    int(rng.integers(*settings.churn_rows)),
                    drifted,
                    BODY_FORMATS[step % 3],
                ),
            )
        )
        answers = await asyncio.gather(
            *(_post(session, f"{url}/v1/streams/{s}/rows", b) for s, b in batches)
        )
        for (stream, batch), (status, text) in zip(batches, answers, strict=True):
            if status != 200:
                raise Stalled(f"step {step}: POST {stream} answered {status}: {text[:200]}")
            if stream == CREDIT:
                credit.add(batch.codes, now)
            else:
                churn.add(batch.codes)
            result.rows_posted += batch.codes.shape[1]
            result.requests_posted += 1
        # 2. a reload now and then, in turn by HTTP, by the SIGHUP queue, broken, by HTTP.
        if step and (elapsed % settings.reload_every_s) == 0:
            kind = result.reloads % 4
            if kind == 2:
                write_config(daemon.config_path, config_document(settings, directory, "broken"))
            else:
                variant = "b" if variant == "a" else "a"
                write_config(daemon.config_path, config_document(settings, directory, variant))
            if kind == 1:
                config_before, latest_before = daemon.config, daemon.latest
                daemon.request("reload")  # what SIGHUP does
                await wait_until(
                    lambda c=config_before, e=latest_before: (
                        daemon.config is not c and daemon.latest is not e
                    ),
                    "a queued reload",
                )
            else:
                status, text = await _post(session, f"{url}/-/reload", None)
                if status != (400 if kind == 2 else 200):
                    result.report(f"step {step}: reload ({kind=}) answered {status}: {text}")
            reload_ok = kind != 2
            result.failed_reloads += kind == 2
            result.reloads += 1
        # 3. one pane later: the daemon's own loops evaluate (and checkpoint) on their ticks.
        clock.advance(settings.pane_width_s)
        now = clock()
        checkpoint_due = math.fmod(now, settings.checkpoint_every_s) == 0
        await wait_until(
            lambda now=now, due=checkpoint_due: (
                daemon.latest is not None
                and daemon.latest.time == now
                and (not due or daemon.status().checkpoint_last_success_s == now)
                and clock.sleepers == 2
            ),
            f"the evaluation{' and checkpoint' if checkpoint_due else ''} at step {step}",
        )
        result.checkpoints += checkpoint_due
        result.steps = step + 1
        # 4. the scrape: same series, counters equal to what was posted.
        status, text = await _get(session, f"{url}/metrics")
        if status != 200:
            raise Stalled(f"step {step}: /metrics answered {status}")
        scraped = parse_series(text)
        keys = frozenset(scraped)
        warmed_up = now - START_S > settings.warmup_s
        if warmed_up:
            if base_series is None:
                base_series = keys
            elif keys != base_series:
                result.report(
                    f"series changed at {(now - START_S) / 3600:.2f} h: "
                    f"+{sorted(keys - base_series)[:5]} -{sorted(base_series - keys)[:5]}",
                    kind="series",
                )
        result.series = len(keys)
        _check_counters(scraped, result, now, reload_ok, step)
        firing = {k: v for k, v in scraped.items() if k[0] == "driftmon_alert_firing"}
        result.alert_transitions += sum(firing_before.get(k, 0.0) != v for k, v in firing.items())
        firing_before = firing
        if disturb is not None:
            await disturb(SoakContext(daemon, session, url, step, now, now - START_S, warmed_up))
        if (now - START_S) % settings.sample_every_s == 0 or step == settings.steps - 1:
            await _exact_checks(session, url, features, credit, churn, now, result)
            sample = measure(
                step,
                now - START_S,
                started,
                series=len(keys),
                window_rows=int(sum(credit.expected(now)[0])),
                checkpoints=result.checkpoints,
                reloads=result.reloads,
            )
            result.samples.append(sample)
            if on_sample is not None:
                on_sample(sample)
    result.problems += check_bounds(
        result.samples,
        settings.warmup_s,
        settings.tolerance,
        blocks_tolerance=settings.blocks_tolerance,
        ingest_pool=daemon.config.ingest.worker_count,
        executor_pool=min(32, (os.cpu_count() or 1) + 4),
    )


def _check_counters(
    scraped: Mapping[SeriesKey, float], result: SoakResult, now: float, reload_ok: bool, step: int
) -> None:
    """Counters and gauges that must equal what the soak did."""

    def value(name: str, **labels: str) -> float | None:
        return scraped.get((name, tuple(sorted(labels.items()))))

    wanted = {
        ("driftmon_ingest_requests_total", (("code", "200"),)): float(result.requests_posted),
        ("driftmon_checkpoint_failures_total", ()): 0.0,
        ("driftmon_config_last_reload_successful", ()): 1.0 if reload_ok else 0.0,
    }
    for (name, labels), expected in wanted.items():
        got = value(name, **dict(labels))
        if got != expected:
            result.report(
                f"step {step}: {name}{dict(labels)} = {got}, expected {expected}", kind=name
            )
    last = value("driftmon_last_evaluation_timestamp_seconds")
    if last is None or not now <= last < now + 1.0:
        result.report(
            f"step {step}: last evaluation timestamp {last}, expected {now}", kind="evaluated"
        )
    codes = [
        key
        for key in scraped
        if key[0] == "driftmon_ingest_requests_total" and key[1] != (("code", "200"),)
    ]
    if codes:
        result.report(f"step {step}: ingest answers other than 200: {codes}", kind="codes")


async def _exact_checks(
    session: aiohttp.ClientSession,
    url: str,
    features: Mapping[str, tuple[Feature, ...]],
    credit: PaneLedger,
    churn: SampleLedger,
    now: float,
    result: SoakResult,
) -> None:
    """Every monitor's live counts (and the frozen warmup reference) against the ledgers.

    While the warmup stream still collects its reference it has no monitor
    (404) and ``driftmon_warmup_rows`` must count exactly the rows posted.
    """
    warming = churn.rows < churn.warmup_rows
    wanted = {CREDIT: (credit.expected(now), None), CHURN: (churn.expected(), churn.reference)}
    rows_total = {CREDIT: credit.rows, CHURN: churn.rows}
    status, text = await _get(session, f"{url}/metrics")
    scraped = parse_series(text) if status == 200 else {}
    warmup_rows = scraped.get(("driftmon_warmup_rows", (("stream", CHURN),)))
    if warmup_rows != (churn.rows if warming else None):
        result.report(f"{CHURN}: warmup rows {warmup_rows}, posted {churn.rows}")
    for stream, (live, reference) in wanted.items():
        got_rows = scraped.get(("driftmon_ingest_rows_total", (("stream", stream),)))
        if got_rows != rows_total[stream]:
            result.report(f"{stream}: {got_rows} rows counted, {rows_total[stream]} posted")
        for j, feature in enumerate(features[stream]):
            status, text = await _get(session, f"{url}/api/v1/monitors/{stream}/{feature.name}")
            if stream == CHURN and warming:
                if status != 404:
                    result.report(f"{stream}/{feature.name}: {status} while warming up")
                continue
            if status != 200:
                result.report(f"{stream}/{feature.name}: monitor answered {status}")
                continue
            detail = json.loads(text)
            _compare(result, f"{stream}/{feature.name} live", detail["live_counts"], live[j])
            if detail["samples"] != int(live[j].sum()):
                result.report(
                    f"{stream}/{feature.name}: {detail['samples']} window samples, "
                    f"expected {int(live[j].sum())}"
                )
            if reference is not None:
                _compare(
                    result,
                    f"{stream}/{feature.name} reference",
                    detail["reference_counts"],
                    reference[j],
                )
    result.exact_checks += 1


def _compare(result: SoakResult, what: str, got: Sequence[float], expected: np.ndarray) -> bool:
    """Whether ``got`` equals ``expected`` exactly; reports the difference when not."""
    got_array = np.asarray(got, dtype=np.float64)
    if got_array.shape == expected.shape and np.array_equal(got_array, expected):
        return True
    if got_array.shape == expected.shape:
        loss = int(np.abs(got_array - expected).sum())
        result.max_loss_rows = max(result.max_loss_rows, loss)
    result.report(f"{what}: got {got_array.tolist()}, expected {expected.tolist()}")
    return False


async def _post(session: aiohttp.ClientSession, url: str, batch: Batch | None) -> tuple[int, str]:
    headers = {"Content-Type": batch.content_type} if batch is not None else None
    body = batch.body if batch is not None else None
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


def _rows(table: Iterator[Measurement]) -> Iterator[str]:
    """The header, then one line per measurement; "vs warm" is relative to the first one."""
    yield (
        f"{'sim h':>6} {'wall s':>7} {'RSS MiB':>8} {'vs warm':>8} {'heap MiB':>8} {'fds':>4} "
        f"{'thr':>4} {'tasks':>5} {'series':>6} {'GC objs':>8} {'blocks':>8} {'window':>7} "
        f"{'ckpts':>5} {'reloads':>7}"
    )
    base: Measurement | None = None
    for s in table:
        base = base or s
        heap = "-" if s.heap_in_use_bytes is None else f"{s.heap_in_use_bytes / 2**20:.1f}"
        yield (
            f"{s.sim_hours:6.2f} {s.wall_s:7.1f} {s.rss_bytes / 2**20:8.1f} "
            f"{100 * (s.rss_bytes / base.rss_bytes - 1):+7.1f}% {heap:>8} {s.fds:4d} "
            f"{s.threads:4d} {s.tasks:5d} {s.series:6d} {s.gc_objects:8d} "
            f"{s.allocated_blocks:8d} {s.window_rows:7d} {s.checkpoints:5d} {s.reloads:7d}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print the table and the figures; 1 when a bound is broken."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--warmup-hours", type=float, default=1.0, help="warm-up (default 1)")
    parser.add_argument("--pane-seconds", type=float, default=15.0, help="pane width (default 15)")
    parser.add_argument("--panes", type=int, default=60, help="panes per window (default 60)")
    parser.add_argument("--print-every-hours", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    settings = SoakSettings(
        hours=args.hours,
        warmup_s=args.warmup_hours * 3600.0,
        pane_width_s=args.pane_seconds,
        panes=args.panes,
        seed=args.seed,
    )
    print(
        f"soak: {settings.hours:g} simulated hours, {settings.steps} panes of "
        f"{settings.pane_width_s:g} s, window {settings.panes} panes, checkpoint every "
        f"{settings.checkpoint_every_s:g} s, reload every {settings.reload_every_s:g} s, "
        f"warm-up {settings.warmup_s / 3600:g} h, bound +{settings.tolerance:.0%}",
        flush=True,
    )
    header_printed = [False]
    print_every_s = args.print_every_hours * 3600.0
    warm: list[Measurement] = []

    def show(sample: Measurement) -> None:
        if sample.sim_s <= settings.warmup_s:
            warm[:] = [sample]
        if sample.sim_s % print_every_s and sample.step != settings.steps - 1:
            return
        lines = list(_rows(iter([*(warm if warm else []), sample])))
        if not header_printed[0]:
            print(lines[0], flush=True)
            header_printed[0] = True
        print(lines[-1], flush=True)

    with tempfile.TemporaryDirectory(prefix="driftmon-soak-") as directory:
        result = asyncio.run(soak(settings, Path(directory), on_sample=show))
    figures = result.figures()
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    for problem in result.problems:
        print(f"BROKEN: {problem}", file=sys.stderr)
    print("soak: " + ("FAILED" if result.problems else "all bounds held"), flush=True)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
