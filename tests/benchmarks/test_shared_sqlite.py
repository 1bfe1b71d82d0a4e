"""Smoke test of benchmarks/shared_sqlite.py: it runs one, two and three processes on
one SQLite file, loses no update, and prints one JSON object per figure. No timing is
asserted."""

from __future__ import annotations

from ._run import FIGURE_KEYS, run_quick


def test_quick_run_prints_a_json_line_per_figure() -> None:
    lines = run_quick("shared_sqlite.py")
    for line in lines:
        assert line.keys() >= FIGURE_KEYS, line
        assert line["lost"] == 0
    assert [line["bench"] for line in lines] == [
        f"shared_sqlite_{mode}_{count}" for mode in ("owner", "guest") for count in (1, 2, 3)
    ]
