"""Smoke test of benchmarks/embedding.py: it runs, and prints one JSON figure per line
with its baseline and ratio. Timings are not asserted: machines are noisy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "embedding.py"


def test_quick_run_prints_one_json_figure_per_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
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
