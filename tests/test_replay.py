"""``driftmon replay`` and ``driftmon reference build`` on the shipped example (docs/cli.md).

config/replay/payments.yaml replays config/replay/payments.csv: two hours of
event time whose ``amount`` and ``channel`` distributions shift at 01:00.
Every printed line is recomputed here from the CSV by the slow, obvious
route: warmup rows, the rows inside each evaluation's window, naive
histograms and divergences, and the state machine of docs/divergences.md walked by hand for the
alert rules. Nothing about when the rules fire is hard-coded.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from naive import divergences_one, wasserstein_one
from test_engine import layout_edges, naive_counts, naive_layout

from driftmon.cli import main
from driftmon.config import load_config, parse_config
from driftmon.engine import Engine
from driftmon.reference import build_reference, load_snapshot, numeric_fields
from driftmon.sources import read_table
from driftmon.tools.replay import RECORD_KEYS, replay

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "replay"
CONFIG = EXAMPLE / "payments.yaml"
DATA = EXAMPLE / "payments.csv"
SHIFT_AT = datetime(2024, 5, 1, 1, 0, tzinfo=UTC).timestamp()


# --- the example, read the obvious way --------------------------------------------------------


def example_doc() -> dict[str, Any]:
    """The example config as a plain YAML document."""
    return yaml.safe_load(CONFIG.read_text())


def read_rows(path: Path = DATA) -> list[dict[str, object]]:
    """The CSV's rows: ``time`` in epoch seconds, numeric cells as floats, empty as None."""
    rows = []
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            rows.append(
                {
                    "time": datetime.fromisoformat(record["ts"]).timestamp(),
                    "amount": float(record["amount"]) if record["amount"] else None,
                    "latency_ms": float(record["latency_ms"]),
                    "channel": record["channel"],
                    "country": record["country"],
                }
            )
    return rows


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class NaiveRule:
    """One docs/divergences.md rule walked by hand: inactive → pending → firing → inactive."""

    spec: Mapping[str, Any]
    state: str = "inactive"
    active_at: float = math.nan

    def step(self, value: float, p_value: float, samples: float, now: float) -> None:
        if samples < self.spec.get("min_samples", 0) or math.isnan(value):
            return  # held: no verdict
        significant = "max_p_value" not in self.spec or p_value < self.spec["max_p_value"]
        over = value > self.spec["threshold"] and significant
        above_clear = value > self.spec.get("clear_below", self.spec["threshold"]) and significant
        for_s = {"0s": 0.0, "3m": 180.0}[self.spec.get("for", "0s")]
        if self.state == "inactive" and over:
            self.state, self.active_at = "pending", now
        elif self.state == "pending" and not over:
            self.state, self.active_at = "inactive", math.nan
        elif self.state == "firing" and not above_clear:
            self.state, self.active_at = "inactive", math.nan  # keep_firing_for is 0 here
        if self.state == "pending" and now - self.active_at >= for_s:
            self.state = "firing"


def naive_replay(
    doc: Mapping[str, Any],
    rows: Sequence[Mapping[str, object]],
    *,
    reference_rows: Sequence[Mapping[str, object]] | None = None,
    event_time: bool = True,
) -> list[dict[str, object]]:
    """The docs/cli.md records replay should print, from first principles.

    ``reference_rows`` stands for a file or snapshot reference; without it
    the stream's ``warmup`` rows are the reference and stay out of the window.
    """
    stream = doc["streams"][0]
    features = stream["features"]
    every_s = 60.0
    width_s = 600.0 / stream["window"]["panes"]
    panes = stream["window"]["panes"]
    if reference_rows is None:
        n_warmup = stream["reference"]["warmup"]
        reference_rows, live_rows = rows[:n_warmup], rows[n_warmup:]
        ready_at = rows[n_warmup - 1]["time"]  # the warmup freezes with this row
    else:
        live_rows, ready_at = rows, -math.inf
    layouts = {
        f["name"]: naive_layout(f, [r.get(f["name"]) for r in reference_rows]) for f in features
    }
    reference = {
        name: naive_counts(layout, [r.get(name) for r in reference_rows])
        for name, layout in layouts.items()
    }
    rules = [(rule, NaiveRule(rule)) for rule in doc.get("alerts", [])]

    if event_time:
        first, last = float(rows[0]["time"]), float(rows[-1]["time"])  # type: ignore[arg-type]
        times = np.arange((math.floor(first / every_s) + 1) * every_s, last + every_s + 1, every_s)
        times = times[times <= (math.floor(last / every_s) + 1) * every_s]
    else:
        times = np.array([0.0])
    records: list[dict[str, object]] = []
    for now in times:
        if event_time:
            if not ready_at < now:
                continue  # still warming up: no monitor, nothing printed
            newest = math.floor(now / width_s)
            inside = [
                r for r in live_rows
                if r["time"] < now and newest - panes < math.floor(r["time"] / width_s) <= newest  # type: ignore[operator]
            ]  # fmt: skip
        else:
            inside = list(live_rows)
        values = {}
        for name, layout in layouts.items():
            live = naive_counts(layout, [r.get(name) for r in inside])
            values[name] = divergences_one(reference[name], live)
            if layout[0] != "categorical":
                edges = layout_edges(layout)
                k = len(edges) + 1
                values[name]["wasserstein"] = wasserstein_one(reference[name][:k], live[:k], edges)
            else:
                values[name]["wasserstein"] = math.nan
            values[name]["samples"] = live.sum()
        firing: dict[str, list[str]] = {name: [] for name in layouts}
        for rule, walker in rules:
            name = rule["match"]["feature"]
            metric = values[name]
            walker.step(metric[rule["metric"]], metric["p_value"], metric["samples"], float(now))
            if walker.state == "firing":
                firing[name].append(rule["name"])
        for name in layouts:
            metric = values[name]
            records.append(
                {
                    "time": rfc3339(now) if event_time else None,
                    "stream": stream["name"],
                    "feature": name,
                    "samples": int(metric["samples"]),
                    "reference_samples": int(reference[name].sum()),
                    **{
                        key: None if math.isnan(metric[key]) else metric[key]
                        for key in RECORD_KEYS[5:12]
                    },
                    "firing": firing[name],
                }
            )
    return records


