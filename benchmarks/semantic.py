"""Search by meaning (the semantic extra): what embedding costs, how long a hybrid search
takes with 10,000 reflections in a project, and what a store and the server's start-up
cost with it on.

Figures, one JSON line each (``median`` is the median of ``--runs`` runs):

- ``semantic_model_load``: seconds to import the model's libraries and load the model,
  in a process that has loaded neither (what the first store or search of a server pays
  once): the first run is this script's own load, each further run a fresh process;
- ``semantic_embed_one``, ``semantic_embed_batch``: milliseconds of CPU per text, one
  text per call and 64 per call (through :class:`triact.work.Embedder`);
- ``semantic_search_hybrid``: milliseconds per ``search_reflections`` with 10,000
  reflections in the project (``median`` is the p50 of each run's queries, ``p99``
  beside it), against ``semantic_search_words`` (FTS5 alone, same data) as baseline;
- ``semantic_store``: milliseconds per ``store_reflection`` with its embedding, against
  one without (the store's write alone) as baseline;
- ``semantic_serve_startup``: seconds from starting ``triact serve --semantic auto`` to
  its answer to ``initialize``, against ``--semantic off`` as baseline (the model's
  libraries are not imported at start-up, so the ratio should be 1).

With ``--redis``, the same reflections are also kept in a RedisStore's work store (a
private ``redis-server`` on loopback, AOF ``everysec``), and searched in turn with the
SQLite ones in each run (SQLite, Redis, SQLite, Redis...), as baseline:

- ``semantic_search_hybrid_redis``: as ``semantic_search_hybrid``, on Redis, against
  it (on SQLite) as baseline;
- ``semantic_search_words_redis``: bm25 alone on Redis (computed by a Redis function
  over its inverted index), against FTS5's on SQLite;
- ``semantic_store_redis``: milliseconds per ``store_reflection`` with its embedding on
  Redis, against the same on SQLite.

    python benchmarks/semantic.py [--runs N] [--quick] [--redis]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import triact
from triact.work import Embedder, WorkConfig, open_work_sessions
from triact.work._embedding import MODEL_NAME, load_minilm, semantic_installed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, figure, measure, measure_pair, parse_options

SUBJECTS = [
    "the parser",
    "the cache",
    "the scheduler",
    "the deploy",
    "the migration",
    "the retry loop",
    "the session store",
    "the git checkpoint",
    "the HTTP transport",
    "the test suite",
]
VERBS = ["fails on", "slows down with", "needs", "breaks after", "handles", "ignores"]
OBJECTS = [
    "empty input",
    "a version conflict",
    "a cold start",
    "large files",
    "concurrent writers",
    "a lost connection",
    "unicode paths",
    "an expired token",
]
QUERIES = [
    "retry on conflict",
    "what happens when two writers race",
    "startup is slow",
    "parser empty input",
    "the network went away",
    "token expiry",
    "cache invalidation after deploy",
    "non-ascii file names",
]


def note(i: int, rng: random.Random) -> str:
    return (
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
        f"(observation {i}, {rng.choice(['fixed', 'open', 'worked around'])})"
    )


#: A new store object on the same data each call.
StoreMaker = Callable[[], triact.SessionStore]


async def fill(make_store: StoreMaker, count: int, encode: Any) -> None:
    """``count`` reflections in project "big", each with its vector: the distinct texts
    embedded once each (a note's vector is that of its text without the number), so
    that the set-up takes seconds, not minutes."""
    rng = random.Random(7)
    texts = [note(i, rng) for i in range(count)]
    bases = sorted({text.split(" (")[0] for text in texts})
    vectors = dict(zip(bases, encode(bases), strict=True))
    config = triact.SessionConfig(store=make_store())
    work_config = WorkConfig(semantic="off", max_reflections_per_project=count)
    async with (
        triact.open_session_manager(config) as manager,
        open_work_sessions(manager, work_config) as work,
    ):
        ids: list[tuple[int, bytes]] = []

        async def store(text: str) -> None:
            stored = await work.store_reflection(text, project="big")
            ids.append((stored.reflection.id, vectors[text.split(" (")[0]]))

        for start in range(0, count, 500):
            async with trio.open_nursery() as nursery:
                for text in texts[start : start + 500]:
                    nursery.start_soon(store, text)
        await work.store.put_vectors("reflection", MODEL_NAME, ids)


async def search_latencies(
    make_store: StoreMaker, encode: Any, semantic: str, queries: int
) -> list[float]:
    config = triact.SessionConfig(store=make_store())
    embedder = Embedder(lambda: encode)
    async with (
        triact.open_session_manager(config) as manager,
        open_work_sessions(manager, WorkConfig(semantic=semantic), embedder=embedder) as work,
    ):
        await work.search_reflections("warm up", project="big")
        words = work.store.search_method
        times = []
        for i in range(queries):
            started = time.perf_counter()
            found = await work.search_reflections(QUERIES[i % len(QUERIES)], project="big")
            times.append((time.perf_counter() - started) * 1000)
            assert found.method == ("hybrid" if semantic == "on" else words)
            assert len(found.hits) == 10
    return times


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def store_ms(make_store: StoreMaker, encode: Any, semantic: str, count: int) -> float:
    config = triact.SessionConfig(store=make_store())
    embedder = Embedder(lambda: encode)
    rng = random.Random(3)
    async with (
        triact.open_session_manager(config) as manager,
        open_work_sessions(manager, WorkConfig(semantic=semantic), embedder=embedder) as work,
    ):
        await work.store_reflection("warm up", project="stores")
        started = time.perf_counter()
        for i in range(count):
            await work.store_reflection(note(i, rng), project="stores")
        return (time.perf_counter() - started) * 1000 / count


async def embed_ms(encode: Any, per_call: int, texts: int) -> float:
    embedder = Embedder(lambda: encode)
    rng = random.Random(5)
    batch = [note(i, rng) for i in range(texts)]
    await embedder.embed(["warm up"])
    started = time.perf_counter()
    for start in range(0, texts, per_call):
        await embedder.embed(batch[start : start + per_call])
    return (time.perf_counter() - started) * 1000 / texts


LOAD = """
import time
started = time.perf_counter()
from triact.work._embedding import load_minilm
load_minilm()(["warm up"])
print(time.perf_counter() - started)
"""


def model_load_seconds() -> float:
    done = subprocess.run(
        [sys.executable, "-c", LOAD], capture_output=True, text=True, check=True, timeout=300
    )
    return float(done.stdout.split()[-1])


def startup_seconds(semantic: str, home: Path) -> float:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        },
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "triact.cli", "serve", "--store", "memory", "--semantic", semantic],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps(initialize).encode() + b"\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    proc.stdin.close()
    proc.wait(timeout=30)
    assert json.loads(line)["id"] == 1
    return elapsed


def search_figures(
    stores: dict[str, StoreMaker], encode: Any, runs: int, notes: int, queries: int
) -> None:
    """Hybrid and words-alone search latencies on each store (SQLite first: the
    baseline), the stores taking turns within each run."""
    p50s: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    for _ in range(runs):
        for semantic in ("on", "off"):
            for name, make_store in stores.items():
                times = trio.run(search_latencies, make_store, encode, semantic, queries)
                p50s.setdefault((name, semantic), []).append(statistics.median(times))
                p99s.setdefault((name, semantic), []).append(p99(times))

    def line(name: str, semantic: str, bench: str, base: tuple[str, str], base_bench: str) -> None:
        emit(
            figure(
                bench,
                "ms",
                p50s[name, semantic],
                baseline=base_bench,
                baseline_runs=p50s[base],
                p99=statistics.median(p99s[name, semantic]),
                baseline_p99=statistics.median(p99s[base]),
                notes=notes,
                queries=queries,
            )
        )

    words = ("sqlite", "off")
    line("sqlite", "on", "semantic_search_hybrid", words, "semantic_search_words")
    if "redis" in stores:
        hybrid = ("sqlite", "on")
        line("redis", "on", "semantic_search_hybrid_redis", hybrid, "semantic_search_hybrid")
        line("redis", "off", "semantic_search_words_redis", words, "semantic_search_words")


def main() -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--redis", action="store_true")
    known, rest = extra.parse_known_args()
    options = parse_options(__doc__.splitlines()[0] + " (--redis: also on Redis)", rest)
    if not semantic_installed():
        sys.exit("benchmarks/semantic.py needs the semantic extra (docs/work.md)")
    notes = 300 if options.quick else 10_000
    queries = 20 if options.quick else 200
    runs = options.runs
    # This process has not imported the model's libraries yet, so its own load is the
    # first run: one load fewer than a fresh process per run (it takes 15 to 40 s).
    started = time.perf_counter()
    encode = load_minilm()
    encode(["warm up"])
    loads = [time.perf_counter() - started, *measure(runs - 1, model_load_seconds)]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        emit(figure("semantic_model_load", "s", loads))
        texts = 16 if options.quick else 128
        for name, per_call in (("semantic_embed_one", 1), ("semantic_embed_batch", 64)):
            run = lambda per_call=per_call: trio.run(embed_ms, encode, per_call, texts)  # noqa: E731
            emit(figure(name, "ms/text", measure(runs, run), texts=texts, per_call=per_call))

        server = None
        stores: dict[str, StoreMaker] = {"sqlite": lambda: triact.SqliteStore(home / "search.db")}
        if known.redis:
            from shared_redis import start_redis

            redis_dir = home / "redis"
            redis_dir.mkdir()
            server, port = start_redis(redis_dir, "everysec")
            url = f"redis://127.0.0.1:{port}/0"
            stores["redis"] = lambda: triact.RedisStore(url, prefix="search:")
        try:
            for make_store in stores.values():
                trio.run(fill, make_store, notes, encode)
            search_figures(stores, encode, runs, notes, queries)
            count = 10 if options.quick else 100
            stores_on, plain = measure_pair(
                runs,
                lambda: trio.run(
                    store_ms, lambda: triact.SqliteStore(home / "stores.db"), encode, "on", count
                ),
                lambda: trio.run(
                    store_ms, lambda: triact.SqliteStore(home / "plain.db"), encode, "off", count
                ),
            )
            emit(
                figure(
                    "semantic_store",
                    "ms",
                    stores_on,
                    baseline="store_without_embedding",
                    baseline_runs=plain,
                    stores=count,
                )
            )
            if known.redis:
                on_redis, on_sqlite = measure_pair(
                    runs,
                    lambda: trio.run(
                        store_ms,
                        lambda: triact.RedisStore(url, prefix="stores:"),
                        encode,
                        "on",
                        count,
                    ),
                    lambda: trio.run(
                        store_ms,
                        lambda: triact.SqliteStore(home / "stores.db"),
                        encode,
                        "on",
                        count,
                    ),
                )
                emit(
                    figure(
                        "semantic_store_redis",
                        "ms",
                        on_redis,
                        baseline="semantic_store",
                        baseline_runs=on_sqlite,
                        stores=count,
                    )
                )
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
        startup, startup_off = measure_pair(
            runs, lambda: startup_seconds("auto", home), lambda: startup_seconds("off", home)
        )
        emit(
            figure(
                "semantic_serve_startup",
                "s",
                startup,
                baseline="serve_startup_semantic_off",
                baseline_runs=startup_off,
            )
        )


if __name__ == "__main__":
    main()
