"""The config loader (docs/configuration.md): typed results, and every error with its path."""

from __future__ import annotations

import copy
import filecmp
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftmon.config import (
    MAX_BINS,
    AlertRule,
    CloudEventsMapping,
    Config,
    ConfigError,
    EdgesBins,
    FeatureConfig,
    IngestConfig,
    QuantileBins,
    ReferenceConfig,
    SampleWindow,
    TimeWindow,
    UniformBins,
    describe,
    load_config,
    match_monitors,
    parse_config,
    parse_duration,
    parse_size,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "config"


# --- helpers -----------------------------------------------------------------


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """A config folder holding the reference files the documents below name."""
    (tmp_path / "ref.csv").write_text("x,c\n1,a\n", encoding="utf-8")
    (tmp_path / "ref.ndjson").write_text('{"x": 1}\n', encoding="utf-8")
    (tmp_path / "ref.txt").write_text("x\n1\n", encoding="utf-8")
    (tmp_path / "ref.snap").write_bytes(b"\x00")
    (tmp_path / "token").write_text("secret\n", encoding="utf-8")
    (tmp_path / "a-folder").mkdir()
    return tmp_path


def valid_document() -> dict[str, Any]:
    """A small valid document using every section; tests change one thing in a copy."""
    return {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": "1MiB", "shutdown_grace": "1500ms"},
        "ingest": {"workers": 2, "queue_rows": 1000},
        "engine": {"evaluate_every": "5s", "log_base": "e"},
        "state": {"dir": "state", "checkpoint_every": "1m"},
        "defaults": {"window": {"length": "1m", "panes": 6}, "smoothing": 0.25},
        "streams": [
            {
                "name": "credit",
                "reference": {"file": "ref.csv"},
                "features": [
                    {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 4}},
                    {"name": "c", "type": "categorical", "categories": ["a", "b"]},
                ],
            },
            {
                "name": "churn",
                "reference": {"warmup": 100},
                "window": {"samples": 50},
                "features": [
                    {
                        "name": "score",
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 10},
                    }
                ],
            },
        ],
        "alerts": [{"name": "js-high", "metric": "js", "threshold": 0.1}],
    }


def errors_of(document: object, base_dir: Path) -> list[str]:
    """The errors ``parse_config`` reports; fails the test when it accepts the document."""
    with pytest.raises(ConfigError) as caught:
        parse_config(document, base_dir=base_dir)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def changed(path: str, value: object) -> dict[str, Any]:
    """``valid_document()`` with the value at a dotted/indexed path replaced (or removed)."""
    document = valid_document()
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = document
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is _REMOVE:
        del node[key]
    elif isinstance(node, list) and key == len(node):
        node.append(value)
    else:
        node[key] = value
    return document


_REMOVE = object()


# --- durations and sizes -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("0", 0.0),
        ("90", 90.0),
        (" 15s ", 15.0),
        (15, 15.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration_reads_seconds(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("15x", 'expected a duration like "15s", got "15x"'),
        ("", 'expected a duration like "15s", got ""'),
        ("30m1h", 'expected a duration like "15s", got "30m1h"'),
        ("1m1m", 'expected a duration like "15s", got "1m1m"'),
        ("-5s", 'expected a duration like "15s", got "-5s"'),
        ("5 s", 'expected a duration like "15s", got "5 s"'),
        ("s", 'expected a duration like "15s", got "s"'),
        (-5, "must be >= 0, got -5"),
        (math.inf, "must be a finite duration, got inf"),
        (math.nan, "must be a finite duration, got nan"),
        (10**400, "must be a finite duration, got a very large integer"),
        ("9" * 400 + "s", "must be a finite duration, got"),
        (True, 'expected a duration like "15s", got true'),
        ([1, 2], 'expected a duration like "15s", got [1, 2]'),
    ],
)
def test_parse_duration_rejects_with_a_message(text: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512KiB", 512 * 1024),
        ("16MiB", 16 * 1024**2),
        ("1GiB", 1024**3),
        ("2TiB", 2 * 1024**4),
        ("1000", 1000),
        ("1000B", 1000),
        ("16 MiB", 16 * 1024**2),
        ("1kB", 1000),
        ("1KB", 1000),
        ("16MB", 16_000_000),
        ("1GB", 10**9),
        ("1TB", 10**12),
        ("1.5KiB", 1536),
        ("1.1MB", 1_100_000),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size_reads_bytes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("16 megs", 'unknown size unit "megs"'),
        ("16mib", 'unknown size unit "mib" (did you mean "MiB"?)'),
        ("MiB", 'expected a size like "16MiB", got "MiB"'),
        ("-1KiB", 'expected a size like "16MiB", got "-1KiB"'),
        ("1.5B", 'is not a whole number of bytes: "1.5B"'),
        (-1, "must be >= 0, got -1"),
        (1.5, 'expected a size like "16MiB", got 1.5'),
        (True, 'expected a size like "16MiB", got true'),
        (None, 'expected a size like "16MiB", got null'),
    ],
)
def test_parse_size_rejects_with_a_message(text: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(text)
    assert str(caught.value).startswith(message)


# --- what a valid document turns into ----------------------------------------


def test_valid_document_parses_into_typed_objects(base_dir: Path) -> None:
    config = parse_config(valid_document(), base_dir=base_dir, source=base_dir / "c.yaml")
    assert config.source == base_dir / "c.yaml"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 0)
    assert config.server.max_body_bytes == 1024**2
    assert config.server.shutdown_grace_s == 1.5
    assert config.server.auth_token_file is None
    assert config.ingest == IngestConfig(workers=2, queue_rows=1000, cloudevents_root=False)
    assert (config.engine.evaluate_every_s, config.engine.log_base) == (5.0, "e")
    assert config.state.dir == (base_dir / "state").resolve()
    assert config.state.checkpoint_every_s == 60.0
    credit, churn = config.streams
    assert credit.reference == ReferenceConfig(
        kind="file", path=(base_dir / "ref.csv").resolve(), format="csv"
    )
    assert credit.window == TimeWindow(length_s=60.0, panes=6)
    assert credit.window.pane_width_s == 10.0
    assert credit.features == (
        FeatureConfig(name="x", type="numeric", smoothing=0.25, bins=QuantileBins(count=4)),
        FeatureConfig(name="c", type="categorical", smoothing=0.25, categories=("a", "b")),
    )
    assert churn.reference == ReferenceConfig(kind="warmup", warmup_rows=100)
    assert churn.window == SampleWindow(samples=50)
    assert churn.features[0].bins == UniformBins(lo=0.0, hi=1.0, count=10)
    assert config.alerts == (
        AlertRule(
            name="js-high", stream_pattern="*", feature_pattern="*", metric="js", threshold=0.1
        ),
    )
    assert config.stream("churn") is churn


