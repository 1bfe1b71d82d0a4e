"""``--max-sessions`` and ``--max-sessions-per-principal`` hold across two ``triact
serve --http`` processes on one store (SQLite file or Redis): the store counts, in the
same atomic step that creates a session."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .._redis import RedisPlace
from ._http_server import ACCEPT, serve_process

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef0"}


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return ["--store", f"sqlite:{tmp_path / 'shared.db'}"]
    place: RedisPlace = request.getfixturevalue("redis_place")
    key_file = ["--secret-key-file", str(tmp_path / "redis.key")]
    return ["--store", f"{place.url}?prefix={place.prefix}", *key_file]


def home(tmp_path: Path, name: str) -> dict[str, str]:
    path = tmp_path / name
    path.mkdir()
    return {**os.environ, "HOME": str(path), "XDG_STATE_HOME": str(path / "state")}


async def call(
    client: httpx.AsyncClient, url: str, principal: str, name: str, **arguments: Any
) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"},
            },
        },
    }
    headers = {
        **ACCEPT,
        "authorization": f"Bearer {TOKENS[principal]}",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
    response = await client.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def created(result: dict[str, Any]) -> str:
    assert not result["isError"], result
    session_id: str = result["structuredContent"]["session_id"]
    return session_id


def refused(result: dict[str, Any], words: str) -> None:
    assert result["isError"], result
    error = result["_meta"]["triact/error"]
    assert error["code"] == "limit_exceeded"
    assert words in error["message"]


async def test_session_limits_count_the_sessions_of_every_process(
    tmp_path: Path, store: list[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{name} {token}\n" for name, token in TOKENS.items()))
    tokens.chmod(0o600)
    limits = ["--max-sessions", "3", "--max-sessions-per-principal", "2"]
    options = [*store, *limits, "--tokens", str(tokens)]
    async with (
        serve_process(*options, env=home(tmp_path, "a")) as a,
        serve_process(*options, env=home(tmp_path, "b")) as b,
        httpx.AsyncClient(timeout=30) as client,
    ):
        first = created(await call(client, a.url, "alice", "session_create"))
        created(await call(client, b.url, "alice", "session_create"))
        for url in (a.url, b.url):  # her third, on either process
            refused(await call(client, url, "alice", "session_create"), "principal 'alice'")
        created(await call(client, b.url, "bob", "session_create"))  # three in all
        for url in (a.url, b.url):
            refused(await call(client, url, "bob", "session_create"), "limit of 3 sessions")
        ended = await call(client, b.url, "alice", "session_end", session_id=first)
        assert not ended["isError"], ended
        created(await call(client, a.url, "bob", "session_create"))  # room for one
        refused(await call(client, b.url, "alice", "session_create"), "limit of 3 sessions")
