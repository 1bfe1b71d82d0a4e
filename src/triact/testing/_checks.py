"""Checking a :class:`Run` against invariants I1-I9 (docs/architecture.md): the
history checker, then what only a run knows (which outcomes its steps allow, the
faults it injected, what the manager and the store held afterwards)."""

from __future__ import annotations

from collections.abc import Iterable

from ._checker import HistoryViolation, IdleTimes, check_history
from ._faults import TTL_GRANULARITY
from ._history import Operation, Outcome
from ._runner import EPOCH, Run

_EPS = 1e-9
_CLOCK_EPS = 1e-5  # EPOCH + t loses a little precision


def check_run(run: Run) -> None:
    """Raise :class:`HistoryViolation` for the first broken invariant of ``run``."""
    check_history(run.history, idle_ttl=run.program.idle_ttl, ttl_granularity=TTL_GRANULARITY)
    for op in run.history.operations:
        check_outcome(run, op)
    sessions = run.history.sessions()
    for session_id in run.ids:
        ops = sessions.get(session_id, [])
        check_lifetime(run, session_id, ops)
        check_isolation(run, session_id, ops)
        check_wall_clock(session_id, ops)
        check_stored(run, session_id, ops)
    if run.leftover_tasks:
        raise HistoryViolation(
            "I9 clean shutdown", f"tasks outlived the manager: {run.leftover_tasks}", []
        )
    check_stats(run)


def _fail(invariant: str, summary: str, ops: Iterable[Operation], session_id: str | None) -> None:
    raise HistoryViolation(invariant, summary, ops, session_id)


def _after_shutdown(run: Run, op: Operation) -> bool:
    shutdown = run.history.shutdown_seq
    return shutdown is not None and (op.return_seq or 0) > shutdown


def allowed_outcomes(run: Run, op: Operation) -> set[Outcome]:
    """I4: the ways the call of ``op`` may end, given its step and the program."""
    step = run.steps.get(op.id)
    if step is None:  # setup and final calls
        return {"ok"}
    program = run.program
    allowed: set[Outcome] = {"gone"}
    if _after_shutdown(run, op):
        allowed |= {"closed"}
    if program.faults is not None:
        allowed.add("store_error")
    if op.kind == "remove":
        return allowed | {"ok"}
    if op.touches:
        allowed.add("closed")  # queued behind an end or a removal
    if not (op.kind == "update" and step.fails):
        allowed.add("ok")
    if op.kind == "update" and step.fails:
        allowed.add("raised")
    if program.mailbox_size < len(program.tasks):
        allowed.add("busy")
    if op.expected_version is not None:
        allowed.add("conflict")
    if step.timeout is not None:
        allowed.add("cancelled")
    return allowed


def check_outcome(run: Run, op: Operation) -> None:
    assert op.outcome is not None
    if op.outcome not in allowed_outcomes(run, op):
        _fail(
            "I4 nothing lost",
            f"ended as {op.outcome!r}, which nothing in the program allows",
            [op],
            op.session_id,
        )


def check_lifetime(run: Run, session_id: str, ops: list[Operation]) -> None:
    """I5 at the end of the run, and: only an end, a removal or shutdown closes."""
    stops = [op.called_at for op in ops if op.kind in ("end", "remove")]
    for op in ops:
        if op.outcome == "closed" and not _after_shutdown(run, op):
            assert op.returned_at is not None
            if not any(t <= op.returned_at for t in stops):
                _fail(
                    "I4 nothing lost",
                    "refused as closed, but nothing ended or removed the session",
                    [op],
                    session_id,
                )
    if run.history.shutdown_seq is None or run.program.shutdown_after is not None:
        return
    died = any(
        (op.kind == "end" and op.outcome in ("ok", "store_error"))
        or (op.kind == "remove" and (op.removed or op.outcome == "store_error"))
        for op in ops
    )
    idle = IdleTimes(ops).longest_before(run.finished)
    ttl = run.program.idle_ttl
    if session_id in run.alive:
        if idle > ttl + TTL_GRANULARITY + _EPS:
            _fail("I5 TTL", f"live at the end after {idle:.3f} s idle", ops[-1:], session_id)
    elif not died and idle < ttl - _EPS:
        _fail(
            "I5 TTL",
            f"gone at the end after only {idle:.3f} s idle, never ended nor removed",
            ops[-1:],
            session_id,
        )


