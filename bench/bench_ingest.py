"""Benchmark of HTTP ingest: a real daemon, loaded over the network, against the bare ceiling.

A daemon (``python -m driftmon run -c CONFIG --listen 127.0.0.1:0``) is started
on a config written to a temporary directory: one stream of ``--features``
numeric features (uniform bins), a CSV reference file, a time window,
``ingest.workers: --workers`` and checkpoints in the temporary directory. An
aiohttp load generator in this process then posts bodies of ``--rows`` rows
(docs/http-api.md) for each body format, JSON rows, ``{"columns": ...}``,
NDJSON and an Arrow IPC stream, in two phases of ``--duration`` seconds each:

1. **peak**: ``--connections`` closed-loop senders, each posting its next body
   as soon as the previous one is answered;
2. **half**: open loop at half the peak request rate just measured; a
   request's latency counts from its scheduled send time, so a sender that
   falls behind schedule shows as latency, not as a lower rate.

Printed per phase: rows/s and values/s (rows answered 200 over the phase's
wall time), p50/p99 request latency, the daemon's CPU time per request (and
its system share), cores used by the daemon and by the load generator, the
daemon's garbage collections (full, generation-2 collections and their longest
pause; time in any collection per second), and its RSS (VmRSS of
``/proc/PID/status``) at the start and end of the phase. CPU time and RSS
are the daemon's with its child processes' (``--processes N`` starts N
parse processes, ``ingest.processes``; their RSS is summed, so pages they
share count once per process); garbage collections are the daemon's own. The daemon runs the
``driftmon`` command line's own entry point through a small launcher that
records every garbage collection (``gc.callbacks``) and writes them out at
exit; nothing else differs from ``python -m driftmon``.

The **ceiling**, measured in the same run in this process on one core while
the daemon idles: ``orjson.loads`` of the same bodies plus one
``np.asarray(float64)`` per feature column. Beside it, as a breakdown of the
daemon's own work without HTTP: ``driftmon.parse.parse_body`` alone, and
``parse_body`` followed by ``Engine.bin_batch`` on an engine built from the
same config.

Targets (marked PASS/MISS): the daemon's peak ingest within 2x of the ceiling
per body format; Arrow bodies at least 10x the rows/s of ``{"columns": ...}``
bodies (use ``--rows 10000``: at 1000 rows per body HTTP dominates an Arrow
request); p99 <= 50 ms at half the peak rate; RSS growth <= 10 %
between the start of the first measured phase (after a short warm-up load)
and the end of the run. The machine may be shared and the load generator
shares its cores with the daemon: compare ratios within one run.

The daemon freezes the heap left by its start (``gc.freeze()``, in
``driftmon.daemon._freeze_long_lived_objects``), so that full collections
no longer walk some 130 000 start-up objects; the figures of the run this
benchmark once measured with it as an experiment are in bench/README.md.

``--profile OUT`` runs the daemon under cProfile instead, with one profiler per
thread (``python -m cProfile`` sees only the main thread, and ingest parses
in worker threads), loads it with one peak phase per format, stops it with
SIGINT so the merged profile is written to ``OUT``, and prints the top
functions. Profiling slows Python code, so its rates are not benchmark
figures; and a call that releases the GIL (socket I/O, large numpy
operations, the nogil kernels) is charged the time its thread then waits to
take the GIL back. ``py-spy record --gil --pid PID`` (the daemon's pid is
printed) samples only the thread holding the GIL, which is the resource an
ingest request queues for. Run::

    python bench/bench_ingest.py [--duration 10] [--connections 4] [--rows 1000]
                                 [--features 20] [--workers 2] [--processes 0]
                                 [--formats ...]
                                 [--strict] [--profile OUT]

Exits 0; with ``--strict``, 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import process_family, rss_bytes  # noqa: E402

STREAM = "bench"
LO, HI, REGULAR_BINS = -4.0, 4.0, 20
REFERENCE_ROWS = 20_000
BODY_VARIANTS = 8  # distinct bodies per format, posted in turn
WARMUP_S = 1.0
STARTUP_TIMEOUT_S = 120.0  # a fresh checkout compiles the kernels at the first start
STOP_TIMEOUT_S = 60.0
CEILING_ROUNDS = 60
TARGET_CEILING_RATIO = 2.0
TARGET_P99_S = 0.050
TARGET_RSS_GROWTH = 0.10

JSON = "application/json"
NDJSON = "application/x-ndjson"
ARROW = "application/vnd.apache.arrow.stream"
FORMATS = ("json rows", "json columns", "ndjson", "arrow")
CONTENT_TYPES = {"json rows": JSON, "json columns": JSON, "ndjson": NDJSON, "arrow": ARROW}
TARGET_ARROW_OVER_COLUMNS = 10.0

# Runs the driftmon command line like `python -m driftmon`, recording every garbage
# collection, and writes them to a JSON file at exit (argv: LOG, then the command line's
# arguments).
_GC_RECORDING_CLI = r"""
import gc, json, sys, time
log_path, argv = sys.argv[1], sys.argv[2:]
collections = []  # [generation, start in Unix seconds, pause in seconds]
began = [0.0, 0.0]

