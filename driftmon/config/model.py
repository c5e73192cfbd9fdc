"""The typed configuration: frozen dataclasses every other module reads."""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FeatureType = Literal["numeric", "categorical"]
LogBase = Literal["e", "2"]
ReferenceKind = Literal["file", "warmup", "snapshot"]
DataFormat = Literal["parquet", "arrow", "csv", "ndjson", "json"]
AlertMetric = Literal["kl", "kl_reverse", "js", "psi", "hellinger", "wasserstein"]
PValueCorrection = Literal["none", "bonferroni", "holm", "bh"]

P_VALUE_CORRECTIONS: tuple[PValueCorrection, ...] = ("none", "bonferroni", "holm", "bh")


def globs_match(stream_pattern: str, feature_pattern: str, stream: str, feature: str) -> bool:
    """Whether ``stream``/``feature`` match the globs (``fnmatch.fnmatchcase``, whole name)."""
    return fnmatch.fnmatchcase(stream, stream_pattern) and fnmatch.fnmatchcase(
        feature, feature_pattern
    )


@dataclass(frozen=True)
class UniformBins:
    """``count`` regular bins of equal width over ``[lo, hi)``."""

    lo: float
    hi: float
    count: int
    kind: Literal["uniform"] = "uniform"


@dataclass(frozen=True)
class EdgesBins:
    """Explicit increasing edges ``e0 < e1 < ... < en`` (n regular bins)."""

    edges: tuple[float, ...]
    kind: Literal["edges"] = "edges"


@dataclass(frozen=True)
class QuantileBins:
    """``count`` bins at the reference's quantiles, fixed when it is loaded or frozen."""

    count: int
    kind: Literal["quantile"] = "quantile"


NumericBins = UniformBins | EdgesBins | QuantileBins


@dataclass(frozen=True)
class FeatureConfig:
    """One monitored field of a stream.

    Numeric features have ``bins``; categorical ones have either
    ``categories`` (fixed list) or ``top_k`` (learned from the reference).
    ``smoothing`` is already resolved from feature → stream → defaults.
    """

    name: str
    type: FeatureType
    smoothing: float
    bins: NumericBins | None = None
    categories: tuple[str, ...] | None = None
    top_k: int | None = None


@dataclass(frozen=True)
class ReferenceConfig:
    """Where a stream's reference distribution comes from (docs/configuration.md#references).

    ``path`` is absolute (resolved against the config file's folder).
    """

    kind: ReferenceKind
    path: Path | None = None
    format: DataFormat | None = None
    warmup_rows: int | None = None


@dataclass(frozen=True)
class TimeWindow:
    """A ring of ``panes`` panes covering ``length_s`` seconds."""

    length_s: float
    panes: int

    @property
    def pane_width_s(self) -> float:
        """Seconds covered by one pane."""
        return self.length_s / self.panes


@dataclass(frozen=True)
class SampleWindow:
    """Exactly the last ``samples`` rows."""

    samples: int


Window = TimeWindow | SampleWindow


@dataclass(frozen=True)
class CloudEventsMapping:
    """How CloudEvents payload logs map onto a stream's features (docs/http-api.md)."""

    service: str
    namespace: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamConfig:
    """A named source of rows and the features monitored on it."""

    name: str
    reference: ReferenceConfig
    window: Window
    features: tuple[FeatureConfig, ...]
    time_field: str | None = None
    cloudevents: CloudEventsMapping | None = None


