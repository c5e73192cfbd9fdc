"""Every monitor's recent evaluations: one bounded ring packed over all monitors.

An entry holds, for each monitor, the values of :data:`HISTORY_METRICS`
(float32: seven significant digits are plenty for a chart and halve the
memory), the live window's samples (float64, exact) and how many of its alert
rules were firing (uint8). The ring keeps ``capacity`` entries, at most one per
``every_s`` (config ``engine.history: {length, every}``): each evaluation is
recorded when ``every_s`` has passed since the last entry, give or take half
an evaluation interval. Memory: :func:`ring_bytes`, 37 bytes per monitor and
entry (plus 8 per entry for its time).

Like the engine's other state, the arrays are indexed by monitor number;
:meth:`HistoryRing.export` describes them by (stream, feature, layout key) so
that a reload, a frozen warmup or a restart can carry them to a new packing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

HISTORY_METRICS: tuple[str, ...] = (
    "kl",
    "kl_reverse",
    "js",
    "psi",
    "hellinger",
    "wasserstein",
    "p_value",
)
"""The per-monitor values an entry keeps, in the order of the ``values`` arrays' last axis."""

BYTES_PER_MONITOR_ENTRY = 4 * len(HISTORY_METRICS) + 8 + 1


def ring_bytes(capacity: int, n_monitors: int) -> int:
    """Bytes the arrays of a ring of ``capacity`` entries over ``n_monitors`` monitors hold."""
    return capacity * (8 + n_monitors * BYTES_PER_MONITOR_ENTRY)


MonitorKey = tuple[str, str, tuple[object, ...]]
"""(stream, feature, layout key) of a monitor: what its history belongs to."""


@dataclass(frozen=True)
class MonitorHistory:
    """One monitor's entries, oldest first (copies: safe to read anywhere).

    ``values[name]`` is float64[n] (NaN: absent, as in the evaluation);
    ``samples`` float64[n]; ``firing`` int[n], the rules firing at that time.
    """

    times: np.ndarray
    values: Mapping[str, np.ndarray]
    samples: np.ndarray
    firing: np.ndarray

    def __len__(self) -> int:
        return int(self.times.size)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: ``times``, ``samples``, ``firing`` and one list per metric
        (``null`` for absent, ``"+Inf"`` for an infinite value, as the monitors API)."""
        return {
            "times": [float(t) for t in self.times],
            "samples": [int(s) for s in self.samples],
            "firing": [int(f) for f in self.firing],
            "values": {
                name: [json_number(float(v)) for v in self.values[name]] for name in HISTORY_METRICS
            },
        }


def json_number(value: float) -> float | str | None:
    """A float for JSON: NaN as ``null``, infinities as ``\"+Inf\"``/``\"-Inf\"``."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


@dataclass(frozen=True)
class HistoryState:
    """A ring's entries described per monitor, so they survive re-packing (oldest first).

    ``times`` float64[n]; ``values`` float32[n, m, len(HISTORY_METRICS)];
    ``samples`` float64[n, m]; ``firing`` uint8[n, m], for the ``m`` monitors
    of ``monitors``.
    """

    monitors: tuple[MonitorKey, ...]
    times: np.ndarray
    values: np.ndarray
    samples: np.ndarray
    firing: np.ndarray

    @classmethod
    def empty(cls) -> HistoryState:
        """No monitors, no entries: what a checkpoint without a history section means."""
        return cls(
            (),
            np.zeros(0),
            np.zeros((0, 0, len(HISTORY_METRICS)), dtype=np.float32),
            np.zeros((0, 0)),
            np.zeros((0, 0), dtype=np.uint8),
        )


