"""The ``cluster:`` config section (off by default: one process, file checkpoints).

::

    cluster:
      mode: shared                  # off | shared
      redis: {url: redis://127.0.0.1:6379/0, password_file: null, key_prefix: driftmon,
              cluster: false}       # cluster: true for a Redis Cluster (url: any node)
      replica_id: null              # default: hostname-pid-random
      flush_every: 100ms            # group commit of pane deltas
      lease_ttl: 10s
      max_clock_skew: 1s
      ack_timeout: 10s              # how long a request waits for its flush before a 503
      idempotency_ttl: 1h           # how long an Idempotency-Key is remembered

In shared mode ``{samples: N}`` windows and ``warmup`` references are
refused: both need one global order of rows, which replicas do not have.
The typed section is :class:`~driftmon.config.model.ClusterConfig`; the
cluster machinery itself is in driftmon/cluster/.
"""

from __future__ import annotations

import re
from pathlib import Path

from driftmon.config.errors import Errors, show
from driftmon.config.model import ClusterConfig, RedisSettings, SampleWindow, StreamConfig
from driftmon.config.readers import (
    choice_reader,
    duration_reader,
    open_section,
    path_reader,
    read_bool,
)

_URL = re.compile(r"(rediss?|unix)://\S+\Z")
_WORD = re.compile(r"[A-Za-z0-9_.:-]+\Z")

_KEYS = (
    "mode",
    "redis",
    "replica_id",
    "flush_every",
    "lease_ttl",
    "max_clock_skew",
    "ack_timeout",
    "idempotency_ttl",
)
_DURATIONS = ("flush_every", "lease_ttl", "max_clock_skew", "ack_timeout", "idempotency_ttl")


def parse_cluster(value: object, errs: Errors, base_dir: Path) -> ClusterConfig:
    """Read the ``cluster`` section (``None``: absent) into a :class:`ClusterConfig`."""
    defaults = ClusterConfig()
    section = open_section(value, "cluster", errs, _KEYS)
    if section is None:
        return defaults
    mode = section.read("mode", choice_reader("mode", ("off", "shared")))
    redis = _parse_redis(section.raw("redis"), section.at("redis"), errs, base_dir)
    replica_id = section.read("replica_id", _read_word)
    durations = {key: section.read(key, duration_reader(positive=True)) for key in _DURATIONS}
    result = ClusterConfig(
        mode="shared" if mode == "shared" else "off",
        redis=redis,
        replica_id=replica_id,
        flush_every_s=durations["flush_every"] or defaults.flush_every_s,
        lease_ttl_s=durations["lease_ttl"] or defaults.lease_ttl_s,
        max_clock_skew_s=durations["max_clock_skew"] or defaults.max_clock_skew_s,
        ack_timeout_s=durations["ack_timeout"] or defaults.ack_timeout_s,
        idempotency_ttl_s=durations["idempotency_ttl"] or defaults.idempotency_ttl_s,
    )
    if result.flush_every_s >= result.ack_timeout_s and durations["flush_every"] is not None:
        errs.add(
            section.at("flush_every"),
            f"must be shorter than ack_timeout ({result.ack_timeout_s:g}s), "
            f"got {result.flush_every_s:g}s",
        )
    if result.lease_ttl_s < 0.3 and durations["lease_ttl"] is not None:
        errs.add(
            section.at("lease_ttl"),
            f"must be >= 300ms (the lease is renewed every third of it), "
            f"got {result.lease_ttl_s:g}s",
        )
    return result


def _parse_redis(value: object, path: str, errs: Errors, base_dir: Path) -> RedisSettings:
    defaults = RedisSettings()
    section = open_section(value, path, errs, ("url", "password_file", "key_prefix", "cluster"))
    if section is None:
        return defaults
    url = section.read("url", _read_url)
    prefix = section.read("key_prefix", _read_word)
    return RedisSettings(
        url=url or defaults.url,
        password_file=section.read("password_file", path_reader(base_dir, must_exist=True)),
        key_prefix=prefix or defaults.key_prefix,
        cluster=bool(section.read("cluster", read_bool)),
    )


def _read_url(value: object, path: str, errs: Errors) -> str | None:
    if not isinstance(value, str) or not _URL.match(value):
        errs.add(
            path,
            'expected a Redis URL like "redis://host:6379/0" (rediss:// for TLS, unix:// for a '
            f"socket), got {show(value)}",
        )
        return None
    return value


def _read_word(value: object, path: str, errs: Errors) -> str | None:
    if not isinstance(value, str) or not _WORD.match(value):
        errs.add(
            path,
            'may hold only letters, digits, "_", ".", ":" and "-" (it is part of Redis keys), '
            f"got {show(value)}",
        )
        return None
    return value


def shared_mode_errors(stream: StreamConfig, stream_path: str, item: object) -> list[str]:
    """``path: message`` lines for what ``stream`` uses that shared mode cannot do yet.

    ``item`` is the stream as YAML gave it: a window inherited from
    ``defaults.window`` is reported at that path (the caller drops repeats).
    """
    problems: list[str] = []
    if isinstance(stream.window, SampleWindow):
        own = isinstance(item, dict) and "window" in item
        problems.append(
            f"{stream_path + '.window' if own else 'defaults.window'}: "
            f"{{samples: {stream.window.samples}}} windows need one global order of rows "
            "and are not supported with cluster.mode: shared; use {length, panes}"
        )
    if stream.reference.kind == "warmup":
        problems.append(
            f"{stream_path}.reference.warmup: warmup references need one global order of rows "
            "and are not supported with cluster.mode: shared; build a snapshot "
            "(driftmon reference build) or use a file"
        )
    return problems
