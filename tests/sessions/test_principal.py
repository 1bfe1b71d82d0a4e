"""Sessions owned by a principal: created with ``principal=``, reached through handles
checked with ``authorized(..., principal=)``, listed only to their principal, stored
with the state (so restarts and other processes on the same store, SQLite or Redis,
keep the owner)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio

import triact
from triact.sessions import _sqlite_shared as sqlite_sql

from ._helpers import OpenManager

StoreMaker = Callable[[], triact.SessionStore]


async def test_another_principal_is_told_the_session_does_not_exist(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        mine = await manager.create_session("a", principal="alice")
        assert (await mine.snapshot()).principal == "alice"
        handle = await manager.get_session(mine.id)
        as_bob = handle.authorized(None, "session_get", principal="bob")
        for call in (
            as_bob.snapshot,
            lambda: as_bob.update(lambda s: attrs.evolve(s, data={"x": 1})),
            as_bob.end,
        ):
            with pytest.raises(triact.SessionNotFoundError) as refused:
                await call()
            # The same words as for an id that names nothing.
            with pytest.raises(triact.SessionNotFoundError) as missing:
                await manager.get_session("no-such-id")
            assert str(refused.value) == str(missing.value).replace("no-such-id", mine.id)
        with pytest.raises(triact.SessionNotFoundError):
            await handle.validate_security(None, principal="bob")
        # Unauthenticated callers (principal None) reach only unowned sessions.
        with pytest.raises(triact.SessionNotFoundError):
            await handle.authorized(None).snapshot()
        # Nothing of the refusals shows in the session: no version, no event, no op.
        state = await handle.authorized(None, principal="alice").snapshot()
        assert state.version == 1
        assert state.data == {}
        assert state.security_events == ()
        assert state.metrics.operations == 1  # this read only


async def test_the_owner_passes_and_the_token_stays_a_second_factor(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        bound = await manager.create_session(bind_client=True, principal="alice")
        await bound.validate_security(bound.token, principal="alice")
        with pytest.raises(triact.SessionSecurityError):
            await bound.validate_security("wrong", principal="alice")
        with pytest.raises(triact.SessionNotFoundError):  # a good token, the wrong owner
            await bound.validate_security(bound.token, principal="bob")
        updated = await bound.authorized(bound.token, principal="alice").update(
            lambda s: attrs.evolve(s, data={"n": 1})
        )
        assert updated.version == 2
        # Only the wrong token was recorded; the other principal's call left no trace.
        assert [event.kind for event in updated.security_events] == ["invalid_token"]


async def test_a_foreign_call_spends_none_of_the_sessions_rate_limit(
    open_manager: OpenManager,
) -> None:
    async with open_manager(rate_limit=triact.RateLimit(rate=0.001, burst=1)) as manager:
        session = await manager.create_session(principal="alice")
        for _ in range(3):
            with pytest.raises(triact.SessionNotFoundError):
                await session.authorized(None, principal="bob").snapshot()
        await session.authorized(None, principal="alice").snapshot()  # the one token left


async def test_an_update_may_not_change_the_principal(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(principal="alice")
        with pytest.raises(ValueError, match="principal"):
            await session.update(lambda s: attrs.evolve(s, principal="mallory"))
        unowned = await manager.create_session()
        with pytest.raises(ValueError, match="principal"):
            await unowned.update(lambda s: attrs.evolve(s, principal="mallory"))
        assert (await session.snapshot()).principal == "alice"
        assert (await unowned.snapshot()).principal is None


@pytest.mark.parametrize("bad", ["", 5, b"alice"])
async def test_a_principal_is_a_non_empty_str(open_manager: OpenManager, bad: object) -> None:
    async with open_manager() as manager:
        with pytest.raises(TypeError, match="principal"):
            await manager.create_session(principal=bad)  # type: ignore[arg-type]
        session = await manager.create_session()
        with pytest.raises(TypeError, match="principal"):
            session.authorized(None, principal=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="principal"):
            await manager.usable_sessions(principal=bad)  # type: ignore[arg-type]
        assert manager.session_count == 1


async def test_usable_sessions_are_the_principals_own(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        a1 = await manager.create_session("a1", principal="alice")
        bound = await manager.create_session("a2", bind_client=True, principal="alice")
        b1 = await manager.create_session("b1", principal="bob")
        nobody = await manager.create_session("none")

        async def ids(tokens: tuple[str, ...] = (), principal: str | None = None) -> list[str]:
            return [s.id for s in await manager.usable_sessions(tokens, principal=principal)]

        assert await ids(principal="alice") == [a1.id]
        assert bound.token is not None
        assert await ids((bound.token,), principal="alice") == [a1.id, bound.id]
        assert await ids((bound.token,), principal="bob") == [b1.id]
        assert await ids() == [nobody.id]
        index = await manager.usable_index((bound.token,), principal="alice")
        assert [(e.id, e.principal) for e in index] == [(a1.id, "alice"), (bound.id, "alice")]


def test_the_codec_keeps_the_principal_and_omits_it_when_there_is_none() -> None:
    owned = triact.SessionState(id="s", version=1, created_at=1.0, last_used=1.0, principal="p")
    record = json.loads(triact.encode_state(owned))
    assert record["state"]["principal"] == "p"
    assert triact.decode_state(triact.encode_state(owned)) == owned
    assert triact.unstructure_state(owned)["state"]["principal"] == "p"
    unowned = attrs.evolve(owned, principal=None)
    # The record of an unowned session is the one triact wrote before principals.
    assert "principal" not in json.loads(triact.encode_state(unowned))["state"]
    assert "principal" not in triact.unstructure_state(unowned)["state"]
    assert triact.decode_state(triact.encode_state(unowned)) == unowned


def store_maker(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StoreMaker:
    """A function making a new store object on one place (a file, a key prefix), as
    each process would."""
    if kind == "sqlite":
        return lambda: triact.SqliteStore(tmp_path / "s.db")
    place = request.getfixturevalue("redis_place")
    return lambda: triact.RedisStore(place.url, prefix=place.prefix)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_the_principal_survives_a_restart(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    make = store_maker(kind, tmp_path, request)

    def config() -> triact.SessionConfig:
        return triact.SessionConfig(store=make(), secret_key=b"k" * 32)

    async with triact.open_session_manager(config()) as manager:
        session = await manager.create_session("kept", principal="alice")
        sid = session.id
    async with triact.open_session_manager(config()) as manager:
        handle = await manager.get_session(sid)
        with pytest.raises(triact.SessionNotFoundError):
            await handle.authorized(None, principal="bob").snapshot()
        state = await handle.authorized(None, principal="alice").snapshot()
        assert (state.topic, state.principal) == ("kept", "alice")
        assert [s.id for s in await manager.usable_sessions(principal="alice")] == [sid]
        assert await manager.usable_sessions(principal="bob") == []


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_second_manager_on_the_same_store_sees_the_owner(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    make = store_maker(kind, tmp_path, request)

    def config() -> triact.SessionConfig:
        return triact.SessionConfig(store=make(), secret_key=b"k" * 32)

    async with (
        triact.open_session_manager(config()) as first,
        triact.open_session_manager(config()) as second,
    ):
        assert first.store.shared
        session = await first.create_session("here", principal="alice")
        there = await second.get_session(session.id)
        with pytest.raises(triact.SessionNotFoundError):
            await there.authorized(None, principal="bob").update(
                lambda s: attrs.evolve(s, data={"stolen": True})
            )
        state = await there.authorized(None, principal="alice").update(
            lambda s: attrs.evolve(s, data={"n": 1})
        )
        assert (state.version, state.principal) == (2, "alice")
        assert [s.id for s in await second.usable_sessions(principal="alice")] == [session.id]
        assert await second.usable_sessions(principal="bob") == []
        assert await second.usable_sessions() == []
        listed = await second.usable_index(principal="alice")  # from the store's index
        assert [(e.id, e.principal, e.topic) for e in listed] == [(session.id, "alice", "here")]
        assert await second.usable_index(principal="bob") == []
        assert await second.usable_index() == []
        with trio.fail_after(5):
            final = await session.authorized(None, principal="alice").snapshot()
        assert final.data == {"n": 1}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_max_sessions_per_principal_counts_each_principals_sessions_in_every_manager(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    make: StoreMaker = triact.MemoryStore
    if kind != "memory":
        make = store_maker(kind, tmp_path, request)

    def config() -> triact.SessionConfig:
        return triact.SessionConfig(
            store=make(), secret_key=b"k" * 32, max_sessions_per_principal=2
        )

    async with (
        triact.open_session_manager(config()) as first,
        triact.open_session_manager(config()) as second,
    ):
        # Two managers on one shared store count together; on memory stores, apart.
        other = second if kind != "memory" else first
        kept = await first.create_session(principal="alice")
        await other.create_session(principal="alice")
        for manager in (first, other):
            with pytest.raises(triact.SessionLimitError, match=r"principal 'alice'.*limit of 2"):
                await manager.create_session(principal="alice")
        await other.create_session(principal="bob")  # another principal's own count
        for _ in range(3):  # sessions of no principal are not counted
            await other.create_session()
        await (await other.get_session(kept.id)).end()  # ending one makes room
        await first.create_session(principal="alice")
        with pytest.raises(triact.SessionLimitError, match="max_sessions_per_principal"):
            await other.create_session(principal="alice")
        if kind == "memory":
            assert await second.count_sessions() == 0


async def test_a_sqlite_file_counts_a_principal_through_an_index_made_by_the_first_cap(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    uncapped = triact.SessionConfig(store=triact.SqliteStore(path))
    async with triact.open_session_manager(uncapped) as manager:
        for principal in ("alice", "alice", "bob", None):
            await manager.create_session(principal=principal)

    def indexes() -> list[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            return [name for (name,) in rows]

    assert "sessions_principal" not in indexes()  # no cap: no cost on its writes
    capped = triact.SessionConfig(store=triact.SqliteStore(path), max_sessions_per_principal=2)
    async with triact.open_session_manager(capped) as manager:
        with pytest.raises(triact.SessionLimitError, match="principal 'alice'"):
            await manager.create_session(principal="alice")  # counts the older two
        await manager.create_session(principal="bob")
        with pytest.raises(triact.SessionLimitError, match="principal 'bob'"):
            await manager.create_session(principal="bob")
    assert "sessions_principal" in indexes()
    with sqlite3.connect(path) as conn:
        query = f"SELECT count(*) FROM sessions WHERE {sqlite_sql._PRINCIPAL} = ?"
        plan = " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", ("bob",)))
        assert "USING INDEX sessions_principal" in plan  # not a scan of every state
        assert conn.execute(query, ("bob",)).fetchone() == (2,)


async def test_a_principals_sessions_adopted_from_a_store_count(tmp_path: Path) -> None:
    # A store that is not shared, opened on sessions it already holds (a restart).
    store = triact.MemoryStore()
    config = triact.SessionConfig(store=store, max_sessions_per_principal=1)
    async with triact.open_session_manager(config) as manager:
        await manager.create_session(principal="alice")
    async with triact.open_session_manager(config) as manager:
        with pytest.raises(triact.SessionLimitError, match="principal 'alice'"):
            await manager.create_session(principal="alice")
