"""Client binding (I7): tokens, HMACs, security events, the throttle, rate limits."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import triact
from triact.testing import Fault, FaultyStore

from ._helpers import OpenManager, put

# -- binding ---------------------------------------------------------------------------


async def test_bound_session_gives_its_token_only_on_creation(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(bind_client=True, client_id="c1")
        assert isinstance(session.token, str)
        assert len(session.token) >= 43  # 256 bits, url-safe base64
        found = await manager.get_session(session.id)
        assert found.token is None
        other = await manager.create_session(bind_client=True)
        assert other.token not in (None, session.token)


async def test_state_keeps_only_the_hmac_of_the_token(open_manager: OpenManager) -> None:
    async with open_manager(wall_clock=lambda: 1234.5) as manager:
        session = await manager.create_session(bind_client=True, client_id="c1")
        assert session.token is not None
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("a wrong token", tool_name="session_get")
        await session.update(put("k", 1))
        state = await session.snapshot()
    binding = state.client_binding
    assert binding is not None
    assert len(binding.token_hmac) == 64  # hex SHA-256
    assert int(binding.token_hmac, 16) >= 0
    assert (binding.created_at, binding.client_id) == (1234.5, "c1")
    assert session.token not in triact.encode_state(state)
    assert session.token not in repr(state)


async def test_unbound_session_has_no_binding_and_no_token(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(client_id="c1")
        assert session.token is None
        assert (await session.snapshot()).client_binding is None


async def test_validate_security_on_an_unbound_session_is_a_no_op(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        for token in (None, "", "anything"):
            await session.validate_security(token, tool_name="t")
        state = await session.snapshot()
        assert state.version == 1
        assert state.security_events == ()
        assert (await manager.stats()).security_failures == 0


async def test_validate_security_with_the_right_token_passes(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(bind_client=True)
        assert session.token is not None
        for _ in range(10):
            await session.validate_security(session.token, tool_name="session_get")
        state = await session.snapshot()
        assert state.version == 1
        assert state.security_events == ()


@pytest.mark.parametrize(
    ("token", "kind"),
    [("wrong", "invalid_token"), ("", "invalid_token"), (None, "missing_token")],
)
async def test_validate_security_refuses_a_bad_token_and_records_it(
    open_manager: OpenManager, token: str | None, kind: str
) -> None:
    async with open_manager(wall_clock=lambda: 99.0) as manager:
        session = await manager.create_session(bind_client=True)
        with pytest.raises(triact.SessionSecurityError, match=session.id):
            await session.validate_security(token, tool_name="session_update")
        state = await session.snapshot()
        (event,) = state.security_events
        assert (event.kind, event.at, event.tool_name) == (kind, 99.0, "session_update")
        assert session.id in event.detail
        assert (await manager.stats()).security_failures == 1


async def test_a_token_that_is_not_valid_unicode_is_one_more_wrong_token(
    open_manager: OpenManager,
) -> None:
    """It raised UnicodeEncodeError (from the token's encoding for its HMAC)."""
    async with open_manager() as manager:
        session = await manager.create_session(bind_client=True)
        unbound = await manager.create_session()
        with pytest.raises(triact.SessionSecurityError, match="invalid token"):
            await session.validate_security("\ud800")
        with pytest.raises(triact.SessionSecurityError):
            await session.authorized("a\udfff").snapshot()
        usable = await manager.usable_sessions(["\ud800"])
        assert [state.id for state in usable] == [unbound.id]
        state = await session.snapshot()
        assert [event.kind for event in state.security_events] == ["invalid_token"] * 2
        await session.validate_security(session.token)


@pytest.mark.parametrize("token", [5, b"token"])
async def test_a_token_that_is_not_a_str_is_a_type_error(
    open_manager: OpenManager, token: object
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(bind_client=True)
        with pytest.raises(TypeError, match="a session token is a str") as refused:
            await session.validate_security(token)  # type: ignore[arg-type]
        assert "token'" not in str(refused.value)  # not quoted
        with pytest.raises(TypeError, match="a session token is a str"):
            await manager.usable_sessions([token])  # type: ignore[list-item]
        state = await session.snapshot()
        assert (state.version, state.security_events) == (1, ())


async def test_a_token_of_another_session_is_refused(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        a = await manager.create_session(bind_client=True)
        b = await manager.create_session(bind_client=True)
        with pytest.raises(triact.SessionSecurityError):
            await a.validate_security(b.token)


# -- calls that carry their token ---------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
async def test_an_authorized_handle_checks_its_token_in_each_call(
    open_manager: OpenManager, tmp_path: object, durable: bool
) -> None:
    store = triact.SqliteStore(f"{tmp_path}/s.db") if durable else triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session(bind_client=True)
        assert session.token is not None
        good = session.authorized(session.token, "a_tool")
        state = await good.update(put("k", 1))
        assert (state.version, state.data) == (2, {"k": 1})
        assert (await good.snapshot()).version == 2
        stats = await session.stats()
        assert stats.operations == 2  # one actor call each, check included

        bad = session.authorized("wrong", "b_tool")
        with pytest.raises(triact.SessionSecurityError, match="invalid token"):
            await bad.update(put("k", 2))
        state = await session.snapshot()
        assert state.data == {"k": 1}  # the operation did not run
        assert [(e.kind, e.tool_name) for e in state.security_events] == [
            ("invalid_token", "b_tool")
        ]
        with pytest.raises(triact.SessionSecurityError):
            await session.authorized(None).end()
        assert manager.session_count == 1
        final = await good.end()
        assert final.data == {"k": 1}
        assert manager.session_count == 0


async def test_an_authorized_handle_on_an_unbound_session_passes_any_token(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        state = await session.authorized("anything").update(put("k", 1))
        assert state.data == {"k": 1}
        assert state.security_events == ()


async def test_an_authorized_handle_counts_towards_the_throttle(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(security_max_failures=2) as manager:
        session = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError):
                await session.authorized("wrong").snapshot()
        with pytest.raises(triact.SessionThrottledError):
            await session.authorized("wrong").snapshot()
        assert session.token is not None
        await session.authorized(session.token).snapshot()


class CountingStore(triact.MemoryStore):
    """Counts the writes that reach it."""

    writes = 0

    def write_now(self, state: triact.SessionState, *, previous_version: int | None) -> None:
        self.writes += 1
        super().write_now(state, previous_version=previous_version)


async def queue_behind_a_stalled_write(
    session: triact.Session, calls: dict[str, tuple[str | None, object]]
) -> dict[str, object]:
    """Start ``first`` (its write stalls), queue the other calls behind it, in order;
    the outcome of each (its state or its SessionError)."""
    outcomes: dict[str, object] = {}

    async def call(name: str, token: str | None, fn: object) -> None:
        try:
            outcomes[name] = await session.authorized(token).update(fn)  # type: ignore[arg-type]
        except triact.SessionError as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        for name, (token, fn) in calls.items():
            nursery.start_soon(call, name, token, fn)
            await trio.testing.wait_all_tasks_blocked()
    return outcomes


async def test_authorized_changes_queued_together_commit_in_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    counting = CountingStore()
    # store calls: 0 index (open), 1 create's write, 2 the first update's write: stalled
    store = FaultyStore(counting, schedule=[Fault("stall", at=2)], stall=1.0)
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session(bind_client=True)
        token = session.token
        outcomes = await queue_behind_a_stalled_write(
            session,
            {
                "a": (token, put("a", 1)),  # stalls; b to e queue behind it
                "b": (token, put("b", 1)),
                "c": (None, put("c", 1)),  # refused, so not in b's group: recorded
                "d": (token, put("d", 1)),  # commits c's security event, with e
                "e": (token, put("e", 1)),
            },
        )
        state = await session.snapshot()
        stored = await counting.load(session.id)
    assert stored is not None
    assert [event.kind for event in stored.security_events] == ["missing_token"]
    assert isinstance(outcomes["c"], triact.SessionSecurityError)
    assert state.data == {"a": 1, "b": 1, "d": 1, "e": 1}
    assert [event.kind for event in state.security_events] == ["missing_token"]
    # create, a, b, then d with e and c's security event (its refusal wrote nothing)
    assert counting.writes == 4


async def test_a_token_queued_behind_a_change_of_the_binding_is_checked_against_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(triact.MemoryStore(), schedule=[Fault("stall", at=2)], stall=1.0)
    other = triact.ClientBinding(token_hmac="0" * 64, created_at=1.0)
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session(bind_client=True)
        token = session.token
        outcomes = await queue_behind_a_stalled_write(
            session,
            {
                "a": (token, put("a", 1)),
                "rebind": (token, lambda s: attrs.evolve(s, client_binding=other)),
                "after": (token, put("after", 1)),  # in the rebind's group
            },
        )
        state = await session.snapshot()
    assert isinstance(outcomes["after"], triact.SessionSecurityError)
    assert "change of its client binding" in str(outcomes["after"])
    assert state.client_binding == other
    assert "after" not in state.data


async def test_security_events_are_bounded_keeping_the_newest(
    open_manager: OpenManager,
) -> None:
    async with open_manager(max_security_events=3, security_max_failures=100) as manager:
        session = await manager.create_session(bind_client=True)
        for i in range(6):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong", tool_name=f"tool{i}")
        state = await session.snapshot()
    assert [e.tool_name for e in state.security_events] == ["tool3", "tool4", "tool5"]


# -- the throttle: the right token always passes; failing callers wait ------------------


def a_store(kind: str, tmp_path: Path) -> triact.SessionStore:
    return triact.SqliteStore(tmp_path / "s.db") if kind == "sqlite" else triact.MemoryStore()


STORES = pytest.mark.parametrize("kind", ["memory", "sqlite"])


@STORES
async def test_the_right_token_passes_after_a_hundred_wrong_ones(
    open_manager: OpenManager, tmp_path: Path, kind: str
) -> None:
    async with open_manager(store=a_store(kind, tmp_path)) as manager:
        session = await manager.create_session(bind_client=True)
        assert session.token is not None
        for i in range(100):
            with pytest.raises(triact.SessionSecurityError):
                await session.authorized(None if i % 2 else "wrong").snapshot()
        await session.validate_security(session.token)
        state = await session.authorized(session.token).update(put("k", 1))
        assert (state.version, state.data) == (2, {"k": 1})
        assert (await manager.stats()).security_failures == 100


@STORES
async def test_refusals_do_not_move_the_version(
    open_manager: OpenManager, tmp_path: Path, kind: str
) -> None:
    async with open_manager(store=a_store(kind, tmp_path)) as manager:
        session = await manager.create_session(bind_client=True)
        owner = session.authorized(session.token)
        seen = (await owner.snapshot()).version
        for _ in range(10):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong")
            with pytest.raises(triact.SessionSecurityError):
                await session.authorized("wrong").update(put("k", "theirs"))
        state = await owner.snapshot()
        assert state.version == seen == 1
        assert len(state.security_events) == 20  # shown before they are stored
        state = await owner.update(put("k", "mine"), expected_version=seen)
        assert (state.version, state.data) == (2, {"k": "mine"})
        assert len(state.security_events) == 20
        stats = await manager.stats()
        # refused, not handled: neither operations nor errors
        assert (stats.operations, stats.errors, stats.security_failures) == (3, 0, 20)


@STORES
async def test_security_events_are_stored_with_the_next_committed_change(
    open_manager: OpenManager, tmp_path: Path, kind: str
) -> None:
    store = a_store(kind, tmp_path)
    key = b"k" * 32
    async with open_manager(store=store, secret_key=key, wall_clock=lambda: 50.0) as manager:
        session = await manager.create_session(bind_client=True)
        for tool in ("one", "two"):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong", tool_name=tool)
        stored = await store.load(session.id)
        assert stored is not None
        assert stored.security_events == ()  # kept beside the state until a commit
        await session.authorized(session.token).update(put("k", 1))
        stored = await store.load(session.id)
        assert stored is not None
        assert [e.tool_name for e in stored.security_events] == ["one", "two"]
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("wrong", tool_name="three")
    async with open_manager(store=store, secret_key=key, wall_clock=lambda: 60.0) as manager:
        state = await (await manager.get_session(session.id)).snapshot()
        # "three" was never stored: a restart loses what no commit took along
        assert [e.tool_name for e in state.security_events] == ["one", "two"]
        assert state.version == 2


async def test_the_throttle_engages_and_lifts_on_the_trio_clock(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(security_max_failures=3, security_window=60.0) as manager:
        session = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError, match=r"invalid token$"):
                await session.validate_security("wrong", tool_name="t")
        with pytest.raises(triact.SessionSecurityError, match="refused for 60 s") as info:
            await session.validate_security("wrong", tool_name="t")
        assert type(info.value) is triact.SessionSecurityError
        with pytest.raises(triact.SessionThrottledError, match=session.id) as throttled:
            await session.validate_security(None, tool_name="t")
        assert throttled.value.retry_after == pytest.approx(60.0)
        await trio.sleep(30.0)
        await session.validate_security(session.token)  # never throttled
        with pytest.raises(triact.SessionThrottledError) as throttled:
            await session.validate_security("wrong")
        assert throttled.value.retry_after == pytest.approx(30.0)
        await trio.sleep(throttled.value.retry_after)
        with pytest.raises(triact.SessionSecurityError) as info:  # checked and counted again
            await session.validate_security("wrong")
        assert type(info.value) is triact.SessionSecurityError
        kinds = [e.kind for e in (await session.snapshot()).security_events]
        assert kinds == [*["invalid_token"] * 3, "throttled", "throttled", "invalid_token"]
        assert (await manager.stats()).security_failures == 6


async def test_failures_older_than_the_window_do_not_count(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(security_max_failures=3, security_window=60.0) as manager:
        session = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong")
        await trio.sleep(61.0)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError, match=r"invalid token$"):
                await session.validate_security("wrong")


async def test_the_throttle_is_per_session(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(security_max_failures=2) as manager:
        attacked = await manager.create_session(bind_client=True)
        other = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError):
                await attacked.validate_security(None)
        with pytest.raises(triact.SessionThrottledError):
            await attacked.validate_security(None)
        with pytest.raises(triact.SessionSecurityError, match=r"invalid token$"):
            await other.validate_security("wrong")


# Timing tests use the memory store: the autojump clock may jump while a SQLite call
# runs in its thread.


async def test_refusals_do_not_keep_a_session_alive(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0) as manager:
        session = await manager.create_session(bind_client=True)
        await trio.sleep(60.0)
        for _ in range(30):
            with pytest.raises(triact.SessionSecurityError):
                await session.authorized("wrong").update(put("k", 1))
            await trio.sleep(1.0)
        assert manager.session_count == 1
        await trio.sleep(11.0)  # 101 s after the last call it handled
        assert manager.session_count == 0
        with pytest.raises(triact.SessionNotFoundError):
            await manager.get_session(session.id)


async def test_the_throttle_survives_passivation(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    # passivate_after drops an idle actor from memory; the throttle must not go with
    # it, or waiting a little would be a way round it.
    async with open_manager(security_max_failures=2, passivate_after=10.0) as manager:
        session = await manager.create_session(bind_client=True)
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("wrong")
        await trio.sleep(20.0)
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("wrong")  # counts with the first
        await trio.sleep(20.0)
        assert (await manager.stats()).passivated == 2
        with pytest.raises(triact.SessionThrottledError):
            await session.validate_security("wrong")
        await session.validate_security(session.token)
        kinds = [e.kind for e in (await session.snapshot()).security_events]
        assert kinds == ["invalid_token", "invalid_token", "throttled"]


async def test_the_throttle_survives_a_restart_once_its_events_are_stored(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    config = {
        "store": triact.MemoryStore(),
        "secret_key": b"k" * 32,
        "wall_clock": lambda: 1000.0 + trio.current_time(),
        "security_max_failures": 2,
        "security_window": 60.0,
    }
    async with open_manager(**config) as manager:
        session = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong")
        await session.authorized(session.token).update(put("k", 1))  # stores the events
    await trio.sleep(10.0)
    async with open_manager(**config) as manager:
        adopted = await manager.get_session(session.id)
        with pytest.raises(triact.SessionThrottledError) as throttled:
            await adopted.validate_security("wrong")
        assert throttled.value.retry_after == pytest.approx(50.0)
        await adopted.validate_security(session.token)
        await trio.sleep(50.0)
        with pytest.raises(triact.SessionSecurityError, match=r"invalid token$"):
            await adopted.validate_security("wrong")


async def test_a_lock_stored_by_an_older_triact_throttles_but_lets_the_token_in(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(wall_clock=lambda: 500.0, security_window=300.0) as manager:
        session = await manager.create_session(bind_client=True)
        locked = triact.SecurityEvent("locked", 400.0, None, "locked for 300 s")
        await session.update(lambda s: attrs.evolve(s, security_events=(locked,)))
        await session.validate_security(session.token)
        with pytest.raises(triact.SessionThrottledError) as throttled:
            await session.validate_security("wrong")
        assert throttled.value.retry_after == pytest.approx(200.0)


# -- what a caller may list --------------------------------------------------------------


@STORES
async def test_usable_sessions_are_the_unbound_and_those_of_the_tokens_given(
    open_manager: OpenManager, tmp_path: Path, kind: str, mock_clock: trio.testing.MockClock
) -> None:
    async with open_manager(store=a_store(kind, tmp_path), passivate_after=1.0) as manager:
        unbound = await manager.create_session()
        mine = await manager.create_session(bind_client=True)
        theirs = await manager.create_session(bind_client=True)
        for session in (unbound, mine, theirs):
            await session.snapshot()
        mock_clock.jump(2.0)
        await trio.testing.wait_all_tasks_blocked()
        # passivated: with SQLite their states are read from the store
        assert ((await manager.stats()).passivated, manager.session_count) == (3, 3)

        def ids(states: list[triact.SessionState]) -> list[str]:
            return [state.id for state in states]

        assert ids(await manager.usable_sessions()) == [unbound.id]
        assert mine.token is not None
        assert theirs.token is not None
        assert ids(await manager.usable_sessions([mine.token, "wrong"])) == [unbound.id, mine.id]
        index = await manager.usable_index([mine.token, "wrong"])
        assert [(e.id, bool(e.token_hmac)) for e in index] == [(unbound.id, False), (mine.id, True)]
        both = [theirs.token, mine.token]
        assert ids(await manager.usable_sessions(both)) == [unbound.id, mine.id, theirs.id]
        with pytest.raises(TypeError, match="collection of tokens"):
            await manager.usable_sessions(mine.token)
        assert (await manager.stats()).active_actors == 0  # looking called no session
        state = await theirs.snapshot()  # and was no refusal: nothing changed
        assert (state.version, state.security_events) == (1, ())
        assert (await manager.stats()).security_failures == 0


# -- secret key ------------------------------------------------------------------------


async def test_same_secret_key_lets_a_token_validate_in_another_manager(
    open_manager: OpenManager,
) -> None:
    store = triact.MemoryStore()
    key = b"k" * 32
    async with open_manager(store=store, secret_key=key, wall_clock=lambda: 1000.0) as first:
        session = await first.create_session(bind_client=True)
        token = session.token
    async with open_manager(store=store, secret_key=key, wall_clock=lambda: 1000.0) as second:
        adopted = await second.get_session(session.id)
        await adopted.validate_security(token)
        with pytest.raises(triact.SessionSecurityError):
            await adopted.validate_security("wrong")


async def test_another_secret_key_refuses_the_token(open_manager: OpenManager) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store, secret_key=b"a" * 32, wall_clock=lambda: 1.0) as first:
        session = await first.create_session(bind_client=True)
        hmac_a = (await session.snapshot()).client_binding
        token = session.token
    async with open_manager(store=store, secret_key=b"b" * 32, wall_clock=lambda: 1.0) as second:
        adopted = await second.get_session(session.id)
        assert (await adopted.snapshot()).client_binding == hmac_a
        with pytest.raises(triact.SessionSecurityError):
            await adopted.validate_security(token)


async def test_token_hmac_is_hmac_sha256_under_the_secret_key(open_manager: OpenManager) -> None:
    key = b"s" * 32
    async with open_manager(secret_key=key) as manager:
        session = await manager.create_session(bind_client=True)
        state = await session.snapshot()
    assert session.token is not None
    assert state.client_binding is not None
    expected = hmac.new(key, session.token.encode(), hashlib.sha256).hexdigest()
    assert state.client_binding.token_hmac == expected


# -- rate limit ------------------------------------------------------------------------


async def test_rate_limit_refuses_calls_past_the_burst(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(rate_limit=triact.RateLimit(rate=2, burst=2)) as manager:
        session = await manager.create_session()
        await session.snapshot()
        await session.update(put("k", 1))
        with pytest.raises(triact.SessionRateLimitError, match=session.id) as info:
            await session.update(put("k", 2))
        assert isinstance(info.value, triact.SessionBusyError)
        assert info.value.retry_after == pytest.approx(0.5)
        stats = await manager.stats()
        assert stats.busy_rejections == 1  # refused, not handled: no error counted
        assert (stats.operations, stats.errors) == (2, 0)
        await trio.sleep(info.value.retry_after)
        state = await session.update(put("k", 3))
        assert (state.version, state.data) == (3, {"k": 3})


async def test_rate_limit_refill_is_capped_at_the_burst(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(rate_limit=triact.RateLimit(rate=1, burst=3)) as manager:
        session = await manager.create_session()
        await session.snapshot()
        await trio.sleep(1000.0)
        for _ in range(3):
            await session.snapshot()
        with pytest.raises(triact.SessionRateLimitError) as info:
            await session.snapshot()
        assert info.value.retry_after == pytest.approx(1.0)


async def test_rate_limit_is_per_session(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(rate_limit=triact.RateLimit(rate=1, burst=1)) as manager:
        a = await manager.create_session()
        b = await manager.create_session()
        await a.snapshot()
        with pytest.raises(triact.SessionRateLimitError):
            await a.snapshot()
        await b.snapshot()


async def test_a_rate_limited_update_changes_nothing(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[int] = []

    def fn(state: triact.SessionState) -> triact.SessionState:
        calls.append(state.version)
        return state

    async with open_manager(rate_limit=triact.RateLimit(rate=1, burst=1)) as manager:
        session = await manager.create_session()
        await session.update(fn)
        with pytest.raises(triact.SessionRateLimitError):
            await session.update(fn)
        await trio.sleep(1.0)
        assert (await session.snapshot()).version == 2
    assert calls == [1]


@STORES
async def test_refused_tokens_cannot_keep_the_owner_from_changing_a_large_session(
    open_manager: OpenManager, tmp_path: Path, kind: str
) -> None:
    """Events of refused tokens that would take a session past max_state_bytes are
    left out of the owner's next change, which commits: whoever sends wrong tokens
    could otherwise keep the owner from changing a session near its size at all."""
    limit = 20_000
    async with open_manager(store=a_store(kind, tmp_path), max_state_bytes=limit) as manager:
        session = await manager.create_session(bind_client=True)
        owner = session.authorized(session.token)
        base = len(triact.encode_state(await owner.snapshot()).encode())
        state = await owner.update(put("pad", "a" * (limit - base - 1_000)))
        for _ in range(100):  # refused, then throttled: each one an event
            with pytest.raises(triact.SessionSecurityError):
                await session.authorized("wrong").snapshot()
        assert len((await owner.snapshot()).security_events) == 100  # about 20 KB
        state = await owner.update(put("k", 1))
        assert (state.version, state.data["k"], state.security_events) == (3, 1, ())
        assert len(triact.encode_state(state).encode()) <= limit
        # A change too big by itself is refused still, and the events that fit are
        # stored with the next change as before.
        with pytest.raises(triact.SessionLimitError, match="max_state_bytes"):
            await owner.update(put("more", "b" * 2_000))
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("wrong", tool_name="later")
        state = await owner.update(put("pad", "a"))
        assert [e.tool_name for e in state.security_events] == ["later"]
        assert state.version == 4
        assert (await manager.stats()).security_failures == 101
