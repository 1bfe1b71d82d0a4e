"""Several ``triact serve`` processes on one shared store (``--store sqlite:PATH`` or
``--store redis://...``), over stdio: the store decides, so pipelined increments from
all of them add up exactly. Every test runs on both stores."""

from __future__ import annotations

import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

import triact

from .._redis import RedisPlace
from .test_stdio import INITIALIZE, Raw, call, raw_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

PIPELINED = 40  # increments each process sends per session before reading any answer


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The --store option (and the key file, for Redis) every process gets."""
    if request.param == "sqlite":
        return ["--store", f"sqlite:{tmp_path / 'shared.db'}"]
    place: RedisPlace = request.getfixturevalue("redis_place")
    key_file = ["--secret-key-file", str(tmp_path / "redis.key")]
    return ["--store", f"{place.url}?prefix={place.prefix}", *key_file]


async def start(
    stack: AsyncExitStack, tmp_path: Path, store: list[str], count: int, *args: str
) -> list[Raw]:
    servers = []
    for i in range(count):
        home = tmp_path / f"p{i}"
        home.mkdir(exist_ok=True)
        server = await stack.enter_async_context(raw_server(home, *store, *args))
        await server.send(INITIALIZE, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert (await server.receive())["id"] == 0
        servers.append(server)
    return servers


async def tool(server: Raw, request_id: int, name: str, **arguments: Any) -> dict[str, Any]:
    await server.send(call(request_id, name, arguments))
    reply = await server.receive()
    assert reply["id"] == request_id
    result: dict[str, Any] = reply["result"]
    return result


def error_code(result: dict[str, Any]) -> str:
    assert result.get("isError"), result
    code: str = result["_meta"]["triact/error"]["code"]
    return code


def content(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("isError"), result
    structured: dict[str, Any] = result["structuredContent"]
    return structured


async def pipeline(server: Raw, first_id: int, sessions: list[str]) -> list[dict[str, Any]]:
    """Send PIPELINED increments per session at once, then read every answer."""
    requests = [
        call(
            first_id + i * len(sessions) + j,
            "session_update",
            {"session_id": sid, "increment": {"n": 1}},
        )
        for i in range(PIPELINED)
        for j, sid in enumerate(sessions)
    ]
    await server.send(*requests)
    return [await server.receive() for _ in requests]


@pytest.mark.parametrize("count", [2, 3])
async def test_pipelined_increments_from_every_process_add_up(
    tmp_path: Path, store: list[str], count: int
) -> None:
    async with AsyncExitStack() as stack:
        servers = await start(stack, tmp_path, store, count)
        sessions = [
            content(await tool(servers[0], 1 + i, "session_create", topic=f"t{i}"))["session_id"]
            for i in range(2)
        ]
        answers: list[list[dict[str, Any]]] = [[] for _ in servers]

        async def load(index: int) -> None:
            answers[index] = await pipeline(servers[index], 1000, sessions)

        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(load, index)
        for reply in (reply for batch in answers for reply in batch):
            # Never a conflict (or any error) without expected_version.
            assert not reply["result"].get("isError"), reply
        for server in servers:  # created in one, found in all; every increment there
            for i, sid in enumerate(sessions):
                got = await tool(server, 5000 + i, "session_get", session_id=sid)
                state = content(got)["session"]
                assert state["data"]["n"] == count * PIPELINED
                assert state["version"] == 1 + count * PIPELINED
        stale = await tool(
            servers[-1],
            6000,
            "session_update",
            session_id=sessions[0],
            set={"x": 1},
            expected_version=1,
        )
        assert error_code(stale) == "conflict"
        for server in servers:
            assert await server.close_input() == 0
    async with AsyncExitStack() as stack:  # after a restart, every update is there
        (server,) = await start(stack, tmp_path, store, 1)
        for sid in sessions:
            state = content(await tool(server, 1, "session_get", session_id=sid))["session"]
            assert state["data"]["n"] == count * PIPELINED


async def test_a_process_killed_mid_load_loses_nothing_it_acknowledged(
    tmp_path: Path, store: list[str]
) -> None:
    async with AsyncExitStack() as stack:
        survivor, victim = await start(stack, tmp_path, store, 2)
        sid = content(await tool(survivor, 1, "session_create"))["session_id"]
        sent = 200
        await victim.send(
            *(
                call(100 + i, "session_update", {"session_id": sid, "increment": {"n": 1}})
                for i in range(sent)
            )
        )
        acknowledged = 0
        for _ in range(sent // 4):
            reply = await victim.receive()
            assert not reply["result"].get("isError"), reply
            acknowledged += 1
        victim.process.send_signal(signal.SIGKILL)
        await victim.process.wait()
        ours = await pipeline(survivor, 1000, [sid])
        assert all(not reply["result"].get("isError") for reply in ours)
        state = content(await tool(survivor, 5000, "session_get", session_id=sid))["session"]
        # Everything acknowledged is there; what was in flight may or may not be.
        assert acknowledged + PIPELINED <= state["data"]["n"] <= sent + PIPELINED
        assert state["version"] == 1 + state["data"]["n"]


async def test_a_session_busy_in_one_process_is_not_expired_by_another(
    tmp_path: Path, store: list[str]
) -> None:
    async with AsyncExitStack() as stack:
        busy, idle = await start(stack, tmp_path, store, 2, "--idle-ttl", "1")
        sid = content(await tool(busy, 1, "session_create"))["session_id"]
        for i in range(10):  # 2.5 s of use, 0.25 s apart: longer than the TTL in all
            await trio.sleep(0.25)
            content(await tool(busy, 10 + i, "session_update", session_id=sid, increment={"n": 1}))
        state = content(await tool(idle, 100, "session_get", session_id=sid))["session"]
        assert state["data"]["n"] == 10
        await trio.sleep(2.5)  # now idle past its TTL and the sweep: gone for both
        for server in (idle, busy):
            gone = await tool(server, 200, "session_get", session_id=sid)
            assert error_code(gone) == "not_found"


@pytest.mark.parametrize("round_", range(3))
async def test_processes_started_at_once_on_a_fresh_store_share_one_key(
    tmp_path: Path, round_: int
) -> None:
    """Four processes started at once on a new store all start, and all sign with the
    key of the one key file: a bound session's token made in one works in every one.
    (Each round is a new race for who creates the key file.)"""
    path = tmp_path / "fresh.db"
    for i in range(4):
        (tmp_path / f"p{i}").mkdir()
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                raw_server(tmp_path / f"p{i}", "--store", f"sqlite:{path}")
            )
            for i in range(4)
        ]
        for server in servers:  # all were launched before any answers
            await server.send(INITIALIZE)
        for server in servers:
            assert (await server.receive())["id"] == 0
        made = [
            content(await tool(server, 1, "session_create", bind_client=True)) for server in servers
        ]
        for server in servers:
            for i, session in enumerate(made):
                got = await tool(
                    server,
                    10 + i,
                    "session_get",
                    session_id=session["session_id"],
                    token=session["token"],
                )
                assert content(got)["session"]["session_id"] == session["session_id"]
        for server in servers:
            assert await server.close_input() == 0


async def test_a_third_process_hears_every_processs_commits_in_commit_order(
    tmp_path: Path, redis_place: RedisPlace
) -> None:
    """Events across processes through Redis: two processes commit many changes of the
    same sessions at once; a manager in a third (this one) hears them at most once,
    in version order per session (gaps would be allowed: delivery is at most once)."""
    url = f"{redis_place.url}?prefix={redis_place.prefix}"
    store = ["--store", url, "--secret-key-file", str(tmp_path / "redis.key")]
    listener = triact.RedisStore(redis_place.url, prefix=redis_place.prefix)
    heard: dict[str, list[tuple[str, int]]] = {}
    async with (
        triact.open_session_manager(triact.SessionConfig(store=listener)) as manager,
        AsyncExitStack() as stack,
    ):
        subscription = manager.subscribe()
        servers = await start(stack, tmp_path, store, 2)
        sessions = [
            content(await tool(servers[0], 1 + i, "session_create"))["session_id"] for i in range(2)
        ]
        answers: list[list[dict[str, Any]]] = [[], []]

        async def load(index: int) -> None:
            answers[index] = await pipeline(servers[index], 1000, sessions)

        async with trio.open_nursery() as nursery:
            for index in range(2):
                nursery.start_soon(load, index)
        final = 1 + 2 * PIPELINED
        for reply in (reply for batch in answers for reply in batch):
            assert not reply["result"].get("isError"), reply
        with trio.fail_after(30):
            async for event in subscription:
                heard.setdefault(event.session_id, []).append((event.kind, event.version))
                if all(heard.get(sid, [("", 0)])[-1][1] == final for sid in sessions):
                    break
        for server in servers:
            assert await server.close_input() == 0
    assert sorted(heard) == sorted(sessions)
    for sid in sessions:
        kinds = [kind for kind, _ in heard[sid]]
        versions = [version for _, version in heard[sid]]
        assert kinds == ["created"] + ["updated"] * (len(kinds) - 1)
        assert versions == sorted(set(versions)), versions  # no repeat, no reordering
        assert versions[0] == 1
        assert versions[-1] == final


async def test_a_default_session_ended_through_another_process_is_made_again(
    tmp_path: Path, store: list[str]
) -> None:
    """A connection's default session, held in its process's memory, is ended through
    another process: the connection's next call without a session_id gets a new
    default session, as it does when its own process ends it (it failed with
    not_found, the ended session being found gone only by that call)."""
    async with AsyncExitStack() as stack:
        first, other = await start(stack, tmp_path, store, 2)
        ended = content(await tool(first, 1, "session_update", increment={"n": 1}))
        assert ended["data"] == {"n": 1}
        gone = content(await tool(other, 1, "session_end", session_id=ended["session_id"]))
        assert gone["ended"] is True
        again = content(await tool(first, 2, "session_update", increment={"n": 1}))
        assert again["session_id"] != ended["session_id"]
        assert (again["data"], again["version"]) == ({"n": 1}, 2)  # applied once, anew
        read = content(await tool(first, 3, "session_get"))["session"]
        assert (read["session_id"], read["data"]) == (again["session_id"], {"n": 1})
        for server in (first, other):
            assert await server.close_input() == 0


async def test_pipelined_calls_after_a_default_session_ended_elsewhere_keep_their_order(
    tmp_path: Path, store: list[str]
) -> None:
    """Calls sent at once after the connection's default session was ended through
    another process: each takes effect in the order sent, or fails (not_found, nothing
    applied); only a call alone in flight runs again on a new default session (run
    again each on its own, they took effect in any order)."""
    async with AsyncExitStack() as stack:
        first, other = await start(stack, tmp_path, store, 2)
        ended = content(await tool(first, 1, "session_update", increment={"n": 1}))
        await tool(other, 1, "session_end", session_id=ended["session_id"])
        requests = [call(10 + i, "session_update", {"increment": {"n": 1}}) for i in range(5)]
        await first.send(*requests)
        replies = sorted([await first.receive() for _ in requests], key=lambda r: r["id"])
        applied = [r["result"] for r in replies if not r["result"].get("isError")]
        for reply in replies:
            if reply["result"].get("isError"):
                assert error_code(reply["result"]) == "not_found"
        versions = [result["structuredContent"]["version"] for result in applied]
        assert versions == list(range(2, 2 + len(applied)))  # in the order sent
        assert len({result["structuredContent"]["session_id"] for result in applied}) <= 1
        after = content(await tool(first, 2, "session_update", increment={"n": 1}))
        assert after["data"] == {"n": len(applied) + 1}
        for server in (first, other):
            assert await server.close_input() == 0
