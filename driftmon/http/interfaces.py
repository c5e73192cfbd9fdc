"""What the HTTP layer is given: the ingest gate's interface, the views, and app keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from driftmon.config import Config
from driftmon.evaluation import Evaluation
from driftmon.history import MonitorHistory
from driftmon.http.responses import ReadingBodies
from driftmon.ingest import CloudEventsResult, IngestResult

__all__ = [
    "GATE_KEY",
    "READING_KEY",
    "VIEWS_KEY",
    "IngestGate",
    "ReloadResult",
    "ScrapeBody",
    "Views",
]


class IngestGate(Protocol):
    """What ingest handlers call (:class:`driftmon.ingest.Gate` is one)."""

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def body_bound_bytes(self) -> int: ...

    def has_stream(self, name: str) -> bool: ...

    def cloudevents_root(self) -> bool: ...

    def count_request(self, code: int | str) -> None: ...  # a status, or "client_closed"

    async def ingest(
        self,
        stream: str,
        body: bytes,
        content_type: str | None,
        idempotency_key: str | None = None,
    ) -> IngestResult: ...

    async def ingest_cloudevents(
        self, headers: Mapping[str, str], body: bytes
    ) -> CloudEventsResult: ...


class ReloadResult(Protocol):
    """What a reload did (:class:`driftmon.daemon.ReloadOutcome` is one)."""

    @property
    def errors(self) -> list[str]: ...  # then nothing changed

    @property
    def notices(self) -> list[str]: ...  # settings that apply only at restart


class ScrapeBody(Protocol):
    """A rendered ``/metrics`` body (:class:`driftmon.exporter.Scrape` is one)."""

    @property
    def chunks(self) -> tuple[bytes, ...]: ...

    @property
    def content_type(self) -> str: ...

    @property
    def content_encoding(self) -> str | None: ...  # "gzip", or None


@dataclass(frozen=True)
class Views:
    """What the other endpoints read and do; each a callable, read at every request."""

    authorized: Callable[[str | None], bool]  # the Authorization header passes
    ready: Callable[[], bool]
    # (Accept, gzip accepted) → the body, rendered off the event loop
    scrape: Callable[[str | None, bool], Awaitable[ScrapeBody]]
    reload: Callable[[], Awaitable[ReloadResult]]  # one at a time, coalesced
    latest: Callable[[], Evaluation | None]
    config: Callable[[], Config]  # the config running now
    monitor_detail: Callable[[str, str], dict[str, object] | None]
    monitor_history: Callable[[str, str], MonitorHistory | None]
    # (stream, feature) -> the metric wanted: their histories of it
    history_series: Callable[[dict[tuple[str, str], str]], dict[tuple[str, str], MonitorHistory]]


GATE_KEY: web.AppKey[IngestGate] = web.AppKey("gate", IngestGate)
VIEWS_KEY: web.AppKey[Views] = web.AppKey("views", Views)
READING_KEY: web.AppKey[ReadingBodies] = web.AppKey("reading", ReadingBodies)
