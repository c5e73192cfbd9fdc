"""The ``driftmon`` command line (docs/cli.md), and the composition root of ``driftmon run``.

Each subcommand is a small function that parses nothing itself: argparse does
the parsing, the function calls into the module that owns the work and turns
its result into an exit status. :func:`serve_daemon` wires a daemon to its
HTTP API; nothing else imports both. Heavy modules are imported inside the
subcommands that need them, so ``driftmon --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from driftmon import __version__
from driftmon.config import (
    Config,
    ConfigError,
    StreamConfig,
    describe,
    load_config,
    parse_listen,
)
from driftmon.lifecycle import StopRequested
from driftmon.sources.media import DATA_FORMATS
from driftmon.tools.init import add_init_command

if TYPE_CHECKING:
    from aiohttp import web

    from driftmon.daemon import Daemon


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="driftmon",
        description="Streaming data-drift monitor with Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"driftmon {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config file: exit 0, or 1 with one line per error naming its path.",
    )
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config")
    check.set_defaults(handler=_check)

    run = commands.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon: HTTP ingest, /metrics, alerts, checkpoints. "
        "TERM/INT drain and checkpoint; HUP reloads the config.",
    )
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config")
    _add_daemon_options(run)
    run.set_defaults(handler=_run)

    demo = commands.add_parser(
        "demo",
        help="the daemon on the bundled demo config, fed by a synthetic producer",
        description="Run the daemon on the bundled demo config (two streams), fed by a built-in "
        "producer that injects drift after a while, and print the URLs to open.",
    )
    _add_daemon_options(demo)
    demo.add_argument(
        "--drift-after",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="when the producer injects drift (default 30)",
    )
    demo.add_argument(
        "--status-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often to print a status line: rows sent, features firing (default 10)",
    )
    demo.set_defaults(handler=_demo, listen=None)

    replay = commands.add_parser(
        "replay",
        help="run the engine over a file of rows",
        description="Run the engine over a file (Parquet, Arrow, CSV, NDJSON, JSON); print one "
        "JSON line per evaluation and monitor. On event time when the stream has time_field; "
        "otherwise one evaluation at the end.",
    )
    replay.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config")
    replay.add_argument("--stream", required=True, help="the stream the rows belong to")
    replay.add_argument("--input", required=True, metavar="DATA", help="the rows to replay")
    replay.add_argument("--format", choices=DATA_FORMATS, help="default: by suffix")
    replay.add_argument(
        "--html",
        metavar="FILE",
        help="also write the stream's monitor pages for the run (final distributions, history "
        "over event time) into one self-contained HTML file",
    )
    replay.set_defaults(handler=_replay)

    reference = commands.add_parser("reference", help="reference snapshots")
    reference_commands = reference.add_subparsers(dest="reference_command", metavar="COMMAND")
    build = reference_commands.add_parser(
        "build",
        help="build a reference snapshot from a file of rows",
        description="Bin a file of rows with a stream's features (learning quantile edges and "
        "top-k categories) and write the snapshot that `reference: {snapshot: PATH}` loads.",
    )
    build.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config")
    build.add_argument("--stream", required=True, help="the stream whose features to use")
    build.add_argument(
        "--input", required=True, metavar="DATA", help="Parquet, Arrow, CSV, NDJSON or JSON"
    )
    build.add_argument("--format", choices=DATA_FORMATS, help="default: by suffix")
    build.add_argument("-o", "--output", required=True, metavar="OUT", help="the snapshot to write")
    build.set_defaults(handler=_reference_build)
    reference.set_defaults(handler=lambda _args: _usage(reference))

    add_init_command(commands)

    rules = commands.add_parser(
        "rules",
        help="print Prometheus alerting rules equivalent to the config's alerts",
        description="Print a Prometheus rule file (one group, `driftmon`) whose alerting rules "
        "are equivalent to the config's alerts; exit 1 with one line per error on a bad config.",
    )
    rules.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config")
    rules.set_defaults(handler=_rules)

    dashboard = commands.add_parser(
        "dashboard",
        help="print the Grafana dashboard of a config",
        description="Print the Grafana dashboard JSON (schema 41, Grafana 11.6) of a config: "
        "divergences with the alert thresholds drawn, alerts, samples, ingest and daemon health.",
    )
    dashboard.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config")
    dashboard.add_argument("--uid", help="dashboard uid (default: driftmon-<config file stem>)")
    dashboard.add_argument("--title", help="dashboard title (default: driftmon: <config stem>)")
    dashboard.set_defaults(handler=_dashboard)
    return parser


def _add_daemon_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="override server.listen (port 0: any free port)"
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="one line per record"
    )


def _with_listen(config: Config, listen: str | None) -> Config | None:
    """``config`` with ``--listen`` applied, or ``None`` after printing why it is bad."""
    if listen is None:
        return config
    try:
        host, port = parse_listen(listen)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"--listen: {error}", file=sys.stderr)
        return None
    return dataclasses.replace(
        config, server=dataclasses.replace(config.server, host=host, port=port)
    )


def serve(
    config_path: Path,
    config: Config,
    state_dir: Path | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> int:
    """Run a daemon for ``config`` until TERM/INT; returns the exit status."""
    import asyncio

    from driftmon.daemon import Daemon

    try:
        daemon = Daemon(config_path, config, state_dir=state_dir)
    except (OSError, ValueError) as exc:
        print(f"driftmon: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(serve_daemon(daemon, on_listening))


def http_app(daemon: Daemon) -> web.Application:
    """The HTTP API of ``daemon``: its gate for ingest, callables for the rest."""
    from driftmon.exporter import SharedScrapes
    from driftmon.http.app import bearer_matches, make_app
    from driftmon.http.interfaces import Views

    scrapes = SharedScrapes(daemon.status)
    views = Views(
        authorized=lambda header: bearer_matches(header, daemon.token),
        ready=daemon.is_ready,  # and, in cluster.mode shared, the store answers
        scrape=scrapes.scrape,  # rendered in a thread, concurrent scrapes sharing one
        reload=daemon.reload_coalesced,
        latest=lambda: daemon.latest,
        config=lambda: daemon.config,
        monitor_detail=daemon.monitor_detail,
        monitor_history=daemon.monitor_history,
        history_series=daemon.history_series,
    )
    return make_app(daemon.gate, views, body_timeout_s=daemon.config.server.body_timeout_s)


async def serve_daemon(daemon: Daemon, on_listening: Callable[[str], None] | None = None) -> int:
    """Serve ``daemon``'s HTTP API and run it until TERM/INT; returns the exit status."""
    from driftmon.http.app import HttpListener
    from driftmon.http.connections import ConnectionLimits

    server = daemon.config.server
    limits = ConnectionLimits(
        header_timeout_s=server.header_timeout_s,
        keepalive_timeout_s=server.keepalive_timeout_s,
        max_connections=server.max_connections,
    )
    listener = HttpListener(
        http_app(daemon),
        server.host,
        server.port,
        limits,
        shutdown_grace_s=server.shutdown_grace_s,
    )
    return await daemon.serve_forever(on_listening, listener=listener)


