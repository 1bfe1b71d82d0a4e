"""Routing tool calls to session actors: order per session, isolation, busy under flood,
cancellation and shutdown."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import triact
from triact.transport import SESSION_TOOLS, ToolSet

from .conftest import Peer, connect, error_of, serving


@asynccontextmanager
async def holding(manager: triact.SessionManager, session_id: str) -> AsyncIterator[trio.Event]:
    """Keep a session's actor busy (an async update in progress) until the event is set."""
    release = trio.Event()
    session = await manager.get_session(session_id)

    async def hold(state: triact.SessionState) -> triact.SessionState:
        await release.wait()
        return state

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.update, hold)
        await trio.testing.wait_all_tasks_blocked()
        yield release
        release.set()


async def send_in_chunks(peer: Peer, messages: list[dict[str, Any]], seed: int) -> None:
    """Write the messages as one byte stream cut at random places."""
    data = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    rng = random.Random(seed)
    async with peer.sending:  # whole lines only, whoever else sends
        while data:
            cut = rng.randint(1, 4000)
            await peer.stream.send_all(data[:cut])
            data = data[cut:]
            if rng.random() < 0.3:
                await trio.lowlevel.checkpoint()


async def chain_of_updates(
    peer: Peer, session_id: str, token: str | None, n: int, seed: int
) -> None:
    """n pipelined updates, each naming the version the previous one leaves: they all
    succeed only if they reach the session in arrival order."""
    base = (await peer.ok("session_get", {"session_id": session_id, "token": token}))["session"]
    messages = [
        peer.call_message(
            "session_update",
            {
                "session_id": session_id,
                "token": token,
                "set": {"last": i},
                "expected_version": base["version"] + i,
            },
        )
        for i in range(n)
    ]
    await send_in_chunks(peer, messages, seed)
    for message in messages:
        result = (await peer.response(message["id"]))["result"]
        assert result["isError"] is False, result["structuredContent"]
    final = await peer.ok("session_get", {"session_id": session_id, "token": token})
    assert final["session"]["data"]["last"] == n - 1
    assert final["session"]["version"] == base["version"] + n


@pytest.mark.parametrize("seed", range(3))
async def test_calls_for_one_session_run_in_arrival_order(peer: Peer, seed: int) -> None:
    session_id = (await peer.ok("session_create"))["session_id"]
    await chain_of_updates(peer, session_id, None, 150, seed)


async def test_order_holds_for_bound_sessions(peer: Peer) -> None:
    created = await peer.ok("session_create", {"bind_client": True})
    await chain_of_updates(peer, created["session_id"], created["token"], 100, 7)


async def test_order_holds_for_the_default_session(peer: Peer) -> None:
    messages = [
        peer.call_message("session_update", {"set": {"last": i}, "expected_version": i + 1})
        for i in range(100)
    ]
    await send_in_chunks(peer, messages, 3)
    for message in messages:
        assert (await peer.response(message["id"]))["result"]["isError"] is False


async def test_order_holds_with_a_durable_store(tmp_path: Path) -> None:
    async with serving(store=triact.SqliteStore(tmp_path / "s.db")) as (_, peer):
        ids = [(await peer.ok("session_create"))["session_id"] for _ in range(3)]
        async with trio.open_nursery() as nursery:
            for i, session_id in enumerate(ids):
                nursery.start_soon(chain_of_updates, peer, session_id, None, 60, i)


async def test_order_holds_while_a_passivated_session_is_loaded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.SqliteStore(tmp_path / "s.db")
    async with serving(store=store, passivate_after=1.0) as (manager, peer):
        session_id = (await peer.ok("session_create"))["session_id"]
        for round_ in range(3):
            await trio.sleep(5)  # the actor leaves memory, its state too
            assert (await manager.stats()).active_actors == 0
            await chain_of_updates_raw(peer, session_id, 40, round_)


