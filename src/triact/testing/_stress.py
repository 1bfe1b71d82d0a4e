"""``triact stress``: a random load against a manager (in process, or a ``triact serve``
subprocess over MCP), its history checked at the end."""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal, TextIO

import attrs
import trio

from .._cli_args import add_stress_parser as add_stress_parser  # its parser, re-exported
from ..sessions import SessionError, SessionStoreError
from ._checker import HistoryViolation, find_violations
from ._cluster import MIN_DURATION, ClusterTarget, open_cluster
from ._faults import InjectedError
from ._history import HistoryRecorder, Operation, Outcome
from ._model import DataChange
from ._spread import Routing, SpreadTarget, open_servers
from ._targets import DefaultSessions, StdioServerError, StressTarget, open_target

TargetFactory = Callable[[], AbstractAsyncContextManager[StressTarget]]
#: Of the calls of a load over MCP sessions (HTTP), those that update an MCP
#: session's default session rather than a named one.
DEFAULT_SHARE = 0.1


@attrs.frozen
class StressOptions:
    """What ``triact stress`` runs; the defaults are the command's."""

    sessions: int = 16
    clients: int = 8
    duration: float = 10.0
    store: str = "memory"
    faults: float = 0.0  #: rate of injected faults (store faults, failing and cancelled calls)
    target: Literal["inproc", "stdio", "http", "cluster"] = "inproc"
    seed: int | None = None
    #: stdio and http: how to start the server (http appends ``--http 127.0.0.1:0``)
    server_command: tuple[str, ...] | None = None
    #: stdio, http and cluster: how many servers, all on one shared store (more than
    #: one needs sqlite or redis; the cluster target needs three at least).
    processes: int = attrs.field(default=1)
    #: With several servers: each call to one at random, or each session's calls to
    #: the one its id hashes to ("affinity").
    routing: Routing = attrs.field(default="random")

    @routing.validator
    def _check_routing(self, _: object, routing: str) -> None:
        if routing not in ("random", "affinity"):
            raise ValueError(f"--routing is random or affinity, got {routing!r}")
        if routing == "affinity" and self.processes < 2:
            raise ValueError(
                "--routing affinity spreads calls over several servers: it needs "
                "--target cluster, or --processes 2 or more"
            )

    @processes.validator
    def _check_processes(self, _: object, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"--processes must be >= 1, got {processes}")
        if self.target == "cluster":
            self._check_cluster(processes)
            return
        missing = []
        if processes > 1 and self.target not in ("stdio", "http"):
            missing.append(f"--target stdio or http (got {self.target})")
        if processes > 1 and self.store.partition(":")[0] not in ("sqlite", "redis", "rediss"):
            missing.append(f"--store sqlite[:PATH] or redis://... (got {self.store})")
        if missing:
            raise ValueError(
                f"--processes {processes} runs that many `triact serve` processes on one "
                f"shared store: it needs {' and '.join(missing)}"
            )

    def _check_cluster(self, nodes: int) -> None:
        problems = []
        if nodes < 3:
            problems.append(f"--nodes 3 or more (got {nodes})")
        if self.store.partition(":")[0] not in ("sqlite", "redis", "rediss"):
            problems.append(f"--store sqlite[:PATH] or redis://... (got {self.store})")
        if self.duration < MIN_DURATION:
            problems.append(f"--duration {MIN_DURATION:g} or more (got {self.duration:g})")
        if problems:
            raise ValueError(
                "--target cluster kills one node and pauses another past the lease: it "
                f"needs {' and '.join(problems)}"
            )


