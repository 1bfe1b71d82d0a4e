"""Several processes on one SQLite file: durable updates per second in total, for one,
two and three processes in the same run, each a SessionManager with its own store.

- owner: each session is used by one process only (clients pinned per session);
- guest: every process updates every session (clients spread at random).

The processes start measuring together, once each has opened the file. Each figure
is the median of ``--runs`` runs; ``ratio`` is against one process in the same mode.
Afterwards every session's counter must equal the updates acknowledged.

    python benchmarks/shared_sqlite.py [--seconds S] [--runs N] [--quick]

``python benchmarks/sessions.py --only shared`` reports the same figures (4 s runs).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
from _common import Target, emit, figure

import triact

SESSIONS = 8
TASKS = 16  # concurrent callers per process

CHILD = """
import random, sys, attrs, trio, triact

async def main(spec, index, count, mode, seconds):
    ids = sys.stdin.readline().split()
    store = triact.RedisStore(spec) if spec.startswith("redis") else triact.SqliteStore(spec)
    config = triact.SessionConfig(store=store, secret_key=b"k" * 32)
    done = 0
    async with triact.open_session_manager(config) as manager:
        mine = [i for n, i in enumerate(ids) if mode == "guest" or n % count == index]
        handles = [await manager.get_session(i) for i in mine]
        bump = lambda s: attrs.evolve(s, data={**s.data, "n": s.data.get("n", 0) + 1})
        print("ready", flush=True)  # then all processes start at once
        await trio.to_thread.run_sync(sys.stdin.readline)

        async def caller(seed):
            nonlocal done
            rng = random.Random(seed)
            while True:
                await rng.choice(handles).update(bump)
                done += 1

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for t in range(TASKS):
                    nursery.start_soon(caller, index * 1000 + t)
    print(done, flush=True)

trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
""".replace("TASKS", str(TASKS))


def store_of(spec: str) -> triact.SessionStore:
    """The store a child opens for ``spec``: a redis:// URL, else a SQLite file."""
    return triact.RedisStore(spec) if spec.startswith("redis") else triact.SqliteStore(spec)


async def create_sessions(spec: str) -> list[str]:
    config = triact.SessionConfig(store=store_of(spec), secret_key=b"k" * 32)
    async with triact.open_session_manager(config) as manager:
        return [(await manager.create_session(topic=f"s{i}")).id for i in range(SESSIONS)]


async def total(spec: str, ids: list[str]) -> int:
    config = triact.SessionConfig(store=store_of(spec), secret_key=b"k" * 32)
    async with triact.open_session_manager(config) as manager:
        states = [await (await manager.get_session(i)).snapshot() for i in ids]
    return sum(state.data.get("n", 0) for state in states)


def run_processes(
    directory: Path, spec: str, ids: list[str], count: int, mode: str, seconds: float
) -> int:
    """Run ``count`` processes updating the sessions ``ids`` on the store ``spec`` (a
    SQLite path or a redis:// URL) for ``seconds``, all measuring over the same window;
    the updates they acknowledged."""
    child = directory / "child.py"
    child.write_text(CHILD)
    processes = [
        subprocess.Popen(
            [sys.executable, str(child), spec, str(i), str(count), mode, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(" ".join(ids) + "\n")
        process.stdin.flush()
    for process in processes:  # every process ready: measure them over the same window
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", f"a child failed ({process.wait()})"
    acknowledged = 0
    for process in processes:
        out, _ = process.communicate("go\n")
        assert process.returncode == 0, f"a child failed ({process.returncode})"
        acknowledged += int(out.split()[-1])
    return acknowledged


def check_total(spec: str, ids: list[str], acknowledged: int) -> None:
    """Every session's counter together is what the processes acknowledged."""
    stored = trio.run(total, spec, ids)
    assert stored == acknowledged, f"lost updates: {acknowledged} acknowledged, {stored} stored"


def one_run(directory: Path, count: int, mode: str, seconds: float) -> float:
    path = str(directory / f"{mode}-{count}-{random.random()}.db")
    ids = trio.run(create_sessions, path)
    acknowledged = run_processes(directory, path, ids, count, mode, seconds)
    check_total(path, ids, acknowledged)
    return acknowledged / seconds


def figures(seconds: float, runs: int) -> Iterator[dict[str, Any]]:
    """The six figures: owner and guest path, one, two and three processes, each the
    median of ``runs`` runs of ``seconds``; one, two and three processes take turns so
    that load drifts hit all alike."""
    with tempfile.TemporaryDirectory() as directory:
        for mode in ("owner", "guest"):
            results: dict[int, list[float]] = {1: [], 2: [], 3: []}
            for _ in range(runs):
                for count in results:
                    results[count].append(one_run(Path(directory), count, mode, seconds))
            for count, counted in results.items():
                yield figure(
                    f"shared_sqlite_{mode}_{count}",
                    "durable updates/s in total",
                    counted,
                    baseline=f"one process on the same file ({mode} path)",
                    baseline_runs=results[1],
                    target=Target("ratio", ">=", 0.8) if (mode, count) == ("owner", 2) else None,
                    processes=count,
                    sessions=SESSIONS,
                    callers_per_process=TASKS,
                    seconds=seconds,
                    lost=0,  # checked: every session's counter is what was acknowledged
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="half-second runs (a smoke test)")
    args = parser.parse_args()
    for line in figures(0.5 if args.quick else args.seconds, args.runs):
        emit(line)


if __name__ == "__main__":
    main()