def test_minimal_document_takes_every_default(base_dir: Path) -> None:
    document = {
        "streams": [
            {
                "name": "s",
                "reference": {"warmup": 10},
                "features": [{"name": "f", "type": "categorical", "top_k": 3}],
            }
        ]
    }
    config = parse_config(document, base_dir=base_dir)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9108)
    assert config.server.max_body_bytes == 16 * 1024**2
    assert config.server.shutdown_grace_s == 5.0
    assert config.ingest.workers == 0  # 0: the core count
    assert config.ingest.worker_count >= 1
    assert config.ingest.queue_rows == 1_000_000
    assert config.ingest.cloudevents_root is False
    assert config.ingest.processes == 0  # parse in the workers
    assert (config.engine.evaluate_every_s, config.engine.log_base) == (15.0, "e")
    assert config.state.dir is None
    assert config.state.checkpoint_every_s == 60.0
    assert config.alerts == ()
    assert config.source is None
    (stream,) = config.streams
    assert stream.window == TimeWindow(length_s=900.0, panes=15)
    assert stream.time_field is None and stream.cloudevents is None
    assert stream.features == (FeatureConfig(name="f", type="categorical", smoothing=0.5, top_k=3),)


def test_parse_processes_are_read(base_dir: Path) -> None:
    config = parse_config(changed("ingest.processes", 2), base_dir=base_dir)
    assert config.ingest.processes == 2
    assert parse_config(changed("ingest.processes", 0), base_dir=base_dir).ingest.processes == 0


def test_worker_count_is_the_configured_number_when_set() -> None:
    assert IngestConfig(workers=3).worker_count == 3


def test_null_means_the_same_as_leaving_a_key_out(base_dir: Path) -> None:
    document = valid_document()
    document["server"]["auth_token_file"] = None
    document["streams"][0]["time_field"] = None
    document["engine"] = None
    document["alerts"] = None
    config = parse_config(document, base_dir=base_dir)
    assert config.server.auth_token_file is None
    assert config.streams[0].time_field is None
    assert config.engine.evaluate_every_s == 15.0
    assert config.alerts == ()


def test_smoothing_resolves_feature_then_stream_then_defaults(base_dir: Path) -> None:
    document = valid_document()
    document["streams"][0]["smoothing"] = 1.0
    document["streams"][0]["features"][1]["smoothing"] = 0
    config = parse_config(document, base_dir=base_dir)
    assert [f.smoothing for f in config.streams[0].features] == [1.0, 0.0]
    assert [f.smoothing for f in config.streams[1].features] == [0.25]


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9108", "127.0.0.1", 9108),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[::1]:9108", "::1", 9108),
        ("[::]:65535", "::", 65535),
        ("localhost:80", "localhost", 80),
        ("metrics.internal.example:9108", "metrics.internal.example", 9108),
    ],
)
def test_listen_addresses(base_dir: Path, listen: str, host: str, port: int) -> None:
    config = parse_config(changed("server.listen", listen), base_dir=base_dir)
    assert (config.server.host, config.server.port) == (host, port)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("x", 'expected "host:port" like "127.0.0.1:9108" or "[::1]:9108", got "x"'),
        (9108, 'expected "host:port" like "127.0.0.1:9108" or "[::1]:9108", got 9108'),
        ("::1:9108", 'IPv6 addresses go in brackets, like "[::1]:9108", got "::1:9108"'),
        ("[nope]:9108", 'not an IPv6 address in brackets: "[nope]:9108"'),
        ("host:65536", 'the port must be a number from 0 to 65535, got "65536"'),
        ("host:-1", 'the port must be a number from 0 to 65535, got "-1"'),
        ("host:", 'the port must be a number from 0 to 65535, got ""'),
        ("bad host:1", 'not a host name or address: "bad host"'),
        (
            ":9108",
            'the host is empty: write "0.0.0.0:PORT" for every IPv4 interface or '
            '"[::]:PORT" for every IPv6 one, got ":9108"',
        ),
    ],
)
def test_bad_listen_addresses(base_dir: Path, listen: object, message: str) -> None:
    assert errors_of(changed("server.listen", listen), base_dir) == [f"server.listen: {message}"]


@pytest.mark.parametrize("log_base", [2, "2"])
def test_log_base_two_is_accepted_as_int_or_string(base_dir: Path, log_base: object) -> None:
    config = parse_config(changed("engine.log_base", log_base), base_dir=base_dir)
    assert config.engine.log_base == "2"


def test_relative_paths_resolve_against_the_config_folder(base_dir: Path) -> None:
    document = valid_document()
    document["server"]["auth_token_file"] = "token"
    document["streams"][0]["reference"] = {"file": "ref.ndjson"}
    document["streams"][1]["reference"] = {"snapshot": str(base_dir / "ref.snap")}
    document["state"]["dir"] = "../elsewhere/state"
    config = parse_config(document, base_dir=base_dir)
    assert config.server.auth_token_file == (base_dir / "token").resolve()
    assert config.streams[0].reference == ReferenceConfig(
        kind="file", path=(base_dir / "ref.ndjson").resolve(), format="ndjson"
    )
    assert config.streams[1].reference == ReferenceConfig(
        kind="snapshot", path=(base_dir / "ref.snap").resolve()
    )
    assert config.state.dir == (base_dir.parent / "elsewhere" / "state").resolve()


