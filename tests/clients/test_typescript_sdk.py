"""``triact serve`` driven by the official MCP TypeScript SDK clients: v1
(``@modelcontextprotocol/sdk``, what most MCP hosts run) and v2
(``@modelcontextprotocol/client``, in its handshake mode and negotiating the stateless
2026-07-28 revision). Each flavour is one Node process and one server for the module."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from ._node import Driver, DriverError
from ._results import content, documented_tools

#: Each call is logged on the server's stderr (the cancellation test reads it); a call
#: that asks for progress gets a report every 2 ms (a git commit takes longer). Words
#: alone, as in every test but those of search by meaning (docs/testing.md): with the
#: semantic extra installed, the first reflection would load the model in each server.
SERVE_ARGS = ("--log-level", "debug", "--progress-interval", "0.002", "--semantic", "off")


def _new_session(client: Driver, **arguments: object) -> str:
    created = content(client.call("session_create", arguments))
    session_id: str = created["session_id"]
    return session_id


def test_tools_list_is_the_documented_set(client: Driver) -> None:
    tools = client.request("listTools")["tools"]
    assert [tool["name"] for tool in tools] == documented_tools()
    assert len(tools) == 21
    assert all(tool["outputSchema"]["type"] == "object" for tool in tools)


def test_the_revision_each_client_speaks(client: Driver) -> None:
    assert content(client.call("health_check"))["status"] == "ok"
    if client.flavour != "v1":  # v1 does not tell
        expected = "2026-07-28" if client.flavour == "v2-auto" else "2025-11-25"
        assert client.request("protocol") == expected
    assert client.request("errors") == []


def test_every_session_tool(client: Driver) -> None:
    session_id = _new_session(client, topic="every tool", metadata={"by": client.flavour})
    ids = {"session_id": session_id}
    got = content(client.call("session_get", ids))["session"]
    assert (got["topic"], got["metadata"]) == ("every tool", {"by": client.flavour})
    updated = content(
        client.call("session_update", {**ids, "set": {"a": 1}, "increment": {"n": 2}})
    )
    assert updated["data"] == {"a": 1, "n": 2}
    assert updated["version"] == 2
    directory = str(client.tmp)  # type: ignore[attr-defined]
    assert (
        content(client.call("session_set_working_directory", {**ids, "path": directory}))[
            "working_directory"
        ]
        == directory
    )
    assert content(client.call("session_get_working_directory", ids))["working_directory"] == (
        directory
    )
    thread = content(client.call("session_add_thread", {**ids, "name": "t", "system_prompt": "p"}))
    assert thread["thread"]["name"] == "t"
    analysis = content(
        client.call("session_record_analysis", {**ids, "prompt": "q", "responses": ["r1"]})
    )
    assert analysis["analysis"]["responses"] == {"response_1": "r1"}
    listed = content(client.call("session_list", {"limit": 500}))
    assert session_id in [s["session_id"] for s in listed["sessions"]]
    stats = content(client.call("session_stats", ids))
    assert stats["session"]["session_id"] == session_id
    ended = content(client.call("session_end", ids))
    assert ended["ended"] is True


def test_every_work_tool(client: Driver, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    started = content(client.call("session_start", {"working_directory": str(tmp_path)}))
    assert started["created"] is True
    assert started["report"]["git"]["repository"] is True
    ids = {"session_id": started["session_id"]}
    checkpoint = content(client.call("session_checkpoint", {**ids, "note": "first"}))
    assert checkpoint["checkpoint"]["number"] == 1
    assert content(client.call("session_status", ids))["report"]["checkpoint_count"] == 1
    granted = content(client.call("trust_grant", {**ids, "operation": "run tests"}))
    assert [t["operation"] for t in granted["trusted"]] == ["run tests"]
    assert content(client.call("trust_list", ids))["trusted"] == granted["trusted"]
    assert content(client.call("trust_revoke", {**ids, "operation": "run tests"}))["changed"]
    stored = content(
        client.call("reflection_store", {"content": f"{client.flavour} likes tea", "tags": ["x"]})
    )
    assert stored["reflection"]["tags"] == ["x"]
    found = content(client.call("reflection_search", {"query": "tea", "tags": ["x"]}))
    assert stored["reflection"]["id"] in [r["id"] for r in found["results"]]
    assert content(client.call("session_end", ids))["ended"] is True


def test_calls_to_different_sessions_run_concurrently(client: Driver) -> None:
    sessions = [_new_session(client) for _ in range(4)]
    calls = [{"session_id": s, "increment": {"n": 1}} for s in sessions for _ in range(25)]
    pending = [client.send("call", name="session_update", arguments=call) for call in calls]
    for command in pending:
        assert client.wait(command)["result"]["isError"] is False
    for session_id in sessions:
        state = content(client.call("session_get", {"session_id": session_id}))["session"]
        assert (state["data"], state["version"]) == ({"n": 25}, 26)
    assert client.request("errors") == []


def test_calls_to_one_session_apply_in_the_order_sent(client: Driver) -> None:
    session_id = _new_session(client)
    pending = [
        client.send(
            "call",
            name="session_update",
            arguments={"session_id": session_id, "set": {"last": i}, "expected_version": i + 1},
        )
        for i in range(30)
    ]
    versions = [content(client.wait(command))["version"] for command in pending]
    assert versions == list(range(2, 32))


def test_a_cancelled_call_did_not_happen_or_happened_whole(client: Driver) -> None:
    session_id = _new_session(client)
    update = {"session_id": session_id, "increment": {"n": 1}}
    queued = [client.send("call", name="session_update", arguments=update) for _ in range(100)]
    aborted = client.send("call", name="session_update", arguments=update, abortAfterMs=0)
    for command in queued:
        assert client.wait(command)["result"]["isError"] is False
    answer: dict[str, Any] | DriverError
    try:
        answer = client.wait(aborted)
    except DriverError as error:
        answer = error
    answered = not isinstance(answer, DriverError)
    if isinstance(answer, DriverError):
        assert answer.message.endswith("the test cancelled it")  # the client's abort
    else:
        # On a loaded machine the answer can reach the client before its 0 ms timer
        # fires: then the call happened, whole, and the client kept its answer.
        assert answer["result"]["isError"] is False
    state = content(client.call("session_get", {"session_id": session_id}))["session"]
    assert state["data"]["n"] in ((101,) if answered else (100, 101))
    assert state["version"] == state["data"]["n"] + 1
    log = (client.tmp / "serve.log").read_text()  # type: ignore[attr-defined]
    outcomes = re.findall(rf"tool=session_update \S+ session={session_id} outcome=(\w+)", log)
    assert len(outcomes) == 101  # each call once: applied, or cancelled and not applied
    assert outcomes.count("ok") == state["data"]["n"]
    assert set(outcomes) <= {"ok", "cancelled"}
    # Answered before the cancellation arrived: the client drops the answer it no
    # longer waits for, and says so.
    late = [e["message"] for e in client.request("errors")]
    assert all(m.startswith("Received a response for an unknown message ID") for m in late)
    assert len(late) <= outcomes.count("ok") - 100


def test_progress_of_a_long_call_reaches_onprogress(client: Driver, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    ids = {
        "session_id": content(client.call("session_start", {"working_directory": str(tmp_path)}))[
            "session_id"
        ]
    }
    for n in range(3):
        (tmp_path / f"file{n}.txt").write_text(f"{n}\n" * 1000)
        answer = client.call("session_checkpoint", {**ids, "commit": True}, progress=True)
        assert content(answer)["checkpoint"]["commit"] is not None
        progress = [update["progress"] for update in answer["progress"]]
        assert progress, "a git commit takes longer than 2 ms: it gets reports"
        assert progress == list(range(1, len(progress) + 1))
    content(client.call("session_end", ids))
    # No report reached the client after its call's answer ("unknown token").
    assert client.request("errors") == []


def _nullable(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    return (isinstance(kinds, list) and "null" in kinds) or {"type": "null"} in schema.get(
        "anyOf", []
    )


def _optional_properties(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name not in required:
            found.append((f"{path}.{name}", prop))
        found += _optional_properties(prop, f"{path}.{name}")
    return found


def test_optional_arguments_are_not_nullable(client: Driver) -> None:
    """Form-based clients (the MCP Inspector) fill an "object or null" field in as a
    string: an optional argument may be left out, and has one plain type."""
    tools = client.request("listTools")["tools"]
    optional = [
        found for tool in tools for found in _optional_properties(tool["inputSchema"], tool["name"])
    ]
    assert len(optional) > 40
    assert [path for path, prop in optional if _nullable(prop)] == []
    types = {path: prop.get("type") for path, prop in optional}
    assert types["session_update.set"] == types["session_update.increment"] == "object"
    assert types["session_update.delete"] == types["reflection_store.tags"] == "array"
    assert types["session_create.metadata"] == "object"
    assert types["session_update.expected_version"] == "integer"


def test_null_for_an_optional_argument_still_means_left_out(client: Driver) -> None:
    session_id = _new_session(client, topic=None, metadata=None)
    update = {"session_id": session_id, "set": None, "increment": {"n": 1}, "delete": None}
    assert content(client.call("session_update", update))["data"] == {"n": 1}
    found = client.call("reflection_search", {"query": "tea", "project": None, "tags": None})
    assert content(found)["query"] == "tea"
    content(client.call("session_end", {"session_id": session_id}))