async def chain_of_updates_raw(peer: Peer, session_id: str, n: int, seed: int) -> None:
    # Like chain_of_updates, without reading the session first (which would load it).
    messages = [
        peer.call_message("session_update", {"session_id": session_id, "increment": {"n": 1}})
        for _ in range(n)
    ]
    await send_in_chunks(peer, messages, seed)
    versions = [
        (await peer.response(m["id"]))["result"]["structuredContent"]["version"] for m in messages
    ]
    assert versions == sorted(versions)
    assert versions == list(range(versions[0], versions[0] + n))


async def test_a_flood_on_one_session_is_busy_and_others_go_on() -> None:
    async with serving(mailbox_size=8) as (manager, peer):
        flooded = (await peer.ok("session_create"))["session_id"]
        other = (await peer.ok("session_create"))["session_id"]
        async with holding(manager, flooded) as release:
            flood = [
                peer.call_message("session_update", {"session_id": flooded, "increment": {"n": 1}})
                for _ in range(50)
            ]
            await send_in_chunks(peer, flood, 1)
            # The flooded session is stuck; the other one answers meanwhile.
            for i in range(5):
                done = await peer.ok("session_update", {"session_id": other, "increment": {"n": 1}})
                assert done["data"] == {"n": i + 1}
            busy = [m for m in flood if m["id"] in peer.responses]
            for message in busy:
                error = error_of((await peer.response(message["id"]))["result"])
                assert error["code"] == "busy"
            assert len(busy) == 50 - 8
            release.set()
        results = [(await peer.response(m["id"]))["result"] for m in flood if m not in busy]
        assert all(not r["isError"] for r in results)
        final = await peer.ok("session_get", {"session_id": flooded})
        assert final["session"]["data"] == {"n": 8}


async def test_server_wide_in_flight_bound(manager: triact.SessionManager) -> None:
    async with connect(manager, initialize="2025-11-25", max_in_flight=3) as peer:
        session_id = (await peer.ok("session_create"))["session_id"]
        async with holding(manager, session_id):
            calls = [peer.call_message("session_get", {"session_id": session_id}) for _ in range(3)]
            for message in calls:
                await peer.send(message)
            await trio.testing.wait_all_tasks_blocked()
            error = await peer.fails("health_check")
            assert error["code"] == "busy"
        for message in calls:
            assert (await peer.response(message["id"]))["result"]["isError"] is False


async def test_cancelled_call_rolls_back_and_is_not_answered(
    manager: triact.SessionManager,
) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        session_id = (await peer.ok("session_create"))["session_id"]
        async with holding(manager, session_id):
            message = peer.call_message(
                "session_update", {"session_id": session_id, "set": {"cancelled": True}}
            )
            await peer.send(message)
            await trio.testing.wait_all_tasks_blocked()  # queued behind the holder
            assert message["id"] in peer.server.calls
            await peer.send(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": message["id"], "reason": "changed my mind"},
                }
            )
            await trio.testing.wait_all_tasks_blocked()
            assert message["id"] not in peer.server.calls
        assert (await peer.request("ping"))["result"] == {}
        session = (await peer.ok("session_get", {"session_id": session_id}))["session"]
        assert session["data"] == {}
        assert session["version"] == 2  # the holder's change only
        assert message["id"] not in peer.responses


async def test_cancelling_a_waiting_call_keeps_the_order_of_the_rest(
    manager: triact.SessionManager,
) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        session_id = (await peer.ok("session_create"))["session_id"]
        async with holding(manager, session_id):
            messages = [
                peer.call_message("session_update", {"session_id": session_id, "set": {"last": i}})
                for i in range(10)
            ]
            for message in messages:
                await peer.send(message)
            for message in messages[3:6]:
                await peer.send(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": message["id"]},
                    }
                )
            await trio.testing.wait_all_tasks_blocked()
        kept = messages[:3] + messages[6:]
        versions = [
            (await peer.response(m["id"]))["result"]["structuredContent"]["version"] for m in kept
        ]
        assert versions == list(range(3, 3 + len(kept)))
        session = (await peer.ok("session_get", {"session_id": session_id}))["session"]
        assert session["data"] == {"last": 9}


