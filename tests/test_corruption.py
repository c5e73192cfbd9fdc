"""Corruption: damaged state files never crash the daemon nor run anything; user files stay.

A real daemon (subprocess, real HTTP) starts on a state folder whose checkpoint is damaged and
a config whose stream ``bad`` has a damaged reference snapshot, while stream ``good`` has a
sound one. Each kind of damage: truncated, zero-length, bit-flipped, another format version,
a foreign JSON file, a pickle whose unpickling would create a marker file, and a
well-formed archive holding such a pickle (for the checkpoint, inside a frame whose checksum
is right). The checkpoint is the daemon's own file: it is moved aside in its folder
(``.corrupt-`` and a timestamp, bytes unchanged), logged, counted in
``driftmon_state_files_moved_aside_total{kind="checkpoint"}``. The snapshot is the user's: it
is never renamed nor written; with no copy of its reference in a checkpoint the daemon refuses
to start (exit 1, naming the file) as it does for a ``file:`` reference. Nothing creates the
marker.

When the checkpoint kept a copy of the stream's reference from before the damage, the stream
carries on with it. ``tests/test_checkpoint.py``
covers the checkpoint module itself; this is the daemon around it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from harness import DaemonProcess, Samples, sample, wait_for

from driftmon.checkpoint import CHECKPOINT_NAME, FORMAT_VERSION, write_checkpoint
from driftmon.config import load_config
from driftmon.engine import Engine
from driftmon.reference import load_reference_file, save_snapshot

MAGIC = b"DRIFTMON-CHECKPOINT\n"
MOVED = "driftmon_state_files_moved_aside_total"
FEATURES = [
    {"name": "x", "type": "numeric", "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5}},
    {"name": "c", "type": "categorical", "categories": ["red", "green", "blue"]},
]
T0 = 1_700_000_000.0


class Unpickled:
    """Unpickling this object's bytes touches ``path``, in any process (pathlib only)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.path,))


