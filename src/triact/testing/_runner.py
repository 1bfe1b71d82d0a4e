"""Running a :class:`Program` against a real manager, recording its history."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from ..sessions import (
    ManagerStats,
    MemoryStore,
    Session,
    SessionConfig,
    SessionError,
    SessionManager,
    SessionNotFoundError,
    SessionState,
    SessionStore,
    open_session_manager,
)
from ._faults import (
    Cancelled,
    FaultyStore,
    InjectedError,
    InjectedFault,
    call_with_timeout,
    failing_update,
    slow_update,
)
from ._history import History, HistoryRecorder
from ._model import DataChange
from ._program import Program, Step

#: Wall-clock time at Trio time 0 in a run: ``last_used`` is this plus the commit time.
EPOCH = 1_700_000_000.0
#: Real seconds a program may take before it is taken for hung. (Not Trio time: with
#: ``autojump_threshold=0`` the clock also jumps while tasks wait on a store's thread.)
GUARD = 120.0
_OFFSETS = {"seen": 0, "stale": -1, "ahead": 1}


@attrs.define
class Run:
    """What a program did: its history, and what the manager and store held after."""

    program: Program
    history: History
    ids: list[str]  #: the sessions' ids, by index
    steps: dict[int, Step]  #: the step behind each operation, by operation id
    alive: set[str]  #: sessions live when the tasks finished (or shutdown began)
    finals: dict[str, SessionState]  #: their states then (without a shutdown)
    stats: ManagerStats
    finished: float  #: Trio time the tasks finished (or shutdown began)
    stored: dict[str, int]  #: version of each session the store held after closing
    injected: list[InjectedFault]
    leftover_tasks: list[str]  #: tasks still running after the manager closed
    #: Whether the store was shared (reads then ask the store for the version).
    shared: bool = False


def _tasks_now() -> set[trio.lowlevel.Task]:
    """The tasks of the program: the main task and all below it. Trio's system tasks
    are left out: they are not the manager's, and live as long as the run (a client
    library's I/O reader, such as valkey-glide's, is one)."""
    main = trio.lowlevel.current_task()
    root = trio.lowlevel.current_root_task()
    while main.parent_nursery is not None and main.parent_nursery.parent_task is not root:
        main = main.parent_nursery.parent_task
    found: set[trio.lowlevel.Task] = set()
    pending: list[trio.lowlevel.Task | None] = [main]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


class _Driver:
    """Runs the steps of a program's tasks, recording each call."""

    def __init__(self, program: Program, manager: SessionManager, recorder: HistoryRecorder):
        self.program = program
        self.manager = manager
        self.recorder = recorder
        self.handles: list[Session] = []
        self.steps: dict[int, Step] = {}

    async def create(self) -> None:
        for i in range(self.program.sessions):
            with self.recorder.call("setup", None, "create") as call:
                session = await self.manager.create_session(topic=f"t{i}")
                call.ok(session)
            self.handles.append(session)

    async def client(self, task: int, steps: tuple[Step, ...]) -> None:
        seen: dict[int, int] = {}  # session index -> the last version this task saw
        for index, step in enumerate(steps):
            await trio.sleep(step.pause)
            with contextlib.suppress(SessionError, InjectedError):  # recorded and judged
                await self.perform(f"c{task}", f"{task}.{index}", step, seen)

    async def perform(self, task: str, marker: str, step: Step, seen: dict[int, int]) -> None:
        s = step.session % self.program.sessions
        handle = self.handles[s]
        change: DataChange | None = None
        expected = None
        if step.action == "update":
            change = step.change.with_set(by=marker)
            if step.expect != "none":
                expected = seen.get(s, 1) + _OFFSETS[step.expect]
        recorder = self.recorder
        with recorder.call(
            task, handle.id, step.action, change=change, expected_version=expected
        ) as call:
            self.steps[call.op.id] = step
            if step.action == "remove":
                call.ok(await self.manager.remove_session(handle.id))
                return
            if step.lookup:
                call.untouched()
                handle = await self.manager.get_session(handle.id)
                call.touched()
            run = self._call(handle, step, change, expected, marker)
            if step.timeout is None:
                result = await run()
            else:
                result = await call_with_timeout(run, step.timeout, by_task=step.cancel_by_task)
            if isinstance(result, Cancelled):
                call.failed("cancelled", f"cancelled after {result.after} s")
            else:
                call.ok(result)
        if call.op.outcome == "ok" and call.op.version is not None:
            seen[s] = call.op.version

    def _call(
        self,
        handle: Session,
        step: Step,
        change: DataChange | None,
        expected: int | None,
        marker: str,
    ) -> Callable[[], Any]:
        if step.action == "read":
            return handle.snapshot
        if step.action == "end":
            return handle.end
        assert change is not None
        fn: Any = failing_update(lambda: InjectedError(marker)) if step.fails else change
        if step.duration:
            fn = slow_update(fn, step.duration)
        return lambda: handle.update(fn, expected)

    async def finals(self) -> dict[str, SessionState]:
        """The states of the sessions live when the tasks finished, read one by one.
        Trio time passes while one is read (the autojump clock jumps while a store's
        thread loads a passivated session), so a session listed may expire before its
        turn: it is left out, and the checks judge its expiry like any other."""
        finals = {}
        for session_id in self.manager.session_ids():
            try:
                session = await self.manager.get_session(session_id)
            except SessionNotFoundError:
                continue
            with self.recorder.call("final", session_id, "read") as call:
                state = await session.snapshot()
                call.ok(state)
            finals[session_id] = state
        return finals


