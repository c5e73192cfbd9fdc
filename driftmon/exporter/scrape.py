"""``/metrics`` bodies: text rendered from columns, in a thread, shared by concurrent scrapers.

At 10^5 monitors ``prometheus_client``'s own encoder takes about 15 s and
holds the GIL throughout; :func:`render_text` writes the per-monitor families
from their columns in slices of :data:`SLICE_SERIES` series (the same bytes,
the tests compare them) and hands the small families to that encoder.
:class:`SharedScrapes` runs one rendering for scrapes that arrive together
and gzips it when asked (figures: bench/README.md, "Scrape at scale").
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from prometheus_client.core import (
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from driftmon.exporter.families import SeriesColumns, Status, escape_label, families
from driftmon.kinds import VALUE_KINDS as VALUE_KINDS


def _go_floats(values: np.ndarray) -> list[str]:
    """``floatToGoString`` of every value, in bulk.

    orjson writes the shortest round-trip digits as ``repr`` does, four times
    faster; the two differ only in exponent notation, so the values where
    ``repr`` or Go use it (below 1e-4, from 1e6 on) and the non-finite ones
    go through ``floatToGoString`` itself.
    """
    if values.size == 0:
        return []
    texts = orjson.dumps(values.tolist()).decode()[1:-1].split(",")
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(values)
        special = np.flatnonzero(
            ~np.isfinite(values) | (magnitude >= 1e6) | ((magnitude < 1e-4) & (magnitude > 0.0))
        )
    for j in special.tolist():
        value = float(values[j])
        # Below 1e-4 Go and repr agree (floatToGoString returns repr); the rest is rare.
        texts[j] = (
            repr(value) if math.isfinite(value) and abs(value) < 1e-4 else (floatToGoString(value))
        )
    return texts


SLICE_SERIES = 16_384
"""Series formatted per step: no single call holds the GIL for long, and text is freed early."""


def _series_pieces(family: SeriesColumns, openmetrics: bool = False) -> Iterator[str]:
    """``family`` in the text format 0.0.4, as ``generate_latest`` writes its expansion,
    in slices of at most :data:`SLICE_SERIES` lines.

    Labels sorted by name, as there: ``feature``, the labels between it and
    ``stream`` (``kind``, ``rule``, ``severity``), ``stream``, then the later
    ones (``window``). The escaped ``feature="…",`` and ``stream="…"`` of each
    monitor are made once per packing (:class:`MonitorLayout`).
    """
    name = family.name + "_total" if family.type == "counter" else family.name
    documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:  # the family's own name in the header, quotes escaped in the help
        documentation = documentation.replace('"', r"\"")
        yield f"# HELP {family.name} {documentation}\n# TYPE {family.name} {family.type}\n"
    else:
        yield f"# HELP {name} {documentation}\n# TYPE {name} {family.type}\n"
    extras = sorted(label for label in family.label_names if label not in ("stream", "feature"))
    if any(label < "feature" for label in extras):
        raise ValueError(f"{family.name}: label {extras[0]!r} sorts before feature")
    features, streams = family.layout.label_parts()
    head = name + "{"
    kept = family.kept()
    for start in range(0, kept.size, SLICE_SERIES):
        part = kept[start : start + SLICE_SERIES]
        part_list = part.tolist()
        monitors = family.monitors[part].tolist()
        texts = _go_floats(family.values[part])
        if not extras:
            yield "".join(
                [
                    f"{head}{features[m]}{streams[m]}}} {text}\n"
                    for m, text in zip(monitors, texts, strict=True)
                ]
            )
            continue
        middles = _extra_labels(family, [label for label in extras if label < "stream"], part_list)
        ends = _extra_labels(family, [label for label in extras if label > "stream"], part_list)
        yield "".join(
            [
                f"{head}{features[m]}{middle}{streams[m]}{end}}} {text}\n"
                for m, middle, end, text in zip(monitors, middles, ends, texts, strict=True)
            ]
        )


def _extra_labels(family: SeriesColumns, labels: list[str], kept: list[int]) -> Sequence[str]:
    """Per kept series, ``a="…",`` for each of ``labels`` (joined; before ``stream``), or
    ``,a="…"`` (after it): made once per distinct combination of values."""
    if not labels:
        return [""] * len(kept)
    after = labels[0] > "stream"
    if len(labels) == 1:  # one label (kind, window): a lookup per series
        column = family.extra[labels[0]]
        texts = {}
        for value in set(column):
            pair = f'{labels[0]}="{escape_label(value)}"'
            texts[value] = "," + pair if after else pair + ","
        if len(kept) == len(column):
            return list(map(texts.__getitem__, column))
        return [texts[column[j]] for j in kept]
    made: dict[tuple[str, ...], str] = {}
    result = []
    columns = [family.extra[label] for label in labels]
    for j in kept:
        values = tuple(column[j] for column in columns)
        text = made.get(values)
        if text is None:
            pairs = [f'{n}="{escape_label(v)}"' for n, v in zip(labels, values, strict=True)]
            text = (
                "".join("," + pair for pair in pairs)
                if after
                else "".join(pair + "," for pair in pairs)
            )
            made[values] = text
        result.append(text)
    return result


class _OneFamily:
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


OPENMETRICS_EOF = b"# EOF\n"


def render_text(status: Status, accept: str | None = None) -> Iterator[bytes]:
    """``status`` in the format ``accept`` asks for, in pieces: byte for byte what
    ``prometheus_client``'s encoder for it (``choose_encoder``: text 0.0.4, or
    OpenMetrics) writes for :class:`DriftCollector`, without building a sample object
    per series. The per-monitor families are formatted from their columns (sample
    lines are alike in both formats; the headers differ), the few others by the
    encoder itself."""
    encoder, content_type = choose_encoder(accept or "")
    openmetrics = content_type.startswith("application/openmetrics-text")
    for family in families(status):
        if isinstance(family, SeriesColumns):
            for piece in _series_pieces(family, openmetrics):
                yield piece.encode()
        else:
            text = encoder(_OneFamily(family))
            yield text.removesuffix(OPENMETRICS_EOF) if openmetrics else text
    if openmetrics:
        yield OPENMETRICS_EOF


@dataclass(frozen=True)
class Scrape:
    """One rendered ``/metrics`` body, in slices."""

    chunks: tuple[bytes, ...]
    content_type: str
    content_encoding: str | None  # "gzip", or None for the identity

    @property
    def size_bytes(self) -> int:
        """The length of the body."""
        return sum(len(chunk) for chunk in self.chunks)


def render_scrape(status: Status, accept: str | None, gzip: bool) -> Scrape:
    """The body for a scraper sending ``accept`` (and ``Accept-Encoding: gzip`` if ``gzip``).

    Text 0.0.4 or OpenMetrics (which Prometheus asks for first), both from
    :func:`render_text`. With ``gzip`` each
    slice is compressed (level 1) by a second thread as soon as it is rendered
    (zlib lets go of the GIL, so both cores work), and a scrape holds the
    compressed body and a few slices of text at a time.
    """
    content_type = choose_encoder(accept or "")[1]
    pieces = render_text(status, accept)
    if not gzip:
        return Scrape(tuple(pieces), content_type, None)
    return Scrape((_gzipped(pieces),), content_type, "gzip")


def _gzipped(pieces: Iterable[bytes]) -> bytes:
    """``pieces`` gzipped at level 1, compressed in a second thread while they are made."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    handed: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
    compressed: list[bytes] = []

    def compress() -> None:
        while (piece := handed.get()) is not None:
            compressed.append(compressor.compress(piece))

    worker = threading.Thread(target=compress, name="driftmon-scrape-gzip", daemon=True)
    worker.start()
    try:
        for piece in pieces:
            handed.put(piece)
    finally:
        handed.put(None)
        worker.join()
    compressed.append(compressor.flush())
    return b"".join(compressed)