def assert_records_match(
    got: Sequence[Mapping[str, object]], want: Sequence[Mapping[str, object]]
) -> None:
    """Same records in the same order; numbers to 1e-12 relative (p-values 1e-13 absolute)."""
    assert len(got) == len(want)
    for line, (record, expected) in enumerate(zip(got, want, strict=True), 1):
        assert list(record) == list(RECORD_KEYS), line
        for key in RECORD_KEYS:
            value, target = record[key], expected[key]
            where = f"line {line} ({expected['time']} {expected['feature']}) {key}"
            where += f": {value!r} != {target!r}"
            if isinstance(target, float) and key != "samples":
                assert isinstance(value, float), where
                if key == "hellinger":
                    # naive's 1 - Σ sqrt(p q) has an absolute floor in the square
                    assert abs(value**2 - target**2) <= 1e-12 * target**2 + 1e-14, where
                else:
                    tolerance = 1e-13 if key == "p_value" else 1e-15
                    assert math.isclose(value, target, rel_tol=1e-12, abs_tol=tolerance), where
            else:
                assert value == target, where


def parse_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


# --- the example itself -------------------------------------------------------------------------


def test_the_example_data_file_is_what_make_data_writes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "payments.csv").read_bytes() == DATA.read_bytes()


def test_the_example_config_is_valid_and_matches_the_data() -> None:
    config = load_config(CONFIG)
    stream = config.stream("payments")
    assert stream.time_field == "ts" and stream.reference.warmup_rows == 1200
    rows = read_rows()
    assert len(rows) == 3600
    assert rows[-1]["time"] - rows[0]["time"] == 2 * 3600 - 2  # type: ignore[operator]


@pytest.fixture(scope="module")
def expected_records() -> list[dict[str, object]]:
    return naive_replay(example_doc(), read_rows())


def test_replay_prints_the_naive_records_and_the_rule_fires_after_the_shift(
    capsys: pytest.CaptureFixture[str], expected_records: list[dict[str, object]]
) -> None:
    status = main(["replay", "-c", str(CONFIG), "--stream", "payments", "--input", str(DATA)])
    out, err = capsys.readouterr()
    assert status == 0 and err == ""
    records = parse_lines(out)
    assert_records_match(records, expected_records)

    # What the demo is for, said in the data's own terms:
    amount = [r for r in records if r["feature"] == "amount"]
    times = [datetime.fromisoformat(str(r["time"])).timestamp() for r in amount]
    # ... the first evaluation after the warmup has an empty window: absent divergences,
    assert amount[0]["samples"] == 0 and amount[0]["js"] is None
    # ... before the shift js stays low once the window holds min_samples rows,
    before = [r["js"] for r, t in zip(amount, times, strict=True) if t <= SHIFT_AT]
    after = [r["js"] for r, t in zip(amount, times, strict=True) if t >= SHIFT_AT + 600]
    held = [r["samples"] < 200 for r, t in zip(amount, times, strict=True) if t <= SHIFT_AT]
    assert max(js for js, h in zip(before, held, strict=True) if not h) < 0.05  # type: ignore[type-var]
    # ... and once the window holds only shifted rows it is well above the threshold,
    assert min(after) > 0.05  # type: ignore[type-var]
    # ... so the rule fires, first at an evaluation after the shift, exactly where
    # the naive state machine says (already asserted line by line above).
    first_firing = next(t for r, t in zip(amount, times, strict=True) if r["firing"])
    assert SHIFT_AT < first_firing <= SHIFT_AT + 600 + 180
    want_first = next(
        r["time"] for r in expected_records if r["feature"] == "amount" and r["firing"]
    )
    assert rfc3339(first_firing) == want_first


