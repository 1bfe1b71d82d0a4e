"""The MCP protocol over an in-memory connection: both eras, and every JSON-RPC error."""

from __future__ import annotations

import json
from typing import Any

import pytest

import triact
from triact.transport import SESSION_TOOLS, SUPPORTED_VERSIONS

from .conftest import STATELESS, VERSION_KEY, Peer, connect, envelope

SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    assert "error" in response, response
    error: dict[str, Any] = response["error"]
    return error


# -- the handshake era --------------------------------------------------------------


@pytest.mark.parametrize("version", ["2024-11-05", "2025-06-18", "2025-11-25"])
async def test_initialize_echoes_a_supported_version(
    manager: triact.SessionManager, version: str
) -> None:
    async with connect(manager) as peer:
        result = (await peer.initialize(version))["result"]
    assert result["protocolVersion"] == version
    assert result["serverInfo"]["name"] == "triact"
    assert result["capabilities"] == {"tools": {"listChanged": False}, "logging": {}}
    assert "resultType" not in result


@pytest.mark.parametrize("version", ["1999-01-01", "2026-07-28"])
async def test_initialize_counters_other_versions_with_the_latest_handshake_one(
    manager: triact.SessionManager, version: str
) -> None:
    async with connect(manager) as peer:
        result = (await peer.initialize(version))["result"]
    assert result["protocolVersion"] == "2025-11-25"


@pytest.mark.parametrize(
    ("version", "offered"),
    [("2025-03-26", "2024-11-05"), ("2025-01-01", "2024-11-05"), ("2025-09-01", "2025-06-18")],
)
async def test_initialize_counters_an_unserved_version_with_the_one_before_it(
    manager: triact.SessionManager, version: str, offered: str
) -> None:
    """2025-03-26 is not served (it requires JSON-RPC batches): its clients are offered
    the revision before it, which they speak too, and a batch stays refused."""
    async with connect(manager) as peer:
        assert (await peer.initialize(version))["result"]["protocolVersion"] == offered
        await peer.send_raw(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]\n')
        error = await peer.response(None)
    assert error["error"]["code"] == -32600
    assert "batches" in error["error"]["message"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"protocolVersion": 5, "capabilities": {}, "clientInfo": {"name": "a", "version": "1"}},
        {"protocolVersion": "2025-11-25", "clientInfo": {"name": "a", "version": "1"}},
        {"protocolVersion": "2025-11-25", "capabilities": {}},
    ],
)
async def test_malformed_initialize_is_invalid_params(
    manager: triact.SessionManager, params: dict[str, Any]
) -> None:
    async with connect(manager) as peer:
        assert error_of(await peer.request("initialize", params))["code"] == -32602


