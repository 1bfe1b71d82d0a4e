"""``triact serve --http`` driven by the official MCP TypeScript SDK clients over
streamable HTTP (``StreamableHTTPClientTransport``): v1, and v2 in its handshake mode
and negotiating the stateless 2026-07-28 revision. Each flavour is one Node process and
one server (a real subprocess on a free loopback port) for the module.

The tests that hold on any transport are those of ``test_typescript_sdk.py``, run here
over HTTP (imported, so that this module's ``client`` fixture serves them), progress
(an SSE answer) among them; the ones below are HTTP's own: many calls at once on one
client, an error result, an aborted call, and the end of the MCP session (DELETE)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ._node import FLAVOURS, Driver, DriverError, start_http_server, stop_http_server
from ._results import content, error
from .test_typescript_sdk import (
    SERVE_ARGS,
    test_every_session_tool,
    test_every_work_tool,
    test_progress_of_a_long_call_reaches_onprogress,
    test_the_revision_each_client_speaks,
    test_tools_list_is_the_documented_set,
)

__all__ = [
    "test_every_session_tool",
    "test_every_work_tool",
    "test_progress_of_a_long_call_reaches_onprogress",
    "test_the_revision_each_client_speaks",
    "test_tools_list_is_the_documented_set",
]


@pytest.fixture(scope="module", params=FLAVOURS)
def client(
    request: pytest.FixtureRequest, node_clients: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    """A client of its own ``triact serve --http``, connected over HTTP; the server
    must exit 0 on SIGTERM at the end."""
    tmp = tmp_path_factory.mktemp(f"http-client-{request.param}")
    server, url = start_http_server(tmp, SERVE_ARGS)
    driver = Driver(request.param, node_clients, tmp / "driver.log")
    driver.tmp = tmp  # type: ignore[attr-defined]
    driver.url = url  # type: ignore[attr-defined]
    try:
        driver.request("connect", url=url)
        yield driver
    finally:
        driver.close()
        stop_http_server(server, tmp)


def test_fifty_concurrent_calls(client: Driver) -> None:
    session_id = content(client.call("session_create", {}))["session_id"]
    update = {"session_id": session_id, "increment": {"n": 1}}
    pending = [client.send("call", name="session_update", arguments=update) for _ in range(50)]
    versions = sorted(content(client.wait(command))["version"] for command in pending)
    assert versions == list(range(2, 52))  # each call applied once, none lost
    state = content(client.call("session_get", {"session_id": session_id}))["session"]
    assert (state["data"], state["version"]) == ({"n": 50}, 51)
    content(client.call("session_end", {"session_id": session_id}))
    assert client.request("errors") == []


def test_an_error_result(client: Driver) -> None:
    failure = error(client.call("session_get", {"session_id": "no-such-session"}))
    assert failure["code"] == "not_found"
    assert "no-such-session" in failure["message"]
    session_id = content(client.call("session_create", {}))["session_id"]
    update = {"session_id": session_id, "set": {"a": 1}, "expected_version": 7}
    failure = error(client.call("session_update", update))
    assert (failure["code"], failure["expected_version"], failure["actual_version"]) == (
        "conflict",
        7,
        1,
    )
    content(client.call("session_end", {"session_id": session_id}))
    assert client.request("errors") == []


def test_a_cancelled_call_did_not_happen_or_happened_whole(client: Driver) -> None:
    """An aborted fetch: the server cancels the call when the client closes the
    request, or never sees it if the abort came first; either way the call applied
    whole or not at all, and the server's log says which."""
    session_id = content(client.call("session_create", {}))["session_id"]
    update = {"session_id": session_id, "increment": {"n": 1}}
    queued = [client.send("call", name="session_update", arguments=update) for _ in range(100)]
    aborted = client.send("call", name="session_update", arguments=update, abortAfterMs=0)
    for command in queued:
        assert client.wait(command)["result"]["isError"] is False
    with pytest.raises(DriverError) as raised:
        client.wait(aborted)
    assert raised.value.message.endswith("the test cancelled it")  # the client's abort
    state = content(client.call("session_get", {"session_id": session_id}))["session"]
    assert state["data"]["n"] in (100, 101)
    assert state["version"] == state["data"]["n"] + 1
    log = (client.tmp / "serve.log").read_text()  # type: ignore[attr-defined]
    outcomes = re.findall(rf"tool=session_update \S+ session={session_id} outcome=(\w+)", log)
    # The 100, and the aborted one unless its request was never sent.
    assert len(outcomes) in (100, 101)
    assert outcomes.count("ok") == state["data"]["n"]
    assert set(outcomes) <= {"ok", "cancelled"}
    late = [e["message"] for e in client.request("errors")]
    assert all(m.startswith("Received a response for an unknown message ID") for m in late)


def test_the_session_ends_with_terminate_session(client: Driver) -> None:
    """Last in the module: it ends the client's MCP session (DELETE), after which the
    server answers that session id 404, as the transport specification says."""
    url: str = client.url  # type: ignore[attr-defined]
    session_id = client.request("sessionId")
    if client.flavour == "v2-auto":  # the stateless revision has no MCP session
        assert session_id is None
        return
    assert isinstance(session_id, str)
    assert session_id
    assert client.request("terminate") is None  # the transport forgot it
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-session-id": session_id,
        "mcp-protocol-version": "2025-11-25",
    }
    answer = httpx.post(url, json=ping, headers=headers, timeout=30)
    assert answer.status_code == 404
    assert "error" in answer.json()
