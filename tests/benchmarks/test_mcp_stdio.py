"""Smoke test of benchmarks/mcp_stdio.py: it starts both servers, runs both clients, and
prints one JSON object per line with the keys every figure has; with Node, the same
beside the TypeScript SDK's server. No timing is asserted."""

from __future__ import annotations

import shutil

import pytest

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
TS_BENCHES = [f"ts_sdk_handshake_c{c}{suffix}" for c in (16, 256) for suffix in ("", "_p99")]
HAVE_NODE = shutil.which("node") is not None and shutil.which("npm") is not None


def _check(lines: list[dict[str, object]]) -> None:
    for line in lines:
        assert line.keys() >= KEYS, line
        assert len(line["runs"]) == 1
        assert line["median"] > 0
        assert line["baseline_median"] > 0
        assert isinstance(line["ok"], bool)
        # Every call was answered without error, and in order per session, on both sides.
        assert line["errors"] == line["baseline_errors"] == 0
        assert line["out_of_order"] == line["baseline_out_of_order"] == 0


def test_quick_run_prints_one_json_figure_per_line() -> None:
    lines = run_quick("mcp_stdio.py", "--only", "pipelined") + run_quick(
        "mcp_stdio.py", "--only", "sdk"
    )
    assert [line["bench"] for line in lines] == BENCHES
    _check(lines)
    protocols = {line["bench"]: line["protocol"] for line in lines}
    assert protocols["pipelined_handshake_c16"] == "2025-11-25"
    assert protocols["pipelined_stateless_c16"] == "2026-07-28"
    assert protocols["sdk_client_c16"] == "2025-11-25"


@pytest.mark.skipif(not HAVE_NODE, reason="needs Node.js and npm")
def test_quick_run_beside_the_typescript_sdk_server() -> None:
    # npm ci of baselines/ts_sdk's lock file runs once per lock file (cached).
    lines = run_quick("mcp_stdio.py", "--only", "ts", timeout=600)
    assert [line["bench"] for line in lines] == TS_BENCHES
    _check(lines)
    for line in lines:
        assert line["protocol"] == "2025-11-25"
        assert "TypeScript SDK" in line["baseline"]
        # CPU time comes in 10 ms ticks: a quick run may see 0 on either side.
        assert line["server_cpu_ratio"] is None or line["server_cpu_ratio"] >= 0
