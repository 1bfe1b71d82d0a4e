"""RedisStore's commits from C tasks at once, each on a session of its own: what a
commit costs the process (CPU time of all its threads, glide's included, per write),
writes per second, and round trips per write (``RedisStore.calls``: function calls and
pipelines sent).

The baseline is the same writes, each sent as a function call of its own (the store's
single-call path, ``RedisStore._fcall``, with the same function and arguments), as
every commit was sent before commits of many sessions shared pipelines; the two
alternate in the same run, on one private redis-server (AOF ``appendfsync no``; Redis's
own CPU is not counted: it is another process).

    python benchmarks/redis_writes.py [--runs N] [--quick]
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _common import emit, figure, parse_options
from shared_redis import start_redis

from triact.sessions._redis import RedisStore
from triact.sessions._state import SessionState

CONCURRENCY = (1, 16, 64)
NOW = time.time()


def _state(session_id: str, version: int) -> SessionState:
    return SessionState(
        id=session_id,
        version=version,
        created_at=NOW,
        last_used=NOW,
        data={"n": version, "topic": "a topic of a few dozen characters, as sessions have"},
    )


async def one_run(url: str, tasks: int, writes: int, single: bool) -> tuple[float, float, float]:
    """``writes`` writes from ``tasks`` tasks: CPU µs per write, writes/s, round trips
    per write."""
    store = RedisStore(url, prefix=f"redis-writes-{time.monotonic_ns()}:")
    async with store.open():
        for task in range(tasks):
            await store.create(
                _state(f"s{task}", 1),
                client_id=None,
                expires_at=NOW + 3600,
                now=NOW,
                node="bench",
                lease=3600,
                max_sessions=1_000_000,
                max_per_client=None,
            )

        async def write(state: SessionState, previous: int) -> None:
            if not single:
                await store.write(state, previous_version=previous, expires_at=NOW + 3600)
                return
            # The single-call path, as RedisStore.write sent a commit before.
            at = NOW + 3600
            args = [
                store.prefix,
                state.id,
                str(previous),
                str(state.version),
                "",
                await store._encode(state),  # noqa: SLF001
                repr(state.last_used),
                repr(at),
                store._expiry_ms(at),  # noqa: SLF001
            ]
            key = f"{store.prefix}{{{state.id}}}"
            own = store._expect("updated", state.id, state.version)  # noqa: SLF001
            reply = await store._fcall("write", "store a session", [key], args)  # noqa: SLF001
            if reply[0] not in (b"OK", "OK"):
                store._disown(own)  # noqa: SLF001
                raise RuntimeError(f"write refused: {reply!r}")

        async def loop(task: int) -> None:
            for version in range(1, writes // tasks + 1):
                await write(_state(f"s{task}", version + 1), version)

        cpu, wall, calls = time.process_time(), time.perf_counter(), store.calls
        async with trio.open_nursery() as nursery:
            for task in range(tasks):
                nursery.start_soon(loop, task)
        done = writes // tasks * tasks
        cpu_us = (time.process_time() - cpu) / done * 1e6
        rate = done / (time.perf_counter() - wall)
        return cpu_us, rate, (store.calls - calls) / done


def main(argv: list[str] | None = None) -> None:
    options = parse_options(
        "RedisStore commits from C tasks at once (pipelines shared by sessions) beside "
        "the same commits sent one function call each; prints JSON lines.",
        argv,
    )
    writes = 400 if options.quick else 6000
    with tempfile.TemporaryDirectory(prefix="redis-writes-") as directory:
        server, port = start_redis(Path(directory), "no")
        url = f"redis://127.0.0.1:{port}/0"
        try:
            for tasks in CONCURRENCY:
                ours: list[tuple[float, float, float]] = []
                theirs: list[tuple[float, float, float]] = []
                for _ in range(options.runs):
                    ours.append(trio.run(one_run, url, tasks, writes, False))
                    theirs.append(trio.run(one_run, url, tasks, writes, True))
                shape: dict[str, Any] = {
                    "concurrency": tasks,
                    "writes": writes // tasks * tasks,
                    "round_trips_per_write": _median([r[2] for r in ours], 3),
                    "baseline_round_trips_per_write": _median([r[2] for r in theirs], 3),
                    "writes_per_s": _median([r[1] for r in ours], 0),
                    "baseline_writes_per_s": _median([r[1] for r in theirs], 0),
                }
                emit(
                    figure(
                        f"redis_write_c{tasks}_cpu",
                        "process CPU µs/write",
                        [r[0] for r in ours],
                        baseline="the same writes, one Redis function call each",
                        baseline_runs=[r[0] for r in theirs],
                        **shape,
                    )
                )
        finally:
            server.terminate()
            server.wait(timeout=10)


def _median(values: list[float], digits: int) -> float:
    median = statistics.median(values)
    return round(median, digits) if math.isfinite(median) else median


if __name__ == "__main__":
    main()
