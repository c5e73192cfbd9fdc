"""Shared mode end to end: real redis-server (AOF), replicas and a single-node baseline.

Every process is real: ``redis-server`` started by the test on a free
loopback port, ``driftmon run`` replicas on port 0 (tests/harness.py), and a
single-node daemon on the same config (``cluster.mode: off``) as the
baseline the replicas' leader must agree with exactly.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import DaemonProcess, Reply, parse_metrics, series, wait_for
from redis_server import RedisServer, ReplySwallowingProxy, running_redis, running_redis_cluster
from test_rules import run_promtool

REFERENCE = Path(__file__).resolve().parent.parent / "config" / "data" / "credit_reference.csv"
FEATURES = ("income", "age", "utilisation", "region")
LEASE_TTL_S = 2.0
EVALUATE_EVERY_S = 1.0


def write_config(
    path: Path,
    redis_url: str | None,
    *,
    ack_timeout: str = "10s",
    alert_for: str = "0s",
    redis_cluster: bool = False,
    lease_ttl_s: float = LEASE_TTL_S,
) -> Path:
    """The same streams and rules for the replicas (``redis_url``) and the baseline (None)."""
    cluster = ""
    if redis_url is not None:
        cluster = f"""
cluster:
  mode: shared
  redis: {{url: "{redis_url}", key_prefix: dmtest, cluster: {str(redis_cluster).lower()}}}
  flush_every: 50ms
  lease_ttl: {lease_ttl_s:g}s
  max_clock_skew: 1s
  ack_timeout: {ack_timeout}
"""
    path.write_text(
        f"""
engine: {{evaluate_every: {EVALUATE_EVERY_S:g}s}}
ingest: {{workers: 1}}
streams:
  - name: credit
    reference: {{file: "{REFERENCE}"}}
    window: {{length: 1h, panes: 60}}
    cloudevents: {{service: credit-model, inputs: [income, age, utilisation, region]}}
    features:
      - {{name: income, type: numeric, bins: {{kind: quantile, count: 10}}}}
      - {{name: age, type: numeric, bins: {{kind: uniform, lo: 18, hi: 98, count: 16}}}}
      - {{name: utilisation, type: numeric,
         bins: {{kind: edges, edges: [0, 0.1, 0.3, 0.5, 0.9, 1.0]}}}}
      - {{name: region, type: categorical, top_k: 4}}
