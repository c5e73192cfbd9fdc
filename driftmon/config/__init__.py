"""Configuration: the only part of driftmon that sees YAML.

:func:`load_config` turns a YAML file into the frozen, typed objects of
:mod:`driftmon.config.model`; every error of a file is collected and reported
at once with its path (``streams[0].features[2].bins.count: must be > 0``).

Choices a user sees, written down here:

- ``null`` means the same as leaving a key out (the default applies);
  a required key given as ``null`` is an error.
- ``ingest.workers`` left out is stored as 0, meaning the core count at
  run time (:attr:`IngestConfig.worker_count`); written out it must be > 0.
- ``state.dir`` left out is ``None``: no checkpoints.
- Sizes: ``KiB``/``MiB``/``GiB``/``TiB`` are powers of 1024,
  ``kB``/``KB``/``MB``/``GB``/``TB`` powers of 1000 (:func:`parse_size`).
- Durations follow Prometheus: ``1h30m``, units ``w d h m s ms`` largest
  first; a plain number is seconds (:func:`parse_duration`).
- Keys written twice in one YAML mapping are errors (YAML would silently
  keep the last), and so are unquoted ``yes``/``no`` in ``categories``
  (YAML 1.1 reads them as booleans).
- Stream names are ``[A-Za-z0-9_][A-Za-z0-9_.-]*`` and feature names hold
  no ``/``: both are URL path segments (docs/http-api.md).
- At most :data:`MAX_BINS` bins per monitor and :data:`MAX_PANES` panes.
- Rules that can never fire are errors: ``js`` at or above its ceiling
  (log 2), ``hellinger`` at or above 1, ``wasserstein`` over categorical
  monitors only, ``min_samples`` above every selected ``{samples: N}`` window.
- ``features: infer`` (or a list holding ``infer`` and explicit entries) on
  a stream with a ``file`` reference reads the file at load time and adds
  one feature per useful column (:mod:`driftmon.infer`, as ``driftmon
  init`` writes them); an explicit entry replaces the inferred one of its
  name. ``driftmon check`` reads the file too.
"""

from driftmon.config.errors import ConfigError
from driftmon.config.load import load_config, parse_config
from driftmon.config.model import (
    ALERT_METRICS,
    MAX_BINS,
    MAX_PANES,
    P_VALUE_CORRECTIONS,
    AlertMetric,
    AlertRule,
    CloudEventsMapping,
    ClusterConfig,
    Config,
    DataFormat,
    EdgesBins,
    EngineConfig,
    FeatureConfig,
    FeatureType,
    IngestConfig,
    LogBase,
    NumericBins,
    PValueCorrection,
    QuantileBins,
    RedisSettings,
    ReferenceConfig,
    ReferenceKind,
    SampleWindow,
    ServerConfig,
    StateConfig,
    StreamConfig,
    TimeWindow,
    UniformBins,
    Window,
    describe,
    match_monitors,
)
from driftmon.config.readers import parse_listen
from driftmon.config.units import parse_duration, parse_size

__all__ = [
    "ALERT_METRICS",
    "MAX_BINS",
    "MAX_PANES",
    "P_VALUE_CORRECTIONS",
    "PValueCorrection",
    "AlertMetric",
    "AlertRule",
    "CloudEventsMapping",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DataFormat",
    "EdgesBins",
    "EngineConfig",
    "FeatureConfig",
    "FeatureType",
    "IngestConfig",
    "LogBase",
    "NumericBins",
    "QuantileBins",
    "RedisSettings",
    "ReferenceConfig",
    "ReferenceKind",
    "SampleWindow",
    "ServerConfig",
    "StateConfig",
    "StreamConfig",
    "TimeWindow",
    "UniformBins",
    "Window",
    "describe",
    "load_config",
    "match_monitors",
    "parse_config",
    "parse_duration",
    "parse_listen",
    "parse_size",
]
