"""Programs over several processes sharing one store, and their joint history.

Each process (tests/sessions/_process_child.py) is a SessionManager of its own on the
store named by a spec (``sqlite:PATH``, or whatever ``triact.testing``'s stress target
accepts), runs its tasks' steps and records its calls with CLOCK_MONOTONIC times; the
union of the histories, ordered by those times, goes to ``triact.testing``'s checker.

A call's recorded span starts before it is made and ends after it returned, in the
process that made it, on a clock all processes share; so a call that the joint
history shows as finished before another began did finish first. Events with the
same time are put calls first: they overlap, which asks less of the history.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import attrs
import trio
from hypothesis import strategies as st

import triact
from triact.testing import DataChange, History, Operation

CHILD = Path(__file__).with_name("_process_child.py")

Kind = Literal["increment", "cas", "async", "read", "end", "create", "list"]


@attrs.frozen
class Step:
    """One call of a task: what, on which of the sessions its process knows (an index,
    modulo how many it knows by then), after a pause; ``hold``: how long an async
    update sleeps before it returns its change."""

    kind: Kind
    session: int = 0
    pause: float = 0.0
    hold: float = 0.0


@attrs.frozen
class ProcessPlan:
    """One process: its tasks (each a list of steps, run one after the other; the
    tasks at once), its wall clock's skew (seconds ahead: leases others hold look
    expired to it, so it takes them over), and its ``passivate_after``."""

    tasks: tuple[tuple[Step, ...], ...]
    skew: float = 0.0
    passivate_after: float | None = None


steps = st.builds(
    Step,
    st.sampled_from(
        ["increment"] * 4 + ["cas"] * 3 + ["read"] * 3 + ["async"] * 2 + ["create", "list", "end"]
    ),
    st.integers(0, 3),
    st.sampled_from([0.0, 0.0, 0.0, 0.01, 0.2]),
    st.sampled_from([0.01, 0.3]),
)
process_plans = st.builds(
    ProcessPlan,
    st.lists(st.lists(steps, min_size=1, max_size=6).map(tuple), min_size=1, max_size=3).map(tuple),
    st.sampled_from([0.0, 0.0, 5.0]),
    st.sampled_from([None, 0.2]),
)


async def _create(store: str, count: int) -> list[str]:
    from triact.testing._targets import store_for

    kind, _, path = store.partition(":")
    if kind == "blind-sqlite":  # the child's broken store: create with a sound one
        store = f"sqlite:{path}"
    config = triact.SessionConfig(store=store_for(store), secret_key=b"k" * 32)
    async with triact.open_session_manager(config) as manager:
        return [(await manager.create_session(topic=f"s{i}")).id for i in range(count)]


def run_processes(
    store: str,
    plans: list[ProcessPlan],
    *,
    sessions: int = 2,
    lease: float = 1.0,
    timeout: float = 60.0,
) -> History:
    """Create ``sessions`` sessions in ``store``, run one process per plan on it (all
    starting their tasks at once, all reading every session once all are done), and
    return their joint history."""
    ids = trio.run(_create, store, sessions)
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in plans
    ]
    try:
        for index, (child, plan) in enumerate(zip(children, plans, strict=True)):
            _send(child, json.dumps(_plan_json(plan, store, index, ids, lease)))
        for word, then in (("ready", "go"), ("done", "final")):
            for child in children:
                _expect(child, word)
            for child in children:
                _send(child, then)
        recorded = []
        for child in children:
            out, err = child.communicate(timeout=timeout)
            if child.returncode != 0:
                raise AssertionError(f"a process failed ({child.returncode}):\n{err[-3000:]}")
            recorded.append(json.loads(out.splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return joint_history(recorded)


def _plan_json(
    plan: ProcessPlan, store: str, index: int, ids: list[str], lease: float
) -> dict[str, Any]:
    return {
        "store": store,
        "process": index,
        "ids": ids,
        "tasks": [[attrs.asdict(step) for step in task] for task in plan.tasks],
        "skew": plan.skew,
        "passivate_after": plan.passivate_after,
        "lease": lease,
    }


def _send(child: subprocess.Popen[str], text: str) -> None:
    assert child.stdin is not None
    child.stdin.write(text + "\n")
    child.stdin.flush()


def _expect(child: subprocess.Popen[str], word: str) -> None:
    assert child.stdout is not None
    got = child.stdout.readline()
    if got != word + "\n":
        child.kill()
        _, err = child.communicate()
        raise AssertionError(f"a process said {got!r}, not {word!r}:\n{err[-3000:]}")


def joint_history(recorded: list[list[dict[str, Any]]]) -> History:
    """One history of the operations recorded by several processes, their call and
    return events numbered in the order of their times (calls first on a tie)."""
    operations: list[Operation] = []
    events: list[tuple[float, int, int, Operation]] = []
    for fields in (fields for ops in recorded for fields in ops):
        change = fields.pop("change")
        op = Operation(**fields)
        op.id = len(operations)
        if change is not None:
            op.change = DataChange(**change)
        operations.append(op)
        events.append((op.called_at, 0, op.id, op))
        if op.returned_at is not None:
            events.append((op.returned_at, 1, op.id, op))
    events.sort(key=lambda event: event[:3])
    for seq, (_, is_return, _, op) in enumerate(events):
        if is_return:
            op.return_seq = seq
        else:
            op.call_seq = seq
    operations.sort(key=lambda op: op.call_seq)
    return History(operations)