@attrs.define
class StressReport:
    """What a stress run did, and what the checker found."""

    options: StressOptions
    seed: int
    description: str
    operations: int
    elapsed: float
    latencies: list[float]
    #: Every call's outcome, by kind ("ok", "conflict", "gone", ...).
    outcomes: Counter[str]
    faults: dict[str, int]
    violations: list[HistoryViolation]
    #: Calls whose outcome nothing in the load allows (each one fails the run).
    unexpected: list[Operation]
    #: Outcomes other than "ok" that the load provoked on purpose, by kind: conflicts
    #: from a stale expected_version, sessions it ended, injected faults.
    expected: Counter[str] = attrs.field(factory=Counter)
    #: With several server processes: the calls each one got, in the order started.
    calls_by_process: list[int] = attrs.field(factory=list)
    #: Over MCP sessions (HTTP): the updates of their default sessions, and the MCP
    #: sessions they were made in.
    default_updates: int = 0
    mcp_sessions: int = 0

    @property
    def throughput(self) -> float:
        return self.operations / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def failed(self) -> bool:
        return bool(self.violations or self.unexpected)

    def rows(self) -> list[tuple[str, str]]:
        errors = Counter(str(op.outcome) for op in self.unexpected)
        return [
            ("operations", f"{self.operations:,}"),
            ("throughput", f"{self.throughput:,.0f} ops/s"),
            (
                "latency p50 / p99",
                f"{self.percentile(0.5) * 1000:.2f} ms / {self.percentile(0.99) * 1000:.2f} ms",
            ),
            ("expected outcomes", _counts(dict(sorted(self.expected.items())))),
            ("faults injected", _counts(self.faults)),
            ("errors by kind", _counts(dict(sorted(errors.items())))),
            ("invariant violations", str(len(self.violations))),
            *self._process_rows(),
            *self._default_rows(),
        ]

    def _default_rows(self) -> list[tuple[str, str]]:
        if not self.mcp_sessions:
            return []
        figures = f"{self.default_updates:,} updates in {self.mcp_sessions} MCP sessions"
        return [("default sessions", figures)]

    def _process_rows(self) -> list[tuple[str, str]]:
        if not self.calls_by_process:
            return []
        counts = {f"#{i}": n for i, n in enumerate(self.calls_by_process, 1)}
        return [("calls by process", _counts(counts))]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


