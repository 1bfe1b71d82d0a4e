"""One process of a multi-process program (tests/sessions/_processes.py): a
SessionManager on the shared store, running its tasks' steps and recording each call.

It reads its plan as one JSON line on stdin, says ``ready`` once its manager is open,
runs its tasks on ``go``, says ``done``, reads every session it knows on ``final`` (so
that all processes read at quiescence), then prints its history as one JSON line.
Times are CLOCK_MONOTONIC, the same clock in every process of the machine, so that the
parent can order the calls of all processes in real time.

    python tests/sessions/_process_child.py < plan
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

import attrs
import trio
import trio.abc

import triact
from triact.testing import DataChange, HistoryRecorder, Operation, slow_update
from triact.testing._targets import store_for


class MonotonicClock(trio.abc.Clock):
    """Trio's clock as ``time.monotonic()``: comparable across processes."""

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return time.monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())


class BlindSqliteStore(triact.SqliteStore):
    """Broken on purpose, to show the checker catches it: a write goes over whatever
    version is stored (no compare-and-set, no fencing), as a read-modify-write
    without a version check would."""

    async def write(
        self,
        state: triact.SessionState,
        *,
        previous_version: int | None,
        epoch: int | None = None,
        expires_at: float | None = None,
    ) -> None:
        stored = await self.version(state.id)
        await super().write(state, previous_version=stored, expires_at=expires_at)


def open_store(spec: str) -> triact.SessionStore:
    kind, _, path = spec.partition(":")
    if kind == "blind-sqlite":
        return BlindSqliteStore(path)
    return store_for(spec)


async def line(expected: str) -> None:
    got = await trio.to_thread.run_sync(sys.stdin.readline)
    if got.strip() != expected:
        raise SystemExit(f"expected {expected!r} on stdin, got {got!r}")


def say(text: str) -> None:
    print(text, flush=True)


def encode(op: Operation) -> dict[str, Any]:
    out = attrs.asdict(op, recurse=False)
    if op.change is not None:
        change = op.change
        out["change"] = {
            "set": dict(change.set),
            "increment": dict(change.increment),
            "delete": list(change.delete),
        }
    out["data"] = None if op.data is None else dict(op.data)
    return out


class Process:
    def __init__(self, plan: dict[str, Any], manager: triact.SessionManager) -> None:
        self.plan = plan
        self.manager = manager
        self.recorder = HistoryRecorder()
        self.pool: list[str] = list(plan["ids"])  # the sessions this process knows

    async def run_task(self, name: str, steps: list[dict[str, Any]]) -> None:
        recorder = self.recorder
        manager = recorder.manager(self.manager, name)
        seen: dict[str, int] = {}
        for index, step in enumerate(steps):
            await trio.sleep(step["pause"])
            kind = step["kind"]
            if kind == "create":
                try:
                    created = await manager.create_session(topic=f"{name}.{index}")
                except triact.SessionError:
                    continue  # recorded
                self.pool.append(created.id)
                continue
            if kind == "list":
                for entry in await self.manager.list_sessions():
                    if entry.id not in self.pool:
                        self.pool.append(entry.id)
                continue
            session_id = self.pool[step["session"] % len(self.pool)]
            change = DataChange(set={"by": f"{name}.{index}"}, increment={"n": 1})
            try:
                session = await manager.get_session(session_id)
                if kind == "read":
                    state = await session.snapshot()
                elif kind == "end":
                    state = await session.end()
                elif kind == "async":  # exclusive: under the lease, never replayed
                    state = await recorder.record(
                        name,
                        session_id,
                        "update",
                        session.inner.update(slow_update(change, step["hold"])),
                        change=change,
                    )
                else:
                    expected = seen.get(session_id, 1) if kind == "cas" else None
                    state = await session.update(change, expected)
                seen[session_id] = state.version
            except triact.SessionConcurrencyError as exc:
                if exc.actual > 0:
                    seen[session_id] = exc.actual
            except triact.SessionError:
                pass  # recorded; the checker judges it

    async def final_reads(self) -> None:
        """Read every session this process knows or the store lists."""
        manager = self.recorder.manager(self.manager, f"p{self.plan['process']}.final")
        for entry in await self.manager.list_sessions(limit=1000):
            if entry.id not in self.pool:
                self.pool.append(entry.id)
        for session_id in self.pool:
            with contextlib.suppress(triact.SessionError):  # recorded
                await (await manager.get_session(session_id)).snapshot()


async def main(plan: dict[str, Any]) -> None:
    skew = float(plan["skew"])
    config = triact.SessionConfig(
        store=open_store(plan["store"]),
        wall_clock=lambda: time.time() + skew,
        lease=plan["lease"],
        passivate_after=plan["passivate_after"],
        secret_key=b"k" * 32,
    )
    async with triact.open_session_manager(config) as manager:
        process = Process(plan, manager)
        say("ready")
        await line("go")
        async with trio.open_nursery() as nursery:
            for t, steps in enumerate(plan["tasks"]):
                nursery.start_soon(process.run_task, f"p{plan['process']}.t{t}", steps)
        say("done")
        await line("final")
        await process.final_reads()
    say(json.dumps([encode(op) for op in process.recorder.operations]))


if __name__ == "__main__":
    trio.run(main, json.loads(sys.stdin.readline()), clock=MonotonicClock())