@dataclass(frozen=True)
class AlertRule:
    """One ``alerts:`` entry (docs/divergences.md#alert-states). Durations are seconds."""

    name: str
    stream_pattern: str
    feature_pattern: str
    metric: AlertMetric
    threshold: float
    for_s: float = 0.0
    clear_below: float | None = None
    min_samples: int = 0
    max_p_value: float | None = None
    keep_firing_for_s: float = 0.0
    severity: str = "warning"
    # How max_p_value judges the monitors this rule matches in one stream at
    # one evaluation (driftmon.multiple_testing); "none" when the key is absent.
    p_value_correction: PValueCorrection = "none"

    @property
    def clear_threshold(self) -> float:
        """The value at or below which a firing alert's condition clears."""
        return self.threshold if self.clear_below is None else self.clear_below

    def selects(self, stream: str, feature: str) -> bool:
        """Whether this rule's globs match the monitor ``stream``/``feature``."""
        return globs_match(self.stream_pattern, self.feature_pattern, stream, feature)


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: int = 9108
    max_body_bytes: int = 16 * 1024 * 1024
    auth_token_file: Path | None = None
    external_url: str | None = None  # None: http://<listen address>
    header_timeout_s: float = 10.0  # connection open or a request's first byte -> end of headers
    body_timeout_s: float = 30.0  # longest time a request body may make no progress
    keepalive_timeout_s: float = 30.0  # longest idle time between requests on one connection
    max_connections: int = 1000  # connections open at once (also bounded by the fd limit)
    # On TERM/INT: how long requests in flight may still take before connections close.
    shutdown_grace_s: float = 5.0

    def base_url(self) -> str:
        """Where users reach the daemon: ``external_url`` (no trailing slash), else the
        listen address."""
        if self.external_url is not None:
            return self.external_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class IngestConfig:
    """Ingest workers, parse processes and the bound of the ingest queue."""

    workers: int = 0  # 0: the core count
    queue_rows: int = 1_000_000
    cloudevents_root: bool = False
    processes: int = 0  # parse processes beside the workers; 0: parse in the workers

    @property
    def worker_count(self) -> int:
        """The number of ingest workers to start: ``workers``, or the usable core count for 0.

        The core count is read when this is called (the CPUs this process may run on,
        which in a container can be fewer than the machine's), so a config loaded on
        one machine and used on another still follows the machine it runs on.
        """
        if self.workers > 0:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EngineConfig:
    """Evaluation cadence and the log base of every divergence."""

    evaluate_every_s: float = 15.0
    log_base: LogBase = "e"
    history_length_s: float = 3600.0  # engine.history.length; 0 keeps no history
    history_every_s: float = 60.0  # engine.history.every: at most one entry per this long

    @property
    def history_capacity(self) -> int:
        """Entries of each monitor's history ring (see :mod:`driftmon.history`)."""
        step_s = max(self.history_every_s, self.evaluate_every_s)
        return math.ceil(self.history_length_s / step_s - 1e-9)


@dataclass(frozen=True)
class StateConfig:
    """Where and how often checkpoints are written."""

    dir: Path | None = None
    checkpoint_every_s: float = 60.0


ClusterMode = Literal["off", "shared"]


@dataclass(frozen=True)
class RedisSettings:
    """Where the shared store is (``cluster.redis``). ``password_file`` is absolute."""

    url: str = "redis://127.0.0.1:6379/0"
    password_file: Path | None = None
    key_prefix: str = "driftmon"
    cluster: bool = False  # a Redis Cluster: url names one of its nodes


@dataclass(frozen=True)
class ClusterConfig:
    """The ``cluster:`` section (driftmon/cluster/); durations are seconds."""

    mode: ClusterMode = "off"
    redis: RedisSettings = field(default_factory=RedisSettings)
    replica_id: str | None = None
    flush_every_s: float = 0.1
    lease_ttl_s: float = 10.0
    max_clock_skew_s: float = 1.0
    ack_timeout_s: float = 10.0
    idempotency_ttl_s: float = 3600.0

    @property
    def shared(self) -> bool:
        """Whether replicas share their windows in Redis."""
        return self.mode == "shared"


@dataclass(frozen=True)
class Config:
    """A whole, validated driftmon configuration."""

    streams: tuple[StreamConfig, ...]
    alerts: tuple[AlertRule, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    state: StateConfig = field(default_factory=StateConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    source: Path | None = None

    def stream(self, name: str) -> StreamConfig:
        """The stream called ``name``; ``KeyError`` when there is none."""
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)


# --- limits ------------------------------------------------------------------

#: Most regular bins (``count``, edges - 1, categories, ``top_k``) one monitor may have.
#: Every bin costs memory in every pane of every window, so a typo such as
#: ``count: 2000000`` is an error here rather than an out-of-memory in the engine.
MAX_BINS = 100_000
#: Most panes a time window may have, for the same reason.
MAX_PANES = 100_000

DEFAULT_WINDOW = TimeWindow(length_s=15 * 60.0, panes=15)
DEFAULT_SMOOTHING = 0.5

# --- summaries -----------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe(config: Config) -> str:
    """A one-line summary such as ``"2 streams, 7 monitors, 1 alert rule"``."""
    monitors = sum(len(stream.features) for stream in config.streams)
    return (
        f"{_plural(len(config.streams), 'stream')}, {_plural(monitors, 'monitor')}, "
        f"{_plural(len(config.alerts), 'alert rule')}"
    )


def match_monitors(rule: AlertRule, config: Config) -> list[tuple[str, str]]:
    """The (stream, feature) pairs whose names ``rule``'s globs match, in config order.

    Globs are ``fnmatch.fnmatchcase`` patterns (``*``, ``?``, ``[seq]``),
    case-sensitive, matched against the whole name. Every monitor matches;
    whether a metric exists for it (``wasserstein`` is absent for categorical
    monitors) is the engine's business.
    """
    return [
        (stream.name, feature.name)
        for stream in config.streams
        for feature in stream.features
        if globs_match(rule.stream_pattern, rule.feature_pattern, stream.name, feature.name)
    ]
