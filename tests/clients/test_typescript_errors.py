"""Every tool error reaches the TypeScript SDK clients as an error result (the v1
client validates ``structuredContent`` against the output schema even when ``isError``
is set, so an error result carries none): its code and message in the text block and
in ``_meta["triact/error"]``."""

from __future__ import annotations

from pathlib import Path

from ._node import Driver
from ._results import content, error

#: Four sessions at most, so that a test can reach the limit.
SERVE_ARGS = ("--max-sessions", "4")


def _created(client: Driver, **arguments: object) -> dict[str, object]:
    created: dict[str, object] = content(client.call("session_create", arguments))
    return created


def _end(client: Driver, *session_ids: object) -> None:
    for session_id in session_ids:
        content(client.call("session_end", {"session_id": session_id}))


def test_not_found(client: Driver) -> None:
    failure = error(client.call("session_get", {"session_id": "no-such-session"}))
    assert failure["code"] == "not_found"
    assert "no-such-session" in failure["message"]
    assert client.request("errors") == []


def test_conflict_with_its_versions(client: Driver) -> None:
    session_id = _created(client)["session_id"]
    update = {"session_id": session_id, "set": {"a": 1}, "expected_version": 7}
    failure = error(client.call("session_update", update))
    assert failure["code"] == "conflict"
    assert (failure["expected_version"], failure["actual_version"]) == (7, 1)
    _end(client, session_id)


def test_unauthorized_without_the_token(client: Driver) -> None:
    created = _created(client, bind_client=True)
    ids = {"session_id": created["session_id"]}
    assert error(client.call("session_get", ids))["code"] == "unauthorized"
    assert error(client.call("session_get", {**ids, "token": "wrong"}))["code"] == "unauthorized"
    assert content(client.call("session_get", {**ids, "token": created["token"]}))
    content(client.call("session_end", {**ids, "token": created["token"]}))


def test_invalid_arguments_name_the_field(client: Driver) -> None:
    session_id = _created(client)["session_id"]
    failure = error(client.call("session_update", {"session_id": session_id, "set": 3}))
    assert failure["code"] == "invalid_arguments"
    assert "set" in failure["message"]
    failure = error(client.call("session_update", {"session_id": session_id}))
    assert failure["code"] == "invalid_arguments"
    _end(client, session_id)


def test_limit_exceeded(client: Driver) -> None:
    sessions = [_created(client)["session_id"] for _ in range(4)]
    failure = error(client.call("session_create", {}))
    assert failure["code"] == "limit_exceeded"
    _end(client, *sessions)


def test_work_tool_errors(client: Driver, tmp_path: Path) -> None:
    started = content(client.call("session_start", {"working_directory": str(tmp_path)}))
    ids = {"session_id": started["session_id"]}
    failure = error(client.call("session_checkpoint", {**ids, "commit": True}))
    assert failure["code"] == "not_a_git_repository"
    missing = str(tmp_path / "missing")
    assert error(client.call("session_start", {"working_directory": missing}))["code"] == (
        "invalid_arguments"
    )
    assert error(client.call("reflection_search", {"query": "!!!"}))["code"] == (
        "invalid_arguments"
    )
    _end(client, ids["session_id"])
    assert client.request("errors") == []
