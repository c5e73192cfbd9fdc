"""Crash campaign: SIGKILL the daemon at random moments of steady ingest and checkpointing.

The promise (issue 7, docs/http-api.md, docs/durability.md): a daemon killed with ``kill -9`` at
any moment comes back up on the same state folder with exactly the rows it
had acknowledged (HTTP 200) up to its last completed checkpoint: never more
(no half batch, no batch that was never acknowledged), never less than that
checkpoint, never a torn file; so what a crash loses is at most one
checkpoint interval of traffic.

How it can fail. One config, two streams of one numeric feature ``x`` with a
uniform layout of one bin per batch: stream ``panes`` has a time window
(24 h, nothing expires during a campaign) and stream ``ring`` a ``{samples:
N}`` window large enough to hold every row. A sender thread per stream posts
numbered batches of ``--batch-rows`` rows, one request at a time at a steady
``--rate``; every row of batch ``k`` is ``x = k + 0.5``, so bin ``k`` of a
restored histogram says exactly whether batch ``k`` is in it, and whole. Each
cycle starts the daemon (from a process spawned ahead that has imported
everything already: :class:`WarmDaemon`), reads the restored counts, lets
the senders run for a random time, kills the daemon with SIGKILL, and then:

- lists the state folder: a ``.corrupt-`` file is a failure (a checkpoint the
  daemon itself wrote was found unusable); a leftover temporary file means
  the kill landed in the middle of a checkpoint write (counted);
- reads ``checkpoint.driftmon`` with :func:`driftmon.checkpoint.read_checkpoint`
  (absent is allowed only before the first checkpoint ever; unreadable is a
  torn file: failure);
- checks the checkpoint against what the senders recorded (:func:`check_kill`):
  every bin 0 or a whole batch; the batches it holds beyond the ones
  restored at the start of the cycle are a prefix of the batches sent in the
  cycle, all acknowledged except possibly the last one, whose request was in
  flight when the daemon died (the daemon may have applied it and
  checkpointed it before the answer reached the client: nobody can know the
  client never got it); no batch sent after the checkpoint's ``saved_at``;
  every batch acknowledged more than ``--saved-at-slack`` before
  ``saved_at`` present; the acknowledged batches it lacks no more than one
  checkpoint interval of traffic, ``rate * (checkpoint_every + --loss-slack)``
  (the senders never exceed ``--rate``; the slack covers the checkpoint's
  own write and scheduling on a busy machine); the ``ring`` stream's sample
  ring holds its rows in sending order;
- restarts and checks that ``/api/v1/monitors/{stream}/x`` live counts equal
  the checkpoint's counts bin for bin, that ``driftmon_window_samples``
  equals its rows, that stale temporaries are gone and nothing was moved
  aside.

Kills come in three kinds, round robin: ``random`` (a uniform random uptime
of steady ingest), ``mid-write`` (after the minimum uptime, as soon as a
checkpoint temporary file appears in the state folder: the kill lands inside
a write, between open and rename) and, every ``--start-kill-every``-th cycle,
``starting`` (killed 0 to 0.3 s after it listens: while it restores or just
after; nothing may change). The campaign ends with a SIGTERM, after which nothing acknowledged
may be missing.

Run ``python bench/chaos.py [--kills 200] [--seed 1] [--checkpoint-every 0.25]``;
it prints one line per kill and the figures (kills survived, kills inside a
write, largest loss in rows and in seconds, restart times) and exits 1 when
any promise was broken. ``tests/test_crash.py`` runs the CI-sized campaign.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import DaemonProcess, parse_metrics, sample, wait_for  # noqa: E402

from driftmon.checkpoint import (  # noqa: E402
    CHECKPOINT_NAME,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from driftmon.files import LOCK_NAME  # noqa: E402

STREAMS = ("panes", "ring")
FEATURE = "x"
# The value bins of a uniform layout are underflow, the regular bins, overflow; then
# missing and invalid (docs/configuration.md#bins). Batch k lands in regular bin k: index k + 1.
SPECIAL_BINS = 4
TEMPORARY_PREFIX = f".{CHECKPOINT_NAME}.tmp-"
CORRUPT_INFIX = ".corrupt-"
REQUEST_TIMEOUT_S = 10.0

# Imports what `driftmon run` imports, then waits for "go" before running it: see WarmDaemon.
LAUNCHER = """
import sys
import aiohttp.web
import driftmon.cli, driftmon.cloudevents, driftmon.daemon, driftmon.server
if "--warm-kernels" in sys.argv:
    sys.argv.remove("--warm-kernels")
    from driftmon.kernels import binning, divergence, special
    for module in (binning, divergence, special):
        module.warm_up()
