"""The command line as a user types it."""

from __future__ import annotations

import subprocess
import sys

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
