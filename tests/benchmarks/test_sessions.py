"""Smoke test of benchmarks/sessions.py: it runs, and prints one JSON object per line
with the keys every figure has. No timing is asserted. Its ``shared`` figures are
benchmarks/shared_sqlite.py's, smoke-tested in test_shared_sqlite.py (a dozen processes
started: twice would be half a minute more of the suite)."""

from __future__ import annotations

from ._run import FIGURE_KEYS, run_quick

BENCHES = {
    *(
        f"{bench}{versus}"
        for bench in ("update", "update_sequential", "update_awaiting")
        for versus in ("", "_vs_dict_lock", "_vs_trio_lock", "_vs_asyncio_actor")
    ),
    "durable_update",
    "durable_update_sync_normal",
    "create_session",
    "create_session_bound",
    "validate_security",
    "memory_per_idle_session",
    "memory_per_called_idle_session",
    "expiry_longest_gap",
    "expiry_longest_gap_real_clock",
    "gc_worst_call",
}


def test_quick_run_prints_a_json_line_per_figure() -> None:
    lines = run_quick("sessions.py", "--skip", "shared")
    for line in lines:
        assert line.keys() >= FIGURE_KEYS, line
        assert len(line["runs"]) == 1
    assert {line["bench"] for line in lines} == BENCHES
    assert all(line.get("lost", 0) == 0 for line in lines)
    assert all(line.get("baseline_lost", 0) == 0 for line in lines)