def test_replay_as_a_subprocess_prints_the_same_lines(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", "-c", str(CONFIG), "--stream", "payments", "--input", str(DATA)]
    assert main(args) == 0
    in_process = capsys.readouterr().out
    result = subprocess.run(
        [sys.executable, "-m", "driftmon", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == in_process
    assert len(result.stdout.splitlines()) == 4 * 81  # 00:40 .. 02:00, four monitors


def test_replay_without_time_field_evaluates_once_at_the_end(tmp_path: Path) -> None:
    doc = example_doc()
    del doc["streams"][0]["time_field"]
    config = parse_config(doc, base_dir=EXAMPLE)
    out = io.StringIO()
    assert replay(config, "payments", DATA, out) == 1
    records = parse_lines(out.getvalue())
    assert [r["feature"] for r in records] == ["amount", "latency_ms", "channel", "country"]
    assert all(r["time"] is None for r in records)
    assert all(r["samples"] == 3600 - 1200 for r in records)
    assert_records_match(records, naive_replay(doc, read_rows(), event_time=False))


def test_replay_reads_json_files_with_epoch_seconds_too(tmp_path: Path) -> None:
    rows = read_rows()
    path = tmp_path / "payments.json"
    shipped = [{**{k: v for k, v in r.items() if k != "time"}, "ts": r["time"]} for r in rows]
    path.write_text(json.dumps(shipped))
    out = io.StringIO()
    replay(load_config(CONFIG), "payments", path, out, chunk_rows=777)
    assert_records_match(parse_lines(out.getvalue()), naive_replay(example_doc(), rows))


def test_replay_prints_infinity_for_an_unsmoothed_kl(tmp_path: Path) -> None:
    doc = {
        "engine": {"evaluate_every": "1m"},
        "streams": [
            {
                "name": "s",
                "reference": {"warmup": 2},
                "window": {"samples": 10},
                "features": [
                    {"name": "c", "type": "categorical", "categories": ["a", "b"], "smoothing": 0}
                ],
            }
        ],
    }
    data = tmp_path / "rows.csv"
    data.write_text("c\na\nb\na\na\n")
    out = io.StringIO()
    replay(parse_config(doc, base_dir=tmp_path), "s", data, out)
    assert '"kl": Infinity' in out.getvalue()
    (record,) = parse_lines(out.getvalue())
    assert record["kl"] == math.inf and record["samples"] == 2 and record["reference_samples"] == 2


def test_replay_refuses_an_unknown_stream_and_an_unreadable_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["replay", "-c", str(CONFIG), "--stream", "nope", "--input", str(DATA)]) == 1
    assert "no stream 'nope' (streams: payments)" in capsys.readouterr().err
    missing = tmp_path / "missing.csv"
    assert main(["replay", "-c", str(CONFIG), "--stream", "payments", "--input", str(missing)]) == 1
    assert capsys.readouterr().err.startswith("driftmon replay: ")
    broken = tmp_path / "broken.csv"
    broken.write_text("ts,amount\n2024-05-01T00:00:00Z,1,2\n")
    assert main(["replay", "-c", str(CONFIG), "--stream", "payments", "--input", str(broken)]) == 1
    assert "line 2" in capsys.readouterr().err


# --- reference build, then a config that loads the snapshot ------------------------------------


def test_reference_build_then_a_snapshot_config_replays_against_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = read_rows()
    first_hour = [r for r in rows if r["time"] < SHIFT_AT]  # type: ignore[operator]
    source = tmp_path / "first_hour.csv"
    lines = DATA.read_text().splitlines()
    source.write_text("\n".join(lines[: 1 + len(first_hour)]) + "\n")
    snapshot = tmp_path / "payments-reference.npz"
    status = main(
        ["reference", "build", "-c", str(CONFIG), "--stream", "payments",
         "--input", str(source), "-o", str(snapshot)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith(f"{snapshot}: reference of stream 'payments', 1800 rows, 4 features")

    doc = example_doc()
    doc["streams"][0]["reference"] = {"snapshot": snapshot.name}
    config_path = tmp_path / "payments.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    config = load_config(config_path)
    stream = config.stream("payments")
    batch = read_table(
        source, [f.name for f in stream.features], numeric_fields=numeric_fields(stream)
    )
    built = build_reference(stream, batch.n_rows, batch.columns)
    loaded = load_snapshot(snapshot, stream)
    assert loaded.binners == built.binners and loaded.rows == 1800
    engine = Engine(config, now=0.0)
    np.testing.assert_array_equal(engine.reference, np.concatenate(built.counts))

    status = main(["replay", "-c", str(config_path), "--stream", "payments", "--input", str(DATA)])
    records = parse_lines(capsys.readouterr().out)
    assert status == 0
    assert_records_match(records, naive_replay(doc, rows, reference_rows=first_hour))
    assert records[0]["time"] == "2024-05-01T00:01:00.000Z"  # no warmup: live from the start
    assert {r["reference_samples"] for r in records} == {1800}
