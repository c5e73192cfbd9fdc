"""The replica's group commit and the leader's alert states, against a real redis-server."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from redis_server import RedisServer, ReplySwallowingProxy, running_redis

from driftmon.cluster import replica
from driftmon.cluster.leader import (
    Leadership,
    alert_states_document,
    install_windows,
    load_alert_states,
    stream_layouts,
)
from driftmon.cluster.replica import ClockSkew, Flusher, Outcome, TooManyPending
from driftmon.cluster.store import Store, StreamLayout, connect
from driftmon.config import parse_config
from driftmon.engine import Engine

LAYOUT = StreamLayout("credit", "f1", 3, 3600 * 1_000_000, 4)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def _flusher(url: str, clock: object = time.time, flush_every_s: float = 0.05) -> Flusher:
    store = Store(connect(url, timeout_s=0.5), "dm")
    return Flusher(
        store,
        "r1",
        flush_every_s=flush_every_s,
        idempotency_ttl_s=60,
        max_clock_skew_s=1.0,
        clock=clock,  # type: ignore[arg-type]
    )


def _window(server: RedisServer) -> list[int]:
    return list(Store(connect(server.url), "dm").read_windows([LAYOUT])[0].counts)


def _result(future: Future[Outcome], timeout_s: float = 10.0) -> Outcome:
    return future.result(timeout_s)


def test_a_request_is_acknowledged_only_once_its_flush_returned(
    redis_server: RedisServer,
) -> None:
    flusher = _flusher(redis_server.url, flush_every_s=0.3)
    flusher.start()
    try:
        first = flusher.submit(LAYOUT, np.array([1.0, 0.0, 2.0]), 3, None)
        second = flusher.submit(LAYOUT, np.array([0.0, 5.0, 0.0]), 5, "key-1")
        assert not first.done() and not second.done()
        assert _window(redis_server) == [0, 0, 0]  # nothing stored before the flush ...
        assert _result(first) == Outcome(True) and _result(second) == Outcome(True)
        assert _window(redis_server) == [1, 5, 2]  # ... everything once it returned
        again = flusher.submit(LAYOUT, np.array([0.0, 5.0, 0.0]), 5, "key-1")
        assert _result(again) == Outcome(True, duplicate=True)
        assert _window(redis_server) == [1, 5, 2]
    finally:
        flusher.stop(5)
    assert flusher.stats.flushes >= 2 and flusher.stats.failures == 0
    assert abs(flusher.stats.clock_offset_s) < 0.5


def test_a_replica_whose_clock_is_off_refuses_rows(redis_server: RedisServer) -> None:
    flusher = _flusher(redis_server.url, clock=lambda: time.time() + 5.0)
    flusher.measure_offset()
    assert flusher.stats.clock_offset_s == pytest.approx(-5.0, abs=0.5)
    with pytest.raises(ClockSkew, match=r"clock is [45]\.\d+ s ahead of the store's"):
        flusher.admit([LAYOUT], keyed=False)


def test_keyed_requests_pending_through_an_outage_are_bounded_and_merged(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica, "MAX_PENDING_KEYS", 2)
    flusher = _flusher(redis_server.url)
    flusher.measure_offset()
    redis_server.kill()  # no flush can happen: everything stays pending
    first = flusher.submit(LAYOUT, np.array([1.0, 0.0, 0.0]), 1, "k1")
    retry = flusher.submit(LAYOUT, np.array([1.0, 0.0, 0.0]), 1, "k1")  # same key: merged
    flusher.admit([LAYOUT], keyed=True)
    flusher.submit(LAYOUT, np.array([0.0, 1.0, 0.0]), 1, "k2")
    with pytest.raises(TooManyPending, match="2 keyed requests of stream 'credit'"):
        flusher.admit([LAYOUT], keyed=True)
    flusher.admit([LAYOUT], keyed=False)  # rows without a key are summed: always room
    redis_server.start()
    flusher.flush_pending()
    assert _result(first) == _result(retry) == Outcome(True)
    assert _window(redis_server) == [1, 1, 0]


def test_rows_handed_over_while_the_store_is_down_are_stored_once_it_is_back(
    redis_server: RedisServer,
) -> None:
    flusher = _flusher(redis_server.url)
    flusher.start()
    try:
        assert _result(flusher.submit(LAYOUT, np.array([1.0, 1.0, 1.0]), 1, None)).stored
        redis_server.kill()
        waiting = flusher.submit(LAYOUT, np.array([2.0, 0.0, 0.0]), 2, None)
        deadline = time.monotonic() + 10
        while flusher.stats.failures == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not waiting.done()
        redis_server.start()
        assert _result(waiting) == Outcome(True)
        assert _window(redis_server) == [3, 1, 1]
    finally:
        flusher.stop(5)


def test_a_flush_whose_reply_was_lost_is_resent_and_counted_once(
    redis_server: RedisServer,
) -> None:
    proxy = ReplySwallowingProxy(redis_server.port)
    flusher = _flusher(proxy.url)
    flusher.start()
    try:
        proxy.swallow.set()
        future = flusher.submit(LAYOUT, np.array([4.0, 0.0, 1.0]), 5, None)
        assert proxy.swallowed.wait(10)
        # The store applied it; the answer never came back.
        deadline = time.monotonic() + 10
        while _window(redis_server) != [4, 0, 1]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not future.done()
        proxy.swallow.clear()
        assert _result(future) == Outcome(True)  # the resend was a no-op ...
        assert _window(redis_server) == [4, 0, 1]  # ... so the rows count once
        assert flusher.stats.failures >= 1
    finally:
        flusher.stop(5)
        proxy.close()


def _engine(tmp_path: Path, rule_for: str = "0s") -> Engine:
    reference = tmp_path / "reference.csv"
    reference.write_text("x,c\n" + "".join(f"{i % 10 / 10},{'ab'[i % 2]}\n" for i in range(200)))
    config = parse_config(
        {
            "streams": [
                {
                    "name": "s",
                    "reference": {"file": str(reference)},
                    "window": {"length": "1h", "panes": 4},
                    "features": [
                        {"name": "x", "type": "numeric",
                         "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 5}},
                        {"name": "c", "type": "categorical", "categories": ["a", "b"]},
                    ],
                }
            ],
            "alerts": [
                {"name": "psi", "match": {"stream": "s", "feature": "*"}, "metric": "psi",
                 "threshold": 0.1, "for": rule_for, "keep_firing_for": "1m"},
            ],
        },
        base_dir=tmp_path,
    )
    return Engine(config, now=0.0)


def test_the_store_windows_become_the_engine_live_counts(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    ((layout, bins),) = stream_layouts(engine).values()
    assert layout.n_bins == engine.n_bins == 9 + 5  # 5 + 4 numeric bins, 2 + 3 categorical
    assert layout.pane_width_us == 900 * 1_000_000 and layout.panes == 4
    counts = np.arange(layout.n_bins, dtype=np.int64)
    install_windows(engine, 10_000.0, {"s": (layout.fingerprint, counts)})
    assert engine.live[bins].tolist() == counts.tolist()
    install_windows(engine, 10_001.0, {"s": ("another layout", counts)})
    assert engine.live[bins].tolist() == [0] * layout.n_bins


def test_a_new_leader_takes_over_the_alert_states(tmp_path: Path) -> None:
    old = _engine(tmp_path, rule_for="2m")
    ((layout, bins),) = stream_layouts(old).values()
    drifted = np.zeros(layout.n_bins)
    drifted[0:7] = [0, 100, 0, 0, 0, 0, 0]  # every x in one bin
    drifted[9:11] = [100, 0]  # every c is "a"
    for now in (1000.0, 1060.0, 1130.0):
        install_windows(old, now, {"s": (layout.fingerprint, drifted.astype(np.int64))})
        evaluation = old.evaluate(now)
    assert sorted(int(s) for s in evaluation.alerts.state) == [2, 2]  # both firing
    document = json.loads(json.dumps(alert_states_document(evaluation, epoch=7)))
    new = _engine(tmp_path, rule_for="2m")
    assert load_alert_states(new, document) == 2
    for name in ("state", "active_at", "fired_at", "cleared_at"):
        assert np.array_equal(
            getattr(new.alerts, name), getattr(evaluation.alerts, name), equal_nan=True
        ), name
    assert float(new.alerts.active_at[0]) == 1000.0 and float(new.alerts.fired_at[0]) == 1130.0
    # A changed rule starts inactive: its states are not carried over.
    changed = _engine(tmp_path, rule_for="5m")
    assert load_alert_states(changed, document) == 0
    assert not np.any(changed.alerts.state)
    assert math.isnan(float(changed.alerts.active_at[0]))


def test_leadership_lapses_locally_before_the_store_can_give_it_away(
    redis_server: RedisServer,
) -> None:
    now = [100.0]
    store = Store(connect(redis_server.url), "dm")
    leadership = Leadership(store, "a", ttl_s=10.0, monotonic=lambda: now[0])
    assert leadership.tick() and leadership.is_leader()
    now[0] += 8.9
    assert leadership.is_leader()
    now[0] += 0.2  # 9.1 s after the call that took the lease: 0.9 of the TTL is over
    assert not leadership.is_leader()
    assert not leadership.tick()  # the store's copy of the lease still lasts: renewed
    assert leadership.is_leader()


def test_a_read_older_than_one_installed_is_not_installed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    from driftmon.cluster.node import ClusterNode, WindowsRead
    from driftmon.config import ClusterConfig, RedisSettings

    node = ClusterNode(ClusterConfig(mode="shared", redis=RedisSettings(url=redis_server.url)))
    engine = _engine(tmp_path)
    ((layout, bins),) = stream_layouts(engine).values()
    ones = np.ones(layout.n_bins, dtype=np.int64)

    def read(now: float, counts: np.ndarray) -> WindowsRead:
        return WindowsRead(now, 1, {"s": (layout.fingerprint, counts)}, None, False)

    assert node.install(engine, read(2000.0, ones))
    assert not node.install(engine, read(1999.0, 2 * ones))  # read earlier, came later
    assert engine.live[bins].tolist() == ones.tolist()
    assert node.install(engine, read(2000.5, 3 * ones))
    assert engine.live[bins].tolist() == (3 * ones).tolist()
