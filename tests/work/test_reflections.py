"""Reflections: stored with bounds, searched with bm25 (SQLite's FTS5, or the same in
Redis) or a scored text match (memory), on every store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import triact
from triact.work import (
    WorkConfig,
    WorkLimitError,
    WorkSessions,
    WorkStoreError,
    open_work_sessions,
)
from triact.work import _sqlite as work_sqlite

from .conftest import Clock, StoreMaker, opened, words_method


@pytest.fixture
async def any_work(clock: Clock, any_store: StoreMaker) -> AsyncIterator[WorkSessions]:
    async with opened(clock, store=any_store()) as (_, work):
        yield work


def _method(work: WorkSessions) -> str:
    return words_method(work.manager.store)


async def test_search_finds_the_best_match_first(any_work: WorkSessions, clock: Clock) -> None:
    work = any_work
    texts = [
        "Trio cancel scopes nest; a shielded scope ignores outer cancellation",
        "SQLite WAL mode lets readers run while one writer commits",
        "bm25 ranks documents by term frequency and rarity",
        "Cancellation in Trio: cancel scopes and deadlines, the cancel scope shield",
        "Lunch was good",
    ]
    for text in texts:
        clock.now += 1
        await work.store_reflection(text, tags=["notes"], project="alpha")
    found = await work.search_reflections("trio cancel scope shield", project="alpha")
    assert found.method == _method(work)
    contents = [hit.reflection.content for hit in found.hits]
    assert contents[0] == texts[3]
    assert set(contents[:2]) == {texts[0], texts[3]}
    assert texts[4] not in contents
    assert all(a.score >= b.score for a, b in zip(found.hits, found.hits[1:], strict=False))


async def test_recency_breaks_ties(any_work: WorkSessions, clock: Clock) -> None:
    for n in range(3):
        clock.now += 1
        await any_work.store_reflection("same words exactly", project="p", tags=[f"n{n}"])
    for n in range(10):  # others, so that the words are not everywhere
        await any_work.store_reflection(f"filler {n}", project="p")
    found = await any_work.search_reflections("same words")
    assert [hit.reflection.tags for hit in found.hits] == [("n2",), ("n1",), ("n0",)]


async def test_filters_by_project_and_tags(any_work: WorkSessions) -> None:
    work = any_work
    await work.store_reflection("deploy with care", tags=["Ops", "prod"], project="a")
    await work.store_reflection("deploy on fridays", tags=["ops"], project="b")
    await work.store_reflection("deploy docs", project=None)
    stored = await work.store_reflection("deploy again", tags=[" OPS ", "ops"], project="a")
    assert stored.reflection.tags == ("ops",)
    every = await work.search_reflections("deploy")
    assert len(every.hits) == 4
    in_a = await work.search_reflections("deploy", project="a")
    assert {h.reflection.content for h in in_a.hits} == {"deploy with care", "deploy again"}
    tagged = await work.search_reflections("deploy", tags=["ops", "prod"])
    assert [h.reflection.content for h in tagged.hits] == ["deploy with care"]
    assert [h.reflection.project for h in every.hits].count(None) == 1
    limited = await work.search_reflections("deploy", limit=2)
    assert len(limited.hits) == 2


async def test_queries_are_words_not_syntax(any_work: WorkSessions) -> None:
    await any_work.store_reflection("the NEAR operator and a star*")
    found = await any_work.search_reflections('NEAR( "star* AND -x:y')
    assert len(found.hits) == 1
    with pytest.raises(ValueError, match="no words"):
        await any_work.search_reflections("  ?! ")


async def test_each_project_keeps_its_newest(clock: Clock, any_store: StoreMaker) -> None:
    config = WorkConfig(max_reflections_per_project=3)
    async with opened(clock, config, store=any_store()) as (_, work):
        results = [await work.store_reflection(f"note {i}", project="p") for i in range(5)]
        await work.store_reflection("note other", project="q")
        assert [(r.kept, r.dropped) for r in results] == [
            (1, 0),
            (2, 0),
            (3, 0),
            (3, 1),
            (3, 1),
        ]
        found = await work.search_reflections("note", project="p")
        assert sorted(h.reflection.content for h in found.hits) == [
            "note 2",
            "note 3",
            "note 4",
        ]
        assert len((await work.search_reflections("note", project="q")).hits) == 1


async def test_size_and_tag_bounds(clock: Clock) -> None:
    config = WorkConfig(max_reflection_chars=10, max_reflection_tags=2)
    async with opened(clock, config) as (_, work):
        with pytest.raises(WorkLimitError, match="max_reflection_chars"):
            await work.store_reflection("x" * 11)
        with pytest.raises(WorkLimitError, match="max_reflection_tags"):
            await work.store_reflection("ok", tags=["a", "b", "c"])
        with pytest.raises(ValueError, match="non-empty"):
            await work.store_reflection("   ")
        with pytest.raises(ValueError, match="limit"):
            await work.search_reflections("ok", limit=0)


async def test_a_query_longer_than_max_query_chars_is_refused_unquoted(
    any_work: WorkSessions,
) -> None:
    await any_work.store_reflection("deploy on fridays")
    longest = "deploy " + "x" * 1993  # 2,000 characters: found
    assert len((await any_work.search_reflections(longest)).hits) == 1
    assert len((await any_work.search_conversations(longest)).hits) == 0
    for search in (any_work.search_reflections, any_work.search_conversations):
        with pytest.raises(WorkLimitError, match="max_query_chars") as caught:
            await search(longest + "y")
        assert "xxxxxxxx" not in str(caught.value)
    # Nor is a long query without words quoted back whole.
    with pytest.raises(ValueError, match="query of 1500 characters has no words"):
        await any_work.search_reflections("?" * 1500)
    with pytest.raises(ValueError, match="query must be a string"):
        await any_work.search_reflections(b"deploy")  # type: ignore[arg-type]


async def test_reflections_persist(clock: Clock, durable_store: StoreMaker) -> None:
    async with opened(clock, store=durable_store()) as (_, work):
        await work.store_reflection("remember the milk", tags=["home"])
    async with opened(clock, store=durable_store()) as (_, work):
        found = await work.search_reflections("milk")
        assert [(h.reflection.content, h.reflection.tags) for h in found.hits] == [
            ("remember the milk", ("home",))
        ]


async def test_a_thousand_reflections_rank_with_bm25(
    clock: Clock, durable_store: StoreMaker
) -> None:
    topics = ["alpha", "bravo", "charlie", "delta", "echo"]
    sessions = durable_store()
    async with opened(clock, store=sessions) as (_, work):

        async def store(i: int) -> None:
            words = " ".join(topics[(i + k) % 5] for k in range(3))
            await work.store_reflection(f"reflection {i}: {words} filler text", project="big")

        async with trio.open_nursery() as nursery:  # concurrently
            for i in range(1000):
                nursery.start_soon(store, i)
        await work.store_reflection("zulu zulu zulu the needle", project="big")
        await work.store_reflection("zulu appears once among many many other words here")
        found = await work.search_reflections("zulu needle", limit=5)
        assert found.method == words_method(sessions)
        assert [h.reflection.content for h in found.hits][:2] == [
            "zulu zulu zulu the needle",
            "zulu appears once among many many other words here",
        ]
        numbered = await work.search_reflections("reflection 417", project="big", limit=1)
        assert numbered.hits[0].reflection.content.startswith("reflection 417:")


async def test_missing_fts5_fails_clearly(
    clock: Clock, sqlite_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(work_sqlite, "FTS_MODULE", "fts_nope")
    async with triact.open_session_manager(
        triact.SessionConfig(store=triact.SqliteStore(sqlite_path), wall_clock=clock)
    ) as manager:
        with pytest.raises(WorkStoreError, match="needs SQLite's FTS5"):
            async with open_work_sessions(manager):
                pass
        # The session store is unharmed: the failed write was rolled back alone.
        session = await manager.create_session("still fine")
        assert (await session.snapshot()).topic == "still fine"