class HistoryRing:
    """The last ``capacity`` recorded evaluations of ``n_monitors`` monitors.

    Not thread-safe: the engine's owner serialises :meth:`record` and reads.
    """

    def __init__(
        self, capacity: int, n_monitors: int, every_s: float, tolerance_s: float = 0.0
    ) -> None:
        if capacity < 0 or n_monitors < 0:
            raise ValueError(f"capacity and n_monitors must be >= 0, got {capacity}, {n_monitors}")
        self.capacity = capacity
        self.every_s = every_s
        self.tolerance_s = tolerance_s
        # Slots past ``size`` are never read, so nothing is written before an entry is:
        # the pages stay untouched (no resident memory) until the ring fills, and an
        # engine that never evaluates (a parse process's) costs nothing for it.
        self.times = np.empty(capacity)
        self.values = np.empty((capacity, n_monitors, len(HISTORY_METRICS)), np.float32)
        self.samples = np.empty((capacity, n_monitors))
        self.firing = np.empty((capacity, n_monitors), dtype=np.uint8)
        self.head = 0  # the slot the next entry goes to
        self.size = 0
        self.recorded = 0  # grows with every change of the entries (see :meth:`caught_up`)

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring's arrays."""
        return sum(a.nbytes for a in (self.times, self.values, self.samples, self.firing))

    def last_time(self) -> float | None:
        """Time of the newest entry, ``None`` when empty."""
        if self.size == 0:
            return None
        return float(self.times[(self.head - 1) % self.capacity])

    def due(self, time: float) -> bool:
        """Whether an evaluation at ``time`` is recorded (``every_s`` passed, or the clock
        went back: a stepped wall clock must not freeze the history)."""
        last = self.last_time()
        if self.capacity == 0:
            return False
        return last is None or time < last or time - last >= self.every_s - self.tolerance_s

    def record(
        self,
        time: float,
        values: Mapping[str, np.ndarray],
        samples: np.ndarray,
        firing: np.ndarray,
    ) -> bool:
        """Append one evaluation when :meth:`due`; returns whether it was recorded.

        ``values[name]`` float64[M] for every name of :data:`HISTORY_METRICS`,
        ``samples`` and ``firing`` [M]; the oldest entry is overwritten when full.
        """
        if not self.due(time):
            return False
        slot = self.head
        self.times[slot] = time
        for j, name in enumerate(HISTORY_METRICS):
            self.values[slot, :, j] = values[name]
        self.samples[slot] = samples
        self.firing[slot] = np.minimum(firing, 255)
        self.head = (self.head + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.recorded += 1  # last: a reader without the lock compares it before and after
        return True

    def _order(self) -> np.ndarray:
        """Slots oldest first."""
        return (self.head - self.size + np.arange(self.size)) % max(self.capacity, 1)

    def monitor(self, index: int) -> MonitorHistory:
        """Monitor number ``index``'s entries, oldest first."""
        order = self._order()
        values = self.values[order, index, :].astype(np.float64)
        return MonitorHistory(
            times=self.times[order].copy(),
            values={name: values[:, j] for j, name in enumerate(HISTORY_METRICS)},
            samples=self.samples[order, index].copy(),
            firing=self.firing[order, index].astype(np.int64),
        )

    def metric(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(times[n], float64[n, M]) of one metric for every monitor, oldest first."""
        order = self._order()
        j = HISTORY_METRICS.index(name)
        return self.times[order].copy(), self.values[order, :, j].astype(np.float64)

    def monitors(self, indices: Sequence[int], name: str) -> list[MonitorHistory]:
        """Histories of one metric (``values`` holds only ``name``) for monitors ``indices``."""
        order = self._order()
        j = HISTORY_METRICS.index(name)
        columns = np.asarray(indices, dtype=np.int64)
        times = self.times[order]
        values = self.values[order][:, columns, j].astype(np.float64)
        samples = self.samples[order][:, columns]
        firing = self.firing[order][:, columns].astype(np.int64)
        return [
            MonitorHistory(times, {name: values[:, k]}, samples[:, k], firing[:, k])
            for k in range(columns.size)
        ]

    def inserted(self, at: int, count: int) -> HistoryRing:
        """A copy with ``count`` monitors without entries (NaN) inserted before monitor ``at``.

        Copies the filled slots only (slots ``[0, size)``: the ring fills from slot 0).
        """
        n_monitors = self.values.shape[1]
        ring = HistoryRing(self.capacity, n_monitors + count, self.every_s, self.tolerance_s)
        ring.head, ring.size, ring.recorded = self.head, self.size, self.recorded
        filled = slice(0, self.size)
        ring.times[filled] = self.times[filled]
        arrays: list[tuple[np.ndarray, np.ndarray, float]] = [
            (ring.values, self.values, np.nan),
            (ring.samples, self.samples, 0.0),
            (ring.firing, self.firing, 0),
        ]
        for new, old, blank in arrays:
            new[filled, :at] = old[filled, :at]
            new[filled, at : at + count] = blank
            new[filled, at + count :] = old[filled, at:]
        return ring

    def caught_up(self, source: HistoryRing, at: int, count: int, since: int) -> HistoryRing:
        """This ring, made by ``source.inserted(at, count)`` when ``source.recorded`` was
        ``since``, with the entries ``source`` recorded since then copied in too.

        So the big copy can be made without the engine's lock (a slot being
        written meanwhile is copied again here); returns a fresh
        :meth:`inserted` copy when more than the ring's capacity changed.
        """
        changed = source.recorded - since
        if changed == 0:
            return self
        if changed >= self.capacity:
            return source.inserted(at, count)
        slots = (source.head - 1 - np.arange(changed)) % self.capacity
        self.times[slots] = source.times[slots]
        arrays: list[tuple[np.ndarray, np.ndarray, float]] = [
            (self.values, source.values, np.nan),
            (self.samples, source.samples, 0.0),
            (self.firing, source.firing, 0),
        ]
        for new, old, blank in arrays:
            new[slots, :at] = old[slots, :at]
            new[slots, at : at + count] = blank
            new[slots, at + count :] = old[slots, at:]
        self.head, self.size, self.recorded = source.head, source.size, source.recorded
        return self

    def export(self, monitors: Sequence[MonitorKey]) -> HistoryState:
        """Copies of the entries, oldest first, for the ring's monitors named ``monitors``."""
        order = self._order()
        return HistoryState(
            monitors=tuple(monitors),
            times=self.times[order].copy(),
            values=self.values[order].copy(),
            samples=self.samples[order].copy(),
            firing=self.firing[order].copy(),
        )

    def restore(self, state: HistoryState, monitors: Sequence[MonitorKey]) -> int:
        """Replace the ring's contents with ``state``'s newest entries (up to ``capacity``).

        ``monitors`` names this ring's monitors; each takes the entries of the
        monitor of ``state`` with the same (stream, feature, layout key), the
        others get no values (NaN) in them. Returns how many monitors kept
        their history.
        """
        n = min(len(state.times), self.capacity)
        self.values[:n] = np.nan
        self.samples[:n] = 0
        self.firing[:n] = 0
        self.head = n % max(self.capacity, 1)
        self.recorded += self.capacity + 1  # every slot changed
        self.size = n
        if n == 0:
            return 0
        first = len(state.times) - n
        self.times[:n] = state.times[first:]
        old = {key: j for j, key in enumerate(state.monitors)}
        kept = 0
        for i, key in enumerate(monitors):
            j = old.get(key)
            if j is None:
                continue
            self.values[:n, i, :] = state.values[first:, j, :]
            self.samples[:n, i] = state.samples[first:, j]
            self.firing[:n, i] = state.firing[first:, j]
            kept += 1
        return kept