def test_the_daemon_may_start_without_a_snapshot_file_but_not_without_a_reference_file(
    base_dir: Path,
) -> None:
    # A snapshot is state the daemon itself moves aside when it is unusable; the next
    # start must not then fail on the config. `driftmon check` (the default) still says so.
    document = changed("streams[0].reference", {"snapshot": "gone.snap"})
    config = parse_config(document, base_dir=base_dir, snapshots_must_exist=False)
    assert config.streams[0].reference == ReferenceConfig(
        kind="snapshot", path=(base_dir / "gone.snap").resolve()
    )
    assert errors_of(document, base_dir) == [
        f"streams[0].reference.snapshot: no such file: {base_dir.resolve()}/gone.snap"
    ]
    document = changed("streams[0].reference", {"file": "gone.csv"})
    with pytest.raises(ConfigError) as caught:
        parse_config(document, base_dir=base_dir, snapshots_must_exist=False)
    assert caught.value.errors == [
        f"streams[0].reference.file: no such file: {base_dir.resolve()}/gone.csv"
    ]


def test_reference_format_can_be_named_for_any_suffix(base_dir: Path) -> None:
    document = changed("streams[0].reference", {"file": "ref.txt", "format": "csv"})
    config = parse_config(document, base_dir=base_dir)
    assert config.streams[0].reference.format == "csv"


def test_edges_bins_and_integer_coded_categories(base_dir: Path) -> None:
    document = valid_document()
    document["streams"][0]["features"] = [
        {"name": "x", "type": "numeric", "bins": {"kind": "edges", "edges": [0, 0.5, 2]}},
        {"name": "code", "type": "categorical", "categories": [1, 2, "3"]},
    ]
    config = parse_config(document, base_dir=base_dir)
    x, code = config.streams[0].features
    assert x.bins == EdgesBins(edges=(0.0, 0.5, 2.0))
    assert code.categories == ("1", "2", "3")


def test_cloudevents_mapping_and_root(base_dir: Path) -> None:
    document = valid_document()
    document["ingest"]["cloudevents"] = {"root": True}
    document["streams"][0]["cloudevents"] = {
        "service": "income-model",
        "namespace": "prod",
        "inputs": ["x"],
        "outputs": ["c"],
    }
    config = parse_config(document, base_dir=base_dir)
    assert config.ingest.cloudevents_root is True
    assert config.streams[0].cloudevents == CloudEventsMapping(
        service="income-model", namespace="prod", inputs=("x",), outputs=("c",)
    )


def test_alert_rule_fields(base_dir: Path) -> None:
    rule = {
        "name": "psi-significant",
        "match": {"stream": "cred*", "feature": "x"},
        "metric": "psi",
        "threshold": 0.2,
        "for": "5m",
        "clear_below": 0.15,
        "min_samples": 500,
        "max_p_value": 0.001,
        "p_value_correction": "holm",
        "keep_firing_for": "10m",
        "severity": "critical",
    }
    config = parse_config(changed("alerts", [rule]), base_dir=base_dir)
    assert config.alerts == (
        AlertRule(
            name="psi-significant",
            stream_pattern="cred*",
            feature_pattern="x",
            metric="psi",
            threshold=0.2,
            for_s=300.0,
            clear_below=0.15,
            min_samples=500,
            max_p_value=0.001,
            keep_firing_for_s=600.0,
            severity="critical",
            p_value_correction="holm",
        ),
    )
    assert config.alerts[0].clear_threshold == 0.15
    # Without the key a rule keeps the uncorrected p-values it always had.
    del rule["p_value_correction"]
    config = parse_config(changed("alerts", [rule]), base_dir=base_dir)
    assert config.alerts[0].p_value_correction == "none"


def test_match_monitors_and_describe(base_dir: Path) -> None:
    rules = [
        {"name": "all", "metric": "js", "threshold": 0.1},
        {"name": "credit", "match": {"stream": "credit"}, "metric": "kl", "threshold": 1},
        {"name": "s-features", "match": {"feature": "[sx]*"}, "metric": "psi", "threshold": 1},
        {"name": "case", "match": {"stream": "C*", "feature": "*"}, "metric": "kl", "threshold": 1},
    ]
    document = changed("alerts", rules)
    document["streams"].append(
        {
            "name": "Cased",
            "reference": {"warmup": 1},
            "features": [{"name": "q", "type": "categorical", "top_k": 1}],
        }
    )
    config = parse_config(document, base_dir=base_dir)
    assert [match_monitors(rule, config) for rule in config.alerts] == [
        [("credit", "x"), ("credit", "c"), ("churn", "score"), ("Cased", "q")],
        [("credit", "x"), ("credit", "c")],
        [("credit", "x"), ("churn", "score")],
        [("Cased", "q")],
    ]
    assert describe(config) == "3 streams, 4 monitors, 4 alert rules"
    single = parse_config(
        {"streams": [valid_document()["streams"][1]], "alerts": [rules[0]]}, base_dir=base_dir
    )
    assert describe(single) == "1 stream, 1 monitor, 1 alert rule"
    assert describe(Config(streams=())) == "0 streams, 0 monitors, 0 alert rules"


# --- every kind of error, with its path ----------------------------------------

