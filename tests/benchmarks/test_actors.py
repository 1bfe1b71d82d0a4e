"""Smoke test of benchmarks/actors.py: it runs, and prints one JSON object per line
with the keys every figure has. Timings are not asserted: machines are noisy."""

from __future__ import annotations

from ._run import FIGURE_KEYS, run_quick

BENCHES = [
    "ask_round_trip",
    "ask_round_trip_every_ask_yields",
    "ask_round_trip_async_handler",
    "memory_per_idle_actor",
    "memory_per_idle_actor_after_one_ask",
    "memory_per_idle_actor_after_one_tell",
    "memory_per_idle_actor_with_idle_timeout",
    "spawn_rate",
    "fanin_sync_handler",
    "fanin_sync_handler_every_ask_yields",
    "fanin_async_handler",
    "fanin_async_handler_vs_asyncio_actor",
]


def test_quick_run_prints_one_json_figure_per_line() -> None:
    lines = run_quick("actors.py")  # (the default timeout: a loaded machine took 62 s)
    assert [line["bench"] for line in lines] == BENCHES
    for line in lines:
        assert line.keys() >= FIGURE_KEYS | {"baseline_runs"}, line
        assert len(line["runs"]) == 1
        assert line["median"] > 0
        assert line["baseline_median"] > 0
        assert isinstance(line["ok"], bool)
    fanins = [line for line in lines if line["bench"].startswith("fanin_")]
    assert all(line["lost"] == 0 for line in fanins)
    assert all(line.get("baseline_lost", 0) == 0 for line in fanins)
    # The async figures against the asyncio actor also report CPU time per ask.
    by_name = {line["bench"]: line for line in lines}
    for name in ("ask_round_trip_async_handler", "fanin_async_handler_vs_asyncio_actor"):
        line = by_name[name]
        assert line["cpu_us_per_ask"] > 0, line
        assert line["baseline_cpu_us_per_ask"] > 0, line
        expected = line["baseline_cpu_us_per_ask"] / line["cpu_us_per_ask"]
        assert abs(line["cpu_ratio"] - expected) <= 0.01 * expected + 0.001, line
