"""Search by meaning with the real model (all-MiniLM-L6-v2, the semantic extra's): a
paraphrase that words alone miss is found, exact words still rank first. Skipped where
the extra is not installed."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

import triact
from triact.work import Embedder
from triact.work._embedding import MODEL_NAME, load_minilm, semantic_installed

from .conftest import Clock, opened

pytestmark = pytest.mark.skipif(
    not semantic_installed(),
    reason="the semantic extra is not installed: pip install torch==2.13.0 (a CPU build), "
    "then pip install -e '.[semantic]' (docs/testing.md)",
)

#: The model, loaded once for the module (each test's Embedder shares it).
model = functools.cache(load_minilm)

NOTES = [
    "we re-read the version and try again",
    "the cache is invalidated on every deploy",
    "SQLite WAL mode lets readers run while one writer commits",
    "lunch was good, the soup especially",
    "the parser fails on empty input",
    "bm25 ranks documents by how rare their words are",
    "git hooks never run during checkpoint commits",
    "the retry budget is three attempts per request",
]


def real() -> Embedder:
    return Embedder(model, name=MODEL_NAME)


async def test_a_paraphrase_words_miss_is_found(clock: Clock, sqlite_path: Path) -> None:
    store = triact.SqliteStore(sqlite_path)
    async with opened(clock, store=store) as (_, words_only):
        for note in NOTES:
            clock.now += 60
            await words_only.store_reflection(note, project="p")
        missed = await words_only.search_reflections("retry on conflict", project="p")
    assert missed.method == "fts5-bm25"
    assert NOTES[0] not in [hit.reflection.content for hit in missed.hits]
    store = triact.SqliteStore(sqlite_path)
    async with opened(clock, store=store, semantic="on", embedder=real()) as (_, work):
        assert work.semantic is not None
        await work.semantic.backfill("reflection")  # stored without vectors above
        found = await work.search_reflections("retry on conflict", project="p", limit=3)
    assert found.method == "hybrid"
    contents = [hit.reflection.content for hit in found.hits]
    assert NOTES[0] in contents  # no word in common but "on"
    assert contents[0] == NOTES[7]  # "retry" itself, and close in meaning


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("WAL mode", NOTES[2]),
        ("empty input", NOTES[4]),
        ("checkpoint commits", NOTES[6]),
        ("retry budget", NOTES[7]),
    ],
)
async def test_exact_words_still_rank_first(clock: Clock, query: str, first: str) -> None:
    async with opened(clock, semantic="on", embedder=real()) as (_, work):
        for note in NOTES:
            clock.now += 60
            stored = await work.store_reflection(note, project="p")
            assert stored.embedded is True
        found = await work.search_reflections(query, project="p")
    assert found.method == "hybrid"
    assert found.hits[0].reflection.content == first


async def test_conversations_are_found_by_meaning(clock: Clock) -> None:
    async with opened(clock, semantic="on", embedder=real()) as (_, work):
        await work.save_conversation("user: lunch?\nassistant: the soup was good", project="p")
        target = await work.save_conversation(
            "user: the update was refused, someone wrote first\n"
            "assistant: then we re-read the version and try again",
            project="p",
        )
        found = await work.search_conversations("how do we handle a write conflict", project="p")
    assert found.method == "hybrid"
    assert found.hits[0].excerpt.id == target.excerpt.id