def _run(args: argparse.Namespace) -> int:
    """``driftmon run -c FILE``."""
    from driftmon.logs import configure_logging

    configure_logging(args.log_format)
    config = _load(args.config, snapshots_must_exist=False)
    if config is None:
        return 1
    config = _with_listen(config, args.listen)
    if config is None:
        return 2
    return serve(Path(args.config), config)


def _demo(args: argparse.Namespace) -> int:
    """``driftmon demo``: daemon + synthetic producer, state in a temporary directory."""
    import asyncio
    import tempfile

    from driftmon.logs import configure_logging
    from driftmon.tools.demo import demo_config_path

    configure_logging(args.log_format)
    path = demo_config_path()
    config = _load(str(path))
    if config is None:
        return 1
    config = _with_listen(config, args.listen)
    if config is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="driftmon-demo-") as state_dir:
        return asyncio.run(
            _demo_main(path, config, Path(state_dir), args.drift_after, args.status_every)
        )


async def _demo_main(
    path: Path, config: Config, state_dir: Path, drift_after_s: float, status_every_s: float
) -> int:
    import asyncio
    import time

    from driftmon.alerting import AlertState
    from driftmon.daemon import Daemon
    from driftmon.tools.demo import DemoTimings, ProducerStats, produce, status_line

    daemon = Daemon(path, config, state_dir=state_dir)
    daemon.on_firing = lambda rule, stream, feature, url: print(
        f"driftmon demo: alert {rule} firing for {stream}/{feature}: {url}", flush=True
    )
    stop = asyncio.Event()
    producers: list[asyncio.Task[object]] = []
    stats = ProducerStats()
    started = time.monotonic()

    def status() -> str:
        evaluation = daemon.latest
        firing: dict[str, None] = {}
        if evaluation is not None:
            for pair, state in zip(evaluation.alert_pairs, evaluation.alerts.state, strict=True):
                if state == AlertState.FIRING:
                    monitor = evaluation.monitors[pair.monitor]
                    firing[f"{monitor.stream}/{monitor.feature}"] = None
        return status_line(stats, list(firing), time.monotonic() - started)

    async def print_status() -> None:
        # After the last alert the demo would otherwise print nothing at all.
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), status_every_s)
            except TimeoutError:
                print(status(), flush=True)

    def on_drift() -> None:
        print(
            "driftmon demo: drift injected now (shop basket_value and device, fraud-model); "
            "watch driftmon_alert_firing turn to 1 within a minute",
            flush=True,
        )

    def on_listening(url: str) -> None:
        print(
            f"driftmon demo: serving on {url}\n"
            f"  pages:     {url}/   (every monitor, firing first; click one for its histograms)\n"
            f"  metrics:   {url}/metrics   (driftmon_js_divergence, driftmon_alert_firing, ...)\n"
            f"  monitors:  {url}/api/v1/monitors\n"
            f"  state in:  {state_dir}\n"
            f"A producer posts rows to two streams; drift starts after {drift_after_s:g} s. "
            "Ctrl-C stops.",
            flush=True,
        )
        timings = DemoTimings(drift_after_s=drift_after_s)
        producers.append(
            asyncio.create_task(
                produce(url, timings=timings, stop=stop, on_drift=on_drift, stats=stats)
            )
        )
        if status_every_s > 0:
            producers.append(asyncio.create_task(print_status()))

    try:
        return await serve_daemon(daemon, on_listening)
    finally:
        stop.set()
        for task in producers:
            await task
        print(status().replace("driftmon demo:", "driftmon demo stopped:", 1), flush=True)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _load(path: str, *, snapshots_must_exist: bool = True) -> Config | None:
    """The config at ``path``, or ``None`` after printing its errors.

    ``driftmon run`` passes ``snapshots_must_exist=False``: a missing snapshot
    is then the daemon's to report (see :func:`~driftmon.config.parse_config`).
    """
    try:
        return load_config(path, snapshots_must_exist=snapshots_must_exist)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{path}: {error}", file=sys.stderr)
        return None


