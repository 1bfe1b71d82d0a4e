"""The work layer's records kept per principal, on every store: reflections,
conversation excerpts (by words and, with numpy, by meaning), their bounds, the
directory index and handoffs; and a database of layout 1 (made by triact before
principals) brought to layout 2, its rows becoming those of no principal."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import triact
from triact.work import WorkConfig, WorkSessions, WorkStoreError
from triact.work._sqlite import WORK_TABLES_VERSION, SqliteWorkStore

from .conftest import Clock, StoreMaker, opened

#: Made with triact at d640ba8 (work tables of layout 1): a session that ended in
#: ENDED (a checkpoint "before the migration"), the live session of LIVE, reflections
#: "the parser fails on empty input" (project parser, tag bug) and "retry the flaky
#: network test" (no project), the conversation excerpt "we decided to keep bm25 for
#: words" (project parser), each with a vector of the "hashed-words" model.
V1_DATABASE = Path(__file__).parent / "data" / "work-v1.db"
ENDED, ENDED_ID = "/tmp/triact-work-v1/ended", "QjyLL8iFORLBrolJdYhv9g"
LIVE, LIVE_ID = "/tmp/triact-work-v1/live", "fsNuZ8XK4PmYeHQwiF6-gA"


@pytest.fixture
async def work(clock: Clock, any_store: StoreMaker) -> AsyncIterator[WorkSessions]:
    async with opened(clock, store=any_store()) as (_, work):
        yield work


async def test_each_principal_finds_only_its_own_notes(work: WorkSessions) -> None:
    for principal in (None, "alice", "bob"):
        who = principal or "nobody"
        await work.store_reflection(f"parser note of {who}", project="p", principal=principal)
        await work.store_reflection(f"parser aside of {who}", principal=principal)
        await work.save_conversation(f"parser talk of {who}", project="p", principal=principal)
    for principal in (None, "alice", "bob"):
        who = principal or "nobody"
        everywhere = await work.search_reflections("parser", principal=principal)
        assert sorted(hit.reflection.content for hit in everywhere.hits) == [
            f"parser aside of {who}",
            f"parser note of {who}",
        ]
        in_p = await work.search_reflections("parser", project="p", principal=principal)
        assert [hit.reflection.content for hit in in_p.hits] == [f"parser note of {who}"]
        talks = await work.search_conversations("parser", principal=principal)
        assert [hit.excerpt.content for hit in talks.hits] == [f"parser talk of {who}"]
    # A principal nobody stored for finds nothing.
    assert (await work.search_reflections("parser", principal="carol")).hits == ()


async def test_a_principal_fills_only_its_own_bound(
    clock: Clock, durable_store: StoreMaker
) -> None:
    config = WorkConfig(max_reflections_per_project=2)
    async with opened(clock, config, store=durable_store()) as (_, work):
        await work.store_reflection("bob keeps this", project="p", principal="bob")
        for n in range(3):
            stored = await work.store_reflection(f"alice {n}", project="p", principal="alice")
        assert (stored.kept, stored.dropped) == (2, 1)
        bobs = await work.search_reflections("keeps", project="p", principal="bob")
        assert [hit.reflection.content for hit in bobs.hits] == ["bob keeps this"]


async def test_directories_and_handoffs_are_kept_per_principal(
    work: WorkSessions, tmp_path: Path
) -> None:
    alice = await work.start(tmp_path, principal="alice")
    bob = await work.start(tmp_path, principal="bob")
    assert bob.created
    assert bob.session.id != alice.session.id
    # Bob's start did not take the directory from alice: she resumes hers.
    again = await work.start(tmp_path, principal="alice")
    assert (again.created, again.session.id) == (False, alice.session.id)
    await work.checkpoint(alice.session, "alice was here")
    await work.end(alice.session)
    # Bob (still in his session) and the caller without a principal see no handoff.
    assert (await work.status(bob.session)).previous_handoff is None
    nobody = await work.start(tmp_path)
    assert nobody.created
    assert nobody.report.previous_handoff is None
    hers = await work.start(tmp_path, principal="alice")
    assert hers.created
    handoff = hers.report.previous_handoff
    assert handoff is not None
    assert handoff.session_id == alice.session.id
    assert handoff.checkpoints[0].note == "alice was here"
    # Bob ends his; alice's handoff stays hers.
    await work.end(bob.session)
    assert (await work.status(hers.session)).previous_handoff == handoff


async def test_the_hybrid_path_keeps_principals_apart(clock: Clock, any_store: StoreMaker) -> None:
    pytest.importorskip("numpy", reason="hybrid search needs numpy (the semantic extra)")
    from .test_semantic import embedder

    store = any_store()
    async with opened(clock, store=store, semantic="auto", embedder=embedder()) as (_, work):
        await work.store_reflection("retry the flaky test", principal="alice")
        await work.store_reflection("retry the slow build", principal="bob")
        await work.save_conversation("conflicts in the merge", principal="bob")
        for principal, mine in (
            ("alice", "retry the flaky test"),
            ("bob", "retry the slow build"),
        ):
            # "again" is a synonym of "retry" for the stand-in model: found by meaning.
            found = await work.search_reflections("again", principal=principal)
            assert found.method == "hybrid"
            assert [hit.reflection.content for hit in found.hits] == [mine]
        assert (await work.search_conversations("clash", principal="alice")).hits == ()
        talk = await work.search_conversations("clash", principal="bob")
        assert [hit.excerpt.content for hit in talk.hits] == ["conflicts in the merge"]
        assert (await work.search_reflections("again")).hits == ()


# -- layout 1 -> 2 -----------------------------------------------------------------------


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    path = tmp_path / "work-v1.db"
    shutil.copyfile(V1_DATABASE, path)
    return path


def layout(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'work_schema'").fetchone()
    return str(value)


async def test_a_layout_1_database_keeps_its_rows_as_no_principals(v1_copy: Path) -> None:
    assert layout(v1_copy) == "1"
    with sqlite3.connect(v1_copy) as conn:
        (then,) = conn.execute("SELECT MAX(updated_at) FROM work_directories").fetchone()
    clock = Clock(then + 60)  # while its live session is alive
    async with opened(clock, store=triact.SqliteStore(v1_copy)) as (_, work):
        assert layout(v1_copy) == str(WORK_TABLES_VERSION) == "2"
        store = work.store
        assert isinstance(store, SqliteWorkStore)
        assert await store.session_for(LIVE) == LIVE_ID
        assert await store.session_for(LIVE, principal="alice") is None
        handoff = await store.handoff(ENDED)
        assert handoff is not None
        assert handoff.session_id == ENDED_ID
        assert handoff.checkpoints[0].note == "before the migration"
        assert await store.handoff(ENDED, principal="alice") is None

        found = await work.search_reflections("parser empty")
        assert [
            (hit.reflection.content, hit.reflection.tags, hit.reflection.project)
            for hit in found.hits
        ] == [("the parser fails on empty input", ("bug",), "parser")]
        assert len((await work.search_reflections("retry network")).hits) == 1
        talk = await work.search_conversations("bm25", project="parser")
        assert [hit.excerpt.content for hit in talk.hits] == ["we decided to keep bm25 for words"]
        for principal in ("alice", "bob"):
            assert (await work.search_reflections("parser", principal=principal)).hits == ()
            assert (await work.search_conversations("bm25", principal=principal)).hits == ()
        # The old rows go on as before: bounds count them, new ones join them.
        stored = await work.store_reflection("a new parser note", project="parser")
        assert (stored.reflection.id, stored.kept) == (3, 2)
        theirs = await work.store_reflection(
            "alice's parser note", project="parser", principal="alice"
        )
        assert theirs.kept == 1
        # The live session of layout 1 is resumed by a caller without a principal only.
        await trio.Path(LIVE).mkdir(parents=True, exist_ok=True)
        resumed = await work.start(LIVE)
        assert (resumed.created, resumed.session.id) == (False, LIVE_ID)
        assert resumed.report.project == "parser"
        other = await work.start(LIVE, principal="alice")
        assert other.created
        assert other.session.id != LIVE_ID
        assert (await work.start(LIVE)).session.id == LIVE_ID
    # Opened again, it is layout 2 already: nothing is migrated twice.
    async with opened(clock, store=triact.SqliteStore(v1_copy)) as (_, work):
        found = await work.search_reflections("parser", project="parser")
        assert sorted(hit.reflection.content for hit in found.hits) == [
            "a new parser note",
            "the parser fails on empty input",
        ]


async def test_layout_1_vectors_serve_the_hybrid_path(clock: Clock, v1_copy: Path) -> None:
    pytest.importorskip("numpy", reason="hybrid search needs numpy (the semantic extra)")
    from .test_semantic import embedder

    store = triact.SqliteStore(v1_copy)
    async with opened(clock, store=store, semantic="auto", embedder=embedder()) as (_, work):
        found = await work.search_reflections("flaky network")
        assert found.method == "hybrid"
        assert [hit.reflection.content for hit in found.hits] == ["retry the flaky network test"]
        assert found.hits[0].similarity is not None
        assert found.hits[0].similarity > 0.5
        assert (await work.search_reflections("flaky network", principal="alice")).hits == ()


async def test_a_newer_layout_is_refused(clock: Clock, v1_copy: Path) -> None:
    with sqlite3.connect(v1_copy) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'work_schema'")
    with pytest.raises(WorkStoreError, match=r"layout 3, newer than this triact understands \(2\)"):
        async with opened(clock, store=triact.SqliteStore(v1_copy)):
            pass
