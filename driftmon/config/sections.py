"""The ``server``, ``ingest``, ``engine``, ``state`` and ``defaults`` sections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from driftmon.config.errors import Errors, show
from driftmon.config.model import (
    DEFAULT_SMOOTHING,
    DEFAULT_WINDOW,
    MAX_PANES,
    EngineConfig,
    IngestConfig,
    LogBase,
    SampleWindow,
    ServerConfig,
    StateConfig,
    TimeWindow,
    Window,
)
from driftmon.config.readers import (
    POSITIVE_INT,
    SMOOTHING,
    duration_reader,
    int_reader,
    open_section,
    path_reader,
    read_bool,
    read_listen,
    read_size,
)


def parse_server(value: object, errs: Errors, base_dir: Path) -> ServerConfig:
    section = open_section(
        value,
        "server",
        errs,
        (
            "listen",
            "max_body_bytes",
            "auth_token_file",
            "external_url",
            "header_timeout",
            "body_timeout",
            "keepalive_timeout",
            "max_connections",
            "shutdown_grace",
        ),
    )
    defaults = ServerConfig()
    if section is None:
        return defaults
    listen = section.read("listen", read_listen) or (defaults.host, defaults.port)
    max_body_bytes = section.read("max_body_bytes", read_size)
    timeout = duration_reader(positive=True)
    header_timeout_s = section.read("header_timeout", timeout)
    body_timeout_s = section.read("body_timeout", timeout)
    keepalive_timeout_s = section.read("keepalive_timeout", timeout)
    max_connections = section.read("max_connections", int_reader(1, MAX_CONNECTIONS))
    shutdown_grace_s = section.read("shutdown_grace", duration_reader(positive=False))
    return ServerConfig(
        host=listen[0],
        port=listen[1],
        max_body_bytes=max_body_bytes or defaults.max_body_bytes,
        auth_token_file=section.read("auth_token_file", path_reader(base_dir, must_exist=True)),
        external_url=section.read("external_url", _read_external_url),
        header_timeout_s=header_timeout_s or defaults.header_timeout_s,
        body_timeout_s=body_timeout_s or defaults.body_timeout_s,
        keepalive_timeout_s=keepalive_timeout_s or defaults.keepalive_timeout_s,
        max_connections=max_connections or defaults.max_connections,
        shutdown_grace_s=defaults.shutdown_grace_s
        if shutdown_grace_s is None
        else shutdown_grace_s,
    )


MAX_CONNECTIONS = 1_000_000
"""The largest ``server.max_connections`` (the open-file limit bounds it further)."""


def _read_external_url(value: object, path: str, errs: Errors) -> str | None:
    if (
        not isinstance(value, str)
        or not value.startswith(("http://", "https://"))
        or len(value) <= len("https://")
        or any(c.isspace() or c in "\"'<>" for c in value)
    ):
        errs.add(
            path,
            f'expected an http:// or https:// URL like "https://driftmon.example", '
            f"got {show(value)}",
        )
        return None
    return value


def parse_ingest(value: object, errs: Errors) -> IngestConfig:
    section = open_section(
        value, "ingest", errs, ("workers", "queue_rows", "processes", "cloudevents")
    )
    defaults = IngestConfig()
    if section is None:
        return defaults
    cloudevents_root = defaults.cloudevents_root
    cloudevents = open_section(
        section.raw("cloudevents"), section.at("cloudevents"), errs, ("root",)
    )
    if cloudevents is not None:
        root = cloudevents.read("root", read_bool)
        cloudevents_root = cloudevents_root if root is None else root
    workers = section.read("workers", POSITIVE_INT)
    queue_rows = section.read("queue_rows", POSITIVE_INT)
    processes = section.read("processes", int_reader(0, 64))
    return IngestConfig(
        workers=workers or defaults.workers,
        queue_rows=queue_rows or defaults.queue_rows,
        cloudevents_root=cloudevents_root,
        processes=defaults.processes if processes is None else processes,
    )


def _read_log_base(value: object, path: str, errs: Errors) -> LogBase | None:
    # YAML reads `log_base: 2` as an int; both spellings mean bits.
    if value == "e":
        return "e"
    if (value == 2 and not isinstance(value, bool)) or value == "2":
        return "2"
    errs.add(path, f'must be "e" or 2, got {show(value)}')
    return None


def parse_engine(value: object, errs: Errors) -> EngineConfig:
    section = open_section(value, "engine", errs, ("evaluate_every", "log_base", "history"))
    defaults = EngineConfig()
    if section is None:
        return defaults
    evaluate_every_s = section.read("evaluate_every", duration_reader(positive=True))
    log_base = section.read("log_base", _read_log_base)
    history_length_s, history_every_s = defaults.history_length_s, defaults.history_every_s
    history = open_section(section.raw("history"), section.at("history"), errs, ("length", "every"))
    if history is not None:
        length_s = history.read("length", duration_reader(positive=False))
        every_s = history.read("every", duration_reader(positive=True))
        history_length_s = history_length_s if length_s is None else length_s
        history_every_s = history_every_s if every_s is None else every_s
        if length_s is not None and length_s > MAX_HISTORY_S:
            shown = show(history.raw("length"))
            errs.add(history.at("length"), f"must be at most 30d, got {shown}")
    return EngineConfig(
        evaluate_every_s=evaluate_every_s or defaults.evaluate_every_s,
        log_base=log_base or defaults.log_base,
        history_length_s=history_length_s,
        history_every_s=history_every_s,
    )


MAX_HISTORY_S = 30 * 86400.0
"""The longest ``engine.history.length``."""


def parse_state(value: object, errs: Errors, base_dir: Path) -> StateConfig:
    section = open_section(value, "state", errs, ("dir", "checkpoint_every"))
    defaults = StateConfig()
    if section is None:
        return defaults
    checkpoint_every_s = section.read("checkpoint_every", duration_reader(positive=True))
    return StateConfig(
        dir=section.read("dir", path_reader(base_dir, must_exist=False)),
        checkpoint_every_s=checkpoint_every_s or defaults.checkpoint_every_s,
    )


def read_window(value: object, path: str, errs: Errors) -> Window | None:
    section = open_section(value, path, errs, ("length", "panes", "samples"))
    if section is None:
        return None
    if "samples" in section:
        if "length" in section or "panes" in section:
            errs.add(path, "expected either {length, panes} or {samples}, got both")
            return None
        samples = section.read("samples", POSITIVE_INT)
        return None if samples is None else SampleWindow(samples=samples)
    if "length" not in section and "panes" not in section:
        errs.add(path, "expected {length: 15m, panes: 15} or {samples: N}")
        return None
    length_s = section.require("length", duration_reader(positive=True))
    panes = section.require("panes", int_reader(1, MAX_PANES))
    if length_s is None or panes is None:
        return None
    return TimeWindow(length_s=length_s, panes=panes)


@dataclass(frozen=True)
class Defaults:
    window: Window | None  # None after an error in defaults.window
    smoothing: float


def parse_defaults(value: object, errs: Errors) -> Defaults:
    section = open_section(value, "defaults", errs, ("window", "smoothing"))
    if section is None:
        return Defaults(window=None, smoothing=DEFAULT_SMOOTHING)
    window: Window | None = DEFAULT_WINDOW
    if "window" in section:
        window = section.read("window", read_window)
    smoothing = section.read("smoothing", SMOOTHING)
    return Defaults(window=window, smoothing=DEFAULT_SMOOTHING if smoothing is None else smoothing)
