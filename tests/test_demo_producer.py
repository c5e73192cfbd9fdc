"""The ``driftmon demo`` producer (docs/http-api.md, docs/cli.md) and the packaged demo config.

The producer runs against a small in-process aiohttp server that answers the
ingest API the way the daemon does (``/-/ready``, ``POST
/v1/streams/{stream}/rows`` with 200, 503 + ``Retry-After`` or 400) and
records every body. Timings are short and the server stops the producer
itself once it has seen what a test needs, so nothing sleeps but the
producer's own pacing and one 1 s ``Retry-After``.

The distributions are checked as the daemon will see them: the rows are
binned with the demo config's own layouts (quantile edges and categories
learned from the packaged reference file, or from the first 300 rows for the
warmup stream) and compared with ``driftmon.divergence.divergences``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import filecmp
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from driftmon.config import Config, StreamConfig, load_config
from driftmon.divergence import divergences
from driftmon.reference import Reference, build_reference, load_reference_file
from driftmon.sources import Batch, parse_body
from driftmon.tools import demo
from driftmon.tools.demo import (
    FRAUD_STREAM,
    SHOP_STREAM,
    DemoTimings,
    ProducerStats,
    demo_config_path,
    produce,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG = load_config(demo_config_path())
FIELDS = {stream.name: [f.name for f in stream.features] for stream in CONFIG.streams}
# A generous bound on a whole producer run: the runs below take 1-3 s.
RUN_TIMEOUT_S = 20.0


# --- a fake daemon ---------------------------------------------------------------------------


@dataclass
class Received:
    """One ingest request as the fake daemon saw it."""

    stream: str
    content_type: str
    body: bytes
    time: float  # event loop time at arrival
    after_drift: bool  # on_drift had been called when the request arrived
    status: int
    batch: Batch | None  # parsed with the stream's fields, None when it did not parse


@dataclass
class FakeDaemon:
    """Answers like the daemon and records every ingest request.

    ``not_ready`` readiness polls are answered 503 before the first 200;
    ``answers[stream]`` lists (status, headers) to give that stream's first
    requests before answering 200. ``until`` is checked after every request
    (ingest or readiness) and sets ``stop`` when it holds.
    """

    until: Callable[[FakeDaemon], bool]
    not_ready: int = 0
    answers: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[Received] = field(default_factory=list)
    ready_polls: int = 0
    ready_at: float | None = None  # loop time of the first 200 from /-/ready
    drift_calls: int = 0

    def on_drift(self) -> None:
        self.drift_calls += 1

    async def ready(self, request: web.Request) -> web.Response:
        self.ready_polls += 1
        if self.until(self):
            self.stop.set()
        if self.ready_polls <= self.not_ready:
            return web.Response(status=503, text="references loading")
        if self.ready_at is None:
            self.ready_at = asyncio.get_running_loop().time()
        return web.Response(text="ready")

    async def rows(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        if stream not in FIELDS:
            status, headers, batch = 404, {}, None
        else:
            try:
                batch = parse_body(body, content_type, FIELDS[stream])
            except ValueError:
                batch = None
            queued = self.answers.get(stream)
            if queued:
                status, headers = queued.pop(0)
            else:
                status, headers = (200, {}) if batch is not None else (400, {})
        self.received.append(
            Received(
                stream=stream,
                content_type=content_type,
                body=body,
                time=asyncio.get_running_loop().time(),
                after_drift=self.drift_calls > 0,
                status=status,
                batch=batch,
            )
        )
        if self.until(self):
            self.stop.set()
        if status == 200:
            assert batch is not None
            return web.json_response({"rows": batch.n_rows})
        return web.Response(status=status, headers=headers, text=f"status {status}")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/-/ready", self.ready)
        app.router.add_post("/v1/streams/{stream}/rows", self.rows)
        return app

    def accepted(self, stream: str, *, after_drift: bool | None = None) -> list[Received]:
        """The requests of ``stream`` answered 200, optionally only before/after the drift."""
        return [
            r
            for r in self.received
            if r.stream == stream
            and r.status == 200
            and (after_drift is None or r.after_drift == after_drift)
        ]

    def accepted_rows(self, stream: str, *, after_drift: bool | None = None) -> int:
        return sum(
            r.batch.n_rows for r in self.accepted(stream, after_drift=after_drift) if r.batch
        )


async def _produce(
    daemon: FakeDaemon, timings: DemoTimings, *, port: int | None = None, seed: int = 0
) -> ProducerStats:
    server = TestServer(daemon.app(), port=port)
    await server.start_server()
    try:
        return await asyncio.wait_for(
            produce(
                str(server.make_url("/")),
                timings=timings,
                stop=daemon.stop,
                seed=seed,
                on_drift=daemon.on_drift,
            ),
            RUN_TIMEOUT_S,
        )
    finally:
        await server.close()


def run(
    daemon_factory: Callable[[], FakeDaemon], timings: DemoTimings
) -> tuple[FakeDaemon, ProducerStats]:
    """Run the producer against a fresh fake daemon in a fresh event loop."""

    async def main() -> tuple[FakeDaemon, ProducerStats]:
        daemon = daemon_factory()  # its asyncio.Event belongs to this loop
        return daemon, await _produce(daemon, timings)

    return asyncio.run(main())


# --- binning the rows the way the daemon does --------------------------------------------------


def columns(requests: Sequence[Received], names: Sequence[str]) -> dict[str, list[object]]:
    """The values of every request, concatenated per field."""
    out: dict[str, list[object]] = {name: [] for name in names}
    for request in requests:
        assert request.batch is not None
        for name in names:
            out[name].extend(request.batch.columns[name])
    return out


def counts(
    reference: Reference, stream: StreamConfig, values: dict[str, list[object]]
) -> dict[str, np.ndarray]:
    """Every feature's counts over the reference's layout."""
    out = {}
    for feature, binner in zip(stream.features, reference.binners, strict=True):
        feature_counts = np.zeros(binner.n_bins)
        binner.add_values(values[feature.name], feature_counts)
        out[feature.name] = feature_counts
    return out


def stream_columns(
    daemon: FakeDaemon, stream: str, *, after_drift: bool
) -> dict[str, list[object]]:
    """The values the stream's accepted requests carried before (or after) the drift."""
    return columns(daemon.accepted(stream, after_drift=after_drift), FIELDS[stream])


