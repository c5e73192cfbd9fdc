"""Signals from the first instant of the process, before the event loop takes them over.

Python's defaults are wrong for a daemon while it starts: SIGHUP (a reload,
for a running daemon) kills the process, and Ctrl-C raises
``KeyboardInterrupt`` wherever the interpreter is, printing a traceback from
deep inside an import. :func:`install_early_handlers` is called before any
heavy import: a SIGHUP is noted (the daemon reloads once it is ready) and
TERM/INT raise :class:`StopRequested`, which the command line turns into a
quiet exit. The daemon's event loop replaces these handlers with its own
once it runs; it collects the reloads noted so far with :func:`take_pending`.
"""

from __future__ import annotations

import signal
from types import FrameType

_pending: list[str] = []


class StopRequested(BaseException):
    """TERM or INT arrived before the daemon's event loop handled signals.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except
    Exception`` swallows it. ``status`` is the conventional ``128 + signum``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.status = 128 + signum


def install_early_handlers() -> None:
    """HUP noted for later, TERM and INT raise :class:`StopRequested` (main thread only)."""
    signal.signal(signal.SIGHUP, _note_reload)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def take_pending() -> list[str]:
    """The events noted by the early handlers (``"reload"``), oldest first; clears them."""
    taken = list(_pending)
    del _pending[: len(taken)]
    return taken


def _note_reload(signum: int, frame: FrameType | None) -> None:
    if not _pending:  # one reload covers any number of HUPs
        _pending.append("reload")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signum)
