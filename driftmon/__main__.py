"""``python -m driftmon`` and the ``driftmon`` console script."""

from driftmon.lifecycle import StopRequested, install_early_handlers


def run() -> int:
    """The ``driftmon`` command, with signal handlers in place before the heavy imports.

    A HUP or Ctrl-C while numpy, numba and aiohttp load must neither kill the
    process nor print a traceback (:mod:`driftmon.lifecycle`).
    """
    install_early_handlers()
    try:
        from driftmon.cli import main

        return main()
    except StopRequested as stop:  # before main() could tell which command it runs
        return stop.status


if __name__ == "__main__":
    raise SystemExit(run())
