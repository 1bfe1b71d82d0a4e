"""Smoke test of benchmarks/redis_writes.py: RedisStore's writes from 1, 16 and 64 tasks
beside the same writes sent one function call each, on a private Redis; one JSON object
per figure with the round trips per write. No timing is asserted."""

from __future__ import annotations

import shutil

import pytest

from ._run import FIGURE_KEYS, run_quick


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_quick_run_prints_a_json_line_per_figure() -> None:
    lines = run_quick("redis_writes.py")
    assert [line["bench"] for line in lines] == [f"redis_write_c{c}_cpu" for c in (1, 16, 64)]
    for line in lines:
        assert line.keys() >= FIGURE_KEYS | {"round_trips_per_write"}, line
        assert line["baseline_round_trips_per_write"] == 1
        assert line["median"] > 0
    by_c = {line["concurrency"]: line for line in lines}
    # One task: nothing to share a round trip with. Many: pipelines, fewer round trips.
    assert by_c[1]["round_trips_per_write"] == 1
    assert by_c[64]["round_trips_per_write"] < 1
