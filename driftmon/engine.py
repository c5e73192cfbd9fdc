"""The engine: every monitor's counts in a few packed arrays (docs/, docs/durability.md).

Monitors are views (an offset and a length) into three float64 arrays of
``B`` bins for all monitors together: ``reference``, ``live`` (the sum of
each stream's window) and ``ingested`` (every value ever binned, for the
ingest counters). A stream's monitors are contiguous, so a stream's window
works on one slice. One kernel call evaluates every monitor.

Ingest is split in two so that ingest workers can bin in parallel:
:meth:`Engine.bin_batch` (no shared state touched; runs the ``nogil``
binning kernels into a buffer the batch owns) and :meth:`Engine.apply` (adds
that buffer to the window; callers serialise it, it costs O(bins)).
:meth:`Engine.ingest` does both.

A stream with a ``warmup`` reference collects its first N rows as raw values
(layouts such as quantile edges may need them whole), then learns its
layouts, freezes the reference and packs its monitors; rows after the N-th
feed the live window. The freeze is split like ingest: :meth:`Engine.plan_freeze`
learns the layout and builds the new packing touching no shared state, and
:meth:`Engine.commit_freeze` swaps it in (O(bins) copies); rows that arrive
in between are held and binned at the commit.

What an evaluation publishes is :mod:`driftmon.evaluation`; how monitors lie
in the arrays, and rows binned into a stream's slice, :mod:`driftmon.packing`.
What stays here (about 950 lines) is the one class that changes the live
arrays: every such method sits beside the others so that which of them run
under the ingest lock (``apply``, ``commit_freeze``, ``evaluate``...) and
which must not (``bin_batch``, ``plan_freeze``, ``successor``) reads in one
place.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from driftmon.alerting import AlertState, AlertTable, advance
from driftmon.binning import (
    MAX_KEPT_CATEGORY_CHARS,
    normalise_categorical,
    normalise_numeric,
)
from driftmon.config import (
    Config,
    FeatureConfig,
    SampleWindow,
    StreamConfig,
    TimeWindow,
)
from driftmon.divergence import METRICS
from driftmon.evaluation import ALL_METRICS, AlertPair, Evaluation, Monitor
from driftmon.history import HistoryRing, HistoryState, MonitorKey
from driftmon.kinds import ValueKindTotals
from driftmon.multiple_testing import combined_p_values
from driftmon.packing import Packing, StreamLayout, bin_rows, build_packing
from driftmon.reference import (
    Reference,
    ReferenceError,
    build_reference,
    features_hash,
    layout_key,
    load_reference_file,
    load_snapshot,
)
from driftmon.window import Carry, LiveWindow, PaneWindow
from driftmon.window import SampleWindow as SampleRing


class UnknownStreamError(KeyError):
    """Rows for a stream the config does not name."""


@dataclass
class BinnedBatch:
    """A batch binned against one packing of the engine (see :meth:`Engine.bin_batch`)."""

    stream: str
    n_rows: int
    columns: Mapping[str, Sequence[object] | np.ndarray]
    generation: int
    counts: np.ndarray | None = None  # float64 over the stream's bins (pane windows)
    indices: np.ndarray | None = None  # int32 [rows, features] (sample windows)


@dataclass(frozen=True)
class _Held:
    """Rows ``first_row:`` of a batch that came while its stream's freeze was planned."""

    columns: Mapping[str, Sequence[object] | np.ndarray]
    n_rows: int
    first_row: int
    now: float
    window: bool


@dataclass
class _Stream:
    """Runtime state of one stream."""

    config: StreamConfig
    reference: Reference | None
    monitors: tuple[Monitor, ...] = ()
    start: int = 0
    stop: int = 0
    window: LiveWindow | None = None
    warmup_rows: int = 0
    warmup_columns: dict[str, list[object]] = field(default_factory=dict)
    # Not None once the warmup has its N rows and until its freeze is committed: the
    # rows that came after the N-th meanwhile, binned at the commit.
    backlog: list[_Held] | None = None
    rows_total: int = 0
    unknown_fields_total: int = 0

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class FreezePlan:
    """A warmup freeze learnt without the ingest lock (:meth:`Engine.plan_freeze`).

    ``reference`` is ``None`` when the warmup rows define no layout (e.g. no
    valid category at all): the commit then starts a fresh warmup.
    """

    stream: str
    base_generation: int  # the packing it was planned against
    backlog: list[_Held]  # identifies the warmup it freezes
    reference: Reference | None
    packing: Packing | None = None
    bin_at: int = 0  # the stream's bins go in at this offset ...
    n_bins: int = 0
    monitor_at: int = 0  # ... and its monitors at this index
    n_monitors: int = 0
    pair_source: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # The history ring with the new monitors' columns, copied from ``history_base``
    # when its ``recorded`` was ``history_since`` (the commit adds what came after).
    history_base: HistoryRing | None = None
    history_since: int = 0
    history: HistoryRing | None = None