def _stream(config: Config, name: str, path: str) -> StreamConfig | None:
    try:
        return config.stream(name)
    except KeyError:
        known = ", ".join(s.name for s in config.streams)
        print(f"{path}: no stream {name!r} (streams: {known})", file=sys.stderr)
        return None


def _replay(args: argparse.Namespace) -> int:
    """``driftmon replay``: JSON lines on stdout."""
    from driftmon.reference import ReferenceError
    from driftmon.tools.replay import replay

    config = _load(args.config)
    if config is None or _stream(config, args.stream, args.config) is None:
        return 1
    try:
        replay(
            config,
            args.stream,
            Path(args.input),
            sys.stdout,
            data_format=args.format,
            html=None if args.html is None else Path(args.html),
        )
    except (ReferenceError, ValueError, OSError) as exc:
        print(f"driftmon replay: {exc}", file=sys.stderr)
        return 1
    return 0


def _reference_build(args: argparse.Namespace) -> int:
    """``driftmon reference build``: write a snapshot, print a one-line summary."""
    from driftmon.reference import (
        ReferenceError,
        build_reference,
        numeric_fields,
        save_snapshot,
    )
    from driftmon.sources.columnar import read_batch

    config = _load(args.config)
    if config is None:
        return 1
    stream = _stream(config, args.stream, args.config)
    if stream is None:
        return 1
    try:
        batch = read_batch(
            Path(args.input),
            [f.name for f in stream.features],
            format=args.format,
            numeric_fields=numeric_fields(stream),
            chunked=True,
        )
        if batch.n_rows == 0:
            raise ReferenceError(f"{args.input}: no rows")
        reference = build_reference(stream, batch.n_rows, batch.columns)
        save_snapshot(Path(args.output), stream, reference)
    except (ReferenceError, ValueError, OSError) as exc:
        print(f"driftmon reference build: {exc}", file=sys.stderr)
        return 1
    bins = sum(b.n_bins for b in reference.binners)
    print(
        f"{args.output}: reference of stream {stream.name!r}, {reference.rows} rows, "
        f"{len(reference.binners)} features, {bins} bins"
    )
    return 0


