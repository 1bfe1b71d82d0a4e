"""``triact stress --target cluster``: three ``triact serve --http`` nodes on one Redis
(a private one with AOF, fsync always), each call to a random node, while one node is
killed and restarted and another is paused past the lease: no call without an answer
is a violation by itself, and the history checker finds none."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from triact.testing._cluster import PAUSE, ClusterTarget, open_cluster
from triact.testing._stress import (
    StressOptions,
    add_stress_parser,
    options_from_args,
    stress,
)
from triact.testing._targets import StressTarget

from .._redis import RedisPlace, RedisServer

#: Seconds of load: the shortest the faults fit in under CI.
DURATION = 8.0 if os.environ.get("CI") else 12.0


async def test_a_cluster_run_with_a_killed_and_a_paused_node_checks_out(
    private_redis: RedisServer,
) -> None:
    seen: list[ClusterTarget] = []
    ports: list[list[int]] = []

    @asynccontextmanager
    async def cluster() -> AsyncIterator[StressTarget]:
        async with open_cluster(private_redis.url, 3, None, 11, 8, DURATION) as target:
            seen.append(target)
            ports.append([node.port for node in target.nodes])
            yield target
            ports.append([node.port for node in target.nodes])

    options = StressOptions(
        sessions=6,
        clients=8,
        duration=DURATION,
        target="cluster",
        store=private_redis.url,
        processes=3,
        seed=11,
    )
    report = await stress(options, target=cluster)
    assert report.violations == []
    assert report.unexpected == []
    (target,) = seen
    assert report.faults == {"SIGKILL": 1, "restart": 1, "SIGSTOP": 1, "SIGCONT": 1}
    done = [what for _, what in target.log]
    assert sorted(done) == ["SIGCONT node 3", "SIGKILL node 2", "SIGSTOP node 3", "restart node 2"]
    assert done.index("SIGKILL node 2") < done.index("restart node 2")
    stopped, resumed = (at for at, what in target.log if "node 3" in what)
    assert resumed - stopped >= PAUSE - 0.1  # past the lease
    # node 2 ran again, on the same port (twice more if the end of the load cut its
    # restart short on a slow machine); every node took calls
    assert [min(len(node.logs), 2) for node in target.nodes] == [1, 2, 1]
    assert ports[0] == ports[1]
    assert min(report.calls_by_process) > 0
    assert sum(report.calls_by_process) == report.operations
    # calls to the dead and the paused node got no answer: unknown, not errors
    assert report.expected["unknown"] > 0
    assert report.outcomes["ok"] > report.operations // 2
    # The MCP sessions' default sessions were updated through every node too, and
    # each MCP session had one (a second would be a violation).
    assert report.default_updates > 0


def test_the_cluster_target_needs_three_nodes_a_shared_store_and_time() -> None:
    for kwargs, needs in [
        ({"processes": 2}, "--nodes 3 or more (got 2)"),
        ({"store": "memory"}, "--store sqlite[:PATH] or redis://... (got memory)"),
        ({"duration": 5.0}, "--duration 8 or more (got 5)"),
    ]:
        options = {"processes": 3, "store": "redis://127.0.0.1:6379/0", "duration": 10.0}
        options.update(kwargs)
        with pytest.raises(ValueError, match=re.escape(needs)):
            StressOptions(target="cluster", **options)  # type: ignore[arg-type]


def test_the_stress_parser_takes_nodes_for_the_cluster_target() -> None:
    parser = argparse.ArgumentParser(prog="triact")
    add_stress_parser(parser.add_subparsers(dest="command"))
    store = ["--store", "redis://127.0.0.1:6379/0"]
    args = parser.parse_args(["stress", "--target", "cluster", *store])
    assert options_from_args(args).processes == 3
    args = parser.parse_args(["stress", "--target", "cluster", "--nodes", "4", *store])
    assert options_from_args(args).processes == 4
    args = parser.parse_args(["stress", "--target", "http", "--nodes", "4", *store])
    with pytest.raises(ValueError, match=r"--nodes is for --target cluster \(got --target http\)"):
        options_from_args(args)


NAIVE = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines" / "mcp_sdk_redis_server.py"


async def test_the_checker_catches_the_naive_redis_baseline(redis_place: RedisPlace) -> None:
    """The gate before trusting a clean run: the official SDK's HTTP server keeping
    sessions in Redis by GET, change, SET (no compare-and-set), three processes, two
    sessions, eight clients: overlapping updates both commit the same version, and
    the checker says so."""
    store = f"{redis_place.url}?prefix={redis_place.prefix}"
    options = StressOptions(
        sessions=2,
        clients=8,
        duration=3.0,
        target="http",
        store=store,
        processes=3,
        seed=3,
        server_command=(sys.executable, str(NAIVE), "--redis", store),
    )
    report = await stress(options)
    assert report.failed
    assert report.unexpected == []  # every answer is well formed: only the history is wrong
    lost = [v for v in report.violations if "two updates both committed version" in str(v)]
    assert lost, "\n\n".join(str(v) for v in report.violations)
