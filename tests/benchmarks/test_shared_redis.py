"""Smoke test of benchmarks/shared_redis.py: it runs one, two and three processes on
one private Redis, loses no update, and prints one JSON object per figure with the
function calls per update. No timing is asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ._run import BENCHMARKS, FIGURE_KEYS


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_quick_run_prints_a_json_line_per_figure() -> None:
    script = str(BENCHMARKS / "shared_redis.py")
    done = subprocess.run(
        [sys.executable, script, "--quick", "--runs", "1", "--fsync", "everysec"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    for line in lines:
        assert line.keys() >= FIGURE_KEYS | {"fcall_per_update"}, line
        assert line["lost"] == 0
        assert 0 < line["fcall_per_update"] <= 1.5
    assert [line["bench"] for line in lines] == [
        f"shared_redis_everysec_{mode}_{count}"
        for mode in ("owner", "guest")
        for count in (1, 2, 3)
    ]