async def test_cancel_after_completion_is_ignored(peer: Peer) -> None:
    message = peer.call_message("session_update", {"set": {"a": 1}})
    await peer.send(message)
    assert (await peer.response(message["id"]))["result"]["isError"] is False
    await peer.send(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": message["id"]},
        }
    )
    assert (await peer.ok("session_get"))["session"]["data"] == {"a": 1}


async def test_duplicate_in_flight_id_is_refused(manager: triact.SessionManager) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        session_id = (await peer.ok("session_create"))["session_id"]
        async with holding(manager, session_id):
            first = peer.call_message("session_get", {"session_id": session_id}, id="dup")
            await peer.send(first)
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(first)
            duplicate = await peer.response("dup")
            assert duplicate["error"]["code"] == -32600
        assert (await peer.response("dup"))["result"]["isError"] is False


async def test_end_of_input_lets_calls_in_flight_finish(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    client, server_end = trio.testing.memory_stream_pair()
    server = triact.transport.McpServer(manager)
    peer = Peer(client, server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, server_end, server_end)
        await peer.initialize()
        session_id = (await peer.ok("session_create"))["session_id"]
        async with holding(manager, session_id) as release:
            message = peer.call_message(
                "session_update", {"session_id": session_id, "set": {"a": 1}}
            )
            await peer.send(message)
            await peer.close()
            await trio.sleep(3)  # within the 5 s grace period
            release.set()
        response = await peer.response(message["id"])
    assert response["result"]["isError"] is False


async def test_calls_still_running_after_the_grace_period_are_cancelled(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    client, server_end = trio.testing.memory_stream_pair()
    server = triact.transport.McpServer(
        manager, options=triact.transport.ServerOptions(shutdown_grace=2)
    )
    peer = Peer(client, server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, server_end, server_end)
        await peer.initialize()
        session_id = (await peer.ok("session_create"))["session_id"]
        async with holding(manager, session_id):
            message = peer.call_message(
                "session_update", {"session_id": session_id, "set": {"a": 1}}
            )
            await peer.send(message)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await peer.close()
            with trio.fail_after(10):
                while server.calls:  # noqa: ASYNC110 (polling the server from outside)
                    await trio.sleep(0.1)
            assert 2 <= trio.current_time() - start < 3
            # It was answered, not cut off: cancelled, it did not happen.
            with trio.fail_after(10):
                answer = await peer.response(message["id"])
            error = error_of(answer["result"])
            assert error["code"] == "closed"
            assert "cancelled and nothing was done; retry it" in error["message"]
    assert (await manager.get_session(session_id)) is not None
    assert (await (await manager.get_session(session_id)).snapshot()).data == {}


async def test_stop_ends_reading(peer: Peer) -> None:
    peer.server.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert peer.server.calls.health().closing is True


async def test_a_call_cancelled_before_a_worker_took_it_never_runs(peer: Peer) -> None:
    message = peer.call_message("session_update", {"set": {"cancelled": True}})
    cancel = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": message["id"]},
    }
    # One write: the reader starts the call and cancels it before any worker runs.
    await peer.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in (message, cancel)))
    assert (await peer.request("ping"))["result"] == {}
    await trio.testing.wait_all_tasks_blocked()
    assert message["id"] not in peer.server.calls
    assert message["id"] not in peer.responses
    assert (await peer.ok("session_get"))["session"]["data"] == {}


async def test_each_call_gets_a_worker_and_idle_workers_are_bounded(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        session_id = (await peer.ok("session_create"))["session_id"]
        calls = [
            peer.call_message("session_update", {"session_id": session_id, "increment": {"n": 1}})
            for _ in range(200)
        ]
        async with holding(manager, session_id):
            await send_in_chunks(peer, calls, 5)
            await trio.testing.wait_all_tasks_blocked()
            nursery = peer.server.calls.nursery
            assert nursery is not None
            assert len(nursery.child_tasks) >= 200  # no call waits for another's worker
        versions = [
            (await peer.response(m["id"]))["result"]["structuredContent"]["version"] for m in calls
        ]
        assert versions == list(range(3, 203))
        await trio.testing.wait_all_tasks_blocked()
        # Kept for the next burst of calls, until the server has been quiet a while.
        assert len(nursery.child_tasks) >= 200
        await trio.sleep(0.5)
        more = [
            peer.call_message("session_update", {"session_id": session_id, "increment": {"n": 1}})
            for _ in range(100)
        ]
        await send_in_chunks(peer, more, 5)
        for m in more:
            await peer.response(m["id"])
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) >= 200  # still kept: calls came within the period
        await trio.sleep(1.5)
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) <= 64


