"""Alert state machine (docs/divergences.md#alert-states), vectorised over (rule, monitor) pairs.

Alerting is pure: :func:`advance` takes the current states of ``N`` pairs
(an :class:`AlertTable`), their rules' parameters (a :class:`RuleParams`),
this evaluation's metric values, p-values and window sample counts, and the
clock reading ``now``; it returns the next table. No hidden clock, no I/O, no
Python loop per pair: one call costs a few dozen numpy passes over ``N``.
The transitions, their edge cases (strict ``>``, hysteresis, held pairs: no
verdict below ``min_samples`` or for a NaN metric) are documented in the
docs' state table and tested in tests/test_alerting.py. Times are seconds on
any clock the caller chooses, as long as ``now`` never decreases from one
call to the next for the same table.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftmon.config import AlertRule


class AlertState(enum.IntEnum):
    """The state of one (rule, monitor) pair, as stored in ``AlertTable.state``."""

    INACTIVE = 0
    PENDING = 1
    FIRING = 2


_INACTIVE = np.int8(AlertState.INACTIVE)
_PENDING = np.int8(AlertState.PENDING)
_FIRING = np.int8(AlertState.FIRING)


def _read_only(array: np.ndarray) -> np.ndarray:
    """A view of ``array`` that cannot be written through."""
    view = array.view()
    view.flags.writeable = False
    return view


def _vector(name: str, values: object, *, integer: bool = False) -> np.ndarray:
    """``values`` as a 1-D float64 (or int64) array; ``ValueError`` naming ``name``."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: must be a 1-D array, got shape {array.shape}")
    kind = array.dtype.kind
    if integer:
        if kind not in "iu":
            raise ValueError(f"{name}: must have an integer dtype, got {array.dtype}")
        return array.astype(np.int64, copy=False)
    # Booleans are numbers to numpy but never a metric, a time or a count here.
    if kind not in "iuf":
        raise ValueError(f"{name}: must have a numeric dtype, got {array.dtype}")
    return array.astype(np.float64, copy=False)