BAD_CASES: list[tuple[object, object, list[str]]] = [
    # (path in valid_document(), new value or _REMOVE, expected errors)
    (
        "streams[0].features[0].bins",
        {"kind": "uniform", "lo": 0, "hi": 5e-324, "count": 10},
        [
            "streams[0].features[0].bins: [lo, hi) = [0, 5e-324) cannot be cut into 10 bins "
            "in floating point"
        ],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "uniform", "lo": -1e308, "hi": 1e308, "count": 2},
        [
            "streams[0].features[0].bins: [lo, hi) = [-1e+308, 1e+308) cannot be cut into 2 "
            "bins in floating point"
        ],
    ),
    (
        "streams[0].features[0].name",
        "a\u2028b",
        [
            'streams[0].features[0].name: may not hold "/" or unprintable characters (it is '
            'part of URLs), got "a\\u2028b"'
        ],
    ),
    ("server.listne", "1", ['server.listne: unknown key (did you mean "listen"?)']),
    (
        "server.zzz",
        "1",
        [
            "server.zzz: unknown key (expected one of: listen, max_body_bytes, "
            "auth_token_file, external_url, header_timeout, body_timeout, keepalive_timeout, "
            "max_connections, shutdown_grace)"
        ],
    ),
    ("server.max_body_bytes", 0, ["server.max_body_bytes: must be > 0, got 0"]),
    (
        "server.shutdown_grace",
        "soon",
        ['server.shutdown_grace: expected a duration like "15s", got "soon"'],
    ),
    (
        "server.shutdown_grace",
        True,
        ['server.shutdown_grace: expected a duration like "15s", got true'],
    ),
    (
        "server.max_body_bytes",
        "16 megs",
        [
            'server.max_body_bytes: unknown size unit "megs" (expected one of: B, KiB, MiB, GiB, '
            "TiB, kB, KB, MB, GB, TB)"
        ],
    ),
    (
        "server.auth_token_file",
        "missing-token",
        ["server.auth_token_file: no such file: {base}/missing-token"],
    ),
    ("server.auth_token_file", "a-folder", ["server.auth_token_file: not a file: {base}/a-folder"]),
    ("server", [1], ["server: expected a mapping, got [1]"]),
    ("ingest.workers", 0, ["ingest.workers: must be > 0, got 0"]),
    ("ingest.workers", 1.5, ["ingest.workers: expected an integer, got 1.5"]),
    ("ingest.queue_rows", -1, ["ingest.queue_rows: must be > 0, got -1"]),
    ("ingest.processes", -1, ["ingest.processes: must be >= 0, got -1"]),
    ("ingest.processes", 65, ["ingest.processes: must be <= 64, got 65"]),
    ("ingest.processes", "2", ['ingest.processes: expected an integer, got "2"']),
    (
        "ingest.cloudevents",
        {"root": "yes"},
        ['ingest.cloudevents.root: expected true or false, got "yes"'],
    ),
    (
        "engine.evaluate_every",
        [1, 2],
        ['engine.evaluate_every: expected a duration like "15s", got [1, 2]'],
    ),
    ("engine.evaluate_every", "0s", ['engine.evaluate_every: must be > 0, got "0s"']),
    (
        "engine.evaluate_every",
        "15x",
        ['engine.evaluate_every: expected a duration like "15s", got "15x"'],
    ),
    ("engine.log_base", 10, ['engine.log_base: must be "e" or 2, got 10']),
    ("state.checkpoint_every", -1, ["state.checkpoint_every: must be >= 0, got -1"]),
    ("state.dir", 3, ["state.dir: expected a file path, got 3"]),
    ("defaults.window", {"length": "1m"}, ["defaults.window.panes: missing required key"]),
    (
        "defaults.window",
        {"length": "1m", "panes": 0},
        ["defaults.window.panes: must be > 0, got 0"],
    ),
    (
        "defaults.window",
        {"length": "1m", "panes": MAX_BINS + 1},
        [f"defaults.window.panes: must be <= 100000, got {MAX_BINS + 1}"],
    ),
    ("defaults.window", {"length": 0, "panes": 3}, ["defaults.window.length: must be > 0, got 0"]),
    ("defaults.window", {}, ["defaults.window: expected {length: 15m, panes: 15} or {samples: N}"]),
    (
        "defaults.window",
        {"samples": 5, "panes": 3},
        ["defaults.window: expected either {length, panes} or {samples}, got both"],
    ),
    ("defaults.smoothing", -0.5, ["defaults.smoothing: must be >= 0, got -0.5"]),
    ("defaults.smoothing", ".nan", ['defaults.smoothing: expected a number, got ".nan"']),
    ("defaults.smoothing", math.nan, ["defaults.smoothing: expected a finite number, got nan"]),
    ("streams", [], ["streams: must list at least one stream"]),
    ("streams", _REMOVE, ["streams: missing required key"]),
    ("streams", {"name": "x"}, ['streams: expected a list, got {"name": "x"}']),
    ("streams[1].window", {"samples": 0}, ["streams[1].window.samples: must be > 0, got 0"]),
    (
        "streams[1].name",
        "credit",
        ['streams[1].name: duplicate stream name "credit" (first at streams[0])'],
    ),
    ("streams[1].name", None, ["streams[1].name: required, got null"]),
    (
        "streams[1].name",
        "a b",
        [
            'streams[1].name: may hold only letters, digits, "_", "." and "-" (it is part of '
            'URLs), got "a b"'
        ],
    ),
    ("streams[1].name", True, ["streams[1].name: expected a string, got true"]),
    ("streams[1].time_field", "", ["streams[1].time_field: must not be empty"]),
    ("streams[1].smoothing", "x", ['streams[1].smoothing: expected a number, got "x"']),
    ("streams[1].features", [], ["streams[1].features: must list at least one feature"]),
    (
        "streams[0].reference",
        {"file": "nope.csv"},
        ["streams[0].reference.file: no such file: {base}/nope.csv"],
    ),
    (
        "streams[0].reference",
        {"snapshot": "nope.snap"},
        ["streams[0].reference.snapshot: no such file: {base}/nope.snap"],
    ),
    (
        "streams[0].reference",
        {"file": "ref.txt"},
        [
            'streams[0].reference.file: cannot tell the format from the suffix ".txt": add '
            "format: parquet, arrow, csv, ndjson or json"
        ],
    ),
    (
        "streams[0].reference",
        {"file": "ref.csv", "format": "xml"},
        [
            'streams[0].reference.format: unknown format "xml" '
            "(expected one of: parquet, arrow, csv, ndjson, json)"
        ],
    ),
    (
        "streams[0].reference",
        {"warmup": 5, "format": "csv"},
        ["streams[0].reference.format: only with file, not with warmup"],
    ),
    (
        "streams[0].reference",
        {"file": "ref.csv", "warmup": 5},
        [
            "streams[0].reference: expected exactly one of file, warmup, snapshot, got file and "
            "warmup"
        ],
    ),
    (
        "streams[0].reference",
        {},
        ["streams[0].reference: expected exactly one of file, warmup, snapshot, got none"],
    ),
    ("streams[0].reference", {"warmup": 0}, ["streams[0].reference.warmup: must be > 0, got 0"]),
    ("streams[0].reference", _REMOVE, ["streams[0].reference: missing required key"]),
    (
        "streams[0].features[0].bins",
        {"kind": "quantile", "count": 0},
        ["streams[0].features[0].bins.count: must be > 0, got 0"],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "quantile", "count": MAX_BINS + 1},
        [f"streams[0].features[0].bins.count: must be <= {MAX_BINS}, got {MAX_BINS + 1}"],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "uniform", "lo": 1, "hi": 1, "count": 2},
        ["streams[0].features[0].bins.hi: must be > lo (1), got 1"],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "uniform", "lo": 0, "hi": math.inf, "count": 2},
        ["streams[0].features[0].bins.hi: expected a finite number, got inf"],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "uniform", "lo": 0, "count": 2},
        ["streams[0].features[0].bins.hi: missing required key"],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "edges", "edges": [0, 1, 1, 3]},
        [
            "streams[0].features[0].bins.edges[2]: edges must increase: must be > the previous "
            "edge (1), got 1"
        ],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "edges", "edges": [0]},
        ["streams[0].features[0].bins.edges: needs at least 2 edges (1 bin), got 1"],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "edges", "edges": [0, "a"]},
        ['streams[0].features[0].bins.edges[1]: expected a number, got "a"'],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "edges", "edges": [0, 1], "count": 3},
        ["streams[0].features[0].bins.count: unknown key (expected one of: kind, edges)"],
    ),
    (
        "streams[0].features[0].bins",
        {"kind": "uniformm", "count": 3},
        [
            'streams[0].features[0].bins.kind: unknown bins kind "uniformm" (did you mean '
            '"uniform"?)'
        ],
    ),
    (
        "streams[0].features[0].bins",
        {"count": 3},
        ["streams[0].features[0].bins.kind: missing required key (uniform, edges or quantile)"],
    ),
    ("streams[0].features[0].bins", _REMOVE, ["streams[0].features[0].bins: missing required key"]),
    (
        "streams[0].features[0].type",
        "numerc",
        ['streams[0].features[0].type: unknown type "numerc" (did you mean "numeric"?)'],
    ),
    (
        "streams[0].features[0].top_k",
        3,
        ["streams[0].features[0].top_k: only for categorical features"],
    ),
    (
        "streams[0].features[0].smoothing",
        -1,
        ["streams[0].features[0].smoothing: must be >= 0, got -1"],
    ),
    (
        "streams[0].features[0].name",
        "a/b",
        [
            'streams[0].features[0].name: may not hold "/" or unprintable characters (it is '
            'part of URLs), got "a/b"'
        ],
    ),
    (
        "streams[0].features[1].name",
        "x",
        [
            'streams[0].features[1].name: duplicate feature name "x" (first at '
            "streams[0].features[0])"
        ],
    ),
    (
        "streams[0].features[1].categories",
        ["a", "b", "a"],
        [
            'streams[0].features[1].categories[2]: duplicate category "a" (first at '
            "streams[0].features[1].categories[0])"
        ],
    ),
    (
        "streams[0].features[1].categories",
        [1, "1"],
        [
            'streams[0].features[1].categories[1]: duplicate category "1" (first at '
            "streams[0].features[1].categories[0])"
        ],
    ),
    (
        "streams[0].features[1].categories",
        ["a", False],
        [
            "streams[0].features[1].categories[1]: YAML reads an unquoted no, off and false as "
            "the boolean false: quote the category"
        ],
    ),
    (
        "streams[0].features[1].categories",
        ["a", 1.5],
        ["streams[0].features[1].categories[1]: expected a string or an integer, got 1.5"],
    ),
    (
        "streams[0].features[1].categories",
        [],
        ["streams[0].features[1].categories: must list at least one category"],
    ),
    (
        "streams[0].features[1].top_k",
        3,
        ["streams[0].features[1]: expected exactly one of categories, top_k, got both"],
    ),
    (
        "streams[0].features[1].categories",
        _REMOVE,
        ["streams[0].features[1]: a categorical feature needs categories: [...] or top_k: N"],
    ),
    (
        "streams[0].features[1].bins",
        {"kind": "quantile", "count": 2},
        ["streams[0].features[1].bins: only for numeric features"],
    ),
    (
        "streams[0].cloudevents",
        {"service": "m", "inputs": ["x", "y"]},
        ['streams[0].cloudevents.inputs[1]: no feature "y" in stream "credit"'],
    ),
    (
        "streams[0].cloudevents",
        {"service": "m", "inputs": ["xx"]},
        [
            'streams[0].cloudevents.inputs[0]: no feature "xx" in stream "credit" (did you mean '
            '"x"?)'
        ],
    ),
    (
        "streams[0].cloudevents",
        {"service": "m", "inputs": ["x"], "outputs": ["c", "x"]},
        ['streams[0].cloudevents.outputs[1]: "x" is already an input (inputs[0])'],
    ),
    (
        "streams[0].cloudevents",
        {"service": "m", "inputs": ["x", "x"]},
        [
            'streams[0].cloudevents.inputs[1]: "x" is listed twice (first at '
            "streams[0].cloudevents.inputs[0])"
        ],
    ),
    (
        "streams[0].cloudevents",
        {"service": "m"},
        ["streams[0].cloudevents: maps no feature: give inputs: [...] or outputs: [...]"],
    ),
    (
        "streams[0].cloudevents",
        {"inputs": ["x"]},
        ["streams[0].cloudevents.service: missing required key"],
    ),
    ("alerts[0].metric", "jss", ['alerts[0].metric: unknown metric "jss" (did you mean "js"?)']),
    (
        "alerts[0].metric",
        "entropy",
        [
            'alerts[0].metric: unknown metric "entropy" (expected one of: kl, kl_reverse, js, '
            "psi, hellinger, wasserstein)"
        ],
    ),
    ("alerts[0].clear_below", 0.2, ["alerts[0].clear_below: must be <= threshold (0.1), got 0.2"]),
    ("alerts[0].threshold", _REMOVE, ["alerts[0].threshold: missing required key"]),
    ("alerts[0].threshold", -0.1, ["alerts[0].threshold: must be >= 0, got -0.1"]),
    (
        "alerts[0].threshold",
        0.7,
        [
            "alerts[0].threshold: js never exceeds 0.693147 (log 2), so a rule on js > 0.7 can "
            "never fire"
        ],
    ),
    ("alerts[0].max_p_value", 0, ["alerts[0].max_p_value: must be in (0, 1], got 0"]),
    ("alerts[0].max_p_value", 1.5, ["alerts[0].max_p_value: must be in (0, 1], got 1.5"]),
    (
        "alerts[0].p_value_correction",
        "holmes",
        [
            'alerts[0].p_value_correction: unknown p_value_correction "holmes" '
            '(did you mean "holm"?)'
        ],
    ),
    (
        "alerts[0].p_value_correction",
        True,
        ["alerts[0].p_value_correction: expected one of none, bonferroni, holm, bh, got true"],
    ),
    (
        "alerts[0].p_value_correction",
        "bh",
        [
            "alerts[0].p_value_correction: bh corrects the p-values that max_p_value judges, "
            "and this rule has no max_p_value; add one (e.g. max_p_value: 0.01) or drop the key"
        ],
    ),
    (
        "alerts[0].for",
        "5 minutes",
        ['alerts[0].for: expected a duration like "15s", got "5 minutes"'],
    ),
    ("alerts[0].keep_firing_for", -1, ["alerts[0].keep_firing_for: must be >= 0, got -1"]),
    ("alerts[0].min_samples", -1, ["alerts[0].min_samples: must be >= 0, got -1"]),
    ("alerts[0].severity", "", ["alerts[0].severity: must not be empty"]),
    (
        "alerts[0].labels",
        {"team": "x"},
        [
            "alerts[0].labels: unknown key (expected one of: name, match, metric, threshold, "
            "for, clear_below, min_samples, max_p_value, p_value_correction, keep_firing_for, "
            "severity)"
        ],
    ),
    (
        "alerts[0].match",
        {"stream": "credti"},
        ['alerts[0].match: selects no monitor (stream "credti", feature "*")'],
    ),
    (
        "alerts[0].match",
        {"stream": "credit", "feature": "X"},
        ['alerts[0].match: selects no monitor (stream "credit", feature "X")'],
    ),
    (
        "alerts[0].match",
        {"streams": "credit"},
        ['alerts[0].match.streams: unknown key (did you mean "stream"?)'],
    ),
    ("alerts[0].match", "credit", ['alerts[0].match: expected a mapping, got "credit"']),
    ("alerts[0].name", 7, ["alerts[0].name: expected a string, got 7"]),
    (
        "alerts[0]",
        {"name": "w", "metric": "wasserstein", "threshold": 1, "match": {"feature": "c"}},
        [
            "alerts[0].match: wasserstein is defined for numeric features only, and this match "
            "selects only categorical ones (credit/c)"
        ],
    ),
    (
        "alerts[0]",
        {"name": "h", "metric": "hellinger", "threshold": 1},
        [
            "alerts[0].threshold: hellinger never exceeds 1, so a rule on hellinger > 1 can "
            "never fire"
        ],
    ),
    (
        "alerts[0]",
        {
            "name": "m",
            "metric": "kl",
            "threshold": 1,
            "match": {"stream": "churn"},
            "min_samples": 51,
        },
        [
            "alerts[0].min_samples: every window this rule selects holds at most 50 rows, so it "
            "could never reach 51"
        ],
    ),
    (
        "alerts[1]",
        {"name": "js-high", "metric": "kl", "threshold": 1},
        ['alerts[1].name: duplicate alert name "js-high" (first at alerts[0])'],
    ),
    ("alerts", {"name": "x"}, ['alerts: expected a list, got {"name": "x"}']),
    ("alertz", [], ['alertz: unknown key (did you mean "alerts"?)']),
    (
        7,
        "x",
        [
            "7: unknown key (expected one of: server, ingest, engine, state, defaults, streams, "
            "alerts, cluster)"
        ],
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"), BAD_CASES, ids=[str(c[0]) for c in BAD_CASES]
)
def test_each_error_is_reported_with_its_path(
    base_dir: Path, path: object, value: object, expected: list[str]
) -> None:
    document: Any
    if isinstance(path, str):
        document = changed(path, value)
    else:
        document = valid_document()
        document[path] = value
    base = str(base_dir.resolve())
    assert errors_of(document, base_dir) == [line.replace("{base}", base) for line in expected]


