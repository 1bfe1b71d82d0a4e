"""Smoke test of benchmarks/semantic.py: it runs with the real model and prints one JSON
object per figure, with ``--redis`` (Redis beside SQLite) where the redis-server binary
is installed. No timing is asserted. Skipped where the semantic extra is not
installed."""

from __future__ import annotations

import shutil

import pytest

from triact.work._embedding import semantic_installed

from ._run import FIGURE_KEYS, run_quick


@pytest.mark.skipif(not semantic_installed(), reason="the semantic extra is not installed")
def test_quick_run_prints_a_json_line_per_figure() -> None:
    redis = shutil.which("redis-server") is not None
    lines = run_quick("semantic.py", *(["--redis"] if redis else []), timeout=300)
    on_redis = [
        "semantic_search_hybrid_redis",
        "semantic_search_words_redis",
        "semantic_store",
        "semantic_store_redis",
    ]
    assert [line["bench"] for line in lines] == [
        "semantic_model_load",
        "semantic_embed_one",
        "semantic_embed_batch",
        "semantic_search_hybrid",
        *(on_redis if redis else ["semantic_store"]),
        "semantic_serve_startup",
    ]
    for line in lines:
        assert line.keys() >= FIGURE_KEYS, line
        assert line["median"] > 0
    searches = [line for line in lines if line["bench"].startswith("semantic_search")]
    for search in searches:
        assert search["p99"] >= search["median"]
        assert search["baseline_median"] > 0