def on_collection(phase, info):
    if phase == "start":
        began[0], began[1] = time.time(), time.perf_counter()
    else:
        collections.append([info["generation"], began[0], time.perf_counter() - began[1]])

gc.callbacks.append(on_collection)
from driftmon.cli import main
try:
    status = main(argv)
finally:
    with open(log_path, "w") as out:
        json.dump({"collections": collections, "frozen": gc.get_freeze_count()}, out)
sys.exit(status)
"""

# Runs the driftmon CLI with one cProfile profiler per thread and writes their
# merged statistics at exit (argv: OUT, then the CLI's arguments).
_PROFILED_CLI = r"""
import cProfile, pstats, sys, threading
out, argv = sys.argv[1], sys.argv[2:]
profiles = []
guard = threading.Lock()
thread_run = threading.Thread.run

def profiled_run(self):
    profile = cProfile.Profile()
    with guard:
        profiles.append(profile)
    profile.enable()
    try:
        thread_run(self)
    finally:
        profile.disable()

threading.Thread.run = profiled_run
from driftmon.cli import main
main_profile = cProfile.Profile()
main_profile.enable()
try:
    status = main(argv)
finally:
    main_profile.disable()
    with guard:
        others = list(profiles)
    stats = pstats.Stats(main_profile)
    for profile in others:
        try:
            stats.add(profile)
        except TypeError:
            pass  # a thread that never called anything has no statistics
    stats.dump_stats(out)
sys.exit(status)
"""


# --- the workload ---------------------------------------------------------------


def feature_names(n_features: int) -> list[str]:
    """The stream's feature names: ``f00``, ``f01``, ..."""
    return [f"f{i:02d}" for i in range(n_features)]


def write_config(
    directory: Path, n_features: int, workers: int, seed: int, processes: int = 0
) -> Path:
    """Write the reference CSV and the daemon's config into ``directory``; the config's path."""
    names = feature_names(n_features)
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(REFERENCE_ROWS, n_features))
    lines = [",".join(names)]
    lines.extend(",".join(f"{v:.6g}" for v in row) for row in reference)
    (directory / "reference.csv").write_text("\n".join(lines) + "\n")
    features = "\n".join(
        f"      - {{name: {name}, type: numeric, "
        f"bins: {{kind: uniform, lo: {LO:g}, hi: {HI:g}, count: {REGULAR_BINS}}}}}"
        for name in names
    )
    config = f"""\
server:
  listen: 127.0.0.1:0
  max_body_bytes: 16MiB
ingest:
  workers: {workers}
  processes: {processes}
  queue_rows: 1000000
engine:
  evaluate_every: 5s
state:
  dir: state
  checkpoint_every: 30s
defaults:
  window: {{length: 5m, panes: 10}}
streams:
  - name: {STREAM}
    reference: {{file: reference.csv}}
    features:
{features}
alerts:
  - name: js-high
    match: {{stream: "*", feature: "*"}}
    metric: js
    threshold: 0.1
    for: 0s
    min_samples: 100
    severity: warning
"""
    path = directory / "driftmon.yaml"
    path.write_text(config)
    return path


