"""The leader's side of shared mode: the lease, the window read, alert states in the store.

One replica holds the lease (:class:`Leadership`); it reads every stream's
newest panes from the store (:meth:`Store.read_windows`, pipelined), puts
their sums into the engine's live counts (:func:`install_windows`), evaluates
as a single node does, on the store's clock, and writes its alert states
under its fencing epoch (:func:`alert_states_document`). A new leader loads
those states first (:func:`load_alert_states`), so ``for:`` and firing start
times survive a failover.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import redis

from driftmon.alerting import AlertTable
from driftmon.cluster.store import Store, StreamLayout, layout_fingerprint, pane_width_us
from driftmon.config import TimeWindow
from driftmon.engine import Engine
from driftmon.evaluation import Evaluation
from driftmon.reference import layout_key

log = logging.getLogger("driftmon.cluster")

ALERTS_FORMAT = 1


class Leadership:
    """This replica's view of the lease: held (with an epoch) until a local deadline.

    The deadline is measured on the monotonic clock from *before* the call
    that took or renewed the lease, minus a tenth of the TTL, so this replica
    stops acting as leader before the store can give the lease to another.
    """

    def __init__(
        self,
        store: Store,
        replica_id: str,
        ttl_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self.monotonic = monotonic
        self.epoch = 0
        self.valid_until = -math.inf
        self.holder = ""

    def tick(self) -> bool:
        """Take or renew the lease; whether it was just taken (a new epoch).

        Raises ``redis.RedisError`` when the store does not answer (the lease
        then lapses locally at its deadline).
        """
        started = self.monotonic()
        epoch, new, holder = self.store.hold_lease(self.replica_id, self.epoch, self.ttl_s)
        self.holder = holder
        if epoch == 0:
            if self.epoch:
                log.warning("lost the lease (epoch %d) to %s", self.epoch, holder or "nobody")
            self.epoch = 0
            self.valid_until = -math.inf
            return False
        self.epoch = epoch
        self.valid_until = started + 0.9 * self.ttl_s
        if new:
            log.info("leader now, epoch %d", epoch)
        return new

    def is_leader(self) -> bool:
        """Whether this replica may act as leader right now."""
        return self.epoch != 0 and self.monotonic() < self.valid_until

    def step_down(self) -> None:
        """Stop acting as leader at once (fenced off by a newer epoch)."""
        if self.epoch:
            log.warning("stepping down: epoch %d is no longer current", self.epoch)
        self.epoch = 0
        self.valid_until = -math.inf

    def release(self) -> None:
        """Give the lease up (graceful stop), so another replica takes over at once."""
        if self.epoch:
            try:
                self.store.release_lease(self.replica_id, self.epoch)
            except redis.RedisError as exc:
                log.warning("could not release the lease: %s", exc)
        self.step_down()


def stream_layouts(engine: Engine) -> dict[str, tuple[StreamLayout, slice]]:
    """Each stream's store layout and its bins in the engine's packed arrays.

    Only streams with monitors and a time window have one (shared mode
    refuses the others at config time).
    """
    by_stream: dict[str, list[Any]] = {}
    for monitor in engine.monitors:
        by_stream.setdefault(monitor.stream, []).append(monitor)
    layouts = {}
    for name, monitors in by_stream.items():
        window = engine.stream_config(name).window
        if not isinstance(window, TimeWindow):
            continue
        start = monitors[0].offset
        stop = monitors[-1].offset + monitors[-1].n_bins
        fingerprint = layout_fingerprint([(m.feature, layout_key(m.binner)) for m in monitors])
        layouts[name] = (
            StreamLayout(
                stream=name,
                fingerprint=fingerprint,
                n_bins=stop - start,
                pane_width_us=pane_width_us(window.pane_width_s),
                panes=window.panes,
            ),
            slice(start, stop),
        )
    return layouts


def install_windows(
    engine: Engine, now: float, counts: Mapping[str, tuple[str, np.ndarray]]
) -> None:
    """Put the store's window sums (stream → (fingerprint, counts)) into ``engine.live``.

    The local windows are rotated to ``now`` first (they hold nothing in
    shared mode, but a rotation over a long gap zeroes their live slice).
    A stream whose layout changed since the read keeps an empty window
    until the next read.
    """
    engine.advance_windows(now)
    for name, (layout, bins) in stream_layouts(engine).items():
        read = counts.get(name)
        if read is not None and read[0] == layout.fingerprint:
            engine.live[bins] = read[1]
        else:
            engine.live[bins] = 0.0


def _rule_fingerprint(rule: object) -> str:
    return hashlib.sha256(repr(rule).encode()).hexdigest()[:16]


def _time(value: float) -> float | None:
    return None if math.isnan(value) else value


def alert_states_document(evaluation: Evaluation, epoch: int) -> dict[str, Any]:
    """The evaluation's non-inactive alert states, as JSON the next leader can load."""
    table = evaluation.alerts
    states = []
    for i, pair in enumerate(evaluation.alert_pairs):
        state = int(table.state[i])
        if state == 0:
            continue
        monitor = evaluation.monitors[pair.monitor]
        states.append(
            {
                "rule": pair.rule.name,
                "rule_fingerprint": _rule_fingerprint(pair.rule),
                "stream": monitor.stream,
                "feature": monitor.feature,
                "layout": repr(layout_key(monitor.binner)),
                "state": state,
                "active_at": _time(float(table.active_at[i])),
                "fired_at": _time(float(table.fired_at[i])),
                "cleared_at": _time(float(table.cleared_at[i])),
            }
        )
    return {"format": ALERTS_FORMAT, "epoch": epoch, "time": evaluation.time, "states": states}


def load_alert_states(engine: Engine, document: Mapping[str, Any] | None) -> int:
    """Give the engine's alert pairs the states a previous leader wrote; how many were kept.

    A state is kept for the same rule (unchanged), stream, feature and bin
    layout; the rest start inactive. A document that does not parse is
    ignored whole (logged).
    """
    n = len(engine.alert_pairs)
    state = np.zeros(n, dtype=np.int8)
    times = {name: np.full(n, math.nan) for name in ("active_at", "fired_at", "cleared_at")}
    kept = 0
    if document is not None and document.get("format") == ALERTS_FORMAT:
        index = {}
        for i, pair in enumerate(engine.alert_pairs):
            monitor = engine.monitors[pair.monitor]
            key = (
                pair.rule.name,
                _rule_fingerprint(pair.rule),
                monitor.stream,
                monitor.feature,
                repr(layout_key(monitor.binner)),
            )
            index[key] = i
        try:
            for entry in document.get("states", []):
                key = (
                    entry["rule"],
                    entry["rule_fingerprint"],
                    entry["stream"],
                    entry["feature"],
                    entry["layout"],
                )
                found = index.get(key)
                if found is None:
                    continue
                i = found
                state[i] = int(entry["state"])
                for name, values in times.items():
                    value = entry.get(name)
                    values[i] = math.nan if value is None else float(value)
                kept += 1
            table = AlertTable(state, times["active_at"], times["fired_at"], times["cleared_at"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("the alert states in the store are unusable; starting inactive: %s", exc)
            return 0
    else:
        table = AlertTable(state, times["active_at"], times["fired_at"], times["cleared_at"])
    engine.alerts = table
    return kept
