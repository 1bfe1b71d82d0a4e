"""Several processes on one Redis: durable updates per second in total, for one, two
and three processes in the same run, each a SessionManager with its own RedisStore,
on a private redis-server with AOF ``appendfsync everysec`` and ``always``.

- owner: each session is used by one process only (clients pinned per session);
- guest: every process updates every session (clients spread at random).

Each figure is the median of ``--runs`` runs; ``ratio`` is against one process in the
same mode and fsync setting. ``fcall_per_update`` is Redis function calls (FCALL) per
acknowledged update, from ``INFO commandstats``: below 1 when group commit merges the
updates queued on a session. Afterwards every session's counter must equal the updates
acknowledged.

    python benchmarks/shared_redis.py [--seconds S] [--runs N] [--quick] [--fsync F,...]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import trio
from shared_sqlite import check_total, create_sessions, run_processes


def start_redis(directory: Path, fsync: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("shared_redis.py needs the redis-server binary")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    command += ["--save", "", "--appendonly", "yes", "--appendfsync", fsync]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis(port=port) as client:
                client.ping()
            return process, port
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.05)


def fcalls(port: int) -> int:
    with redis.Redis(port=port) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_fcall", {}).get("calls", 0))


def one_run(
    directory: Path, port: int, count: int, mode: str, seconds: float
) -> tuple[float, float]:
    url = f"redis://127.0.0.1:{port}/0?prefix=bench-{random.random()}:"
    ids = trio.run(create_sessions, url)
    before = fcalls(port)
    acknowledged = run_processes(directory, url, ids, count, mode, seconds)
    calls = fcalls(port) - before
    check_total(url, ids, acknowledged)
    return acknowledged / seconds, calls / max(1, acknowledged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="half-second runs (a smoke test)")
    parser.add_argument(
        "--fsync", default="everysec,always", help="the appendfsync settings to measure"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = 0.5
    with tempfile.TemporaryDirectory() as directory:
        for fsync in args.fsync.split(","):
            server_dir = Path(directory) / fsync
            server_dir.mkdir()
            server, port = start_redis(server_dir, fsync)
            try:
                for mode in ("owner", "guest"):
                    measure(Path(directory), port, fsync, mode, args.runs, args.seconds)
            finally:
                server.terminate()
                server.wait()


def measure(directory: Path, port: int, fsync: str, mode: str, runs: int, seconds: float) -> None:
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: [], 3: []}
    for _ in range(runs):  # interleaved, so that load drifts hit all alike
        for count in results:
            results[count].append(one_run(directory, port, count, mode, seconds))
    one = statistics.median(rate for rate, _ in results[1])
    for count, measured in results.items():
        rates = [rate for rate, _ in measured]
        median = statistics.median(rates)
        figure = {
            "bench": f"shared_redis_{fsync}_{mode}_{count}",
            "unit": "durable updates/s in total",
            "median": round(median),
            "runs": [round(r) for r in rates],
            "baseline": f"one process on the same Redis ({mode} path, appendfsync {fsync})",
            "baseline_median": round(one),
            "ratio": round(median / one, 3),
            "target": None,
            "ok": True,
            "processes": count,
            "fcall_per_update": round(statistics.median(c for _, c in measured), 3),
            "lost": 0,  # checked: every session's counter is what was acknowledged
        }
        print(json.dumps(figure), flush=True)


if __name__ == "__main__":
    main()
