"""Smoke test of benchmarks/actors.py: it runs, and prints one JSON object per line
with the keys every figure has. Timings are not asserted: machines are noisy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "actors.py"
KEYS = {
    "bench",
    "unit",
    "median",
    "runs",
    "baseline",
    "baseline_median",
    "baseline_runs",
    "ratio",
    "target",
    "ok",
}
BENCHES = [
    "ask_round_trip",
    "memory_per_idle_actor",
    "memory_per_idle_actor_after_one_ask",
    "memory_per_idle_actor_after_one_tell",
    "memory_per_idle_actor_with_idle_timeout",
    "spawn_rate",
    "fanin_sync_handler",
    "fanin_async_handler",
]


def run_quick() -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_quick_run_prints_one_json_figure_per_line() -> None:
    lines = run_quick()
    assert [line["bench"] for line in lines] == BENCHES
    for line in lines:
        assert line.keys() >= KEYS, line
        assert len(line["runs"]) == 1
        assert line["median"] > 0
        assert line["baseline_median"] > 0
        assert isinstance(line["ok"], bool)
    fanins = [line for line in lines if line["bench"].startswith("fanin_")]
    assert all(line["lost"] == 0 for line in fanins)
