"""A real headless Chromium driven over the DevTools protocol (a websocket, with aiohttp).

Debian's ``chromium`` runs with no extension, no sync, no background
networking; every request a page makes is recorded (``Network`` events), so a
test can prove that nothing left the host. Screenshots are PNG files.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
"""Where browser tests save screenshots (git-ignored)."""


class Browser:
    """One Chromium process and one page (a flattened DevTools session)."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="driftmon-chromium-")
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []
        self._event_arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._page_session = ""
        self.requests: list[str] = []
        self.dialogs: list[str] = []

    async def __aenter__(self) -> Browser:
        profile = Path(self._profile.name)
        self._process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
                "--disable-default-apps",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(
            f"ws://127.0.0.1:{port}{path}", max_msg_size=0
        )
        self._reader = asyncio.create_task(self._read())
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        self._page_session = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            await self.send(f"{domain}.enable", page=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(20)
        self._profile.cleanup()

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            method = data.get("method")
            params = data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Page.javascriptDialogOpening":
                self.dialogs.append(params.get("message", ""))
            self._events.append(data)
            self._event_arrived.set()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, page: bool = False
    ) -> dict[str, Any]:
        """One DevTools command; its ``result`` (raises on an ``error`` answer)."""
        assert self._ws is not None
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self._page_session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        await self._ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, 60)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})  # type: ignore[no-any-return]

    async def _wait_event(self, method: str, after: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if any(e.get("method") == method for e in self._events[after:]):
                return
            self._event_arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} event")
            try:
                await asyncio.wait_for(self._event_arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def open(self, url: str, *, width: int = 1280, height: int = 900) -> None:
        """Load ``url`` at a ``width`` × ``height`` viewport and wait for its load event."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
            page=True,
        )
        mark = len(self._events)
        await self.send("Page.navigate", {"url": url}, page=True)
        await self._wait_event("Page.loadEventFired", mark)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, page=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """The whole page (or only the viewport) as a PNG at ``path``."""
        shot = await self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": full_page},
            page=True,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
