"""Benchmarks of triact.sessions, each beside the session layer our users run today.

The baselines, in ``benchmarks/baselines/``, rebuild that layer: a dict of sessions
behind a global lock, one lock per session, a versioned ``atomic_update``, PBKDF2
token hashing on the event loop, and (durable) one SQLite write per update. Each
figure measures triact and its baseline alternately in the same process, over
fresh event loops, and checks afterwards that no update was lost on either side.

    python benchmarks/sessions.py [--runs N] [--quick] [--only NAME]

``--only shared`` measures several processes on one SQLite file against one process
on the same file instead (``benchmarks/shared_sqlite.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import statistics
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, Literal

import attrs
import trio
import trio.testing
from _common import Options, Target, emit, figure, measure, measure_pair, parse_options
from _session_workloads import (
    Expiry,
    Plan,
    WorstCall,
    asyncio_actor_updates,
    asyncio_create,
    asyncio_memory,
    asyncio_updates,
    asyncio_validate,
    asyncio_worst_call,
    bump,
    bump_after_checkpoint,
    bump_copy,
    bump_copy_after_sleep,
    bump_in_place,
    bump_in_place_after_checkpoint,
    bump_in_place_after_sleep,
    copy_updates,
    plan_updates,
    triact_create,
    triact_expiry_at_once,
    triact_expiry_real_clock,
    triact_memory,
    triact_updates,
    triact_validate,
    triact_worst_call,
    trio_lock_updates,
)
from baselines._model import PBKDF2_ITERATIONS
from shared_sqlite import figures as shared_figures

from triact import SqliteStore


@attrs.frozen
class Sizes:
    callers: int
    sessions: int
    updates_per_caller: int
    sequential_updates: int
    durable_callers: int
    durable_sessions: int
    durable_updates_per_caller: int
    creates: int
    baseline_bound_creates: int  # each one is a PBKDF2 hash
    validates: int
    baseline_validates: int  # likewise
    idle_sessions: int  # for the memory and expiry figures
    idle_ttl: float  # for the real-clock expiry figure
    worst_call_sessions: tuple[int, ...]  # touched sessions of each worst-call figure
    worst_call_calls: int  # timed calls of each


FULL = Sizes(
    callers=10_000,
    sessions=1_000,
    updates_per_caller=10,
    sequential_updates=50_000,
    durable_callers=100,
    durable_sessions=100,
    durable_updates_per_caller=20,
    creates=50_000,
    baseline_bound_creates=30,
    validates=20_000,
    baseline_validates=30,
    idle_sessions=100_000,
    idle_ttl=2.0,
    worst_call_sessions=(10_000, 100_000, 1_000_000),
    worst_call_calls=200_000,
)
QUICK = Sizes(
    callers=1_000,
    sessions=100,
    updates_per_caller=5,
    sequential_updates=2_000,
    durable_callers=20,
    durable_sessions=20,
    durable_updates_per_caller=5,
    creates=2_000,
    baseline_bound_creates=3,
    validates=1_000,
    baseline_validates=3,
    idle_sessions=1_000,
    idle_ttl=0.5,
    worst_call_sessions=(2_000,),
    worst_call_calls=4_000,
)

SAME_GUARANTEES = (
    "the same guarantees on asyncio: dict of sessions, asyncio.Lock per session, the update "
    "on a private copy of the data (atomic on exception and cancellation), version + 1, "
    "a read-only view returned"
)
TODAY = "today's layer on asyncio: dict + global asyncio.Lock + asyncio.Lock per session"
TODAY_ON_TRIO = "today's layer on Trio: dict + global trio.Lock + trio.Lock per session"
ASYNCIO_ACTOR = "an asyncio actor per session: one task, an asyncio.Queue in, a future out"
TODAY_DURABLE = TODAY + " + one SQLite write (WAL, synchronous=FULL) per update"


# -- the figures -------------------------------------------------------------------


def on_trio(fn: Callable[..., Awaitable[float]], *args: Any, **kwargs: Any) -> Callable[[], float]:
    return lambda: trio.run(partial(fn, *args, **kwargs))


def on_asyncio(
    fn: Callable[..., Awaitable[float]], *args: Any, **kwargs: Any
) -> Callable[[], float]:
    return lambda: asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]


def measure_alternately(runs: int, *fns: Callable[[], float]) -> list[list[float]]:
    """Measure each of ``fns`` ``runs`` times, in turn, so that noise weighs on all."""
    results: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, results, strict=True):
            out.extend(measure(1, fn))
    return results


def checked(line: dict[str, Any], *lost: int) -> dict[str, Any]:
    """``line``, not ok if any side lost an update, whatever its target says."""
    line["ok"] = line["ok"] and not any(lost)
    return line


def updates(options: Options, sizes: Sizes, *, awaiting: bool) -> Iterator[dict[str, Any]]:
    """In-memory updates from ``sizes.callers`` concurrent callers: against the fair
    baseline (the same guarantees on asyncio) first, then beside today's lock-based
    layer on asyncio and on Trio (which mutate in place: cheaper, and not atomic) and
    an asyncio actor per session."""
    plan = plan_updates(sizes.callers, sizes.sessions, sizes.updates_per_caller)
    yield from _update_figures(
        options,
        plan,
        "update_awaiting" if awaiting else "update",
        awaiting=awaiting,
        callers=sizes.callers,
        sessions=sizes.sessions,
        updates_per_caller=sizes.updates_per_caller,
        awaits_inside=int(awaiting),
    )


def sequential(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    """One caller updating one session in a loop: the per-call cost, no contention."""
    n = sizes.sequential_updates
    yield from _update_figures(
        options, plan_updates(1, 1, n), "update_sequential", awaiting=False, updates=n
    )


def _update_figures(
    options: Options, plan: Plan, bench: str, *, awaiting: bool, **params: Any
) -> Iterator[dict[str, Any]]:
    lost: list[list[int]] = [[], [], [], [], []]
    cpu: list[list[tuple[float, float]]] = [[], [], [], [], []]
    fns = (
        (
            bump_after_checkpoint,
            bump_copy_after_sleep,
            bump_in_place_after_sleep,
            bump_in_place_after_checkpoint,
        )
        if awaiting
        else (bump, bump_copy, bump_in_place, bump_in_place)
    )
    runs, copy_runs, asyncio_runs, trio_runs, actor_runs = measure_alternately(
        options.runs,
        on_trio(triact_updates, plan, fns[0], lost[0], loop_cpu=cpu[0]),
        on_asyncio(copy_updates, plan, fns[1], lost[1], loop_cpu=cpu[1]),
        on_asyncio(asyncio_updates, plan, fns[2], lost[2], loop_cpu=cpu[2]),
        on_trio(trio_lock_updates, plan, fns[3], lost[3], loop_cpu=cpu[3]),
        on_asyncio(asyncio_actor_updates, plan, fns[2], lost[4], loop_cpu=cpu[4]),
    )
    cpu_us = statistics.median(loop for loop, _ in cpu[0])
    for suffix, baseline, baseline_runs, i, target in [
        ("", SAME_GUARANTEES, copy_runs, 1, None if awaiting else Target("cpu_ratio", ">=", 1.0)),
        ("_vs_dict_lock", TODAY, asyncio_runs, 2, None),
        ("_vs_trio_lock", TODAY_ON_TRIO, trio_runs, 3, None),
        (
            "_vs_asyncio_actor",
            ASYNCIO_ACTOR,
            actor_runs,
            4,
            Target("ratio", ">=", 0.5) if awaiting else None,
        ),
    ]:
        baseline_cpu_us = statistics.median(loop for loop, _ in cpu[i])
        line = figure(
            bench + suffix,
            "updates/s",
            runs,
            baseline=baseline,
            baseline_runs=baseline_runs,
            # The event loop's CPU time (what a noisy neighbour does not inflate);
            # cpu_ratio > 1: triact is the cheaper.
            cpu_us_per_update=round(cpu_us, 3),
            baseline_cpu_us_per_update=round(baseline_cpu_us, 3),
            cpu_ratio=round(baseline_cpu_us / cpu_us, 3),
            load=round(os.getloadavg()[0], 2),
            **params,
            lost=sum(lost[0]),
            baseline_lost=sum(lost[i]),
        )
        if target is not None:  # figure() checked the line before cpu_ratio was in it
            line["target"], line["ok"] = str(target), target.met(line)
        yield checked(line, sum(lost[0]), sum(lost[i]))


def durable(
    options: Options, sizes: Sizes, *, synchronous: Literal["FULL", "NORMAL"] = "FULL"
) -> dict[str, Any]:
    plan = plan_updates(
        sizes.durable_callers, sizes.durable_sessions, sizes.durable_updates_per_caller
    )
    lost: list[int] = []
    baseline_lost: list[int] = []
    stores: list[SqliteStore] = []
    batches: list[tuple[int, int]] = []  # (transactions, writes) of the timed updates
    cpu: list[tuple[float, float]] = []  # (event loop, store thread) µs per timed update
    baseline_cpu: list[tuple[float, float]] = []

    def triact_run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            stores.append(SqliteStore(os.path.join(tmp, "sessions.db"), synchronous=synchronous))
            return trio.run(triact_updates, plan, bump, lost, stores[-1], batches, cpu)

    def baseline_run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sessions.db")
            return asyncio.run(
                asyncio_updates(plan, bump_in_place, baseline_lost, path, synchronous, baseline_cpu)
            )

    runs, baseline_runs = measure_pair(options.runs, triact_run, baseline_run)
    line = figure(
        "durable_update" if synchronous == "FULL" else "durable_update_sync_normal",
        "updates/s",
        runs,
        baseline=TODAY_DURABLE.replace("FULL", synchronous),
        baseline_runs=baseline_runs,
        # The target is for the default durability (FULL); with NORMAL,
        # commits are not waited for on disk, so the figure shows CPU cost alone.
        target=Target("ratio", ">=", 5) if synchronous == "FULL" else None,
        store=f"SqliteStore(synchronous={synchronous})",
        callers=sizes.durable_callers,
        sessions=sizes.durable_sessions,
        updates_per_caller=sizes.durable_updates_per_caller,
        baseline_ms_per_update=round(1e3 / statistics.median(baseline_runs), 3),
        # Over the whole run, the sessions' creation included (each create is a
        # transaction of its own), and over the timed updates only.
        writes_per_transaction=round(
            sum(s.writes for s in stores) / max(1, sum(s.transactions for s in stores)), 2
        ),
        timed_writes_per_transaction=round(
            sum(w for _, w in batches) / max(1, sum(t for t, _ in batches)), 2
        ),
        # CPU time per timed update (medians over the runs): the event loop's
        # (thread_time), and the store's thread's (the rest of the process's). The
        # baseline writes on its event loop, so its loop figure includes its writes.
        loop_cpu_us_per_update=round(statistics.median(c for c, _ in cpu), 2),
        store_thread_cpu_us_per_update=round(statistics.median(t for _, t in cpu), 2),
        baseline_loop_cpu_us_per_update=round(statistics.median(c for c, _ in baseline_cpu), 2),
        load=round(os.getloadavg()[0], 2),
        lost=sum(lost),
        baseline_lost=sum(baseline_lost),
    )
    return checked(line, sum(lost), sum(baseline_lost))


def create(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    n = sizes.creates
    runs, baseline_runs = measure_pair(
        options.runs,
        on_trio(triact_create, n, bind_client=False),
        on_asyncio(asyncio_create, n, bind_client=False),
    )
    yield figure(
        "create_session",
        "sessions/s",
        runs,
        baseline=TODAY,
        baseline_runs=baseline_runs,
        target=Target("median", ">=", 30_000),
        n=n,
    )
    nb = sizes.baseline_bound_creates
    runs, baseline_runs = measure_pair(
        options.runs,
        on_trio(triact_create, n, bind_client=True),
        on_asyncio(asyncio_create, nb, bind_client=True),
    )
    yield figure(
        "create_session_bound",
        "sessions/s",
        runs,
        baseline=f"{TODAY}, token hashed with PBKDF2-HMAC-SHA256 x {PBKDF2_ITERATIONS}",
        baseline_runs=baseline_runs,
        target=Target("median", ">=", 30_000),
        n=n,
        baseline_n=nb,
    )


def validate(options: Options, sizes: Sizes) -> dict[str, Any]:
    runs, baseline_runs = measure_pair(
        options.runs,
        on_trio(triact_validate, sizes.validates),
        on_asyncio(asyncio_validate, sizes.baseline_validates),
    )
    return figure(
        "validate_security",
        "us/call",
        runs,
        baseline=f"{TODAY}, token hashed with PBKDF2-HMAC-SHA256 x {PBKDF2_ITERATIONS}",
        baseline_runs=baseline_runs,
        target=Target("median", "<=", 100),
        n=sizes.validates,
        baseline_n=sizes.baseline_validates,
        speedup=round(statistics.median(baseline_runs) / statistics.median(runs)),
    )


def memory(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    n = sizes.idle_sessions
    for calls, bench, target in [
        (0, "memory_per_idle_session", 1536),
        (10, "memory_per_called_idle_session", 1024),
    ]:
        actors_left: list[int] = []
        runs, baseline_runs = measure_pair(
            options.runs,
            # A quick run lets the actors go after 1 s (passivate_after) rather than
            # the memory store's 30 s by default.
            on_trio(triact_memory, n, calls, actors_left, 1.0 if options.quick else None),
            on_asyncio(asyncio_memory, n, calls),
        )
        idle = 1.5 if options.quick else 30.5
        extra = {"idle_s": idle, "actors_left": max(actors_left)} if calls else {}
        yield figure(
            bench,
            "B/session",
            runs,
            baseline=TODAY,
            baseline_runs=baseline_runs,
            target=Target("median", "<=", target),
            n=n,
            updates_per_session=calls,
            **extra,
        )


#: One call in this many creates a session in the worst-call figures; the rest update.
CREATE_EVERY = 100


def _percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _worst_call_line(runs: list[WorstCall]) -> dict[str, Any]:
    """Medians over ``runs`` of the worst call, its p99.99 and the collector's share."""
    worst, p9999, gc_us, gc_max = [], [], [], []
    worst_cpu, p9999_cpu, gc_cpu_us, gc_max_cpu = [], [], [], []
    full, full_cpu = [], []
    # The same calls, less those during which a full collection ran, and those alone.
    worst_without, worst_cpu_without, worst_with, worst_cpu_with = [], [], [], []
    for seen in runs:
        fulls = set(seen.with_full_collection)
        others = [i for i in range(len(seen.latencies_ns)) if i not in fulls]
        worst_without.append(max(seen.latencies_ns[i] for i in others) / 1e6)
        worst_cpu_without.append(max(seen.cpu_ns[i] for i in others) / 1e6)
        if fulls:
            worst_with.append(max(seen.latencies_ns[i] for i in fulls) / 1e6)
            worst_cpu_with.append(max(seen.cpu_ns[i] for i in fulls) / 1e6)
        ordered = sorted(seen.latencies_ns)
        worst.append(ordered[-1] / 1e6)
        p9999.append(_percentile(ordered, 0.9999) / 1e6)
        ordered = sorted(seen.cpu_ns)
        worst_cpu.append(ordered[-1] / 1e6)
        p9999_cpu.append(_percentile(ordered, 0.9999) / 1e6)
        gc_us.append(seen.gc_seconds / seen.updates * 1e6)
        gc_cpu_us.append(seen.gc_cpu_seconds / seen.updates * 1e6)
        gc_max.append(max(seen.longest_collection) * 1e3)
        gc_max_cpu.append(max(seen.longest_collection_cpu) * 1e3)
        full.append(seen.full_collection * 1e3)
        full_cpu.append(seen.full_collection_cpu * 1e3)
    last = runs[-1]
    return {
        "max_ms": worst,
        "p9999_ms": round(statistics.median(p9999), 3),
        # The same in this thread's CPU time: what is left of the figures on a machine
        # whose other work preempts the benchmark.
        "max_cpu_ms": round(statistics.median(worst_cpu), 3),
        "p9999_cpu_ms": round(statistics.median(p9999_cpu), 3),
        "gc_us_per_update": round(statistics.median(gc_us), 3),
        "gc_cpu_us_per_update": round(statistics.median(gc_cpu_us), 3),
        "longest_collection_ms": round(statistics.median(gc_max), 3),
        "longest_collection_cpu_ms": round(statistics.median(gc_max_cpu), 3),
        # gc.collect() after the timed calls: what a full collection, which none of
        # the timed calls may have met, costs with these sessions live.
        "full_collection_ms": round(statistics.median(full), 3),
        "full_collection_cpu_ms": round(statistics.median(full_cpu), 3),
        "collections_per_generation": last.collections,
        # Whether a full collection fell in the timed calls (it depends on where the
        # collector's counters stood when they began), and the worst call without and
        # with one (null: none fell in any run).
        "full_collections_in_window": [seen.collections[2] for seen in runs],
        "max_ms_without_full_collection": round(statistics.median(worst_without), 3),
        "max_cpu_ms_without_full_collection": round(statistics.median(worst_cpu_without), 3),
        "max_ms_with_full_collection": (
            round(statistics.median(worst_with), 3) if worst_with else None
        ),
        "max_cpu_ms_with_full_collection": (
            round(statistics.median(worst_cpu_with), 3) if worst_cpu_with else None
        ),
        "tracked_objects_per_session": round(last.tracked_per_session, 2),
    }