async def test_a_burst_of_calls_that_do_not_suspend_runs_in_one_worker() -> None:
    # A slice long enough that no actor yields within the burst: every call completes
    # without suspending, so the one worker woken for the first runs them all.
    config = triact.SessionConfig(schedule_slice=60.0)
    async with (
        triact.open_session_manager(config) as manager,
        connect(manager, initialize="2025-11-25") as peer,
    ):
        ids = [(await peer.ok("session_create"))["session_id"] for _ in range(20)]
        nursery = peer.server.calls.nursery
        assert nursery is not None
        before = len(nursery.child_tasks)
        calls = [
            peer.call_message("session_update", {"session_id": ids[k % 20], "increment": {"n": 1}})
            for k in range(100)
        ]
        await peer.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in calls))
        for m in calls:
            assert (await peer.response(m["id"]))["result"]["isError"] is False
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) <= max(before, 1)
        for session_id in ids:
            state = await peer.ok("session_get", {"session_id": session_id})
            assert state["session"]["data"] == {"n": 5}


async def test_workers_go_on_after_a_cancelled_call(manager: triact.SessionManager) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        session_id = (await peer.ok("session_create"))["session_id"]
        other = (await peer.ok("session_create"))["session_id"]
        for _ in range(3):
            async with holding(manager, session_id):
                message = peer.call_message(
                    "session_update", {"session_id": session_id, "set": {"x": 1}}
                )
                await peer.send(message)
                await trio.testing.wait_all_tasks_blocked()
                await peer.send(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": message["id"]},
                    }
                )
                await trio.testing.wait_all_tasks_blocked()
            # Calls after it, on whichever worker (one ran the cancelled call), all run.
            for _ in range(5):
                await peer.ok("session_update", {"session_id": other, "increment": {"n": 1}})
        assert (await peer.ok("session_get", {"session_id": other}))["session"]["data"] == {"n": 15}
        assert (await peer.ok("session_get", {"session_id": session_id}))["session"]["data"] == {}


async def test_a_call_that_completes_despite_its_cancellation_is_answered(
    manager: triact.SessionManager,
) -> None:
    # A call whose last wait is shielded, as an ask's is once its change is committed.
    started, release = trio.Event(), trio.Event()
    health = SESSION_TOOLS.get("health_check")
    assert health is not None

    async def shielded(env: Any, args: Any) -> Any:
        result = await health.run(env, args)
        with trio.CancelScope(shield=True):
            started.set()
            await release.wait()
        return result

    tools = SESSION_TOOLS | ToolSet([attrs.evolve(health, run=shielded)])
    async with connect(manager, tools=tools, initialize="2025-11-25") as peer:
        message = peer.call_message("health_check")
        await peer.send(message)
        await started.wait()
        await peer.send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": message["id"]},
            }
        )
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        assert (await peer.response(message["id"]))["result"]["isError"] is False
        # The worker it ran on serves the next calls uncancelled.
        for _ in range(3):
            assert (await peer.ok("health_check"))["status"] == "ok"


async def test_stats_pipelined_behind_the_first_default_session_call_sees_it(
    peer: Peer,
) -> None:
    update = peer.call_message("session_update", {"set": {"a": 1}})
    stats = peer.call_message("session_stats")
    await peer.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in (update, stats)))
    updated = (await peer.response(update["id"]))["result"]["structuredContent"]
    session = (await peer.response(stats["id"]))["result"]["structuredContent"]["session"]
    assert session is not None
    assert (session["session_id"], session["version"]) == (updated["session_id"], 2)
