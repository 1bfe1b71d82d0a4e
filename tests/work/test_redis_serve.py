"""The work layer on Redis through real ``triact serve --store redis://...`` processes
and the official SDK client: what one process stores, another finds, and so does a
process started after both ended; with the semantic extra, by meaning, through the
vectors the first process kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from triact.work._embedding import semantic_installed
from triact.work._redis_lua import LIBRARY

from .._redis import RedisPlace
from ..transport._sdk import sdk_session, structured

needs_extra = pytest.mark.skipif(
    not semantic_installed(),
    reason="the semantic extra is not installed: pip install torch==2.13.0 (a CPU build), "
    "then pip install -e '.[semantic]' (docs/testing.md)",
)


def store_args(place: RedisPlace, tmp_path: Path, semantic: str) -> list[str]:
    return [
        "--store",
        f"{place.url}?prefix={place.prefix}",
        "--secret-key-file",
        str(tmp_path / "redis.key"),
        "--semantic",
        semantic,
    ]


def home(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return directory


async def test_two_servers_share_notes_and_directories_and_a_restart_keeps_them(
    redis_place: RedisPlace, tmp_path: Path
) -> None:
    args = store_args(redis_place, tmp_path, "off")
    project = home(tmp_path, "project")
    async with (
        sdk_session(home(tmp_path, "one"), *args) as one,
        sdk_session(home(tmp_path, "two"), *args) as two,
    ):
        stored = structured(
            await one.call_tool(
                "reflection_store",
                {"content": "retrying on conflicts needs a fresh read", "project": "p"},
            )
        )
        found = structured(
            await two.call_tool("reflection_search", {"query": "conflict retry", "project": "p"})
        )
        assert found["method"] == "redis-bm25"
        assert [(r["id"], r["content"]) for r in found["results"]] == [
            (stored["reflection"]["id"], "retrying on conflicts needs a fresh read")
        ]
        # The directory index is shared too: the second resumes the first's session.
        started = structured(
            await one.call_tool("session_start", {"working_directory": str(project)})
        )
        resumed = structured(
            await two.call_tool("session_start", {"working_directory": str(project)})
        )
        assert resumed["session_id"] == started["session_id"]
        assert resumed["created"] is False
        await two.call_tool("session_end", {"session_id": started["session_id"]})
    async with sdk_session(home(tmp_path, "three"), *args) as three:
        again = structured(
            await three.call_tool("reflection_search", {"query": "fresh read", "project": "p"})
        )
        assert [r["id"] for r in again["results"]] == [stored["reflection"]["id"]]
        report = structured(
            await three.call_tool("session_start", {"working_directory": str(project)})
        )
        assert report["created"] is True
        assert report["report"]["previous_handoff"]["session_id"] == started["session_id"]


@needs_extra
async def test_a_paraphrase_is_found_through_the_vectors_another_server_kept(
    redis_place: RedisPlace, tmp_path: Path
) -> None:
    args = store_args(redis_place, tmp_path, "on")
    notes = [
        "we re-read the version and try again",
        "the cache is invalidated on every deploy",
        "the parser fails on empty input",
    ]
    async with sdk_session(home(tmp_path, "one"), *args) as one:
        for note in notes:
            stored = structured(
                await one.call_tool("reflection_store", {"content": note, "project": "p"})
            )
            assert stored["embedded"] is True
    with redis_place.client() as client:  # kept in Redis, float32, by the first
        for note_id in range(1, len(notes) + 1):
            vector = client.hget(f"{redis_place.prefix}work:r:n:{note_id}", "v")
            assert vector is not None
            assert len(vector) == 384 * 4
        assert client.function_list(library=LIBRARY)
    async with sdk_session(home(tmp_path, "two"), *args) as two:
        found = structured(
            await two.call_tool("reflection_search", {"query": "retry on conflict", "project": "p"})
        )
    assert found["method"] == "hybrid"
    best = found["results"][0]
    assert best["content"] == notes[0]  # no word in common with the query
    assert best["similarity"] is not None
    log = (tmp_path / "two" / "stderr.log").read_text()
    assert "that had no vector" not in log  # nothing was embedded again
