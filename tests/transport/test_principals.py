"""The MCP server's calls are made as its connection's principal (``McpServer(...,
principal=)``): the sessions it creates are that principal's, and a connection without
one (stdio) reaches only sessions without one, as before principals existed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

import triact
from triact.transport import McpServer

from .conftest import Peer


@asynccontextmanager
async def connect_as(manager: triact.SessionManager, principal: str | None) -> AsyncIterator[Peer]:
    client, server_end = trio.testing.memory_stream_pair()
    server = McpServer(manager, principal=principal)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, server_end, server_end)
        peer = Peer(client, server)
        await peer.initialize()
        yield peer
        await peer.close()


async def test_a_connection_without_principal_reaches_only_unowned_sessions(
    manager: triact.SessionManager, peer: Peer
) -> None:
    owned = await manager.create_session("alice's", principal="alice")
    unowned = (await peer.ok("session_create", {"topic": "mine"}))["session_id"]
    assert (await manager.usable_sessions())[0].principal is None
    for _ in range(2):  # first contact, then what the connection remembers
        error = await peer.fails("session_get", {"session_id": owned.id})
        assert error["code"] == "not_found"
        assert error["message"].startswith(f"no session {owned.id!r}: it never existed")
    assert (await peer.fails("session_end", {"session_id": owned.id}))["code"] == "not_found"
    listed = await peer.ok("session_list")
    assert [s["session_id"] for s in listed["sessions"]] == [unowned]
    assert (await peer.ok("session_get", {"session_id": unowned}))["session"]["version"] == 1
    assert (await owned.snapshot()).version == 1  # untouched


async def test_a_principals_connection_owns_what_it_creates(
    manager: triact.SessionManager,
) -> None:
    async with connect_as(manager, "alice") as alice, connect_as(manager, "bob") as bob:
        sid = (await alice.ok("session_create", {"topic": "a"}))["session_id"]
        default = (await alice.ok("session_update", {"set": {"k": 1}}))["session_id"]
        for session_id in (sid, default):
            handle = await manager.get_session(session_id)
            assert (await handle.snapshot()).principal == "alice"
            assert (await bob.fails("session_get", {"session_id": session_id}))["code"] == (
                "not_found"
            )
            stats = await bob.fails("session_stats", {"session_id": session_id})
            assert stats["code"] == "not_found"
        listed = await alice.ok("session_list")
        assert {s["session_id"] for s in listed["sessions"]} == {sid, default}
        assert listed["default_session_id"] == default
        assert (await bob.ok("session_list"))["total"] == 0
        # Bob's own default session is his, apart from alice's.
        bobs = (await bob.ok("session_update", {"set": {"k": 2}}))["session_id"]
        assert bobs != default
        assert (await alice.ok("session_get", {"session_id": sid}))["session"]["topic"] == "a"
