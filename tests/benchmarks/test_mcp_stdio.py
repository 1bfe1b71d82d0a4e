"""Smoke test of benchmarks/mcp_stdio.py: it starts both servers, runs both clients, and
prints one JSON object per line with the keys every figure has. No timing is asserted."""

from __future__ import annotations

from ._run import FIGURE_KEYS, run_quick

KEYS = FIGURE_KEYS | {
    "baseline_runs",
    "concurrency",
    "protocol",
    "errors",
    "out_of_order",
    "baseline_errors",
    "baseline_out_of_order",
}
BENCHES = [
    f"{client}_c{c}{suffix}"
    for client in ("pipelined_handshake", "pipelined_stateless", "sdk_client")
    for c in (1, 16)
    for suffix in ("", "_p99")
]


def test_quick_run_prints_one_json_figure_per_line() -> None:
    lines = run_quick("mcp_stdio.py")
    assert [line["bench"] for line in lines] == BENCHES
    for line in lines:
        assert line.keys() >= KEYS, line
        assert len(line["runs"]) == 1
        assert line["median"] > 0
        assert line["baseline_median"] > 0
        assert isinstance(line["ok"], bool)
        # Every call was answered without error, and in order per session, on both sides.
        assert line["errors"] == line["baseline_errors"] == 0
        assert line["out_of_order"] == line["baseline_out_of_order"] == 0
    protocols = {line["bench"]: line["protocol"] for line in lines}
    assert protocols["pipelined_handshake_c16"] == "2025-11-25"
    assert protocols["pipelined_stateless_c16"] == "2026-07-28"
    assert protocols["sdk_client_c16"] == "2025-11-25"
