"""Hybrid search's mechanics, on every store: which mode ran, vectors kept beside the
notes (a restart finds them, missing ones are made in the background), batching in
worker threads, a model that fails, and the age weighting. The model here is a small
deterministic one (each word hashed to a dimension), so that these run without the
semantic extra's; test_semantic_model.py checks the real model's rankings."""

from __future__ import annotations

import logging
import math
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing

import triact
from triact.work import (
    Embedder,
    MemoryWorkStore,
    NoteScope,
    WorkConfig,
    WorkSessions,
    WorkStoreError,
    open_work_sessions,
)
from triact.work import _work as work_module
from triact.work._search import words

from .conftest import Clock, StoreMaker, opened, words_method

pytest.importorskip("numpy", reason="hybrid search needs numpy (the semantic extra)")

DIMENSIONS = 384


#: Words the small model takes for one another (the real one knows many more).
SYNONYMS = {"retry": "again", "conflict": "clash", "conflicts": "clash"}


def hashed(texts: list[str]) -> list[bytes]:
    """Each word (or its synonym) counted in one dimension (its hash), scaled to unit
    length: texts sharing words or synonyms are similar, others are not."""
    out = []
    for text in texts:
        vector = [0.0] * DIMENSIONS
        for word in words(text):
            word = SYNONYMS.get(word, word)
            vector[zlib.crc32(word.encode()) % DIMENSIONS] += 1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        out.append(struct.pack(f"<{DIMENSIONS}f", *(x / norm for x in vector)))
    return out


def embedder(encode: Callable[[list[str]], list[bytes]] = hashed) -> Embedder:
    return Embedder(lambda: encode, name="hashed-words")


@pytest.fixture
async def hybrid(clock: Clock, any_store: StoreMaker) -> AsyncIterator[WorkSessions]:
    store = any_store()
    async with opened(clock, store=store, semantic="auto", embedder=embedder()) as (_, work):
        yield work


async def test_the_result_says_which_mode_ran(clock: Clock, durable_store: StoreMaker) -> None:
    store = durable_store()
    async with opened(clock, store=store, semantic="auto", embedder=embedder()) as (_, work):
        stored = await work.store_reflection("the parser fails on empty input")
        found = await work.search_reflections("empty input")
        assert stored.embedded is True
        assert found.method == work.search_mode == "hybrid"
        assert found.hits[0].similarity is not None
    store = durable_store()
    async with opened(clock, store=store) as (_, words_only):
        stored = await words_only.store_reflection("another note about input")
        found = await words_only.search_reflections("empty input")
        assert stored.embedded is False
        assert found.method == words_only.search_mode == words_method(store)
        assert [hit.similarity for hit in found.hits] == [None, None]


async def test_found_by_meaning_without_a_shared_word(hybrid: WorkSessions) -> None:
    await hybrid.store_reflection("lunch was good today", project="p")
    target = await hybrid.store_reflection("read it and try again", project="p")
    found = await hybrid.search_reflections("retry", project="p")  # no word in common
    assert [hit.reflection.id for hit in found.hits] == [target.reflection.id]
    assert found.hits[0].similarity == pytest.approx(1 / math.sqrt(5))
    words_only = await hybrid.store.search_notes(NoteScope("reflection", "p"), ["retry"], 10)
    assert words_only == []


async def test_exact_words_rank_before_meaning(hybrid: WorkSessions, clock: Clock) -> None:
    exact = await hybrid.store_reflection("retry on conflict", project="p")
    clock.now += 1
    # Newer and just as close in meaning, but without the query's words.
    await hybrid.store_reflection("again on clash", project="p")
    found = await hybrid.search_reflections("retry conflict", project="p")
    assert found.hits[0].reflection.id == exact.reflection.id
    assert len(found.hits) == 2


async def test_vectors_outlive_a_restart(clock: Clock, durable_store: StoreMaker) -> None:
    first = embedder()
    store = durable_store()
    async with opened(clock, store=store, semantic="auto", embedder=first) as (_, work):
        for i in range(5):
            await work.store_reflection(f"note {i} about caching and retries", project="p")
        before = await work.search_reflections("caching retries", project="p")
    assert first.texts_embedded == 6  # five notes and the query
    second = embedder()
    store = durable_store()
    async with opened(clock, store=store, semantic="auto", embedder=second) as (_, work):
        after = await work.search_reflections("caching retries", project="p")
        assert second.texts_embedded == 1  # the query only: the vectors were kept
        assert work.semantic is not None
        await work.semantic.backfill("reflection")
        assert second.texts_embedded == 1  # none was missing
    assert after.method == "hybrid"
    assert [(h.reflection.id, h.score) for h in after.hits] == [
        (h.reflection.id, h.score) for h in before.hits
    ]


async def test_missing_vectors_are_made_in_the_background(
    clock: Clock, durable_store: StoreMaker
) -> None:
    async with opened(clock, store=durable_store()) as (_, work):
        for i in range(20):  # stored with search by meaning off: no vectors
            await work.store_reflection(f"stored without a vector {i}", project="p")
    model = embedder()
    store = durable_store()
    async with opened(clock, store=store, semantic="auto", embedder=model) as (_, work):
        assert work.semantic is not None
        found = await work.search_reflections("vector", project="p")
        assert found.method == "hybrid"
        assert len(found.hits) == 10  # by their words meanwhile
        await work.semantic.backfill("reflection")
        missing = await work.store.missing_vectors("reflection", model.name, 100)
        assert missing == []
        assert model.texts_embedded == 21
        assert model.batches >= 3  # the backfill goes a few at a time


