"""Client binding (I7): tokens, HMACs, security events, lockout, rate limits."""

from __future__ import annotations

import hashlib
import hmac

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


async def test_an_authorized_handle_counts_towards_the_lockout(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(security_max_failures=2) as manager:
        session = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError):
                await session.authorized("wrong").snapshot()
        assert session.token is not None
        with pytest.raises(triact.SessionSecurityError, match="locked"):
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
                "d": (token, put("d", 1)),  # in the group of c's security event
                "e": (token, put("e", 1)),
            },
        )
        state = await session.snapshot()
    assert isinstance(outcomes["c"], triact.SessionSecurityError)
    assert state.data == {"a": 1, "b": 1, "d": 1, "e": 1}
    assert [event.kind for event in state.security_events] == ["missing_token"]
    # create, a, b, then c's security event with d and e
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


# -- lockout ---------------------------------------------------------------------------


async def test_repeated_failures_lock_the_session_until_the_window_passes(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(security_max_failures=3, security_window=60.0) as manager:
        session = await manager.create_session(bind_client=True)
        token = session.token
        for _ in range(3):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong", tool_name="t")
        kinds = [e.kind for e in (await session.snapshot()).security_events]
        assert kinds == ["invalid_token", "invalid_token", "locked"]
        # now even the right token is refused
        await trio.sleep(30.0)
        with pytest.raises(triact.SessionSecurityError, match="locked"):
            await session.validate_security(token)
        await trio.sleep(30.0)
        await session.validate_security(token)  # the window has passed
        assert (await manager.stats()).security_failures == 4


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
        await session.validate_security(session.token)
        kinds = [e.kind for e in (await session.snapshot()).security_events]
        assert "locked" not in kinds


async def test_lockout_is_per_session(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(security_max_failures=2) as manager:
        attacked = await manager.create_session(bind_client=True)
        other = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError):
                await attacked.validate_security(None)
        with pytest.raises(triact.SessionSecurityError, match="locked"):
            await attacked.validate_security(attacked.token)
        await other.validate_security(other.token)


async def test_lockout_survives_passivation(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    # passivate_after drops an idle actor from memory; the lock must not go with it,
    # or waiting a little would be a way round the lockout.
    async with open_manager(
        security_max_failures=2, security_window=300.0, passivate_after=10.0
    ) as manager:
        session = await manager.create_session(bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong")
        await trio.sleep(20.0)
        assert (await manager.stats()).passivated == 1
        with pytest.raises(triact.SessionSecurityError, match="locked"):
            await session.validate_security(session.token)


async def test_failures_count_towards_the_lock_across_passivation(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(
        security_max_failures=2, security_window=300.0, passivate_after=10.0
    ) as manager:
        session = await manager.create_session(bind_client=True)
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("wrong")
        await trio.sleep(20.0)
        assert (await manager.stats()).passivated == 1
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("wrong")
        with pytest.raises(triact.SessionSecurityError, match="locked"):
            await session.validate_security(session.token)


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
