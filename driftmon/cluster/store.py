"""The shared store: window panes, flush sequences, idempotency keys, the lease (Redis).

Layout (``P`` is ``cluster.redis.key_prefix``; ``{stream}`` is a Redis
Cluster hash tag, so a stream's keys live in one slot and one script may
touch them all):

==================================  ==================================================
key                                 value
==================================  ==================================================
``P:{S}:<layout>:<pane>``           the stream's counts in pane ``pane`` under bin layout
                                    ``layout`` (a fingerprint): big-endian int64, one per
                                    bin of the stream, in the engine's order; expires
                                    (absolute) one pane after the pane leaves the window
``P:{S}:seq:<replica>``             the last flush sequence of ``replica`` applied to ``S``
``P:{S}:idem:<key>``                an ``Idempotency-Key`` already counted for ``S``
``{P}:lease``                       ``"<replica> <epoch>"`` of the leader, with a TTL
``{P}:epoch``                       the fencing epoch: incremented at each new lease
``{P}:alerts``                      the leader's alert states (JSON), written under its epoch
==================================  ==================================================

Pane numbers are ``floor(t / pane_width)`` with ``t`` the store's clock, read
inside the same atomic call that adds the counts, so replicas agree on panes
whatever their own clocks say. A flush is one script call per stream: it
adds the delta, records the replica's sequence number (a resend after a lost
reply is a no-op), records idempotency keys, and returns the store's time.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

# One sequence record outlives any resend by far; it only has to expire eventually.
SEQUENCE_TTL_MS = 24 * 3600 * 1000

_FLUSH = """
-- KEYS[1]: this replica's sequence key; KEYS[2]: the layout's key prefix (pane keys add ':<n>')
-- ARGV: seq, pane width (us), panes, seq ttl (ms), idempotency prefix, idempotency ttl (ms),
--       counters per vector, plain delta ('' for none), then (key, delta) per keyed request
local seq = tonumber(ARGV[1])
local width = tonumber(ARGV[2])
local n = tonumber(ARGV[7])
local t = redis.call('TIME')
local pane = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / width)
local reply = {t[1], t[2], pane, 0}
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if seq <= last then
  return reply
