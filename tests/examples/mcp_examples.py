"""The request/response examples of docs/mcp.md, made by a real ``triact serve``.

Each tool's section in docs/mcp.md ends with an example between
``<!-- example NAME -->`` and ``<!-- /example -->``: the ``params`` of the ``tools/call``
request and the ``result`` of its response, from one scripted run of the server. To
write them anew after changing a tool (from the repository's root)::

    python -m tests.examples.mcp_examples --write

``test_mcp_examples.py`` runs the same script and checks that the page shows what the
server answers, up to the values that differ from run to run (ids, tokens, times,
commits), which :func:`normalised` replaces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"
#: Where the run's directories are shown to live.
SHOWN_HOME = "/home/me"
_EXAMPLE = re.compile(r"<!-- example (\w+) -->\n.*?<!-- /example -->", re.DOTALL)
#: Keys whose values differ from run to run.
_VOLATILE = {
    "session_id": "id",
    "default_session_id": "id",
    "token": "secret",
    "created_at": "time",
    "last_used": "time",
    "timestamp": "time",
    "at": "time",
    "granted_at": "time",
    "started_at": "time",
    "ended_at": "time",
    "expires_at": "time",
    "uptime": "duration",
    "total_latency": "duration",
    "max_latency": "duration",
    "p50": "duration",
    "p95": "duration",
    "p99": "duration",
    "max": "duration",
    "head": "commit",
    "commit": "commit",
    "id": "id",
    "score": "score",
    "handoff_markdown": "text",  # it shows the times
}


class _Server:
    """``triact serve --store memory --semantic off`` spoken to in raw JSON-RPC lines."""

    def __init__(self, home: Path) -> None:
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / "state"),
            "GIT_AUTHOR_NAME": "Me",
            "GIT_AUTHOR_EMAIL": "me@example.com",
            "GIT_COMMITTER_NAME": "Me",
            "GIT_COMMITTER_EMAIL": "me@example.com",
        }
        self.proc = subprocess.Popen(
            # Words alone, so that the examples are the same with the semantic extra
            # installed or not (docs/work.md shows a hybrid search).
            [sys.executable, "-m", "triact.cli", "serve", "--store", "memory", "--semantic", "off"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._id = 0

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._id += 1
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        message = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        response: dict[str, Any] = json.loads(self.proc.stdout.readline())
        assert response.get("id") == self._id, response
        return response

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextmanager
def _serving(home: Path) -> Iterator[_Server]:
    server = _Server(home)
    try:
        server.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "docs", "version": "0"},
            },
        )
        assert server.proc.stdin is not None
        server.proc.stdin.write('{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        yield server
    finally:
        server.close()


def run_examples() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each tool's example call: (the request's params, the response's result)."""
    examples: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        project = home / "project"
        project.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(project)], check=True)
        (project / "notes.md").write_text("# Notes\n")
        with _serving(home) as server:

            def call(tool: str, /, **arguments: Any) -> dict[str, Any]:
                params = {"name": tool, "arguments": arguments}
                result: dict[str, Any] = server.request("tools/call", params)["result"]
                examples[tool] = (params, result)
                return result.get("structuredContent") or {}

            sid = call("session_create", topic="review", metadata={"team": "docs"})["session_id"]
            call("session_get", session_id=sid)
            call("session_update", session_id=sid, set={"status": "draft"}, increment={"edits": 1})
            call("session_update", session_id=sid, set={"status": "final"}, expected_version=1)
            examples["conflict"] = examples.pop("session_update")
            call("session_update", session_id=sid, set={"status": "draft"}, increment={"edits": 1})
            call("session_set_working_directory", session_id=sid, path=str(project))
            call("session_get_working_directory", session_id=sid)
            call("session_add_thread", session_id=sid, name="critic", system_prompt="Find flaws.")
            call(
                "session_record_analysis",
                session_id=sid,
                prompt="Is the parser done?",
                responses={"critic": "Not until it handles empty input."},
                response_time=1.5,
            )
            call("session_list", limit=10)
            call("session_stats", session_id=sid)
            call("health_check")
            call("session_end", session_id=sid)
            work = call("session_start", working_directory=str(project), project="parser")
            wid = work["session_id"]
            call("session_checkpoint", session_id=wid, note="parser handles empty input")
            call("session_status", session_id=wid)
            call("trust_grant", session_id=wid, operation="run_tests", expires_in=3600)
            call("trust_list", session_id=wid)
            call("trust_revoke", session_id=wid, operation="run_tests")
            call(
                "reflection_store",
                content="Empty input is the parser's most common failure.",
                tags=["parser", "testing"],
                project="parser",
            )
            call("reflection_search", query="parser failure", project="parser")
            call(
                "conversation_save",
                content="user: why does the parser reject empty files?\n"
                "assistant: an empty file has no root node; we now return an empty tree.",
                tags=["parser"],
                project="parser",
            )
            call("conversation_search", query="empty files", project="parser")
    shown = json.loads(json.dumps(examples).replace(tmp, SHOWN_HOME))
    return {name: (params, result) for name, (params, result) in shown.items()}


