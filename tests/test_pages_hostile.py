"""Hostile names (quotes, ``<script>``, newlines, entities) reach the pages as text, never markup.

Feature and rule names come from the config, categories from the reference
data and the rows: all of them are shown, escaped, in a real Chromium; no
element, attribute or script is injected, and the links still lead to the
right monitor.
"""

from __future__ import annotations

import asyncio
import json
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urljoin

import pytest
import yaml
from browser import ARTIFACTS, Browser
from harness import DaemonProcess, wait_for

NUMERIC = "q\"uo'te &amp; <u>under"
LEARNED = "<script>alert(1)"
LISTED = "<img src=x onerror=alert(2)>"
LEARNED_VALUES = ["</script><script>alert(4)</script>", "new\nline", "quote\"'`", "&lt;b&gt;"]
LISTED_CATEGORIES = ["</td></tr><tr><td>x", "a\"b'c", "two\nlines", "<!--"]
RULE = "<img src=y onerror=alert(3)>\"'"
SEVERITY = "\"><svg onload=alert(5)>"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("hostile")
    rows = [
        {NUMERIC: i % 10, LEARNED: LEARNED_VALUES[i % 4], LISTED: LISTED_CATEGORIES[i % 4]}
        for i in range(200)
    ]
    (folder / "ref.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    document = {
        "engine": {"evaluate_every": "1s", "history": {"length": "10m", "every": "1s"}},
        "streams": [
            {
                "name": "s",
                "reference": {"file": "ref.ndjson"},
                "window": {"samples": 100},
                "features": [
                    {
                        "name": NUMERIC,
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5},
                    },
                    {"name": LEARNED, "type": "categorical", "top_k": 4},
                    {"name": LISTED, "type": "categorical", "categories": LISTED_CATEGORIES},
                ],
            }
        ],
        "alerts": [
            {
                "name": RULE,
                "match": {"stream": "*", "feature": "*"},
                "metric": "js",
                "threshold": 0.01,
                "min_samples": 1,
                "severity": SEVERITY,
            }
        ],
    }
    path = folder / "hostile.yaml"
    path.write_text(yaml.safe_dump(document))
    with DaemonProcess(path) as process:
        drifted = [
            {NUMERIC: 9, LEARNED: LEARNED_VALUES[1], LISTED: LISTED_CATEGORIES[2]}
            for _ in range(100)
        ]
        assert process.post_json("s", json.dumps(drifted).encode()).status == 200
        wait_for(
            lambda: all(
                a["state"] == "firing"
                for m in process.get("/api/v1/monitors").json()["monitors"]
                for a in m["alerts"]
            ),
            30,
            "every monitor firing",
        )
        yield process


INJECTED_JS = """({
  elements: document.querySelectorAll('script, img, iframe, object, embed, u, svg:not(.spark)'
    + ':not(.hist):not(.history)').length,
  handlers: [...document.querySelectorAll('*')].filter(
    e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
  rows: [...document.querySelectorAll('tr.monitor-row')].map(r => r.dataset.feature),
  links: [...document.querySelectorAll('a.monitor-link')].map(a => a.textContent),
  bins: [...document.querySelectorAll('#bins tr[data-bin] td:first-child')].map(
    td => td.textContent),
  rules: [...document.querySelectorAll('#rules tr[data-rule]')].map(r => r.dataset.rule),
  title: document.title,
})"""


async def _look(url: str, paths: list[str]) -> list[dict[str, Any]]:
    found = []
    async with Browser() as browser:
        for k, path in enumerate(paths):
            await browser.open(url + path)
            found.append(await browser.evaluate(INJECTED_JS))
            await browser.screenshot(ARTIFACTS / f"hostile-{k}.png")
        found.append({"dialogs": browser.dialogs})
    return found


def test_hostile_names_are_text_not_markup(hostile: DaemonProcess) -> None:
    process = hostile
    features = [NUMERIC, LEARNED, LISTED]
    paths = ["/"] + [f"/monitors/s/{quote(f, safe='')}" for f in features]
    for path in paths:
        reply = process.get(path)
        assert reply.status == 200, (path, reply.body[:200])
        lowered = reply.body.lower()
        for tag in (b"<script", b"<img", b"<svg onload", b"<u>", b"<!--"):
            assert tag not in lowered, (path, tag)
    *pages, tail = asyncio.run(_look(process.url, paths))
    assert tail["dialogs"] == []
    for page in pages:
        assert page["elements"] == 0, page
        assert page["handlers"] == 0, page
    overview = pages[0]
    assert sorted(overview["rows"]) == sorted(features)
    assert sorted(overview["links"]) == sorted(features)
    for feature, page in zip(features, pages[1:], strict=True):
        detail = process.monitor("s", quote(feature, safe=""))
        assert detail["feature"] == feature
        assert page["bins"] == detail["bins"]  # newlines, quotes and tags, as text
        assert page["rules"] == [RULE]
        assert feature in page["title"]
    assert set(LEARNED_VALUES) <= set(pages[2]["bins"])
    assert set(LISTED_CATEGORIES) <= set(pages[3]["bins"])
    assert Path(ARTIFACTS / "hostile-1.png").exists()


def test_query_links_redirect_to_the_page(hostile: DaemonProcess) -> None:
    """What ``driftmon rules``' ``driftmon_url`` and the dashboard's data links open."""
    import aiohttp

    async def follow(path: str) -> tuple[int, str, str]:
        async with aiohttp.ClientSession() as session:
            async with session.get(hostile.url + path, allow_redirects=False) as first:
                location = first.headers.get("Location", "")
            async with session.get(urljoin(hostile.url + path, location)) as page:
                return first.status, location, await page.text()

    status, location, text = asyncio.run(
        follow(f"/monitors?stream=s&feature={quote_plus(NUMERIC, safe='')}")
    )
    assert status == 302 and unquote(location) == f"monitors/s/{NUMERIC}"
    assert escape(NUMERIC) in text
    assert hostile.get("/monitors?stream=s").status == 400


def test_names_that_cannot_reach_a_page(tmp_path: Path) -> None:
    """Stream names (``[A-Za-z0-9_.-]``) and feature names (no ``/``, nothing unprintable)
    are checked by the config, so a newline or a tag can only arrive as a category."""
    from driftmon.config import ConfigError, parse_config

    for stream, feature in (("<script>", "x"), ("s", "two\nlines"), ("s", "</script>")):
        document = {
            "streams": [
                {
                    "name": stream,
                    "reference": {"warmup": 10},
                    "features": [{"name": feature, "type": "categorical", "top_k": 2}],
                }
            ]
        }
        with pytest.raises(ConfigError):
            parse_config(document, base_dir=tmp_path)