if sys.stdin.readline() != "go\\n":
    sys.exit(3)
sys.exit(driftmon.cli.main(sys.argv[1:]))
"""


class WarmDaemon(DaemonProcess):
    """A :class:`~harness.DaemonProcess` whose next process is spawned ahead of time.

    Importing numpy, numba, aiohttp and driftmon takes a second or two of a
    start on this machine; a campaign of hundreds of restarts would spend most
    of its time there. :meth:`prepare` spawns the next process while the
    current daemon still runs: it imports those modules and then blocks on
    its standard input. :meth:`start` sends it ``go``, and only then does it
    run ``driftmon.cli.main(["run", "-c", CONFIG, "--listen", "127.0.0.1:0"])``,
    the very function ``python -m driftmon`` runs: everything a start does
    (reading the config, removing stale temporaries, restoring the checkpoint,
    evaluating, listening) happens after the previous daemon is dead. With
    ``--warm-kernels`` among its arguments the spare process also runs every
    kernel module's ``warm_up()`` while it waits, so that a restart does not
    spend its time loading numba's cache either (that costs about a second
    here and has nothing to do with state).
    """

    spare: subprocess.Popen[str] | None = None

    def prepare(self) -> None:
        """Spawn the next process (importing, then waiting) unless one is ready."""
        if self.spare is not None and self.spare.poll() is None:
            return
        argv = ["run", "-c", str(self.config_path), "--listen", "127.0.0.1:0", *self.args]
        self.spare = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def start(self, *, wait_ready: bool = True) -> WarmDaemon:
        """Let the spare process run the daemon; wait until it listens (and is ready)."""
        self.prepare()
        assert self.spare is not None
        process, self.spare = self.spare, None
        self.log, self.stdout, self.stderr = [], [], []
        self.url = ""
        self._listening.clear()
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        self._drains = [
            threading.Thread(target=self._drain, args=(stream, lines), daemon=True)
            for stream, lines in ((process.stdout, self.stdout), (process.stderr, self.stderr))
        ]
        for thread in self._drains:
            thread.start()
        process.stdin.write("go\n")
        process.stdin.close()
        deadline = time.monotonic() + 120.0
        while not self._listening.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("daemon did not listen:\n" + self.log_text())
        if wait_ready:
            wait_for(self.is_ready, 120.0, "/-/ready")
        return self

    def discard(self) -> None:
        """Kill the spare process, if any."""
        if self.spare is not None:
            self.spare.kill()
            self.spare.wait(30)
            for pipe in (self.spare.stdin, self.spare.stdout, self.spare.stderr):
                if pipe is not None:
                    pipe.close()
            self.spare = None


# --- what the senders record ------------------------------------------------------------------


@dataclass
class Sent:
    """One batch posted: ``status`` 200, another HTTP status, or 0 when no answer came."""

    batch: int
    sent_at: float
    acked_at: float | None = None
    status: int = 0


def batch_body(batch: int, rows: int) -> bytes:
    """The ``{"columns": ...}`` body of batch ``batch``: ``rows`` values ``batch + 0.5``."""
    return json.dumps({"columns": {FEATURE: [batch + 0.5] * rows}}).encode()


class Sender(threading.Thread):
    """Posts batches ``first, first + 1, …`` to one stream, one at a time, at ``rate`` per second.

    Stops at ``stop``, at the first request that gets no answer (the daemon
    died), at ``last_batch`` or after ``max_s`` seconds. Every batch it
    posted is in ``sent`` in order, with its send and answer times (the wall
    clock, as the daemon's checkpoint stamps).
    """

    def __init__(
        self,
        port: int,
        stream: str,
        *,
        first: int,
        last_batch: int,
        rows: int,
        rate: float,
        max_s: float,
    ) -> None:
        super().__init__(name=f"sender-{stream}", daemon=True)
        self.port = port
        self.stream = stream
        self.next_batch = first
        self.last_batch = last_batch
        self.rows = rows
        self.rate = rate
        self.max_s = max_s
        self.sent: list[Sent] = []
        self.stop = threading.Event()
        self.ran_out = False

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        path = f"/v1/streams/{self.stream}/rows"
        due = time.monotonic()
        try:
            for _ in range(int(self.max_s * self.rate) + 1):
                # Paced, so that no interval carries more than `rate` batches a second: after
                # a slow answer the schedule restarts from now instead of catching up.
                due = max(due + 1.0 / self.rate, time.monotonic())
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
                if self.next_batch > self.last_batch:
                    self.ran_out = True
                    return
                record = Sent(self.next_batch, time.time())
                self.sent.append(record)
                self.next_batch += 1
                try:
                    connection.request(
                        "POST",
                        path,
                        body=batch_body(record.batch, self.rows),
                        headers={"Content-Type": "application/json"},
                    )
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    return  # the daemon is gone: this batch's fate is unknown
                record.status = response.status
                record.acked_at = time.time()
                if response.status != 200:
                    return
        finally:
            connection.close()


# --- the checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamCheck:
    """One stream's view of one kill, as :func:`check_kill` judged it."""

    batches: frozenset[int]
    acked_rows: int
    lost_rows: int
    lost_window_s: float
    unacked_restored: int  # 1 when the batch in flight at the kill was checkpointed


def batches_of(counts: np.ndarray, rows: int, stream: str) -> tuple[frozenset[int], list[str]]:
    """The batches whose bins hold exactly ``rows`` rows; errors for any other non-zero bin."""
    errors: list[str] = []
    counts = np.asarray(counts, dtype=np.float64)
    regular = counts[1 : counts.shape[0] - SPECIAL_BINS + 1]
    special = np.concatenate([counts[:1], counts[counts.shape[0] - SPECIAL_BINS + 1 :]])
    if np.any(special != 0):
        errors.append(f"{stream}: rows outside the batch bins: {special.tolist()}")
    partial = np.flatnonzero((regular != 0) & (regular != rows))
    if partial.size:
        shown = {int(b): float(regular[b]) for b in partial[:5]}
        errors.append(f"{stream}: batches not whole ({rows} rows each): {shown}")
    return frozenset(int(b) for b in np.flatnonzero(regular == rows)), errors


def check_kill(
    stream: str,
    counts: np.ndarray,
    *,
    rows: int,
    base: frozenset[int],
    sent: Sequence[Sent],
    saved_at: float | None,
    killed_at: float,
    saved_at_slack_s: float,
    max_lost_batches: int,
) -> tuple[StreamCheck, list[str]]:
    """Judge one stream's checkpointed ``counts`` after a kill against what was sent.

    ``base`` holds the batches restored at the start of the cycle, ``sent``
    the batches posted during it (in order), ``saved_at`` the checkpoint's
    stamp (``None``: no checkpoint file), ``killed_at`` when the daemon was
    gone, ``max_lost_batches`` one checkpoint interval of traffic (see
    :meth:`Campaign.max_lost_batches`). Returns what the checkpoint holds and
    the broken promises, each a sentence (see the module docstring).
    """
    batches, errors = batches_of(counts, rows, stream)
    if not base <= batches:
        errors.append(f"{stream}: batches restored before were lost: {sorted(base - batches)[:5]}")
    new = batches - base
    order = [record.batch for record in sent]
    taken = 0
    while taken < len(order) and order[taken] in new:
        taken += 1
    if set(order[:taken]) != new:
        extra = sorted(new - set(order[:taken]))[:5]
        errors.append(
            f"{stream}: the checkpoint holds batches that are not a prefix of those sent in "
            f"this cycle: {extra} beyond the first {taken}"
        )
    for record in sent[:taken]:
        # A sender stops at the first request without an answer, so only the last
        # batch sent can be one the daemon applied and never answered.
        if record.status != 200 and not (record.status == 0 and record is sent[-1]):
            errors.append(f"{stream}: batch {record.batch} answered {record.status} is restored")
        if saved_at is not None and record.sent_at > saved_at:
            errors.append(
                f"{stream}: batch {record.batch} sent {record.sent_at - saved_at:.3f} s after "
                "the checkpoint's stamp is in it"
            )
    if saved_at is None and new:
        errors.append(f"{stream}: no checkpoint, yet {len(new)} batches counted")
    acked = [r for r in sent if r.status == 200]
    lost = [r for r in acked if r.batch not in batches]
    if saved_at is not None:
        for record in lost:
            assert record.acked_at is not None
            if record.acked_at < saved_at - saved_at_slack_s:
                errors.append(
                    f"{stream}: batch {record.batch} acknowledged "
                    f"{saved_at - record.acked_at:.3f} s before the checkpoint's stamp is "
                    "missing from it"
                )
                break
    window = 0.0
    if lost:
        window = killed_at - min(r.acked_at for r in lost if r.acked_at is not None)
    if len(lost) > max_lost_batches:
        errors.append(
            f"{stream}: lost {len(lost)} acknowledged batches ({window:.3f} s of traffic), "
            f"more than one checkpoint interval of traffic ({max_lost_batches} batches)"
        )
    for record in sent:
        if record.status not in (0, 200):
            errors.append(f"{stream}: batch {record.batch} was answered {record.status}")
    unacked = sum(1 for r in sent[:taken] if r.status == 0)
    return StreamCheck(batches, rows * len(acked), rows * len(lost), window, unacked), errors


def check_ring(ring: np.ndarray, head: np.ndarray, batches: frozenset[int], rows: int) -> list[str]:
    """The sample ring must hold the batches' rows in sending order, unwrapped."""
    filled = int(head[1])
    expected = np.repeat(np.array(sorted(batches), dtype=np.int64) + 1, rows)
    errors = []
    if int(head[0]) != filled % ring.shape[0] or filled != expected.size:
        errors.append(f"ring: head {head.tolist()} for {expected.size} rows")
    elif not np.array_equal(ring[:filled, 0], expected):
        errors.append("ring: its rows are not the batches' rows in sending order")
    if np.any(ring[filled:, 0] != -1):
        errors.append("ring: slots past the filled part are written")
    return errors


# --- one campaign -------------------------------------------------------------------------------


@dataclass
class Campaign:
    """Settings of one campaign (see the command line options)."""

    kills: int = 200
    seed: int = 1
    checkpoint_every_s: float = 0.25
    rate: float = 150.0
    batch_rows: int = 10
    min_uptime_s: float = 0.1
    max_uptime_s: float = 1.0
    start_kill_every: int = 10
    saved_at_slack_s: float = 0.2
    loss_slack_s: float = 0.35
    warm_kernels: bool = True
    # What the daemon is configured with, when it differs from what the checks assume
    # (tests/test_crash.py's control: a daemon that never checkpoints in time must fail).
    daemon_checkpoint_every_s: float | None = None

    def batch_bins(self) -> int:
        """One bin per batch the senders can send in the whole campaign, with a margin.

        Random uptimes average ``(min + max) / 2``, aimed kills come sooner; a
        campaign that runs out anyway says so (a violation), it never wraps.
        """
        mean_uptime_s = (self.min_uptime_s + self.max_uptime_s) / 2 + 0.3
        return int(self.kills * mean_uptime_s * self.rate + 10 * self.rate)

    def max_lost_batches(self) -> int:
        """One checkpoint interval of traffic, in batches: what a kill may lose at most.

        The slack is the time from a checkpoint tick to the end of its write
        (the state is exported at the tick, the file replaced only after it is
        written and fsynced) plus scheduling on a busy machine. The senders
        never exceed ``rate``, so this bounds the rows a kill can lose.
        """
        return int(self.rate * (self.checkpoint_every_s + self.loss_slack_s)) + 1


@dataclass
class KillRecord:
    """What one kill did."""

    index: int
    kind: str
    uptime_s: float
    mid_write: bool
    restart_s: float
    acked_rows: int = 0
    lost_rows: int = 0
    lost_window_s: float = 0.0
    restored_rows: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The figures of a campaign; ``violations`` empty when every promise held."""

    kills: list[KillRecord] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    acked_rows: int = 0
    lost_rows: int = 0
    unacked_restored: int = 0
    write_s: float = 0.0
    final_rows: int = 0
    checkpoint_bytes: int = 0

    @property
    def survived(self) -> int:
        """Kills after which the daemon came back up and passed every check."""
        return sum(1 for k in self.kills if not k.errors)

    @property
    def mid_write(self) -> int:
        """Kills that left a checkpoint temporary behind: they landed inside a write."""
        return sum(1 for k in self.kills if k.mid_write)

    @property
    def max_lost_rows(self) -> int:
        """The most acknowledged rows one stream lost to one kill."""
        return max((k.lost_rows for k in self.kills), default=0)

    @property
    def max_lost_window_s(self) -> float:
        """The longest span (seconds) from the first lost acknowledgement to its kill."""
        return max((k.lost_window_s for k in self.kills), default=0.0)

    def summary(self, campaign: Campaign) -> str:
        """The figures, one per line."""
        restarts = [k.restart_s for k in self.kills]
        per_interval = campaign.rate * campaign.checkpoint_every_s * campaign.batch_rows
        bound = campaign.max_lost_batches() * campaign.batch_rows
        kinds = {kind: sum(1 for k in self.kills if k.kind == kind) for kind in KINDS}
        lines = [
            f"kills survived: {self.survived} of {len(self.kills)} ({kinds})",
            f"kills inside a checkpoint write (temporary left behind): {self.mid_write}",
            f"largest loss in one stream: {self.max_lost_rows} rows; traffic of one "
            f"{campaign.checkpoint_every_s} s checkpoint interval: {per_interval:.0f} rows; "
            f"bound checked (interval + {campaign.loss_slack_s} s slack): {bound} rows",
            f"longest loss: {self.max_lost_window_s:.3f} s of traffic "
            f"(interval {campaign.checkpoint_every_s} s)",
            f"rows acknowledged during the kill cycles (both streams): {self.acked_rows}, "
            f"lost to kills: {self.lost_rows}; in the checkpoint after the final SIGTERM: "
            f"{self.final_rows}",
            f"kills whose checkpoint held the batch in flight (applied, answer lost): "
            f"{self.unacked_restored}",
            f"final checkpoint: {self.checkpoint_bytes} bytes, written in "
            f"{self.write_s * 1000:.1f} ms (median of 5, write_checkpoint on this disk)",
        ]
        if restarts:
            lines.append(
                f"restart to ready: median {statistics.median(restarts):.2f} s, "
                f"max {max(restarts):.2f} s"
            )
        lines.append(f"violations: {len(self.violations)}")
        lines.extend(f"  {v}" for v in self.violations[:20])
        return "\n".join(lines)


KINDS = ("random", "mid-write", "starting")


def write_config(folder: Path, campaign: Campaign) -> Path:
    """The campaign's config and reference file in ``folder``; returns the config path."""
    bins = campaign.batch_bins()
    configured_every = campaign.daemon_checkpoint_every_s or campaign.checkpoint_every_s
    # A flat reference over every batch bin: its content does not matter to the promise.
    reference = folder / "reference.csv"
    reference.write_text("x\n" + "".join(f"{b + 0.5}\n" for b in range(0, bins, 7)))
    feature = {
        "name": FEATURE,
        "type": "numeric",
        "bins": {"kind": "uniform", "lo": 0, "hi": bins, "count": bins},
    }
    samples = bins * campaign.batch_rows + 1
    document = {
        "server": {"listen": "127.0.0.1:0"},
        "ingest": {"workers": 2},
        "engine": {"evaluate_every": "200ms"},
        "state": {
            "dir": str(folder / "state"),
            "checkpoint_every": f"{configured_every}s",
        },
        "streams": [
            {
                "name": "panes",
                "reference": {"file": str(reference)},
                "window": {"length": "24h", "panes": 4},
                "features": [feature],
            },
            {
                "name": "ring",
                "reference": {"file": str(reference)},
                "window": {"samples": samples},
                "features": [feature],
            },
        ],
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(document, indent=2))
    return path


def _port(process: DaemonProcess) -> int:
    return int(process.url.rsplit(":", 1)[1])


def _restored_counts(process: DaemonProcess, stream: str) -> np.ndarray:
    return np.asarray(process.monitor(stream, FEATURE)["live_counts"], dtype=np.float64)


def _state_listing(state_dir: Path) -> list[str]:
    return sorted(os.listdir(state_dir)) if state_dir.is_dir() else []


def _checkpoint_counts(
    state_dir: Path,
) -> tuple[float | None, dict[str, np.ndarray], dict[str, np.ndarray], str | None]:
    """``(saved_at, counts by stream, ring arrays, error)`` of the checkpoint in ``state_dir``."""
    try:
        loaded = read_checkpoint(state_dir)
    except CheckpointError as exc:
        return None, {}, {}, f"torn or unreadable checkpoint after a kill: {exc}"
    if loaded is None:
        return None, {}, {}, None
    counts: dict[str, np.ndarray] = {}
    ring: dict[str, np.ndarray] = {}
    for name, kept in loaded.state.streams.items():
        if kept.window is None:
            continue
        arrays = kept.window.arrays
        if "pane_counts" in arrays:
            counts[name] = np.asarray(arrays["pane_counts"]).sum(axis=0)
        else:
            cells = np.asarray(arrays["ring"])
            valid = cells[cells >= 0]
            n_bins = sum(b.n_bins for b in kept.reference.binners) if kept.reference else 0
            counts[name] = np.bincount(valid, minlength=n_bins).astype(np.float64)
            ring["ring"], ring["head"] = cells, np.asarray(arrays["head"])
    return loaded.saved_at, counts, ring, None


def _pick_kind(index: int, campaign: Campaign) -> str:
    every = campaign.start_kill_every
    if every and index % every == every - 1:
        return "starting"
    return KINDS[index % 2]


def _wait_for_temporary(state_dir: Path, deadline: float) -> bool:
    """Poll ``state_dir`` until a checkpoint temporary exists (True) or ``deadline`` (False)."""
    while time.monotonic() < deadline:
        with os.scandir(state_dir) as entries:
            if any(entry.name.startswith(TEMPORARY_PREFIX) for entry in entries):
                return True
        time.sleep(0.0005)
    return False


def run_campaign(
    folder: Path, campaign: Campaign, *, say: Callable[[str], None] = lambda line: None
) -> Report:
    """Run ``campaign`` in ``folder`` (its config, reference and state live there)."""
    rng = random.Random(campaign.seed)
    config = write_config(folder, campaign)
    state_dir = folder / "state"
    last_batch = campaign.batch_bins() - 1
    report = Report()
    base = {stream: frozenset[int]() for stream in STREAMS}
    next_batch = dict.fromkeys(STREAMS, 0)
    expected_counts: dict[str, np.ndarray] | None = None
    stale: list[str] = []
    ever_checkpointed = False
    process = WarmDaemon(config, args=["--warm-kernels"] if campaign.warm_kernels else [])
    try:
        for index in range(campaign.kills):
            kind = _pick_kind(index, campaign)
            started = time.monotonic()
            record = KillRecord(index, kind, 0.0, False, 0.0)
            report.kills.append(record)
            if kind == "starting":
                process.start(wait_ready=False)
                process.prepare()
                # Killed while it restores (or just after): nothing may change.
                time.sleep(rng.uniform(0.0, 0.3))
                record.uptime_s = time.monotonic() - started
                process.kill()
                stale = [n for n in _state_listing(state_dir) if n.startswith(TEMPORARY_PREFIX)]
                record.errors += _check_listing(state_dir)
                saved_at, counts, ring, error = _checkpoint_counts(state_dir)
                record.restored_rows = int(sum(c.sum() for c in counts.values()))
                if error is not None:
                    record.errors.append(error)
                elif expected_counts is not None and any(
                    s not in counts or not np.array_equal(counts[s], expected_counts[s])
                    for s in STREAMS
                ):
                    record.errors.append("a kill during the start changed the checkpoint")
                _report(record, say)
                report.violations += [f"kill {index} ({kind}): {e}" for e in record.errors]
                continue
            process.start()
            record.restart_s = time.monotonic() - started
            process.prepare()  # the next start's imports, while this daemon runs
            record.errors += _check_restart(process, state_dir, expected_counts, stale)
            port = _port(process)
            senders = {
                stream: Sender(
                    port,
                    stream,
                    first=next_batch[stream],
                    last_batch=last_batch,
                    rows=campaign.batch_rows,
                    rate=campaign.rate,
                    max_s=campaign.max_uptime_s + 1.0,
                )
                for stream in STREAMS
            }
            running_since = time.monotonic()
            for sender in senders.values():
                sender.start()
            uptime = rng.uniform(campaign.min_uptime_s, campaign.max_uptime_s)
            if kind == "mid-write":
                time.sleep(campaign.min_uptime_s)
                _wait_for_temporary(state_dir, running_since + campaign.max_uptime_s + 0.5)
            else:
                time.sleep(uptime)
            record.uptime_s = time.monotonic() - running_since
            assert process.process is not None
            process.process.kill()
            process.process.wait(30)
            killed_at = time.time()
            process.kill()  # joins the output threads
            for sender in senders.values():
                sender.stop.set()
                sender.join(REQUEST_TIMEOUT_S + 5.0)
                if sender.is_alive():
                    record.errors.append(f"{sender.stream}: sender still running after the kill")
                if sender.ran_out:
                    record.errors.append("the campaign ran out of batch bins: raise batch_bins()")
            stale = [n for n in _state_listing(state_dir) if n.startswith(TEMPORARY_PREFIX)]
            record.mid_write = bool(stale)
            record.errors += _check_listing(state_dir)
            saved_at, counts, ring, error = _checkpoint_counts(state_dir)
            if error is not None:
                record.errors.append(error)
            elif saved_at is None and ever_checkpointed:
                record.errors.append("the checkpoint file vanished")
            else:
                ever_checkpointed = ever_checkpointed or saved_at is not None
                n_bins = last_batch + 1 + SPECIAL_BINS
                for stream, sender in senders.items():
                    stream_counts = counts.get(stream, np.zeros(n_bins))
                    checked, errors = check_kill(
                        stream,
                        stream_counts,
                        rows=campaign.batch_rows,
                        base=base[stream],
                        sent=sender.sent,
                        saved_at=saved_at,
                        killed_at=killed_at,
                        saved_at_slack_s=campaign.saved_at_slack_s,
                        max_lost_batches=campaign.max_lost_batches(),
                    )
                    report.unacked_restored += checked.unacked_restored
                    record.errors += errors
                    record.acked_rows += checked.acked_rows
                    report.acked_rows += checked.acked_rows
                    report.lost_rows += checked.lost_rows
                    record.lost_rows = max(record.lost_rows, checked.lost_rows)
                    record.lost_window_s = max(record.lost_window_s, checked.lost_window_s)
                    record.restored_rows += int(stream_counts.sum())
                    base[stream] = checked.batches
                    next_batch[stream] = sender.next_batch
                if ring:
                    record.errors += check_ring(
                        ring["ring"], ring["head"], base["ring"], campaign.batch_rows
                    )
                expected_counts = (
                    {s: counts.get(s, np.zeros(n_bins)) for s in STREAMS}
                    if saved_at is not None
                    else None
                )
            _report(record, say)
            report.violations += [f"kill {index} ({kind}): {e}" for e in record.errors]
        report.violations += _final_stop(
            process, state_dir, expected_counts, stale, next_batch, campaign, report
        )
    finally:
        process.kill()
        process.discard()
    return report


def _report(record: KillRecord, say: Callable[[str], None]) -> None:
    say(
        f"kill {record.index:4d} {record.kind:9s} uptime {record.uptime_s:5.2f} s "
        f"restart {record.restart_s:4.2f} s mid-write {'yes' if record.mid_write else 'no ':3s} "
        f"restored {record.restored_rows:7d} lost {record.lost_rows:5d} rows "
        f"({record.lost_window_s:.3f} s)" + (f"  FAILED: {record.errors}" if record.errors else "")
    )


def _check_listing(state_dir: Path, *, stale: Sequence[str] = ()) -> list[str]:
    """Nothing in the state folder but the checkpoint, temporaries and the daemon's lock file,
    no temporary ``stale``.

    ``stale`` names the temporaries a killed daemon left: a start must remove
    them (a running daemon has its own while it writes a checkpoint).
    """
    errors = []
    for name in _state_listing(state_dir):
        if CORRUPT_INFIX in name:
            errors.append(f"a checkpoint was moved aside as corrupt: {name}")
        elif name in stale:
            errors.append(f"a stale temporary survived the restart: {name}")
        elif name not in (CHECKPOINT_NAME, LOCK_NAME) and not name.startswith(TEMPORARY_PREFIX):
            errors.append(f"unexpected file in the state folder: {name}")
    return errors


def _check_restart(
    process: DaemonProcess,
    state_dir: Path,
    expected: dict[str, np.ndarray] | None,
    stale: Sequence[str],
) -> list[str]:
    """After a restart: the live counts are the checkpoint's, stale temporaries are gone."""
    errors = _check_listing(state_dir, stale=stale)
    samples = parse_metrics(process.get("/metrics").body.decode())
    moved = sample(samples, "driftmon_state_files_moved_aside_total", kind="checkpoint")
    if moved:
        errors.append(f"driftmon_state_files_moved_aside_total{{kind='checkpoint'}} is {moved}")
    for stream in STREAMS:
        restored = _restored_counts(process, stream)
        wanted = expected[stream] if expected is not None else np.zeros_like(restored)
        if not np.array_equal(restored, wanted):
            diff = np.flatnonzero(restored != wanted)[:5].tolist()
            errors.append(f"{stream}: restored live counts differ from the checkpoint at {diff}")
        window_samples = sample(samples, "driftmon_window_samples", stream=stream, feature=FEATURE)
        if window_samples != float(wanted.sum()):
            errors.append(
                f"{stream}: driftmon_window_samples {window_samples}, the checkpoint holds "
                f"{float(wanted.sum())} rows"
            )
    return errors


def _final_stop(
    process: DaemonProcess,
    state_dir: Path,
    expected: dict[str, np.ndarray] | None,
    stale: Sequence[str],
    next_batch: dict[str, int],
    campaign: Campaign,
    report: Report,
) -> list[str]:
    """A last cycle ended by SIGTERM: every acknowledged row must be in its checkpoint."""
    process.start()
    errors = _check_restart(process, state_dir, expected, stale)
    before = {s: _restored_counts(process, s) for s in STREAMS}
    # A few batches into unused bins, all answered, then a clean stop.
    if max(next_batch.values()) + 3 > campaign.batch_bins():
        return [*errors, "no batch bins left for the final cycle"]
    for stream in STREAMS:
        for batch in range(next_batch[stream], next_batch[stream] + 3):
            reply = process.post_json(stream, batch_body(batch, campaign.batch_rows))
            if reply.status != 200:
                errors.append(f"final cycle: {stream} answered {reply.status}")
            before[stream][batch + 1] += campaign.batch_rows
    code = process.stop()
    if code != 0:
        errors.append(f"SIGTERM: exit status {code}")
    saved_at, counts, _, error = _checkpoint_counts(state_dir)
    if error is not None or saved_at is None:
        return [*errors, f"after SIGTERM: {error or 'no checkpoint'}"]
    for stream in STREAMS:
        if not np.array_equal(counts[stream], before[stream]):
            errors.append(f"{stream}: the SIGTERM checkpoint lacks acknowledged rows")
    report.final_rows = int(sum(counts[s].sum() for s in STREAMS))
    report.checkpoint_bytes = (state_dir / CHECKPOINT_NAME).stat().st_size
    report.write_s = _write_time(state_dir)
    return errors


def _write_time(state_dir: Path, repeats: int = 5) -> float:
    """Median seconds of one ``write_checkpoint`` of the final state, into a scratch folder."""
    loaded = read_checkpoint(state_dir)
    assert loaded is not None
    scratch = state_dir.parent / "scratch"
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        write_checkpoint(scratch, loaded.state, saved_at=loaded.saved_at)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a campaign; exit 0 when every promise held, 1 otherwise."""
    defaults = Campaign()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--checkpoint-every", type=float, default=defaults.checkpoint_every_s)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="batches/s per stream")
    parser.add_argument("--batch-rows", type=int, default=defaults.batch_rows)
    parser.add_argument("--max-uptime", type=float, default=defaults.max_uptime_s)
    parser.add_argument("--start-kill-every", type=int, default=defaults.start_kill_every)
    parser.add_argument("--saved-at-slack", type=float, default=defaults.saved_at_slack_s)
    parser.add_argument("--loss-slack", type=float, default=defaults.loss_slack_s)
    parser.add_argument(
        "--cold-kernels",
        action="store_true",
        help="do not call the kernels' warm_up() before a start: restarts load numba's cache",
    )
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    campaign = Campaign(
        kills=args.kills,
        seed=args.seed,
        checkpoint_every_s=args.checkpoint_every,
        rate=args.rate,
        batch_rows=args.batch_rows,
        max_uptime_s=args.max_uptime,
        start_kill_every=args.start_kill_every,
        saved_at_slack_s=args.saved_at_slack,
        loss_slack_s=args.loss_slack,
        warm_kernels=not args.cold_kernels,
    )
    started = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run_campaign(args.keep, campaign, say=print)
    else:
        with tempfile.TemporaryDirectory(prefix="driftmon-chaos-") as folder:
            report = run_campaign(Path(folder), campaign, say=print)
    print(report.summary(campaign))
    print(f"wall time: {time.monotonic() - started:.1f} s")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