end
local key = KEYS[2] .. ':' .. string.format('%d', pane)
local current = redis.call('GET', key)
if current and #current ~= n * 8 then
  return redis.error_reply('pane ' .. key .. ' holds ' .. #current .. ' bytes, expected ' .. n * 8)
end
-- Counters are read and written CHUNK at a time: one struct call per chunk, not per counter.
local CHUNK = 128
local function format(count) return '>' .. string.rep('i8', count) end
local full = format(CHUNK)
local sum = {}
for i = 1, n do sum[i] = 0 end
local any = false
local function add(blob)
  for first = 1, n, CHUNK do
    local count = math.min(CHUNK, n - first + 1)
    local values = {struct.unpack(count == CHUNK and full or format(count), blob, first * 8 - 7)}
    for k = 1, count do sum[first + k - 1] = sum[first + k - 1] + values[k] end
  end
  any = true
end
if ARGV[8] ~= '' then add(ARGV[8]) end
reply[4] = 1
for j = 9, #ARGV, 2 do
  if redis.call('SET', ARGV[5] .. ARGV[j], '1', 'NX', 'PX', ARGV[6]) then
    add(ARGV[j + 1])
    reply[#reply + 1] = 0
  else
    reply[#reply + 1] = 1
  end
end
if any then
  if current then add(current) end
  local parts = {}
  for first = 1, n, CHUNK do
    local count = math.min(CHUNK, n - first + 1)
    parts[#parts + 1] = struct.pack(
      count == CHUNK and full or format(count), unpack(sum, first, first + count - 1))
  end
  redis.call('SET', key, table.concat(parts))
  local panes = tonumber(ARGV[3])
  redis.call('PEXPIREAT', key, string.format('%d', math.floor((pane + panes + 1) * width / 1000)))
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return reply
"""

_READ = """
-- KEYS[1]: the layout's key prefix; ARGV: pane width (us), panes
local width = tonumber(ARGV[1])
local t = redis.call('TIME')
local pane = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / width)
local reply = {t[1], t[2], pane}
for p = pane - tonumber(ARGV[2]) + 1, pane do
  reply[#reply + 1] = redis.call('GET', KEYS[1] .. ':' .. string.format('%d', p)) or ''
end
return reply
"""

_LEASE = """
-- KEYS[1]: lease, KEYS[2]: epoch; ARGV: replica id, ttl (ms), the epoch held ('0': none)
local mine = ARGV[1] .. ' ' .. ARGV[3]
local held = redis.call('GET', KEYS[1])
if held == mine then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {tonumber(ARGV[3]), 0, held}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
  return {epoch, 1, ARGV[1] .. ' ' .. epoch}
end
return {0, 0, held or ''}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_SAVE_UNDER_EPOCH = """
-- KEYS[1]: epoch, KEYS[2]: the value to write; ARGV: the writer's epoch, the value
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class StreamLayout:
    """How one stream's window is kept in the store.

    ``fingerprint`` names the bin layout of every monitor of the stream (so
    replicas with another layout never add into the same counts), ``n_bins``
    is the length of the stream's count vector.
    """

    stream: str
    fingerprint: str
    n_bins: int
    pane_width_us: int
    panes: int

    @property
    def pane_width_s(self) -> float:
        """Seconds covered by one pane."""
        return self.pane_width_us / 1e6


def layout_fingerprint(layouts: Sequence[tuple[str, tuple[object, ...]]]) -> str:
    """A short hash of a stream's (feature, layout key) pairs, in the engine's order."""
    return hashlib.sha256(repr(tuple(layouts)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FlushResult:
    """What the store did with one flush.

    ``applied`` is false for a resend of a sequence already applied;
    ``duplicates[i]`` tells whether keyed request ``i`` was counted before.
    """

    server_time_s: float
    pane: int
    applied: bool
    duplicates: tuple[bool, ...]


@dataclass(frozen=True)
class Flush:
    """One stream's flush: a plain delta and the deltas of requests that carry a key."""

    layout: StreamLayout
    replica_id: str
    sequence: int
    plain: np.ndarray | None
    keyed: tuple[tuple[str, np.ndarray], ...] = ()


@dataclass(frozen=True)
class WindowRead:
    """One stream's window as the store holds it: the sum of its newest panes."""

    server_time_s: float
    pane: int
    counts: np.ndarray  # int64 over the stream's bins


def pack(counts: np.ndarray) -> bytes:
    """Counts (whole numbers) as the store keeps them: big-endian int64."""
    return np.asarray(counts).astype(">i8").tobytes()


def unpack(blob: bytes, n_bins: int) -> np.ndarray:
    """The int64 counts of a packed blob (``b""``: all zero)."""
    if not blob:
        return np.zeros(n_bins, dtype=np.int64)
    if len(blob) != 8 * n_bins:
        raise ValueError(f"packed counts hold {len(blob)} bytes, expected {8 * n_bins}")
    return np.frombuffer(blob, dtype=">i8").astype(np.int64)


def read_password(path: Path | None) -> str | None:
    """The password in ``path`` (surrounding whitespace stripped), or ``None``."""
    if path is None:
        return None
    return path.read_text().strip()


def connect(
    url: str, password: str | None = None, timeout_s: float = 2.0, *, cluster: bool = False
) -> Any:
    """A Redis client for ``url`` that fails fast (``timeout_s``) instead of hanging.

    With ``cluster``, a Redis Cluster client that learns the other nodes from
    the one ``url`` names (at its first command).
    """
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(
            url,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
    return redis.Redis.from_url(
        url,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


class Store:
    """driftmon's keys in one Redis (or Redis Cluster) behind ``client``.

    Every method raises ``redis.RedisError`` (a connection error, a timeout)
    when the store cannot answer; none retries on its own.
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._flush = client.register_script(_FLUSH)
        self._read = client.register_script(_READ)
        self._lease = client.register_script(_LEASE)
        self._release = client.register_script(_RELEASE)
        self._save = client.register_script(_SAVE_UNDER_EPOCH)
        self._scripts = (self._flush, self._read, self._lease, self._release, self._save)
        self.lease_key = f"{{{prefix}}}:lease"
        self.epoch_key = f"{{{prefix}}}:epoch"
        self.alerts_key = f"{{{prefix}}}:alerts"

    # --- keys -----------------------------------------------------------------

    def stream_key(self, stream: str) -> str:
        """``P:{S}``: what every key of ``stream`` starts with."""
        return f"{self.prefix}:{{{stream}}}"

    def pane_prefix(self, layout: StreamLayout) -> str:
        """The pane keys of ``layout`` are this plus ``:<pane number>``."""
        return f"{self.stream_key(layout.stream)}:{layout.fingerprint}"

    # --- flushes and reads ----------------------------------------------------

    def flush(self, flushes: Sequence[Flush], idempotency_ttl_s: float) -> list[FlushResult]:
        """Apply every flush (one script call each, pipelined); results in the same order."""
        calls: list[tuple[Any, list[str], list[object]]] = []
        ttl_ms = str(max(1, int(idempotency_ttl_s * 1000)))
        for flush in flushes:
            layout = flush.layout
            args: list[object] = [
                flush.sequence,
                layout.pane_width_us,
                layout.panes,
                SEQUENCE_TTL_MS,
                f"{self.stream_key(layout.stream)}:idem:",
                ttl_ms,
                layout.n_bins,
                b"" if flush.plain is None else pack(flush.plain),
            ]
            for key, delta in flush.keyed:
                args += [key, pack(delta)]
            keys = [f"{self.stream_key(layout.stream)}:seq:{flush.replica_id}",
                    self.pane_prefix(layout)]
            calls.append((self._flush, keys, args))
        replies = self._pipelined(calls)
        return [
            FlushResult(
                server_time_s=int(reply[0]) + int(reply[1]) / 1e6,
                pane=int(reply[2]),
                applied=bool(int(reply[3])),
                duplicates=tuple(bool(int(flag)) for flag in reply[4:]),
            )
            for reply in replies
        ]

    def read_windows(self, layouts: Sequence[StreamLayout]) -> list[WindowRead]:
        """Each layout's window summed over its newest panes (one call each, pipelined)."""
        calls: list[tuple[Any, list[str], list[object]]] = [
            (self._read, [self.pane_prefix(layout)], [layout.pane_width_us, layout.panes])
            for layout in layouts
        ]
        reads = []
        for layout, reply in zip(layouts, self._pipelined(calls), strict=True):
            total = np.zeros(layout.n_bins, dtype=np.int64)
            for blob in reply[3:]:
                if blob:
                    total += unpack(blob, layout.n_bins)
            reads.append(WindowRead(int(reply[0]) + int(reply[1]) / 1e6, int(reply[2]), total))
        return reads

    def _pipelined(self, calls: Sequence[tuple[Any, list[str], list[object]]]) -> list[Any]:
        """Script calls ``(script, keys, args)`` in one pipeline; their replies in order.

        A plain pipeline loads missing scripts itself; a Redis Cluster pipeline
        does not (nor does a node restarted without its script cache): on
        NOSCRIPT the scripts are loaded on every primary and the calls sent
        again, which is safe because a resent flush is a no-op.
        """
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in calls:
                script(keys=keys, args=args, client=pipe)
            try:
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                for script in self._scripts:
                    self.client.script_load(script.script)
        raise AssertionError("unreachable")

    def time(self) -> float:
        """The store's clock, Unix seconds."""
        seconds, micros = self.client.time()
        return int(seconds) + int(micros) / 1e6

    def ping(self) -> bool:
        """Whether the store answers."""
        return bool(self.client.ping())

    # --- the lease and the leader's state ---------------------------------------

    def hold_lease(self, replica_id: str, epoch: int, ttl_s: float) -> tuple[int, bool, str]:
        """Renew the lease held under ``epoch`` or take a free one.

        Returns ``(epoch, new, holder)``: the epoch held now (0: another
        replica holds the lease), whether it was just taken, and the lease's
        value (``"<replica> <epoch>"``, empty when free).
        """
        reply = self._lease(
            keys=[self.lease_key, self.epoch_key],
            args=[replica_id, max(1, int(ttl_s * 1000)), epoch],
        )
        holder = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        return int(reply[0]), bool(int(reply[1])), holder

    def release_lease(self, replica_id: str, epoch: int) -> bool:
        """Give the lease up if ``replica_id`` still holds it under ``epoch``."""
        return bool(self._release(keys=[self.lease_key], args=[f"{replica_id} {epoch}"]))

    def save_alerts(self, epoch: int, states: dict[str, Any]) -> bool:
        """Write the alert states unless a newer epoch exists (fencing); whether written."""
        blob = json.dumps(states, allow_nan=False, separators=(",", ":"))
        return bool(self._save(keys=[self.epoch_key, self.alerts_key], args=[epoch, blob]))

    def load_alerts(self) -> dict[str, Any] | None:
        """The alert states the last leader wrote, or ``None``."""
        blob = self.client.get(self.alerts_key)
        if blob is None:
            return None
        loaded = json.loads(blob)
        return loaded if isinstance(loaded, dict) else None


def pane_width_us(pane_width_s: float) -> int:
    """A pane's width in whole microseconds (the store's pane arithmetic is integral)."""
    return max(1, int(math.floor(pane_width_s * 1e6 + 0.5)))
