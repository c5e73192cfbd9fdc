"""The HTML pages as a person sees them: the demo config with drift injected, in Chromium.

A real daemon (``driftmon run``) on a copy of the demo config (evaluating every
second, with a ten-minute window so that the counts hold still while the test
looks), fed the demo producer's rows before and after its drift; a real
headless Chromium loads the pages. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import numpy as np
import orjson
import pytest
import yaml
from browser import ARTIFACTS, CHROMIUM, Browser
from harness import DaemonProcess, wait_for

from driftmon.tools.demo import _fraud_columns, _shop_rows, demo_config_path

assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium (see .ci/run)"


def demo_copy(folder: Path) -> Path:
    """The demo config, evaluating every second with a 10-minute window."""
    source = demo_config_path()
    shutil.copy(source.parent / "shop_reference.ndjson", folder / "shop_reference.ndjson")
    document = yaml.safe_load(source.read_text())
    document["engine"]["evaluate_every"] = "1s"
    document["engine"]["history"] = {"length": "10m", "every": "1s"}
    document["defaults"]["window"] = {"length": "10m", "panes": 10}
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def evaluated_at(process: DaemonProcess) -> float:
    monitors = process.get("/api/v1/monitors").json()["monitors"]
    return float(monitors[0]["evaluated_at"]) if monitors else 0.0


def wait_evaluation_after(process: DaemonProcess, moment: float) -> None:
    wait_for(lambda: evaluated_at(process) > moment, 30, "an evaluation after the last rows")


def feed(process: DaemonProcess, rng: np.random.Generator, rows: int, drifted: bool) -> None:
    for _ in range(rows // 100):
        shop = process.post_json("shop", orjson.dumps(_shop_rows(rng, 100, drifted)))
        fraud = process.post_json(
            "fraud-model", orjson.dumps({"columns": _fraud_columns(rng, 100, drifted)})
        )
        assert shop.status == 200 and fraud.status == 200, (shop, fraud)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("demo")
    rng = np.random.default_rng(17)
    with DaemonProcess(demo_copy(folder)) as process:
        feed(process, rng, 600, drifted=False)  # fraud-model: 300 warmup rows, 300 live
        wait_evaluation_after(process, time.time())
        wait_evaluation_after(process, time.time())  # two quiet entries of history
        feed(process, rng, 600, drifted=True)
        last_post = time.time()
        wait_for(
            lambda: any(
                a["state"] == "firing"
                for m in process.get("/api/v1/monitors").json()["monitors"]
                for a in m["alerts"]
            ),
            30,
            "an alert firing",
        )
        # Then no rule pending (`for:` of 10 s and 15 s in the demo's rules): the states hold
        # still while the test compares the pages with the API (the rows do not move).
        wait_for(
            lambda: all(
                a["state"] != "pending"
                for m in process.get("/api/v1/monitors").json()["monitors"]
                for a in m["alerts"]
            ),
            60,
            "no alert pending",
        )
        wait_evaluation_after(process, last_post)
        yield process


def _monitor_path(stream: str, feature: str) -> str:
    return f"/monitors/{quote(stream, safe='')}/{quote(feature, safe='')}"


ROWS_JS = """[...document.querySelectorAll('tr.monitor-row')].map(r => ({
  stream: r.dataset.stream, feature: r.dataset.feature, state: r.dataset.state,
  href: r.querySelector('a.monitor-link').getAttribute('href')}))"""

BARS_JS = """(() => {
  const svg = document.querySelector('svg.hist');
  const box = svg.getBoundingClientRect();
  return {yMax: Number(svg.dataset.yMax), plotHeight: Number(svg.dataset.plotHeight),
    svgHeight: box.height, svgAttrHeight: Number(svg.getAttribute('height')),
    bars: [...svg.querySelectorAll('rect[data-kind]')].map(r => ({
      kind: r.dataset.kind, bin: Number(r.dataset.bin),
      height: r.getBoundingClientRect().height}))};
})()"""


async def _look(url: str, firing_path: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with Browser() as browser:
        await browser.open(url + "/")
        seen["rows"] = await browser.evaluate(ROWS_JS)
        seen["title"] = await browser.evaluate("document.title")
        seen["links"] = await browser.evaluate(
            "[...document.querySelectorAll('header a')].map(a => a.getAttribute('href'))"
        )
        await browser.screenshot(ARTIFACTS / "overview.png")
        await browser.open(url + "/", width=390, height=844)
        seen["phone_overflow"] = await browser.evaluate(
            "document.documentElement.scrollWidth - window.innerWidth"
        )
        await browser.screenshot(ARTIFACTS / "overview-phone.png")
        # Click through from the overview, as a person would.
        await browser.open(url + "/")
        await browser.evaluate("document.querySelector('a.monitor-link').click()")
        await asyncio.sleep(0)
        wait_deadline = time.monotonic() + 30
        while await browser.evaluate("location.pathname") != firing_path:
            assert time.monotonic() < wait_deadline, "the click did not open the monitor page"
            await asyncio.sleep(0.1)
        await browser.open(url + firing_path)
        seen["bars"] = await browser.evaluate(BARS_JS)
        seen["monitor_text"] = await browser.evaluate("document.body.innerText")
        seen["bin_labels"] = await browser.evaluate(
            "[...document.querySelectorAll('#bins tr[data-bin]')].map(r => r.dataset.label)"
        )
        seen["evaluated"] = await browser.evaluate(
            "document.getElementById('evaluated-at').textContent"
        )
        seen["charts"] = await browser.evaluate(
            "[...document.querySelectorAll('.charts figure')].map(f => f.dataset.metric)"
        )
        await browser.screenshot(ARTIFACTS / "monitor.png")
        await browser.open(url + firing_path, width=390, height=844)
        seen["monitor_phone_overflow"] = await browser.evaluate(
            "document.documentElement.scrollWidth - window.innerWidth"
        )
        await browser.screenshot(ARTIFACTS / "monitor-phone.png")
        seen["requests"] = list(browser.requests)
        seen["dialogs"] = list(browser.dialogs)
    return seen


def test_overview_and_monitor_pages_in_chromium(drifted: DaemonProcess) -> None:
    process = drifted
    api = process.get("/api/v1/monitors").json()["monitors"]
    firing = [m for m in api if any(a["state"] == "firing" for a in m["alerts"])]
    assert firing
    first = firing[0]
    firing_path = _monitor_path(first["stream"], first["feature"])
    detail_before = process.monitor(first["stream"], first["feature"])
    seen = asyncio.run(_look(process.url, firing_path))
    detail = process.monitor(first["stream"], first["feature"])
    assert detail["evaluated_at"] == detail_before["evaluated_at"] or (
        detail["live_counts"] == detail_before["live_counts"]
    )

    # Every monitor listed, the firing ones first, and the first one opens.
    rows = seen["rows"]
    assert sorted((r["stream"], r["feature"]) for r in rows) == sorted(
        (m["stream"], m["feature"]) for m in api
    )
    states = [r["state"] for r in rows]
    assert states[0] == "firing"
    assert states == sorted(states, key=["firing", "pending", "inactive", "none"].index)
    assert {(r["stream"], r["feature"]) for r in rows if r["state"] == "firing"} == {
        (m["stream"], m["feature"]) for m in firing
    }
    assert urljoin(process.url + "/", rows[0]["href"]) == process.url + firing_path
    assert {"./api/v1/monitors", "./metrics", "./-/healthy", "./-/ready"} <= set(seen["links"])
    assert seen["phone_overflow"] <= 0, "the overview scrolls sideways on a phone"
    assert seen["monitor_phone_overflow"] <= 0, "the monitor page scrolls sideways on a phone"

    # The bars are the API's proportions, within a pixel.
    bars = seen["bars"]
    assert bars["svgHeight"] == pytest.approx(bars["svgAttrHeight"], abs=0.5)  # drawn 1:1
    reference = np.asarray(detail["reference_counts"], dtype=float)
    live = np.asarray(detail["live_counts"], dtype=float)
    expected = {"reference": reference / reference.sum(), "live": live / live.sum()}
    assert bars["yMax"] >= max(expected["reference"].max(), expected["live"].max())
    assert len(bars["bars"]) == 2 * len(detail["bins"])
    for bar in bars["bars"]:
        share = expected[bar["kind"]][bar["bin"]]
        assert bar["height"] == pytest.approx(
            share / bars["yMax"] * bars["plotHeight"], abs=1.0
        ), bar
    # Labels, divergences with units, rules and history are on the page.
    text = seen["monitor_text"]
    assert seen["bin_labels"] == detail["bins"]
    for special in ("underflow", "overflow", "missing", "invalid"):
        assert special in text
    assert "nats" in text and "reference SDs" in text
    for alert in first["alerts"]:
        assert alert["rule"] in text
    assert "Firing since" in text
    assert seen["charts"] == ["js", "psi", "kl", "kl_reverse", "hellinger", "wasserstein",
                              "p_value"]

    # Nothing left the host: every request went to the daemon.
    host = urlsplit(process.url).netloc
    assert seen["requests"], "no request recorded"
    for url in seen["requests"]:
        assert urlsplit(url).netloc == host or url.startswith(("data:", "about:")), url
    assert seen["dialogs"] == []
    for name in ("overview.png", "overview-phone.png", "monitor.png", "monitor-phone.png"):
        assert (ARTIFACTS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filters_history_api_and_headers(drifted: DaemonProcess) -> None:
    process = drifted
    page = process.get("/?state=firing")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    states = set(re.findall(r'data-state="(\w+)"', page.body.decode()))
    assert states == {"firing"}
    only_fraud = process.get("/?stream=fraud-model").body.decode()
    assert set(re.findall(r'data-stream="([^"]+)"', only_fraud)) == {"fraud-model"}
    assert process.get("/?state=burning").status == 400
    limited = process.get("/?limit=2").body.decode()
    shown = re.findall(r'data-state="(\w+)"', limited)
    assert shown == ["firing", "firing"]
    assert "Showing the first 2 of 6 monitors" in limited
    assert process.get("/?limit=0").status == 400 and process.get("/?limit=x").status == 400
    assert process.get("/monitors/shop/nope").status == 404
    assert 'http-equiv="refresh" content="5"' in page.body.decode()

    api = process.get("/api/v1/monitors").json()["monitors"]
    first = next(m for m in api if any(a["state"] == "firing" for a in m["alerts"]))
    path = f"/api/v1/monitors/{first['stream']}/{first['feature']}"
    history = process.get(path + "/history").json()
    assert history["stream"] == first["stream"] and history["history_every_s"] == 1.0
    assert len(history["times"]) >= 3
    assert history["times"] == sorted(history["times"])
    assert history["firing"][0] == 0 and history["firing"][-1] >= 1
    latest = process.get(path).json()
    assert history["values"]["js"][-1] == pytest.approx(latest["divergences"]["js"], rel=1e-6)
    assert process.get("/api/v1/monitors/shop/nope/history").status == 404

    # A rule with max_p_value shows the p-value it judged: Holm-corrected in the demo.
    shop = process.monitor("shop", "basket_value")
    (psi,) = [a for a in shop["alerts"] if a["rule"] == "psi-significant"]
    assert psi["p_value_correction"] == "holm"
    corrected = psi["p_value_corrected"]
    shown = "0" if corrected == 0 else f"{corrected:.4g}"
    page_text = process.get("/monitors/shop/basket_value").body.decode()
    row = re.search(r'<tr data-rule="psi-significant".*?</tr>', page_text)
    assert row is not None and "(holm)" in row.group(0)
    assert f'<td class="num">{shown}</td>' in row.group(0)