def test_js_ceiling_follows_the_log_base(base_dir: Path) -> None:
    document = changed("alerts[0].threshold", 0.9)
    document["engine"]["log_base"] = 2
    parse_config(document, base_dir=base_dir)  # 0.9 bits is below log2(2) = 1
    document["alerts"][0]["threshold"] = 1
    assert errors_of(document, base_dir) == [
        "alerts[0].threshold: js never exceeds 1 (log 2 in bits), so a rule on js > 1 "
        "can never fire"
    ]


def test_no_match_check_when_a_stream_name_is_unreadable(base_dir: Path) -> None:
    # With a stream's name unknown, "selects no monitor" could be a false alarm: say nothing.
    document = changed("streams[1].name", 5)
    document["alerts"][0]["match"] = {"stream": "churn"}
    assert errors_of(document, base_dir) == ["streams[1].name: expected a string, got 5"]


def test_two_streams_may_not_claim_the_same_cloudevents_service(base_dir: Path) -> None:
    document = valid_document()
    document["streams"][0]["cloudevents"] = {"service": "m", "inputs": ["x"]}
    document["streams"][1]["cloudevents"] = {"service": "m", "outputs": ["score"]}
    assert errors_of(document, base_dir) == [
        'streams[1].cloudevents.service: service "m" (namespace null) is already mapped by '
        "streams[0]"
    ]
    document["streams"][1]["cloudevents"]["namespace"] = "prod"
    parse_config(document, base_dir=base_dir)


