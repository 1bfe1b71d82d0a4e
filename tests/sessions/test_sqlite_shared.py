"""The shared stores, SqliteStore and RedisStore, through one suite: two store objects
(two connections, as two processes have) on one real file or one real Redis; leases
and fencing epochs, compare-and-set, store-side deadlines and limits, listing, and
records; and what is SQLite's own (the v1 migration)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from pathlib import Path

import attrs
import pytest
import trio

import triact
from triact.sessions._errors import (
    SessionConcurrencyError,
    SessionFencedError,
    SessionLimitError,
)
from triact.sessions._redis import RedisStore
from triact.sessions._sqlite import SqliteStore
from triact.sessions._state import SessionState
from triact.sessions._store import SharedSessionStore

from .._redis import RedisPlace

NOW = 10_000.0


def make_state(session_id: str = "s1", version: int = 1, **data: object) -> SessionState:
    return SessionState(
        id=session_id, version=version, created_at=NOW, last_used=NOW, data=dict(data)
    )


TwoStores = Callable[[], AbstractAsyncContextManager[tuple[SharedSessionStore, SharedSessionStore]]]


@asynccontextmanager
async def open_pair(
    a: SharedSessionStore, b: SharedSessionStore
) -> AsyncIterator[tuple[SharedSessionStore, SharedSessionStore]]:
    async with a.open(), b.open():
        yield a, b


@pytest.fixture(params=["sqlite", "redis"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> TwoStores:
    """``two_stores()``: two stores of the kind on one file or one Redis key prefix
    (whose clock, for Redis, stands at NOW: the times the tests give are on it)."""
    if request.param == "sqlite":
        return lambda: open_pair(
            SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")
        )
    place: RedisPlace = request.getfixturevalue("redis_place")

    def redis_store() -> RedisStore:
        return RedisStore(place.url, prefix=place.prefix, clock=lambda: NOW)

    return lambda: open_pair(redis_store(), redis_store())


async def create(
    store: SharedSessionStore,
    state: SessionState,
    *,
    node: str = "a",
    client_id: str | None = None,
    max_sessions: int = 100,
    max_per_client: int | None = None,
    expires_at: float = NOW + 60,
    now: float = NOW,
) -> list[tuple[str, int]]:
    return await store.create(
        state,
        client_id=client_id,
        expires_at=expires_at,
        now=now,
        node=node,
        lease=5.0,
        max_sessions=max_sessions,
        max_per_client=max_per_client,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "shared.db"


async def test_a_session_created_through_one_store_is_found_through_the_other(
    two_stores: TwoStores,
) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state())
        assert await b.load("s1") == make_state()
        assert await b.version("s1") == 1
        assert await b.version("nope") is None


async def test_activation_is_refused_while_another_node_holds_a_live_lease(
    two_stores: TwoStores,
) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state())  # leased to "a" until NOW + 5, epoch 1
        held = await b.activate("s1", node="b", lease=5.0, now=NOW + 1)
        assert held is not None
        assert (held.epoch, held.holder) == (None, "a")
        assert held.lease_left == 4.0
        assert held.state == make_state()
        expired = await b.activate("s1", node="b", lease=5.0, now=NOW + 6)
        assert expired is not None
        assert expired.epoch == 2
        assert await a.activate("nope", node="a", lease=5.0, now=NOW) is None


async def test_a_forced_activation_fences_the_old_owner(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state())
        taken = await b.activate("s1", node="b", lease=5.0, now=NOW, force=True)
        assert taken is not None
        assert taken.epoch == 2
        with pytest.raises(SessionFencedError, match="taken over") as info:
            await a.write(make_state(version=2), previous_version=1, epoch=1)
        assert (info.value.expected, info.value.actual) == (1, 2)
        assert await a.version("s1") == 1  # nothing of it was saved
        await b.write(make_state(version=2), previous_version=1, epoch=2)
        assert await a.version("s1") == 2


async def test_a_guest_write_is_a_compare_and_set_on_the_version_alone(
    two_stores: TwoStores,
) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state())
        await b.write(make_state(version=2, n=1), previous_version=1)
        with pytest.raises(SessionConcurrencyError) as info:
            await a.write(make_state(version=2, n=2), previous_version=1, epoch=1)
        assert not isinstance(info.value, SessionFencedError)
        assert (info.value.expected, info.value.actual) == (1, 2)
        assert (await a.load("s1")) == make_state(version=2, n=1)


async def test_a_write_of_a_session_that_is_gone_reports_actual_minus_one(
    two_stores: TwoStores,
) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state())
        assert await b.remove("s1", version=None)
        with pytest.raises(SessionConcurrencyError) as info:
            await a.write(make_state(version=2), previous_version=1, epoch=1)
        assert info.value.actual == -1


async def test_remove_with_a_version_deletes_only_that_version(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state())
        await b.write(make_state(version=2), previous_version=1)
        with pytest.raises(SessionConcurrencyError) as info:
            await a.remove("s1", version=1)
        assert info.value.actual == 2
        assert await a.remove("s1", version=2)
        assert not await a.remove("s1", version=2)


async def test_create_counts_the_sessions_of_every_store_on_the_file(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state("s1"), max_sessions=2)
        await create(b, make_state("s2"), max_sessions=2)
        with pytest.raises(SessionLimitError, match="limit of 2 sessions"):
            await create(a, make_state("s3"), max_sessions=2)
        assert await b.count() == 2


async def test_create_counts_a_clients_sessions_in_the_store(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state("s1"), client_id="c", max_per_client=1)
        with pytest.raises(SessionLimitError, match="client 'c' holds its limit of 1"):
            await create(b, make_state("s2"), client_id="c", max_per_client=1)
        await create(b, make_state("s3"), client_id="d", max_per_client=1)


async def test_create_first_removes_the_sessions_past_their_deadline(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state("old"), expires_at=NOW + 1)
        a.release("old", node="a", epoch=1, expires_at=NOW + 1)
        trimmed = await create(b, make_state("new"), now=NOW + 10, max_sessions=1)
        assert trimmed == [("old", 1)]
        assert await a.load("old") is None


async def test_expiry_spares_a_session_whose_deadline_was_pushed_by_a_touch(
    two_stores: TwoStores,
) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state(), expires_at=NOW + 10)
        a.release("s1", node="a", epoch=1, expires_at=NOW)
        a.touch("s1", expires_at=NOW + 30)
        await a.version("s1")  # the touch is through once a later call is
        assert await b.expire_due(NOW + 20, idle_before=0, limit=10) == []
        assert await b.expire_due(NOW + 31, idle_before=0, limit=10) == [("s1", 1)]


async def test_expiry_spares_a_session_with_a_live_lease(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state(), expires_at=NOW + 1)  # lease until NOW + 5
        assert await b.expire_due(NOW + 2, idle_before=0, limit=10) == []
        lost = await a.renew("a", {"s1": 1}, until=NOW + 20, busy_until=NOW + 30)
        assert lost == set()
        assert await b.expire_due(NOW + 25, idle_before=0, limit=10) == []
        assert await b.expire_due(NOW + 31, idle_before=0, limit=10) == [("s1", 1)]


async def test_renew_reports_leases_taken_over_or_gone(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state("s1"))
        await create(a, make_state("s2"))
        await b.activate("s1", node="b", lease=5.0, now=NOW, force=True)
        await b.remove("s2", version=None)
        lost = await a.renew("a", {"s1": 1, "s2": 1}, until=NOW + 10, busy_until=None)
        assert lost == {"s1", "s2"}


async def test_a_released_lease_lets_another_node_activate_at_once(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        await create(a, make_state())
        a.release("s1", node="a", epoch=1, expires_at=NOW)
        await a.version("s1")
        taken = await b.activate("s1", node="b", lease=5.0, now=NOW)
        assert taken is not None
        assert taken.epoch == 2


async def test_pages_list_every_session_in_creation_order(two_stores: TwoStores) -> None:
    async with two_stores() as (a, b):
        for i in range(5):
            state = SessionState(id=f"s{i}", version=1, created_at=NOW + i, last_used=NOW)
            await create(a if i % 2 else b, state)
        first = await a.page(None, 2)
        assert [e.id for e in first] == ["s0", "s1"]
        rest = await b.page((first[-1].created_at, first[-1].id), 10)
        assert [e.id for e in rest] == ["s2", "s3", "s4"]


async def test_a_page_tells_each_sessions_topic_token_hmac_and_principal(
    two_stores: TwoStores,
) -> None:
    binding = triact.ClientBinding(client_id="c", token_hmac="ab12", created_at=NOW)
    states = [
        SessionState(id="open", version=1, created_at=NOW, last_used=NOW, topic="t"),
        attrs.evolve(make_state("bound"), client_binding=binding, principal="alice"),
    ]
    async with two_stores() as (a, b):
        for state in states:
            await create(a, state)
        told = [(e.id, e.topic, e.token_hmac, e.principal) for e in await b.page(None, 10)]
    assert sorted(told) == [("bound", None, "ab12", "alice"), ("open", "t", "", None)]


async def test_a_version_1_file_is_migrated_and_keeps_its_sessions(path: Path) -> None:
    text = triact.encode_state(make_state())
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, version INTEGER NOT NULL, "
            "created_at REAL NOT NULL, last_used REAL NOT NULL, client_id TEXT, "
            "state TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO meta VALUES ('schema', '1')")
        conn.execute("INSERT INTO sessions VALUES ('s1', 1, ?, ?, NULL, ?)", (NOW, NOW, text))
    async with open_pair(SqliteStore(path), SqliteStore(path)) as (a, b):
        activation = await a.activate("s1", node="a", lease=5.0, now=NOW)
        assert activation is not None
        assert activation.epoch == 1
        await b.write(make_state(version=2), previous_version=1)
        # No deadline yet: due once idle past the sweeping manager's TTL.
        assert await b.expire_due(NOW + 100, idle_before=NOW - 1, limit=10) == []
        assert await b.expire_due(NOW + 100, idle_before=NOW + 1, limit=10) == [("s1", 2)]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)


# -- records ------------------------------------------------------------------------


async def test_records_are_shared_and_expire_after_their_idle_ttl(path: Path) -> None:
    now = [NOW]
    a, b = SqliteStore(path, clock=lambda: now[0]), SqliteStore(path, clock=lambda: now[0])
    async with a.open(), b.open():
        await a.put_record("mcp", "k1", '{"v": 1}', ttl=10.0)
        now[0] += 8
        assert await b.get_record("mcp", "k1") == '{"v": 1}'  # and the ttl starts again
        now[0] += 8
        assert await a.get_record("mcp", "k1") == '{"v": 1}'
        now[0] += 11
        assert await a.get_record("mcp", "k1") is None
        await a.put_record("mcp", "k2", "2", ttl=10.0)
        assert await b.delete_record("mcp", "k2")
        assert not await b.delete_record("mcp", "k2")
        assert await a.get_record("other", "k2") is None


async def test_redis_records_are_shared_and_expire_by_redis_after_their_idle_ttl(
    redis_place: RedisPlace,
) -> None:
    a = RedisStore(redis_place.url, prefix=redis_place.prefix)
    b = RedisStore(redis_place.url, prefix=redis_place.prefix)
    with redis_place.client() as client:
        async with a.open(), b.open():
            await a.put_record("mcp", "k1", '{"v": 1}', ttl=100.0)
            (key,) = client.keys(f"{redis_place.prefix}rec:*")
            client.pexpire(key, 50_000)  # as if 50 s had passed
            assert await b.get_record("mcp", "k1") == '{"v": 1}'
            assert client.pttl(key) > 99_000  # the ttl started again
            await a.put_record("mcp", "short", "1", ttl=0.05)
            await trio.sleep(0.2)  # Redis's clock, not ours: this one is gone
            assert await b.get_record("mcp", "short") is None
            await a.put_record("mcp", "k2", "2", ttl=10.0)
            assert await b.delete_record("mcp", "k2")
            assert not await b.delete_record("mcp", "k2")
            assert await a.get_record("other", "k1") is None
            await a.put_record("mcp:k", "x", "3", ttl=10.0)  # no clash of names
            assert await a.get_record("mcp", "k:x") is None


async def test_memory_store_records_expire_on_trios_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = triact.MemoryStore()
    async with store.open():
        await store.put_record("mcp", "k", "{}", ttl=5.0)
        await trio.sleep(4)
        assert await store.get_record("mcp", "k") == "{}"
        await trio.sleep(4)
        assert await store.get_record("mcp", "k") == "{}"
        await trio.sleep(6)
        assert await store.get_record("mcp", "k") is None
        await store.put_record("mcp", "k", "[]", ttl=5.0)
        assert await store.delete_record("mcp", "k")
        assert not await store.delete_record("mcp", "k")


@pytest.mark.parametrize(
    ("namespace", "key", "value", "ttl", "error"),
    [
        ("", "k", "{}", 1.0, "namespace"),
        ("n", "", "{}", 1.0, "key"),
        ("n", "k", {}, 1.0, "JSON text"),
        ("n", "k", "{}", 0, "ttl"),
        ("n", "k", "{}", float("inf"), "ttl"),
    ],
)
async def test_bad_records_are_refused_naming_what_is_wrong(
    path: Path,
    redis_place: RedisPlace,
    namespace: str,
    key: str,
    value: object,
    ttl: float,
    error: str,
) -> None:
    redis = RedisStore(redis_place.url, prefix=redis_place.prefix)
    for store in (triact.MemoryStore(), SqliteStore(path), redis):
        async with store.open():
            with pytest.raises((ValueError, TypeError), match=error):
                await store.put_record(namespace, key, value, ttl=ttl)  # type: ignore[arg-type]


@asynccontextmanager
async def two_record_stores(
    kind: str, path: Path, redis_place: RedisPlace
) -> AsyncIterator[tuple[triact.SessionStore, triact.SessionStore]]:
    """Two stores of ``kind`` that share their records (one memory store twice)."""
    if kind == "memory":
        memory = triact.MemoryStore()
        async with memory.open():
            yield memory, memory
        return
    if kind == "sqlite":
        a: triact.SessionStore = SqliteStore(path)
        b: triact.SessionStore = SqliteStore(path)
    else:
        a = RedisStore(redis_place.url, prefix=redis_place.prefix)
        b = RedisStore(redis_place.url, prefix=redis_place.prefix)
    async with a.open(), b.open():
        yield a, b


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_a_swap_puts_a_record_only_over_what_its_caller_read(
    kind: str, path: Path, redis_place: RedisPlace
) -> None:
    async with two_record_stores(kind, path, redis_place) as (a, b):
        assert await a.swap_record("mcp", "k", "1", expected=None, ttl=10.0)
        assert not await b.swap_record("mcp", "k", "2", expected=None, ttl=10.0)  # it has one
        assert not await b.swap_record("mcp", "k", "2", expected="0", ttl=10.0)
        assert await b.get_record("mcp", "k") == "1"  # nothing changed
        assert await b.swap_record("mcp", "k", "2", expected="1", ttl=10.0)
        assert not await a.swap_record("mcp", "k", "3", expected="1", ttl=10.0)  # too late
        assert await a.get_record("mcp", "k") == "2"
        assert not await a.swap_record("mcp", "gone", "1", expected="1", ttl=10.0)
        assert await a.get_record("mcp", "gone") is None
        assert not await a.swap_record("other", "k", "1", expected="2", ttl=10.0)


async def test_a_swap_sees_an_expired_record_as_none(path: Path) -> None:
    now = [NOW]
    a, b = SqliteStore(path, clock=lambda: now[0]), SqliteStore(path, clock=lambda: now[0])
    async with a.open(), b.open():
        await a.put_record("mcp", "k", "1", ttl=10.0)
        now[0] += 8
        assert await b.swap_record("mcp", "k", "2", expected="1", ttl=10.0)
        now[0] += 11  # 11 s after the swap put it (its ttl started again)
        assert not await a.swap_record("mcp", "k", "3", expected="2", ttl=10.0)
        assert await a.swap_record("mcp", "k", "3", expected=None, ttl=10.0)
        assert await b.get_record("mcp", "k") == "3"


async def test_memory_swap_sees_an_expired_record_as_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = triact.MemoryStore()
    async with store.open():
        await store.put_record("mcp", "k", "1", ttl=5.0)
        await trio.sleep(6)
        assert not await store.swap_record("mcp", "k", "2", expected="1", ttl=5.0)
        assert await store.swap_record("mcp", "k", "2", expected=None, ttl=5.0)
        await trio.sleep(4)
        assert await store.swap_record("mcp", "k", "3", expected="2", ttl=5.0)
        await trio.sleep(4)  # 4 s after the swap: its ttl started again
        assert await store.get_record("mcp", "k") == "3"


async def test_redis_swap_starts_the_ttl_again_and_a_refused_one_leaves_it(
    redis_place: RedisPlace,
) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix)
    with redis_place.client() as client:
        async with store.open():
            await store.put_record("mcp", "k", "1", ttl=100.0)
            (key,) = client.keys(f"{redis_place.prefix}rec:*")
            client.pexpire(key, 50_000)
            assert not await store.swap_record("mcp", "k", "2", expected="0", ttl=100.0)
            assert client.pttl(key) <= 50_000  # a refused swap changed nothing
            assert await store.swap_record("mcp", "k", "2", expected="1", ttl=100.0)
            assert client.pttl(key) > 99_000


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_a_swap_with_an_expected_value_that_is_no_text_is_refused(
    kind: str, path: Path, redis_place: RedisPlace
) -> None:
    async with two_record_stores(kind, path, redis_place) as (a, _):
        with pytest.raises(TypeError, match="expected value must be JSON text"):
            await a.swap_record("mcp", "k", "1", expected=1, ttl=10.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ttl"):
            await a.swap_record("mcp", "k", "1", expected=None, ttl=0)
        assert await a.get_record("mcp", "k") is None