def _same_length(n: int, **arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if array.shape[0] != n:
            raise ValueError(
                f"{name}: must have length {n} (one entry per pair), got {array.shape[0]}"
            )


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True, eq=False)
class AlertTable:
    """An immutable snapshot of the alert states of ``N`` (rule, monitor) pairs.

    ``state`` is int8 (:class:`AlertState` values). The three times are
    float64 seconds on the caller's clock, NaN when they do not apply:

    - ``active_at``: when the current pending period began (Prometheus
      ``ActiveAt``); kept while firing; NaN when inactive.
    - ``fired_at``: when the pair started firing; NaN unless firing.
    - ``cleared_at``: the first evaluation at which a firing pair's condition
      cleared, while ``keep_firing_for`` holds it firing; NaN otherwise.

    The arrays are read-only views (the constructor converts and checks
    them), so a table can be shared with scrapes and checkpoints while the
    next one is computed. The constructor raises ``ValueError`` naming the
    field for a wrong shape or dtype, a state outside 0..2, or times that
    contradict the state (e.g. a pending pair without ``active_at``), which
    is what a restored checkpoint must satisfy. Tables compare by identity;
    compare the arrays to compare contents.
    """

    state: np.ndarray
    active_at: np.ndarray
    fired_at: np.ndarray
    cleared_at: np.ndarray

    def __post_init__(self) -> None:
        state = _vector("AlertTable.state", self.state, integer=True)
        if np.any((state < AlertState.INACTIVE) | (state > AlertState.FIRING)):
            bad = _first_bad((state < AlertState.INACTIVE) | (state > AlertState.FIRING))
            raise ValueError(
                f"AlertTable.state[{bad}]: must be 0 (inactive), 1 (pending) or 2 (firing), "
                f"got {state[bad]}"
            )
        state = state.astype(np.int8)
        n = state.shape[0]
        times = {
            "AlertTable.active_at": _vector("AlertTable.active_at", self.active_at),
            "AlertTable.fired_at": _vector("AlertTable.fired_at", self.fired_at),
            "AlertTable.cleared_at": _vector("AlertTable.cleared_at", self.cleared_at),
        }
        _same_length(n, **times)
        active_at, fired_at, cleared_at = times.values()
        for name, values in times.items():
            if np.any(np.isinf(values)):
                raise ValueError(f"{name}[{_first_bad(np.isinf(values))}]: must be finite or NaN")
        inactive = state == _INACTIVE
        firing = state == _FIRING
        # Every time is either meaningful for the state or NaN: a checkpoint
        # that breaks this would make ``advance`` compare against NaN forever.
        rules = (
            ("AlertTable.active_at", inactive & ~np.isnan(active_at), "NaN when inactive"),
            ("AlertTable.active_at", ~inactive & np.isnan(active_at), "set when pending or firing"),
            ("AlertTable.fired_at", ~firing & ~np.isnan(fired_at), "NaN unless firing"),
            ("AlertTable.fired_at", firing & np.isnan(fired_at), "set when firing"),
            ("AlertTable.cleared_at", ~firing & ~np.isnan(cleared_at), "NaN unless firing"),
        )
        for name, bad_mask, expectation in rules:
            if np.any(bad_mask):
                bad = _first_bad(bad_mask)
                raise ValueError(
                    f"{name}[{bad}]: must be {expectation} (state {AlertState(state[bad]).name}), "
                    f"got {times[name][bad]}"
                )
        object.__setattr__(self, "state", _read_only(state))
        object.__setattr__(self, "active_at", _read_only(active_at))
        object.__setattr__(self, "fired_at", _read_only(fired_at))
        object.__setattr__(self, "cleared_at", _read_only(cleared_at))

    def __len__(self) -> int:
        """The number of pairs ``N``."""
        return int(self.state.shape[0])

    @classmethod
    def empty(cls, n: int) -> AlertTable:
        """``n`` pairs, all inactive with every time NaN; ``n`` may be 0."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n: must be a non-negative integer, got {n!r}")
        nan = np.full(int(n), np.nan)
        return cls(
            state=np.zeros(int(n), dtype=np.int8),
            active_at=nan,
            fired_at=nan.copy(),
            cleared_at=nan.copy(),
        )


@dataclass(frozen=True, eq=False)
class RuleParams:
    """Per-pair rule parameters as arrays of length ``N``, built once per config.

    - ``threshold``, ``clear_threshold``: float64, finite, ``clear_threshold
      <= threshold`` (a firing alert must not clear while it would start
      again: that would flap).
    - ``for_s``, ``keep_firing_for_s``: float64 seconds, finite, ``>= 0``.
    - ``min_samples``: int64, ``>= 0``.
    - ``max_p_value``: float64 in ``(0, 1]``, or NaN for a rule without one.

    The constructor converts the arrays to read-only views of those dtypes and
    raises ``ValueError`` naming the field and the first offending pair.
    Compares by identity, like :class:`AlertTable`.
    """

    threshold: np.ndarray
    clear_threshold: np.ndarray
    for_s: np.ndarray
    keep_firing_for_s: np.ndarray
    min_samples: np.ndarray
    max_p_value: np.ndarray

    def __post_init__(self) -> None:
        threshold = _vector("RuleParams.threshold", self.threshold)
        n = threshold.shape[0]
        floats = {
            "RuleParams.threshold": threshold,
            "RuleParams.clear_threshold": _vector(
                "RuleParams.clear_threshold", self.clear_threshold
            ),
            "RuleParams.for_s": _vector("RuleParams.for_s", self.for_s),
            "RuleParams.keep_firing_for_s": _vector(
                "RuleParams.keep_firing_for_s", self.keep_firing_for_s
            ),
        }
        min_samples = _vector("RuleParams.min_samples", self.min_samples, integer=True)
        max_p_value = _vector("RuleParams.max_p_value", self.max_p_value)
        _same_length(
            n,
            **floats,
            **{"RuleParams.min_samples": min_samples, "RuleParams.max_p_value": max_p_value},
        )
        for name, values in floats.items():
            _check(name, ~np.isfinite(values), values, "finite")
        clear_threshold = floats["RuleParams.clear_threshold"]
        _check(
            "RuleParams.clear_threshold",
            clear_threshold > threshold,
            clear_threshold,
            "<= threshold",
        )
        for name in ("RuleParams.for_s", "RuleParams.keep_firing_for_s"):
            _check(name, floats[name] < 0, floats[name], ">= 0 seconds")
        _check("RuleParams.min_samples", min_samples < 0, min_samples, ">= 0")
        set_p = ~np.isnan(max_p_value)
        _check(
            "RuleParams.max_p_value",
            set_p & ~((max_p_value > 0) & (max_p_value <= 1)),
            max_p_value,
            "in (0, 1], or NaN for no p-value condition",
        )
        object.__setattr__(self, "threshold", _read_only(threshold))
        object.__setattr__(self, "clear_threshold", _read_only(clear_threshold))
        object.__setattr__(self, "for_s", _read_only(floats["RuleParams.for_s"]))
        object.__setattr__(
            self, "keep_firing_for_s", _read_only(floats["RuleParams.keep_firing_for_s"])
        )
        object.__setattr__(self, "min_samples", _read_only(min_samples))
        object.__setattr__(self, "max_p_value", _read_only(max_p_value))

    def __len__(self) -> int:
        """The number of pairs ``N``."""
        return int(self.threshold.shape[0])

    @classmethod
    def from_rules(cls, rules: Sequence[AlertRule]) -> RuleParams:
        """One entry per pair, in order: ``rules[i]`` is the rule of pair ``i``.

        The same rule object is typically repeated for every monitor it
        matches; each distinct object is read once, so 100 000 pairs over a
        handful of rules cost one index array, not 100 000 attribute reads
        per field. ``None`` fields map to their defaults (``clear_below`` →
        ``threshold``, ``max_p_value`` → NaN). Raises ``ValueError`` naming
        the rule for values the state machine cannot honour (see the class
        docstring); the config loader should have caught them already.
        """
        distinct: dict[int, int] = {}
        distinct_rules: list[AlertRule] = []
        rule_index = np.empty(len(rules), dtype=np.intp)
        for pair, rule in enumerate(rules):
            index = distinct.setdefault(id(rule), len(distinct_rules))
            if index == len(distinct_rules):
                _check_rule(rule)
                distinct_rules.append(rule)
            rule_index[pair] = index

        def column(values: list[float] | list[int], dtype: type) -> np.ndarray:
            return np.asarray(values, dtype=dtype)[rule_index]

        return cls(
            threshold=column([r.threshold for r in distinct_rules], np.float64),
            clear_threshold=column([r.clear_threshold for r in distinct_rules], np.float64),
            for_s=column([r.for_s for r in distinct_rules], np.float64),
            keep_firing_for_s=column([r.keep_firing_for_s for r in distinct_rules], np.float64),
            min_samples=column([r.min_samples for r in distinct_rules], np.int64),
            max_p_value=column(
                [math.nan if r.max_p_value is None else r.max_p_value for r in distinct_rules],
                np.float64,
            ),
        )


def _check(name: str, bad_mask: np.ndarray, values: np.ndarray, expectation: str) -> None:
    if np.any(bad_mask):
        bad = _first_bad(bad_mask)
        raise ValueError(f"{name}[{bad}]: must be {expectation}, got {values[bad]}")


def _check_rule(rule: AlertRule) -> None:
    """``ValueError`` naming ``rule`` for parameters that ``RuleParams`` would reject."""
    problems = []
    if not math.isfinite(rule.threshold):
        problems.append(f"threshold must be finite, got {rule.threshold}")
    clear = rule.clear_threshold
    if not math.isfinite(clear) or clear > rule.threshold:
        problems.append(
            f"clear_below must be finite and <= threshold ({rule.threshold}), got {clear}"
        )
    for field_name, seconds in (("for", rule.for_s), ("keep_firing_for", rule.keep_firing_for_s)):
        if not (math.isfinite(seconds) and seconds >= 0):
            problems.append(f"{field_name} must be >= 0 seconds, got {seconds}")
    if rule.min_samples < 0:
        problems.append(f"min_samples must be >= 0, got {rule.min_samples}")
    if rule.max_p_value is not None and not 0 < rule.max_p_value <= 1:
        problems.append(f"max_p_value must be in (0, 1], got {rule.max_p_value}")
    if problems:
        raise ValueError(f"alert rule {rule.name!r}: " + "; ".join(problems))


def advance(
    table: AlertTable,
    params: RuleParams,
    *,
    value: np.ndarray,
    p_value: np.ndarray,
    samples: np.ndarray,
    now: float,
) -> AlertTable:
    """The states of every pair after one evaluation at time ``now``.

    ``value[i]`` is pair ``i``'s rule metric (NaN: the monitor has no
    divergence), ``p_value[i]`` its monitor's docs/divergences.md p-value in ``[0, 1]`` (NaN
    allowed; only read for rules with ``max_p_value``), ``samples[i]`` the
    rows in its live window (``>= 0``), ``now`` the evaluation time in
    seconds. The transitions and the treatment of held pairs (below
    ``min_samples`` or without a divergence) are in the module docstring.

    Pure: ``table`` is not modified; the result is a new table. Raises
    ``ValueError`` naming the argument when a length differs from the
    table's, a dtype is not numeric, ``samples`` is negative or NaN,
    ``p_value`` is outside ``[0, 1]``, or ``now`` is not finite.
    """
    n = len(table)
    if len(params) != n:
        raise ValueError(f"params: must have {n} pairs like table, got {len(params)}")
    value = _vector("value", value)
    p_value = _vector("p_value", p_value)
    samples = _vector("samples", samples)
    _same_length(n, value=value, p_value=p_value, samples=samples)
    if isinstance(now, bool) or not isinstance(now, int | float | np.integer | np.floating):
        raise ValueError(f"now: must be a number of seconds, got {now!r}")
    now = float(now)
    if not math.isfinite(now):
        raise ValueError(f"now: must be finite, got {now}")
    if np.any(np.isnan(samples) | (samples < 0)):
        bad = _first_bad(np.isnan(samples) | (samples < 0))
        raise ValueError(f"samples[{bad}]: must be >= 0, got {samples[bad]}")
    out_of_range = (p_value < 0) | (p_value > 1)
    if np.any(out_of_range):
        bad = _first_bad(out_of_range)
        raise ValueError(f"p_value[{bad}]: must be in [0, 1] or NaN, got {p_value[bad]}")

    has_p_rule = ~np.isnan(params.max_p_value)
    held = (samples < params.min_samples) | np.isnan(value) | (has_p_rule & np.isnan(p_value))
    judged = ~held
    # NaN compares False, so a rule without max_p_value needs the explicit
    # escape; a NaN p-value under such a rule is then simply ignored.
    significant = ~has_p_rule | (p_value < params.max_p_value)
    over = judged & (value > params.threshold) & significant
    above_clear = judged & (value > params.clear_threshold) & significant

    state = table.state
    next_state = state.copy()
    active_at = table.active_at.copy()
    fired_at = table.fired_at.copy()
    cleared_at = table.cleared_at.copy()

    starts = (state == _INACTIVE) & over
    next_state[starts] = _PENDING
    active_at[starts] = now

    dropped = judged & (state == _PENDING) & ~over
    next_state[dropped] = _INACTIVE
    active_at[dropped] = np.nan

    # Includes the pairs that started pending just above: with for_s == 0
    # they fire at the evaluation that activated them, as in Prometheus.
    promoted = (next_state == _PENDING) & over & (now - active_at >= params.for_s)
    next_state[promoted] = _FIRING
    fired_at[promoted] = now

    was_firing = judged & (state == _FIRING)
    cleared_at[was_firing & above_clear] = np.nan
    clearing = was_firing & ~above_clear
    cleared_at[clearing & np.isnan(cleared_at)] = now
    resolved = clearing & (now - cleared_at >= params.keep_firing_for_s)
    next_state[resolved] = _INACTIVE
    active_at[resolved] = np.nan
    fired_at[resolved] = np.nan
    cleared_at[resolved] = np.nan

    return AlertTable(
        state=next_state, active_at=active_at, fired_at=fired_at, cleared_at=cleared_at
    )
