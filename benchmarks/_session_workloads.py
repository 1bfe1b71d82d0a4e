"""The timed workloads of ``sessions.py``: each runs inside a fresh event loop (Trio
or asyncio), against triact or one of the baselines, and returns one figure.

Both sides of a comparison do the same work: the same callers, the same sessions in
the same order, the same change (triact's ``fn`` evolves a frozen state; the
baseline's mutates its session in place, as today's layer does), and both are
checked afterwards for lost updates. triact's callers hold session handles, as its
API invites; the baseline's callers pass a session id, as its API requires (its
lookup under the global lock is part of the design measured).
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from array import array
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import attrs
import trio
import trio.testing
from baselines._model import Session as BaselineSession
from baselines.asyncio_actor import open_asyncio_actor_sessions
from baselines.asyncio_copy_manager import AsyncioCopyManager
from baselines.asyncio_lock_manager import open_asyncio_lock_manager
from baselines.asyncio_sqlite_manager import open_asyncio_sqlite_manager
from baselines.trio_lock_manager import open_trio_lock_manager

import triact
from triact import SessionConfig, SessionState, open_session_manager

# -- the updates -------------------------------------------------------------------


def bump(state: SessionState) -> SessionState:
    return state.with_data(n=state.data.get("n", 0) + 1)


def bump_evolve(state: SessionState) -> SessionState:
    """:func:`bump` as it was written before ``with_data``."""
    return attrs.evolve(state, data={**state.data, "n": state.data.get("n", 0) + 1})


def bump_copy(data: dict[str, Any]) -> dict[str, Any]:
    """The fair baseline's change: ``data`` is its private copy, so it writes in place."""
    data["n"] = data.get("n", 0) + 1
    return data