async def test_concurrent_stores_are_embedded_in_batches(clock: Clock) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(texts: list[str]) -> list[bytes]:
        calls.append(len(texts))
        entered.set()
        release.wait(10)
        return hashed(texts)

    model = embedder(slow)
    # The memory store: its writes take no thread, so that waiting for every task to
    # block is waiting for every store to wait for its embedding.
    async with opened(clock, semantic="auto", embedder=model) as (_, work):
        results: list[bool] = []

        async def keep(i: int) -> None:
            results.append((await work.store_reflection(f"note {i}")).embedded)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep, 0)
            await trio.to_thread.run_sync(entered.wait)  # the first batch is running
            for i in range(1, 10):
                nursery.start_soon(keep, i)
            await trio.testing.wait_all_tasks_blocked()  # the others wait for it
            release.set()
    assert results == [True] * 10
    assert calls == [1, 9]  # the nine that arrived meanwhile made one batch


async def test_a_model_that_cannot_load_leaves_words(
    clock: Clock, durable_store: StoreMaker, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Callable[[list[str]], list[bytes]]:
        raise OSError("no weights here")

    store = durable_store()
    model = Embedder(broken, name="broken")
    with caplog.at_level(logging.WARNING, logger="triact.work"):
        async with opened(clock, store=store, semantic="auto", embedder=model) as (_, work):
            stored = await work.store_reflection("still kept")
            found = await work.search_reflections("kept")
            assert work.search_mode == words_method(store)
    assert stored.embedded is False
    assert found.method == words_method(store)
    assert [hit.reflection.content for hit in found.hits] == ["still kept"]
    warnings = [
        r.getMessage() for r in caplog.records if "search by meaning is off" in r.getMessage()
    ]
    assert warnings == ["search by meaning is off: OSError: no weights here"]


async def test_a_model_that_fails_to_embed_leaves_words(clock: Clock) -> None:
    def failing(texts: list[str]) -> list[bytes]:
        raise RuntimeError("out of memory")

    async with opened(clock, semantic="auto", embedder=embedder(failing)) as (_, work):
        stored = await work.store_reflection("kept all the same")
        found = await work.search_reflections("kept")
    assert stored.embedded is False
    assert found.method == "text-match"
    assert len(found.hits) == 1


@pytest.mark.parametrize("weight", [0.0, 0.2, 1.0])
async def test_age_weighting(hybrid: WorkSessions, clock: Clock, weight: float) -> None:
    work = hybrid
    object.__setattr__(work.config, "recency_weight", weight)  # frozen: tests only
    old = await work.store_reflection("same words here", project="p")
    clock.now += 15 * 86_400  # half a half-life (30 days by default)
    new = await work.store_reflection("same words here", project="p")
    found = await work.search_reflections("same words", project="p")
    by_id = {hit.reflection.id: hit.score for hit in found.hits}
    expected = (1 - weight) + weight * 0.5**0.5
    assert by_id[old.reflection.id] / by_id[new.reflection.id] == pytest.approx(expected)
    assert found.hits[0].reflection.id == new.reflection.id  # newest first among equals


async def test_conversations_are_their_own_notes(hybrid: WorkSessions) -> None:
    saved = await hybrid.save_conversation(
        "user: why did the deploy fail?\nassistant: the migration timed out", project="p"
    )
    await hybrid.store_reflection("the deploy migration timed out", project="p")
    found = await hybrid.search_conversations("deploy migration", project="p")
    assert saved.embedded is True
    assert found.method == "hybrid"
    assert [hit.excerpt.id for hit in found.hits] == [saved.excerpt.id]
    assert found.hits[0].excerpt.content.startswith("user: why")
    reflections = await hybrid.search_reflections("deploy migration", project="p")
    assert [hit.reflection.content for hit in reflections.hits] == [
        "the deploy migration timed out"
    ]


async def test_semantic_on_needs_the_extra(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(work_module, "semantic_installed", lambda: False)
    with pytest.raises(WorkStoreError, match=r"needs triact's semantic extra"):
        async with opened(clock, semantic="on"):
            pass
    async with opened(clock, semantic="auto") as (_, work):  # auto: words alone
        assert work.semantic is None
        assert work.search_mode == "text-match"


def test_age_weighting_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="recency_weight must be a number from 0 to 1"):
        WorkConfig(recency_weight=1.5)
    with pytest.raises(ValueError, match="recency_half_life_days must be a number of days"):
        WorkConfig(recency_half_life_days=0)
    with pytest.raises(ValueError, match="semantic"):
        WorkConfig(semantic="sometimes")


class _VectorsFail(MemoryWorkStore):
    """A memory store whose vectors cannot be kept."""

    async def put_vectors(self, kind: Any, model: str, rows: Any) -> None:
        await trio.lowlevel.checkpoint()
        raise triact.SessionStoreError("disk full")


async def test_a_store_that_cannot_keep_vectors_keeps_the_notes(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    config = triact.SessionConfig(wall_clock=clock)
    with caplog.at_level(logging.WARNING, logger="triact.work"):
        async with (
            triact.open_session_manager(config) as manager,
            open_work_sessions(manager, store=_VectorsFail(), embedder=embedder()) as work,
        ):
            stored = await work.store_reflection("kept without its vector")
            assert work.semantic is not None
            await work.semantic.backfill("reflection")  # fails the same way, said
            found = await work.search_reflections("vector")
    assert stored.embedded is False
    assert found.method == "hybrid"  # the query embeds; the note is found by its words
    assert [hit.reflection.content for hit in found.hits] == ["kept without its vector"]
    messages = [record.getMessage() for record in caplog.records]
    assert "keeping the vector of reflection 1 failed" in messages
    assert "embedding the stored reflections without a vector failed" in messages
