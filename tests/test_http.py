"""The HTTP layer (driftmon/http/): middleware, handlers and their answers.

The first tests serve :func:`driftmon.http.app.make_app` over a small fake gate
(a real aiohttp server on a free port, aiohttp's test client): auth and the
request counter are middleware, so every ingest route answers 401 alike and
every answer of one is counted once, whatever the handler did. The last ones
check the same against a real daemon.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from harness import DaemonProcess, sample

from driftmon.config import Config, parse_config
from driftmon.daemon import ReloadOutcome
from driftmon.exporter import Scrape
from driftmon.http.app import bearer_matches, make_app
from driftmon.http.interfaces import Views
from driftmon.ingest import CloudEventsResult, IngestResult, NotReady, QueueFull, body_bound_bytes
from driftmon.sources import BodyError, UnsupportedMediaType

TOKEN = b"s3cret"
MAX_BODY = 1000


class FakeGate:
    """What the ingest handlers call, recording it; ``fail`` makes ingest raise."""

    def __init__(self) -> None:
        self.codes: Counter[int | str] = Counter()
        self.bodies: list[bytes] = []
        self.fail: Exception | None = None
        self.root = False

    @property
    def max_body_bytes(self) -> int:
        return MAX_BODY

    @property
    def body_bound_bytes(self) -> int:
        return body_bound_bytes(MAX_BODY)

    def has_stream(self, name: str) -> bool:
        return name == "s"

    def cloudevents_root(self) -> bool:
        return self.root

    def count_request(self, code: int | str) -> None:
        self.codes[code] += 1

    async def ingest(
        self,
        stream: str,
        body: bytes,
        content_type: str | None,
        idempotency_key: str | None = None,
    ) -> IngestResult:
        self.bodies.append(body)
        if self.fail is not None:
            raise self.fail
        return IngestResult(rows=len(body), unknown_fields=0)

    async def ingest_cloudevents(
        self, headers: Mapping[str, str], body: bytes
    ) -> CloudEventsResult:
        self.bodies.append(body)
        if self.fail is not None:
            raise self.fail
        return CloudEventsResult(rows=1, events=1, dropped={"no_stream": 0})


def views(reloads: list[int], config: Config) -> Views:
    async def reload() -> ReloadOutcome:
        reloads.append(1)
        return ReloadOutcome([], [])

    async def scrape(accept: str | None, gzip: bool) -> Scrape:
        return Scrape((b"# nothing\n",), "text/plain; version=0.0.4", None)

    return Views(
        authorized=lambda header: bearer_matches(header, TOKEN),
        ready=lambda: True,
        scrape=scrape,
        reload=reload,
        latest=lambda: None,
        config=lambda: config,
        monitor_detail=lambda stream, feature: None,
        monitor_history=lambda stream, feature: None,
        history_series=lambda wanted: {},
    )


def serve(check: Callable[[TestClient, FakeGate, list[int]], Awaitable[None]]) -> None:
    async def main() -> None:
        gate, reloads = FakeGate(), []
        config = parse_config(CONFIG, base_dir=Path("."))
        async with TestClient(TestServer(make_app(gate, views(reloads, config)))) as client:
            await check(client, gate, reloads)

    asyncio.run(main())


CONFIG = {
    "streams": [
        {
            "name": "s",
            "reference": {"warmup": 10},
            "features": [{"name": "x", "type": "categorical", "categories": ["a"]}],
        }
    ]
}
AUTH = {"Authorization": "Bearer s3cret"}
JSON = {"Content-Type": "application/json"}


def test_every_guarded_route_answers_401_without_the_token_and_runs_nothing() -> None:
    async def check(client: TestClient, gate: FakeGate, reloads: list[int]) -> None:
        gate.root = True
        for path in ("/v1/streams/s/rows", "/v1/cloudevents", "/", "/-/reload"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                reply = await client.post(path, data=b"[]", headers={**JSON, **headers})
                assert reply.status == 401, path
                assert reply.headers["WWW-Authenticate"] == 'Bearer realm="driftmon"'
                assert "bearer token" in (await reply.json())["error"]
        assert gate.bodies == [] and reloads == []
        # The three ingest routes count their 401s; reload is not an ingest request.
        assert gate.codes == {401: 9}
        for path in ("/v1/streams/s/rows", "/v1/cloudevents", "/"):
            reply = await client.post(path, data=b"[]", headers={**JSON, **AUTH})
            assert reply.status == 200, path
        assert (await client.post("/-/reload", headers=AUTH)).status == 200
        assert reloads == [1] and gate.codes == {401: 9, 200: 3}
        # Unguarded routes need no token.
        assert (await client.get("/metrics")).status == 200
        assert (await client.get("/-/healthy")).status == 200

    serve(check)


def test_every_answer_of_an_ingest_route_is_counted_once() -> None:
    async def check(client: TestClient, gate: FakeGate, reloads: list[int]) -> None:
        async def post(path: str, body: bytes = b"[]", **headers: str) -> int:
            reply = await client.post(path, data=body, headers={**JSON, **AUTH, **headers})
            return reply.status

        assert await post("/v1/streams/nope/rows") == 404
        assert await post("/v1/streams/s/rows", b"x" * (MAX_BODY + 1)) == 413
        gate.fail = UnsupportedMediaType("no")
        assert await post("/v1/streams/s/rows") == 415
        gate.fail = BodyError("line 1, column 2: invalid JSON (x)")
        reply = await client.post("/v1/streams/s/rows", data=b"[", headers={**JSON, **AUTH})
        assert reply.status == 400
        assert await reply.json() == {"error": "line 1, column 2: invalid JSON (x)"}
        gate.fail = QueueFull("full")
        reply = await client.post("/v1/cloudevents", data=b"[]", headers={**JSON, **AUTH})
        assert (reply.status, reply.headers["Retry-After"]) == (503, "1")
        gate.fail = NotReady()
        assert await post("/v1/streams/s/rows") == 503
        gate.fail = RuntimeError("a bug")  # aiohttp answers 500; the counter sees it
        assert await post("/v1/cloudevents") == 500
        gate.fail = None
        assert await post("/v1/streams/s/rows", b"[1]") == 200
        assert gate.codes == {404: 1, 413: 1, 415: 1, 400: 1, 503: 2, 500: 1, 200: 1}
        # Other routes are not ingest requests.
        await client.get("/metrics")
        await client.get("/api/v1/monitors/s/x")
        assert sum(gate.codes.values()) == 8

    serve(check)


def test_post_root_is_404_while_off_before_auth_and_uncounted() -> None:
    async def check(client: TestClient, gate: FakeGate, reloads: list[int]) -> None:
        reply = await client.post("/", data=b"[]", headers=JSON)
        assert reply.status == 404
        assert "ingest.cloudevents.root: true" in (await reply.json())["error"]
        assert gate.codes == {} and gate.bodies == []
        gate.root = True  # read per request: a reload turns it on
        assert (await client.post("/", data=b"{}", headers={**JSON, **AUTH})).status == 200
        assert gate.bodies == [b"{}"]

    serve(check)


def test_bearer_matching() -> None:
    assert bearer_matches(None, None)
    assert bearer_matches("anything", None)
    assert bearer_matches("Bearer s3cret", TOKEN)
    assert bearer_matches("  bearer   s3cret ", TOKEN)
    assert not bearer_matches("Basic s3cret", TOKEN)
    assert not bearer_matches("Bearer s3cret2", TOKEN)
    assert not bearer_matches(None, TOKEN)
    # An undecodable header as aiohttp hands it over: no match, no exception.
    assert not bearer_matches("Bearer s3cr\udcffet", TOKEN)


# --- against a real daemon ----------------------------------------------------------------


def write_config(folder: Path) -> Path:
    (folder / "token").write_text("s3cret\n")
    (folder / "ref.csv").write_text("x\n" + "".join(f"{i % 10}\n" for i in range(50)))
    config = {
        "server": {"listen": "127.0.0.1:0", "auth_token_file": "token"},
        "engine": {"evaluate_every": "1s"},
        "streams": [
            {
                "name": "s",
                "reference": {"file": "ref.csv"},
                "features": [
                    {"name": "x", "type": "numeric",
                     "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5}},
                ],
                "cloudevents": {"service": "svc", "inputs": ["x"]},
            }
        ],
    }  # fmt: skip
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config))
    return path


def requests_total(process: DaemonProcess, code: str) -> float:
    return sample(process.metrics(), "driftmon_ingest_requests_total", code=code) or 0.0


def test_a_real_daemon_guards_and_counts_through_the_middleware(tmp_path: Path) -> None:
    with DaemonProcess(write_config(tmp_path)) as process:
        body = b'[{"x": 1.5}, {"x": 7}]'
        assert process.post_json("s", body).status == 401
        assert process.post("/v1/cloudevents", b"{}", {"Content-Type": "a/b"}).status == 401
        assert process.post("/-/reload").status == 401
        assert requests_total(process, "401") == 2  # reload is not an ingest request
        reply = process.post_json("s", body, token="s3cret")
        assert (reply.status, reply.json()) == (200, {"rows": 2})
        event = {
            "Content-Type": "application/json",
            "Authorization": "Bearer s3cret",
            "Ce-Specversion": "1.0",
            "Ce-Id": "1",
            "Ce-Source": "test",
            "Ce-Type": "org.kubeflow.serving.inference.request",
            "Ce-Inferenceservicename": "svc",
        }
        reply = process.post("/v1/cloudevents", b'{"instances": [3, 4, 5]}', event)
        assert (reply.status, reply.json()) == (200, {"rows": 3, "events": 1, "dropped": {}})
        assert process.post("/", b"{}", event).status == 404  # root is off: not counted
        assert requests_total(process, "200") == 2
        assert requests_total(process, "401") == 2
        rows: Any = sample(process.metrics(), "driftmon_ingest_rows_total", stream="s")
        assert rows == 5
