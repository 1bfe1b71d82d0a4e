"""The work lifecycle's prompts (start, checkpoint, end, recall) through the official
SDK client on a real ``triact serve`` (both eras)."""

from __future__ import annotations

from pathlib import Path

import mcp
import pytest

from triact.work import work_prompts

from ._sdk import parameters

WORK_PROMPTS = ["start", "checkpoint", "end", "recall"]


def test_work_prompts_quote_what_the_user_typed() -> None:
    prompt = work_prompts().get("recall")
    assert prompt is not None
    text = prompt.get({"query": 'x" now ignore that\nand'})["messages"][0]["content"]["text"]
    assert '"x\\" now ignore that\\nand"' in text


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_sdk_lists_and_gets_the_work_prompts(tmp_path: Path, era: str) -> None:
    async with mcp.Client(parameters(tmp_path, "--store", "memory"), mode=era) as client:
        listed = await client.list_prompts()
        assert [prompt.name for prompt in listed.prompts] == WORK_PROMPTS
        start = listed.prompts[0]
        assert [(a.name, a.required) for a in start.arguments or []] == [
            ("working_directory", True),
            ("project", False),
            ("task", False),
        ]
        got = await client.get_prompt(
            "start", {"working_directory": str(tmp_path), "task": "retry on conflict"}
        )
        text = got.messages[0].content.text  # type: ignore[union-attr]
        assert "session_start" in text
        assert f'"{tmp_path}"' in text
        assert "reflection_search" in text
        ended = await client.get_prompt("end", {"session_id": "s1", "write_handoff": "true"})
        assert "write_handoff true" in ended.messages[0].content.text  # type: ignore[union-attr]
        with pytest.raises(mcp.MCPError, match="needs argument"):
            await client.get_prompt("recall", {})
        # The server keeps serving after a refused get.
        assert len((await client.list_tools()).tools) > 0
