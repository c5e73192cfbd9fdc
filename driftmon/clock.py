"""A simulated clock for driving a whole :class:`~driftmon.daemon.Daemon` through hours in minutes.

The daemon reads time from two callables it is given: ``clock`` (Unix seconds,
for pane times, alert times, checkpoint stamps *and* the alignment of its
periodic loops) and ``sleep`` (how a periodic loop waits for its next tick).
Both default to the wall clock. :class:`SimulatedClock` supplies a matching
pair: ``Daemon(path, config, clock=sim, sleep=sim.sleep)``. Its time moves only
when :meth:`SimulatedClock.advance` moves it, and a loop sleeping on it wakes
as soon as an advance reaches its deadline, so the real evaluation and
checkpoint loops run exactly as they would over hours of wall time, without
the hours (``bench/soak.py``, ``tests/test_soak.py``).

Production runs on :class:`SteadyClock`: Unix seconds that follow the
monotonic clock while the process runs, so that a wall-clock step neither
empties nor freezes a window and ``for:`` timers measure real durations.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class _Sleeper:
    """One pending :meth:`SimulatedClock.sleep`: due at ``deadline_s`` (``order`` breaks ties)."""

    deadline_s: float
    order: int
    future: asyncio.Future[None] = field(compare=False)


class SimulatedClock:
    """Unix seconds that move only on :meth:`advance`, with an asyncio ``sleep`` on them.

    Call the instance for the time (it is a ``Callable[[], float]``, as
    ``Daemon(clock=...)`` wants). :meth:`sleep` suspends the calling coroutine
    until an advance reaches ``now + delay_s``. Time never runs backwards.

    Reading the time is safe from any thread (ingest workers and the
    evaluation thread read it); :meth:`advance` may be called from any thread
    too, and wakes each sleeper on its own event loop. A sleeper that is
    cancelled (a daemon shutting down cancels its loops) is forgotten at once,
    so the clock keeps nothing for it.
    """

    def __init__(self, start_s: float) -> None:
        """Start at ``start_s`` Unix seconds (finite)."""
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be finite, got {start_s!r}")
        self._now_s = float(start_s)
        self._lock = threading.Lock()
        self._sleepers: list[_Sleeper] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        """The current simulated time, Unix seconds."""
        return self._now_s

    @property
    def sleepers(self) -> int:
        """How many coroutines are waiting in :meth:`sleep` now."""
        with self._lock:
            return len(self._sleepers)

    def next_deadline(self) -> float | None:
        """The earliest time a sleeper waits for, or ``None`` when nobody sleeps."""
        with self._lock:
            return min((s.deadline_s for s in self._sleepers), default=None)

    async def sleep(self, delay_s: float) -> None:
        """Wait until the simulated time reaches ``now + delay_s`` (seconds).

        A delay of 0 or less (or NaN) only yields to the event loop once, as
        ``asyncio.sleep(0)`` does. Cancellation propagates and forgets the
        sleeper.
        """
        if not delay_s > 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            sleeper = _Sleeper(self._now_s + delay_s, next(self._order), future)
            self._sleepers.append(sleeper)
        try:
            await future
        finally:
            with self._lock:
                if sleeper in self._sleepers:
                    self._sleepers.remove(sleeper)

    def advance(self, seconds: float) -> int:
        """Move the time ``seconds`` (>= 0) forward; wake every sleeper now due.

        Returns how many sleepers were woken. A sleeper woken by an advance
        that jumps past several of its periods runs once, as a real loop
        delayed that long would; advance one period at a time to run every
        tick.
        """
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        with self._lock:
            self._now_s += seconds
            due = sorted(s for s in self._sleepers if s.deadline_s <= self._now_s)
            for sleeper in due:
                self._sleepers.remove(sleeper)
        for sleeper in due:
            loop = sleeper.future.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, sleeper.future)
        return len(due)

    def advance_to(self, time_s: float) -> int:
        """Move the time forward to ``time_s`` (no-op if it is not later); see :meth:`advance`."""
        return self.advance(max(0.0, time_s - self._now_s))


def _wake(future: asyncio.Future[None]) -> None:
    # The sleeper may have been cancelled between the advance and this callback.
    if not future.done():
        future.set_result(None)


STEP_S = 1.0
"""The least difference between the wall and steady clocks taken for a wall-clock step."""


class SteadyClock:
    """Unix seconds anchored to the wall clock at start, advancing with the monotonic clock.

    Panes rotate and alert timers run on this clock: a +3 h step of the wall
    clock must not empty every window, nor a step back freeze pane rotation.
    At start it reads the wall clock, so across
    a restart the wall clock decides which panes expired while the daemon was
    down. :meth:`wall_offset_s` is how far the wall clock has stepped since:
    timestamps shown to users add it, so they stay wall-clock times. ``wall``
    and ``monotonic`` are injectable for tests.
    """

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._anchor_wall_s = wall()
        self._anchor_monotonic_s = monotonic()

    def __call__(self) -> float:
        """The current time, Unix seconds, never stepping with the wall clock."""
        return self._anchor_wall_s + (self._monotonic() - self._anchor_monotonic_s)

    def wall_offset_s(self) -> float:
        """Wall clock minus this clock now: 0 until the wall clock steps.

        Below :data:`STEP_S` the difference is clock drift and slewing, not a
        step: it reads 0, so that published times are exactly the ones kept
        (an alert's ``active_at`` reads the same before and after a restart).
        """
        offset = self._wall() - self()
        return offset if abs(offset) >= STEP_S else 0.0


def wall_offset_s(clock: Callable[[], float]) -> float:
    """How far the wall clock is ahead of ``clock`` (0 for clocks that are not steady)."""
    return clock.wall_offset_s() if isinstance(clock, SteadyClock) else 0.0
