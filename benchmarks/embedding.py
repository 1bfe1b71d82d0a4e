"""The cost of calling triact from asyncio (``triact.aio``, Trio in guest mode)
against the same call from Trio.

Each figure runs the same workload twice, alternately in the same process: from
asyncio tasks through ``triact.aio.open_session_manager``, and from Trio tasks
through ``triact.open_session_manager`` (the baseline). ``ratio`` is asyncio over
Trio: for latencies, how many times slower a call from asyncio is; for
throughputs, the fraction of Trio's rate that asyncio reaches.

- ``aio_update_round_trip``: microseconds per ``session.update(fn)`` (a plain
  function) from one task, one call at a time.
- ``aio_snapshot_round_trip``: the same for ``session.snapshot()``.
- ``aio_concurrent_updates``: updates per second from many tasks over a few
  sessions at once.

    python benchmarks/embedding.py [--runs N] [--quick]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import attrs
import trio
from _common import Options, emit, figure, measure_pair, parse_options

import triact
import triact.aio

BASELINE = "the same calls from Trio (triact.open_session_manager)"


@attrs.frozen
class Sizes:
    round_trips: int
    tasks: int
    sessions: int
    updates_per_task: int


FULL = Sizes(round_trips=20_000, tasks=100, sessions=10, updates_per_task=100)
QUICK = Sizes(round_trips=500, tasks=20, sessions=4, updates_per_task=10)


def bump(state: triact.SessionState) -> triact.SessionState:
    return attrs.evolve(state, data={**state.data, "n": state.data.get("n", 0) + 1})


class AnySession(Protocol):
    """What the workloads use, in both ``triact.Session`` and ``triact.aio.Session``."""

    def update(self, fn: Callable[[triact.SessionState], Any]) -> Awaitable[triact.SessionState]:
        """Apply ``fn`` and commit."""

    def snapshot(self) -> Awaitable[triact.SessionState]:
        """The current state."""


# The workloads are written once for both sides: ``gather`` runs coroutines
# concurrently (asyncio.gather, or a Trio nursery), ``clock`` reads a monotonic clock.
Gather = Callable[[list[Awaitable[None]]], Awaitable[None]]


async def round_trip(session: AnySession, n: int, read: bool) -> float:
    """Microseconds per call, one call at a time."""
    call = session.snapshot if read else (lambda: session.update(bump))
    for _ in range(n // 10):  # warm-up
        await call()
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def concurrent(sessions: list[AnySession], sizes: Sizes, gather: Gather) -> float:
    """Updates per second from ``sizes.tasks`` tasks at once."""

    async def client(i: int) -> None:
        for j in range(sizes.updates_per_task):
            await sessions[(i + j) % len(sessions)].update(bump)

    start = time.perf_counter()
    await gather([client(i) for i in range(sizes.tasks)])
    elapsed = time.perf_counter() - start
    states = [await session.snapshot() for session in sessions]
    calls = sizes.tasks * sizes.updates_per_task
    assert sum(state.data["n"] for state in states) == calls, "an update was lost"
    return calls / elapsed


Workload = Callable[[list[AnySession], Gather], Awaitable[float]]


def from_asyncio(workload: Workload, sessions: int) -> Callable[[], float]:
    async def main() -> float:
        async with triact.aio.open_session_manager() as manager:
            handles: list[AnySession] = [await manager.create_session() for _ in range(sessions)]

            async def gather(calls: list[Awaitable[None]]) -> None:
                await asyncio.gather(*calls)

            return await workload(handles, gather)

    def run() -> float:
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            return runner.run(main())

    return run


def from_trio(workload: Workload, sessions: int) -> Callable[[], float]:
    async def main() -> float:
        async with triact.open_session_manager() as manager:
            handles: list[AnySession] = [await manager.create_session() for _ in range(sessions)]

            async def gather(calls: list[Awaitable[None]]) -> None:
                async def run_one(call: Awaitable[None]) -> None:
                    await call

                async with trio.open_nursery() as nursery:
                    for call in calls:
                        nursery.start_soon(run_one, call)

            return await workload(handles, gather)

    return lambda: trio.run(main)


def figures(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    for bench, read in [("aio_update_round_trip", False), ("aio_snapshot_round_trip", True)]:

        async def one_at_a_time(
            sessions: list[AnySession], gather: Gather, read: bool = read
        ) -> float:
            return await round_trip(sessions[0], sizes.round_trips, read)

        runs, baseline_runs = measure_pair(
            options.runs, from_asyncio(one_at_a_time, 1), from_trio(one_at_a_time, 1)
        )
        yield figure(
            bench,
            "us/call",
            runs,
            baseline=BASELINE,
            baseline_runs=baseline_runs,
            calls=sizes.round_trips,
        )

    async def many_at_once(sessions: list[AnySession], gather: Gather) -> float:
        return await concurrent(sessions, sizes, gather)

    runs, baseline_runs = measure_pair(
        options.runs,
        from_asyncio(many_at_once, sizes.sessions),
        from_trio(many_at_once, sizes.sessions),
    )
    yield figure(
        "aio_concurrent_updates",
        "calls/s",
        runs,
        baseline=BASELINE,
        baseline_runs=baseline_runs,
        tasks=sizes.tasks,
        sessions=sizes.sessions,
        updates_per_task=sizes.updates_per_task,
    )


def main(argv: list[str] | None = None) -> None:
    options = parse_options("triact.aio against Trio: the cost of a call; prints JSON lines.", argv)
    for line in figures(options, QUICK if options.quick else FULL):
        emit(line)


if __name__ == "__main__":
    main()