def test_errors_are_all_collected_in_document_order(base_dir: Path) -> None:
    document = valid_document()
    document["server"]["listne"] = "x"
    document["engine"]["evaluate_every"] = [1, 2]
    document["streams"][0]["features"][0]["bins"]["count"] = 0
    document["alerts"][0]["clear_below"] = 0.2
    assert errors_of(document, base_dir) == [
        'server.listne: unknown key (did you mean "listen"?)',
        'engine.evaluate_every: expected a duration like "15s", got [1, 2]',
        "streams[0].features[0].bins.count: must be > 0, got 0",
        "alerts[0].clear_below: must be <= threshold (0.1), got 0.2",
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            None,
            "<file>: the document is empty: expected a mapping (server:, streams:, alerts:, ...)",
        ),
        ([1, 2], "<file>: expected a mapping (server:, streams:, alerts:, ...), got [1, 2]"),
        ("streams", '<file>: expected a mapping (server:, streams:, alerts:, ...), got "streams"'),
    ],
)
def test_top_level_must_be_a_mapping(base_dir: Path, document: object, message: str) -> None:
    assert errors_of(document, base_dir) == [message]


def test_awkward_keys_keep_paths_on_one_line(base_dir: Path) -> None:
    document = valid_document()
    document["server"]["two\nlines"] = 1
    document["server"][None] = 1
    assert errors_of(document, base_dir) == [
        'server."two\\nlines": unknown key (expected one of: listen, max_body_bytes, '
        "auth_token_file, external_url, header_timeout, body_timeout, keepalive_timeout, "
        "max_connections, shutdown_grace)",
        "server.null: unknown key (expected one of: listen, max_body_bytes, auth_token_file, "
        "external_url, header_timeout, body_timeout, keepalive_timeout, max_connections, "
        "shutdown_grace)",
    ]