def _json(value: Any, indent: int = 0) -> str:
    """JSON that puts a value on one line if it fits in 88 columns, else one member or
    item a line."""
    compact = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if len(compact) + indent <= 88 or not isinstance(value, dict | list) or not value:
        return compact
    inner = " " * (indent + 2)
    if isinstance(value, dict):
        members = [f"{inner}{json.dumps(k)}: {_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(members) + "\n" + " " * indent + "}"
    items = [f"{inner}{_json(v, indent + 2)}" for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def render(params: dict[str, Any], result: dict[str, Any]) -> str:
    """A tool's example as docs/mcp.md shows it: the text block, which repeats the
    structured content as JSON, is shown as ``"..."``."""
    shown = dict(result)
    if not shown.get("isError") and "structuredContent" in shown:
        shown["content"] = [{"type": "text", "text": "..."}]
    return (
        "Request `params` and response `result`, from a real run:\n\n"
        f"```json\n{_json(params)}\n```\n\n"
        f"```json\n{_json(shown)}\n```\n"
    )


def documented() -> dict[str, str]:
    """Each example on the page, by tool name (markers included)."""
    return {m.group(1): m.group(0) for m in _EXAMPLE.finditer(DOC.read_text())}


def block(name: str, params: dict[str, Any], result: dict[str, Any]) -> str:
    return f"<!-- example {name} -->\n{render(params, result)}<!-- /example -->"


def normalised(text: str) -> Any:
    """The JSON blocks of an example, with the values that vary from run to run
    replaced by what they are (each distinct id by its order of appearance, in
    messages too)."""
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]
    ids: dict[str, str] = {}

    def collect(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                collect(v, k)
        elif isinstance(value, list):
            for v in value:
                collect(v, key)
        elif _VOLATILE.get(key or "") == "id" and isinstance(value, str):
            ids.setdefault(value, f"<id {len(ids) + 1}>")

    def walk(value: Any, key: str | None) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        kind = _VOLATILE.get(key or "")
        if kind is not None and value is not None:
            return ids.get(value, f"<{kind}>") if kind == "id" else f"<{kind}>"
        if isinstance(value, str):
            for found, label in ids.items():
                value = value.replace(found, label)
        return value

    collect(blocks, None)
    return [walk(block, None) for block in blocks]


def write() -> None:
    """Replace the page's examples that differ from those of a new run (beyond ids,
    times and the like), and add missing ones at the end of their tool's section."""
    text = DOC.read_text()
    for name, (params, result) in run_examples().items():
        new = block(name, params, result)
        marker = re.compile(rf"<!-- example {name} -->\n.*?<!-- /example -->", re.DOTALL)
        found = marker.search(text)
        if found:
            if normalised(found.group(0)) != normalised(new):  # else keep it: no churn
                text = marker.sub(lambda _: new, text)  # noqa: B023
            continue
        heading = text.index(f"### `{name}`\n")
        end = min(
            i for i in (text.find("\n### ", heading + 1), text.find("\n## ", heading + 1)) if i > 0
        )
        text = text[:end].rstrip("\n") + "\n\n" + new + "\n" + text[end:]
    DOC.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.examples.mcp_examples --write")
    write()
