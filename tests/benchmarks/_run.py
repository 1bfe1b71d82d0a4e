"""Running a benchmark script as its smoke test: ``--quick --runs 1``, one JSON object
per line on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

#: Keys every figure has (benchmarks/_common.py writes them).
FIGURE_KEYS = frozenset(
    {"bench", "unit", "median", "runs", "baseline", "baseline_median", "ratio", "target", "ok"}
)


def run_quick(script: str, *args: str, timeout: float = 120) -> list[dict[str, Any]]:
    """The figures ``benchmarks/<script> *args`` prints in a quick run; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--runs", "1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]
