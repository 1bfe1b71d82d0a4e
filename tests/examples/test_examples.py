"""The examples, run as their docstrings say: a real server on 127.0.0.1 in its own
process, real clients over real connections, concurrently."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
import trio
from mcp import Client

from .conftest import Served

ServeExample = Callable[[str], AbstractContextManager[Served]]


def assert_stopped_cleanly(server: Served, code: int, lines: list[str]) -> None:
    # "stopped" is printed once the session manager has shut down (DESIGN I9).
    assert (code, lines) == (0, ["stopped"]), server.log()


@pytest.mark.parametrize("example", ["starlette_hypercorn_trio", "asyncio_uvicorn"])
async def test_counter_app_loses_no_increment_under_concurrent_clients(
    serve_example: ServeExample, example: str
) -> None:
    with serve_example(example) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            created = [await http.post("/counters") for _ in range(4)]
            assert {response.status_code for response in created} == {201}
            ids = [response.json()["id"] for response in created]

            async def client(i: int) -> None:
                async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as own:
                    for j in range(10):
                        counter = ids[(i + j) % len(ids)]
                        response = await own.post(f"/counters/{counter}/add", json={"by": 2})
                        assert response.status_code == 200, response.text

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(client, i)
            # 20 clients x 10 increments of 2, spread evenly over 4 counters.
            for counter in ids:
                response = await http.get(f"/counters/{counter}")
                assert response.json() == {"id": counter, "count": 100, "version": 51}

            missing = await http.get("/counters/nope")
            assert missing.status_code == 404
            assert "no session 'nope'" in missing.json()["error"]
            ended = await http.delete(f"/counters/{ids[0]}")
            assert ended.json()["count"] == 100
            assert (await http.get(f"/counters/{ids[0]}")).status_code == 404
        assert_stopped_cleanly(server, *await trio.to_thread.run_sync(server.stop))


async def test_mcp_sdk_server_keeps_tool_state_in_sessions(serve_example: ServeExample) -> None:
    with serve_example("mcp_sdk_server") as server:
        async with Client(server.url) as client:

            async def call(tool: str, **arguments: Any) -> dict[str, Any]:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content
                assert result.structured_content is not None
                return result.structured_content

            ids = [(await call("counter_create"))["session_id"] for _ in range(3)]

            async def agent(i: int) -> None:
                async with Client(server.url) as own:
                    for j in range(5):
                        counter = ids[(i + j) % len(ids)]
                        result = await own.call_tool(
                            "counter_add", {"session_id": counter, "amount": 1}
                        )
                        assert not result.is_error, result.content

            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(agent, i)
            # 12 MCP clients x 5 calls, spread evenly over 3 counters.
            for counter in ids:
                assert await call("counter_get", session_id=counter) == {
                    "session_id": counter,
                    "count": 20,
                    "version": 21,
                }

            missing = await client.call_tool("counter_get", {"session_id": "nope"})
            assert missing.is_error
            assert "no session 'nope'" in missing.content[0].text  # type: ignore[union-attr]
            assert (await call("counter_end", session_id=ids[0]))["count"] == 20
            assert (await client.call_tool("counter_get", {"session_id": ids[0]})).is_error
        assert_stopped_cleanly(server, *await trio.to_thread.run_sync(server.stop))
