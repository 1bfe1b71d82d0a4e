"""One MCP session's first calls sent at once to several ``triact serve --http``
processes on one store (a SQLite file, a Redis): every process makes a default session
for it, and they agree on one, the one named first in the MCP session's record; the
others are ended again. Every call is answered from that session, and none is lost."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest
import trio

from .._redis import RedisPlace
from ._http_server import ACCEPT, initialize_body, serve_processes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

PROCESSES = 3
CALLS = 24


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'shared.db'}"
    place: RedisPlace = request.getfixturevalue("redis_place")
    return f"{place.url}?prefix={place.prefix}"


async def test_first_calls_at_once_through_several_processes_share_one_default_session(
    store: str, tmp_path: Path
) -> None:
    envs = [{**os.environ, "HOME": str(tmp_path / f"home{i}")} for i in range(PROCESSES)]
    args = ["--store", store, "--secret-key-file", str(tmp_path / "key")]
    async with (
        serve_processes(envs, *args) as processes,
        httpx.AsyncClient(timeout=30) as client,
    ):
        urls = [p.url for p in processes]
        opened = await client.post(urls[0], json=initialize_body(), headers=ACCEPT)
        assert opened.status_code == 200, opened.text
        headers = {
            **ACCEPT,
            "mcp-session-id": opened.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        answers: list[dict[str, object]] = []

        async def first_call(request_id: int) -> None:
            body = {
                "jsonrpc": "2.0",
                "id": request_id,
                "method": "tools/call",
                "params": {"name": "session_update", "arguments": {"increment": {"n": 1}}},
            }
            url = urls[request_id % PROCESSES]
            answered = await client.post(url, json=body, headers=headers)
            assert answered.status_code == 200, answered.text
            result = answered.json()["result"]
            assert not result.get("isError"), result
            answers.append(result["structuredContent"])

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for request_id in range(2, 2 + CALLS):
                    nursery.start_soon(first_call, request_id)
        assert len({answer["session_id"] for answer in answers}) == 1, answers
        counts = sorted(answer["data"]["n"] for answer in answers)  # type: ignore[index]
        assert counts == list(range(1, CALLS + 1))  # each applied once, none lost
        # Only the default session is left of those the processes made: the others
        # were ended (the stateless era lists the store's sessions).
        listed = await client.post(
            urls[1],
            json={
                "jsonrpc": "2.0",
                "id": 99,
                "method": "tools/call",
                "params": {"name": "session_list", "arguments": {}},
            },
            headers=headers,
        )
        sessions = listed.json()["result"]["structuredContent"]["sessions"]
        assert [s["session_id"] for s in sessions] == [answers[0]["session_id"]]
