"""``driftmon replay --html``: the monitor pages of an offline run, in one file, in Chromium."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from browser import ARTIFACTS, Browser

from driftmon.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "replay" / "payments.yaml"
DATA = REPO / "config" / "replay" / "payments.csv"

REPORT_JS = """(() => {
  const rows = [...document.querySelectorAll('tr.monitor-row')].map(r => ({
    feature: r.dataset.feature, state: r.dataset.state,
    href: r.querySelector('a.monitor-link').getAttribute('href')}));
  const sections = [...document.querySelectorAll('section.monitor')].map(s => {
    const svg = s.querySelector('svg.hist');
    return {id: s.id, title: s.querySelector('.monitor-title').textContent,
      text: s.innerText, yMax: Number(svg.dataset.yMax),
      plotHeight: Number(svg.dataset.plotHeight),
      bars: [...svg.querySelectorAll('rect[data-kind]')].map(r => ({
        kind: r.dataset.kind, share: Number(r.dataset.proportion),
        height: r.getBoundingClientRect().height})),
      charts: s.querySelectorAll('.charts svg.history').length};
  });
  return {rows, sections};
})()"""


async def _look(path: Path) -> dict[str, Any]:
    async with Browser() as browser:
        await browser.open(path.as_uri())
        seen = await browser.evaluate(REPORT_JS)
        await browser.screenshot(ARTIFACTS / "replay-report.png")
        seen["requests"] = list(browser.requests)
    return seen  # type: ignore[no-any-return]


def test_replay_html_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", "-c", str(CONFIG), "--stream", "payments", "--input", str(DATA)]
    assert main(args) == 0
    plain = capsys.readouterr().out
    report = tmp_path / "report.html"
    assert main([*args, "--html", str(report)]) == 0
    assert capsys.readouterr().out == plain  # the JSON lines do not change
    text = report.read_text()
    for outside in ("http://", "https://", "src=", "<script", "<link"):
        assert outside not in text, outside
    records = [json.loads(line) for line in plain.splitlines()]
    final = {r["feature"]: r for r in records if r["time"] == records[-1]["time"]}

    seen = asyncio.run(_look(report))
    assert seen["requests"] == [report.as_uri()]  # the file and nothing else
    rows = seen["rows"]
    assert sorted(r["feature"] for r in rows) == sorted(final)
    firing = [f for f, r in final.items() if r["firing"]]
    assert firing and [r["feature"] for r in rows[: len(firing)]] == firing
    assert all(r["state"] == "firing" for r in rows[: len(firing)])
    sections = {s["id"]: s for s in seen["sections"]}
    for row in rows:
        section = sections[row["href"].lstrip("#")]
        assert section["title"].startswith(f"payments / {row['feature']}")
        record = final[row["feature"]]
        assert f"live window: {record['samples']} rows" in section["text"]
        assert f"reference: {record['reference_samples']} rows" in section["text"]
        for kind in ("reference", "live"):
            shares = [b["share"] for b in section["bars"] if b["kind"] == kind]
            assert sum(shares) == pytest.approx(1.0)
        for bar in section["bars"]:
            expected = bar["share"] / section["yMax"] * section["plotHeight"]
            assert bar["height"] == pytest.approx(expected, abs=1.0)
        assert section["charts"] == 7
    amount = sections[next(r["href"] for r in rows if r["feature"] == "amount").lstrip("#")]
    # The whole run on event time, one entry a minute (no values during the warmup).
    assert "120 evaluations from 2024-05-01 00:01:00 UTC to 2024-05-01 02:00:00 UTC" in (
        amount["text"]
    )
    assert "Firing since 2024-05-01" in amount["text"]