class _Load:
    """The clients: each picks a session and a call at random, and records it."""

    def __init__(self, options: StressOptions, target: StressTarget, seed: int) -> None:
        self.options = options
        self.target = target
        self.seed = seed
        self.recorder = HistoryRecorder()
        self.slots: list[str] = []
        self.allowed: dict[int, set[Outcome]] = {}
        self.stopped: str | None = None
        self.last: dict[str, Operation] = {}  # each task's latest call
        self.done = 0  #: calls made by the clients
        self.errors = 0  #: of which did not return normally
        base: set[Outcome] = {"ok", "gone", "closed"}
        if options.faults:
            base.add("store_error")
        self.base = base
        #: Sessions whose "label" is known to hold a string (the update that sets it
        #: was acknowledged): only these get failing updates, which increment it. On
        #: a session whose label update was lost (a node died under it), the
        #: increment would succeed, and a result the load expected to fail would
        #: commit a change its record does not name.
        self.labelled: set[str] = set()
        if options.target == "cluster":  # a node died or hung under the call
            self.base = base | {"unknown"}
        #: The MCP sessions whose default sessions the load updates too (HTTP).
        self.mcp_sessions: list[str] = []
        #: The MCP session of each default-session update, by operation id.
        self.defaults: dict[int, str] = {}

    async def setup(self) -> None:
        for _ in range(self.options.sessions):
            self.slots.append(await self.create("setup"))
        if isinstance(self.target, DefaultSessions):
            self.mcp_sessions = self.target.mcp_sessions()

    async def create(self, task: str) -> str:
        with self.recorder.call(task, None, "create") as call:
            self.allowed[call.op.id] = self.base
            session_id = await self.target.create(call)
        # "label" holds a string, so that a failing update can try to increment it.
        label = DataChange(set={"label": "stress"})
        with self.recorder.call(task, session_id, "update", change=label) as call:
            self.allowed[call.op.id] = self.base
            await self.target.update(call, session_id, label, None, fails=False, slow=0.0)
        if call.op.outcome == "ok":
            self.labelled.add(session_id)
        return session_id

    async def client(self, index: int, deadline: float) -> None:
        rng = random.Random(f"{self.seed}:{index}")
        seen: dict[str, int] = {}
        task = f"c{index}"
        count = 0
        while trio.current_time() < deadline and self.stopped is None:
            count += 1
            slot = rng.randrange(len(self.slots))
            try:
                if self.mcp_sessions and rng.random() < DEFAULT_SHARE:
                    await self.update_default(rng, task, f"{index}.{count}")
                else:
                    await self.step(rng, task, f"{index}.{count}", slot, seen)
            except (SessionError, InjectedError):
                pass  # recorded; the checker judges it
            except StdioServerError as exc:
                self.stopped = str(exc)
            op = self.last[task]
            self.done += 1
            self.errors += op.outcome != "ok"
            if op.outcome == "ok" and op.version is not None and op.session_id is not None:
                seen[op.session_id] = op.version
            gone = op.outcome in ("gone", "closed") or (op.kind == "end" and op.outcome != "busy")
            if gone and self.slots[slot] == op.session_id and self.stopped is None:
                await self.replace(task, slot)

    async def replace(self, task: str, slot: int) -> None:
        """Put a new session in ``slot``, whose session is gone."""
        try:
            self.slots[slot] = await self.create(task)
        except (SessionError, InjectedError):
            pass  # recorded; tried again when the slot's session is next found gone
        except StdioServerError as exc:
            self.stopped = str(exc)

    async def step(
        self, rng: random.Random, task: str, marker: str, slot: int, seen: dict[str, int]
    ) -> None:
        session_id = self.slots[slot]
        roll = rng.random()
        allowed = set(self.base)
        if roll < 0.35:
            with self.recorder.call(task, session_id, "read") as call:
                self.last[task] = call.op
                self.allowed[call.op.id] = allowed
                await self.target.read(call, session_id)
        elif roll < 0.997:
            await self.update(rng, task, marker, session_id, seen, allowed)
        else:
            with self.recorder.call(task, session_id, "end") as call:
                self.last[task] = call.op
                self.allowed[call.op.id] = allowed
                await self.target.end(call, session_id)

    async def update(
        self,
        rng: random.Random,
        task: str,
        marker: str,
        session_id: str,
        seen: dict[str, int],
        allowed: set[Outcome],
    ) -> None:
        faults = self.options.faults
        if rng.random() < 0.5:
            change = DataChange(increment={"n": 1}, set={"by": marker})
        else:
            change = DataChange(set={f"k{rng.randrange(4)}": rng.randrange(100), "by": marker})
        expected = None
        if session_id in seen and rng.random() < 0.3:
            expected = seen[session_id] - (rng.random() < 0.2)
            allowed.add("conflict")
        fails = rng.random() < faults and session_id in self.labelled
        if fails:
            allowed.add("raised")
        timeout = None
        if self.options.target == "inproc" and rng.random() < faults:
            timeout = rng.uniform(0.0, 0.01)
            allowed.add("cancelled")
        with self.recorder.call(
            task, session_id, "update", change=change, expected_version=expected
        ) as call:
            self.last[task] = call.op
            self.allowed[call.op.id] = allowed
            slow = 0.005 if timeout is not None else 0.0
            with trio.move_on_after(timeout if timeout is not None else float("inf")):
                await self.target.update(call, session_id, change, expected, fails=fails, slow=slow)
            if not call.op.done:
                call.failed("cancelled", f"cancelled after {timeout:.4f} s")

    async def update_default(self, rng: random.Random, task: str, marker: str) -> None:
        """An update of the default session of one of the MCP sessions (whose id the
        answer tells: see :meth:`name_defaults`)."""
        target = self.target
        assert isinstance(target, DefaultSessions)
        mcp_session = self.mcp_sessions[rng.randrange(len(self.mcp_sessions))]
        change = DataChange(increment={"n": 1}, set={"by": marker})
        with self.recorder.call(task, None, "update", change=change) as call:
            self.last[task] = call.op
            self.allowed[call.op.id] = set(self.base)
            self.defaults[call.op.id] = mcp_session
            await target.update_default(call, mcp_session, change)

    def default_sessions(self) -> list[str]:
        """The default sessions that updates were answered from."""
        return sorted(
            {
                op.session_id
                for op in self.recorder.operations
                if op.id in self.defaults and op.outcome == "ok" and op.session_id is not None
            }
        )

    def name_defaults(self) -> list[HistoryViolation]:
        """Give each default-session update its MCP session's default session (an
        update whose answer was lost may have been applied to it, so the checker must
        see it there); a violation for each MCP session answered from two."""
        by_mcp: dict[str, list[Operation]] = {}
        for op in self.recorder.operations:
            mcp_session = self.defaults.get(op.id)
            if mcp_session is not None:
                by_mcp.setdefault(mcp_session, []).append(op)
        found = []
        for mcp_session, ops in by_mcp.items():
            answered = [op for op in ops if op.outcome == "ok"]
            named = sorted({str(op.session_id) for op in answered})
            if len(named) > 1:
                firsts = [next(op for op in answered if op.session_id == n) for n in named]
                found.append(
                    HistoryViolation(
                        "one default session per MCP session",
                        f"MCP session {mcp_session[:6]}... was answered from {len(named)} "
                        f"default sessions: {', '.join(repr(n) for n in named)}",
                        firsts,
                    )
                )
            elif named:
                for op in ops:
                    op.session_id = named[0]
        return found

    async def final_reads(self, cluster: ClusterTarget) -> None:
        """After the load, read every live session (the default sessions too) through
        every node: each read must answer (no unknown outcome), and the checker holds
        them to what was acknowledged, so all nodes must agree."""
        for node in range(len(cluster.nodes)):
            for session_id in [*self.slots, *self.default_sessions()]:
                with self.recorder.call("final", session_id, "read") as call:
                    self.allowed[call.op.id] = {"ok", "gone"}
                    await cluster.read_on(node, call, session_id)

    def expected(self, ops: list[Operation]) -> Counter[str]:
        """The outcomes other than "ok" that the load allowed its calls, by kind."""
        return Counter(
            str(op.outcome)
            for op in ops
            if op.outcome != "ok" and op.outcome in self.allowed.get(op.id, ())
        )

    def unexpected(self) -> list[Operation]:
        return [
            op
            for op in self.recorder.operations
            if op.done and op.outcome not in self.allowed.get(op.id, {"ok"})
        ]