async def run_program(program: Program, store: SessionStore | None = None) -> Run:
    """Run ``program`` against a new manager on ``store`` (default: a new MemoryStore),
    wrapped in a :class:`FaultyStore` if the program has faults. Call it inside
    ``trio.run(..., clock=MockClock(autojump_threshold=0))``."""
    inner = store if store is not None else MemoryStore()
    faulty = None
    if program.faults is not None:
        f = program.faults
        faulty = FaultyStore(
            inner,
            seed=f.seed,
            fail_rate=f.fail_rate,
            stall_rate=f.stall_rate,
            stall=f.stall,
            corrupt_rate=f.corrupt_rate,
            operations=f.operations,
            fail_on=f.fail_on,
        )
    config = SessionConfig(
        idle_ttl=program.idle_ttl,
        mailbox_size=program.mailbox_size,
        passivate_after=program.passivate_after,
        shutdown_grace=program.shutdown_grace,
        store=faulty or inner,
        wall_clock=lambda: EPOCH + trio.current_time(),
    )
    recorder = HistoryRecorder()
    async with _watchdog(GUARD):
        before = _tasks_now()
        async with trio.open_nursery() as outside, open_session_manager(config) as manager:
            driver = _Driver(program, manager, recorder)
            if faulty is not None:
                faulty.armed = False
            await driver.create()
            if faulty is not None:
                faulty.armed = True
            finals: dict[str, SessionState] = {}
            if program.shutdown_after is None:
                async with trio.open_nursery() as clients:
                    for task, steps in enumerate(program.tasks):
                        clients.start_soon(driver.client, task, steps)
                if faulty is not None:
                    faulty.armed = False
                finals = await driver.finals()
            else:
                for task, steps in enumerate(program.tasks):
                    outside.start_soon(driver.client, task, steps)
                await trio.sleep(program.shutdown_after)
            # Stats first: its schedule point could let a session expire (or a caller
            # of a program with shutdown_after end one) after alive was taken. From
            # here to the shutdown mark nothing yields, so they agree.
            stats = await manager.stats()
            alive = set(manager.session_ids())
            finished = trio.current_time()
            recorder.mark_shutdown()
        leftover = [task.name for task in _tasks_now() - before]
        stored = {}
        async with inner.open():
            for entry in await inner.index():
                state = await inner.load(entry.id)
                assert state is not None
                stored[entry.id] = state.version
    return Run(
        program=program,
        history=recorder.history(),
        ids=[h.id for h in driver.handles],
        steps=driver.steps,
        alive=alive,
        finals=finals,
        stats=stats,
        finished=finished,
        stored=stored,
        injected=list(faulty.log) if faulty is not None else [],
        leftover_tasks=leftover,
        shared=inner.shared,
    )


@asynccontextmanager
async def _watchdog(limit: float) -> AsyncIterator[None]:
    """Cancel the block, and raise TimeoutError, if it runs ``limit`` real seconds."""
    hung = False

    async def watch(scope: trio.CancelScope) -> None:
        nonlocal hung
        start = time.monotonic()
        while time.monotonic() - start < limit:  # noqa: ASYNC110 (the real clock)
            await trio.sleep(1000.0)  # Trio time; under autojump this wakes often
        hung = True
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            yield
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the block's own error, alone: as it is
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if hung:
        raise TimeoutError(f"the program did not finish within {limit} real seconds")


def run_in_trio(program: Program, store_factory: Callable[[], SessionStore] | None = None) -> Run:
    """Run ``program`` in a fresh ``trio.run`` under an autojump MockClock."""
    store = store_factory() if store_factory is not None else None
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(run_program, program, store, clock=clock)
