"""Durability across a crash: a process killed by SIGKILL mid-load loses nothing that
it acknowledged (a new manager on the same SQLite file sees every such change)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import triact

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

# The child creates sessions and updates them from many tasks, printing one line per
# acknowledged change: "<session id> <version> <n>" (n: the counter the change set).
CHILD = """
import sys, attrs, trio, triact

async def worker(manager, sessions, index):
    while True:
        session = sessions[index % len(sessions)]
        index += 7
        state = await session.update(
            lambda s: attrs.evolve(s, data={"n": s.data.get("n", 0) + 1})
        )
        print(state.id, state.version, state.data["n"], flush=True)

async def main(path):
    store = triact.SqliteStore(path)
    config = triact.SessionConfig(store=store, secret_key=b"k" * 32)
    async with triact.open_session_manager(config) as manager:
        sessions = [await manager.create_session(topic=f"t{i}") for i in range(20)]
        for session in sessions:
            print(session.id, 1, 0, flush=True)
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(worker, manager, sessions, i)

trio.run(main, sys.argv[1])
"""

ACKNOWLEDGED_BEFORE_KILL = 2000


async def test_sigkill_mid_load_loses_no_acknowledged_change(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    acknowledged: dict[str, tuple[int, int]] = {}  # id -> (highest version, its n)
    lines = 0
    process = await trio.lowlevel.open_process(
        [sys.executable, str(child), str(path)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(60):
            while lines < ACKNOWLEDGED_BEFORE_KILL:
                chunk = await process.stdout.receive_some(65536)
                assert chunk, f"child exited early with {await process.wait()}"
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    session_id, version, n = line.decode().split()
                    if int(version) > acknowledged.get(session_id, (0, 0))[0]:
                        acknowledged[session_id] = (int(version), int(n))
                    lines += 1
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    config = triact.SessionConfig(store=triact.SqliteStore(path), secret_key=b"k" * 32)
    async with triact.open_session_manager(config) as manager:
        assert await manager.count_sessions() == 20
        for session_id, (version, n) in acknowledged.items():
            state = await (await manager.get_session(session_id)).snapshot()
            # At least what was acknowledged; more if a change was committed after
            # the last line we read (its line was lost with the process).
            assert state.version >= version
            assert state.data.get("n", 0) - n == state.version - version