def check_isolation(run: Run, session_id: str, ops: list[Operation]) -> None:
    """I6: a store error reaches only the calls of the session whose store call failed;
    a read of a session with nothing else in progress is never held up by another."""
    faults = [f for f in run.injected if f.session_id == session_id]
    for op in ops:
        if op.outcome != "store_error":
            continue
        assert op.returned_at is not None
        if not any(op.called_at - _EPS <= f.at <= op.returned_at + _EPS for f in faults):
            _fail(
                "I6 isolation",
                "failed with a store error although no fault was injected into this "
                "session's store calls meanwhile",
                [op],
                session_id,
            )
    if run.program.passivate_after is not None or run.shared:
        return  # a read may then wait for its session's state to load (or its version)
    for op in ops:
        if op.kind != "read" or op.outcome != "ok" or op.task in ("setup", "final"):
            continue
        assert op.returned_at is not None
        busy = any(
            other is not op
            and other.called_at <= op.called_at
            and other.returned_at is not None
            and other.returned_at >= op.called_at
            and other.touches
            for other in ops
        )
        if not busy and op.returned_at - op.called_at > _EPS:
            _fail(
                "I6 isolation",
                f"a read of an idle session took {op.returned_at - op.called_at:.3f} s",
                [op],
                session_id,
            )


def check_wall_clock(session_id: str, ops: list[Operation]) -> None:
    """I8: every committed state's ``last_used`` is the injected wall clock at a moment
    of the call that committed it."""
    for op in ops:
        if op.kind != "update" or op.outcome != "ok" or op.last_used is None:
            continue
        assert op.returned_at is not None
        at = op.last_used - EPOCH
        if not op.called_at - _CLOCK_EPS <= at <= op.returned_at + _CLOCK_EPS:
            _fail(
                "I8 deterministic time",
                f"last_used is {at:.6f} s past the epoch, outside the call that committed it",
                [op],
                session_id,
            )


def check_stored(run: Run, session_id: str, ops: list[Operation]) -> None:
    """I9: once closed, the store holds each live session at its last committed
    version, and no session that ended, was removed or expired without a store error."""
    committed = [
        op.version
        for op in ops
        if op.kind == "update" and op.outcome == "ok" and op.version is not None
    ]
    last = max(committed, default=1)
    stored = run.stored.get(session_id)
    maybe_kept = any(op.kind in ("end", "remove") and op.outcome == "store_error" for op in ops)
    if stored is not None and stored != last:
        _fail(
            "I9 clean shutdown",
            f"the store holds version {stored} after closing, not the last committed "
            f"version {last}",
            [op for op in ops if op.version in (stored, last)][:4],
            session_id,
        )
    if run.program.shutdown_after is not None:
        return
    if session_id in run.alive and stored is None:
        _fail("I9 clean shutdown", "live at close, but not in the store", ops[-1:], session_id)
    if session_id not in run.alive and stored is not None and not maybe_kept:
        _fail("I5 TTL", "gone from the manager but still in the store", ops[-1:], session_id)


def check_stats(run: Run) -> None:
    """The manager's counters agree with the history."""
    if run.program.shutdown_after is not None:
        return
    ops = run.history.operations
    ended = sum(op.kind == "end" and op.outcome == "ok" for op in ops)
    ended_maybe = sum(op.kind == "end" and op.outcome == "store_error" for op in ops)
    removed = sum(op.kind == "remove" and op.removed is True for op in ops)
    removed_maybe = sum(op.kind == "remove" and op.outcome == "store_error" for op in ops)
    stats = run.stats
    problems = []
    if stats.sessions != len(run.alive):
        problems.append(f"sessions {stats.sessions} != {len(run.alive)} live")
    if not ended <= stats.ended <= ended + ended_maybe:
        problems.append(f"ended {stats.ended}, history says {ended} (+{ended_maybe} maybe)")
    if not removed <= stats.removed <= removed + removed_maybe:
        problems.append(f"removed {stats.removed}, history says {removed} (+{removed_maybe})")
    expired = run.program.sessions - len(run.alive) - stats.ended - stats.removed
    if stats.expired != expired:
        problems.append(f"expired {stats.expired} != {expired}")
    if problems:
        _fail("manager stats", "; ".join(problems), [], None)
