"""What is RedisWorkStore's own (the behaviour it shares with the other stores runs in
the suites parametrised by store): bm25 as SQLite's FTS5 ranks, its keys shared by
every process on one prefix and kept apart from other prefixes, the bound keeping
its indexes in step, and what it refuses to store or read back."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import triact
from triact.work import (
    NoteScope,
    RedisWorkStore,
    SqliteWorkStore,
    WorkArgumentError,
    WorkConfig,
    WorkSessions,
    WorkStore,
    WorkStoreError,
    open_work_sessions,
)
from triact.work import _redis as work_redis
from triact.work._redis_lua import LIBRARY
from triact.work._search import query_terms

from .._redis import RedisPlace
from .conftest import Clock, opened

VOCABULARY = [
    "retry",
    "retries",
    "retrying",
    "conflict",
    "conflicts",
    "version",
    "versions",
    "read",
    "re-read",
    "again",
    "café",
    "cafe",
    "naïve",
    "NAIVE",
    "Straße",
    "lock",
    "locks",
    "table",
    "index",
    "42",
    "v2",
    "http2",
    "wal",
    "commit",
    "commits",
    "committed",
    "reader",
    "readers",
    "writer",
    *["the", "a", "on", "of", "and"] * 6,  # common words: searches with many candidates
]


def redis_store(place: RedisPlace, clock: Clock, prefix: str | None = None) -> triact.RedisStore:
    return triact.RedisStore(place.url, prefix=prefix or place.prefix, clock=clock)


@asynccontextmanager
async def redis_work(
    place: RedisPlace, clock: Clock, config: WorkConfig | None = None, prefix: str | None = None
) -> AsyncIterator[WorkSessions]:
    async with opened(clock, config, store=redis_store(place, clock, prefix)) as (_, work):
        assert isinstance(work.store, RedisWorkStore)
        yield work


async def test_a_redis_store_gets_a_redis_work_store(redis_place: RedisPlace, clock: Clock) -> None:
    async with redis_work(redis_place, clock) as work:
        assert repr(work.store).startswith("RedisWorkStore(RedisStore(")
        assert work.search_mode == "redis-bm25"


async def test_bm25_ranks_and_scores_as_sqlite_fts5(
    redis_place: RedisPlace, clock: Clock, sqlite_path: Path
) -> None:
    """The same notes (principals, projects, tags, a bound that drops some) in both
    stores: every search gives the same notes in the same order with the same scores,
    with few candidates and with many (over 64 in a project, many tied)."""
    rng = random.Random(17)
    notes = []
    for _ in range(1500):
        content = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 40)))
        tags = tuple(sorted({rng.choice(["ops", "bug", "wal"]) for _ in range(rng.randint(0, 2))}))
        notes.append(
            (
                content,
                tags,
                rng.choice(["p", "q", None]),
                rng.choice([None, "alice"]),
                rng.choice(["reflection", "conversation"]),
                clock.now + len(notes) // 2,  # some equal times: ids break ties
            )
        )
    queries = ["retry conflict", "cafe", "NAÏVE straße", "the", "42 http2", "committing readers"]
    results: dict[str, list[object]] = {}
    stores = {
        "sqlite": triact.SqliteStore(sqlite_path),
        "redis": redis_store(redis_place, clock),
    }
    for name, sessions in stores.items():
        async with opened(clock, store=sessions) as (_, work):
            store: WorkStore = work.store
            assert isinstance(store, SqliteWorkStore | RedisWorkStore)
            for content, tags, project, principal, kind, at in notes:
                await store.add_note(kind, content, tags, project, at, 100, principal=principal)
            found: list[object] = []
            for query in queries:
                for principal in (None, "alice"):
                    for project, everywhere in (("p", False), (None, False), (None, True)):
                        for tags in ((), ("ops",), ("ops", "bug")):
                            for kind in ("reflection", "conversation"):
                                scope = NoteScope(
                                    kind,  # type: ignore[arg-type]
                                    project,
                                    tags,
                                    everywhere,
                                    principal,
                                )
                                hits = await store.search_notes(scope, query_terms(query), 7)
                                found.append([(note, score) for note, score in hits])
            results[name] = found
    assert any(results["sqlite"])
    for fts5, redis in zip(results["sqlite"], results["redis"], strict=True):
        assert [note for note, _ in redis] == [note for note, _ in fts5]  # type: ignore[attr-defined]
        assert [score for _, score in redis] == pytest.approx(  # type: ignore[attr-defined]
            [score for _, score in fts5],
            rel=1e-12,  # type: ignore[attr-defined]
        )


async def test_two_processes_on_one_prefix_share_everything(
    redis_place: RedisPlace, clock: Clock, tmp_path: Path
) -> None:
    """Two managers on one Redis and prefix (as two ``triact serve`` processes):
    notes, bounds, the directory index and handoffs are one set."""
    config = WorkConfig(max_reflections_per_project=3)
    async with (
        redis_work(redis_place, clock, config) as one,
        redis_work(redis_place, clock, config) as two,
    ):
        first = await one.store_reflection("written by the first", project="p")
        found = await two.search_reflections("first", project="p")
        assert [hit.reflection for hit in found.hits] == [first.reflection]
        for n in range(3):  # the second's notes count against the same bound
            stored = await two.store_reflection(f"second {n}", project="p")
        assert (stored.kept, stored.dropped) == (3, 1)
        assert (await one.search_reflections("first", project="p")).hits == ()
        started = await one.start(tmp_path)
        resumed = await two.start(tmp_path)  # the directory's live session, from the other
        assert (resumed.created, resumed.session.id) == (False, started.session.id)
        await two.end(resumed.session)
        report = (await one.start(tmp_path)).report
        assert report.previous_handoff is not None
        assert report.previous_handoff.session_id == started.session.id


async def test_prefixes_keep_work_stores_apart(redis_place: RedisPlace, clock: Clock) -> None:
    other = redis_place.prefix + "other:"
    async with (
        redis_work(redis_place, clock) as one,
        redis_work(redis_place, clock, prefix=other) as two,
    ):
        await one.store_reflection("only under the first prefix")
        assert (await two.search_reflections("prefix")).hits == ()
        mine = await two.store_reflection("only under the second prefix")
        assert mine.reflection.id == 1  # ids of its own
        found = await one.search_reflections("prefix")
        assert [hit.reflection.content for hit in found.hits] == ["only under the first prefix"]
    with redis_place.client() as client:
        client.delete(*client.keys(f"{other}*"))


async def test_the_bound_keeps_the_index_and_statistics_in_step(
    redis_place: RedisPlace, clock: Clock
) -> None:
    """Concurrent writers from two processes past a bound of 5: what is left indexes
    exactly the notes kept (no posting, count or tag of a dropped note stays)."""
    config = WorkConfig(max_reflections_per_project=5)
    async with (
        redis_work(redis_place, clock, config) as one,
        redis_work(redis_place, clock, config) as two,
    ):

        async def write(work: WorkSessions, n: int) -> None:
            await work.store_reflection(f"note {n} word{n} shared", tags=[f"t{n % 3}"], project="p")

        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(write, (one, two)[n % 2], n)
        found = await one.search_reflections("shared", project="p", limit=100)
        kept = sorted(hit.reflection.id for hit in found.hits)
        assert len(kept) == 5
        assert kept == list(range(36, 41))  # the newest five (ids are given in order)
    prefix = redis_place.prefix
    with redis_place.client() as client:
        assert client.hgetall(f"{prefix}work:r:stats") == {b"n": b"5", b"tok": str(5 * 5).encode()}
        df = {k.decode(): int(v) for k, v in client.hgetall(f"{prefix}work:r:df").items()}
        expected: dict[str, int] = {}
        for hit in found.hits:  # "note 7 word7 shared" tagged "t1": note 7 word7 share t1
            for token in [*hit.reflection.content.split()[:3], "share", *hit.reflection.tags]:
                expected[token] = expected.get(token, 0) + 1
        assert df == expected
        notes = {k.decode() for k in client.keys(f"{prefix}work:r:n:*")}
        assert notes == {f"{prefix}work:r:n:{note_id}" for note_id in kept}
        postings = client.keys(f"{prefix}work:r:b:*|t:*")
        assert len(postings) == len(df)  # one bucket: one posting list per token left


async def test_a_library_lost_by_redis_is_loaded_again(
    redis_place: RedisPlace, clock: Clock
) -> None:
    async with redis_work(redis_place, clock) as work:
        await work.store_reflection("before the flush")
        with redis_place.client() as client:
            client.function_delete(LIBRARY)
        found = await work.search_reflections("flush")
        assert len(found.hits) == 1
        await work.store_reflection("after the flush")
        assert len((await work.search_reflections("flush")).hits) == 2


async def test_a_note_written_by_something_else_is_refused_not_decoded(
    redis_place: RedisPlace, clock: Clock
) -> None:
    config = WorkConfig(max_reflections_per_project=2)
    async with redis_work(redis_place, clock, config) as work:
        await work.store_reflection("a note that gets clobbered", project="p")
        await work.store_reflection("a second note", project="p")
        key = f"{redis_place.prefix}work:r:n:1"
        with redis_place.client() as client:
            client.hset(key, mapping={"t": "not json", "w": "[unterminated"})
        with pytest.raises(WorkStoreError, match=r"reflection 1 in the Redis store .*malformed"):
            await work.search_reflections("clobbered", project="p")
        # Storing a third would drop it: the call fails before it changes anything.
        with pytest.raises(triact.SessionStoreError, match="malformed"):
            await work.store_reflection("a third note", project="p")
        with redis_place.client() as client:
            assert client.get(f"{redis_place.prefix}work:r:seq") == b"2"
            assert client.zcard(f"{redis_place.prefix}work:r:all") == 2
        found = await work.search_reflections("second", project="p")
        assert [hit.reflection.id for hit in found.hits] == [2]


async def test_a_malformed_directory_record_is_refused(
    redis_place: RedisPlace, clock: Clock, tmp_path: Path
) -> None:
    async with redis_work(redis_place, clock) as work:
        with redis_place.client() as client:
            client.hset(f"{redis_place.prefix}work:d:0:", str(tmp_path).encode(), b"\xff\xfe")
        with pytest.raises(WorkStoreError, match=r"the session of .* is malformed"):
            await work.store.session_for(str(tmp_path))
        with redis_place.client() as client:
            client.hset(f"{redis_place.prefix}work:h:0:", str(tmp_path).encode(), b"{}")
        with pytest.raises(triact.work.WorkDataError, match="is not a handoff record") as info:
            await work.store.handoff(str(tmp_path))
        assert "redis://" not in str(info.value)  # said to clients: not the store's URL


async def test_vectors_that_are_not_float32_are_refused(
    redis_place: RedisPlace, clock: Clock
) -> None:
    async with redis_work(redis_place, clock) as work:
        stored = await work.store_reflection("a note")
        note_id = stored.reflection.id
        with pytest.raises(WorkStoreError, match="not float32 bytes"):
            await work.store.put_vectors("reflection", "m", [(note_id, b"\x00" * 6)])
        await work.store.put_vectors("reflection", "m", [(note_id, struct.pack("<2f", 1, 0))])
        await work.store.put_vectors("reflection", "m", [(999, struct.pack("<2f", 1, 0))])
        rows = await work.store.vectors(NoteScope("reflection", all_projects=True), "m")
        assert rows == [(note_id, stored.reflection.created_at, struct.pack("<2f", 1, 0))]
        # Another model's vector replaces it.
        await work.store.put_vectors("reflection", "n", [(note_id, struct.pack("<2f", 0, 1))])
        assert await work.store.vectors(NoteScope("reflection", all_projects=True), "m") == []
        assert await work.store.missing_vectors("reflection", "m", 10) == [(note_id, "a note")]
        assert await work.store.missing_vectors("reflection", "n", 10) == []


async def test_vectors_are_read_in_chunks_with_their_filters(
    redis_place: RedisPlace, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(work_redis, "VECTOR_CHUNK", 3)
    async with redis_work(redis_place, clock) as work:
        store = work.store
        ids = []
        for n in range(10):
            tags = ("even",) if n % 2 == 0 else ()
            note, _, _ = await store.add_note(
                "reflection", f"n{n}", tags, "p" if n < 7 else "q", clock.now, 100
            )
            ids.append(note.id)
        await store.put_vectors("reflection", "m", [(i, struct.pack("<f", i)) for i in ids])
        every = await store.vectors(NoteScope("reflection", all_projects=True), "m")
        assert [row[0] for row in every] == ids
        even = await store.vectors(NoteScope("reflection", tags=("even",), all_projects=True), "m")
        assert [row[0] for row in even] == ids[0::2]
        in_p = await store.vectors(NoteScope("reflection", "p"), "m", after=ids[2])
        assert [row[0] for row in in_p] == ids[3:7]
        everywhere = NoteScope("reflection", all_projects=True)
        assert await store.vector_signature(everywhere, "m") == (10, ids[0], ids[-1])
        in_q = NoteScope("reflection", "q", ("even",))
        assert await store.vector_signature(in_q, "m") == (1, ids[8], ids[8])
        assert await store.vector_signature(everywhere, "x") == (0, 0, 0)
        # Only the caller's notes, by id.
        assert [n.id for n in await store.notes("reflection", [ids[1], 12345])] == [ids[1]]
        assert await store.notes("reflection", [ids[1]], principal="alice") == []
        assert await store.notes("reflection", []) == []


async def test_text_that_would_not_read_back_is_refused(
    redis_place: RedisPlace, clock: Clock
) -> None:
    async with redis_work(redis_place, clock) as work:
        with pytest.raises(WorkArgumentError, match="not valid Unicode"):
            await work.store_reflection("half a pair \ud800")
        with pytest.raises(WorkArgumentError, match="not valid Unicode"):
            await work.store_reflection("fine", tags=["\udcff"])
        with pytest.raises(WorkArgumentError, match="not valid Unicode"):
            await work.store_reflection("fine", project="p\ud800")
        with redis_place.client() as client:
            assert client.get(f"{redis_place.prefix}work:r:seq") is None


async def test_missing_fts5_fails_clearly(
    redis_place: RedisPlace, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(work_redis, "FTS_MODULE", "fts_nope")
    config = triact.SessionConfig(store=redis_store(redis_place, clock), wall_clock=clock)
    async with triact.open_session_manager(config) as manager:
        with pytest.raises(WorkStoreError, match="tokenizes as SQLite's FTS5 does"):
            async with open_work_sessions(manager):
                pass


async def test_handoffs_of_any_directory_name_read_back(
    redis_place: RedisPlace, clock: Clock, tmp_path: Path
) -> None:
    strange = tmp_path / "caf\u00e9 \u2028 \U0001f600"
    strange.mkdir()
    async with redis_work(redis_place, clock) as work:
        started = await work.start(strange)
        await work.end(started.session)
        report = (await work.start(strange)).report
        assert report.previous_handoff is not None
        assert report.previous_handoff.working_directory == str(strange)
    with redis_place.client() as client:
        stored = client.hgetall(f"{redis_place.prefix}work:h:0:")
        assert [json.loads(v)["session_id"] for v in stored.values()] == [started.session.id]
