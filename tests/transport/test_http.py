"""MCP over streamable HTTP (``triact.transport.open_http_app``) on triact's h11 server,
driven by the official MCP SDK client in both protocol eras."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import mcp
import pytest
import trio

import triact
from triact.transport import SESSION_TOOLS, ServerOptions

from ._http_server import MCP_NAMESPACE, Served, http_server, serve_process
from ._sdk import SERVE, SERVE_TOOL_NAMES
from .test_routing import holding

ERAS = ["legacy", "2026-07-28"]

# The SDK client stops reading an SSE response at its answer without closing its
# iterators (httpx2's EventSource and Response.aiter_*, and the byte streams under
# them), which Trio reports when they are collected.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <async_generator object "
    r"(EventSource|Response|HTTP11ConnectionByteStream|PoolByteStream)\."
    ":pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
async def served(manager: triact.SessionManager) -> Any:
    async with http_server(manager, options=ServerOptions(progress_interval=0.05)) as served:
        yield served


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result
    content: dict[str, Any] = result.structured_content
    return content


@pytest.mark.parametrize("era", ERAS)
async def test_the_sdk_client_calls_every_tool_over_http(
    served: Served, era: str, tmp_path: Path
) -> None:
    async with mcp.Client(served.url, mode=era) as client:
        tools = (await client.list_tools()).tools
        assert [tool.name for tool in tools] == list(SESSION_TOOLS.names)
        called = set()

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            called.add(name)
            return structured(await client.call_tool(name, arguments))

        sid = (await call("session_create", {"topic": "http"}))["session_id"]
        one = {"session_id": sid}
        assert (await call("session_update", {**one, "set": {"a": 1}}))["version"] == 2
        assert (await call("session_get", one))["session"]["data"] == {"a": 1}
        where = str(tmp_path)
        await call("session_set_working_directory", {**one, "path": where})
        assert (await call("session_get_working_directory", one))["working_directory"] == where
        assert (await call("session_add_thread", {**one, "name": "t"}))["thread_count"] == 1
        analysis = {**one, "prompt": "p", "responses": {"m": "r"}, "response_time": 0.5}
        assert (await call("session_record_analysis", analysis))["analysis_count"] == 1
        assert sid in [s["session_id"] for s in (await call("session_list", {}))["sessions"]]
        assert (await call("session_stats", one))["session"] is not None
        assert (await call("health_check", {}))["status"] == "ok"
        assert (await call("session_end", one))["ended"] is True
        assert called == set(SESSION_TOOLS.names)
        missing = await client.call_tool("session_get", one)
        assert missing.is_error


@pytest.mark.parametrize("era", ERAS)
async def test_fifty_concurrent_sdk_calls_over_http(served: Served, era: str) -> None:
    async with mcp.Client(served.url, mode=era) as client:
        sid = structured(await client.call_tool("session_create", {}))["session_id"]

        async def bump() -> None:
            result = await client.call_tool(
                "session_update", {"session_id": sid, "increment": {"n": 1}}
            )
            structured(result)

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(bump)
        got = structured(await client.call_tool("session_get", {"session_id": sid}))
        assert got["session"]["data"] == {"n": 50}
        assert got["session"]["version"] == 51


@pytest.mark.parametrize("era", ERAS)
async def test_progress_reaches_the_sdk_client_over_sse(
    served: Served, manager: triact.SessionManager, era: str
) -> None:
    reports: list[float] = []
    async with mcp.Client(served.url, mode=era) as client:
        sid = structured(await client.call_tool("session_create", {}))["session_id"]
        async with holding(manager, sid) as release:

            async def progressed(progress: float, total: float | None, message: str | None) -> None:
                reports.append(progress)
                if len(reports) == 3:
                    release.set()

            with trio.fail_after(30):
                result = await client.call_tool(
                    "session_get", {"session_id": sid}, progress_callback=progressed
                )
    assert structured(result)["session"]["session_id"] == sid
    assert reports[:3] == [1, 2, 3]


@pytest.mark.parametrize("era", ERAS)
async def test_a_cancelled_sdk_call_did_not_happen(
    served: Served, manager: triact.SessionManager, era: str
) -> None:
    async with mcp.Client(served.url, mode=era) as client:
        sid = structured(await client.call_tool("session_create", {}))["session_id"]
        async with holding(manager, sid) as release:
            with trio.move_on_after(0.5) as scope:
                await client.call_tool("session_update", {"session_id": sid, "set": {"a": 1}})
            assert scope.cancelled_caught
            with trio.fail_after(10):
                while served.app.calls_in_flight:  # noqa: ASYNC110 (the server, from outside)
                    await trio.sleep(0.01)
            release.set()
        got = structured(await client.call_tool("session_get", {"session_id": sid}))
    assert got["session"]["data"] == {}
    assert got["session"]["version"] == 2  # the holding update's


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")  # in 2026-07-28
async def test_log_messages_reach_the_sdk_client_over_sse(served: Served) -> None:
    logged: list[Any] = []

    async def on_log(params: Any) -> None:
        logged.append(params)

    async with mcp.Client(served.url, mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("debug")
        structured(await client.call_tool("session_create", {}))
        failed = await client.call_tool("session_get", {"session_id": "nope"})
    assert failed.is_error
    assert [(entry.level, entry.data["outcome"]) for entry in logged] == [
        ("debug", "ok"),
        ("warning", "not_found"),
    ]


async def test_the_sdk_client_ends_its_mcp_session_and_default_session(
    served: Served, manager: triact.SessionManager
) -> None:
    async with mcp.Client(served.url, mode="legacy") as client:
        structured(await client.call_tool("session_update", {"set": {"k": "v"}}))
        default = structured(await client.call_tool("session_list", {}))["default_session_id"]
        assert default is not None
        [session_id] = served.session_ids
        assert await manager.store.get_record(MCP_NAMESPACE, session_id) is not None
    # Leaving, the client sent DELETE: the record and its default session are gone.
    assert await manager.store.get_record(MCP_NAMESPACE, session_id) is None
    with pytest.raises(triact.SessionNotFoundError):
        await manager.get_session(default)


async def test_each_mcp_session_has_its_own_default_session(served: Served) -> None:
    async with (
        mcp.Client(served.url, mode="legacy") as one,
        mcp.Client(served.url, mode="legacy") as two,
    ):
        structured(await one.call_tool("session_update", {"set": {"who": "one"}}))
        structured(await two.call_tool("session_update", {"set": {"who": "two"}}))
        got_one = structured(await one.call_tool("session_get", {}))["session"]
        got_two = structured(await two.call_tool("session_get", {}))["session"]
    assert got_one["data"] == {"who": "one"}
    assert got_two["data"] == {"who": "two"}
    assert got_one["session_id"] != got_two["session_id"]


async def test_triact_serve_http_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    async with serve_process("--store", "memory", env=env) as served:
        async with mcp.Client(served.url, mode="legacy") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert names == SERVE_TOOL_NAMES
            prompts = [prompt.name for prompt in (await client.list_prompts()).prompts]
            assert prompts == ["start", "checkpoint", "end", "recall"]
            started = await client.call_tool("session_start", {"working_directory": str(tmp_path)})
            assert structured(started)["created"] is True
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await served.process.wait() == 0


def test_triact_serve_http_refuses_a_host_beyond_loopback() -> None:
    done = subprocess.run(
        [*SERVE, "--http", "0.0.0.0:8765", "--store", "memory"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "a host beyond loopback" in done.stderr


async def test_serve_http_without_hypercorn_names_the_extra(
    manager: triact.SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triact._serve import HttpServing, ServeStartError, _serve_http
    from triact.transport import ServerOptions

    monkeypatch.setitem(sys.modules, "hypercorn.trio", None)  # import fails
    with pytest.raises(ServeStartError, match="--server hypercorn needs Hypercorn"):
        await _serve_http(
            manager,
            SESSION_TOOLS,
            ServerOptions(),
            ("127.0.0.1", 0),
            None,
            HttpServing("hypercorn"),
        )


async def test_serve_http_without_h11_names_the_extra(
    manager: triact.SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triact._serve import HttpServing, ServeStartError, _serve_http
    from triact.transport import ServerOptions

    monkeypatch.setitem(sys.modules, "h11", None)  # import fails
    with pytest.raises(ServeStartError, match="http extra"):
        await _serve_http(
            manager, SESSION_TOOLS, ServerOptions(), ("127.0.0.1", 0), None, HttpServing("h11")
        )
