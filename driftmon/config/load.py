"""The whole document: :func:`parse_config` and the YAML file reader :func:`load_config`."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from driftmon.config.alerts import read_alert
from driftmon.config.cluster import parse_cluster, shared_mode_errors
from driftmon.config.errors import ConfigError, Errors, join_path, one_line, show, show_path
from driftmon.config.model import AlertRule, Config, StreamConfig
from driftmon.config.readers import Section, read_list
from driftmon.config.sections import (
    parse_defaults,
    parse_engine,
    parse_ingest,
    parse_server,
    parse_state,
)
from driftmon.config.streams import Monitor, read_stream

_TOP_KEYS = ("server", "ingest", "engine", "state", "defaults", "streams", "alerts", "cluster")


def parse_config(
    data: object,
    *,
    base_dir: Path,
    source: Path | None = None,
    snapshots_must_exist: bool = True,
) -> Config:
    """Validate a document already read from YAML (or built in Python) into a :class:`Config`.

    ``base_dir`` is the folder relative paths resolve against (the config
    file's folder); ``source`` is recorded as ``Config.source``. Reference
    files and snapshots, and ``server.auth_token_file``, must exist; no file
    is read. With ``snapshots_must_exist=False`` a missing reference snapshot
    is no error: the daemon passes it, because a snapshot is state it may
    have moved aside itself (unusable at an earlier start) and a start or
    reload must not fail on that; it logs the stream as having no reference
    instead (or uses the copy its checkpoint kept). ``driftmon check`` keeps
    the default and reports the missing file.

    ``ingest.workers`` absent is stored as 0, meaning the core count
    (see :attr:`IngestConfig.worker_count`); ``state.dir`` absent is ``None``:
    no checkpoints. ``log_base`` is stored as ``"e"`` or ``"2"``. A
    ``null`` value means the same as leaving the key out.

    Raises :class:`ConfigError` listing every problem, for any input:
    whatever ``data`` holds, nothing else is raised.
    """
    errs = Errors()
    if data is None:
        raise ConfigError(
            ["<file>: the document is empty: expected a mapping (server:, streams:, alerts:, ...)"]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [f"<file>: expected a mapping (server:, streams:, alerts:, ...), got {show(data)}"]
        )
    root = Section(data, "", errs, _TOP_KEYS)
    server = parse_server(root.raw("server"), errs, base_dir)
    ingest = parse_ingest(root.raw("ingest"), errs)
    engine = parse_engine(root.raw("engine"), errs)
    state = parse_state(root.raw("state"), errs, base_dir)
    defaults = parse_defaults(root.raw("defaults"), errs)
    cluster = parse_cluster(root.raw("cluster"), errs, base_dir)

    streams: list[StreamConfig] = []
    monitors: list[Monitor] = []
    monitors_complete = True
    stream_items = root.require("streams", read_list)
    if stream_items is None:
        monitors_complete = False
    elif not stream_items:
        errs.add("streams", "must list at least one stream")
        monitors_complete = False  # "selects no monitor" would only repeat this error
    stream_first_at: dict[str, int] = {}
    service_first_at: dict[tuple[str, str | None], int] = {}
    for index, item in enumerate(stream_items or ()):
        stream_path = f"streams[{index}]"
        stream_monitors: list[Monitor] = []
        stream, name, names_complete = read_stream(
            item, stream_path, errs, defaults, base_dir, stream_monitors, snapshots_must_exist
        )
        monitors_complete = monitors_complete and names_complete
        if name is None:
            continue
        if name in stream_first_at:
            errs.add(
                f"{stream_path}.name",
                f"duplicate stream name {show(name)} (first at streams[{stream_first_at[name]}])",
            )
            continue
        stream_first_at[name] = index
        monitors.extend(stream_monitors)
        if stream is not None and stream.cloudevents is not None:
            # An event must have one home: two streams may not claim the same service.
            service = (stream.cloudevents.service, stream.cloudevents.namespace)
            if service in service_first_at:
                errs.add(
                    f"{stream_path}.cloudevents.service",
                    f"service {show(service[0])} (namespace {show(service[1])}) is already "
                    f"mapped by streams[{service_first_at[service]}]",
                )
            else:
                service_first_at[service] = index
        if stream is not None:
            streams.append(stream)
            if cluster.shared:  # what shared mode cannot do yet
                for line in shared_mode_errors(stream, stream_path, item):
                    if line not in errs.lines:
                        errs.lines.append(line)

    alerts: list[AlertRule] = []
    alert_items = root.read("alerts", read_list) or []
    alert_first_at: dict[str, int] = {}
    for index, item in enumerate(alert_items):
        alert_path = f"alerts[{index}]"
        rule, name = read_alert(
            item, alert_path, errs, engine.log_base, monitors, monitors_complete
        )
        if name is not None:
            if name in alert_first_at:
                errs.add(
                    f"{alert_path}.name",
                    f"duplicate alert name {show(name)} (first at alerts[{alert_first_at[name]}])",
                )
                continue
            alert_first_at[name] = index
        if rule is not None:
            alerts.append(rule)

    if errs.lines:
        raise ConfigError(errs.lines)
    return Config(
        streams=tuple(streams),
        alerts=tuple(alerts),
        server=server,
        ingest=ingest,
        engine=engine,
        state=state,
        cluster=cluster,
        source=source,
    )


# --- files -------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, snapshots_must_exist: bool = True) -> Config:
    """Read and validate the YAML config file at ``path``.

    The file is parsed with ``yaml.safe_load`` (no tags that build objects);
    it is also composed (``yaml.compose`` with the safe loader, which builds
    nodes only) to find keys written twice in one mapping, which YAML would
    otherwise let the last one win silently. Relative paths inside resolve
    against the file's folder. See :func:`parse_config` for what is stored
    and for ``snapshots_must_exist``.

    Raises :class:`ConfigError` with every problem found: an unreadable file,
    a YAML syntax error (``<file>: line 3, column 7: ...``), and everything
    :func:`parse_config` reports.
    """
    file_path = Path(path)
    try:
        raw = file_path.read_bytes()
    except OSError as exc:
        reason = one_line(exc.strerror or str(exc))
        raise ConfigError([f"<file>: cannot read {show_path(file_path)}: {reason}"]) from None
    try:
        data = yaml.safe_load(raw)
        duplicates = _duplicate_keys(raw)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([f"<file>: {_yaml_problem(exc)}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"<file>: {one_line(str(exc))}"]) from None
    except RecursionError:
        raise ConfigError(["<file>: the document is nested too deeply"]) from None
    except Exception as exc:  # noqa: BLE001 - e.g. an int too long to convert: still a config error
        raise ConfigError([f"<file>: cannot read the YAML: {one_line(str(exc))}"]) from None
    absolute = file_path.absolute()
    try:
        config = parse_config(
            data,
            base_dir=absolute.parent,
            source=absolute,
            snapshots_must_exist=snapshots_must_exist,
        )
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.errors) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = exc.problem or "YAML syntax error"
    context = f" ({exc.context})" if exc.context else ""
    return one_line(f"{where}{problem}{context}")


def _duplicate_keys(raw: bytes) -> list[str]:
    """``path: duplicate key`` for every key written twice in one mapping of the document."""
    root = yaml.compose(raw, Loader=yaml.SafeLoader)
    found: list[tuple[int, str]] = []
    seen: set[int] = set()
    # Iterative walk: a document may be deep, and aliases may make it a graph.
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            children: list[tuple[yaml.Node, str]] = []
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str) or key == "<<":
                    continue
                key_path = join_path(path, key)
                if key in first_line:
                    line = key_node.start_mark.line + 1
                    found.append(
                        (
                            line,
                            f"{key_path}: duplicate key (first at line {first_line[key]}, "
                            f"again at line {line})",
                        )
                    )
                else:
                    first_line[key] = key_node.start_mark.line + 1
                children.append((value_node, key_path))
            stack.extend(reversed(children))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(
                (item, f"{path}[{index}]") for index, item in reversed(list(enumerate(node.value)))
            )
    return [message for _, message in sorted(found, key=lambda pair: pair[0])]