def stream_fingerprint(stream: StreamConfig) -> str:
    """A hash of what a stream's reference depends on: its features and reference spec."""
    spec = stream.reference
    text = repr((features_hash(stream), spec.kind, str(spec.path), spec.format, spec.warmup_rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_reference(stream: StreamConfig) -> Reference | None:
    """The stream's reference as its config says, or ``None`` for a warmup still to collect."""
    spec = stream.reference
    if spec.kind == "warmup":
        return None
    assert spec.path is not None
    if spec.kind == "snapshot":
        return load_snapshot(spec.path, stream)
    return load_reference_file(stream, spec.path, spec.format)


class Engine:
    """All monitors of one config, their windows, references and alert states.

    Not thread-safe: the daemon serialises :meth:`apply`, :meth:`evaluate` and
    reloads; :meth:`bin_batch` only reads immutable layout state and may run in
    several threads at once.
    """

    def __init__(
        self,
        config: Config,
        *,
        now: float | None = None,
        references: Mapping[str, Reference | None] | None = None,
    ) -> None:
        """Build the engine; reads reference files unless ``references`` gives them.

        A ``None`` entry in ``references`` is a stream without a reference: a
        ``warmup`` stream still collecting, or a ``file``/``snapshot`` stream
        whose file was unusable at start (the daemon moved it aside). The
        latter has no monitors and no window, so no divergence series; its
        rows are counted and dropped, and it never turns into a warmup
        (:meth:`adopt` may still give it the reference a checkpoint kept).
        Raises :class:`~driftmon.reference.ReferenceError` when a reference
        it reads cannot be loaded.
        """
        self.config = config
        self.now = time.time() if now is None else now
        self.log_base = config.engine.log_base
        self.generation = 0
        self._streams: dict[str, _Stream] = {}
        for stream_config in config.streams:
            if references is not None and stream_config.name in references:
                reference = references[stream_config.name]
            else:
                reference = load_reference(stream_config)
            self._streams[stream_config.name] = _Stream(stream_config, reference)
        self._pack()

    # --- layout ---------------------------------------------------------------

    def _pack(self) -> None:
        """(Re)build the packed arrays from the streams' layouts; windows start empty."""
        self._install(build_packing(self.config, [s.reference for s in self._streams.values()]))
        self.live = np.zeros(self.n_bins, dtype=np.float64)
        self.ingested = np.zeros(self.n_bins, dtype=np.float64)
        for stream in self._streams.values():
            stream.window = self._new_window(stream)
        self._set_alerts(previous=None)
        engine_config = self.config.engine
        self.history = HistoryRing(
            engine_config.history_capacity,
            len(self.monitors),
            max(engine_config.history_every_s, engine_config.evaluate_every_s),
            tolerance_s=engine_config.evaluate_every_s / 2,
        )

    def _install(self, packing: Packing) -> None:
        """Take ``packing``'s layout (not its counts: the caller sets those)."""
        for stream, (start, stop, monitors) in zip(
            self._streams.values(), packing.slices, strict=True
        ):
            stream.start, stream.stop, stream.monitors = start, stop, monitors
        self._packing = packing
        self.monitors: tuple[Monitor, ...] = packing.monitors
        self.n_bins = packing.n_bins
        self.reference = packing.reference
        self.bin_offsets = packing.bin_offsets
        self.reference_samples = packing.reference_samples
        self._divergence = packing.divergence
        self._kind_layout = packing.kind_layout
        self._numeric_index = packing.numeric_index
        self._wasserstein = packing.wasserstein
        self.alert_pairs: tuple[AlertPair, ...] = packing.alert_pairs
        self._alert_params = packing.alert_params
        self._alert_metric_rows = packing.alert_metric_rows
        self._alert_monitors = packing.alert_monitors
        self._p_value_families = packing.p_value_families
        self.generation = packing.generation

    def history_keys(self) -> list[MonitorKey]:
        """(stream, feature, layout key) of every monitor, in monitor order."""
        return [(m.stream, m.feature, layout_key(m.binner)) for m in self.monitors]

    def _new_window(self, stream: _Stream) -> LiveWindow | None:
        if not stream.monitors:
            return None
        live = self.live[stream.start : stream.stop]
        window = stream.config.window
        if isinstance(window, TimeWindow):
            return PaneWindow(live, window.panes, window.pane_width_s)
        assert isinstance(window, SampleWindow)
        return SampleRing(live, window.samples, len(stream.monitors))

    def _set_alerts(self, previous: Mapping[tuple[str, str, str], tuple] | None) -> None:
        """Alert states of this packing's pairs: ``previous``'s for unchanged rules, else empty."""
        pairs = self.alert_pairs
        table = AlertTable.empty(len(pairs))
        if previous:
            state = table.state.copy()
            active_at = table.active_at.copy()
            fired_at = table.fired_at.copy()
            cleared_at = table.cleared_at.copy()
            for i, pair in enumerate(pairs):
                monitor = self.monitors[pair.monitor]
                kept = previous.get((pair.rule.name, monitor.stream, monitor.feature))
                if kept is not None and kept[0] == pair.rule:
                    state[i], active_at[i], fired_at[i], cleared_at[i] = kept[1:]
            table = AlertTable(state, active_at, fired_at, cleared_at)
        self.alerts = table

    def alert_states(self) -> dict[tuple[str, str, str], tuple]:
        """(rule, stream, feature) → (rule, state, active_at, fired_at, cleared_at)."""
        table = self.alerts
        result: dict[tuple[str, str, str], tuple] = {}
        for i, pair in enumerate(self.alert_pairs):
            monitor = self.monitors[pair.monitor]
            result[(pair.rule.name, monitor.stream, monitor.feature)] = (
                pair.rule,
                int(table.state[i]),
                float(table.active_at[i]),
                float(table.fired_at[i]),
                float(table.cleared_at[i]),
            )
        return result

    # --- ingest ---------------------------------------------------------------

    def stream_config(self, name: str) -> StreamConfig:
        """The config of stream ``name``; :class:`UnknownStreamError` when there is none."""
        try:
            return self._streams[name].config
        except KeyError:
            raise UnknownStreamError(name) from None

    def bin_batch(
        self,
        stream_name: str,
        n_rows: int,
        columns: Mapping[str, Sequence[object] | np.ndarray],
    ) -> BinnedBatch:
        """Bin one batch of rows (one column per feature it reaches) without applying it.

        A feature absent from ``columns`` is not reached by these rows (its
        counts do not change); a feature present with ``None`` values counts
        them as missing. Touches no shared state.
        """
        stream = self._streams.get(stream_name)
        if stream is None:
            raise UnknownStreamError(stream_name)
        for name, values in columns.items():
            if len(values) != n_rows:
                raise ValueError(f"column {name!r} has {len(values)} values, expected {n_rows}")
        batch = BinnedBatch(stream_name, n_rows, columns, self.generation)
        if stream.reference is None or n_rows == 0:
            return batch  # warming up: apply() decides what goes where
        self._bin_into(stream, batch, 0)
        return batch

    def _bin_into(self, stream: _Stream, batch: BinnedBatch, first_row: int) -> None:
        """Bin rows ``first_row:`` of ``batch`` for ``stream``'s current layout."""
        batch.counts, batch.indices = bin_rows(
            self._layout_of(stream), batch.columns, batch.n_rows, first_row
        )

    def _layout_of(self, stream: _Stream) -> StreamLayout:
        return StreamLayout(
            stream.monitors,
            stream.start,
            stream.stop - stream.start,
            stream.window is not None and stream.window.keeps_rows,
            self.generation,
        )

    def stream_layout(self, name: str) -> StreamLayout:
        """What :func:`bin_rows` needs to bin ``name``'s rows as this engine does now.

        Binners and offsets only: a parse process bins with it (:mod:`driftmon.parsers`).
        """
        stream = self._streams.get(name)
        if stream is None:
            raise UnknownStreamError(name)
        return self._layout_of(stream)

    def apply(
        self,
        batch: BinnedBatch,
        now: float,
        *,
        unknown_fields: int = 0,
        window: bool = True,
        defer_freeze: bool = False,
    ) -> bool:
        """Add a binned batch to its stream's window at time ``now``.

        A batch binned against an older packing (a reload or a frozen warmup
        happened in between) is binned again first. With ``window=False`` the
        batch is binned and counted but its window is left alone: in
        ``cluster.mode: shared`` the counts go to the store (driftmon/cluster/).

        When the batch completes a warmup, the freeze happens here, unless
        ``defer_freeze``: then the rows past the N-th are held, and so are the
        rows of later batches, until the caller commits a plan
        (:meth:`plan_freeze`, :meth:`commit_freeze`); returns ``True`` then.
        """
        stream = self._streams.get(batch.stream)
        if stream is None:
            raise UnknownStreamError(batch.stream)
        self.now = max(self.now, now)
        stream.rows_total += batch.n_rows
        stream.unknown_fields_total += unknown_fields
        if stream.reference is None and stream.config.reference.kind != "warmup":
            # A reference that could not be loaded at start (see `Engine`): no
            # monitor, no window; the rows are counted and nothing else.
            return False
        if stream.reference is None:
            if not self._take_rows(stream, batch.columns, batch.n_rows, 0, now, window):
                return False
            if defer_freeze:
                return True
            # Frozen here: this batch's rows past the N-th are binned into it below, so
            # that the caller gets their counts (shared mode sends them to the store).
            assert stream.backlog is not None
            rest = stream.backlog.pop() if stream.backlog else None
            self.freeze(stream.name)
            while stream.reference is None and rest is not None:
                # The warmup defined no layout: the rest of the batch starts the next one.
                if not self._take_rows(
                    stream, batch.columns, batch.n_rows, rest.first_row, now, window
                ):
                    return False
                assert stream.backlog is not None
                rest = stream.backlog.pop() if stream.backlog else None
                self.freeze(stream.name)
            if rest is None or stream.reference is None:
                return False
            self._bin_into(stream, batch, rest.first_row)
        elif batch.generation != self.generation or batch.counts is None:
            self._bin_into(stream, batch, 0)
        assert batch.counts is not None and stream.window is not None
        self.ingested[stream.start : stream.stop] += batch.counts
        if window:
            stream.window.add(batch.counts, now, batch.indices)
        return False

    def ingest(
        self,
        stream_name: str,
        n_rows: int,
        columns: Mapping[str, Sequence[object] | np.ndarray],
        now: float,
        *,
        unknown_fields: int = 0,
    ) -> None:
        """Bin and apply one batch (single-threaded use: replay, tests)."""
        self.apply(self.bin_batch(stream_name, n_rows, columns), now, unknown_fields=unknown_fields)

    def _take_rows(
        self,
        stream: _Stream,
        columns: Mapping[str, Sequence[object] | np.ndarray],
        n_rows: int,
        first_row: int,
        now: float,
        window: bool,
    ) -> bool:
        """Rows ``first_row:`` of a stream without a reference yet: into its warmup, then
        its backlog. Returns whether they completed the warmup (its freeze is due)."""
        if stream.backlog is not None:
            if first_row < n_rows:
                stream.backlog.append(_Held(columns, n_rows, first_row, now, window))
            return False
        spec = stream.config.reference
        assert spec.warmup_rows is not None
        take = min(n_rows - first_row, spec.warmup_rows - stream.warmup_rows)
        for feature in stream.config.features:
            values = columns.get(feature.name)
            column = stream.warmup_columns.setdefault(feature.name, [])
            # Rows that do not reach a feature are left out of its reference, as
            # they are left out of its live window (they are not `missing`).
            if values is not None:
                column.extend(_kept_for_warmup(feature, values[first_row : first_row + take]))
        stream.warmup_rows += take
        if stream.warmup_rows < spec.warmup_rows:
            return False
        stream.backlog = []
        if first_row + take < n_rows:
            stream.backlog.append(_Held(columns, n_rows, first_row + take, now, window))
        return True

    def freeze_due(self, name: str) -> bool:
        """Whether ``name``'s warmup has its rows and waits for its freeze."""
        stream = self._streams.get(name)
        return stream is not None and stream.backlog is not None

    def freeze(self, name: str) -> None:
        """Freeze ``name``'s completed warmup now: plan and commit in one go."""
        while (plan := self.plan_freeze(name)) is not None:
            committed = self.commit_freeze(plan)
            assert committed, "nothing else changes the engine meanwhile"

    def finish_freezes(self) -> None:
        """Freeze every completed warmup whose freeze is still due (before an export)."""
        for name, stream in self._streams.items():
            if stream.backlog is not None:
                self.freeze(name)

    def plan_freeze(self, name: str) -> FreezePlan | None:
        """Learn ``name``'s layout from its warmup and build the packing that includes it.

        Reads only state that does not change until a commit, so it needs no lock
        (the slow part of a freeze: O(monitors) Python). ``None``: no freeze is due.
        """
        stream = self._streams.get(name)
        if stream is None:
            raise UnknownStreamError(name)
        packing = self._packing
        backlog = stream.backlog
        if backlog is None:
            return None
        rows, columns = stream.warmup_rows, stream.warmup_columns
        if stream.backlog is not backlog or packing is not self._packing:
            return None  # a commit came in between: nothing of ours to plan now
        try:
            reference = build_reference(stream.config, rows, columns)
        except ReferenceError:
            return FreezePlan(name, packing.generation, backlog, None)
        k = list(self._streams).index(name)
        references = [s.reference for s in self._streams.values()]
        references[k] = reference
        new = build_packing(self.config, references)
        start, stop, monitors = new.slices[k]
        monitor_at = monitors[0].index
        n_monitors = len(monitors)
        # Pairs are (rule, monitor) in rule-major, monitor order in both packings:
        # each new pair finds its old one by one search over sorted keys.
        width = len(packing.monitors) + 1
        old_keys = packing.pair_rules * width + packing.alert_monitors
        shifted = np.where(
            new.alert_monitors >= monitor_at + n_monitors,
            new.alert_monitors - n_monitors,
            new.alert_monitors,
        )
        new_keys = new.pair_rules * width + shifted
        found = np.minimum(np.searchsorted(old_keys, new_keys), max(old_keys.size - 1, 0))
        inserted = (new.alert_monitors >= monitor_at) & (
            new.alert_monitors < monitor_at + n_monitors
        )
        matched = ~inserted & (old_keys.size > 0)
        if old_keys.size:
            matched &= old_keys[found] == new_keys
        pair_source = np.where(matched, found, -1).astype(np.int64)
        history = self.history
        since = history.recorded  # before the copy: a record during it is copied again
        return FreezePlan(
            name,
            packing.generation,
            backlog,
            reference,
            new,
            bin_at=start,
            n_bins=stop - start,
            monitor_at=monitor_at,
            n_monitors=n_monitors,
            pair_source=pair_source,
            history_base=history,
            history_since=since,
            history=history.inserted(monitor_at, n_monitors),
        )

    def commit_freeze(self, plan: FreezePlan) -> bool:
        """Swap in a planned freeze: O(bins) copies, then the held rows are binned.

        ``False`` (nothing changed) when the plan is stale: the engine was
        re-packed, or that warmup was frozen, since it was planned. Every other
        monitor keeps its window, ingest counts, alert states and history.
        """
        stream = self._streams.get(plan.stream)
        if (
            stream is None
            or stream.backlog is None
            or stream.backlog is not plan.backlog
            or plan.base_generation != self.generation
        ):
            return False
        backlog = stream.backlog
        stream.backlog = None  # before the columns: plan_freeze reads them in that order
        if plan.reference is None or plan.packing is None:
            # The warmup rows cannot define a layout (e.g. no valid category at
            # all): collect a fresh warmup rather than fail ingest.
            stream.warmup_rows = 0
            stream.warmup_columns = {}
            for held in backlog:
                self._take_rows(
                    stream, held.columns, held.n_rows, held.first_row, held.now, held.window
                )
            return True
        at, width = plan.bin_at, plan.n_bins
        live = _widened(self.live, at, width)
        ingested = _widened(self.ingested, at, width)
        # The warmup rows were ingested values too: count them by kind.
        ingested[at : at + width] = plan.packing.reference[at : at + width]
        self._install(plan.packing)
        self.live, self.ingested = live, ingested
        for other in self._streams.values():
            if other.window is not None:
                other.window.live = live[other.start : other.stop]  # its counts, moved over
        stream.reference = plan.reference
        stream.warmup_columns = {}
        stream.window = self._new_window(stream)
        if plan.history is not None and plan.history_base is self.history:
            self.history = plan.history.caught_up(
                self.history, plan.monitor_at, plan.n_monitors, plan.history_since
            )
        else:
            self.history = self.history.inserted(plan.monitor_at, plan.n_monitors)
        source = plan.pair_source
        kept = source >= 0
        fresh = AlertTable.empty(source.size)
        columns = {}
        for name in ("state", "active_at", "fired_at", "cleared_at"):
            column = getattr(fresh, name).copy()
            column[kept] = getattr(self.alerts, name)[source[kept]]
            columns[name] = column
        self.alerts = AlertTable(**columns)
        for held in backlog:
            counts, indices = bin_rows(
                self._layout_of(stream), held.columns, held.n_rows, held.first_row
            )
            self.ingested[stream.start : stream.stop] += counts
            if held.window:
                assert stream.window is not None
                stream.window.add(counts, held.now, indices)
        return True

    # --- window state (reload and checkpoints) --------------------------------

    def export_window(self, stream_name: str) -> WindowState | None:
        """A copy of the stream's window, per monitor, independent of the packing."""
        stream = self._streams[stream_name]
        if stream.window is None:
            return None
        layouts = tuple(
            (m.feature, layout_key(m.binner), m.offset - stream.start) for m in stream.monitors
        )
        return WindowState(
            window=stream.config.window,
            layouts=layouts,
            arrays=stream.window.state(),
        )

    def restore_window(self, stream_name: str, state: WindowState, now: float) -> list[str]:
        """Adopt a window exported earlier for the monitors whose layout is unchanged.

        Returns the names of the features whose state was kept; the others
        start empty. A window whose kind or size changed starts empty whole.
        """
        stream = self._streams.get(stream_name)
        if stream is None or stream.window is None or state.window != stream.config.window:
            return []
        old_columns = {feature: j for j, (feature, _, _) in enumerate(state.layouts)}
        carries: list[Carry] = []
        kept: list[str] = []
        for j, monitor in enumerate(stream.monitors):
            previous = old_columns.get(monitor.feature)
            if previous is None:
                continue
            _, key, old_start = state.layouts[previous]
            if key != layout_key(monitor.binner):
                continue
            carries.append(
                Carry(previous, j, old_start, monitor.offset - stream.start, monitor.n_bins)
            )
            kept.append(monitor.feature)
        stream.window.restore(stream.window.carried(state.arrays, carries), now)
        return kept

    # --- reload and checkpoints ------------------------------------------------

    def successor(self, config: Config, now: float) -> Engine:
        """A new, empty engine for ``config`` reusing this one's unchanged references.

        The slow half of a reload (it may read reference files; raises
        :class:`~driftmon.reference.ReferenceError` when a new one cannot be
        loaded); it does not touch this engine's windows, so it can run while
        ingest goes on. :meth:`take_over` then moves the state across: every
        monitor whose bin layout and window are unchanged keeps its window
        contents, every (rule, monitor) pair whose rule is unchanged its alert state.
        """
        return Engine(config, now=now, references=reusable_references(self, config))

    def take_over(self, previous: Engine, now: float) -> None:
        """Adopt ``previous``'s state and continue its counters (the fast half of a reload)."""
        self.adopt(previous.export_state(), now)
        self.take_counters(previous)

    def take_counters(self, previous: Engine) -> None:
        """Continue ``previous``'s ingest counters (rows, unknown fields, values by bin).

        Per-bin counts carry over for monitors whose layout is unchanged, so a
        reload does not reset ``driftmon_ingest_*_total`` for them.
        """
        for name, stream in self._streams.items():
            old = previous._streams.get(name)
            if old is not None:
                stream.rows_total = old.rows_total
                stream.unknown_fields_total = old.unknown_fields_total
        old_monitors = {(m.stream, m.feature): m for m in previous.monitors}
        for monitor in self.monitors:
            old_monitor = old_monitors.get((monitor.stream, monitor.feature))
            if old_monitor is not None and layout_key(old_monitor.binner) == layout_key(
                monitor.binner
            ):
                self.ingested[monitor.bins] = previous.ingested[old_monitor.bins]

    def export_state(self) -> EngineState:
        """Everything a restart or reload must keep, independent of the packing.

        A freeze still due is done first (here, under the caller's lock): the
        checkpoint format has no place for rows held past a full warmup.
        """
        self.finish_freezes()
        streams = {}
        for name, stream in self._streams.items():
            streams[name] = StreamState(
                fingerprint=stream_fingerprint(stream.config),
                reference=stream.reference,
                window=self.export_window(name),
                warmup_rows=stream.warmup_rows,
                warmup_columns={k: list(v) for k, v in stream.warmup_columns.items()},
            )
        return EngineState(
            streams=streams,
            alerts=self.alert_states(),
            history=self.history.export(self.history_keys()),
        )

    def adopt(self, state: EngineState, now: float) -> None:
        """Take over exported state for the streams, monitors and rules it still fits.

        Window contents and alert states go to monitors whose layout is
        unchanged (a monitor whose layout changed starts fresh, docs/durability.md).
        A ``warmup`` stream with unchanged features and reference spec takes
        over the reference frozen before (kept across restarts, docs/configuration.md), or resumes
        its warmup. Panes that expired by ``now`` are dropped.
        """
        adopted_reference = False
        for name, kept in state.streams.items():
            stream = self._streams.get(name)
            if (
                stream is None
                or stream.reference is not None
                or kept.fingerprint != stream_fingerprint(stream.config)
            ):
                continue
            if kept.reference is not None:
                stream.reference = kept.reference
                adopted_reference = True
            else:
                stream.warmup_rows = kept.warmup_rows
                stream.warmup_columns = {k: list(v) for k, v in kept.warmup_columns.items()}
        if adopted_reference:
            self._pack()
        for name, kept in state.streams.items():
            if name in self._streams and kept.window is not None:
                self.restore_window(name, kept.window, now)
        self.advance_windows(now)
        self._set_alerts(previous=self._alerts_of_unchanged_monitors(state))
        if state.history is not None:
            # Keyed by layout too: a monitor whose layout changed starts a fresh history.
            self.history.restore(state.history, self.history_keys())

    def _alerts_of_unchanged_monitors(
        self, state: EngineState
    ) -> dict[tuple[str, str, str], tuple]:
        """``state.alerts`` without the entries of monitors whose bin layout changed."""
        exported_layouts = {
            (name, feature): key
            for name, kept in state.streams.items()
            if kept.window is not None
            for feature, key, _ in kept.window.layouts
        }
        layouts = {(m.stream, m.feature): layout_key(m.binner) for m in self.monitors}
        return {
            key: value
            for key, value in state.alerts.items()
            if (key[1], key[2]) in layouts
            and exported_layouts.get((key[1], key[2])) == layouts[(key[1], key[2])]
        }

    # --- evaluation -----------------------------------------------------------

    def advance_windows(self, now: float) -> None:
        """Rotate every time window to ``now``, dropping expired panes."""
        self.now = max(self.now, now)
        for stream in self._streams.values():
            if stream.window is not None:
                stream.window.advance(now)

    def evaluate(self, now: float) -> Evaluation:
        """One evaluation pass at time ``now``: divergences, samples and alert states."""
        started = time.perf_counter()
        self.advance_windows(now)
        m = len(self.monitors)
        table = self._divergence.evaluate(self.live)
        values = {name: table[i].copy() for i, name in enumerate(METRICS)}
        wasserstein = np.full(m, math.nan)
        if self._numeric_index.size:
            wasserstein[self._numeric_index] = self._wasserstein.evaluate(self.live)
        values["wasserstein"] = wasserstein
        window_samples = np.add.reduceat(self.live, self.bin_offsets[:-1]) if m else np.zeros(0)
        alert_p_values = np.zeros(0)
        if self.alert_pairs:
            metric_matrix = np.vstack([values[name] for name in ALL_METRICS])
            pair_values = metric_matrix[self._alert_metric_rows, self._alert_monitors]
            pair_samples = window_samples[self._alert_monitors]
            pair_p_values = values["p_value"][self._alert_monitors]
            # The pairs judged at this evaluation (alerting.advance holds the
            # others) are the ones a family's correction counts.
            judged = (pair_samples >= self._alert_params.min_samples) & ~np.isnan(pair_values)
            alert_p_values = self._p_value_families.adjust(np.where(judged, pair_p_values, np.nan))
            self.alerts = advance(
                self.alerts,
                self._alert_params,
                value=pair_values,
                p_value=alert_p_values,
                samples=pair_samples,
                now=now,
            )
        stream_p_values = self._stream_p_values(values["p_value"])
        firing = np.zeros(m, dtype=np.int64)
        if self.alert_pairs:
            firing = np.bincount(
                self._alert_monitors[self.alerts.state == AlertState.FIRING], minlength=m
            ).astype(np.int64)
        self.history.record(now, values, window_samples, firing)
        live_counts = self.live.copy()
        reference_counts = self.reference.view()
        for array in (
            *values.values(),
            window_samples,
            alert_p_values,
            live_counts,
            reference_counts,
        ):
            array.flags.writeable = False
        return Evaluation(
            time=now,
            monitors=self.monitors,
            values=values,
            window_samples=window_samples,
            reference_samples=self.reference_samples,
            alert_pairs=self.alert_pairs,
            alerts=self.alerts,
            duration_s=time.perf_counter() - started,
            alert_p_values=alert_p_values,
            stream_p_values=stream_p_values,
            live_counts=live_counts,
            reference_counts=reference_counts,
        )

    def _stream_p_values(self, p_values: np.ndarray) -> dict[str, float]:
        """Each stream's combined p-value, for the streams where some monitor has one."""
        streams = [s for s in self._streams.values() if s.monitors]
        if not streams:
            return {}
        offsets = [streams[0].monitors[0].index] + [s.monitors[-1].index + 1 for s in streams]
        # Streams are packed in order, so their monitors are contiguous index ranges.
        combined = combined_p_values(
            p_values[offsets[0] : offsets[-1]], np.asarray(offsets) - offsets[0]
        )
        return {
            stream.name: float(value)
            for stream, value in zip(streams, combined, strict=True)
            if not np.isnan(value)
        }

    # --- introspection --------------------------------------------------------

    def monitor(self, stream: str, feature: str) -> Monitor:
        """The monitor of (stream, feature); ``KeyError`` when it is not packed."""
        for monitor in self._streams[stream].monitors if stream in self._streams else ():
            if monitor.feature == feature:
                return monitor
        raise KeyError((stream, feature))

    def stream_rows(self, stream: str) -> int:
        """Rows accepted for ``stream`` since the engine started."""
        return self._streams[stream].rows_total

    def unknown_fields(self, stream: str) -> int:
        """Values under unmonitored fields seen for ``stream`` since start."""
        return self._streams[stream].unknown_fields_total

    def bins_in_place(self, stream: str) -> bool:
        """Whether ``stream``'s rows are binned as they come (not collected for a warmup).

        Raises :class:`UnknownStreamError` for a stream this engine does not have
        (one a reload added or removed while a request was on its way).
        """
        try:
            return self._streams[stream].reference is not None
        except KeyError:
            raise UnknownStreamError(stream) from None

    def warmup_progress(self, stream: str) -> tuple[int, int] | None:
        """(rows collected, rows needed) while ``stream`` warms up, else ``None``."""
        s = self._streams[stream]
        if s.reference is not None or s.config.reference.warmup_rows is None:
            return None
        return s.warmup_rows, s.config.reference.warmup_rows

    def value_kinds(self) -> ValueKindTotals:
        """Values binned since start per monitor and kind, as of now.

        Copies the ingested counts (call it under the ingest lock; O(bins),
        no per-monitor Python); the totals are summed from the copy.
        """
        return self._kind_layout.totals(self.ingested.copy())

    def stream_names(self) -> list[str]:
        """Every stream of the config, in config order."""
        return list(self._streams)


@dataclass(frozen=True)
class WindowState:
    """A stream's window contents, described per monitor so it survives re-packing."""

    window: TimeWindow | SampleWindow
    layouts: tuple[tuple[str, tuple[object, ...], int], ...]  # feature, layout key, offset
    arrays: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class StreamState:
    """One stream's exported state (see :meth:`Engine.export_state`).

    ``fingerprint`` identifies the stream's features and reference spec
    (:func:`stream_fingerprint`): a warmup resumes only under the same one.
    """

    fingerprint: str
    reference: Reference | None
    window: WindowState | None
    warmup_rows: int
    warmup_columns: Mapping[str, list[object]]


@dataclass(frozen=True)
class EngineState:
    """The engine's exported state: streams and alert states by (rule, stream, feature)."""

    streams: Mapping[str, StreamState]
    alerts: Mapping[tuple[str, str, str], tuple]
    history: HistoryState | None = None  # None: none kept (an older checkpoint)


def _widened(counts: np.ndarray, at: int, width: int) -> np.ndarray:
    """A copy of ``counts`` with ``width`` zeros inserted at ``at``."""
    widened = np.empty(counts.size + width, dtype=counts.dtype)
    widened[:at] = counts[:at]
    widened[at : at + width] = 0.0
    widened[at + width :] = counts[at:]
    return widened


def _kept_for_warmup(feature: FeatureConfig, values: Sequence[object] | np.ndarray) -> list[object]:
    """What a warmup keeps of a column: each value normalised as it arrives.

    Numbers as floats, missing as ``None``, every invalid value as one small
    token, categorical text capped in length (:data:`MAX_KEPT_CATEGORY_CHARS`):
    a warmup of N rows and F features holds at most about N × F × 1 KiB, whatever
    the senders put in their rows, and so does its checkpoint.
    """
    if feature.type == "numeric":
        return normalise_numeric(values)
    longest = max((len(c) for c in feature.categories or ()), default=0)
    return normalise_categorical(values, max(MAX_KEPT_CATEGORY_CHARS, longest))


def reusable_references(engine: Engine, config: Config) -> dict[str, Reference | None]:
    """References of ``engine`` that a new engine for ``config`` may take over unchanged.

    A stream keeps its reference (or its not-yet-frozen warmup, as ``None``)
    when its reference spec and features are the same in both configs
    (smoothing aside: it changes no layout and no count); the new engine then
    reads no file for it.
    """
    reusable: dict[str, Reference | None] = {}
    for stream_config in config.streams:
        old = engine._streams.get(stream_config.name)
        if (
            old is not None
            and old.config.reference == stream_config.reference
            and features_hash(old.config) == features_hash(stream_config)
            # A file or snapshot that was unusable at start is read again.
            and (old.reference is not None or stream_config.reference.kind == "warmup")
        ):
            reusable[stream_config.name] = old.reference
    return reusable