def js(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """JS divergence with the demo's smoothing (0.5) in nats, as the daemon reports it."""
    return float(divergences(reference_counts, live_counts, smoothing=0.5)["js"])


def rows_before_and_after(daemon: FakeDaemon, stream: str) -> tuple[int, int]:
    return (
        daemon.accepted_rows(stream, after_drift=False),
        daemon.accepted_rows(stream, after_drift=True),
    )


# --- the main run: distributions before and after the drift ---------------------------------

ROWS_EACH_SIDE = 5000
DRIFT_TIMINGS = DemoTimings(drift_after_s=1.0, rows_per_second=5000.0, batch_every_s=0.05)


def _enough_after_drift(daemon: FakeDaemon) -> bool:
    return all(rows_before_and_after(daemon, s)[1] >= ROWS_EACH_SIDE for s in FIELDS)


@pytest.fixture(scope="module")
def drift_run() -> tuple[FakeDaemon, ProducerStats]:
    return run(lambda: FakeDaemon(until=_enough_after_drift), DRIFT_TIMINGS)


def test_both_streams_get_parseable_bodies_in_their_shapes(
    drift_run: tuple[FakeDaemon, ProducerStats],
) -> None:
    daemon, _ = drift_run
    for request in daemon.received:
        assert request.status == 200, request.body[:200]
        assert request.content_type == "application/json"
        document = orjson.loads(request.body)
        if request.stream == SHOP_STREAM:
            # Row objects: every row an object whose keys are the shop's features.
            assert isinstance(document, list) and document
            assert all(isinstance(row, dict) for row in document)
            assert all(set(row) <= set(FIELDS[SHOP_STREAM]) for row in document)
        else:
            assert request.stream == FRAUD_STREAM
            assert set(document) == {"columns"}
            assert set(document["columns"]) == set(FIELDS[FRAUD_STREAM])
    assert {r.stream for r in daemon.received} == {SHOP_STREAM, FRAUD_STREAM}


def test_on_drift_is_called_once_between_the_plain_and_the_drifted_batches(
    drift_run: tuple[FakeDaemon, ProducerStats],
) -> None:
    daemon, _ = drift_run
    assert daemon.drift_calls == 1
    # Batches before the drift come first, the drifted ones after: never interleaved.
    flags = [r.after_drift for r in daemon.received]
    assert flags == sorted(flags)
    assert daemon.ready_at is not None
    first_drifted = next(r for r in daemon.received if r.after_drift)
    assert first_drifted.time - daemon.ready_at >= DRIFT_TIMINGS.drift_after_s
    for stream in FIELDS:
        before, after = rows_before_and_after(daemon, stream)
        assert before >= 0.6 * DRIFT_TIMINGS.drift_after_s * DRIFT_TIMINGS.rows_per_second
        assert after >= ROWS_EACH_SIDE


def test_stats_count_what_the_daemon_accepted(drift_run: tuple[FakeDaemon, ProducerStats]) -> None:
    daemon, stats = drift_run
    assert stats.rows_sent == {s: daemon.accepted_rows(s) for s in FIELDS}
    assert stats.requests == len(daemon.received)
    assert stats.errors == 0


def test_no_row_is_sent_before_it_is_due(drift_run: tuple[FakeDaemon, ProducerStats]) -> None:
    daemon, _ = drift_run
    assert daemon.ready_at is not None
    for stream in FIELDS:
        total = 0
        for request in daemon.accepted(stream):
            assert request.batch is not None
            total += request.batch.n_rows
            # The producer's clock starts after it read the first ready answer, so this holds
            # exactly, whatever the machine's load.
            assert total <= DRIFT_TIMINGS.rows_per_second * (request.time - daemon.ready_at)


def test_missing_and_invalid_values_show_before_and_after_the_drift(
    drift_run: tuple[FakeDaemon, ProducerStats],
) -> None:
    daemon, _ = drift_run
    for after_drift in (False, True):
        shop = stream_columns(daemon, SHOP_STREAM, after_drift=after_drift)
        fraud = stream_columns(daemon, FRAUD_STREAM, after_drift=after_drift)
        for values in (shop["basket_value"], fraud["score"]):
            assert None in values and "n/a" in values
            assert values.count(None) < 0.05 * len(values)
        assert None in shop["items"]  # an absent field
        assert None in shop["device"] and None in fraud["decision"]


SHOP_DRIFTED = {"basket_value", "device"}
SHOP_STEADY = {"items", "country"}


def test_shop_follows_its_reference_file_until_the_drift(
    drift_run: tuple[FakeDaemon, ProducerStats],
) -> None:
    daemon, _ = drift_run
    stream = CONFIG.stream(SHOP_STREAM)
    assert stream.reference.path is not None
    reference = load_reference_file(stream, stream.reference.path)
    reference_counts = {f.name: c for f, c in zip(stream.features, reference.counts, strict=True)}
    before_values = stream_columns(daemon, SHOP_STREAM, after_drift=False)
    after_values = stream_columns(daemon, SHOP_STREAM, after_drift=True)
    before = counts(reference, stream, before_values)
    after = counts(reference, stream, after_values)
    assert set(before) == SHOP_DRIFTED | SHOP_STEADY
    for name in before:
        assert js(reference_counts[name], before[name]) < 0.02, name
    for name in SHOP_DRIFTED:
        assert js(reference_counts[name], after[name]) > 0.1, name
        assert js(before[name], after[name]) > 0.1, name
    for name in SHOP_STEADY:
        assert js(reference_counts[name], after[name]) < 0.02, name
        assert js(before[name], after[name]) < 0.02, name
    # The direction of the drift, as the module docstring describes it.
    basket_before = [v for v in before_values["basket_value"] if isinstance(v, float)]
    basket_after = [v for v in after_values["basket_value"] if isinstance(v, float)]
    assert 30 < np.median(basket_before) < 40
    assert 2.2 < np.median(basket_after) / np.median(basket_before) < 2.8


def test_fraud_model_is_steady_from_its_warmup_rows_until_the_drift(
    drift_run: tuple[FakeDaemon, ProducerStats],
) -> None:
    daemon, _ = drift_run
    stream = CONFIG.stream(FRAUD_STREAM)
    warmup_rows = stream.reference.warmup_rows
    assert warmup_rows == 300
    before_values = stream_columns(daemon, FRAUD_STREAM, after_drift=False)
    after_values = stream_columns(daemon, FRAUD_STREAM, after_drift=True)
    # The daemon's reference is the stream's first 300 rows; the live window the rows after them.
    warmup = {name: values[:warmup_rows] for name, values in before_values.items()}
    reference = build_reference(stream, warmup_rows, warmup)
    reference_counts = {f.name: c for f, c in zip(stream.features, reference.counts, strict=True)}
    before = counts(reference, stream, {k: v[warmup_rows:] for k, v in before_values.items()})
    after = counts(reference, stream, after_values)
    for name in FIELDS[FRAUD_STREAM]:
        assert js(reference_counts[name], before[name]) < 0.02, name
        assert js(reference_counts[name], after[name]) > 0.1, name
    decisions = stream.features[1]
    assert decisions.categories == ("approve", "review", "decline")
    declined_before = before["decision"][2] / before["decision"].sum()
    declined_after = after["decision"][2] / after["decision"].sum()
    assert declined_after > declined_before + 0.1


# --- retries and start-up --------------------------------------------------------------------

STEADY_TIMINGS = DemoTimings(drift_after_s=600.0, rows_per_second=200.0, batch_every_s=0.05)


def test_a_503_is_resent_after_its_retry_after() -> None:
    def two_accepted(daemon: FakeDaemon) -> bool:
        return len(daemon.accepted(SHOP_STREAM)) >= 2

    daemon, stats = run(
        lambda: FakeDaemon(
            until=two_accepted, answers={SHOP_STREAM: [(503, {"Retry-After": "1"})]}
        ),
        STEADY_TIMINGS,
    )
    shop = [r for r in daemon.received if r.stream == SHOP_STREAM]
    assert [r.status for r in shop[:2]] == [503, 200]
    assert shop[1].body == shop[0].body  # the same batch, not a new one
    assert shop[1].time - shop[0].time >= 0.95
    assert stats.errors == 1
    assert stats.requests == len(daemon.received)
    assert stats.rows_sent[SHOP_STREAM] == daemon.accepted_rows(SHOP_STREAM)
    assert daemon.drift_calls == 0


def test_stop_interrupts_a_long_retry_after() -> None:
    def first_503(daemon: FakeDaemon) -> bool:
        return any(r.status == 503 for r in daemon.received)

    # Were stop not honoured during the wait, the run would hit RUN_TIMEOUT_S (below the
    # 30 s Retry-After cap) and fail.
    daemon, stats = run(
        lambda: FakeDaemon(
            until=first_503, answers={SHOP_STREAM: [(503, {"Retry-After": "3600"})]}
        ),
        STEADY_TIMINGS,
    )
    assert [r.status for r in daemon.received] == [503]  # nothing more once stopped
    assert stats.rows_sent == {SHOP_STREAM: 0, FRAUD_STREAM: 0}
    assert (stats.requests, stats.errors) == (1, 1)


def test_an_answer_that_resending_cannot_change_drops_the_batch() -> None:
    def fraud_accepted(daemon: FakeDaemon) -> bool:
        return len(daemon.accepted(FRAUD_STREAM)) >= 2

    daemon, stats = run(
        lambda: FakeDaemon(until=fraud_accepted, answers={FRAUD_STREAM: [(400, {})]}),
        STEADY_TIMINGS,
    )
    fraud = [r for r in daemon.received if r.stream == FRAUD_STREAM]
    assert fraud[0].status == 400 and fraud[1].status == 200
    assert fraud[1].body != fraud[0].body  # dropped, not resent
    assert stats.errors == 1
    assert stats.rows_sent[FRAUD_STREAM] == daemon.accepted_rows(FRAUD_STREAM)


def test_waits_for_the_daemon_to_listen_and_be_ready() -> None:
    """Connections fail, then /-/ready answers 503, then 200: only then do rows flow."""

    async def main() -> tuple[FakeDaemon, ProducerStats, int]:
        refused = 0
        two_refused = asyncio.Event()

        def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal refused
            refused += 1
            writer.close()  # a daemon not yet serving: the connection drops at once
            if refused >= 2:
                two_refused.set()

        starting = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = starting.sockets[0].getsockname()[1]

        def one_batch_each(daemon: FakeDaemon) -> bool:
            return all(daemon.accepted(s) for s in FIELDS)

        daemon = FakeDaemon(until=one_batch_each, not_ready=2)
        producer = asyncio.create_task(
            produce(f"http://127.0.0.1:{port}/", timings=STEADY_TIMINGS, stop=daemon.stop)
        )
        try:
            await asyncio.wait_for(two_refused.wait(), RUN_TIMEOUT_S)
            starting.close()
            await starting.wait_closed()
            server = TestServer(daemon.app(), port=port)
            await server.start_server()
            try:
                stats = await asyncio.wait_for(producer, RUN_TIMEOUT_S)
            finally:
                await server.close()
        finally:
            producer.cancel()
            starting.close()
        return daemon, stats, refused

    daemon, stats, refused = asyncio.run(main())
    assert refused >= 2
    assert daemon.ready_polls >= 3 and daemon.ready_at is not None
    assert all(r.time >= daemon.ready_at for r in daemon.received)
    assert stats.errors == 0  # waiting for readiness is not an ingest error
    assert stats.rows_sent == {s: daemon.accepted_rows(s) for s in FIELDS}


def test_stopping_before_the_daemon_is_ready_sends_nothing() -> None:
    daemon, stats = run(
        lambda: FakeDaemon(until=lambda d: d.ready_polls >= 2, not_ready=10**9), STEADY_TIMINGS
    )
    assert daemon.received == [] and daemon.drift_calls == 0
    assert stats == ProducerStats(rows_sent={SHOP_STREAM: 0, FRAUD_STREAM: 0}, requests=0, errors=0)


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"drift_after_s": -1.0}, r"DemoTimings\.drift_after_s: must be >= 0"),
        ({"rows_per_second": 0.0}, r"DemoTimings\.rows_per_second: must be > 0"),
        ({"batch_every_s": -0.5}, r"DemoTimings\.batch_every_s: must be > 0"),
        ({"batch_every_s": float("nan")}, r"DemoTimings\.batch_every_s: must be finite"),
        ({"rows_per_second": float("inf")}, r"DemoTimings\.rows_per_second: must be finite"),
        ({"drift_after_s": "30"}, r"DemoTimings\.drift_after_s: expected a number"),
        ({"rows_per_second": True}, r"DemoTimings\.rows_per_second: expected a number"),
    ],
)
def test_timings_are_checked(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DemoTimings(**changes)


def test_timings_defaults_and_zero_drift_delay() -> None:
    assert DemoTimings() == DemoTimings(
        drift_after_s=30.0, rows_per_second=200.0, batch_every_s=0.5
    )
    assert DemoTimings(drift_after_s=0).drift_after_s == 0


@pytest.mark.parametrize("base_url", ["127.0.0.1:9108", "ftp://host/", ""])
def test_base_url_must_be_http(base_url: str) -> None:
    async def main() -> None:
        await produce(base_url, timings=STEADY_TIMINGS, stop=asyncio.Event())

    with pytest.raises(ValueError, match="base_url"):
        asyncio.run(main())


def test_retry_after_values() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    retry_after_s = demo._retry_after_s
    assert retry_after_s("2", now) == 2.0
    assert retry_after_s(" 0.5 ", now) == 0.5
    assert retry_after_s("0", now) == 0.0
    assert retry_after_s("-3", now) == 0.0
    assert retry_after_s("3600", now) == 30.0  # capped: a demo never sits silent for long
    assert retry_after_s(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert retry_after_s(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    for unreadable in (None, "soon", "nan", ""):
        assert retry_after_s(unreadable, now) == 1.0


# --- the packaged demo config ------------------------------------------------------------------


def _without_reference_paths(config: Config) -> Config:
    streams = tuple(
        dataclasses.replace(s, reference=dataclasses.replace(s.reference, path=None))
        for s in config.streams
    )
    return dataclasses.replace(config, streams=streams, source=None)


def test_packaged_demo_config_is_the_repository_one() -> None:
    packaged_path = demo_config_path()
    assert packaged_path == REPO / "driftmon" / "data" / "demo.yaml"
    repository = load_config(REPO / "config" / "demo.yaml")
    packaged = load_config(packaged_path)
    assert packaged.streams and packaged.alerts
    # Everything but where the reference file lies: streams, alerts, server, engine, ...
    assert _without_reference_paths(packaged) == _without_reference_paths(repository)
    for ours, theirs in zip(packaged.streams, repository.streams, strict=True):
        if theirs.reference.path is None:
            assert ours.reference.path is None
        else:
            assert ours.reference.path == packaged_path.parent / theirs.reference.path.name
            assert ours.reference.path.is_file()


def test_packaged_reference_file_is_the_repository_one_byte_for_byte() -> None:
    packaged = REPO / "driftmon" / "data" / "shop_reference.ndjson"
    assert filecmp.cmp(packaged, REPO / "config" / "data" / "shop_reference.ndjson", shallow=False)
    assert CONFIG.stream(SHOP_STREAM).reference.path == packaged
