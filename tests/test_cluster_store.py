"""driftmon/cluster/store.py against a real redis-server (AOF on, started by the test)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis_server import RedisServer, running_redis

from driftmon.cluster.store import (
    Flush,
    Store,
    StreamLayout,
    connect,
    pack,
    unpack,
)

HOUR_US = 3600 * 1_000_000


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def _layout(n_bins: int = 5, width_us: int = HOUR_US, panes: int = 3) -> StreamLayout:
    return StreamLayout("credit", "f1", n_bins, width_us, panes)


def _store(server: RedisServer) -> Store:
    return Store(connect(server.url), "dm")


def test_pack_is_big_endian_int64() -> None:
    assert pack(np.array([1.0, 258.0])) == bytes([0] * 7 + [1] + [0] * 6 + [1, 2])
    assert unpack(pack(np.array([3, 0, 2**40])), 3).tolist() == [3, 0, 2**40]
    assert unpack(b"", 2).tolist() == [0, 0]
    with pytest.raises(ValueError, match="expected 16"):
        unpack(b"\0" * 8, 2)


def test_a_flush_adds_into_one_hash_tagged_key_per_pane(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    layout = _layout()
    first = store.flush([Flush(layout, "r1", 1, np.array([1, 2, 3, 0, 5]))], 60)[0]
    second = store.flush([Flush(layout, "r2", 1, np.array([10, 0, 0, 4, 0]))], 60)[0]
    assert first.applied and second.applied
    assert first.pane == math.floor(first.server_time_s * 1e6 / HOUR_US)
    assert abs(first.server_time_s - time.time()) < 5
    client = redis_server.client()
    key = f"dm:{{credit}}:f1:{first.pane}"
    assert unpack(client.get(key), 5).tolist() == [11, 2, 3, 4, 5]
    # Absolute expiry one pane after the pane leaves the window of 3 panes.
    expected_ms = (first.pane + 3 + 1) * HOUR_US // 1000
    assert client.pexpiretime(key) == expected_ms
    read = store.read_windows([layout])[0]
    assert read.counts.tolist() == [11, 2, 3, 4, 5]
    assert read.pane == first.pane


def test_a_resent_flush_is_a_no_op(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    layout = _layout()
    delta = np.array([1, 1, 1, 1, 1])
    assert store.flush([Flush(layout, "r1", 7, delta)], 60)[0].applied
    again = store.flush([Flush(layout, "r1", 7, delta)], 60)[0]
    older = store.flush([Flush(layout, "r1", 3, delta)], 60)[0]
    assert not again.applied and not older.applied
    assert store.read_windows([layout])[0].counts.tolist() == [1, 1, 1, 1, 1]
    assert store.flush([Flush(layout, "r1", 8, delta)], 60)[0].applied
    assert store.read_windows([layout])[0].counts.tolist() == [2, 2, 2, 2, 2]


def test_idempotency_keys_count_a_request_once(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    layout = _layout()
    one = np.array([1, 0, 0, 0, 0])
    two = np.array([0, 2, 0, 0, 0])
    result = store.flush(
        [Flush(layout, "r1", 1, np.array([0, 0, 0, 0, 9]), (("k-1", one), ("k-2", two)))], 60
    )[0]
    assert result.duplicates == (False, False)
    # A retry of k-2 through another replica, beside a new k-3.
    result = store.flush([Flush(layout, "r2", 1, None, (("k-2", two), ("k-3", one)))], 60)[0]
    assert result.duplicates == (True, False)
    assert store.read_windows([layout])[0].counts.tolist() == [2, 2, 0, 0, 9]
    ttl_ms = redis_server.client().pttl("dm:{credit}:idem:k-2")
    assert 0 < ttl_ms <= 60_000


def test_a_read_sums_only_the_newest_panes(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    layout = _layout(n_bins=2, panes=2)
    client = redis_server.client()
    for _attempt in range(3):  # again if the store's clock crosses an hour between the calls
        now_pane = math.floor(store.time() * 1e6 / HOUR_US)
        for back, counts in ((0, [1, 0]), (1, [0, 10]), (2, [100, 100])):
            client.set(f"dm:{{credit}}:f1:{now_pane - back}", pack(np.array(counts)))
        client.set(f"dm:{{credit}}:f2:{now_pane}", pack(np.array([7, 7])))  # another layout
        read = store.read_windows([layout])[0]
        if read.pane == now_pane:
            break
    assert read.pane == now_pane
    assert read.counts.tolist() == [1, 10]


def test_a_pane_of_the_wrong_size_fails_the_flush_and_writes_nothing(
    redis_server: RedisServer,
) -> None:
    store = _store(redis_server)
    layout = _layout(n_bins=2)
    pane = store.flush([Flush(layout, "r1", 1, np.array([1, 1]))], 60)[0].pane
    redis_server.client().set(f"dm:{{credit}}:f1:{pane}", b"\0" * 8)
    with pytest.raises(redis.ResponseError, match="holds 8 bytes, expected 16"):
        store.flush([Flush(layout, "r1", 2, None, (("k", np.array([1, 1])),))], 60)
    assert not redis_server.client().exists("dm:{credit}:idem:k")
    assert redis_server.client().get("dm:{credit}:seq:r1") == b"1"


def test_flushed_counts_survive_a_kill_9_of_redis(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    layout = _layout()
    for seq in range(1, 51):
        store.flush([Flush(layout, "r1", seq, np.array([seq, 1, 0, 0, 2]))], 60)
    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        store.read_windows([layout])
    redis_server.start()
    assert store.read_windows([layout])[0].counts.tolist() == [1275, 50, 0, 0, 100]
    # The sequence survived too: a resend after the restart is still a no-op.
    assert not store.flush([Flush(layout, "r1", 50, np.array([1, 1, 1, 1, 1]))], 60)[0].applied


def test_the_lease_is_exclusive_renewable_and_fenced(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    epoch, new, holder = store.hold_lease("a", 0, 0.5)
    assert (epoch, new, holder) == (1, True, "a 1")
    assert store.hold_lease("b", 0, 0.5) == (0, False, "a 1")
    assert store.hold_lease("a", 1, 0.5) == (1, False, "a 1")  # renewal keeps the epoch
    assert store.save_alerts(1, {"states": []})
    deadline = time.monotonic() + 5
    while store.hold_lease("b", 0, 5.0)[0] == 0:  # a's lease runs out
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.hold_lease("a", 1, 0.5)[0] == 0  # a cannot renew b's lease
    assert not store.save_alerts(1, {"states": ["stale"]})  # a's writes are fenced off
    assert store.save_alerts(2, {"states": ["b"]})
    assert store.load_alerts() == {"states": ["b"]}
    assert not store.release_lease("a", 1)
    assert store.release_lease("b", 2)
    assert store.hold_lease("a", 0, 0.5)[:2] == (3, True)