class SharedScrapes:
    """Scrapes rendered off the event loop; scrapes asking at once share one rendering.

    :meth:`scrape` takes the status (a short hold of the daemon's lock) and
    renders it in a thread, so ``/-/healthy`` and ingest go on meanwhile. A
    scrape that arrives while one of the same kind (format, gzip) renders
    gets that body, at most one rendering old; each kind has at most one
    rendering at a time, so N concurrent scrapers cost one render, not N
    side by side. The thread is a daemon thread: a stop never waits for it.
    """

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status
        self._rendering: dict[tuple[str, bool], asyncio.Future[Scrape]] = {}
        self.renders = 0  # renderings started (tests count coalesced scrapes with it)

    async def scrape(self, accept: str | None, gzip: bool) -> Scrape:
        """The body for ``accept`` (gzipped if ``gzip``), rendered in a thread."""
        key = (choose_encoder(accept or "")[1], gzip)
        future = self._rendering.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._rendering[key] = future
            self.renders += 1
            future.add_done_callback(self._forget(key))

            def render(done: asyncio.Future[Scrape] = future) -> None:
                try:
                    result = render_scrape(self._status(), accept, gzip)
                except BaseException as exc:  # handed to the loop, raised to the scrapers
                    loop.call_soon_threadsafe(_settle_scrape, done, None, exc)
                else:
                    loop.call_soon_threadsafe(_settle_scrape, done, result, None)

            threading.Thread(target=render, name="driftmon-scrape", daemon=True).start()
        return await asyncio.shield(future)

    def _forget(self, key: tuple[str, bool]) -> Callable[[asyncio.Future[Scrape]], None]:
        def forget(done: asyncio.Future[Scrape]) -> None:
            if self._rendering.get(key) is done:
                del self._rendering[key]
            if not done.cancelled():
                done.exception()  # retrieved: scrapers that left do not leave it unread

        return forget


def _settle_scrape(
    future: asyncio.Future[Scrape], result: Scrape | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
