"""Reading tool results as a TypeScript SDK client returned them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MCP_DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"


def documented_tools() -> list[str]:
    """The tools docs/mcp.md has a section for (``### `name```), in its order."""
    return re.findall(r"^### `([a-z_]+)`$", MCP_DOC.read_text(), flags=re.MULTILINE)


def content(answer: dict[str, Any]) -> Any:
    """The structured content of a successful call (its text block holds the same)."""
    result = answer["result"]
    assert result["isError"] is False, result
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    return result["structuredContent"]


def error(answer: dict[str, Any]) -> dict[str, Any]:
    """The error object of a tool error, as the client returned it (not thrown): in
    ``_meta``, its code and message also in the text block, no structured content."""
    result = answer["result"]
    assert result["isError"] is True, result
    assert "structuredContent" not in result, result
    failure: dict[str, Any] = result["_meta"]["triact/error"]
    assert result["content"] == [
        {"type": "text", "text": f"{failure['code']}: {failure['message']}"}
    ], result
    return failure
