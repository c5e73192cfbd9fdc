"""Soak, CI-sized (issue 7, promise 5): an hour of simulated time, nothing leaks, nothing lost.

``bench/soak.py`` drives a real in-process :class:`~driftmon.daemon.Daemon`
(``serve_forever``: HTTP listener, evaluation and checkpoint loops, reload
queue) on a :class:`~driftmon.clock.SimulatedClock`; its module docstring says
how. Here it runs one simulated hour (240 panes of 15 s, checkpoints every
5 min, a reload every 5 min), and again with leaks and a lost row injected
on purpose, to show that every check can fail. The long version is
``python bench/soak.py`` (24 simulated hours).

Also here: the simulated clock on its own, the bound checks on made-up
measurements, and the regression test of the leak the soak found in
:func:`~driftmon.sources.parse_body`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib.util
import json
import math
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import pytest

from driftmon.clock import SimulatedClock
from driftmon.sources import parse_body


def _load_bench_soak() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
    spec = importlib.util.spec_from_file_location("driftmon_bench_soak", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


soak = _load_bench_soak()

CI_SETTINGS = soak.SoakSettings(
    hours=1.0,
    warmup_s=1200.0,  # the window is full at 15 min; reloads of every kind by 20 min
    sample_every_s=300.0,
    drift_period_s=3600.0,
    drift_length_s=1200.0,  # drift from 40 min on: alerts fire during the hour
)


# --- the simulated clock ------------------------------------------------------------------------


def test_the_clock_moves_only_when_advanced() -> None:
    clock = SimulatedClock(1000.0)
    assert clock() == 1000.0 and clock() == 1000.0
    assert clock.advance(2.5) == 0
    assert clock() == 1002.5
    assert clock.advance_to(1001.0) == 0  # never backwards
    assert clock() == 1002.5
    clock.advance_to(1010.0)
    assert clock() == 1010.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_the_clock_rejects_bad_advances(bad: float) -> None:
    clock = SimulatedClock(0.0)
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(bad)
    assert clock() == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_the_clock_rejects_a_start_that_is_not_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="start_s"):
        SimulatedClock(bad)


async def _run_callbacks() -> None:
    """Let the event loop run what an advance scheduled (a wake-up, then the task's step)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_sleeper_wakes_exactly_at_its_deadline_and_in_order() -> None:
    async def scenario() -> list[tuple[str, float]]:
        clock = SimulatedClock(100.0)
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, delay_s: float) -> None:
            await clock.sleep(delay_s)
            woke.append((name, clock()))

        tasks = [
            asyncio.create_task(sleeper("late", 30.0)),
            asyncio.create_task(sleeper("early", 10.0)),
        ]
        await _run_callbacks()
        assert clock.sleepers == 2 and clock.next_deadline() == 110.0
        assert clock.advance(9.0) == 0
        await _run_callbacks()
        assert woke == []
        assert clock.advance(1.0) == 1  # exactly at 110
        await _run_callbacks()
        assert woke == [("early", 110.0)] and clock.sleepers == 1
        assert clock.advance(100.0) == 1  # one jump past the other deadline
        await asyncio.gather(*tasks)
        assert clock.sleepers == 0 and clock.next_deadline() is None
        return woke

    assert asyncio.run(scenario()) == [("early", 110.0), ("late", 210.0)]


def test_a_sleep_of_nothing_only_yields() -> None:
    async def scenario() -> int:
        clock = SimulatedClock(0.0)
        await clock.sleep(0.0)
        await clock.sleep(-5.0)
        await clock.sleep(math.nan)
        return clock.sleepers

    assert asyncio.run(scenario()) == 0


def test_a_cancelled_sleeper_is_forgotten() -> None:
    async def scenario() -> None:
        clock = SimulatedClock(0.0)
        task = asyncio.create_task(clock.sleep(60.0))
        await asyncio.sleep(0)
        assert clock.sleepers == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.sleepers == 0
        assert clock.advance(120.0) == 0

    asyncio.run(scenario())


def test_an_advance_from_another_thread_wakes_the_loop() -> None:
    async def scenario() -> float:
        clock = SimulatedClock(0.0)
        task = asyncio.create_task(clock.sleep(5.0))
        await asyncio.sleep(0)
        thread = threading.Thread(target=clock.advance, args=(5.0,))
        thread.start()
        await asyncio.wait_for(task, 30.0)
        thread.join(30.0)
        return clock()

    assert asyncio.run(scenario()) == 5.0


