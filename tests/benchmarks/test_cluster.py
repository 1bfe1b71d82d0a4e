"""Smoke test of benchmarks/cluster.py: triact serve --http on one and three nodes on a
private Redis, beside the SDK's HTTP server keeping sessions in Redis by GET, change,
SET on one and three processes; one JSON object per line with the keys every figure
has. No timing is asserted; triact loses no acknowledged update."""

from __future__ import annotations

import shutil

import pytest

from ._run import FIGURE_KEYS, run_quick

BENCHES = [
    "cluster_1node",
    "cluster_1node_cpu",
    "cluster_3node_random",
    "cluster_3node_random_vs_1node",
    "cluster_3node_affinity_vs_1node",
    "cluster_3node_random_cpu",
]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_quick_run_prints_one_json_figure_per_line() -> None:
    lines = run_quick("cluster.py", timeout=240)
    assert [line["bench"] for line in lines] == BENCHES
    by_name = {line["bench"]: line for line in lines}
    for line in lines:
        assert line.keys() >= FIGURE_KEYS | {"sessions", "callers", "protocol"}, line
        assert line["median"] > 0
        assert line["baseline_median"] > 0
    for name in ("cluster_1node", "cluster_3node_random", "cluster_3node_affinity_vs_1node"):
        line = by_name[name]
        assert line["updates"] > 0
        assert line["errors"] == 0
        assert line["lost"] == 0  # every acknowledged increment is in the final count
        assert line["acknowledged"] >= line["updates"]
    for name in ("cluster_1node", "cluster_3node_random"):
        line = by_name[name]
        assert "GET, change, SET" in line["baseline"]
        assert line["baseline_updates"] > 0
        assert line["baseline_lost"] >= 0  # reported; how many depends on the overlap
    assert by_name["cluster_1node"]["target"] == "ratio >= 3"
    assert by_name["cluster_1node_cpu"]["target"] == "ratio <= 0.333333"
    assert by_name["cluster_3node_random_vs_1node"]["target"] == "ratio >= 0.6"
    assert by_name["cluster_3node_affinity_vs_1node"]["target"] == "ratio >= 0.8"