async def test_ping_works_before_initialize(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        assert (await peer.request("ping"))["result"] == {}


@pytest.mark.parametrize("method", ["tools/list", "tools/call"])
async def test_requests_before_initialize_are_refused(
    manager: triact.SessionManager, method: str
) -> None:
    async with connect(manager) as peer:
        error = error_of(await peer.request(method, {"name": "health_check"}))
    assert error["code"] == -32602
    assert "send initialize first" in error["message"]


async def test_tools_list_gives_every_tool_with_schemas(peer: Peer) -> None:
    result = (await peer.request("tools/list"))["result"]
    tools = result["tools"]
    assert [tool["name"] for tool in tools] == list(SESSION_TOOLS.names)
    for tool in tools:
        assert tool["description"]
        assert tool["inputSchema"]["type"] == "object"
        assert tool["outputSchema"]["type"] == "object"
    assert "nextCursor" not in result
    assert "resultType" not in result


async def test_tools_list_refuses_a_cursor(peer: Peer) -> None:
    assert error_of(await peer.request("tools/list", {"cursor": "x"}))["code"] == -32602


async def test_set_level_sends_log_messages_for_calls(peer: Peer) -> None:
    assert (await peer.request("logging/setLevel", {"level": "debug"}))["result"] == {}
    await peer.ok("health_check")
    logs = [n for n in peer.notifications if n["method"] == "notifications/message"]
    assert logs[-1]["params"]["data"]["tool"] == "health_check"
    assert logs[-1]["params"]["level"] == "debug"


async def test_set_level_filters_by_severity(peer: Peer) -> None:
    await peer.request("logging/setLevel", {"level": "warning"})
    await peer.ok("health_check")
    await peer.fails("session_get", {"session_id": "nope"})
    logs = [n["params"] for n in peer.notifications if n["method"] == "notifications/message"]
    assert [(log["level"], log["data"]["outcome"]) for log in logs] == [("warning", "not_found")]


async def test_no_log_messages_without_set_level(peer: Peer) -> None:
    await peer.fails("session_get", {"session_id": "nope"})
    await peer.request("ping")
    assert peer.notifications == []


@pytest.mark.parametrize("level", ["loud", ["debug"], {"level": "debug"}, None, 3])
async def test_set_level_rejects_anything_but_a_level_as_invalid_params(
    peer: Peer, level: Any
) -> None:
    error = error_of(await peer.request("logging/setLevel", {"level": level}))
    assert error["code"] == -32602
    assert error["message"].startswith("Invalid params: logging/setLevel needs params.level")
    assert (await peer.request("ping"))["result"] == {}


# -- the stateless era --------------------------------------------------------------


async def test_discover(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        result = (await peer.request("server/discover", {"_meta": envelope()}))["result"]
    assert result["supportedVersions"] == list(SUPPORTED_VERSIONS)
    assert result["supportedVersions"][0] == STATELESS
    assert result["capabilities"]["tools"] == {"listChanged": False}
    assert result["resultType"] == "complete"
    assert result["_meta"][SERVER_INFO_KEY]["name"] == "triact"
    assert result["ttlMs"] >= 0
    assert result["cacheScope"] == "public"


async def test_stateless_requests_need_no_handshake(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        result = (await peer.request("tools/list", {"_meta": envelope()}))["result"]
        assert len(result["tools"]) == len(SESSION_TOOLS)
        assert result["resultType"] == "complete"
        call = await peer.call("health_check", meta=envelope())
    assert call["resultType"] == "complete"
    assert call["_meta"][SERVER_INFO_KEY]["version"] == triact.__version__
    assert call["structuredContent"]["status"] == "ok"


async def test_stateless_tool_list_requires_session_id(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        tools = (await peer.request("tools/list", {"_meta": envelope()}))["result"]["tools"]
        legacy = (await peer.initialize())["result"]
        handshake_tools = (await peer.request("tools/list"))["result"]["tools"]
    assert legacy["protocolVersion"] == "2025-11-25"
    by_name = {tool["name"]: tool for tool in tools}
    assert "session_id" in by_name["session_update"]["inputSchema"]["required"]
    assert "session_id" not in by_name["session_stats"]["inputSchema"].get("required", [])
    handshake = {tool["name"]: tool for tool in handshake_tools}
    assert "required" not in handshake["session_update"]["inputSchema"]


async def test_unsupported_version_names_the_supported_ones(
    manager: triact.SessionManager,
) -> None:
    async with connect(manager) as peer:
        response = await peer.request("tools/list", {"_meta": envelope("2099-01-01")})
    error = error_of(response)
    assert error["code"] == -32022
    assert error["data"] == {"supported": list(SUPPORTED_VERSIONS), "requested": "2099-01-01"}


async def test_unsupported_version_quotes_only_a_revision(manager: triact.SessionManager) -> None:
    """What is not a revision's date is not quoted back (it may be a credential)."""
    async with connect(manager) as peer:
        response = await peer.request("tools/list", {"_meta": envelope("Bearer s3cr3t")})
    error = error_of(response)
    assert error["code"] == -32022
    assert error["data"] == {"supported": list(SUPPORTED_VERSIONS), "requested": None}
    assert "s3cr3t" not in json.dumps(response)


async def test_a_handshake_version_in_meta_is_unsupported(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        response = await peer.request("tools/list", {"_meta": envelope("2025-11-25")})
    assert error_of(response)["code"] == -32022


@pytest.mark.parametrize(
    "meta",
    [
        {VERSION_KEY: STATELESS},
        {VERSION_KEY: 2026, "io.modelcontextprotocol/clientCapabilities": {}},
        {VERSION_KEY: STATELESS, "io.modelcontextprotocol/clientCapabilities": []},
        envelope(**{"io.modelcontextprotocol/logLevel": "loud"}),
        envelope(**{"io.modelcontextprotocol/logLevel": ["debug"]}),
        envelope(**{"io.modelcontextprotocol/logLevel": {"debug": 1}}),
    ],
)
async def test_malformed_envelope_is_invalid_params(
    manager: triact.SessionManager, meta: dict[str, Any]
) -> None:
    async with connect(manager) as peer:
        assert error_of(await peer.request("tools/list", {"_meta": meta}))["code"] == -32602


async def test_discover_without_envelope_is_invalid_params(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        assert error_of(await peer.request("server/discover"))["code"] == -32602


@pytest.mark.parametrize("method", ["ping", "logging/setLevel"])
async def test_handshake_only_methods_do_not_exist_in_2026(
    manager: triact.SessionManager, method: str
) -> None:
    async with connect(manager) as peer:
        response = await peer.request(method, {"_meta": envelope(), "level": "info"})
    assert error_of(response)["code"] == -32601


async def test_stateless_log_level_is_per_request(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        meta = envelope(**{"io.modelcontextprotocol/logLevel": "debug"})
        await peer.call("health_check", meta=meta)
        await peer.call("health_check", meta=envelope())
        await peer.request("ping")
    logs = [n for n in peer.notifications if n["method"] == "notifications/message"]
    assert len(logs) == 1


async def test_both_eras_share_one_process(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        await peer.initialize("2025-06-18")
        created = await peer.ok("session_create", {"topic": "t"})
        session_id = created["session_id"]
        await peer.ok("session_update", {"session_id": session_id, "set": {"a": 1}})
        stateless = await peer.ok("session_get", {"session_id": session_id}, meta=envelope())
    assert stateless["session"]["data"] == {"a": 1}


# -- JSON-RPC errors ----------------------------------------------------------------


async def test_unknown_method(peer: Peer) -> None:
    error = error_of(await peer.request("resources/list"))
    assert error["code"] == -32601
    assert error["data"] == {"method": "resources/list"}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"this is not json", -32700),
        (b"\x00\xff\xfe binary \x80\x81", -32700),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', -32600),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600),
        (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', -32600),
        (b'{"id":1,"method":"ping"}', -32600),
        (b'{"jsonrpc":"2.0","method":5}', -32600),
        (b'{"hello":"world"}', -32600),
    ],
)
async def test_garbage_is_answered_with_id_null_and_serving_goes_on(
    peer: Peer, line: bytes, code: int
) -> None:
    await peer.send_raw(line + b"\n")
    error = await peer.receive()
    assert error["id"] is None
    assert error["error"]["code"] == code
    assert (await peer.request("ping"))["result"] == {}


async def test_oversized_line_is_refused_and_serving_goes_on(
    manager: triact.SessionManager,
) -> None:
    async with connect(manager, initialize="2025-11-25", max_line_bytes=1000) as peer:
        big = peer.call_message("session_update", {"set": {"x": "y" * 5000}})
        await peer.send_raw(json.dumps(big).encode() + b"\n")
        error = await peer.receive()
        assert error["id"] is None
        assert error["error"]["code"] == -32600
        assert "longer than 1000 bytes" in error["error"]["message"]
        assert (await peer.request("ping"))["result"] == {}
        assert (await peer.ok("session_get"))["session"]["data"] == {}


async def test_a_notification_method_with_an_id_is_an_invalid_request(peer: Peer) -> None:
    response = await peer.request("notifications/cancelled", {"requestId": 1})
    assert error_of(response)["code"] == -32600


async def test_unsolicited_responses_are_ignored(peer: Peer) -> None:
    await peer.send({"jsonrpc": "2.0", "id": 99, "result": {}})
    await peer.send({"jsonrpc": "2.0", "id": 98, "error": {"code": 1, "message": "x"}})
    assert (await peer.request("ping", id=97))["result"] == {}
    assert peer.responses == {}


async def test_unknown_notifications_are_ignored(peer: Peer) -> None:
    await peer.send({"jsonrpc": "2.0", "method": "notifications/whatever", "params": {}})
    await peer.send(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {}}}
    )
    assert (await peer.request("ping"))["result"] == {}


async def test_array_params_are_invalid_params(peer: Peer) -> None:
    await peer.send({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": [1]})
    assert error_of(await peer.response(5))["code"] == -32602


@pytest.mark.parametrize(
    "params",
    [{}, {"name": 5}, {"name": "session_get", "arguments": [1]}],
)
async def test_malformed_tools_call_is_invalid_params(peer: Peer, params: dict[str, Any]) -> None:
    assert error_of(await peer.request("tools/call", params))["code"] == -32602


async def test_unknown_tool_is_invalid_params(peer: Peer) -> None:
    error = error_of(await peer.request("tools/call", {"name": "nope"}))
    assert error["code"] == -32602
    assert error["message"] == "Unknown tool: nope"


async def test_every_request_gets_exactly_one_response(peer: Peer) -> None:
    lines = [
        b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        b"garbage",
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
        b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"health_check"}}',
        b'{"jsonrpc":"2.0","id":3,"method":"nope"}',
        b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"session_get"}}',
    ]
    await peer.send_raw(b"\n".join(lines) + b"\n")
    seen = [(await peer.receive()).get("id") for _ in range(5)]
    assert sorted(seen, key=str) == sorted([1, None, 2, 3, 4], key=str)
    assert (await peer.request("ping", id=5))["result"] == {}
