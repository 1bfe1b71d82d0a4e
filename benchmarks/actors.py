"""Benchmarks of the actor runtime, each beside a hand-rolled Trio baseline.

The baseline is what one writes without triact: one task per "actor", reading
``(message, reply)`` requests from a memory channel bounded like a mailbox, and
answering through a ``trio.Event`` and a slot. The async handler figures are also
measured against the same design on asyncio (``baselines/asyncio_actor.py``: an
``asyncio.Queue`` in, a future out). Both sides are measured alternately in the same
process; see ``docs/performance.md``.

    python benchmarks/actors.py [--runs N] [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import attrs
import trio
import trio.testing
from _common import Options, Target, emit, figure, measure, measure_pair, parse_options
from baselines.asyncio_actor import AsyncioActor

from triact.actors import DEFAULT_SCHEDULE_SLICE, Actor, ActorRef, open_supervisor

MAILBOX = 256  # the default mailbox_size; the baseline's channels are bounded alike
IDLE_TIMEOUT = 3600.0  # long enough never to fire during a run
# The memory figures let what they started settle every this many actors: Trio's
# task sets keep the size of their peak, which would otherwise add a transient
# "100,000 tasks at once" to every actor's bytes.
SETTLE_EVERY = 1024


@attrs.frozen
class Sizes:
    round_trips: int
    actors: int  # for the memory and spawn figures
    # The baseline's memory and spawn figures use fewer tasks: 100,000 Trio tasks
    # take minutes to trace and tear down, and the baseline is no cheaper per task
    # at 100,000 than at 10,000 (slower, if anything), so the ratio stays fair.
    baseline_actors: int
    fanin_actors: int
    fanin_askers: int
    asks_per_asker: int


FULL = Sizes(
    round_trips=100_000,
    actors=100_000,
    baseline_actors=10_000,
    fanin_actors=1_000,
    fanin_askers=10_000,
    asks_per_asker=10,
)
QUICK = Sizes(
    round_trips=5_000,
    actors=5_000,
    baseline_actors=1_000,
    fanin_actors=100,
    fanin_askers=1_000,
    asks_per_asker=10,
)


# -- the actors --------------------------------------------------------------------


class Increment(Actor[int, int]):
    __slots__ = ()

    def receive(self, message: int) -> int:
        return message + 1


class AsyncIncrement(Actor[int, int]):
    """Waits once per message (a checkpoint), as a handler doing I/O does."""

    __slots__ = ()

    async def receive(self, message: int) -> int:
        await trio.lowlevel.checkpoint()
        return message + 1


class Tally(Actor[int, int]):
    """Counts the messages it handled, to check that none was lost."""

    __slots__ = ("handled",)

    def __init__(self) -> None:
        self.handled = 0


class SyncTally(Tally):
    __slots__ = ()

    def receive(self, message: int) -> int:
        self.handled += 1
        return message + 1


class AsyncTally(Tally):
    """Waits once per message (a checkpoint), so that askers queue behind each other."""

    __slots__ = ()

    async def receive(self, message: int) -> int:
        await trio.lowlevel.checkpoint()
        self.handled += 1
        return message + 1


# -- the baseline ------------------------------------------------------------------


class Reply:
    """A one-shot reply: the baseline's future."""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value = 0


class ChannelServer:
    """The hand-rolled actor: a task serving requests from a memory channel."""

    __slots__ = ("_idle_timeout", "_receive", "_send", "_wait", "handled")

    def __init__(self, *, wait: bool = False, idle_timeout: float | None = None) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[int, Reply | None]](MAILBOX)
        self._wait = wait
        self._idle_timeout = idle_timeout
        self.handled = 0

    async def ask(self, message: int) -> int:
        reply = Reply()
        await self._send.send((message, reply))
        await reply.event.wait()
        return reply.value

    def tell(self, message: int) -> None:
        self._send.send_nowait((message, None))

    async def serve(self) -> None:
        if self._idle_timeout is None:
            async for message, reply in self._receive:
                await self._answer(message, reply)
            return
        while True:
            with trio.move_on_after(self._idle_timeout):
                message, reply = await self._receive.receive()
                await self._answer(message, reply)
                continue
            return  # idle for too long

    async def _answer(self, message: int, reply: Reply | None) -> None:
        if self._wait:
            await trio.lowlevel.checkpoint()
        self.handled += 1
        if reply is not None:
            reply.value = message + 1
            reply.event.set()


