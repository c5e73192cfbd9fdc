"""Windows: the live counts are exactly those of the rows still inside (docs/configuration.md)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.window import NOT_REACHED, PaneWindow, SampleWindow

N_BINS = 5


@st.composite
def timed_batches(draw: st.DrawFn) -> list[tuple[float, np.ndarray]]:
    """Batches of counts at non-decreasing times, gaps of all sizes included."""
    now = draw(st.floats(0, 1e6))
    batches = []
    for _ in range(draw(st.integers(0, 30))):
        now += draw(st.sampled_from([0.0, 0.1, 0.9, 1.0, 2.5, 7.0, 40.0]))
        counts = np.array(draw(st.lists(st.integers(0, 9), min_size=N_BINS, max_size=N_BINS)))
        batches.append((now, counts.astype(np.float64)))
    return batches


@settings(max_examples=200, deadline=None)
@given(
    batches=timed_batches(),
    panes=st.integers(1, 6),
    width=st.sampled_from([0.5, 1.0, 3.0]),
    extra=st.sampled_from([0.0, 1.0, 5.0, 100.0]),
)
def test_pane_window_holds_exactly_the_rows_of_the_newest_panes(
    batches: list[tuple[float, np.ndarray]], panes: int, width: float, extra: float
) -> None:
    live = np.zeros(N_BINS)
    window = PaneWindow(live, panes, width)
    for now, counts in batches:
        window.add(counts, now)
    end = (batches[-1][0] if batches else 0.0) + extra
    window.advance(end)
    # Naive: a batch is inside when its pane is one of the `panes` newest,
    # the pane holding `end` included.
    newest = math.floor(end / width)
    expected = np.zeros(N_BINS)
    for now, counts in batches:
        if newest - panes < math.floor(now / width) <= newest:
            expected += counts
    np.testing.assert_array_equal(live, expected)
    np.testing.assert_array_equal(window.pane_counts.sum(axis=0), live)
    assert live.min() >= 0  # never double-subtracted


def test_pane_window_drops_a_pane_whole_when_it_falls_out() -> None:
    live = np.zeros(2)
    window = PaneWindow(live, panes=3, pane_width_s=10.0)
    window.add(np.array([1.0, 0.0]), 0.0)
    window.add(np.array([0.0, 1.0]), 9.99)
    window.add(np.array([1.0, 1.0]), 10.0)
    window.advance(29.99)
    np.testing.assert_array_equal(live, [2.0, 2.0])
    window.advance(30.0)  # pane 0 falls out: both of its rows at once
    np.testing.assert_array_equal(live, [1.0, 1.0])
    window.advance(1000.0)  # a gap longer than the window empties it
    np.testing.assert_array_equal(live, [0.0, 0.0])


def test_pane_window_puts_late_rows_in_the_current_pane() -> None:
    live = np.zeros(1)
    window = PaneWindow(live, panes=2, pane_width_s=1.0)
    window.add(np.array([1.0]), 5.0)
    window.add(np.array([1.0]), 2.0)  # older than the current pane
    assert window.current_pane == 5
    np.testing.assert_array_equal(window.pane_counts[5 % 2], [2.0])


def test_pane_window_state_round_trip_drops_panes_expired_meanwhile() -> None:
    live = np.zeros(2)
    window = PaneWindow(live, panes=4, pane_width_s=1.0)
    for t in range(6):
        window.add(np.array([1.0, float(t)]), float(t))
    state = window.state()
    restored_live = np.zeros(2)
    restored = PaneWindow(restored_live, panes=4, pane_width_s=1.0)
    restored.restore(state, now=5.5)
    np.testing.assert_array_equal(restored_live, live)
    restored.restore(state, now=7.0)  # panes 2 and 3 expired while "down"
    np.testing.assert_array_equal(restored_live, [2.0, 4.0 + 5.0])


@st.composite
def row_batches(draw: st.DrawFn) -> list[np.ndarray]:
    n_features = 3
    batches = []
    for _ in range(draw(st.integers(0, 12))):
        rows = draw(st.integers(0, 9))
        cells = draw(
            st.lists(
                st.integers(NOT_REACHED, N_BINS - 1),
                min_size=rows * n_features,
                max_size=rows * n_features,
            )
        )
        batches.append(np.array(cells, dtype=np.int32).reshape(rows, n_features))
    return batches


@settings(max_examples=200, deadline=None)
@given(batches=row_batches(), samples=st.integers(1, 15))
def test_sample_window_holds_exactly_the_last_n_rows(
    batches: list[np.ndarray], samples: int
) -> None:
    live = np.zeros(N_BINS)
    window = SampleWindow(live, samples, n_features=3)
    for batch in batches:
        window.add_rows(batch)
    all_rows = np.concatenate(batches) if batches else np.zeros((0, 3), dtype=np.int32)
    last = all_rows[max(0, len(all_rows) - samples) :]
    expected = np.bincount(last[last >= 0], minlength=N_BINS)
    np.testing.assert_array_equal(live, expected)
    assert window.filled == min(samples, len(all_rows))


def test_sample_window_state_round_trip() -> None:
    live = np.zeros(N_BINS)
    window = SampleWindow(live, 4, n_features=2)
    window.add_rows(np.array([[0, 1], [2, NOT_REACHED], [3, 4], [1, 1], [0, 0]], dtype=np.int32))
    restored_live = np.zeros(N_BINS)
    restored = SampleWindow(restored_live, 4, n_features=2)
    restored.restore(window.state())
    np.testing.assert_array_equal(restored_live, live)
    restored.add_rows(np.array([[4, 4]], dtype=np.int32))
    window.add_rows(np.array([[4, 4]], dtype=np.int32))
    np.testing.assert_array_equal(restored_live, live)
