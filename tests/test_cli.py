"""The command line as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import driftmon


def test_version_flag_prints_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "driftmon", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"driftmon {driftmon.__version__}"


def test_no_command_prints_help_and_fails() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "driftmon"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "usage: driftmon" in result.stderr


def test_runs_from_a_folder_that_holds_another_folder_named_driftmon(tmp_path: Path) -> None:
    # `git clone …/driftmon` makes such a folder; seen from its parent, with driftmon installed
    # in editable mode, `python -m driftmon` imported it as an empty namespace package.
    (tmp_path / "driftmon").mkdir()
    (tmp_path / "clone" / "driftmon").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "driftmon", "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == f"driftmon {driftmon.__version__}"
