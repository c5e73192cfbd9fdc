"""The synthetic producer behind ``driftmon demo`` (docs/http-api.md, docs/cli.md).

:func:`produce` feeds the two streams of the packaged demo config
(:func:`demo_config_path`) over the HTTP ingest API until told to stop:

``shop`` (``POST /v1/streams/shop/rows``, a JSON array of row objects)
    Before the drift, the distributions of the reference file
    ``shop_reference.ndjson`` (written by ``config/data/make_data.py``):
    ``basket_value`` log-normal with median 35 and log-sd 0.6 (2 decimals);
    ``items`` ``1 + floor(|normal(0, 3)|)`` capped at 19; ``device``
    web/ios/android 50/30/20 %; ``country`` Zipf(1.1) over DE FR ES IT NL PL
    SE. After it, ``basket_value``'s median is 2.5 times higher (87.5) and the
    device mix is 10/20/70 %; ``items`` and ``country`` do not change, so a
    user sees which alerts fire and which stay quiet.

``fraud-model`` (``POST /v1/streams/fraud-model/rows``, a ``{"columns": ...}`` body)
    Its reference is its own first 300 rows (``warmup``), so before the drift
    the distribution is simply steady: ``score`` Beta(2, 5) (4 decimals) and
    ``decision`` ``approve`` below 0.5, ``review`` below 0.75, ``decline``
    above, with 3 % of decisions drawn at random. After it ``score`` follows
    Beta(5, 3), so both features drift: scores move up and far more rows are
    declined.

Now and then a value is missing or invalid, at the same rates before and
after the drift, so the ``missing`` and ``invalid`` bins show on a dashboard
without drifting: 1 % of ``basket_value`` and ``score`` values are ``null``
and 0.5 % are the string ``"n/a"`` (invalid in a numeric feature); 1 % of
``shop`` rows lack ``items`` and 1 % carry a ``null`` ``device``; 1 % of
``decision`` values are ``null``.

All randomness comes from numpy ``Generator`` objects seeded from ``seed``;
the rows also depend on how the batches fall in time, so two runs with one
seed send the same distributions, not the same bytes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import aiohttp
import numpy as np
import orjson

from driftmon.client_wire import retry_after_s

__all__ = [
    "FRAUD_STREAM",
    "SHOP_STREAM",
    "DemoTimings",
    "ProducerStats",
    "demo_config_path",
    "produce",
]

logger = logging.getLogger(__name__)

SHOP_STREAM: Final = "shop"
"""The demo stream of row-object bodies, with a reference file."""

FRAUD_STREAM: Final = "fraud-model"
"""The demo stream of columnar bodies, with a warmup reference."""

# --- the distributions (see the module docstring) ------------------------------------------

_COUNTRIES: Final = ("DE", "FR", "ES", "IT", "NL", "PL", "SE")
# Zipf(1.1) by rank, as config/data/make_data.py draws the reference's countries.
_COUNTRY_WEIGHTS: Final = tuple(1.0 / rank**1.1 for rank in range(1, len(_COUNTRIES) + 1))
_DEVICES: Final = ("web", "ios", "android")
_DEVICE_MIX: Final = (0.5, 0.3, 0.2)
_DRIFTED_DEVICE_MIX: Final = (0.1, 0.2, 0.7)
_BASKET_MEDIAN: Final = 35.0
_BASKET_LOG_SD: Final = 0.6
# x2.5 rather than x2: with 10 quantile bins a doubled median gives a JS of
# about 0.14, too close to the demo's 0.1 threshold to be a clear demonstration.
_DRIFTED_BASKET_FACTOR: Final = 2.5
_ITEMS_SD: Final = 3.0
_ITEMS_MAX: Final = 19

_DECISIONS: Final = ("approve", "review", "decline")
_SCORE_BETA: Final = (2.0, 5.0)
_DRIFTED_SCORE_BETA: Final = (5.0, 3.0)
_REVIEW_FROM: Final = 0.5
_DECLINE_FROM: Final = 0.75
_RANDOM_DECISION_RATE: Final = 0.03

_MISSING_RATE: Final = 0.01
_INVALID_RATE: Final = 0.005
_INVALID_NUMBER: Final = "n/a"

# --- HTTP behaviour ------------------------------------------------------------------------

_READY_POLL_S: Final = 0.2
# Log the wait for the daemon once it has lasted this long, then at this interval.
_READY_LOG_EVERY_S: Final = 5.0
_REQUEST_TIMEOUT_S: Final = 10.0
_DEFAULT_RETRY_AFTER_S: Final = 1.0
# A demo should not sit silent for an hour because a server asked it to.
_MAX_RETRY_AFTER_S: Final = 30.0
# After a stall (a long Retry-After, a restart) send at most this many batches'
# worth of rows at once; older rows are skipped rather than sent in one burst.
_MAX_CATCH_UP_BATCHES: Final = 10

_JSON: Final = "application/json"


@dataclass(frozen=True)
class DemoTimings:
    """The pace of the demo producer; every field is in seconds or rows per second.

    ``drift_after_s``: seconds after the daemon first answers ready before the
    drift starts (0: drifted from the first row). ``rows_per_second``: rows
    sent to each stream per second. ``batch_every_s``: seconds between two
    batches (each stream gets one request per batch). Raises ``ValueError``
    naming the field for a value that is not a finite number,
    ``drift_after_s < 0``, or a rate or interval that is not > 0.
    """

    drift_after_s: float = 30.0
    rows_per_second: float = 200.0
    batch_every_s: float = 0.5

    def __post_init__(self) -> None:
        for name, minimum, strict in (
            ("drift_after_s", 0.0, False),
            ("rows_per_second", 0.0, True),
            ("batch_every_s", 0.0, True),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"DemoTimings.{name}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"DemoTimings.{name}: must be finite, got {value!r}")
            if value < minimum or (strict and value == minimum):
                relation = ">" if strict else ">="
                raise ValueError(f"DemoTimings.{name}: must be {relation} {minimum}, got {value!r}")


@dataclass
class ProducerStats:
    """What :func:`produce` did.

    ``rows_sent``: rows the daemon accepted (answered 200), by stream name.
    ``requests``: ingest POSTs attempted, retries included (readiness polls
    are not counted). ``errors``: attempts that did not end in a 200:
    connection errors and timeouts, 503s that were retried, and other
    answers, whose batch was dropped.
    """

    rows_sent: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    errors: int = 0


def demo_config_path() -> Path:
    """The packaged demo config, ``driftmon/data/demo.yaml`` inside the installed package.

    Its ``shop`` reference file, ``shop_reference.ndjson``, lies next to it, and
    the config names it relative to itself, so ``load_config`` on this path
    works wherever the package is installed (as plain files, not a zip).
    """
    return Path(__file__).resolve().parent.parent / "data" / "demo.yaml"


# --- rows ----------------------------------------------------------------------------------


def _mask(rng: np.random.Generator, n_rows: int, rate: float) -> np.ndarray:
    """A boolean mask that is true for about ``rate`` of ``n_rows`` rows."""
    return rng.random(n_rows) < rate


def _with_special_values(
    rng: np.random.Generator, values: list[object], *, invalid: bool
) -> list[object]:
    """``values`` with about 1 % replaced by ``None`` and, if ``invalid``, 0.5 % by ``"n/a"``."""
    draws = rng.random(len(values))
    for i in np.flatnonzero(draws < _MISSING_RATE + (_INVALID_RATE if invalid else 0.0)):
        values[i] = None if draws[i] < _MISSING_RATE else _INVALID_NUMBER
    return values


def _shop_rows(rng: np.random.Generator, n_rows: int, drifted: bool) -> list[dict[str, object]]:
    """``n_rows`` rows of the ``shop`` stream, before or after the drift."""
    median = _BASKET_MEDIAN * (_DRIFTED_BASKET_FACTOR if drifted else 1.0)
    basket_values = np.round(np.exp(rng.normal(math.log(median), _BASKET_LOG_SD, n_rows)), 2)
    items = np.minimum(_ITEMS_MAX, 1 + np.floor(np.abs(rng.normal(0.0, _ITEMS_SD, n_rows))))
    device_mix = np.asarray(_DRIFTED_DEVICE_MIX if drifted else _DEVICE_MIX)
    devices = rng.choice(len(_DEVICES), size=n_rows, p=device_mix)
    country_weights = np.asarray(_COUNTRY_WEIGHTS)
    countries = rng.choice(len(_COUNTRIES), size=n_rows, p=country_weights / country_weights.sum())

    basket_column = _with_special_values(rng, basket_values.tolist(), invalid=True)
    device_column: list[object] = [_DEVICES[d] for d in devices.tolist()]
    device_column = _with_special_values(rng, device_column, invalid=False)
    items_absent = _mask(rng, n_rows, _MISSING_RATE)
    rows: list[dict[str, object]] = []
    for i, (count, country) in enumerate(zip(items.tolist(), countries.tolist(), strict=True)):
        row: dict[str, object] = {"basket_value": basket_column[i]}
        if not items_absent[i]:
            row["items"] = int(count)
        row["device"] = device_column[i]
        row["country"] = _COUNTRIES[country]
        rows.append(row)
    return rows


def _fraud_columns(rng: np.random.Generator, n_rows: int, drifted: bool) -> dict[str, list[object]]:
    """``n_rows`` rows of the ``fraud-model`` stream as columns, before or after the drift."""
    alpha, beta = _DRIFTED_SCORE_BETA if drifted else _SCORE_BETA
    scores = np.round(rng.beta(alpha, beta, n_rows), 4)
    decisions = np.where(scores < _REVIEW_FROM, 0, np.where(scores < _DECLINE_FROM, 1, 2))
    overridden = _mask(rng, n_rows, _RANDOM_DECISION_RATE)
    decisions[overridden] = rng.integers(0, len(_DECISIONS), int(overridden.sum()))
    decision_column: list[object] = [_DECISIONS[d] for d in decisions.tolist()]
    return {
        "score": _with_special_values(rng, scores.tolist(), invalid=True),
        "decision": _with_special_values(rng, decision_column, invalid=False),
    }


# --- HTTP ----------------------------------------------------------------------------------


def _retry_after_s(header: str | None, now: datetime | None = None) -> float:
    """Seconds to wait for a ``Retry-After`` header value (:func:`driftmon.client.retry_after_s`),
    at most 30 s; an absent or unreadable value means 1 s."""
    seconds = retry_after_s(header, None if now is None else now.timestamp())
    return _DEFAULT_RETRY_AFTER_S if seconds is None else min(seconds, _MAX_RETRY_AFTER_S)


class _Producer:
    """One run of :func:`produce`: the session, the stop event and the counters."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        stop: asyncio.Event,
        stats: ProducerStats | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.stop = stop
        self.stats = ProducerStats() if stats is None else stats
        for stream in (SHOP_STREAM, FRAUD_STREAM):
            self.stats.rows_sent.setdefault(stream, 0)

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False as soon as ``stop`` is set (then the run ends)."""
        if self.stop.is_set():
            return False
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            return True
        return False

    async def wait_ready(self) -> bool:
        """Poll ``GET /-/ready`` until it answers 200; False when stopped first."""
        url = f"{self.base_url}/-/ready"
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_log = started + _READY_LOG_EVERY_S
        while not self.stop.is_set():
            try:
                async with self.session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        return True
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Connection refused while the daemon starts is the expected case here.
                reason = type(exc).__name__
            if loop.time() >= next_log:
                logger.info(
                    "waiting for %s (%.0f s so far, last: %s)", url, loop.time() - started, reason
                )
                next_log += _READY_LOG_EVERY_S
            if not await self.pause(_READY_POLL_S):
                return False
        return False

    async def post(self, stream: str, body: bytes, n_rows: int) -> bool:
        """Send one batch until it is accepted or dropped (see :func:`produce`).

        Returns False when ``stop`` was set first.
        """
        url = f"{self.base_url}/v1/streams/{stream}/rows"
        while not self.stop.is_set():
            self.stats.requests += 1
            try:
                async with self.session.post(
                    url, data=body, headers={"Content-Type": _JSON}
                ) as response:
                    text = await response.text(errors="replace")
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.errors += 1
                if self.stop.is_set():
                    return False  # the daemon going away as the demo shuts down: nothing to say
                logger.warning(
                    "%s: %s; waiting for the daemon to be ready", url, str(exc) or repr(exc)
                )
                if not await self.wait_ready():
                    return False
                continue
            if status == 200:
                self.stats.rows_sent[stream] += n_rows
                return True
            self.stats.errors += 1
            if status == 503:
                delay_s = _retry_after_s(retry_after)
                logger.info("%s: 503 (ingest queue full); retrying in %.1f s", url, delay_s)
                if not await self.pause(delay_s):
                    return False
                continue
            logger.warning(
                "%s: HTTP %d, batch of %d rows dropped: %s", url, status, n_rows, text[:200]
            )
            return True
        return False


async def produce(
    base_url: str,
    *,
    timings: DemoTimings,
    stop: asyncio.Event,
    seed: int = 0,
    on_drift: Callable[[], None] | None = None,
    stats: ProducerStats | None = None,
) -> ProducerStats:
    """Feed the demo streams of a driftmon daemon at ``base_url`` until ``stop`` is set.

    ``base_url`` is the daemon's listener, e.g. ``http://127.0.0.1:9108`` (a
    trailing slash is fine). The producer first polls ``GET /-/ready`` until it
    answers 200 (connection errors included, as while the daemon starts), then
    every ``timings.batch_every_s`` sends each stream the rows due at
    ``timings.rows_per_second``: ``shop`` as a JSON array of row objects,
    ``fraud-model`` as a ``{"columns": ...}`` body. The rows follow the
    distributions in the module docstring; ``timings.drift_after_s`` after the
    daemon first answered ready, the drift starts in some features, and
    ``on_drift()`` is called once, just before the first drifted batch is made
    (an exception from it propagates).

    Batches are sent one stream after the other. A 503 is resent after its
    ``Retry-After`` (delay-seconds or an HTTP-date, capped at 30 s; 1 s when
    absent); a connection error or a timeout is resent once ``/-/ready``
    answers 200 again; any other answer drops the batch with a logged warning,
    since resending the same bytes cannot change it. A slow daemon thus slows
    the producer down; after a stall at most ten batches' worth of rows is
    sent at once and the older rows are skipped.

    ``stats``, when given, is counted into as it goes (for a status line).
    Returns the counts of :class:`ProducerStats` once ``stop`` is set (a
    request in flight is finished first, within a 10 s timeout). Raises
    ``ValueError`` for a ``base_url`` that is not an ``http://`` or
    ``https://`` URL.
    """
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url: expected an http:// or https:// URL, got {base_url!r}")
    seeds = np.random.SeedSequence(seed).spawn(2)
    shop_rng, fraud_rng = (np.random.default_rng(s) for s in seeds)
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        producer = _Producer(session, base_url.rstrip("/"), stop, stats)
        if not await producer.wait_ready():
            return producer.stats
        loop = asyncio.get_running_loop()
        started = loop.time()
        max_batch_rows = max(
            1, math.ceil(timings.rows_per_second * timings.batch_every_s * _MAX_CATCH_UP_BATCHES)
        )
        scheduled_rows = 0
        tick = 0
        drifted = False
        while True:
            tick = max(tick + 1, math.floor((loop.time() - started) / timings.batch_every_s) + 1)
            if not await producer.pause(started + tick * timings.batch_every_s - loop.time()):
                break
            elapsed_s = loop.time() - started
            n_rows = math.floor(elapsed_s * timings.rows_per_second) - scheduled_rows
            if n_rows > max_batch_rows:
                scheduled_rows += n_rows - max_batch_rows
                n_rows = max_batch_rows
            if n_rows <= 0:
                continue
            scheduled_rows += n_rows
            if not drifted and elapsed_s >= timings.drift_after_s:
                drifted = True
                logger.info("injecting drift after %.1f s", elapsed_s)
                if on_drift is not None:
                    on_drift()
            shop_body = orjson.dumps(_shop_rows(shop_rng, n_rows, drifted))
            fraud_body = orjson.dumps({"columns": _fraud_columns(fraud_rng, n_rows, drifted)})
            if not await producer.post(SHOP_STREAM, shop_body, n_rows):
                break
            if not await producer.post(FRAUD_STREAM, fraud_body, n_rows):
                break
        return producer.stats


def status_line(stats: ProducerStats, firing: Sequence[str], elapsed_s: float) -> str:
    """The demo's one-line status: rows the daemon accepted and the features firing now.

    ``firing`` holds ``stream/feature`` names; ``elapsed_s`` is the time since start.
    """
    total = sum(stats.rows_sent.values())
    streams = ", ".join(f"{name} {rows:,}" for name, rows in stats.rows_sent.items())
    features = ", ".join(firing) if firing else "none"
    return (
        f"driftmon demo: {elapsed_s:.0f} s, {total:,} rows sent ({streams}); "
        f"{len(firing)} feature{'' if len(firing) == 1 else 's'} firing: {features}"
    )
