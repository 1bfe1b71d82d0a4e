"""Tool sets as values (``triact.transport._tools.ToolSet``): what a server is given is
what it offers."""

from __future__ import annotations

import attrs
import pytest

import triact
from triact.transport import SESSION_TOOLS, Tool, ToolSet

from .conftest import connect


def _renamed(name: str) -> Tool:
    health = SESSION_TOOLS.get("health_check")
    assert health is not None
    return attrs.evolve(health, name=name, title=name)


def test_combining_replaces_in_place_and_appends_the_rest() -> None:
    plain_end = SESSION_TOOLS.get("session_end")
    assert plain_end is not None
    other_end = attrs.evolve(plain_end, description="ends, and more")
    combined = SESSION_TOOLS | ToolSet([_renamed("extra"), other_end], ["extra_code"])
    assert combined.names == (*SESSION_TOOLS.names, "extra")
    assert combined.get("session_end") is other_end
    assert combined.error_codes == (*SESSION_TOOLS.error_codes, "extra_code")
    assert len(combined) == len(SESSION_TOOLS) + 1
    assert "extra" in combined
    assert "extra" not in SESSION_TOOLS


def test_a_tool_set_names_each_tool_once() -> None:
    with pytest.raises(ValueError, match=r"\['twice'\] appear more than once"):
        ToolSet([_renamed("twice"), _renamed("once"), _renamed("twice")])


def test_definitions_follow_the_order() -> None:
    tools = ToolSet([_renamed("b"), _renamed("a")])
    assert [d["name"] for d in tools.definitions(stateless=False)] == ["b", "a"]
    assert tools.definitions(stateless=True) is tools.definitions(stateless=True)


async def test_a_server_given_the_session_tools_offers_no_work_tool(
    manager: triact.SessionManager,
) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        listed = (await peer.request("tools/list"))["result"]["tools"]
        assert [tool["name"] for tool in listed] == list(SESSION_TOOLS.names)
        assert "write_handoff" not in listed[7]["inputSchema"]["properties"]
        response = await peer.request(
            "tools/call", {"name": "session_checkpoint", "arguments": {"commit": True}}
        )
    assert response["error"]["code"] == -32602
    assert response["error"]["message"] == "Unknown tool: session_checkpoint"
    assert "session_checkpoint" not in response["error"]["data"]["known"]


async def test_a_server_offers_a_tool_of_its_own(manager: triact.SessionManager) -> None:
    async with connect(
        manager, tools=SESSION_TOOLS | ToolSet([_renamed("ping_me")]), initialize="2025-11-25"
    ) as peer:
        assert (await peer.ok("ping_me"))["status"] == "ok"