# --- reading files -------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_reads_yaml_and_resolves_against_its_folder(base_dir: Path) -> None:
    path = write(base_dir, yaml.safe_dump(valid_document()))
    config = load_config(path)
    assert config == parse_config(valid_document(), base_dir=base_dir, source=path)
    assert config.source == path


def test_load_config_accepts_a_relative_path(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(base_dir, yaml.safe_dump(valid_document()))
    monkeypatch.chdir(base_dir)
    config = load_config("c.yaml")
    assert config.source == base_dir / "c.yaml"
    assert config.streams[0].reference.path == (base_dir / "ref.csv").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "server:\n  listen: [1\nstreams: 2\n",
            "<file>: line 3, column 8: expected ',' or ']', but got ':' (while parsing a flow "
            "sequence)",
        ),
        (
            "streams:\n\t- x\n",
            "<file>: line 2, column 1: found character '\\t' that cannot start any token (while "
            "scanning for the next token)",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "<file>: line 2, column 1: but found another document (expected a single document in "
            "the stream)",
        ),
        (
            "!!python/object/apply:os.system [echo hi]\n",
            "<file>: line 1, column 1: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        (
            "? [a, b]\n: 1\n",
            "<file>: line 1, column 3: found unhashable key (while constructing a mapping)",
        ),
        ("", "<file>: the document is empty: expected a mapping (server:, streams:, alerts:, ...)"),
        ("[" * 3000 + "]" * 3000, "<file>: the document is nested too deeply"),
        ("a: " + "9" * 5000, "<file>: cannot read the YAML: Exceeds the limit (4300 digits)"),
    ],
)
def test_load_config_reports_bad_yaml_as_one_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith(message)


def test_load_config_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.errors == [
        f"<file>: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.errors == [f"<file>: cannot read {tmp_path}: Is a directory"]


def test_duplicate_keys_are_errors_not_silently_overridden(base_dir: Path) -> None:
    text = yaml.safe_dump(valid_document(), sort_keys=False)
    text = text.replace("  max_body_bytes: 1MiB\n", "  max_body_bytes: 1MiB\n  listen: x\n", 1)
    text += "alerts: []\n"
    lines = text.splitlines()
    listen_lines = [i + 1 for i, line in enumerate(lines) if line.startswith("  listen:")]
    alert_lines = [i + 1 for i, line in enumerate(lines) if line.startswith("alerts:")]
    with pytest.raises(ConfigError) as caught:
        load_config(write(base_dir, text))
    assert caught.value.errors == [
        f"server.listen: duplicate key (first at line {listen_lines[0]}, "
        f"again at line {listen_lines[1]})",
        f"alerts: duplicate key (first at line {alert_lines[0]}, again at line {alert_lines[1]})",
        # YAML keeps the last value, which is also checked:
        'server.listen: expected "host:port" like "127.0.0.1:9108" or "[::1]:9108", got "x"',
    ]


def test_yaml_merge_keys_are_not_duplicates(base_dir: Path) -> None:
    text = """
streams:
  - name: s
    reference: {warmup: 5}
    features:
      - &numeric {name: z, type: numeric, bins: {kind: uniform, lo: 0, hi: 1, count: 4}}
      - {<<: *numeric, name: a}
      - {<<: *numeric, name: b, bins: {kind: quantile, count: 3}}
"""
    config = load_config(write(base_dir, text))
    z, a, b = config.streams[0].features
    assert (z.name, a.name, b.name) == ("z", "a", "b")
    assert z.bins == a.bins == UniformBins(lo=0.0, hi=1.0, count=4)
    assert b.bins == QuantileBins(count=3)


def test_recursive_yaml_aliases_are_errors_not_hangs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "streams: &s [*s]\n"))
    assert caught.value.errors == ["streams[0]: expected a mapping, got [[[[...]]]]"]


