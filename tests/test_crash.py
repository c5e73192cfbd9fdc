"""Crash (issue 7, promise 1): ``kill -9`` during steady ingest and checkpointing loses at most
one checkpoint interval of acknowledged rows, never restores a row it did not acknowledge, and
never leaves a torn checkpoint (docs/http-api.md, docs/durability.md).

The campaign itself lives in ``bench/chaos.py`` (its module docstring says what it checks and
why each check can fail); here it runs CI-sized: 20 kills during ingest (half of them aimed at
the inside of a checkpoint write) and 2 during a start. ``python bench/chaos.py --kills 200``
is the long version. The checker is also fed hand-made outcomes that break each promise, and
a daemon whose checkpoints are an hour apart must fail the campaign: the checks bite.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from driftmon.checkpoint import CHECKPOINT_NAME


def _load_chaos() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "chaos.py"
    spec = importlib.util.spec_from_file_location("chaos", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()


# --- the real thing ---------------------------------------------------------------------------


def test_twenty_sigkills_during_ingest_and_checkpoints_lose_at_most_one_interval(
    tmp_path: Path,
) -> None:
    campaign = chaos.Campaign(kills=22, seed=7, start_kill_every=11)
    lines: list[str] = []
    report = chaos.run_campaign(tmp_path, campaign, say=lines.append)
    story = "\n".join([*lines, report.summary(campaign)])
    assert report.violations == [], story
    assert report.survived == 22, story
    kinds = [kill.kind for kill in report.kills]
    assert kinds.count("random") + kinds.count("mid-write") == 20, kinds
    assert kinds.count("starting") == 2, kinds
    # Aimed kills do land inside writes (a temporary left behind), and a start removes them.
    assert report.mid_write >= 3, story
    # Rows were acknowledged and some were lost to kills, each loss within one interval
    # (run_campaign's checks); the final SIGTERM kept everything acknowledged after them.
    assert report.acked_rows >= 2000, story
    assert 0 < report.lost_rows < report.acked_rows, story
    assert report.max_lost_rows <= campaign.max_lost_batches() * campaign.batch_rows, story
    assert report.final_rows >= report.acked_rows - report.lost_rows, story
    assert (tmp_path / "state" / CHECKPOINT_NAME).is_file()


def test_a_daemon_that_checkpoints_too_rarely_fails_the_campaign(tmp_path: Path) -> None:
    """The control: the same checks on a daemon whose checkpoints are an hour apart."""
    campaign = chaos.Campaign(
        kills=2,
        seed=1,
        start_kill_every=0,
        min_uptime_s=1.4,
        max_uptime_s=1.5,
        daemon_checkpoint_every_s=3600.0,
        warm_kernels=False,
    )
    report = chaos.run_campaign(tmp_path, campaign)
    assert len(report.kills) == 2
    losses = [v for v in report.violations if "more than one checkpoint interval" in v]
    assert len(losses) >= 2, report.violations  # both streams, at the first kill at least


# --- the checker against hand-made outcomes --------------------------------------------------

ROWS = 10
BINS = 20  # batch bins; the histogram has BINS + 4 bins


def histogram(batches: dict[int, float]) -> np.ndarray:
    counts = np.zeros(BINS + chaos.SPECIAL_BINS)
    for batch, rows in batches.items():
        counts[batch + 1] = rows
    return counts


def sent(*batches: tuple[int, float, float | None, int]) -> list[object]:
    return [chaos.Sent(b, sent_at, acked_at, status) for b, sent_at, acked_at, status in batches]


# Batches 0-2 restored before; this cycle sent 3, 4, 5 (acknowledged) and 6 (no answer).
BASE = frozenset({0, 1, 2})
CYCLE = sent(
    (3, 100.00, 100.01, 200),
    (4, 100.10, 100.11, 200),
    (5, 100.20, 100.21, 200),
    (6, 100.30, None, 0),
)


def judge(
    counts: np.ndarray, *, saved_at: float | None = 100.15, killed_at: float = 100.35
) -> list[str]:
    _, errors = chaos.check_kill(
        "s",
        counts,
        rows=ROWS,
        base=BASE,
        sent=CYCLE,
        saved_at=saved_at,
        killed_at=killed_at,
        saved_at_slack_s=0.05,
        max_lost_batches=2,
    )
    return errors


def whole(*batches: int) -> np.ndarray:
    return histogram(dict.fromkeys(batches, float(ROWS)))


def test_the_checker_accepts_a_prefix_of_the_acknowledged_batches() -> None:
    checked, errors = chaos.check_kill(
        "s",
        whole(0, 1, 2, 3, 4),
        rows=ROWS,
        base=BASE,
        sent=CYCLE,
        saved_at=100.15,
        killed_at=100.35,
        saved_at_slack_s=0.05,
        max_lost_batches=2,
    )
    assert errors == []
    assert checked.batches == {0, 1, 2, 3, 4}
    assert checked.acked_rows == 3 * ROWS and checked.lost_rows == ROWS
    assert checked.lost_window_s == pytest.approx(100.35 - 100.21)
    # The batch in flight at the kill may be in a later checkpoint: its answer was lost.
    assert judge(whole(0, 1, 2, 3, 4, 5, 6), saved_at=100.32) == []


@pytest.mark.parametrize(
    ("case", "counts", "saved_at", "killed_at", "complaint"),
    [
        ("half a batch", histogram({0: 10, 1: 10, 2: 10, 3: 10, 4: 5}), 100.15, 100.35, "whole"),
        ("a row outside", whole(0, 1, 2, 3, 4) + np.eye(BINS + 4)[0], 100.15, 100.35, "outside"),
        ("a restored batch lost", whole(0, 2, 3, 4), 100.15, 100.35, "restored before"),
        ("not a prefix", whole(0, 1, 2, 3, 5), 100.25, 100.35, "prefix"),
        ("never sent", whole(0, 1, 2, 3, 4, 9), 100.15, 100.35, "prefix"),
        ("sent after the stamp", whole(0, 1, 2, 3, 4), 100.05, 100.35, "after"),
        ("acknowledged long before", whole(0, 1, 2, 3), 100.30, 100.35, "before the checkpoint"),
        ("more than an interval", whole(0, 1, 2), 100.05, 100.35, "more than one"),
        ("counted without a file", whole(0, 1, 2, 3), None, 100.25, "no checkpoint"),
    ],
)
def test_the_checker_refuses_each_broken_promise(
    case: str, counts: np.ndarray, saved_at: float | None, killed_at: float, complaint: str
) -> None:
    errors = judge(counts, saved_at=saved_at, killed_at=killed_at)
    assert any(complaint in e for e in errors), (case, errors)


def test_the_checker_refuses_a_restored_batch_that_was_refused() -> None:
    refused = sent((3, 100.0, 100.01, 200), (4, 100.1, 100.11, 503), (5, 100.2, 100.21, 200))
    _, errors = chaos.check_kill(
        "s",
        whole(0, 1, 2, 3, 4),
        rows=ROWS,
        base=BASE,
        sent=refused,
        saved_at=100.15,
        killed_at=100.3,
        saved_at_slack_s=0.05,
        max_lost_batches=2,
    )
    assert any("answered 503 is restored" in e for e in errors), errors
    assert any("was answered 503" in e for e in errors), errors


def test_the_ring_must_hold_the_rows_in_sending_order() -> None:
    ring = np.full((100, 1), -1, dtype=np.int32)
    ring[:30, 0] = np.repeat([1, 2, 3], ROWS)
    head = np.array([30, 30])
    assert chaos.check_ring(ring, head, frozenset({0, 1, 2}), ROWS) == []
    swapped = ring.copy()
    swapped[:30, 0] = np.repeat([2, 1, 3], ROWS)
    assert chaos.check_ring(swapped, head, frozenset({0, 1, 2}), ROWS)
    assert chaos.check_ring(ring, np.array([29, 30]), frozenset({0, 1, 2}), ROWS)
    assert chaos.check_ring(ring, head, frozenset({0, 1}), ROWS)
