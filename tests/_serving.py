"""``triact serve`` as a real subprocess over stdio, for the command-line tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any

Call = Callable[[str, dict[str, object]], dict[str, Any]]


@contextmanager
def serving(*options: str, store: str = "memory", exit_ok: bool = True) -> Iterator[Call]:
    """``triact serve --store STORE *options``, initialized; yields a function making
    one tools/call (answered before the next is sent) and returning its result. With
    ``exit_ok`` the server must exit with 0 at the end of its input."""
    command = [sys.executable, "-m", "triact.cli", "serve", "--store", store, *options]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as server:
        assert server.stdin is not None
        assert server.stdout is not None
        stdin, stdout = server.stdin, server.stdout
        ids = count(1)

        def call(name: str, arguments: dict[str, object]) -> dict[str, Any]:
            params = {"name": name, "arguments": arguments}
            request = {"jsonrpc": "2.0", "id": next(ids), "method": "tools/call", "params": params}
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
            answer: dict[str, Any] = json.loads(stdout.readline())["result"]
            return answer

        stdin.write(
            '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
            '"2025-11-25","capabilities":{},"clientInfo":{"name":"cli","version":"0"}}}\n'
        )
        stdin.flush()
        assert "result" in json.loads(stdout.readline())
        try:
            yield call
        finally:
            stdin.close()
            status = server.wait(timeout=60)
        if exit_ok:
            assert status == 0
