"""Smoke test of benchmarks/mcp_http.py: it starts triact serve --http, the SDK's
streamable HTTP server on uvicorn and the bare ASGI floor on both HTTP servers, drives
them with its client in both eras, and prints one JSON object per line with the keys
every figure has; with Node, the same beside the TypeScript SDK's streamable HTTP
server. No timing is asserted."""

from __future__ import annotations

import shutil

import pytest

from ._run import FIGURE_KEYS, run_quick

KEYS = FIGURE_KEYS | {
    "baseline_runs",
    "concurrency",
    "protocol",
    "server_cpu_us_per_call",
    "baseline_server_cpu_us_per_call",
    "client_cpu_us_per_call",
    "errors",
    "out_of_order",
    "baseline_errors",
    "baseline_out_of_order",
}
BENCHES = [
    f"{prefix}_c{c}{suffix}"
    for prefix in (
        "http_handshake",
        "http_stateless",
        "floor_triact_h11",
        "floor_hypercorn",
        "floor_h11_trio",
    )
    for c in (1, 16, 64)
    for suffix in ("", "_cpu", "_p99")
]


TS_BENCHES = [
    f"http_ts_sdk_handshake_c{c}{suffix}" for c in (16, 256) for suffix in ("", "_cpu", "_p99")
]
HAVE_NODE = shutil.which("node") is not None and shutil.which("npm") is not None


def test_quick_run_prints_one_json_figure_per_line() -> None:
    lines = run_quick("mcp_http.py", "--only", "sdk", timeout=240) + run_quick(
        "mcp_http.py", "--only", "floor", timeout=240
    )
    assert [line["bench"] for line in lines] == BENCHES
    for line in lines:
        assert line.keys() >= KEYS, line
        assert len(line["runs"]) == 1
        if line["bench"].endswith("_cpu"):
            # CPU time is read from /proc in clock ticks (10 ms): a quick run's few
            # calls may take less than one tick on one side, so only the sign is sure.
            assert line["median"] >= 0
            assert line["baseline_median"] >= 0
        else:
            assert line["median"] > 0
            assert line["baseline_median"] > 0
        assert isinstance(line["ok"], bool)
        # Every call was answered without error, and in order per session, on both sides.
        assert line["errors"] == line["baseline_errors"] == 0
        assert line["out_of_order"] == line["baseline_out_of_order"] == 0
    by_name = {line["bench"]: line for line in lines}
    assert by_name["http_handshake_c16"]["protocol"] == "2025-11-25"
    assert by_name["http_stateless_c16"]["protocol"] == "2026-07-28"
    assert "uvicorn" in by_name["http_stateless_c16"]["baseline"]
    # The targets of the issue are on the C = 16 lines; floor lines have none.
    assert by_name["http_handshake_c16"]["target"] == "ratio >= 3"
    assert by_name["http_handshake_c16_cpu"]["target"] == "ratio <= 0.333333"
    assert by_name["floor_hypercorn_c16"]["target"] is None


@pytest.mark.skipif(not HAVE_NODE, reason="needs Node.js and npm")
def test_quick_run_beside_the_typescript_sdk_server() -> None:
    # npm ci of baselines/ts_sdk's lock file runs once per version of its files (cached).
    lines = run_quick("mcp_http.py", "--only", "ts", timeout=600)
    assert [line["bench"] for line in lines] == TS_BENCHES
    for line in lines:
        assert line.keys() >= KEYS, line
        assert line["protocol"] == "2025-11-25"
        assert "TypeScript SDK" in line["baseline"]
        assert line["errors"] == line["baseline_errors"] == 0
        assert line["out_of_order"] == line["baseline_out_of_order"] == 0
        if not line["bench"].endswith("_cpu"):  # CPU time comes in 10 ms ticks
            assert line["median"] > 0
            assert line["baseline_median"] > 0
    targets = {line["bench"]: line["target"] for line in lines}
    assert targets["http_ts_sdk_handshake_c256"] == "ratio >= 1"
    assert targets["http_ts_sdk_handshake_c16_cpu"] == "ratio <= 1"
    assert targets["http_ts_sdk_handshake_c256_p99"] == "ratio <= 1"