# -- 1. ask round trip -------------------------------------------------------------


async def triact_round_trip(n: int, schedule_slice: float = DEFAULT_SCHEDULE_SLICE) -> float:
    """Nanoseconds per ``ask`` to an idle actor."""
    async with open_supervisor(schedule_slice=schedule_slice) as sup:
        ref = sup.spawn(Increment)
        for i in range(n // 10):  # warm-up
            await ref.ask(i)
        start = time.perf_counter_ns()
        for i in range(n):
            await ref.ask(i)
        return (time.perf_counter_ns() - start) / n


async def baseline_round_trip(n: int) -> float:
    async with trio.open_nursery() as nursery:
        server = ChannelServer()
        nursery.start_soon(server.serve)
        for i in range(n // 10):
            await server.ask(i)
        start = time.perf_counter_ns()
        for i in range(n):
            await server.ask(i)
        elapsed = time.perf_counter_ns() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


async def triact_async_round_trip(n: int, cpu: list[float]) -> float:
    """Nanoseconds per ``ask`` of a handler that awaits once, one asker; appends the
    CPU µs per ask to ``cpu``."""
    async with open_supervisor() as sup:
        ref = sup.spawn(AsyncIncrement)
        for i in range(n // 10):  # warm-up
            await ref.ask(i)
        start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
        for i in range(n):
            await ref.ask(i)
        cpu.append((time.thread_time_ns() - cpu_start) / n / 1e3)
        return (time.perf_counter_ns() - start) / n


async def _asyncio_increment(message: int) -> int:
    await asyncio.sleep(0)
    return message + 1


async def asyncio_async_round_trip(n: int, cpu: list[float]) -> float:
    """The same through an asyncio actor (a task, an ``asyncio.Queue``, a future)."""
    actor = AsyncioActor(_asyncio_increment)
    for i in range(n // 10):
        await actor.ask(i)
    start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
    for i in range(n):
        await actor.ask(i)
    elapsed = time.perf_counter_ns() - start
    cpu.append((time.thread_time_ns() - cpu_start) / n / 1e3)
    await actor.stop()
    return elapsed / n


# -- 2. memory per idle actor ------------------------------------------------------


class Idle(Actor[int, int]):
    __slots__ = ()

    def receive(self, message: int) -> int:
        return message


@contextmanager
def tracing() -> Iterator[Callable[[], int]]:
    """Trace allocations inside the block; the callable returns how many bytes
    allocated since the block began are still alive."""
    gc.collect()
    # Automatic collections would only slow tracing down: the callable collects
    # before it counts.
    gc.disable()
    tracemalloc.start()
    try:
        yield _still_allocated
    finally:
        tracemalloc.stop()
        gc.enable()


def _still_allocated() -> int:
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    return current


def user_object_bytes(n: int) -> float:
    """What one of the user's own ``Idle`` instances costs (to subtract)."""
    instances: list[Idle | None] = [None] * n
    with tracing() as allocated:
        for i in range(n):
            instances[i] = Idle()
        return allocated() / n


FirstMessage = Literal["ask", "tell"] | None


async def triact_memory(n: int, *, first: FirstMessage, idle_timeout: float | None) -> float:
    """Bytes per idle actor, the user's ``Idle`` instance included, once each actor
    has handled its ``first`` message (if any)."""
    async with open_supervisor() as sup:
        with tracing() as allocated:
            for i in range(n):
                ref = sup.spawn(Idle, idle_timeout=idle_timeout)
                if first == "ask":
                    await ref.ask(0)
                elif first == "tell":
                    ref.tell(0)
                if i % SETTLE_EVERY == 0:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()  # every told message handled
            return allocated() / n


async def baseline_memory(n: int, *, first: FirstMessage, idle_timeout: float | None) -> float:
    """Bytes per idle server task, its channel and its server object."""
    async with trio.open_nursery() as nursery:
        with tracing() as allocated:
            for i in range(n):
                server = ChannelServer(idle_timeout=idle_timeout)
                nursery.start_soon(server.serve)
                if first == "ask":
                    await server.ask(0)
                elif first == "tell":
                    server.tell(0)
                if i % SETTLE_EVERY == 0:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()  # every server parked in receive
            per_server = allocated() / n
        nursery.cancel_scope.cancel()
    return per_server


# -- 3. spawn rate -----------------------------------------------------------------


async def triact_spawn(n: int) -> float:
    """Actors spawned per second."""
    async with open_supervisor() as sup:
        start = time.perf_counter_ns()
        for _ in range(n):
            sup.spawn(Idle)
        await trio.testing.wait_all_tasks_blocked()  # as the baseline does; nothing to wait for
        elapsed = time.perf_counter_ns() - start
    return n / elapsed * 1e9


async def baseline_spawn(n: int) -> float:
    """Server tasks started (and parked in ``receive``) per second."""
    async with trio.open_nursery() as nursery:
        start = time.perf_counter_ns()
        for _ in range(n):
            nursery.start_soon(ChannelServer().serve)
        await trio.testing.wait_all_tasks_blocked()
        elapsed = time.perf_counter_ns() - start
        nursery.cancel_scope.cancel()
    return n / elapsed * 1e9


# -- 4. many askers, many actors ---------------------------------------------------


@attrs.frozen
class FanIn:
    """Who asks whom: ``picks[a]`` lists the actors asker ``a`` asks, in order."""

    actors: int
    picks: list[list[int]]

    @property
    def asks(self) -> int:
        return sum(len(picks) for picks in self.picks)

    def lost(self, correct_replies: int, handled: list[int]) -> int:
        """Asks without a correct reply, plus any actor's shortfall or excess of
        handled messages against the asks addressed to it."""
        addressed = [0] * self.actors
        for picks in self.picks:
            for i in picks:
                addressed[i] += 1
        miscounted = sum(abs(a - h) for a, h in zip(addressed, handled, strict=True))
        return self.asks - correct_replies + miscounted


def plan_fanin(sizes: Sizes, seed: int = 0) -> FanIn:
    rng = random.Random(seed)
    picks = [
        [rng.randrange(sizes.fanin_actors) for _ in range(sizes.asks_per_asker)]
        for _ in range(sizes.fanin_askers)
    ]
    return FanIn(sizes.fanin_actors, picks)


async def ask_all(
    plan: FanIn, ask: Callable[[int, int], Awaitable[int]], cpu: list[float] | None = None
) -> tuple[int, float]:
    """Run every asker at once; return the correct replies and asks per second (and
    append the CPU µs per ask to ``cpu``)."""
    correct = 0

    async def asker(picks: list[int]) -> None:
        nonlocal correct
        for i in picks:
            if await ask(i, i) == i + 1:
                correct += 1

    start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
    async with trio.open_nursery() as nursery:
        for picks in plan.picks:
            nursery.start_soon(asker, picks)
    elapsed = time.perf_counter_ns() - start
    if cpu is not None:
        cpu.append((time.thread_time_ns() - cpu_start) / plan.asks / 1e3)
    return correct, plan.asks / elapsed * 1e9


async def triact_fanin(
    plan: FanIn,
    actor_class: type[Tally],
    lost: list[int],
    schedule_slice: float = DEFAULT_SCHEDULE_SLICE,
    cpu: list[float] | None = None,
) -> float:
    """Asks per second; appends what was lost to ``lost`` (and the CPU µs per ask to
    ``cpu``)."""
    instances: list[Tally] = []

    def factory() -> Tally:
        actor = actor_class()
        instances.append(actor)
        return actor

    async with open_supervisor(schedule_slice=schedule_slice) as sup:
        refs: list[ActorRef[int, int]] = [sup.spawn(factory) for _ in range(plan.actors)]
        correct, rate = await ask_all(plan, lambda i, message: refs[i].ask(message), cpu)
    lost.append(plan.lost(correct, [actor.handled for actor in instances]))
    return rate


async def baseline_fanin(plan: FanIn, *, wait: bool) -> float:
    servers = [ChannelServer(wait=wait) for _ in range(plan.actors)]
    async with trio.open_nursery() as nursery:
        for server in servers:
            nursery.start_soon(server.serve)
        await trio.testing.wait_all_tasks_blocked()  # started before the clock, as spawned actors
        _, rate = await ask_all(plan, lambda i, message: servers[i].ask(message))
        nursery.cancel_scope.cancel()
    return rate


class AsyncioTally:
    """An asyncio actor that counts what it handled, awaiting once per message."""

    __slots__ = ("actor", "handled")

    def __init__(self) -> None:
        self.handled = 0
        self.actor = AsyncioActor(self._handle)

    async def _handle(self, message: int) -> int:
        await asyncio.sleep(0)
        self.handled += 1
        return message + 1


async def asyncio_fanin(plan: FanIn, lost: list[int], cpu: list[float]) -> float:
    """The async fan-in through asyncio actors; appends what was lost to ``lost`` and
    the CPU µs per ask to ``cpu``."""
    tallies = [AsyncioTally() for _ in range(plan.actors)]
    await asyncio.sleep(0)  # every actor task parked in get(), as spawned actors are
    correct = 0

    async def asker(picks: list[int]) -> None:
        nonlocal correct
        for i in picks:
            if await tallies[i].actor.ask(i) == i + 1:
                correct += 1

    start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
    async with asyncio.TaskGroup() as group:
        for picks in plan.picks:
            group.create_task(asker(picks))
    elapsed = time.perf_counter_ns() - start
    cpu.append((time.thread_time_ns() - cpu_start) / plan.asks / 1e3)
    for tally in tallies:
        await tally.actor.stop()
    lost.append(plan.lost(correct, [tally.handled for tally in tallies]))
    return plan.asks / elapsed * 1e9


# -- the figures -------------------------------------------------------------------

BASELINE = "one trio task per actor: memory channel in, trio.Event and a slot out"
ASYNCIO_BASELINE = "one asyncio task per actor: asyncio.Queue in, a future out"


def run(fn: Callable[..., Awaitable[float]], *args: Any, **kwargs: Any) -> Callable[[], float]:
    """A run of ``fn`` in a fresh event loop, as :func:`measure` wants it."""
    return lambda: trio.run(partial(fn, *args, **kwargs))


def run_asyncio(
    fn: Callable[..., Awaitable[float]], *args: Any, **kwargs: Any
) -> Callable[[], float]:
    """The same for an asyncio baseline."""
    return lambda: asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]


def round_trip(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    n = sizes.round_trips
    # By default an ask within the schedule slice costs no task switch; with
    # schedule_slice=0 each ask is a schedule point, as Trio's strictest reading wants.
    for bench, schedule_slice in [
        ("ask_round_trip", DEFAULT_SCHEDULE_SLICE),
        ("ask_round_trip_every_ask_yields", 0.0),
    ]:
        runs, baseline_runs = measure_pair(
            options.runs,
            run(triact_round_trip, n, schedule_slice),
            run(baseline_round_trip, n),
        )
        yield figure(
            bench,
            "ns/op",
            runs,
            baseline=BASELINE,
            baseline_runs=baseline_runs,
            target=Target("ratio", "<=", 1.0),
            n=n,
            schedule_slice=schedule_slice,
        )


def cpu_figures(cpu: list[float], baseline_cpu: list[float]) -> dict[str, Any]:
    """The CPU time per ask of both sides (medians; what a loaded machine blurs
    least), and ``cpu_ratio`` = baseline / triact (above 1: triact is the cheaper)."""
    mine, theirs = statistics.median(cpu), statistics.median(baseline_cpu)
    return {
        "cpu_us_per_ask": round(mine, 3),
        "baseline_cpu_us_per_ask": round(theirs, 3),
        "cpu_ratio": round(theirs / mine, 3),
    }


def async_round_trip(options: Options, sizes: Sizes) -> dict[str, Any]:
    n = sizes.round_trips // 4  # each ask is a few task switches
    cpu: list[float] = []
    baseline_cpu: list[float] = []
    runs, baseline_runs = measure_pair(
        options.runs,
        run(triact_async_round_trip, n, cpu),
        run_asyncio(asyncio_async_round_trip, n, baseline_cpu),
    )
    return figure(
        "ask_round_trip_async_handler",
        "ns/op",
        runs,
        baseline=ASYNCIO_BASELINE,
        baseline_runs=baseline_runs,
        target=Target("ratio", "<=", 2.0),  # at least half the asyncio actor's rate
        n=n,
        **cpu_figures(cpu, baseline_cpu),
    )


def memory(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    n, baseline_n = sizes.actors, sizes.baseline_actors
    user = statistics.median(measure(options.runs, lambda: user_object_bytes(n)))
    variants: list[tuple[str, FirstMessage, float | None]] = [
        ("memory_per_idle_actor", None, None),
        ("memory_per_idle_actor_after_one_ask", "ask", None),
        ("memory_per_idle_actor_after_one_tell", "tell", None),
        ("memory_per_idle_actor_with_idle_timeout", None, IDLE_TIMEOUT),
    ]
    for bench, first, idle_timeout in variants:
        runs, baseline_runs = measure_pair(
            options.runs,
            run(triact_memory, n, first=first, idle_timeout=idle_timeout),
            run(baseline_memory, baseline_n, first=first, idle_timeout=idle_timeout),
        )
        yield figure(
            bench,
            "B/actor",
            [total - user for total in runs],
            baseline=BASELINE,
            baseline_runs=baseline_runs,
            target=Target("median", "<=", 1024),
            n=n,
            baseline_n=baseline_n,
            user_object_bytes=round(user, 1),
        )


def spawn_rate(options: Options, sizes: Sizes) -> dict[str, Any]:
    n, baseline_n = sizes.actors, sizes.baseline_actors
    runs, baseline_runs = measure_pair(
        options.runs, run(triact_spawn, n), run(baseline_spawn, baseline_n)
    )
    return figure(
        "spawn_rate",
        "actors/s",
        runs,
        baseline=BASELINE,
        baseline_runs=baseline_runs,
        target=Target("median", ">=", 100_000),
        n=n,
        baseline_n=baseline_n,
    )


def fanin(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    plan = plan_fanin(sizes)
    for bench, actor_class, wait, schedule_slice in [
        ("fanin_sync_handler", SyncTally, False, DEFAULT_SCHEDULE_SLICE),
        ("fanin_sync_handler_every_ask_yields", SyncTally, False, 0.0),
        ("fanin_async_handler", AsyncTally, True, DEFAULT_SCHEDULE_SLICE),
    ]:
        lost: list[int] = []
        runs, baseline_runs = measure_pair(
            options.runs,
            run(triact_fanin, plan, actor_class, lost, schedule_slice),
            run(baseline_fanin, plan, wait=wait),
        )
        yield figure(
            bench,
            "asks/s",
            runs,
            baseline=BASELINE,
            baseline_runs=baseline_runs,
            target=Target("lost", "==", 0),
            actors=sizes.fanin_actors,
            askers=sizes.fanin_askers,
            asks_per_asker=sizes.asks_per_asker,
            schedule_slice=schedule_slice,
            lost=sum(lost),
        )


def fanin_vs_asyncio(options: Options, sizes: Sizes) -> dict[str, Any]:
    plan = plan_fanin(sizes)
    lost: list[int] = []
    baseline_lost: list[int] = []
    cpu: list[float] = []
    baseline_cpu: list[float] = []
    runs, baseline_runs = measure_pair(
        options.runs,
        run(triact_fanin, plan, AsyncTally, lost, cpu=cpu),
        run_asyncio(asyncio_fanin, plan, baseline_lost, baseline_cpu),
    )
    line = figure(
        "fanin_async_handler_vs_asyncio_actor",
        "asks/s",
        runs,
        baseline=ASYNCIO_BASELINE,
        baseline_runs=baseline_runs,
        target=Target("ratio", ">=", 0.5),
        actors=sizes.fanin_actors,
        askers=sizes.fanin_askers,
        asks_per_asker=sizes.asks_per_asker,
        lost=sum(lost),
        baseline_lost=sum(baseline_lost),
        **cpu_figures(cpu, baseline_cpu),
        load=round(os.getloadavg()[0], 2),
    )
    line["ok"] = line["ok"] and not sum(lost) and not sum(baseline_lost)
    return line


def main(argv: list[str] | None = None) -> None:
    options = parse_options("Benchmarks of triact.actors; prints JSON lines.", argv)
    sizes = QUICK if options.quick else FULL
    for line in round_trip(options, sizes):
        emit(line)
    emit(async_round_trip(options, sizes))
    for line in memory(options, sizes):
        emit(line)
    emit(spawn_rate(options, sizes))
    for line in fanin(options, sizes):
        emit(line)
    emit(fanin_vs_asyncio(options, sizes))


if __name__ == "__main__":
    main()
