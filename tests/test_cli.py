"""The ``triact`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_help_lists_serve() -> None:
    result = run("--help")
    assert "serve" in result.stdout


def test_serve_help_lists_its_options() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    for option in (
        "--store",
        "--idle-ttl",
        "--max-sessions",
        "--log-level",
        "--max-line-bytes",
        "--secret-key-file",
        "--shutdown-grace",
    ):
        assert option in result.stdout


def test_serve_refuses_an_unknown_store() -> None:
    result = run("serve", "--store", "postgres://nope")
    assert result.returncode == 2
    assert "--store must be 'memory', 'sqlite' or 'sqlite:PATH'" in result.stderr
    assert result.stdout == ""


def test_serve_refuses_a_bad_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("not hex")
    result = run("serve", "--store", "memory", "--secret-key-file", str(key))
    assert result.returncode == 2
    assert "must hold at least 16 bytes as hex" in result.stderr


def test_serve_refuses_a_zero_line_bound() -> None:
    result = run("serve", "--max-line-bytes", "0")
    assert result.returncode == 2
    assert "must be >= 1" in result.stderr


def test_serve_exits_0_at_end_of_input_and_writes_only_json(tmp_path: Path) -> None:
    request = (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
        '"2025-06-18","capabilities":{},"clientInfo":{"name":"cli","version":"0"}}}\n'
        '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"health_check"}}\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "triact.cli", "serve", "--log-level", "debug"],
        input=request,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    responses = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in responses] == [1, 2]
    assert responses[1]["result"]["structuredContent"]["store"] == "sqlite"
    assert "end of input" in result.stderr
    assert (tmp_path / "triact" / "sessions.db").exists()