def _rules(args: argparse.Namespace) -> int:
    """``driftmon rules -c FILE``: the rule file on stdout, or errors on stderr."""
    from driftmon.tools.rules import render_rules

    config = _load(args.config)
    if config is None:
        return 1
    try:
        text = render_rules(config)
    except ValueError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    """``driftmon dashboard -c FILE``: the dashboard JSON on stdout, or errors on stderr."""
    from driftmon.tools.dashboard import dashboard_json

    config = _load(args.config)
    if config is None:
        return 1
    try:
        text = dashboard_json(config, uid=args.uid, title=args.title)
    except ValueError as exc:
        print(f"driftmon dashboard: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _check(args: argparse.Namespace) -> int:
    """``driftmon check -c FILE``: ``FILE: ok (summary)`` on stdout, or errors on stderr."""
    config = _load(args.config)
    if config is None:
        return 1
    errors = _check_files(config)
    for error in errors:
        print(f"{args.config}: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{args.config}: ok ({describe(config)})")
    return 0


def _check_files(config: Config) -> list[str]:
    """Errors, by config path, in the files ``run`` reads: the token file, reference snapshots.

    The loader only checks that they exist; ``run`` refuses an empty token
    file and a snapshot that does not load for its stream, so ``check`` opens
    them too (reading only: nothing is written or renamed).
    """
    from driftmon.daemon import read_token
    from driftmon.reference import ReferenceError, load_snapshot

    errors: list[str] = []
    try:
        read_token(config.server.auth_token_file)
    except (OSError, ValueError) as exc:
        errors.append(f"server.auth_token_file: {exc}")
    for i, stream in enumerate(config.streams):
        spec = stream.reference
        if spec.kind != "snapshot" or spec.path is None:
            continue
        try:
            load_snapshot(spec.path, stream)
        except ReferenceError as exc:
            errors.append(f"streams[{i}].reference.snapshot: {exc}")
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftmon`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args))
    except StopRequested as stop:
        if args.command in ("run", "demo"):
            # Asked to stop before it served: nothing was restored, nothing is lost.
            print(f"driftmon: {stop} before the daemon started; stopped", file=sys.stderr)
            return 0
        return stop.status
