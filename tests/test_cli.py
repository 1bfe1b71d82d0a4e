"""The ``triact`` command, run as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import triact


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triact.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"triact {triact.__version__}"


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_demo_runs_and_reports() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert "total = 1000" in result.stdout
    assert "flaky gave up" in result.stdout
    assert "sleepy after 0.1 s idle: None" in result.stdout