alerts:
  - name: region-shift
    match: {{stream: credit, feature: region}}
    metric: js
    threshold: 0.05
    for: {alert_for}
    severity: page
{cluster}"""
    )
    return path


def make_rows(rng: np.random.Generator, n: int, drift: bool) -> list[dict[str, Any]]:
    """Rows of every kind of value: ok, out of range, missing, invalid, unknown category."""
    regions = ["north", "south", "east", "west", "delta", "nowhere"]
    weights = [0.05, 0.05, 0.05, 0.05, 0.1, 0.7] if drift else [0.2, 0.2, 0.2, 0.2, 0.15, 0.05]
    rows: list[dict[str, Any]] = []
    for _ in range(n):
        row: dict[str, Any] = {
            "income": float(round(rng.lognormal(10.3, 0.5), 2)),
            "age": int(rng.integers(10, 105)),
            "utilisation": float(round(rng.uniform(-0.1, 1.1), 4)),
            "region": str(rng.choice(regions, p=weights)),
        }
        roll = rng.random()
        if roll < 0.03:
            row.pop("income")
        elif roll < 0.05:
            row["age"] = "forty"
        elif roll < 0.06:
            row["region"] = None
        rows.append(row)
    return rows


def bodies(seed: int, count: int, drift: bool) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers) of every ingest format in turn: rows, columns, NDJSON, CloudEvents."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        rows = make_rows(rng, int(rng.integers(1, 40)), drift)
        kind = i % 4
        path = "/v1/streams/credit/rows"
        headers = {"Content-Type": "application/json"}
        if kind == 0:
            body = json.dumps(rows).encode()
        elif kind == 1:
            columns = {f: [row.get(f) for row in rows] for f in FEATURES}
            body = json.dumps({"columns": columns}).encode()
        elif kind == 2:
            body = "\n".join(json.dumps(row) for row in rows).encode()
            headers = {"Content-Type": "application/x-ndjson"}
        else:
            path = "/v1/cloudevents"
            instances = [[row.get(f) for f in FEATURES] for row in rows]
            body = json.dumps({"instances": instances}).encode()
            headers = {
                "Content-Type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": f"event-{seed}-{i}",
                "ce-source": "http://model/",
                "ce-type": "org.kubeflow.serving.inference.request",
                "ce-inferenceservicename": "credit-model",
            }
        result.append((path, body, headers))
    return result


def is_leader(replica: DaemonProcess) -> bool:
    if replica.process is None or replica.process.poll() is not None:
        return False
    reply = replica.get("/metrics")
    if reply.status != 200:
        return False
    return series(parse_metrics(reply.body.decode()), "driftmon_cluster_leader") == {(): 1.0}


def the_leader(replicas: list[DaemonProcess], timeout_s: float = 30.0) -> DaemonProcess:
    """The one replica exporting ``driftmon_cluster_leader 1`` (waits for it)."""

    def find() -> DaemonProcess | None:
        leaders = [r for r in replicas if is_leader(r)]
        assert len(leaders) <= 1, "two replicas claim the lease"
        return leaders[0] if leaders else None

    leader: DaemonProcess = wait_for(find, timeout_s, "a leader")
    return leader


def monitors(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    reply = daemon.get("/api/v1/monitors")
    assert reply.status == 200
    return {m["feature"]: m for m in reply.json()["monitors"]}


def samples_are(daemon: DaemonProcess, rows: float) -> bool:
    found = monitors(daemon)
    return bool(found) and all(m["samples"] == rows for m in found.values())


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def processes() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts; killed at the end whatever happened."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(processes: list[DaemonProcess], config: Path, n: int = 1) -> list[DaemonProcess]:
    daemons = [DaemonProcess(config) for _ in range(n)]
    processes.extend(daemons)
    for daemon in daemons:
        daemon.start()
    return daemons


def rows_in(body: tuple[str, bytes, dict[str, str]]) -> int:
    path, raw, headers = body
    if path == "/v1/cloudevents":
        return len(json.loads(raw)["instances"])
    if headers["Content-Type"] == "application/x-ndjson":
        return len(raw.splitlines())
    parsed = json.loads(raw)
    return len(parsed) if isinstance(parsed, list) else len(parsed["columns"]["age"])


def test_the_leader_counts_exactly_what_a_single_node_counts(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    shared = write_config(tmp_path / "shared.yaml", redis_server.url)
    check_equality(tmp_path, processes, shared, replica_count=3)


def test_a_redis_cluster_of_three_masters_counts_exactly_too(
    tmp_path: Path, processes: list[DaemonProcess]
) -> None:
    with running_redis_cluster(tmp_path / "redis-cluster", masters=3) as nodes:
        shared = write_config(tmp_path / "shared.yaml", nodes[0].url, redis_cluster=True)
        check_equality(tmp_path, processes, shared, replica_count=2)
        keys = [node.client().dbsize() for node in nodes]
        assert sum(keys) > 0


def check_equality(
    tmp_path: Path, processes: list[DaemonProcess], shared: Path, replica_count: int
) -> None:
    """Same bodies round-robin to the replicas and once to a single node: same windows."""
    single = write_config(tmp_path / "single.yaml", None)
    replicas = start(processes, shared, replica_count)
    (baseline,) = start(processes, single)
    leader = the_leader(replicas)
    sent = bodies(seed=1, count=80, drift=True)
    total = 0
    for i, (path, body, headers) in enumerate(sent):
        if i % 5 == 0:  # some requests carry a key: counted once like the others
            headers = {**headers, "Idempotency-Key": f"req-{i}"}
        replica = replicas[i % len(replicas)]
        answer: Reply = replica.post(path, body, headers)
        assert answer.status == 200, answer
        assert baseline.post(path, body, headers).status == 200
        total += rows_in((path, body, headers))
    wait_for(lambda: samples_are(leader, total), 30, "the leader's windows")
    wait_for(lambda: samples_are(baseline, total), 30, "the baseline's windows")
    for feature in FEATURES:
        ours = leader.monitor("credit", feature)
        theirs = baseline.monitor("credit", feature)
        assert ours["bins"] == theirs["bins"]
        assert ours["live_counts"] == theirs["live_counts"], feature
        assert ours["reference_counts"] == theirs["reference_counts"]
        for name, value in theirs["divergences"].items():
            mine = ours["divergences"][name]
            if value is None or isinstance(value, str):
                assert mine == value, (feature, name)
            else:
                assert mine == pytest.approx(value, rel=1e-12, abs=1e-12), (feature, name)
    # The alert fires on the leader as on the baseline.
    assert [a["state"] for a in monitors(leader)["region"]["alerts"]] == ["firing"]
    assert [a["state"] for a in monitors(baseline)["region"]["alerts"]] == ["firing"]
    # The leader exports the divergences; followers only their own ingest series.
    rows_seen = 0.0
    for replica in replicas:
        samples = replica.metrics()
        leading = replica is leader
        assert series(samples, "driftmon_cluster_leader") == {(): 1.0 if leading else 0.0}
        assert bool(series(samples, "driftmon_js_divergence")) == leading
        assert series(samples, "driftmon_cluster_store_up") == {(): 1.0}
        assert series(samples, "driftmon_cluster_flush_duration_seconds_count")[()] > 0
        rows_seen += sum(series(samples, "driftmon_ingest_rows_total").values())
        linted = run_promtool("check", "metrics", stdin=replica.get("/metrics").body)
        assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout
    assert rows_seen == total
    assert baseline.metrics().get(("driftmon_cluster_leader", ())) is None


def test_a_retried_request_with_an_idempotency_key_counts_once(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    shared = write_config(tmp_path / "shared.yaml", redis_server.url)
    replicas = start(processes, shared, 2)
    leader = the_leader(replicas)
    path, body, headers = bodies(seed=2, count=1, drift=False)[0]
    n = rows_in((path, body, headers))
    keyed = {**headers, "Idempotency-Key": "retry-me"}
    assert replicas[0].post(path, body, keyed).status == 200
    # The client did not see that answer (say the replica died): it retries elsewhere.
    assert replicas[1].post(path, body, keyed).status == 200
    assert replicas[1].post(path, body, {**headers, "Idempotency-Key": "x" * 201}).status == 400
    wait_for(lambda: samples_are(leader, n), 30, "the leader's windows")
    time.sleep(2 * EVALUATE_EVERY_S)  # another evaluation would show a second count
    assert samples_are(leader, n)
    deduplicated = series(replicas[1].metrics(), "driftmon_cluster_deduplicated_requests_total")
    assert deduplicated == {(): 1.0}


def test_another_replica_takes_over_with_the_firing_alerts_start_times(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    shared = write_config(tmp_path / "shared.yaml", redis_server.url, alert_for="2s")
    replicas = start(processes, shared, 2)
    leader = the_leader(replicas)
    for path, body, headers in bodies(seed=3, count=20, drift=True):
        assert leader.post(path, body, headers).status == 200

    def firing(daemon: DaemonProcess) -> dict[str, Any] | None:
        alerts = monitors(daemon).get("region", {}).get("alerts", [])
        return next((a for a in alerts if a["state"] == "firing"), None)

    before = wait_for(lambda: firing(leader), 30, "the alert to fire on the leader")
    assert before["fired_at"] - before["active_at"] >= 2.0  # for: 2s, on the store's clock
    follower = next(r for r in replicas if r is not leader)
    assert leader.process is not None
    leader.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: is_leader(follower), 30, "the follower to take the lease")
    took_over_s = time.monotonic() - killed_at
    after = wait_for(lambda: firing(follower), 30, "the alert to fire on the new leader")
    assert (after["active_at"], after["fired_at"]) == (before["active_at"], before["fired_at"])
    # The lease lapses within lease_ttl; the follower looks every tenth of it and evaluates
    # at once. The allowance covers this test's polling of /metrics (one HTTP request).
    assert took_over_s <= LEASE_TTL_S + EVALUATE_EVERY_S + 0.5, took_over_s


def test_every_acknowledged_row_survives_a_kill_9_of_redis(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    shared = write_config(tmp_path / "shared.yaml", redis_server.url, ack_timeout="1500ms")
    replicas = start(processes, shared, 2)
    leader = the_leader(replicas)
    acknowledged = 0
    for i, body in enumerate(bodies(seed=4, count=30, drift=False)):
        path, raw, headers = body
        assert replicas[i % 2].post(path, raw, headers).status == 200
        acknowledged += rows_in(body)
    redis_server.kill()
    wait_for(lambda: all(r.get("/-/ready").status == 503 for r in replicas), 10, "not ready")
    # While the store is away a request waits, then gets 503 + Retry-After ...
    path, raw, headers = bodies(seed=5, count=1, drift=False)[0]
    keyed = {**headers, "Idempotency-Key": "during-outage"}
    answer = replicas[0].post(path, raw, keyed)
    assert answer.status == 503 and answer.headers.get("Retry-After") == "1", answer
    redis_server.start()  # from its AOF
    wait_for(lambda: all(r.get("/-/ready").status == 200 for r in replicas), 20, "ready again")
    # ... and its retry, with the same key, counts once although the first try was kept.
    assert replicas[1].post(path, raw, keyed).status == 200
    acknowledged += rows_in((path, raw, headers))
    leader = the_leader(replicas)
    wait_for(lambda: samples_are(leader, acknowledged), 30, "every acknowledged row")
    time.sleep(2 * EVALUATE_EVERY_S)
    assert samples_are(leader, acknowledged)
    failures = sum(
        sum(series(r.metrics(), "driftmon_cluster_flush_failures_total").values())
        for r in replicas
    )
    assert failures >= 1
    assert not math.isnan(failures)


def test_a_replica_dying_after_the_store_applied_its_flush_loses_nothing_on_retry(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    proxy = ReplySwallowingProxy(redis_server.port)
    try:
        (leader,) = start(processes, write_config(tmp_path / "b.yaml", redis_server.url))
        the_leader([leader])
        # This replica talks to the store through the proxy, which will lose its answer.
        (doomed,) = start(processes, write_config(tmp_path / "a.yaml", proxy.url))
        path, body, headers = bodies(seed=6, count=1, drift=False)[0]
        n = rows_in((path, body, headers))
        keyed = {**headers, "Idempotency-Key": "applied-then-died"}
        proxy.swallow.set()
        answers: list[Reply | Exception] = []

        def send() -> None:
            try:
                answers.append(doomed.post(path, body, keyed))
            except Exception as exc:  # the connection dies with the replica
                answers.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        assert proxy.swallowed.wait(30), "the flush never reached the store"
        idempotency = f"dmtest:{{credit}}:idem:{keyed['Idempotency-Key']}"
        wait_for(lambda: redis_server.client().exists(idempotency), 10, "the flush applied")
        doomed.kill()  # SIGKILL before it could answer
        sender.join(30)
        assert answers and not (isinstance(answers[0], Reply) and answers[0].status == 200)
        # The client retries the same request, with the same key, on the surviving replica.
        assert leader.post(path, body, keyed).status == 200
        wait_for(lambda: samples_are(leader, n), 30, "the leader's windows")
        time.sleep(2 * EVALUATE_EVERY_S)
        assert samples_are(leader, n)
        assert series(leader.metrics(), "driftmon_cluster_deduplicated_requests_total") == {
            (): 1.0
        }
    finally:
        proxy.close()


def test_a_replica_killed_mid_load_and_restarted_loses_no_row_of_a_retried_request(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    shared = write_config(tmp_path / "shared.yaml", redis_server.url)
    (steady,) = start(processes, shared)
    the_leader([steady])
    (victim,) = start(processes, shared)
    replicas = [victim, steady]
    sent = bodies(seed=7, count=60, drift=False)
    total = sum(rows_in(body) for body in sent)
    retries = 0

    def post_until_stored(i: int, body: tuple[str, bytes, dict[str, str]]) -> None:
        nonlocal retries
        path, raw, headers = body
        keyed = {**headers, "Idempotency-Key": f"load-{i}"}
        for attempt in range(40):
            replica = replicas[(i + attempt) % 2]
            try:
                if replica.post(path, raw, keyed).status == 200:
                    return
            except Exception:  # the victim died under this request
                pass
            retries += 1
            time.sleep(0.05)
        raise AssertionError(f"request {i} never stored")

    done = threading.Semaphore(0)

    def post_and_count(item: tuple[int, tuple[str, bytes, dict[str, str]]]) -> None:
        post_until_stored(*item)
        done.release()

    with ThreadPoolExecutor(4) as senders:  # requests in flight while the victim dies
        futures = [senders.submit(post_and_count, item) for item in enumerate(sent)]
        for _ in range(15):
            done.acquire()
        victim.kill()  # SIGKILL mid-load ...
        for _ in range(10):
            done.acquire()
        victim.start()  # ... and back: a new process, a new replica id
        for future in futures:
            future.result()
    assert retries > 0
    wait_for(lambda: samples_are(steady, total), 30, "every row, once")
    time.sleep(2 * EVALUATE_EVERY_S)
    assert samples_are(steady, total)


def test_a_stopped_leader_hands_the_lease_over_before_it_would_expire(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    shared = write_config(tmp_path / "shared.yaml", redis_server.url, lease_ttl_s=20.0)
    replicas = start(processes, shared, 2)
    leader = the_leader(replicas)
    path, body, headers = bodies(seed=8, count=1, drift=False)[0]
    assert leader.post(path, body, headers).status == 200
    follower = next(r for r in replicas if r is not leader)
    stopped_at = time.monotonic()
    assert leader.stop(signal.SIGTERM) == 0
    wait_for(lambda: is_leader(follower), 30, "the follower to take the lease")
    # Given up at exit, the lease is free long before its 20 s would have run out (the
    # follower looks every 2 s).
    assert time.monotonic() - stopped_at < 10.0
    wait_for(lambda: samples_are(follower, rows_in((path, body, headers))), 30, "the rows")


def test_a_reload_keeps_the_store_windows_unless_the_stream_bins_change(
    tmp_path: Path, redis_server: RedisServer, processes: list[DaemonProcess]
) -> None:
    config = write_config(tmp_path / "shared.yaml", redis_server.url)
    replicas = start(processes, config, 2)
    leader = the_leader(replicas)
    first = bodies(seed=9, count=4, drift=False)
    for i, (path, body, headers) in enumerate(first):
        assert replicas[i % 2].post(path, body, headers).status == 200
    before = sum(rows_in(b) for b in first)
    wait_for(lambda: samples_are(leader, before), 30, "the first rows")
    # Same bins, another threshold: the windows in the store stay.
    config.write_text(config.read_text().replace("threshold: 0.05", "threshold: 0.06"))
    for replica in replicas:
        assert replica.post("/-/reload").status == 200
    time.sleep(2 * EVALUATE_EVERY_S)
    assert samples_are(leader, before)
    # Other bins for one feature: the stream's counts live under a new layout, from zero.
    config.write_text(config.read_text().replace("count: 16", "count: 8"))
    for replica in replicas:
        assert replica.post("/-/reload").status == 200
    path, body, headers = bodies(seed=10, count=1, drift=False)[0]
    assert replicas[1].post(path, body, headers).status == 200
    wait_for(lambda: samples_are(leader, rows_in((path, body, headers))), 30, "a fresh window")
    assert len(leader.monitor("credit", "age")["live_counts"]) == 8 + 4