def make_bodies(n_rows: int, n_features: int, variants: int, seed: int) -> dict[str, list[bytes]]:
    """``variants`` distinct bodies per format, each ``n_rows`` rows of normal values.

    The values are drawn around the reference's distribution with a small
    shift, so the daemon bins realistic data (most values regular, a few
    under- or overflow).
    """
    names = feature_names(n_features)
    rng = np.random.default_rng(seed + 1)
    bodies: dict[str, list[bytes]] = {name: [] for name in FORMATS}
    for _ in range(variants):
        values = rng.normal(loc=0.1, size=(n_rows, n_features))
        rows = [dict(zip(names, map(float, row), strict=True)) for row in values]
        bodies["json rows"].append(orjson.dumps(rows))
        bodies["json columns"].append(
            orjson.dumps({"columns": {name: values[:, i].tolist() for i, name in enumerate(names)}})
        )
        bodies["ndjson"].append(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        bodies["arrow"].append(_arrow_body(names, values))
    return bodies


def _arrow_body(names: Sequence[str], values: np.ndarray) -> bytes:
    """An Arrow IPC stream of one record batch, one float64 column per feature."""
    import pyarrow as pa

    batch = pa.record_batch([pa.array(values[:, i]) for i in range(len(names))], names=names)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


# --- the ceiling and the in-process breakdown -------------------------------------


def _columns_from_rows(rows: list[dict[str, object]], names: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray([row[name] for row in rows], dtype=np.float64) for name in names]


def bare_ceiling(fmt: str, body: bytes, names: Sequence[str]) -> list[np.ndarray]:
    """orjson-decode ``body`` and turn it into one float64 array per feature (the ceiling)."""
    if fmt == "ndjson":
        return _columns_from_rows(list(map(orjson.loads, io.BytesIO(body))), names)
    if fmt == "arrow":
        import pyarrow as pa

        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
        return [table.column(name).to_numpy() for name in names]
    doc = orjson.loads(body)
    if fmt == "json columns":
        columns = doc["columns"]
        return [np.asarray(columns[name], dtype=np.float64) for name in names]
    return _columns_from_rows(doc, names)


class InProcess:
    """The ceiling and the daemon's own stages, timed in this process on one core.

    Candidates, per body format: ``ceiling`` (:func:`bare_ceiling`),
    ``parse_body`` and ``parse+bin`` (``parse_body`` then ``Engine.bin_batch``
    on an engine built from the daemon's config). :meth:`time` runs them
    interleaved (one of each per round) and keeps every sample, so rounds
    taken before and after a load phase pool into one median.
    """

    CANDIDATES = ("ceiling", "parse_body", "parse+bin")

    def __init__(self, config_path: Path, bodies: dict[str, list[bytes]], n_rows: int) -> None:
        from driftmon.config import load_config
        from driftmon.engine import Engine
        from driftmon.parse import parse_body
        from driftmon.reference import numeric_fields

        config = load_config(config_path)
        self._engine = Engine(config, now=time.time())
        self._parse_body = parse_body
        self.names = [f.name for f in config.stream(STREAM).features]
        # As the daemon calls it (Daemon._ingest_job).
        self.numeric = numeric_fields(config.stream(STREAM))
        self.bodies = bodies
        self.n_rows = n_rows
        # (wall, CPU) seconds per call, by format and candidate.
        self.samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            fmt: {name: [] for name in self.CANDIDATES} for fmt in bodies
        }
        for fmt, variants in bodies.items():
            # The candidates must decode the same numbers before their times mean anything.
            ceiling = bare_ceiling(fmt, variants[0], self.names)
            batch = parse_body(
                variants[0], CONTENT_TYPES[fmt], self.names, numeric_fields=self.numeric
            )
            if batch.n_rows != n_rows or not all(
                np.array_equal(np.asarray(batch.columns[name], dtype=np.float64), column)
                for name, column in zip(self.names, ceiling, strict=True)
            ):
                raise RuntimeError(f"{fmt}: parse_body and the ceiling disagree")

    def _run(self, candidate: str, fmt: str, i: int) -> None:
        variants = self.bodies[fmt]
        body = variants[i % len(variants)]
        if candidate == "ceiling":
            bare_ceiling(fmt, body, self.names)
            return
        batch = self._parse_body(body, CONTENT_TYPES[fmt], self.names, numeric_fields=self.numeric)
        if candidate == "parse+bin":
            self._engine.bin_batch(STREAM, batch.n_rows, batch.columns)

    def time(self, fmt: str, rounds: int) -> None:
        """Time ``rounds`` interleaved rounds of every candidate on ``fmt``'s bodies."""
        for candidate in self.CANDIDATES:  # warm-up: caches, allocator
            self._run(candidate, fmt, 0)
        for i in range(rounds):
            for candidate in self.CANDIDATES:
                wall, cpu = time.perf_counter(), time.process_time()
                self._run(candidate, fmt, i)
                self.samples[fmt][candidate].append(
                    (time.perf_counter() - wall, time.process_time() - cpu)
                )

    def rows_per_s(self, fmt: str) -> dict[str, float]:
        """Rows per second of wall time per candidate (median over every round)."""
        return {
            name: self.n_rows / statistics.median(wall for wall, _ in samples)
            for name, samples in self.samples[fmt].items()
        }

    def cpu_s_per_body(self, fmt: str) -> dict[str, float]:
        """CPU seconds per body per candidate (median over every round)."""
        return {
            name: statistics.median(cpu for _, cpu in samples)
            for name, samples in self.samples[fmt].items()
        }


