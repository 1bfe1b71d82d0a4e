"""``triact serve`` driven by the MCP Inspector's command-line mode
(``mcp-inspector --cli``), what people reach for to try a server by hand: one Inspector
process per request, over stdio (the Inspector starts the server) and over streamable
HTTP (one server for the module), its arguments typed as a person types them
(``--tool-arg key=value``, JSON values parsed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._node import installed_packages, start_http_server, stop_http_server
from ._results import content, documented_tools, error

INSPECTOR_PACKAGE = Path(__file__).resolve().parent / "inspector"
#: One Inspector run: it starts, connects, makes its request and exits.
RUN_TIMEOUT = 120.0


class Inspector:
    """Runs ``mcp-inspector --cli TARGET... ARGS...`` and reads its answer."""

    def __init__(self, launcher: Path, home: Path) -> None:
        self.launcher = launcher
        self.home = home

    def run(self, target: list[str], *args: str) -> tuple[int, Any]:
        """The Inspector's exit status and the JSON document it printed."""
        env = {
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.home / "state"),
            "MCP_CATALOG_PATH": str(self.home / "catalog.json"),
            "PATH": os.environ.get("PATH", ""),
        }
        done = subprocess.run(
            ["node", str(self.launcher), "--cli", *target, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(
                f"the Inspector printed no JSON (exit {done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            ) from None
        return done.returncode, answer

    def call(self, target: list[str], tool: str, *arguments: str) -> tuple[int, Any]:
        """A tools/call, its arguments as ``key=value`` (a JSON value is parsed)."""
        args = ["--method", "tools/call", "--tool-name", tool]
        if arguments:
            args += ["--tool-arg", *arguments]
        return self.run(target, *args)


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    installed = installed_packages(INSPECTOR_PACKAGE)
    package = installed / "node_modules" / "@modelcontextprotocol" / "inspector"
    launcher = package / json.loads((package / "package.json").read_text())["bin"]["inspector"]
    return Inspector(launcher, tmp_path_factory.mktemp("inspector-home"))


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a ``triact serve --http`` of the module's own; it must exit 0 on
    SIGTERM at the end."""
    tmp = tmp_path_factory.mktemp("inspector-http")
    server, url = start_http_server(tmp)
    try:
        yield url
    finally:
        stop_http_server(server, tmp)


def _result(outcome: tuple[int, Any]) -> dict[str, Any]:
    """A tools/call's outcome as :mod:`._results` reads a client's answers."""
    return {"result": outcome[1]}


def test_over_stdio_it_lists_the_tools_and_calls_one(inspector: Inspector) -> None:
    server = [sys.executable, "-m", "triact.cli", "serve", "--store", "memory"]
    if "PYTHONPATH" in os.environ:  # the triact under test, not the one installed
        paths = os.environ["PYTHONPATH"].split(os.pathsep)
        server = ["-e", f"PYTHONPATH={os.pathsep.join(map(os.path.abspath, paths))}", *server]
    status, listed = inspector.run(server, "--method", "tools/list")
    assert status == 0, listed
    assert [tool["name"] for tool in listed["tools"]] == documented_tools()
    outcome = inspector.call(server, "session_create", "topic=by hand", 'metadata={"tries": 1}')
    assert outcome[0] == 0
    created = content(_result(outcome))["session"]
    assert (created["topic"], created["metadata"], created["version"]) == (
        "by hand",
        {"tries": 1},
        1,
    )


def test_over_http_a_session_lives_across_inspector_runs(
    inspector: Inspector, http_url: str
) -> None:
    status, created = inspector.call([http_url], "session_create", "topic=across runs")
    assert status == 0, created
    session_id = created["structuredContent"]["session_id"]
    ids = f"session_id={session_id}"
    updated = inspector.call([http_url], "session_update", ids, 'set={"a": [1, 2]}')
    assert content(_result(updated))["version"] == 2
    incremented = inspector.call([http_url], "session_update", ids, 'increment={"n": 3}')
    assert content(_result(incremented))["data"] == {"a": [1, 2], "n": 3}
    got = content(_result(inspector.call([http_url], "session_get", ids)))["session"]
    assert (got["topic"], got["version"], got["data"]) == ("across runs", 3, {"a": [1, 2], "n": 3})
    ended = inspector.call([http_url], "session_end", ids)
    assert ended[0] == 0, ended[1]


def test_over_http_an_error_result_reads_as_one(inspector: Inspector, http_url: str) -> None:
    outcome = inspector.call([http_url], "session_get", "session_id=no-such-session")
    assert outcome[0] != 0  # the Inspector's exit status says the tool failed
    failure = error(_result(outcome))
    assert failure["code"] == "not_found"
    assert "no-such-session" in failure["message"]
    status, found = inspector.call([http_url], "session_update", "session_id=x", "set=[1]")
    assert status != 0
    assert error({"result": found})["code"] == "invalid_arguments"


def test_over_http_the_prompts_are_listed(inspector: Inspector, http_url: str) -> None:
    status, listed = inspector.run([http_url], "--method", "prompts/list")
    assert status == 0, listed
    assert "start" in [prompt["name"] for prompt in listed["prompts"]]
