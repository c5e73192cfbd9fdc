"""One contract, run over every window kind (river ``checks/`` style).

Each kind is built by a factory over a stream of 2 features (3 + 2 bins) and
fed batches made by one helper, so a new window kind joins by adding a factory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from driftmon.window import NOT_REACHED, Carry, LiveWindow, PaneWindow, SampleWindow

N_BINS = 5
FEATURE_STARTS = (0, 3)

WindowFactory = Callable[[np.ndarray], LiveWindow]

FACTORIES: dict[str, WindowFactory] = {
    "panes": lambda live: PaneWindow(live, panes=4, pane_width_s=10.0),
    "samples": lambda live: SampleWindow(live, samples=50, n_features=2),
}


def batch(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin indices ``[rows, 2]`` (some not reached) and their counts over the 5 bins."""
    indices = np.column_stack([rng.integers(0, 3, rows), 3 + rng.integers(0, 2, rows)]).astype(
        np.int32
    )
    indices[rng.random(indices.shape) < 0.1] = NOT_REACHED
    reached = indices[indices >= 0]
    return indices, np.bincount(reached, minlength=N_BINS).astype(np.float64)


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest) -> WindowFactory:
    factory: WindowFactory = FACTORIES[request.param]
    return factory


def test_live_counts_what_was_added_while_nothing_expires(make: WindowFactory) -> None:
    rng = np.random.default_rng(1)
    window = make(np.zeros(N_BINS))
    total = np.zeros(N_BINS)
    for second in range(3):
        indices, counts = batch(rng, 10)
        window.add(counts, float(second), indices)
        total += counts
    window.advance(3.0)
    np.testing.assert_array_equal(window.live, total)


def test_live_never_goes_negative_and_never_exceeds_what_was_added(
    make: WindowFactory,
) -> None:
    rng = np.random.default_rng(2)
    window = make(np.zeros(N_BINS))
    added = np.zeros(N_BINS)
    for step in range(40):
        indices, counts = batch(rng, int(rng.integers(0, 30)))
        window.add(counts, step * 3.0, indices)
        added += counts
        assert (window.live >= 0).all()
        assert (window.live <= added).all()


def test_live_is_a_view_of_the_callers_array(make: WindowFactory) -> None:
    packed = np.zeros(N_BINS + 2)
    window = make(packed[1 : 1 + N_BINS])
    indices, counts = batch(np.random.default_rng(3), 20)
    window.add(counts, 0.0, indices)
    np.testing.assert_array_equal(packed[1 : 1 + N_BINS], counts)
    assert packed[0] == packed[-1] == 0.0


def test_state_then_restore_is_the_same_window(make: WindowFactory) -> None:
    rng = np.random.default_rng(4)
    window = make(np.zeros(N_BINS))
    for second in range(12):
        indices, counts = batch(rng, 15)
        window.add(counts, second * 2.5, indices)
    restored = make(np.zeros(N_BINS))
    restored.restore(window.state(), 30.0)
    window.advance(30.0)
    np.testing.assert_array_equal(restored.live, window.live)
    for name, array in window.state().items():
        np.testing.assert_array_equal(restored.state()[name], array)
    # And they go on alike.
    indices, counts = batch(rng, 5)
    window.add(counts, 31.0, indices)
    restored.add(counts, 31.0, indices)
    np.testing.assert_array_equal(restored.live, window.live)


def test_state_is_a_copy(make: WindowFactory) -> None:
    window = make(np.zeros(N_BINS))
    state = window.state()
    indices, counts = batch(np.random.default_rng(5), 10)
    window.add(counts, 0.0, indices)
    fresh = make(np.zeros(N_BINS))
    fresh.restore(state, 0.0)
    np.testing.assert_array_equal(fresh.live, np.zeros(N_BINS))


def test_restoring_state_of_another_shape_is_refused(make: WindowFactory) -> None:
    window = make(np.zeros(N_BINS))
    truncated = {name: np.asarray(array)[..., :1] for name, array in window.state().items()}
    with pytest.raises(ValueError):
        window.restore(truncated, 0.0)


def test_carried_moves_kept_features_and_empties_the_rest(make: WindowFactory) -> None:
    """The feature at bins 3:5 moves to 0:2 of a new layout; the other one is dropped."""
    rng = np.random.default_rng(6)
    window = make(np.zeros(N_BINS))
    for second in range(5):
        indices, counts = batch(rng, 20)
        window.add(counts, float(second), indices)
    moved = make(np.zeros(N_BINS))
    carry = Carry(old_column=1, new_column=0, old_start=3, new_start=0, n_bins=2)
    moved.restore(moved.carried(window.state(), [carry]), 5.0)
    window.advance(5.0)
    np.testing.assert_array_equal(moved.live[0:2], window.live[3:5])
    np.testing.assert_array_equal(moved.live[2:], np.zeros(N_BINS - 2))


def test_carrying_every_feature_in_place_changes_nothing(make: WindowFactory) -> None:
    rng = np.random.default_rng(7)
    window = make(np.zeros(N_BINS))
    for second in range(5):
        indices, counts = batch(rng, 20)
        window.add(counts, float(second), indices)
    carries = [Carry(0, 0, 0, 0, 3), Carry(1, 1, 3, 3, 2)]
    same = make(np.zeros(N_BINS))
    same.restore(same.carried(window.state(), carries), 5.0)
    window.advance(5.0)
    np.testing.assert_array_equal(same.live, window.live)