# --- the bounds, on made-up measurements --------------------------------------------------------


def _measurement(sim_s: float, **changes: object) -> object:
    values: dict[str, object] = {
        "step": int(sim_s // 15),
        "sim_s": sim_s,
        "wall_s": 0.0,
        "rss_bytes": 200 * 2**20,
        "peak_rss_bytes": 200 * 2**20,
        "fds": 20,
        "threads": 5,
        "ingest_threads": 2,
        "executor_threads": 2,
        "other_threads": frozenset({"MainThread#1"}),
        "tasks": 7,
        "gc_objects": 100_000,
        "allocated_blocks": 500_000,
        "heap_in_use_bytes": 40 * 2**20,
        "series": 100,
        "window_rows": 1000,
        "checkpoints": 0,
        "reloads": 0,
    }
    values.update(changes)
    return soak.Measurement(**values)


def _bounds(late: dict[str, object], early: dict[str, object] | None = None) -> list[str]:
    samples = [
        _measurement(0.0, **(early or {})),
        _measurement(3600.0),  # the baseline: the last one at the end of warm-up
        _measurement(7200.0),
        _measurement(10800.0, **late),
    ]
    problems: list[str] = soak.check_bounds(
        samples, 3600.0, 0.10, blocks_tolerance=0.02, ingest_pool=2, executor_pool=6
    )
    return problems


def test_flat_measurements_hold_every_bound() -> None:
    # Growth during warm-up, and shrinking after it, are not leaks.
    assert _bounds({"rss_bytes": 150 * 2**20, "fds": 18}, early={"rss_bytes": 20 * 2**20}) == []
    assert _bounds({"rss_bytes": int(200 * 2**20 * 1.099), "allocated_blocks": 509_000}) == []


@pytest.mark.parametrize(
    ("late", "phrase"),
    [
        ({"rss_bytes": int(200 * 2**20 * 1.11)}, "RSS grew +11.0%"),
        ({"fds": 23}, "open fds grew"),
        ({"gc_objects": 111_000}, "GC-tracked objects grew"),
        ({"allocated_blocks": 511_000}, "pymalloc blocks grew +2.2%"),
        ({"heap_in_use_bytes": 45 * 2**20}, "C heap in use grew"),
        ({"other_threads": frozenset({"MainThread#1", "leak#9"})}, "outside the pools: ['leak#9']"),
        ({"executor_threads": 7}, "executor_threads: 7 threads in a pool of 6"),
        ({"ingest_threads": 3}, "ingest_threads: 3 threads in a pool of 2"),
        ({"tasks": 8}, "asyncio tasks grew after warm-up: 7 at 1.00 h, 8 at 3.00 h"),
    ],
)
def test_each_bound_breaks_alone(late: dict[str, object], phrase: str) -> None:
    problems = _bounds(late)
    assert len(problems) == 1, problems
    assert phrase in problems[0]


def test_the_measurement_log_gives_back_what_it_was_given() -> None:
    log = soak.MeasurementLog(1)  # grows past its capacity
    samples = [
        _measurement(0.0),
        _measurement(900.0, heap_in_use_bytes=None, wall_s=1.25),
        _measurement(1800.0, other_threads=frozenset({"MainThread#1", "x#2"}), fds=21),
    ]
    for sample in samples:
        log.append(sample)
    assert len(log) == 3
    assert list(log) == samples and log[-1] == samples[2] and log[1:] == samples[1:]
    with pytest.raises(IndexError):
        log[3]


def test_the_bounds_need_measurements_after_warm_up() -> None:
    samples = [_measurement(0.0), _measurement(3600.0)]
    problems = soak.check_bounds(
        samples, 3600.0, 0.10, blocks_tolerance=0.02, ingest_pool=2, executor_pool=6
    )
    assert problems and "both sides of warm-up" in problems[0]


# --- the leak the soak found --------------------------------------------------------------------


def test_rows_that_lack_a_field_leak_no_memory() -> None:
    """Rows missing a monitored field take parse's slow path after a KeyError in the fast
    one. Under CPython 3.11 that KeyError, raised while ``zip(*lookups, strict=True)``
    unpacked its arguments, leaked the call's keyword dict: two pymalloc blocks per
    request, found by the soak as a steady +0.9k blocks per simulated hour."""
    rows = [{"a": float(i), "b": "x", "c": None} for i in range(40)]
    rows.insert(20, {"a": 1.0})
    body = json.dumps(rows).encode()
    fields = ["a", "b", "c"]
    for _ in range(200):  # caches and free lists settle
        parse_body(body, "application/json", fields)
    gc.collect()
    before = sys.getallocatedblocks()
    for _ in range(3000):
        batch = parse_body(body, "application/json", fields)
    gc.collect()
    grown = sys.getallocatedblocks() - before
    assert batch.n_rows == 41 and batch.columns["b"][20] is None
    assert grown < 1000, f"{grown} pymalloc blocks more after 3000 bodies (2 a body leaked)"


# --- the soak -----------------------------------------------------------------------------------


def test_one_simulated_hour_holds_every_bound_and_loses_nothing(tmp_path: Path) -> None:
    result = asyncio.run(soak.soak(CI_SETTINGS, tmp_path))
    figures = result.figures()
    assert result.problems == [], "\n".join(result.problems)
    assert result.steps == 240 and figures["simulated_hours"] == 1.0
    assert result.exit_status == 0 and result.restored_equal
    # Every periodic checkpoint and every reload of every kind happened.
    assert result.checkpoints == 12
    assert result.reloads == 11 and result.failed_reloads == 3
    # One exact comparison of every monitor every 5 simulated minutes, none off by a row.
    assert result.exact_checks == 12 and result.max_loss_rows == 0
    assert len(result.samples) == 12
    assert result.rows_posted > 50_000 and result.requests_posted == 720
    # The drifted phase made alerts fire (and their logs are counted, not errors).
    assert result.alert_transitions > 0
    assert result.log_records.get("WARNING", 0) > 0
    assert result.series > 0 and {s.series for s in result.samples[4:]} == {result.series}
    assert figures["rss_max_drift_pct"] <= 10.0


def test_the_soak_catches_leaks_and_a_lost_row(tmp_path: Path) -> None:
    """The same soak with faults injected after warm-up: each must be reported."""
    release = threading.Event()
    threads: list[threading.Thread] = []
    files: list[BinaryIO] = []
    kept: list[object] = []
    settings = dataclasses.replace(CI_SETTINGS, hours=0.75, warmup_s=900.0)

    async def disturb(context: soak.SoakContext) -> None:
        if not context.warmed_up:
            return
        kept.append(b"\x01" * 2**20)  # 1 MiB a step, written to: resident
        files.append(open(__file__, "rb"))  # noqa: SIM115 (an fd leak, on purpose)
        # A task a step; asyncio.run cancels them at the end (the list keeps them alive).
        kept.append(asyncio.get_running_loop().create_task(asyncio.Event().wait()))
        if context.step % 20 == 0:
            thread = threading.Thread(target=release.wait, name=f"leak-{context.step}")
            thread.start()
            threads.append(thread)
        if len(files) == 1 or context.step == settings.steps - 1:
            # A row behind the soak's back: at once, and at the very end (for the restore).
            extra = parse_body(b'[{"amount": 1.0}]', "application/json", ["amount"])
            context.daemon.ingest_batch(soak.CREDIT, extra)
        if len(files) == 1:  # and once, a bad request
            async with context.session.post(
                f"{context.url}/v1/streams/{soak.CREDIT}/rows",
                data=b"[{",
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 400

    try:
        result = asyncio.run(soak.soak(settings, tmp_path, disturb=disturb))
    finally:
        release.set()
        for thread in threads:
            thread.join(30.0)
        for file in files:
            file.close()
    problems = "\n".join(result.problems)
    for phrase in (
        "RSS grew",
        "open fds grew",
        "threads started after warm-up outside the pools: ['leak-",
        "asyncio tasks grew after warm-up",
        "series changed",
        "ingest answers other than 200",
        "credit: ",  # rows counted
        "credit/amount live: got",
    ):
        assert phrase in problems, f"{phrase!r} not reported:\n{problems}"
    assert result.max_loss_rows == 1
    assert not result.restored_equal  # the checkpoint holds the last extra row too
    assert "restored credit/amount live: got" in problems
    for problem in result.problems:
        assert "churn/" not in problem, problem  # the other stream lost nothing
