"""``/metrics`` at scale (docs/metrics.md): the fast text renderer, gzip, shared renderings.

The renderer must write, byte for byte, what ``prometheus_client``'s
``generate_latest`` writes for the same status (hostile label values, NaN,
±Inf, tiny and huge numbers included); the collector it expands to must
hold what a plain per-monitor loop builds. Scrapes render in a thread:
``/-/healthy`` answers while one is held, and concurrent scrapes share one
rendering. Speed is measured in bench/bench_scrape.py, not here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import math
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from harness import DaemonProcess, parse_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.utils import floatToGoString
from test_http import CONFIG, FakeGate, views

from driftmon.binning import NumericBinner
from driftmon.config import (
    AlertRule,
    Config,
    FeatureConfig,
    ReferenceConfig,
    StreamConfig,
    TimeWindow,
    UniformBins,
    parse_config,
)
from driftmon.engine import Engine
from driftmon.evaluation import Evaluation
from driftmon.exporter import (
    DIVERGENCE_FAMILIES,
    DurationHistogram,
    Scrape,
    SharedScrapes,
    Status,
    new_registry,
    render_scrape,
    render_text,
)
from driftmon.exporter import scrape as exporter
from driftmon.http.app import HttpListener, make_app
from driftmon.reference import Reference

HOSTILE_STREAMS = ('we"ird\\stream\nname', "plain", "ünïcødé ∑ 🚀")
HOSTILE_FEATURES = ('f"1', "f\\2", "f\n3", 'f}4,x="y"', "f 5")


def hostile_engine() -> Engine:
    """Monitors, rules and severities with quotes, backslashes, newlines and non-ASCII."""
    binner = NumericBinner.uniform(-4.0, 4.0, 8)
    rng = np.random.default_rng(5)
    streams, references = [], {}
    for name in HOSTILE_STREAMS:
        features = tuple(
            FeatureConfig(name=f, type="numeric", smoothing=0.5, bins=UniformBins(-4.0, 4.0, 8))
            for f in HOSTILE_FEATURES
        )
        streams.append(
            StreamConfig(
                name=name,
                reference=ReferenceConfig(kind="warmup", warmup_rows=1),
                window=TimeWindow(length_s=900.0, panes=15),
                features=features,
            )
        )
        counts = rng.poisson(40.0, size=(len(features), binner.n_bins)).astype(np.float64)
        references[name] = Reference((binner,) * len(features), tuple(counts), int(counts[0].sum()))
    rules = (
        AlertRule('js "high"\\', "*", "*", "js", threshold=0.01, severity='pa"ge\n'),
        AlertRule("psi-held", "*", "*", "psi", threshold=0.01, for_s=60.0, severity="ticket"),
        AlertRule(
            "p-holm",
            "*",
            "*",
            "js",
            threshold=0.0,
            max_p_value=0.05,
            p_value_correction="holm",
        ),
    )
    engine = Engine(Config(streams=tuple(streams), alerts=rules), now=0.0, references=references)
    for name in HOSTILE_STREAMS:
        columns = {f: rng.normal(0.5, 1.0, 300) for f in HOSTILE_FEATURES}
        engine.ingest(name, 300, columns, 0.0)
    return engine


AWKWARD_VALUES = [
    math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    1e-300,
    5e-324,
    3.2e-5,
    1e-4,
    0.1 + 0.2,
    123456.75,
    1e6,
    1234567.0,
    2.5e15,
    1e16,
    1.7976931348623157e308,
    -2.5e7,
]


def awkward(evaluation: Evaluation) -> Evaluation:
    """``evaluation`` with NaN, ±Inf and numbers in every notation among its values."""
    values = {}
    for offset, (name, array) in enumerate(evaluation.values.items()):
        changed = np.array(array, dtype=np.float64)
        for i in range(changed.shape[0]):
            changed[i] = AWKWARD_VALUES[(i + offset) % len(AWKWARD_VALUES)]
        values[name] = changed
    samples = np.array(evaluation.window_samples, dtype=np.float64)
    samples[:4] = [2_000_000.0, 12345678901.0, 0.0, math.nan]  # NaN: still a series
    return dataclasses.replace(evaluation, values=values, window_samples=samples)


def status_of(engine: Engine, evaluation: Evaluation | None) -> Status:
    names = engine.stream_names()
    return Status(
        evaluation=evaluation,
        stream_rows={s: engine.stream_rows(s) for s in names},
        value_kinds=engine.value_kinds(),
        unknown_fields={s: 3 for s in names},
        requests_by_code={200: 7, 503: 1},
        evaluation_durations=DurationHistogram(),
        queue_rows=5,
        queue_capacity_rows=1000,
        config_reload_ok=True,
        checkpoint_last_success_s=1.7e9 + 0.25,
        warmup={"plain": (3, 10)},
        dropped_events={"no_stream": 2},
        files_moved_aside={"checkpoint": 0},
    )


@pytest.mark.parametrize("slice_series", [16_384, 4])
def test_the_fast_renderer_writes_what_generate_latest_writes(
    slice_series: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter, "SLICE_SERIES", slice_series)  # 4: slices cut families
    engine = hostile_engine()
    evaluation = engine.evaluate(1.0)
    for shown in (evaluation, awkward(evaluation), None):
        status = status_of(engine, shown)
        expected = generate_latest(new_registry(lambda status=status: status))
        assert b"".join(render_text(status)) == expected
        plain = render_scrape(status, None, gzip=False)
        assert plain.content_type.startswith("text/plain; version=0.0.4")
        assert b"".join(plain.chunks) == expected
        zipped = render_scrape(status, "text/plain", gzip=True)
        assert zipped.content_encoding == "gzip"
        assert gzip.decompress(b"".join(zipped.chunks)) == expected
    # The hostile names are in there, escaped, and the output parses back to them.
    samples = parse_metrics(expected.decode())
    assert any(("stream", HOSTILE_STREAMS[0]) in labels for _, labels in samples)


# What Prometheus 2.42 sends (scrape/scrape.go acceptHeader), then narrower asks.
OPENMETRICS_ACCEPTS = [
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
]


@pytest.mark.parametrize("accept", OPENMETRICS_ACCEPTS)
def test_openmetrics_and_text_1_0_are_written_as_prometheus_client_writes_them(
    accept: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter, "SLICE_SERIES", 4)
    engine = hostile_engine()
    evaluation = engine.evaluate(1.0)
    encoder, content_type = choose_encoder(accept)
    for shown in (evaluation, awkward(evaluation), None):
        status = status_of(engine, shown)
        expected = encoder(new_registry(lambda status=status: status))
        assert b"".join(render_text(status, accept)) == expected
        zipped = render_scrape(status, accept, gzip=True)
        assert zipped.content_type == content_type
        assert gzip.decompress(b"".join(zipped.chunks)) == expected


def naive_families(status: Status) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """The per-monitor families as a plain loop over monitors builds them (the old collector)."""
    evaluation = status.evaluation
    assert evaluation is not None
    found: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    for name, metric, _text in DIVERGENCE_FAMILIES:
        found[metric] = [
            ((m.stream, m.feature), float(evaluation.values[name][m.index]))
            for m in evaluation.monitors
            if not math.isnan(float(evaluation.values[name][m.index]))
        ]
    found["driftmon_entropy"] = [
        ((m.stream, m.feature, window), float(evaluation.values[key][m.index]))
        for m in evaluation.monitors
        for window, key in (("reference", "entropy_reference"), ("live", "entropy_live"))
        if not math.isnan(float(evaluation.values[key][m.index]))
    ]
    found["driftmon_window_samples"] = [
        ((m.stream, m.feature), float(evaluation.window_samples[m.index]))
        for m in evaluation.monitors
    ]
    found["driftmon_alert_firing"] = [
        (
            (
                evaluation.monitors[pair.monitor].stream,
                evaluation.monitors[pair.monitor].feature,
                pair.rule.name,
                pair.rule.severity,
            ),
            1.0 if state == 2 else 0.0,
        )
        for pair, state in zip(evaluation.alert_pairs, evaluation.alerts.state, strict=True)
    ]
    found["driftmon_ingest_values"] = [
        ((stream, feature, kind), float(count))
        for stream, feature, kinds in status.value_kinds
        for kind, count in kinds.items()
    ]
    return found


def test_the_columns_expand_to_what_a_loop_over_monitors_builds() -> None:
    engine = hostile_engine()
    status = status_of(engine, awkward(engine.evaluate(1.0)))
    built = {family.name: family for family in new_registry(lambda: status).collect()}
    for name, series in naive_families(status).items():
        family = built[name]
        assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
        got = [
            (tuple(sample.labels.values()), sample.value)
            for sample in family.samples
            if not sample.name.endswith("_created")
        ]
        assert len(got) == len(series), name
        for (labels, value), (want_labels, want_value) in zip(got, series, strict=True):
            assert labels == want_labels, name
            assert value == want_value or (math.isnan(value) and math.isnan(want_value)), name


def test_bulk_floats_match_float_to_go_string() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            np.array(AWKWARD_VALUES),
            rng.uniform(0.0, 1.0, 20_000),
            10.0 ** rng.uniform(-320.0, 308.0, 20_000),
            -(10.0 ** rng.uniform(-10.0, 20.0, 5_000)),
            rng.integers(0, 10**9, 5_000).astype(np.float64),
        ]
    )
    assert exporter._go_floats(values) == [floatToGoString(v) for v in values.tolist()]


def test_a_real_daemon_gzips_for_scrapers_that_accept_it_and_speaks_openmetrics(
    tmp_path: Path,
) -> None:
    (tmp_path / "driftmon.yaml").write_text(
        "server: {listen: 127.0.0.1:0}\n"
        "engine: {evaluate_every: 1h}\n"
        "streams:\n"
        "  - name: s\n"
        "    reference: {warmup: 10}\n"
        "    features: [{name: x, type: categorical, categories: [a, b]}]\n"
    )
    with DaemonProcess(tmp_path / "driftmon.yaml") as daemon:

        def get(headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
            request = urllib.request.Request(daemon.url + "/metrics", headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                return dict(response.headers), response.read()

        plain_headers, plain = get({"Accept-Encoding": "identity"})
        zipped_headers, zipped = get({"Accept-Encoding": "gzip"})
        refused_headers, refused = get({"Accept-Encoding": "gzip;q=0, identity"})
        assert "Content-Encoding" not in plain_headers
        assert zipped_headers["Content-Encoding"] == "gzip"
        assert zipped_headers["Vary"] == "Accept-Encoding"
        assert int(zipped_headers["Content-Length"]) == len(zipped)
        assert "Content-Encoding" not in refused_headers
        assert plain_headers["Content-Type"].startswith("text/plain; version=0.0.4")
        # Same series either way (values of the daemon's own counters may move between scrapes).
        assert (
            parse_metrics(gzip.decompress(zipped).decode()).keys()
            == parse_metrics(plain.decode()).keys()
        )
        assert parse_metrics(refused.decode()).keys() == parse_metrics(plain.decode()).keys()
        om_headers, om = get(
            {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
        )
        assert om_headers["Content-Type"].startswith("application/openmetrics-text")
        assert gzip.decompress(om).endswith(b"# EOF\n")
        assert daemon.stop() == 0


def test_concurrent_scrapes_share_one_rendering_and_healthy_answers_meanwhile() -> None:
    engine = hostile_engine()
    status = status_of(engine, engine.evaluate(1.0))
    release = threading.Event()
    asked = threading.Event()

    def held_status() -> Status:
        asked.set()
        assert release.wait(60.0)
        return status

    scrapes = SharedScrapes(held_status)

    async def main() -> None:
        config = parse_config(CONFIG, base_dir=Path("."))
        app = make_app(FakeGate(), dataclasses.replace(views([], config), scrape=scrapes.scrape))
        async with TestClient(TestServer(app)) as client:
            pending = [
                asyncio.ensure_future(client.get("/metrics", headers={"Accept-Encoding": "gzip"}))
                for _ in range(5)
            ]
            await asyncio.to_thread(asked.wait, 60.0)
            # The rendering is held in its thread: the loop still answers.
            for _ in range(3):
                healthy = await client.get("/-/healthy")
                assert healthy.status == 200
            assert not any(task.done() for task in pending)
            release.set()
            responses = await asyncio.gather(*pending)
            bodies = [await response.read() for response in responses]
            assert {response.status for response in responses} == {200}
            assert len(set(bodies)) == 1
            assert scrapes.renders == 1
            # A later scrape renders anew.
            again = await client.get("/metrics")
            assert again.status == 200
            assert scrapes.renders == 2

    asyncio.run(main())


def test_a_scrape_read_slowly_does_not_hold_a_stop_past_the_grace() -> None:
    """A scraper that stops reading a big body holds its handler in write(); a stop cuts
    it off after server.shutdown_grace instead of aiohttp's 60 s."""
    body = Scrape(tuple(bytes(1 << 20) for _ in range(64)), "text/plain; version=0.0.4", None)
    served = threading.Event()

    async def scrape(accept: str | None, gzip: bool) -> Scrape:
        served.set()
        return body

    async def main() -> None:
        config = parse_config(CONFIG, base_dir=Path("."))
        app = make_app(FakeGate(), dataclasses.replace(views([], config), scrape=scrape))
        listener = HttpListener(app, "127.0.0.1", 0, shutdown_grace_s=0.5)
        url = await listener.start()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            await asyncio.to_thread(reader.connect, (host, int(port)))
            reader.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.to_thread(served.wait, 30.0)
            await asyncio.wait_for(listener.stop(), 30.0)  # never read: 60 s before the grace
        finally:
            reader.close()

    asyncio.run(main())


def test_head_metrics_sends_the_headers_only_and_the_connection_stays_usable() -> None:
    body = Scrape((b"x 1\n" * 100_000,), "text/plain; version=0.0.4", None)

    async def scrape(accept: str | None, gzip: bool) -> Scrape:
        return body

    async def main() -> None:
        config = parse_config(CONFIG, base_dir=Path("."))
        app = make_app(FakeGate(), dataclasses.replace(views([], config), scrape=scrape))
        async with TestClient(TestServer(app)) as client:
            head = await client.head("/metrics")
            assert head.status == 200
            assert head.headers["Content-Length"] == str(len(body.chunks[0]))
            assert await head.read() == b""
            after = await client.get("/metrics")  # the same keep-alive connection
            assert after.status == 200
            assert await after.read() == body.chunks[0]

    asyncio.run(main())
