"""What a newcomer meets first: the daemon's start log, `reference build`'s errors, the demo.

Each test reproduces something a first user ran into (issue 18) with the real
command line or the real daemon.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from harness import DaemonProcess, wait_for

from driftmon.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.yaml"
CREDIT = REPO / "config" / "data" / "credit_reference.csv"


def two_streams(folder: Path) -> Path:
    """A file-reference stream of two features and a warmup stream of one."""
    (folder / "reference.ndjson").write_text(
        "".join(json.dumps({"x": k % 10, "c": "ab"[k % 2]}) + "\n" for k in range(50))
    )
    config = {
        "engine": {"evaluate_every": "100ms"},
        "streams": [
            {
                "name": "filed",
                "reference": {"file": "reference.ndjson"},
                "features": [
                    {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 4}},
                    {"name": "c", "type": "categorical", "categories": ["a", "b"]},
                ],
            },
            {
                "name": "warm",
                "reference": {"warmup": 100},
                "features": [
                    {
                        "name": "x",
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5},
                    }
                ],
            },
        ],
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config))
    return path


def test_ready_counts_warmup_streams_as_check_does_and_warmup_progress_is_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = two_streams(tmp_path)
    assert main(["check", "-c", str(config)]) == 0
    checked = capsys.readouterr().out
    assert "2 streams, 3 monitors, 0 alert rules" in checked
    rows = json.dumps([{"x": 1.5}] * 35).encode()
    with DaemonProcess(config) as daemon:
        # It said "ready: 2 monitors" here: the warmup stream's monitor was not counted.
        daemon.wait_log(
            r"ready: 2 streams, 3 monitors, 0 alert rules; "
            r"1 stream still collecting a warmup reference"
        )
        daemon.wait_log(r"stream warm: warmup 0 % \(0 of 100 rows\)")
        assert daemon.post_rows("warm", rows).status == 200
        daemon.wait_log(r"stream warm: warmup 30 % \(35 of 100 rows\)")
        assert daemon.post_rows("warm", rows).status == 200
        daemon.wait_log(r"stream warm: warmup 70 % \(70 of 100 rows\)")
        assert daemon.post_rows("warm", rows).status == 200
        daemon.wait_log(r"stream warm: warmup reference frozen")
        # Each step once: evaluations in between log nothing new.
        assert len(re.findall(r"warmup 30 %", daemon.log_text())) == 1


def test_reference_build_names_the_missing_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "nodir" / "credit.npz"
    code = main(
        [
            "reference",
            "build",
            "-c",
            str(EXAMPLE),
            "--stream",
            "credit",
            "--input",
            str(CREDIT),
            "-o",
            str(output),
        ]
    )
    error = capsys.readouterr().err
    assert code == 1
    # It named its temporary file (".credit.npz.tmp-<pid>"), which the user never asked for.
    assert f"the folder {output.parent} does not exist" in error, error
    assert ".tmp-" not in error


def test_reference_build_names_a_column_absent_from_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = REPO / "config" / "data" / "shop_reference.ndjson"  # another stream's data
    code = main(
        [
            "reference",
            "build",
            "-c",
            str(EXAMPLE),
            "--stream",
            "credit",
            "--input",
            str(wrong),
            "-o",
            str(tmp_path / "credit.npz"),
        ]
    )
    error = capsys.readouterr().err
    assert code == 1
    # It said "cannot learn quantile bins: values has no finite number to take quantiles of".
    assert "column 'income' is absent from the input" in error, error
    assert not (tmp_path / "credit.npz").exists()


def test_demo_prints_a_status_line_and_a_summary_at_ctrl_c() -> None:
    demo = DaemonProcess(
        None, command=["demo"], args=["--drift-after", "1", "--status-every", "0.5"]
    )
    status = re.compile(
        r"driftmon demo: \d+ s, ([\d,]+) rows sent \(shop [\d,]+, fraud-model [\d,]+\); "
        r"\d+ features? firing: "
    )
    with demo:
        first = wait_for(lambda: status.search("".join(demo.stdout)), 60, "a status line")
        wait_for(
            lambda: (
                int(status.findall("".join(demo.stdout))[-1].replace(",", ""))
                > int(first.group(1).replace(",", ""))
            ),
            60,
            "a later status line with more rows",
        )
        assert demo.stop(signal.SIGINT) == 0
    summary = re.search(r"driftmon demo stopped: .* rows sent .* firing: .*", "".join(demo.stdout))
    assert summary is not None, "".join(demo.stdout)
