"""asyncio libraries inside triact: run_asyncio and open_asyncio_bridge in a Trio host."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import triact.aio

REDIS = ("127.0.0.1", 6379)
SCENARIO = Path(__file__).with_name("_redis_scenario.py")


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def test_run_asyncio_without_a_bridge_says_how_to_open_one() -> None:
    async def nothing() -> None:
        pass

    with pytest.raises(RuntimeError, match="open_asyncio_bridge"):
        await triact.aio.run_asyncio(nothing)


def test_an_update_calls_redis_asyncio_through_the_bridge() -> None:
    if not redis_answers():
        pytest.skip("no Redis answers on 127.0.0.1:6379 (start redis-server to run this test)")
    # Looked up, not imported: importing trio-asyncio changes asyncio process-wide,
    # which is also why the scenario runs in a process of its own.
    for module, package in (("redis", "redis"), ("trio_asyncio", "trio-asyncio")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{package} is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [sys.executable, str(SCENARIO), *map(str, REDIS), f"triact-test:{uuid.uuid4().hex}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # 16 clients x 5 updates over 4 sessions: each session's updates ran one at a
    # time, so each INCR saw the count its own update committed.
    assert seen["counts"] == [20] * 4
    assert seen["last_seen"] == [20] * 4
    assert seen["in_redis"] == [20] * 4
    assert seen["versions"] == [21] * 4
    # Cancelling an update blocked in an asyncio call (BLPOP) changed nothing.
    assert seen["cancelled"] is True
    assert seen["changed_after_cancel"] is False
    assert seen["still_serves"] == 21
