"""While ``triact serve`` serves stdio, stdout carries protocol lines only: code running
in the server that prints (with ``print``, to fd 1, or through a child process that
inherits it) writes to stderr instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# ``triact serve`` with every session creation printing three ways first.
NOISY_SERVE = """
import os, subprocess, sys
import triact
from triact import cli

create = triact.SessionManager.create_session

async def noisy_create(self, *args, **kwargs):
    print("print() to stdout")
    os.write(1, b"os.write to fd 1\\n")
    subprocess.run(["echo", "a child process's stdout"], check=True)
    sys.stdout.write("sys.stdout.write\\n")
    return await create(self, *args, **kwargs)

triact.SessionManager.create_session = noisy_create
sys.exit(cli.main(["serve", "--store", "memory"]))
"""

REQUESTS = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "session_create"}},
    {"jsonrpc": "2.0", "id": 3, "method": "ping"},
]


def test_stray_output_of_code_in_the_server_goes_to_stderr(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NOISY_SERVE],
        input="".join(json.dumps(r) + "\n" for r in REQUESTS),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    responses = {r["id"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(responses) == [1, 2, 3]
    assert responses[2]["result"]["isError"] is False
    for stray in ("print() to stdout", "os.write to fd 1", "a child process's stdout"):
        assert stray in result.stderr
    assert "sys.stdout.write" in result.stderr
