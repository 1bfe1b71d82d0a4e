"""Every call is accounted once: random mixes of calls of every outcome, run
concurrently against one session, and the manager's stats and the session's metrics
checked against what each caller saw.

A call that returned is one operation; one that raised its update's error is an
operation and an error; one refused as busy (mailbox full, rate limit) is a busy
rejection; one refused for its token is a security failure; one cancelled before
its reply was known (here: an async update, by its caller's timeout) is none of
these. Counted twice or not at all, a call makes the totals differ.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Literal

import attrs
import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import given

import triact

Kind = Literal["ok", "error", "async_ok", "async_error", "cancelled", "bad_token", "validate"]
KINDS: tuple[Kind, ...] = (
    "ok",
    "error",
    "async_ok",
    "async_error",
    "cancelled",
    "bad_token",
    "validate",
)


class PlannedError(Exception):
    """What an update of kind "error" or "async_error" raises."""


@attrs.frozen
class Call:
    kind: Kind
    delay: int  # whole seconds after the start; async updates sleep whole seconds


def bump(state: triact.SessionState) -> triact.SessionState:
    return attrs.evolve(state, data={**state.data, "n": state.data.get("n", 0) + 1})


def fail(state: triact.SessionState) -> triact.SessionState:
    raise PlannedError("planned")


async def slow_bump(state: triact.SessionState) -> triact.SessionState:
    await trio.sleep(1)
    return bump(state)


async def slow_fail(state: triact.SessionState) -> triact.SessionState:
    await trio.sleep(1)
    raise PlannedError("planned, async")


async def run_call(session: triact.Session, call: Call, seen: Counter[str]) -> None:
    await trio.sleep(call.delay)
    assert session.token is not None
    try:
        if call.kind == "ok":
            await session.update(bump)
        elif call.kind == "error":
            await session.update(fail)
        elif call.kind == "async_ok":
            await session.update(slow_bump)
        elif call.kind == "async_error":
            await session.update(slow_fail)
        elif call.kind == "cancelled":
            # Half a second off every other call's whole-second steps: the timeout
            # never comes due at the instant the update finishes.
            with trio.fail_after(0.5):
                await session.update(slow_bump)
        elif call.kind == "bad_token":
            await session.authorized("not the token").update(bump)
        else:
            await session.validate_security(session.token)
    except PlannedError:
        seen["error"] += 1
    except (triact.SessionBusyError, triact.SessionRateLimitError):
        seen["busy"] += 1
    except triact.SessionSecurityError:
        seen["security"] += 1
    except trio.TooSlowError:
        seen["cancelled"] += 1
    else:
        seen["ok"] += 1


async def check_plan(plan: list[Call], store: triact.SessionStore | None, limited: bool) -> None:
    config = triact.SessionConfig(
        store=store,
        mailbox_size=3,
        security_max_failures=1000,  # no lockout: every refusal is a plain one
        rate_limit=triact.RateLimit(rate=2, burst=4) if limited else None,
    )
    async with triact.open_session_manager(config) as manager:
        session = await manager.create_session(bind_client=True)
        before = await manager.stats()
        seen: Counter[str] = Counter()
        async with trio.open_nursery() as nursery:
            for call in plan:
                nursery.start_soon(run_call, session, call, seen)
        assert sum(seen.values()) == len(plan)
        stats = await manager.stats()
        operations = seen["ok"] + seen["error"]
        assert stats.operations - before.operations == operations, seen
        assert stats.errors - before.errors == seen["error"], seen
        assert stats.busy_rejections - before.busy_rejections == seen["busy"], seen
        assert stats.security_failures - before.security_failures == seen["security"], seen
        if store is None and not limited:
            # The session's own metrics agree (a snapshot's do not count itself).
            # (Not checked with a rate limit, which could refuse the snapshot, nor
            # with a shared store: a reload adopts the metrics of the stored state,
            # which counts calls only up to its last commit.)
            metrics = (await session.snapshot()).metrics
            assert metrics.operations == operations, seen
            assert metrics.errors == seen["error"], seen


plans = st.lists(
    st.builds(Call, st.sampled_from(KINDS), st.integers(min_value=0, max_value=3)),
    min_size=1,
    max_size=24,
)


@given(plan=plans, limited=st.booleans())
def test_every_call_is_accounted_once_in_memory(plan: list[Call], limited: bool) -> None:
    trio.run(check_plan, plan, None, limited, clock=trio.testing.MockClock(autojump_threshold=0))


@given(plan=plans, limited=st.booleans())
def test_every_call_is_accounted_once_with_group_commits(plan: list[Call], limited: bool) -> None:
    # SQLite: changes queued behind a durable write are committed in one group,
    # and counted there rather than by receive.
    with tempfile.TemporaryDirectory() as tmp:
        store = triact.SqliteStore(str(Path(tmp) / "sessions.db"))
        trio.run(
            check_plan, plan, store, limited, clock=trio.testing.MockClock(autojump_threshold=0)
        )


# -- which clock the latencies are read from ----------------------------------------


async def test_latencies_are_read_from_the_runs_clock_whichever_it_is(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a MockClock, an update that sleeps 1 s of the clock's time takes 1 s, and
    a plain one none."""
    async with triact.open_session_manager(triact.SessionConfig()) as manager:
        session = await manager.create_session()
        await session.update(slow_bump)  # 1 s
        await session.update(bump)
        metrics = (await session.snapshot()).metrics
        assert (metrics.operations, metrics.max_latency) == (2, 1.0)
        assert metrics.total_latency == 1.0
        assert (await session.stats()).latency.max == 1.0
        stats = await manager.stats()  # the manager's tally, counted alike
        assert (stats.operations, stats.latency.max, stats.latency.p50) == (4, 1.0, 0.0)


async def test_latencies_on_trios_own_clock_are_within_the_calls() -> None:
    async with triact.open_session_manager(triact.SessionConfig()) as manager:
        session = await manager.create_session()
        start = trio.current_time()
        for _ in range(3):
            await session.update(bump)
        elapsed = trio.current_time() - start
        metrics = (await session.snapshot()).metrics
        assert metrics.operations == 3
        assert 0.0 < metrics.total_latency <= elapsed
        assert 0.0 < metrics.max_latency <= metrics.total_latency
