"""Smoke test of benchmarks/sessions.py: it runs, and prints one JSON object per line
with the keys every figure has. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "sessions.py"
KEYS = {
    "bench",
    "unit",
    "median",
    "runs",
    "baseline",
    "baseline_median",
    "ratio",
    "target",
    "ok",
}
BENCHES = {
    "update",
    "update_vs_trio_lock",
    "update_awaiting",
    "update_awaiting_vs_trio_lock",
    "durable_update",
    "durable_update_sync_normal",
    "create_session",
    "create_session_bound",
    "validate_security",
    "memory_per_idle_session",
    "expiry_longest_gap",
    "expiry_longest_gap_real_clock",
}


def test_quick_run_prints_a_json_line_per_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(text) for text in done.stdout.splitlines()]
    for line in lines:
        assert line.keys() >= KEYS, line
        assert len(line["runs"]) == 1
    assert {line["bench"] for line in lines} == BENCHES
    assert all(line.get("lost", 0) == 0 for line in lines)
    assert all(line.get("baseline_lost", 0) == 0 for line in lines)