async def bump_copy_after_sleep(data: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return bump_copy(data)


async def bump_after_checkpoint(state: SessionState) -> SessionState:
    await trio.lowlevel.checkpoint()  # a handler doing I/O waits at least once
    return bump(state)


def bump_in_place(session: BaselineSession) -> BaselineSession:
    session.data["n"] = session.data.get("n", 0) + 1
    return session


async def bump_in_place_after_sleep(session: BaselineSession) -> BaselineSession:
    await asyncio.sleep(0)
    return bump_in_place(session)


async def bump_in_place_after_checkpoint(session: BaselineSession) -> BaselineSession:
    await trio.lowlevel.checkpoint()
    return bump_in_place(session)


@attrs.frozen
class Plan:
    """Who updates what: ``picks[c]`` lists the sessions caller ``c`` updates, in order."""

    sessions: int
    picks: list[list[int]]

    @property
    def updates(self) -> int:
        return sum(len(picks) for picks in self.picks)

    def lost(self, counts: list[int], versions: list[int], first_version: int) -> int:
        """Updates missing from (or extra in) each session's count or its version."""
        expected = [0] * self.sessions
        for picks in self.picks:
            for i in picks:
                expected[i] += 1
        return sum(
            abs(e - c) + abs(e - (v - first_version))
            for e, c, v in zip(expected, counts, versions, strict=True)
        )


def plan_updates(callers: int, sessions: int, per_caller: int, seed: int = 0) -> Plan:
    rng = random.Random(seed)
    picks = [[rng.randrange(sessions) for _ in range(per_caller)] for _ in range(callers)]
    return Plan(sessions, picks)


def rate(count: int, start_ns: int) -> float:
    return count / (time.perf_counter_ns() - start_ns) * 1e9


def cpu_now() -> tuple[int, int]:
    """The CPU time of this thread (the event loop's) and of the whole process, in ns."""
    return time.thread_time_ns(), time.process_time_ns()


def cpu_per(count: int, since: tuple[int, int]) -> tuple[float, float]:
    """The event loop's and the other threads' (a store's) CPU µs per item since
    ``since`` (:func:`cpu_now`)."""
    loop_ns, process_ns = time.thread_time_ns() - since[0], time.process_time_ns() - since[1]
    return loop_ns / count / 1e3, (process_ns - loop_ns) / count / 1e3


async def triact_updates(
    plan: Plan,
    fn: Callable[[SessionState], Any],
    lost: list[int],
    store: Any = None,
    batches: list[tuple[int, int]] | None = None,
    loop_cpu: list[tuple[float, float]] | None = None,
) -> float:
    """Updates per second through ``session.update``; appends what was lost to
    ``lost``, with a store that counts them the transactions and writes of the
    timed updates (not of the sessions' creation) to ``batches``, and the loop's and
    the other threads' CPU µs per timed update to ``loop_cpu`` (see :func:`cpu_per`)."""
    config = SessionConfig(max_sessions=max(plan.sessions, 10_000), store=store)
    async with open_session_manager(config) as manager:
        sessions = [await manager.create_session() for _ in range(plan.sessions)]

        async def caller(picks: list[int]) -> None:
            for i in picks:
                await sessions[i].update(fn)

        counted = (store.transactions, store.writes) if batches is not None else (0, 0)
        start, cpu_start = time.perf_counter_ns(), cpu_now()
        async with trio.open_nursery() as nursery:
            for picks in plan.picks:
                nursery.start_soon(caller, picks)
        result = rate(plan.updates, start)
        if loop_cpu is not None:
            loop_cpu.append(cpu_per(plan.updates, cpu_start))
        if batches is not None:
            batches.append((store.transactions - counted[0], store.writes - counted[1]))
        states: list[SessionState | None] = [await session.snapshot() for session in sessions]
    if store is not None:  # what the file holds, read back through a fresh store
        reopened = type(store)(store.path)
        async with reopened.open():
            states = [await reopened.load(session.id) for session in sessions]
    counts = [0 if s is None else s.data.get("n", 0) for s in states]  # None: all lost
    lost.append(plan.lost(counts, [1 if s is None else s.version for s in states], 1))
    return result


async def _asyncio_callers(
    plan: Plan,
    update: Callable[[str, Any], Awaitable[Any]],
    ids: list[str],
    fn: Any,
    loop_cpu: list[tuple[float, float]] | None,
) -> float:
    """Updates per second of ``plan``'s callers on asyncio, each awaiting ``update(id,
    fn)`` for its picks in turn (the CPU per update to ``loop_cpu``, if given)."""

    async def caller(picks: list[int]) -> None:
        for i in picks:
            await update(ids[i], fn)

    start, cpu_start = time.perf_counter_ns(), cpu_now()
    async with asyncio.TaskGroup() as group:
        for picks in plan.picks:
            group.create_task(caller(picks))
    result = rate(plan.updates, start)
    if loop_cpu is not None:
        loop_cpu.append(cpu_per(plan.updates, cpu_start))
    return result


async def asyncio_updates(
    plan: Plan,
    fn: Callable[[BaselineSession], Any],
    lost: list[int],
    path: str | None = None,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    loop_cpu: list[tuple[float, float]] | None = None,
) -> float:
    """Updates per second through today's ``atomic_update`` on asyncio (durable, in
    the SQLite file ``path``, if given); the CPU per update to ``loop_cpu`` as
    :func:`triact_updates` does (its SQLite writes run on the event loop)."""
    max_sessions = max(plan.sessions, 10_000)
    opened = (
        open_asyncio_lock_manager(max_sessions=max_sessions)
        if path is None
        else open_asyncio_sqlite_manager(path, synchronous=synchronous, max_sessions=max_sessions)
    )
    async with opened as manager:
        ids = [(await manager.create_session())[0].session_id for _ in range(plan.sessions)]

        result = await _asyncio_callers(plan, manager.atomic_update, ids, fn, loop_cpu)
        if path is None:
            states = [(await manager.get_session(i)).to_dict() for i in ids]
        else:  # what the file holds; a missing row counts as every update lost
            empty = {"data": {}, "version": 1}
            states = [manager.stored(i) or empty for i in ids]  # type: ignore[attr-defined]
    lost.append(
        plan.lost([s["data"].get("n", 0) for s in states], [s["version"] for s in states], 1)
    )
    return result


async def asyncio_actor_updates(
    plan: Plan,
    fn: Callable[[BaselineSession], Any],
    lost: list[int],
    loop_cpu: list[tuple[float, float]] | None = None,
) -> float:
    """Updates per second through sessions that are asyncio actors (one task and one
    ``asyncio.Queue`` per session, a future per reply)."""
    async with open_asyncio_actor_sessions() as manager:
        ids = [(await manager.create_session()).session_id for _ in range(plan.sessions)]

        result = await _asyncio_callers(plan, manager.atomic_update, ids, fn, loop_cpu)
        sessions = [manager.get_session(i) for i in ids]
    lost.append(plan.lost([s.data.get("n", 0) for s in sessions], [s.version for s in sessions], 1))
    return result


async def trio_lock_updates(
    plan: Plan,
    fn: Callable[[BaselineSession], Any],
    lost: list[int],
    loop_cpu: list[tuple[float, float]] | None = None,
) -> float:
    """Updates per second through today's ``atomic_update`` moved to Trio."""
    async with open_trio_lock_manager(max_sessions=max(plan.sessions, 10_000)) as manager:
        ids = [(await manager.create_session())[0].session_id for _ in range(plan.sessions)]

        async def caller(picks: list[int]) -> None:
            for i in picks:
                await manager.atomic_update(ids[i], fn)

        start, cpu_start = time.perf_counter_ns(), cpu_now()
        async with trio.open_nursery() as nursery:
            for picks in plan.picks:
                nursery.start_soon(caller, picks)
        result = rate(plan.updates, start)
        if loop_cpu is not None:
            loop_cpu.append(cpu_per(plan.updates, cpu_start))
        sessions = [await manager.get_session(i) for i in ids]
    lost.append(plan.lost([s.data.get("n", 0) for s in sessions], [s.version for s in sessions], 1))
    return result


async def copy_updates(
    plan: Plan,
    fn: Callable[[dict[str, Any]], Any],
    lost: list[int],
    loop_cpu: list[tuple[float, float]] | None = None,
) -> float:
    """Updates per second through the fair baseline (``baselines.asyncio_copy_manager``:
    triact's guarantees for an update, on asyncio, lean)."""
    manager = AsyncioCopyManager(max_sessions=max(plan.sessions, 10_000))
    ids = [manager.create_session().session_id for _ in range(plan.sessions)]

    result = await _asyncio_callers(plan, manager.update, ids, fn, loop_cpu)
    states = [manager.snapshot(i) for i in ids]
    lost.append(plan.lost([s.data.get("n", 0) for s in states], [s.version for s in states], 1))
    return result


# -- create_session and validate_security ------------------------------------------


async def triact_create(n: int, *, bind_client: bool) -> float:
    """Sessions created per second, one after another."""
    async with open_session_manager(SessionConfig(max_sessions=n + 1)) as manager:
        start = time.perf_counter_ns()
        for _ in range(n):
            await manager.create_session(bind_client=bind_client)
        return rate(n, start)


async def asyncio_create(n: int, *, bind_client: bool) -> float:
    async with open_asyncio_lock_manager(max_sessions=n + 1) as manager:
        start = time.perf_counter_ns()
        for _ in range(n):
            await manager.create_session(bind_client=bind_client)
        return rate(n, start)


async def triact_validate(n: int) -> float:
    """Microseconds per successful ``validate_security``, one after another."""
    async with open_session_manager() as manager:
        session = await manager.create_session(bind_client=True)
        token = session.token
        start = time.perf_counter_ns()
        for _ in range(n):
            await session.validate_security(token)
        return (time.perf_counter_ns() - start) / n / 1e3


async def asyncio_validate(n: int) -> float:
    async with open_asyncio_lock_manager() as manager:
        session, token = await manager.create_session(bind_client=True)
        start = time.perf_counter_ns()
        for _ in range(n):
            await manager.validate_security(session.session_id, token)
        return (time.perf_counter_ns() - start) / n / 1e3


# -- memory per idle session -------------------------------------------------------


def _start_tracing() -> None:
    gc.collect()
    tracemalloc.start()


def _traced_per(n: int) -> float:
    """Bytes still allocated since tracing began, per ``n``; stops tracing."""
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current / n


async def triact_memory(
    n: int, calls: int = 0, actors_left: list[int] | None = None, idle: float | None = None
) -> float:
    """Bytes per idle session with default state, the manager's own overhead included;
    each session updated ``calls`` times (``bump``) before it is measured, idle (for
    longer than an idle session's actor stays in memory, if it was called: 30 s by
    default, ``idle`` seconds if given, as ``passivate_after``)."""
    _start_tracing()
    config = SessionConfig(max_sessions=n, passivate_after=idle)
    async with open_session_manager(config) as manager:
        for _ in range(n):
            session = await manager.create_session()
            for _ in range(calls):
                await session.update(bump)
        del session
        if calls:
            await trio.sleep((30.0 if idle is None else idle) + 0.5)
            if actors_left is not None:
                actors_left.append((await manager.stats()).active_actors)
        return _traced_per(n)


async def asyncio_memory(n: int, calls: int = 0) -> float:
    _start_tracing()
    async with open_asyncio_lock_manager(max_sessions=n) as manager:
        for _ in range(n):
            session_id = (await manager.create_session())[0].session_id
            for _ in range(calls):
                await manager.atomic_update(session_id, bump_in_place)
        return _traced_per(n)


# -- mass expiry -------------------------------------------------------------------


class Ticker:
    """A task that sleeps 1 ms in a loop and keeps the longest gap between two of its
    wake-ups, in real time (``longest``) and in this thread's CPU time
    (``longest_cpu``). A real-time gap much longer than its CPU gap is the OS running
    another process, not the event loop being kept busy."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_cpu = 0.0

    async def run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while True:
            await trio.sleep(0.001)
            now, cpu = time.perf_counter(), time.thread_time()
            self.longest = max(self.longest, now - last)
            self.longest_cpu = max(self.longest_cpu, cpu - last_cpu)
            last, last_cpu = now, cpu


@attrs.define
class Expiry:
    """What a mass-expiry run saw besides its longest real-time gap."""

    longest_cpu_ms: list[float] = attrs.field(factory=list)
    #: The longest gap the same ticker sees afterwards, as long, with nothing to do:
    #: the machine's own noise.
    idle_longest_ms: list[float] = attrs.field(factory=list)
    expired_in_ms: list[float] = attrs.field(factory=list)
    created_in_s: list[float] = attrs.field(factory=list)
    expired_during_creation: list[int] = attrs.field(factory=list)


async def _expire_all(
    manager: triact.SessionManager, seen: Expiry, start: Callable[[], None] = lambda: None
) -> float:
    """Run a ticker until every session has expired; return its longest gap (ms)."""
    ticker = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        await trio.sleep(0.01)
        began = time.perf_counter()
        start()
        # Polled rather than subscribed to: a subscription adds work to every expiry.
        while manager.session_count:  # noqa: ASYNC110
            await trio.sleep(0.001)
        took = time.perf_counter() - began
        nursery.cancel_scope.cancel()
    idle = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle.run)
        await trio.sleep(max(took, 0.1))
        nursery.cancel_scope.cancel()
    seen.expired_in_ms.append(took * 1e3)
    seen.longest_cpu_ms.append(ticker.longest_cpu * 1e3)
    seen.idle_longest_ms.append(idle.longest * 1e3)
    return ticker.longest * 1e3


async def triact_expiry_at_once(n: int, clock: trio.testing.MockClock, seen: Expiry) -> float:
    """Longest gap (ms) seen while ``n`` sessions expire at the same instant.

    Trio's clock runs at real speed (``MockClock(rate=1)``); once every session exists,
    it jumps past their TTL, so that all of them come due at once.
    """
    ttl = 3600.0
    async with open_session_manager(SessionConfig(idle_ttl=ttl, max_sessions=n)) as manager:
        for _ in range(n):
            await manager.create_session()
        return await _expire_all(manager, seen, lambda: clock.jump(ttl))


async def triact_expiry_real_clock(n: int, ttl: float, seen: Expiry) -> float:
    """Longest gap (ms) seen from the last creation until all ``n`` sessions, created
    with ``idle_ttl=ttl`` on Trio's own clock, have expired."""
    async with open_session_manager(SessionConfig(idle_ttl=ttl, max_sessions=n)) as manager:
        start = time.perf_counter()
        for _ in range(n):
            await manager.create_session()
        seen.created_in_s.append(time.perf_counter() - start)
        seen.expired_during_creation.append(n - manager.session_count)
        return await _expire_all(manager, seen)


# -- the worst call at scale: the garbage collector ---------------------------------


@attrs.define
class WorstCall:
    """What a worst-call run saw: each call's latency and the collector's time."""

    #: Every timed call's latency, in nanoseconds (updates and creates), in real time
    #: and in this thread's CPU time (which a busy machine's preemptions do not inflate).
    #: Arrays, not lists: the benchmark's own bookkeeping is not for the collector to
    #: walk (a list of 200,000 ints is read item by item by every full collection).
    latencies_ns: array[int] = attrs.field(factory=lambda: array("q"))
    cpu_ns: array[int] = attrs.field(factory=lambda: array("q"))
    #: The indexes of the calls during which a full (generation 2) collection ran.
    with_full_collection: list[int] = attrs.field(factory=list)
    updates: int = 0
    creates: int = 0
    #: Seconds spent in collections during the timed calls, and their count and
    #: longest one, per generation.
    gc_seconds: float = 0.0
    gc_cpu_seconds: float = 0.0
    collections: list[int] = attrs.field(factory=lambda: [0, 0, 0])
    longest_collection: list[float] = attrs.field(factory=lambda: [0.0, 0.0, 0.0])
    longest_collection_cpu: list[float] = attrs.field(factory=lambda: [0.0, 0.0, 0.0])
    #: Objects the collector tracks at the start of the timed calls, per live session.
    tracked_per_session: float = 0.0
    #: A full collection (``gc.collect()``) made after the timed calls, sessions still
    #: live: what the next one the collector starts on its own would cost (seconds).
    full_collection: float = 0.0
    full_collection_cpu: float = 0.0


class SessionIds:
    """The ids of the benchmark's sessions, for picking one by index: in one
    ``bytearray`` (their UTF-8, end to end) and an ``array`` of offsets, which the
    collector does not track. A list of a million ids would be a container the
    collector reads item by item at every full collection: a cost of the benchmark's
    scaffolding, not of the session layer, whose own index is a dict of strings that
    the collector does not track."""

    __slots__ = ("_data", "_ends")

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends: array[int] = array("q")

    def append(self, session_id: str) -> None:
        self._data += session_id.encode()
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        ends = self._ends
        return self._data[ends[index - 1] if index else 0 : ends[index]].decode()


class GcClock:
    """Totals the time of the collections that start and stop while it is on
    (through ``gc.callbacks``)."""

    def __init__(self, seen: WorstCall) -> None:
        self.seen = seen
        self._began = self._began_cpu = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began, self._began_cpu = time.perf_counter(), time.thread_time()
            return
        took = time.perf_counter() - self._began
        took_cpu = time.thread_time() - self._began_cpu
        self.seen.gc_cpu_seconds += took_cpu
        generation = info["generation"]
        self.seen.gc_seconds += took
        self.seen.collections[generation] += 1
        longest, longest_cpu = self.seen.longest_collection, self.seen.longest_collection_cpu
        longest[generation] = max(longest[generation], took)
        longest_cpu[generation] = max(longest_cpu[generation], took_cpu)

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _time_full_collection(seen: WorstCall) -> None:
    start, start_cpu = time.perf_counter(), time.thread_time()
    gc.collect()
    seen.full_collection = time.perf_counter() - start
    seen.full_collection_cpu = time.thread_time() - start_cpu


def _worst_call_plan(sessions: int, calls: int, create_every: int, seed: int = 0) -> array[int]:
    """Which session each timed call updates, -1 for a create (every ``create_every``-th)."""
    rng = random.Random(seed)
    return array(
        "q", (-1 if (i + 1) % create_every == 0 else rng.randrange(sessions) for i in range(calls))
    )


async def triact_worst_call(sessions: int, calls: int, create_every: int, seen: WorstCall) -> float:
    """The longest call (ms) of ``calls`` made one after another, by session id as a
    server makes them (``get_session`` then ``update``), to random sessions of
    ``sessions`` that were each created then updated once; every ``create_every``-th
    call creates a session instead."""
    plan = _worst_call_plan(sessions, calls, create_every)
    config = SessionConfig(max_sessions=sessions + calls)
    async with open_session_manager(config) as manager:
        ids = SessionIds()
        for _ in range(sessions):
            ids.append((await manager.create_session()).id)
        for i in range(sessions):
            await (await manager.get_session(ids[i])).update(bump)
        seen.tracked_per_session = len(gc.get_objects()) / sessions
        latencies, cpu = seen.latencies_ns, seen.cpu_ns
        clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
        full, collections = seen.with_full_collection, seen.collections
        with GcClock(seen):
            for i, pick in enumerate(plan):
                fulls = collections[2]
                start, start_cpu = clock(), cpu_clock()
                if pick < 0:
                    await manager.create_session()
                else:
                    await (await manager.get_session(ids[pick])).update(bump)
                latencies.append(clock() - start)
                cpu.append(cpu_clock() - start_cpu)
                if collections[2] != fulls:
                    full.append(i)
        _time_full_collection(seen)
        seen.creates = sum(pick < 0 for pick in plan)
        seen.updates = calls - seen.creates
        return max(latencies) / 1e6


async def asyncio_worst_call(
    sessions: int, calls: int, create_every: int, seen: WorstCall
) -> float:
    """The same through today's ``atomic_update`` on asyncio."""
    plan = _worst_call_plan(sessions, calls, create_every)
    async with open_asyncio_lock_manager(max_sessions=sessions + calls) as manager:
        ids = SessionIds()
        for _ in range(sessions):
            ids.append((await manager.create_session())[0].session_id)
        for i in range(sessions):
            await manager.atomic_update(ids[i], bump_in_place)
        seen.tracked_per_session = len(gc.get_objects()) / sessions
        latencies, cpu = seen.latencies_ns, seen.cpu_ns
        clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
        full, collections = seen.with_full_collection, seen.collections
        with GcClock(seen):
            for i, pick in enumerate(plan):
                fulls = collections[2]
                start, start_cpu = clock(), cpu_clock()
                if pick < 0:
                    await manager.create_session()
                else:
                    await manager.atomic_update(ids[pick], bump_in_place)
                latencies.append(clock() - start)
                cpu.append(cpu_clock() - start_cpu)
                if collections[2] != fulls:
                    full.append(i)
        _time_full_collection(seen)
        seen.creates = sum(pick < 0 for pick in plan)
        seen.updates = calls - seen.creates
        return max(latencies) / 1e6