def rows(seed: int, n: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    colours = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    return [
        {"x": round(float(x), 2), "c": str(c)}
        for x, c in zip(rng.uniform(0, 10, n), colours, strict=True)
    ]


def config_document(reference: dict[str, str]) -> dict[str, object]:
    """Streams ``good`` and ``bad`` with the given reference spec (one per stream name)."""
    return {
        "server": {"listen": "127.0.0.1:0"},
        "engine": {"evaluate_every": "100ms"},
        "state": {"dir": "state", "checkpoint_every": "1h"},
        "defaults": {"window": {"length": "1h", "panes": 4}},
        "streams": [
            {"name": name, "reference": {"snapshot": file}, "features": FEATURES}
            if reference["kind"] == "snapshot"
            else {"name": name, "reference": {"file": reference["file"]}, "features": FEATURES}
            for name, file in (("good", "good.npz"), ("bad", "bad.npz"))
        ],
    }


@dataclasses.dataclass(frozen=True)
class Genuine:
    """Sound files to damage: a snapshot of stream ``bad`` and a checkpoint of the config."""

    snapshot: bytes
    other_snapshot: bytes  # built from other rows: its counts differ
    checkpoint: bytes


def build_snapshots(folder: Path, seed: int) -> dict[str, bytes]:
    """Snapshots of both streams built from ``rows(seed, 200)``, as ``driftmon reference build``."""
    (folder / "reference.ndjson").write_text(
        "".join(json.dumps(row) + "\n" for row in rows(seed, 200))
    )
    from_file = folder / "from-file.yaml"
    from_file.write_text(json.dumps(config_document({"kind": "file", "file": "reference.ndjson"})))
    config = load_config(from_file)
    built = {}
    for stream in config.streams:
        reference = load_reference_file(stream, folder / "reference.ndjson")
        path = folder / f"{stream.name}-{seed}.npz"
        save_snapshot(path, stream, reference)
        built[stream.name] = path.read_bytes()
    return built


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Genuine:
    folder = tmp_path_factory.mktemp("genuine")
    first = build_snapshots(folder, 1)
    second = build_snapshots(folder, 2)
    (folder / "good.npz").write_bytes(first["good"])
    (folder / "bad.npz").write_bytes(first["bad"])
    (folder / "driftmon.yaml").write_text(json.dumps(config_document({"kind": "snapshot"})))
    config = load_config(folder / "driftmon.yaml")
    engine = Engine(config, now=T0)
    for stream in ("good", "bad"):
        batch = rows(3, 40)
        engine.ingest(stream, 40, {k: [r[k] for r in batch] for k in ("x", "c")}, T0 + 1)
    write_checkpoint(folder / "state", engine.export_state(), saved_at=T0 + 2)
    return Genuine(first["bad"], second["bad"], (folder / "state" / CHECKPOINT_NAME).read_bytes())


# --- the kinds of damage ----------------------------------------------------------------------


def frame(payload: bytes, *, version: int = FORMAT_VERSION) -> bytes:
    """A checkpoint file around ``payload`` with a right checksum (docs/durability.md layout)."""
    header = {"version": version, "sha256": hashlib.sha256(payload).hexdigest()}
    header["length"] = len(payload)
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def payload_of(checkpoint: bytes) -> bytes:
    return checkpoint[len(MAGIC) :].partition(b"\n")[2]


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def with_pickle_check(data: bytes, marker: Path, load: Callable[[bytes], object]) -> bytes:
    """``data`` after checking that loading it carelessly does create ``marker``."""
    load(data)
    assert marker.exists(), "the payload does not do what the test assumes"
    marker.unlink()
    return data


def object_npz(marker: Path) -> bytes:
    """An archive whose ``meta`` member is an object array: loading it unpickles."""

    def careless(data: bytes) -> object:
        with np.load(io.BytesIO(data), allow_pickle=True) as archive:
            return archive["meta"]

    meta = np.array([Unpickled(marker), 1], dtype=object)
    return with_pickle_check(npz(meta=meta), marker, careless)


def flip_bit(data: bytes, offset: int) -> bytes:
    flipped = bytearray(data)
    flipped[offset] ^= 0x04
    return bytes(flipped)


def snapshot_with_version(snapshot: bytes, version: int) -> bytes:
    with np.load(io.BytesIO(snapshot), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["version"] = version
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return npz(**arrays)


FOREIGN_JSON = json.dumps(
    {"format": "driftmon-reference", "version": 1, "features": [], "streams": []}
).encode()

DAMAGES = [
    "truncated",
    "zero-length",
    "bit-flipped",
    "wrong-version",
    "foreign-json",
    "pickle",
    "pickle-in-archive",
]


def damaged_checkpoint(kind: str, genuine: bytes, marker: Path) -> bytes:
    payload = payload_of(genuine)
    if kind == "truncated":
        return genuine[: len(genuine) // 2]
    if kind == "zero-length":
        return b""
    if kind == "bit-flipped":
        return flip_bit(genuine, len(genuine) - len(payload) // 3)
    if kind == "wrong-version":
        return frame(payload, version=FORMAT_VERSION + 1)
    if kind == "foreign-json":
        return FOREIGN_JSON
    if kind == "pickle":
        return with_pickle_check(pickle.dumps(Unpickled(marker)), marker, pickle.loads)
    assert kind == "pickle-in-archive"
    return frame(object_npz(marker))  # the checksum is right: the content must be refused


def damaged_snapshot(kind: str, genuine: bytes, marker: Path) -> bytes:
    if kind == "truncated":
        return genuine[: len(genuine) // 2]
    if kind == "zero-length":
        return b""
    if kind == "bit-flipped":
        # Inside the stored (uncompressed) metadata member: its CRC no longer matches.
        return flip_bit(genuine, genuine.index(b'"features_hash"') + 3)
    if kind == "wrong-version":
        return snapshot_with_version(genuine, 2)
    if kind == "foreign-json":
        return FOREIGN_JSON
    if kind == "pickle":
        return with_pickle_check(pickle.dumps(Unpickled(marker)), marker, pickle.loads)
    assert kind == "pickle-in-archive"
    return object_npz(marker)


# --- a daemon on damaged files ----------------------------------------------------------------


@dataclasses.dataclass
class Scene:
    """A folder holding the config, both snapshots and the state folder."""

    folder: Path
    config: Path
    marker: Path

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def bad(self) -> Path:
        return self.folder / "bad.npz"

    @property
    def good(self) -> Path:
        return self.folder / "good.npz"


@pytest.fixture
def scene(tmp_path: Path, genuine: Genuine) -> Iterator[Scene]:
    built = build_snapshots(tmp_path, 1)
    (tmp_path / "good.npz").write_bytes(built["good"])
    (tmp_path / "bad.npz").write_bytes(built["bad"])
    config = tmp_path / "driftmon.yaml"
    config.write_text(json.dumps(config_document({"kind": "snapshot"})))
    (tmp_path / "state").mkdir()
    marker = tmp_path / "UNPICKLED"
    yield Scene(tmp_path, config, marker)
    assert not marker.exists(), "a damaged file was unpickled"


def aside(path: Path) -> list[Path]:
    """The files ``path`` was moved aside to."""
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def post(process: DaemonProcess, stream: str, batch: list[dict[str, object]]) -> None:
    reply = process.post_json(stream, json.dumps(batch).encode())
    assert reply.status == 200, (reply.status, reply.body)


def stream_series(samples: Samples, stream: str) -> list[str]:
    return sorted({name for name, labels in samples if ("stream", stream) in labels})


def promtool_check(text: str) -> None:
    """``promtool check metrics`` must pass, when promtool is installed (CI installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_moved_aside_and_a_damaged_snapshot_is_never_touched(
    scene: Scene, genuine: Genuine, damage: str
) -> None:
    bad_checkpoint = damaged_checkpoint(damage, genuine.checkpoint, scene.marker)
    bad_snapshot = damaged_snapshot(damage, genuine.snapshot, scene.marker)
    sound_snapshot = scene.bad.read_bytes()
    (scene.state / CHECKPOINT_NAME).write_bytes(bad_checkpoint)
    scene.bad.write_bytes(bad_snapshot)
    good_before = scene.good.read_bytes()

    # The snapshot is the user's file: with no copy of its reference in a checkpoint the
    # daemon refuses to start, as for a `file:` reference, and leaves the file as it is.
    refused = DaemonProcess(scene.config).start(wait_ready=False)
    try:
        assert refused.process is not None and refused.process.wait(60) == 1
    finally:
        refused.kill()
    log = refused.log_text()
    assert re.search(
        rf"ERROR .*cannot start: stream 'bad': .*{re.escape(str(scene.bad))}", log
    ), log
    assert scene.bad.read_bytes() == bad_snapshot and aside(scene.bad) == []
    # The checkpoint is the daemon's own: renamed within its folder, byte for byte.
    (checkpoint_aside,) = aside(scene.state / CHECKPOINT_NAME)
    assert checkpoint_aside.read_bytes() == bad_checkpoint
    assert not (scene.state / CHECKPOINT_NAME).exists()
    assert re.search(
        rf"ERROR .*checkpoint {re.escape(str(scene.state / CHECKPOINT_NAME))} is unusable "
        rf".*moved it aside to {re.escape(str(checkpoint_aside))}",
        log,
    ), log
    assert "Traceback" not in log, log
    # No log line invites the operator to load a foreign file with pickles allowed.
    assert "unsafely" not in log, log

    # The next start on a damaged checkpoint and sound snapshots serves.
    (scene.state / CHECKPOINT_NAME).write_bytes(bad_checkpoint)
    scene.bad.write_bytes(sound_snapshot)
    with DaemonProcess(scene.config) as process:  # starts, and /-/ready answers 200
        assert len(aside(scene.state / CHECKPOINT_NAME)) == 2
        assert scene.good.read_bytes() == good_before and aside(scene.good) == []
        samples = process.metrics()
        assert sample(samples, MOVED, kind="checkpoint") == 1
        assert sample(samples, MOVED, kind="reference") is None
        post(process, "bad", rows(4, 25))
        post(process, "good", rows(5, 30))
        wait_for(lambda: process.monitor("good", "x")["samples"] == 30, 30.0, "good evaluated")
        samples = process.metrics()
        assert sample(samples, "driftmon_ingest_rows_total", stream="bad") == 25
        assert sample(samples, "driftmon_js_divergence", stream="good", feature="x") is not None
        promtool_check(process.get("/metrics").body.decode())

        assert process.stop(signal.SIGTERM) == 0

    # Never deleted nor overwritten: the files moved aside are still there, unchanged, and
    # the shutdown wrote a new, good checkpoint beside them.
    assert all(f.read_bytes() == bad_checkpoint for f in aside(scene.state / CHECKPOINT_NAME))
    assert (scene.state / CHECKPOINT_NAME).is_file()
    assert not scene.marker.exists()


def test_a_stream_whose_snapshot_broke_carries_on_with_the_reference_its_checkpoint_kept(
    scene: Scene,
) -> None:
    with DaemonProcess(scene.config) as first:
        post(first, "bad", rows(7, 30))
        before = wait_for(
            lambda: (detail := first.monitor("bad", "x"))["samples"] == 30 and detail,
            30.0,
            "30 rows evaluated",
        )
        assert sum(before["live_counts"]) == 30
        assert first.stop(signal.SIGTERM) == 0
    damaged = flip_bit(scene.bad.read_bytes(), scene.bad.read_bytes().index(b'"rows"') + 2)
    scene.bad.write_bytes(damaged)

    with DaemonProcess(scene.config) as second:
        assert aside(scene.bad) == [] and scene.bad.read_bytes() == damaged
        log = second.log_text()
        assert "its reference snapshot is unusable" in log, log
        assert "using the copy of the reference kept in the checkpoint" in log, log
        samples = second.metrics()
        assert sample(samples, MOVED, kind="checkpoint") == 0
        after = second.monitor("bad", "x")
        for key in ("bins", "reference_counts", "reference_samples", "live_counts", "samples"):
            assert after[key] == before[key], key
        post(second, "bad", rows(8, 5))
        assert sum(second.monitor("bad", "x")["live_counts"]) == 35
        assert second.stop(signal.SIGTERM) == 0

    # The snapshot the config names is now missing: the next start must not fail on it
    # (a supervisor would restart it in a loop), nor any reload.
    scene.bad.unlink()
    with DaemonProcess(scene.config) as third:
        log = third.log_text()
        assert "its reference snapshot is unusable" in log, log
        assert "using the copy of the reference kept in the checkpoint" in log, log
        assert sum(third.monitor("bad", "x")["live_counts"]) == 35
        reply = third.post("/-/reload")
        assert reply.status == 200, reply.body
        assert sum(third.monitor("bad", "x")["live_counts"]) == 35
        assert third.stop(signal.SIGTERM) == 0