# --- the daemon ------------------------------------------------------------------


def _read_proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of process ``pid`` and its live descendants (all their threads)
    so far, in seconds."""
    user = system = 0.0
    tick_s = 1 / os.sysconf("SC_CLK_TCK")
    for member in process_family(pid):
        try:
            stat = _read_proc(member, "stat")
        except OSError:
            continue
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        fields = stat[stat.rindex(")") + 2 :].split()
        user += int(fields[11]) * tick_s
        system += int(fields[12]) * tick_s
    return user, system


class Daemon:
    """A driftmon daemon subprocess listening on a free port of 127.0.0.1."""

    def __init__(self, argv: Sequence[str], cwd: Path) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.log: list[str] = []
        self._listening = threading.Event()

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the process; return once it listens and answers ``/-/ready`` with 200."""
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._listening.wait(STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError("the daemon did not listen:\n" + "".join(self.log))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._get_status("/-/ready") == 200:
            if self.process.poll() is not None:
                raise RuntimeError("the daemon exited:\n" + "".join(self.log))
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("the daemon did not become ready:\n" + "".join(self.log))
            time.sleep(0.05)

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found and not self._listening.is_set():
                self.url = found.group(1)
                self._listening.set()

    def _get_status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def ingested_rows(self) -> float:
        """``driftmon_ingest_rows_total`` of the benchmark stream, from ``/metrics``."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "driftmon_ingest_rows_total"
                    and sample.labels.get("stream") == STREAM
                ):
                    return float(sample.value)
        raise RuntimeError("no driftmon_ingest_rows_total sample for the benchmark stream")

    def stop(self) -> int:
        """SIGINT (drain, checkpoint, exit) and the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("the daemon did not stop on SIGINT:\n" + "".join(self.log)) from None

    def kill(self) -> None:
        """Kill the process if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


# --- the load generator ------------------------------------------------------------


@dataclass(frozen=True)
class GcSummary:
    """The daemon's garbage collections that started within one phase."""

    full_collections: int  # generation 2
    longest_full_pause_s: float
    pause_s: float  # every generation


def read_gc_log(path: Path) -> list[tuple[int, float, float]]:
    """(generation, start in Unix seconds, pause in seconds) of each collection the launcher saw."""
    entries = orjson.loads(path.read_bytes())["collections"]
    return [(int(g), float(start), float(pause)) for g, start, pause in entries]


def summarise_gc(collections: Sequence[tuple[int, float, float]], phase: Phase) -> GcSummary:
    """The collections of ``collections`` that started during ``phase``."""
    within = [c for c in collections if phase.wall_start_s <= c[1] < phase.wall_end_s]
    full = [pause for generation, _, pause in within if generation == 2]
    return GcSummary(len(full), max(full, default=0.0), sum(c[2] for c in within))


@dataclass
class Phase:
    """What one load phase measured."""

    name: str
    fmt: str
    elapsed_s: float = 0.0
    rows_ok: int = 0
    requests_ok: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    daemon_cpu_s: float = 0.0
    daemon_sys_s: float = 0.0
    client_cpu_s: float = 0.0
    rss_start_bytes: int = 0
    rss_end_bytes: int = 0
    target_rps: float | None = None
    wall_start_s: float = 0.0  # Unix time, to match the daemon's garbage collections
    wall_end_s: float = 0.0
    gc: GcSummary | None = None

    @property
    def rows_per_s(self) -> float:
        """Rows answered 200 per second of the phase's wall time."""
        return self.rows_ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of request latency, in milliseconds."""
        return float(np.percentile(self.latencies_s, q)) * 1e3 if self.latencies_s else 0.0


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, content_type: str
) -> tuple[int, int]:
    """POST one body; (status, rows the daemon says it accepted, 0 unless 200)."""
    async with session.post(url, data=body, headers={"Content-Type": content_type}) as response:
        payload = await response.read()
        if response.status != 200:
            return response.status, 0
        return 200, int(orjson.loads(payload)["rows"])


async def load(
    daemon: Daemon,
    phase: Phase,
    bodies: Sequence[bytes],
    *,
    duration_s: float,
    connections: int,
    rate_rps: float | None = None,
) -> Phase:
    """Post ``bodies`` in turn for ``duration_s``: closed loop, or open loop at ``rate_rps``.

    Closed loop: each of ``connections`` senders posts again as soon as it is
    answered. Open loop: request ``i`` is due at ``start + i / rate_rps`` and
    taken by the next free sender; its latency counts from when it was due.
    Requests are not sent after ``duration_s``; the phase ends when the last
    one is answered.
    """
    url = f"{daemon.url}/v1/streams/{STREAM}/rows"
    content_type = CONTENT_TYPES[phase.fmt]
    phase.target_rps = rate_rps
    sequence = itertools.count()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        phase.rss_start_bytes = rss_bytes(daemon.pid)
        cpu_start, client_start = cpu_seconds(daemon.pid), time.process_time()
        phase.wall_start_s = time.time()
        start = time.perf_counter()
        deadline = start + duration_s

        async def sender() -> None:
            for i in sequence:
                due = time.perf_counter() if rate_rps is None else start + i / rate_rps
                if due >= deadline:
                    return
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                status, rows = await _post(session, url, bodies[i % len(bodies)], content_type)
                phase.latencies_s.append(time.perf_counter() - due)
                phase.codes[status] += 1
                if status == 200:
                    phase.requests_ok += 1
                    phase.rows_ok += rows

        await asyncio.gather(*(sender() for _ in range(connections)))
        phase.elapsed_s = time.perf_counter() - start
        phase.wall_end_s = time.time()
        user_end, sys_end = cpu_seconds(daemon.pid)
        phase.daemon_cpu_s = user_end + sys_end - sum(cpu_start)
        phase.daemon_sys_s = sys_end - cpu_start[1]
        phase.client_cpu_s = time.process_time() - client_start
        phase.rss_end_bytes = rss_bytes(daemon.pid)
    return phase


async def run_phases(
    daemon: Daemon,
    bodies: dict[str, list[bytes]],
    *,
    duration_s: float,
    connections: int,
    n_rows: int,
    half_rate: bool,
    in_process: InProcess | None = None,
    rounds: int = 0,
) -> list[Phase]:
    """A short warm-up of every format, then the peak (and half-rate) phase of each.

    With ``in_process``, half of ``rounds`` in-process rounds of a format run
    just before its peak phase and half just after (the daemon idle), so the
    ceiling is measured under the machine load of that phase. Returns every
    phase, the warm-ups (named ``warm-up``) first.
    """
    phases = []
    for fmt in bodies:
        phases.append(
            await load(
                daemon,
                Phase("warm-up", fmt),
                bodies[fmt],
                duration_s=WARMUP_S,
                connections=connections,
            )
        )
    for fmt in bodies:
        if in_process is not None:
            in_process.time(fmt, rounds - rounds // 2)
        peak = await load(
            daemon, Phase("peak", fmt), bodies[fmt], duration_s=duration_s, connections=connections
        )
        phases.append(peak)
        if in_process is not None:
            in_process.time(fmt, rounds // 2)
        if half_rate and peak.rows_per_s > 0:
            half = Phase("half", fmt)
            rate = peak.rows_per_s / 2 / n_rows
            phases.append(
                await load(
                    daemon,
                    half,
                    bodies[fmt],
                    duration_s=duration_s,
                    connections=connections,
                    rate_rps=rate,
                )
            )
    return phases


# --- reports -------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _gc_cells(phase: Phase) -> str:
    if phase.gc is None:
        return f"{'-':>17}{'-':>8}"
    full = f"{phase.gc.full_collections} ({phase.gc.longest_full_pause_s * 1e3:.0f})"
    return f"{full:>17}{phase.gc.pause_s / phase.elapsed_s * 1e3:>8.1f}"


def print_phases(phases: Sequence[Phase], n_features: int) -> None:
    """One line per phase.

    ``cpu ms/req``: the daemon's CPU time (all threads, user + system) per
    request; ``sys``: the system share of it; ``daemon``, ``client``: cores
    used by the daemon and by this load generator; ``full gc``: generation-2
    collections and the longest of their pauses; ``gc ms/s``: milliseconds
    per second spent in any collection.
    """
    header = (
        f"{'format':<13}{'phase':<6}{'req/s':>8}{'rows/s':>10}{'Mvalues/s':>10}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'cpu ms/req':>11}{'sys':>5}{'daemon':>7}{'client':>7}"
        f"{'full gc (max ms)':>17}{'gc ms/s':>8}{'RSS MiB start→end':>19}  other codes"
    )
    print(header)
    print("-" * len(header))
    for p in phases:
        requests = sum(p.codes.values())
        others = {code: n for code, n in p.codes.items() if code != 200}
        rate = f"{requests / p.elapsed_s:>8.1f}" if p.elapsed_s else f"{'-':>8}"
        print(
            f"{p.fmt:<13}{p.name:<6}{rate}{p.rows_per_s:>10.0f}"
            f"{p.rows_per_s * n_features / 1e6:>10.2f}"
            f"{p.latency_ms(50):>8.1f}{p.latency_ms(99):>8.1f}"
            f"{p.daemon_cpu_s / max(requests, 1) * 1e3:>11.2f}"
            f"{p.daemon_sys_s / max(p.daemon_cpu_s, 1e-9) * 100:>4.0f}%"
            f"{p.daemon_cpu_s / p.elapsed_s:>7.2f}{p.client_cpu_s / p.elapsed_s:>7.2f}"
            f"{_gc_cells(p)}"
            f"{p.rss_start_bytes / 2**20:>10.1f}→{p.rss_end_bytes / 2**20:<8.1f}"
            f"  {dict(others) if others else '-'}"
        )


def _peak(phases: Sequence[Phase], fmt: str) -> Phase:
    return next(p for p in phases if p.fmt == fmt and p.name == "peak")


def judge(phases: Sequence[Phase], in_process: InProcess, rss_idle_bytes: int) -> bool:
    """Print the targets with PASS/MISS; whether all passed."""
    ok = True
    print("\ntargets")
    for fmt in in_process.bodies:
        if fmt == "arrow":
            continue  # its "ceiling" is a zero-copy read: HTTP is the whole cost, no parse target
        peak = _peak(phases, fmt)
        ceiling = in_process.rows_per_s(fmt)["ceiling"]
        ratio = ceiling / peak.rows_per_s if peak.rows_per_s else float("inf")
        passed = ratio <= TARGET_CEILING_RATIO
        ok &= passed
        print(
            f"  {_mark(passed)} {fmt:<13} ceiling / daemon peak rows/s = {ratio:5.2f}x "
            f"(<= {TARGET_CEILING_RATIO:g}x)"
        )
    if "arrow" in in_process.bodies and "json columns" in in_process.bodies:
        arrow, columns = _peak(phases, "arrow"), _peak(phases, "json columns")
        ratio = arrow.rows_per_s / max(columns.rows_per_s, 1e-9)
        passed = ratio >= TARGET_ARROW_OVER_COLUMNS
        ok &= passed
        print(
            f"  {_mark(passed)} arrow / json columns daemon peak rows/s = {ratio:5.1f}x "
            f"(>= {TARGET_ARROW_OVER_COLUMNS:g}x)"
        )
    for p in phases:
        if p.name != "half":
            continue
        passed = p.latency_ms(99) <= TARGET_P99_S * 1e3
        ok &= passed
        achieved = sum(p.codes.values()) / p.elapsed_s
        print(
            f"  {_mark(passed)} {p.fmt:<13} p99 at half peak ({achieved:.1f} of "
            f"{p.target_rps or 0:.1f} req/s) = {p.latency_ms(99):.1f} ms "
            f"(<= {TARGET_P99_S * 1e3:g} ms)"
        )
    first, last = phases[0].rss_start_bytes, phases[-1].rss_end_bytes
    growth = last / first - 1
    passed = growth <= TARGET_RSS_GROWTH
    ok &= passed
    print(
        f"  {_mark(passed)} RSS growth over the run {first / 2**20:.1f} → {last / 2**20:.1f} MiB "
        f"= {growth * 100:+.1f} % (<= {TARGET_RSS_GROWTH * 100:g} %; idle at ready "
        f"{rss_idle_bytes / 2**20:.1f} MiB, {(last / rss_idle_bytes - 1) * 100:+.1f} % from there)"
    )
    return ok


def print_in_process(in_process: InProcess, phases: Sequence[Phase]) -> None:
    """In-process rows/s and CPU ms per body, per format, next to the daemon's peak."""
    print(
        "\none core in this process (median of interleaved rounds, half just before and half "
        "just after the format's peak phase) vs the daemon over HTTP"
    )
    header = (
        f"{'format':<13}{'rows/s:':<8}{'ceiling':>9}{'parse_body':>11}{'parse+bin':>10}"
        f"{'daemon':>8}{'ratio':>7}   {'CPU ms/body:':<13}{'ceiling':>8}{'parse+bin':>10}"
        f"{'daemon':>8}{'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for fmt in in_process.bodies:
        peak = _peak(phases, fmt)
        rates, cpu = in_process.rows_per_s(fmt), in_process.cpu_s_per_body(fmt)
        daemon_cpu = peak.daemon_cpu_s / max(sum(peak.codes.values()), 1)
        print(
            f"{fmt:<13}{'':<8}{rates['ceiling']:>9.0f}{rates['parse_body']:>11.0f}"
            f"{rates['parse+bin']:>10.0f}{peak.rows_per_s:>8.0f}"
            f"{rates['ceiling'] / max(peak.rows_per_s, 1e-9):>6.2f}x   {'':<13}"
            f"{cpu['ceiling'] * 1e3:>8.2f}{cpu['parse+bin'] * 1e3:>10.2f}{daemon_cpu * 1e3:>8.2f}"
            f"{daemon_cpu / max(cpu['ceiling'], 1e-12):>6.2f}x"
        )
    print(
        "(ratio: ceiling over daemon rows/s, and daemon over ceiling CPU per body; the CPU "
        "ratio is the steadier one on a busy machine)"
    )


def print_profile(path: Path, top: int) -> None:
    """The top functions of a cProfile dump, by own time and by cumulative time."""
    for order in ("tottime", "cumulative"):
        print(f"\n--- top {top} by {order} ---")
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.strip_dirs().sort_stats(order).print_stats(top)


# --- main ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=4, help="concurrent senders")
    parser.add_argument("--rows", type=int, default=1000, help="rows per body")
    parser.add_argument("--features", type=int, default=20, help="numeric features")
    parser.add_argument("--workers", type=int, default=2, help="the daemon's ingest.workers")
    parser.add_argument(
        "--processes", type=int, default=0, help="the daemon's ingest.processes (parse processes)"
    )
    parser.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"comma-separated body formats (default: {','.join(FORMATS)})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--profile", metavar="OUT", type=Path, help="run the daemon under cProfile into OUT"
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown with --profile")
    args = parser.parse_args(argv)
    if min(args.connections, args.rows, args.features, args.workers) < 1 or args.duration <= 0:
        parser.error("--duration, --connections, --rows, --features, --workers must be positive")
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        parser.error(f"--formats: expected some of {', '.join(FORMATS)}, got {args.formats!r}")

    with tempfile.TemporaryDirectory(prefix="driftmon-bench-ingest-") as tmp:
        directory = Path(tmp)
        config_path = write_config(
            directory, args.features, args.workers, args.seed, args.processes
        )
        every_body = make_bodies(args.rows, args.features, BODY_VARIANTS, args.seed)
        bodies = {fmt: every_body[fmt] for fmt in formats}
        cli = ["run", "-c", str(config_path), "--listen", "127.0.0.1:0"]
        gc_log = directory / "gc.json"
        if args.profile is not None:
            out = args.profile.resolve()
            argv_daemon = [sys.executable, "-c", _PROFILED_CLI, str(out), *cli]
        else:
            argv_daemon = [sys.executable, "-c", _GC_RECORDING_CLI, str(gc_log), *cli]
        sizes = ", ".join(f"{fmt} {len(bodies[fmt][0]) / 1024:.0f} KiB" for fmt in bodies)
        print(
            f"ingest: {args.rows} rows x {args.features} numeric features per body ({sizes}); "
            f"{args.connections} connections, {args.duration:g} s per phase, "
            f"ingest.workers {args.workers}, ingest.processes {args.processes}, "
            f"{os.cpu_count()} CPUs"
        )
        load_start = os.getloadavg()[0]
        daemon = Daemon(argv_daemon, directory)
        started = time.perf_counter()
        daemon.start()
        try:
            print(
                f"daemon pid {daemon.pid} ready at {daemon.url} in "
                f"{time.perf_counter() - started:.1f} s"
            )
            rss_idle = rss_bytes(daemon.pid)
            in_process = None if args.profile else InProcess(config_path, bodies, args.rows)
            every_phase = asyncio.run(
                run_phases(
                    daemon,
                    bodies,
                    duration_s=args.duration,
                    connections=args.connections,
                    n_rows=args.rows,
                    half_rate=args.profile is None,
                    in_process=in_process,
                    rounds=CEILING_ROUNDS,
                )
            )
            accepted = daemon.ingested_rows()
        finally:
            status = daemon.stop()
        if status != 0:
            print("".join(daemon.log), file=sys.stderr)
            raise RuntimeError(f"the daemon exited with status {status}")
        phases = [p for p in every_phase if p.name != "warm-up"]
        if args.profile is None:
            collections = read_gc_log(gc_log)
            for phase in phases:
                phase.gc = summarise_gc(collections, phase)
        print()
        print_phases(phases, args.features)
        # Every row answered 200 must be in the daemon's count, and nothing else posts.
        answered = sum(p.rows_ok for p in every_phase)
        if accepted != answered:
            raise RuntimeError(
                f"the daemon counted {accepted:.0f} rows; the load generator got 200 for {answered}"
            )
        if args.profile is not None:
            print("\n(profiled: Python runs slower under cProfile; its rates are not figures)")
            print_profile(args.profile, args.top)
            return 0
        assert in_process is not None
        print_in_process(in_process, phases)
        ok = judge(phases, in_process, rss_idle)
        load_end = os.getloadavg()[0]
        print(
            f"machine load average (1 min) {load_start:.2f} at the start, {load_end:.2f} at the "
            f"end, on {os.cpu_count()} CPUs: above the CPU count, figures are squeezed"
        )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
