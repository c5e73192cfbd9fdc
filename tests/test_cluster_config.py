"""The ``cluster:`` config section: defaults, values, path-named errors, shared-mode limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftmon.cli import main
from driftmon.config import ClusterConfig, ConfigError, parse_config


def _doc(cluster: object, **stream: object) -> dict[str, object]:
    features = [{"name": "x", "type": "numeric", "bins": {"kind": "uniform", "lo": 0, "hi": 1,
                                                          "count": 4}}]
    one = {"name": "s", "reference": {"warmup": 10}, "features": features, **stream}
    one.setdefault("reference", {"warmup": 10})
    doc: dict[str, object] = {"streams": [one]}
    if cluster is not None:
        doc["cluster"] = cluster
    return doc


def _errors(doc: dict[str, object], base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc, base_dir=base_dir)
    return caught.value.errors


def test_cluster_is_off_by_default(tmp_path: Path) -> None:
    config = parse_config(_doc(None), base_dir=tmp_path)
    assert config.cluster == ClusterConfig()
    assert not config.cluster.shared


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "redis.pw").write_text("secret\n")
    doc = _doc(
        {
            "mode": "shared",
            "redis": {
                "url": "redis://10.0.0.5:6380/2",
                "password_file": "redis.pw",
                "key_prefix": "dm-prod",
                "cluster": True,
            },
            "replica_id": "pod-1",
            "flush_every": "50ms",
            "lease_ttl": "4s",
            "max_clock_skew": "250ms",
            "ack_timeout": "3s",
            "idempotency_ttl": "2h",
        },
        window={"length": "10m", "panes": 10},
    )
    doc["streams"][0]["reference"] = {"snapshot": "ref.npz"}  # type: ignore[index]
    config = parse_config(doc, base_dir=tmp_path, snapshots_must_exist=False)
    cluster = config.cluster
    assert cluster.shared
    assert cluster.redis.url == "redis://10.0.0.5:6380/2"
    assert cluster.redis.password_file == (tmp_path / "redis.pw").resolve()
    assert cluster.redis.key_prefix == "dm-prod"
    assert cluster.redis.cluster
    assert cluster.replica_id == "pod-1"
    assert (cluster.flush_every_s, cluster.lease_ttl_s, cluster.max_clock_skew_s) == (
        0.05,
        4.0,
        0.25,
    )
    assert (cluster.ack_timeout_s, cluster.idempotency_ttl_s) == (3.0, 7200.0)


def test_bad_values_are_named_by_path(tmp_path: Path) -> None:
    doc = _doc(
        {
            "mode": "sharded",
            "redis": {"url": "http://x", "password_file": "missing.pw", "key_prefx": "a"},
            "replica_id": "has space",
            "flush_every": "0s",
            "lease_ttl": "soon",
            "max_clock_skew": -1,
        }
    )
    errors = "\n".join(_errors(doc, tmp_path))
    assert 'cluster.mode: unknown mode "sharded" (did you mean "shared"?)' in errors
    assert "cluster.redis.url: expected a Redis URL" in errors
    assert "cluster.redis.password_file: no such file" in errors
    assert 'cluster.redis.key_prefx: unknown key (did you mean "key_prefix"?)' in errors
    assert "cluster.replica_id: may hold only" in errors
    assert "cluster.flush_every: must be > 0" in errors
    assert "cluster.lease_ttl: " in errors
    assert "cluster.max_clock_skew: must be >= 0, got -1" in errors


def test_flush_every_must_be_shorter_than_ack_timeout(tmp_path: Path) -> None:
    doc = _doc({"flush_every": "20s"}, reference={"file": "r.csv"})
    (tmp_path / "r.csv").write_text("x\n0.5\n")
    errors = _errors(doc, tmp_path)
    assert errors == [
        "cluster.flush_every: must be shorter than ack_timeout (10s), got 20s"
    ]


def test_shared_mode_refuses_samples_windows_and_warmups(tmp_path: Path) -> None:
    doc = _doc({"mode": "shared"}, window={"samples": 500})
    errors = _errors(doc, tmp_path)
    assert errors == [
        "streams[0].window: {samples: 500} windows need one global order of rows and are not "
        "supported with cluster.mode: shared; use {length, panes}",
        "streams[0].reference.warmup: warmup references need one global order of rows and are "
        "not supported with cluster.mode: shared; build a snapshot (driftmon reference build) "
        "or use a file",
    ]


def test_a_samples_window_inherited_from_defaults_is_reported_there_once(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("x\n0.5\n")
    doc = _doc({"mode": "shared"}, reference={"file": "r.csv"})
    streams = doc["streams"]
    assert isinstance(streams, list)
    streams.append({**streams[0], "name": "t"})
    doc["defaults"] = {"window": {"samples": 100}}
    assert _errors(doc, tmp_path) == [
        "defaults.window: {samples: 100} windows need one global order of rows and are not "
        "supported with cluster.mode: shared; use {length, panes}"
    ]


def test_the_same_streams_pass_when_cluster_is_off(tmp_path: Path) -> None:
    config = parse_config(_doc({"mode": "off"}, window={"samples": 500}), base_dir=tmp_path)
    assert config.cluster.mode == "off"


def test_driftmon_check_reports_cluster_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_doc({"mode": "shared", "lease_ttl": "100ms"})))
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert "cluster.lease_ttl: must be >= 300ms" in err
    assert "streams[0].reference.warmup: warmup references" in err
