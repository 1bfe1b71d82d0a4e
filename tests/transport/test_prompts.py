"""MCP prompts: prompts/list and prompts/get over an in-memory connection (both eras,
every refusal)."""

from __future__ import annotations

from typing import Any

import pytest

import triact
from triact.transport import Prompt, PromptArgument, PromptSet

from .conftest import connect, envelope


def _greet(arguments: Any) -> list[tuple[Any, str]]:
    return [("user", f"hello {arguments['name']}"), ("assistant", "hi")]


GREET = PromptSet(
    [
        Prompt(
            "greet",
            "Greet",
            "Says hello.",
            (PromptArgument("name", "Who.", True), PromptArgument("mood", "How.")),
            _greet,
        )
    ]
)


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    assert "error" in response, response
    error: dict[str, Any] = response["error"]
    return error


async def test_capability_only_with_a_prompt_set(manager: triact.SessionManager) -> None:
    async with connect(manager) as plain, connect(manager, prompts=GREET) as prompted:
        without = (await plain.initialize())["result"]["capabilities"]
        with_ = (await prompted.initialize())["result"]["capabilities"]
        discover = (await prompted.request("server/discover", {"_meta": envelope()}))["result"]
        refused = await plain.request("prompts/list")
        refused_stateless = await plain.request("prompts/get", {"_meta": envelope(), "name": "x"})
    assert "prompts" not in without
    assert with_["prompts"] == {"listChanged": False}
    assert with_["tools"] == without["tools"]
    assert discover["capabilities"]["prompts"] == {"listChanged": False}
    assert error_of(refused)["code"] == -32601
    assert error_of(refused_stateless)["code"] == -32601


async def test_list_and_get_in_both_eras(manager: triact.SessionManager) -> None:
    async with connect(manager, prompts=GREET, initialize="2025-11-25") as peer:
        listed = (await peer.request("prompts/list"))["result"]
        got = (await peer.request("prompts/get", {"name": "greet", "arguments": {"name": "A"}}))[
            "result"
        ]
        stateless_list = (await peer.request("prompts/list", {"_meta": envelope()}))["result"]
        stateless_get = (
            await peer.request(
                "prompts/get", {"_meta": envelope(), "name": "greet", "arguments": {"name": "B"}}
            )
        )["result"]
    assert listed == {
        "prompts": [
            {
                "name": "greet",
                "title": "Greet",
                "description": "Says hello.",
                "arguments": [
                    {"name": "name", "description": "Who.", "required": True},
                    {"name": "mood", "description": "How.", "required": False},
                ],
            }
        ]
    }
    assert got["messages"] == [
        {"role": "user", "content": {"type": "text", "text": "hello A"}},
        {"role": "assistant", "content": {"type": "text", "text": "hi"}},
    ]
    assert "resultType" not in got
    assert stateless_list["resultType"] == "complete"
    assert stateless_list["ttlMs"] >= 0
    assert stateless_list["prompts"] == listed["prompts"]
    assert stateless_get["resultType"] == "complete"
    assert stateless_get["messages"][0]["content"]["text"] == "hello B"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"name": "nope"}, "no prompt named 'nope'"),
        ({}, "prompts/get needs a name"),
        ({"name": 3}, "prompts/get needs a name"),
        ({"name": "greet"}, "needs argument(s) 'name'"),
        ({"name": "greet", "arguments": {"name": ""}}, "needs argument(s) 'name'"),
        ({"name": "greet", "arguments": {"name": 1}}, "argument 'name' must be a string"),
        ({"name": "greet", "arguments": {"name": "a", "x": "b"}}, "takes no argument(s) 'x'"),
        ({"name": "greet", "arguments": ["a"]}, "arguments must be an object"),
        ({"name": "greet", "arguments": {"name": "a" * 10_001}}, "more than 10000 characters"),
        (
            {"name": "greet", "arguments": {"name": "a", "mood": "a\udc80b"}},
            "Invalid params: argument 'mood' holds a lone surrogate (U+DC80) at index 1",
        ),
    ],
)
async def test_bad_gets_are_invalid_params(
    manager: triact.SessionManager, params: dict[str, Any], says: str
) -> None:
    async with connect(manager, prompts=GREET, initialize="2025-11-25") as peer:
        error = error_of(await peer.request("prompts/get", params))
        assert (await peer.request("ping"))["result"] == {}  # still serving
    assert error["code"] == -32602
    assert says in error["message"]


async def test_list_refuses_a_cursor(manager: triact.SessionManager) -> None:
    async with connect(manager, prompts=GREET, initialize="2025-11-25") as peer:
        error = error_of(await peer.request("prompts/list", {"cursor": "x"}))
    assert error["code"] == -32602


def test_prompt_sets_combine_and_refuse_a_name_twice() -> None:
    extra = Prompt("other", "O", "Another.", (), _greet)
    other = PromptSet([Prompt("greet", "G2", "Replaced.", (), _greet), extra])
    combined = GREET | other
    assert combined.names == ("greet", "other")
    assert combined.prompts[0].title == "G2"
    with pytest.raises(ValueError, match="names each prompt once"):
        PromptSet([*GREET, *GREET])
