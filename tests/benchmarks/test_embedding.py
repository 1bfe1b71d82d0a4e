"""Smoke test of benchmarks/embedding.py: it runs, and prints one JSON figure per line
with its baseline and ratio. Timings are not asserted: machines are noisy."""

from __future__ import annotations

import pytest

from ._run import run_quick


def test_quick_run_prints_one_json_figure_per_line() -> None:
    lines = run_quick("embedding.py", timeout=60)
    assert [line["bench"] for line in lines] == [
        "aio_update_round_trip",
        "aio_snapshot_round_trip",
        "aio_concurrent_updates",
    ]
    for line in lines:
        assert line["median"] > 0
        assert line["baseline_median"] > 0
        assert line["ratio"] == pytest.approx(line["median"] / line["baseline_median"], rel=0.01)
        assert line["ok"] is True