async def stress(
    options: StressOptions,
    target: TargetFactory | None = None,
    progress: Callable[[float, _Load], None] | None = None,
) -> StressReport:
    """Run the load for ``options.duration`` seconds and check its history."""
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    if target is None:
        command = list(options.server_command) if options.server_command else None

        def target() -> AbstractAsyncContextManager[StressTarget]:
            if options.target == "cluster":
                return open_cluster(
                    options.store,
                    options.processes,
                    command,
                    seed,
                    options.clients,
                    options.duration,
                    options.routing,
                )
            if options.target in ("stdio", "http"):
                return open_servers(
                    options.store,
                    options.processes,
                    command,
                    seed,
                    options.target,
                    options.clients,
                    options.routing,
                )
            return open_target(options.target, options.store, options.faults, seed, command)

    async with target() as system:
        load = _Load(options, system, seed)
        system.arm(False)
        await load.setup()
        system.arm(True)
        start = trio.current_time()
        deadline = start + options.duration
        async with trio.open_nursery() as nursery:
            if progress is not None:
                nursery.start_soon(_report_progress, progress, start, load)
            async with trio.open_nursery() as clients:
                for index in range(options.clients):
                    clients.start_soon(load.client, index, deadline)
            nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - start
        if isinstance(system, ClusterTarget):
            await system.settle()
            await load.final_reads(system)
        faults = dict(system.faults())
        description = system.description
        by_process = list(system.calls) if isinstance(system, SpreadTarget) else []
    ops = [op for op in load.recorder.operations if op.task not in ("setup", "final")]
    violations = load.name_defaults()
    violations += find_violations(load.recorder)
    if load.stopped is not None:
        violations.append(HistoryViolation("server failed", load.stopped, []))
    return StressReport(
        options=options,
        seed=seed,
        description=description,
        operations=len(ops),
        elapsed=elapsed,
        latencies=[op.returned_at - op.called_at for op in ops if op.returned_at is not None],
        outcomes=Counter(str(op.outcome) for op in ops),
        faults=faults,
        violations=violations,
        unexpected=load.unexpected(),
        expected=load.expected(ops),
        calls_by_process=by_process,
        default_updates=len(load.defaults),
        mcp_sessions=len(load.mcp_sessions),
    )


async def _report_progress(
    progress: Callable[[float, _Load], None], start: float, load: _Load
) -> None:
    while True:
        await trio.sleep(0.25)
        progress(trio.current_time() - start, load)


# -- the command --------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> StressOptions:
    command = tuple(shlex.split(args.server_command)) if args.server_command else None
    processes = args.processes
    if args.target == "cluster":
        processes = args.nodes if args.nodes is not None else 3
    elif args.nodes is not None:
        raise ValueError(f"--nodes is for --target cluster (got --target {args.target})")
    return StressOptions(
        sessions=args.sessions,
        clients=args.clients,
        duration=args.duration,
        store=args.store,
        faults=args.faults,
        target=args.target,
        seed=args.seed,
        server_command=command,
        processes=processes,
        routing=args.routing,
    )


def stress_main(args: argparse.Namespace) -> int:
    """Run ``triact stress`` with parsed arguments; the exit code (2, with one line
    on stderr, for options that do not go together)."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"triact stress: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return trio.run(run_stress, options)


async def run_stress(
    options: StressOptions,
    *,
    target: TargetFactory | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run a stress load, show its progress on ``err`` (live with rich on a terminal,
    plain lines otherwise) and its summary on ``out``. Exit code: 0 if every check
    passed, 1 on any violation, 2 if the target could not be started."""
    from ._display import Display

    display = Display(options, out or sys.stdout, err or sys.stderr)
    report = None
    try:
        report = await stress(options, target, display.progress)
    except* (StdioServerError, SessionStoreError, OSError) as group:
        # The target could not be started, or a node of it restarted: said in one line,
        # however deep in nurseries it was raised.
        display.error(_first_leaf(group))
    finally:
        display.stop()
    if report is None:
        return 2
    display.summary(report)
    return 1 if report.failed else 0


def _first_leaf(exc: BaseException) -> BaseException:
    """The first exception of ``exc`` that is not a group."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