# --- the example configs and their data -------------------------------------------


def test_example_config_is_design_section_12() -> None:
    config = load_config(CONFIG_DIR / "example.yaml")
    # docs/configuration.md's js-high rule, plus the recommended p-value gated rule (Holm).
    assert describe(config) == "2 streams, 6 monitors, 2 alert rules"
    assert [(r.name, r.max_p_value, r.p_value_correction) for r in config.alerts] == [
        ("js-high", None, "none"),
        ("drift-significant", 0.01, "holm"),
    ]
    credit = config.stream("credit")
    assert credit.reference.path == CONFIG_DIR / "data" / "credit_reference.csv"
    assert credit.window == SampleWindow(samples=50000)
    assert [f.name for f in credit.features] == ["income", "age", "utilisation", "region"]
    assert config.stream("churn-model").window == TimeWindow(length_s=900.0, panes=15)
    assert config.state.dir == CONFIG_DIR / "state"
    assert config.alerts[0].for_s == 300.0


def test_demo_config_has_what_the_demo_needs() -> None:
    config = load_config(CONFIG_DIR / "demo.yaml")
    assert len(config.streams) == 2
    assert config.engine.evaluate_every_s == 5.0
    kinds = {stream.reference.kind for stream in config.streams}
    assert kinds == {"file", "warmup"}
    types = {feature.type for stream in config.streams for feature in stream.features}
    assert types == {"numeric", "categorical"}
    assert any(rule.max_p_value is not None for rule in config.alerts)
    for rule in config.alerts:
        assert match_monitors(rule, config)


def test_make_data_rewrites_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(CONFIG_DIR / "data" / "make_data.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["credit_reference.csv", "shop_reference.ndjson"]
    for name in written:
        assert filecmp.cmp(tmp_path / name, CONFIG_DIR / "data" / name, shallow=False), name


# --- fuzzing: whatever the input, only ConfigError comes out --------------------------

_SCHEMA_WORDS = sorted(
    {
        "server", "ingest", "engine", "state", "defaults", "streams", "alerts", "listen",
        "max_body_bytes", "auth_token_file", "workers", "queue_rows", "cloudevents", "root",
        "evaluate_every", "log_base", "dir", "checkpoint_every", "window", "smoothing",
        "length", "panes", "samples", "name", "time_field", "reference", "file", "warmup",
        "snapshot", "format", "features", "type", "bins", "kind", "lo", "hi", "count", "edges",
        "categories", "top_k", "service", "namespace", "inputs", "outputs", "match", "stream",
        "feature", "metric", "threshold", "for", "clear_below", "min_samples", "max_p_value",
        "keep_firing_for", "severity", "p_value_correction",
    }
)  # fmt: skip
_SCHEMA_VALUES = [
    "15s", "1h30m", "0s", "16MiB", "e", "2", "numeric", "categorical", "uniform", "edges",
    "quantile", "js", "wasserstein", "hellinger", "*", "127.0.0.1:0", "[::1]:1", "x.csv",
    "ref.csv", "ref.snap", "csv", "credit", "holm", "bh", "bonferroni", "none",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(_SCHEMA_VALUES)
)
keys = st.sampled_from(_SCHEMA_WORDS) | st.text(max_size=6) | st.integers(-3, 3) | st.none()
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config folder shared by every fuzz example (hypothesis reruns one test many times)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "ref.csv").write_text("x\n1\n", encoding="utf-8")
    (folder / "ref.snap").write_bytes(b"\x00")
    return folder


_ERROR_LINE = re.compile(r"[^\s:][^\n]*?: [^\n]+\Z")


def assert_only_config_errors(document: object, base_dir: Path) -> None:
    try:
        config = parse_config(document, base_dir=base_dir)
    except ConfigError as exc:
        assert exc.errors, "a ConfigError must list at least one error"
        for line in exc.errors:
            assert _ERROR_LINE.match(line), line
            assert line.splitlines() == [line]
    else:
        assert isinstance(config, Config)
        assert config.streams
        describe(config)
        for rule in config.alerts:
            assert match_monitors(rule, config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzz_random_documents_raise_only_config_errors(fuzz_dir: Path, document: object) -> None:
    assert_only_config_errors(document, fuzz_dir)


def _paths(node: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


_VALID_PATHS = [path for path in _paths(valid_document()) if path]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_VALID_PATHS), documents), min_size=1, max_size=3))
def test_fuzz_one_value_changed_in_a_valid_document(
    fuzz_dir: Path, changes: list[tuple[tuple[object, ...], object]]
) -> None:
    document: Any = copy.deepcopy(valid_document())
    for path, value in changes:
        node = document
        for step in path[:-1]:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                break
        else:
            try:
                node[path[-1]] = value
            except (IndexError, TypeError):
                pass
    assert_only_config_errors(document, fuzz_dir)


_YAML_TOKENS = [*"abs:-[]{},&*!|>'\"#%@`?.0129 \n\t\\", "streams", "name", "  ", "<<", "\n- "]
yaml_texts = st.lists(st.sampled_from(_YAML_TOKENS), max_size=40).map("".join)


@settings(max_examples=200, deadline=None)
@given(yaml_texts)
def test_fuzz_random_yaml_text_raises_only_config_errors(fuzz_dir: Path, text: str) -> None:
    path = fuzz_dir / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            assert _ERROR_LINE.match(line), line
