"""Search by meaning through ``triact serve`` and the official SDK client: the same
results after a restart (the vectors are kept in the SQLite file), and a server whose
work layer never embeds never imports the model's libraries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from triact.work._embedding import semantic_installed

from ._sdk import sdk_session, structured

needs_extra = pytest.mark.skipif(
    not semantic_installed(),
    reason="the semantic extra is not installed: pip install torch==2.13.0 (a CPU build), "
    "then pip install -e '.[semantic]' (docs/testing.md)",
)

NOTES = [
    "we re-read the version and try again",
    "the cache is invalidated on every deploy",
    "SQLite WAL mode lets readers run while one writer commits",
    "the parser fails on empty input",
]


@needs_extra
async def test_results_are_the_same_after_a_restart(tmp_path: Path) -> None:
    args = ("--store", f"sqlite:{tmp_path / 'sessions.db'}", "--semantic", "on")
    query = {"query": "retry on conflict", "project": "p"}
    async with sdk_session(tmp_path, *args) as client:
        for note in NOTES:
            stored = structured(
                await client.call_tool("reflection_store", {"content": note, "project": "p"})
            )
            assert stored["embedded"] is True
        await client.call_tool(
            "conversation_save",
            {"content": "user: refused update?\nassistant: re-read and retry", "project": "p"},
        )
        before = structured(await client.call_tool("reflection_search", query))
        excerpts = structured(await client.call_tool("conversation_search", query))
    assert before["method"] == "hybrid"
    assert NOTES[0] in [r["content"] for r in before["results"]]
    assert excerpts["method"] == "hybrid"
    assert excerpts["count"] == 1
    async with sdk_session(tmp_path, *args) as client:
        after = structured(await client.call_tool("reflection_search", query))
    # The same notes in the same order, with the same similarities; the scores only
    # as much older as the seconds between the two searches make them.
    ranked = [(r["id"], r["similarity"]) for r in before["results"]]
    assert [(r["id"], r["similarity"]) for r in after["results"]] == ranked
    scores = [r["score"] for r in before["results"]]
    assert [r["score"] for r in after["results"]] == pytest.approx(scores, rel=1e-4)


def test_the_model_is_not_imported_until_used(tmp_path: Path) -> None:
    """A server with search by meaning on (where the extra is installed) imports
    neither torch nor sentence-transformers nor numpy to start, list and call tools
    that do not embed."""
    script = textwrap.dedent(
        f"""
        import sys, trio, triact
        from triact.transport import SESSION_TOOLS
        from triact.work import open_work_sessions, work_tools, WorkConfig

        async def main():
            store = triact.SqliteStore({str(tmp_path / "s.db")!r})
            config = triact.SessionConfig(store=store)
            async with triact.open_session_manager(config) as manager:
                async with open_work_sessions(manager, WorkConfig(semantic="auto")) as work:
                    tools = SESSION_TOOLS | work_tools(work)
                    tools.definitions(stateless=False)
                    await work.start({str(tmp_path)!r})
                    print(work.search_mode)

        trio.run(main)
        heavy = {{"torch", "sentence_transformers", "numpy", "transformers"}}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    mode, heavy = done.stdout.split()
    assert mode == ("hybrid" if semantic_installed() else "fts5-bm25")
    assert heavy == "[]"