def worst_call(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    """The longest single call, and the collector's time per update, with this many
    touched sessions, under updates mixed with creates (one call in CREATE_EVERY)."""
    calls = sizes.worst_call_calls
    # As `triact serve` does once it serves, and as a host may after its imports: what
    # the start made is frozen out of the collector's sight, before any session is
    # made (so that nothing of the sessions' is hidden). Both layers run so.
    gc.collect()
    gc.freeze()
    try:
        yield from _worst_calls(options, sizes, calls)
    finally:
        gc.unfreeze()


def _worst_calls(options: Options, sizes: Sizes, calls: int) -> Iterator[dict[str, Any]]:
    for n in sizes.worst_call_sessions:
        runs: list[WorstCall] = []
        baseline_runs: list[WorstCall] = []
        for _ in range(options.runs):
            for fn, out, run in (
                (on_trio, runs, triact_worst_call),
                (on_asyncio, baseline_runs, asyncio_worst_call),
            ):
                seen = WorstCall()
                measure(1, fn(run, n, calls, CREATE_EVERY, seen))
                out.append(seen)
        ours, theirs = _worst_call_line(runs), _worst_call_line(baseline_runs)
        yield figure(
            "gc_worst_call",
            "ms",
            ours.pop("max_ms"),
            baseline=TODAY,
            baseline_runs=theirs.pop("max_ms"),
            target=Target("median", "<=", 20),
            sessions=n,
            calls=calls,
            create_every=CREATE_EVERY,
            start_frozen=True,
            **ours,
            gc_us_per_update_target=1.0,
            **{f"baseline_{key}": value for key, value in theirs.items()},
        )


def _ms(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def expiry(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    n = sizes.idle_sessions
    seen = Expiry()

    def at_once() -> float:
        clock = trio.testing.MockClock(rate=1.0)
        return trio.run(triact_expiry_at_once, n, clock, seen, clock=clock)

    yield figure(
        "expiry_longest_gap",
        "ms",
        measure(options.runs, at_once),
        target=Target("median", "<=", 5),
        n=n,
        ticker_sleep_ms=1,
        clock="MockClock(rate=1), jumped past every TTL at once",
        longest_cpu_gap_ms=_ms(seen.longest_cpu_ms),
        idle_longest_gap_ms=_ms(seen.idle_longest_ms),
        expired_in_ms=_ms(seen.expired_in_ms),
    )
    seen = Expiry()
    runs = measure(options.runs, on_trio(triact_expiry_real_clock, n, sizes.idle_ttl, seen))
    yield figure(
        "expiry_longest_gap_real_clock",
        "ms",
        runs,
        target=Target("median", "<=", 5),
        n=n,
        ticker_sleep_ms=1,
        idle_ttl=sizes.idle_ttl,
        longest_cpu_gap_ms=_ms(seen.longest_cpu_ms),
        idle_longest_gap_ms=_ms(seen.idle_longest_ms),
        expired_in_ms=_ms(seen.expired_in_ms),
        created_in_s=_ms(seen.created_in_s),
        expired_during_creation=int(statistics.median(seen.expired_during_creation)),
    )


def shared(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    """Several processes on one SQLite file (``benchmarks/shared_sqlite.py``): one, two
    and three in the same run, durable updates/s in total on the owner path (clients
    pinned to one process per session) and the guest path (spread at random)."""
    return shared_figures(seconds=0.5 if options.quick else 4.0, runs=options.runs)


BENCHMARKS: dict[str, Callable[[Options, Sizes], Any]] = {
    "update": partial(updates, awaiting=False),
    "update_sequential": sequential,
    "update_awaiting": partial(updates, awaiting=True),
    "durable": durable,
    "durable_sync_normal": partial(durable, synchronous="NORMAL"),
    "create": create,
    "validate": validate,
    "memory": memory,
    "expiry": expiry,
    "gc_worst_call": worst_call,
    "shared": shared,
}


def main(argv: list[str] | None = None) -> None:
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--only", choices=list(BENCHMARKS))
    pick.add_argument("--skip", choices=list(BENCHMARKS), action="append", default=[])
    picked, rest = pick.parse_known_args(argv)
    options = parse_options(
        "Benchmarks of triact.sessions beside today's lock-based layer; prints JSON lines. "
        f"--only NAME runs one of: {', '.join(BENCHMARKS)}; --skip NAME (repeatable) "
        "runs all but those.",
        rest,
    )
    sizes = QUICK if options.quick else FULL
    for name, bench in BENCHMARKS.items():
        if picked.only not in (None, name) or name in picked.skip:
            continue
        result = bench(options, sizes)
        for line in [result] if isinstance(result, dict) else result:
            emit(line)


if __name__ == "__main__":
    main()
