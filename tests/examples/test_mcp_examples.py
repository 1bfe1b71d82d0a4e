"""docs/mcp.md shows, for every tool, a call and the answer a real ``triact serve``
gives it (``mcp_examples.py`` writes them; this checks they are still what the server
says, up to ids, tokens, times and commits)."""

from __future__ import annotations

from typing import Any

import pytest

from . import mcp_examples as ex

TOOLS = ex.documented()


@pytest.fixture(scope="module")
def live() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    return ex.run_examples()


def test_every_tool_has_its_example(live: dict[str, Any]) -> None:
    headings = [line[5:-1] for line in ex.DOC.read_text().splitlines() if line.startswith("### `")]
    assert sorted(TOOLS) == sorted(live)
    assert sorted(TOOLS) == sorted([*headings, "conflict"])
    assert len(headings) == 21


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_the_example_is_what_the_server_answers(tool: str, live: dict[str, Any]) -> None:
    params, result = live[tool]
    assert ex.normalised(TOOLS[tool]) == ex.normalised(ex.block(tool, params, result)), (
        f"docs/mcp.md's example of {tool} is stale: "
        "run python -m tests.examples.mcp_examples --write"
    )


def test_volatile_values_are_told_apart_by_identity() -> None:
    one = '```json\n{"session_id": "a", "default_session_id": "a", "created_at": 1.5}\n```'
    other = '```json\n{"session_id": "a", "default_session_id": "b", "created_at": 2.5}\n```'
    assert ex.normalised(one) == [
        {"session_id": "<id 1>", "default_session_id": "<id 1>", "created_at": "<time>"}
    ]
    assert ex.normalised(one) != ex.normalised(other)
