"""The history checker: is there, per session, one serial order of the operations that
explains every result, respects real time and each task's own order, and matches the
versions seen? (Linearizability per session, made tractable by versions.)

Versions fix the order of the committed updates: the one that produced version v is
the v-th change. Every other result pins its operation to a stretch of that chain: a
read of v sits between the commits of v and v + 1, a conflict reporting actual
version a between those of a and a + 1, a refusal for a gone session after its end.
What is left to decide is *when* each version became current: one time T_v per
version, inside the call of the update that produced it, with T_1 <= T_2 <= ... and
the session's end last. Each result bounds those times from below (its call) or above
(its return), so a single greedy pass over the chain decides whether times exist —
O(n log n) per session — and when none do, the two operations whose bounds collide,
with the commits between them, are the minimal history that shows it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..sessions import SessionConcurrencyError
from ._history import History, HistoryRecorder, Operation
from ._model import ModelSession

_EPS = 1e-9
#: Outcomes that show the call ran while the session was live, without a version.
_RAN_LIVE = ("raised", "store_error", "error")


class HistoryViolation(AssertionError):
    """A history that no serial order of its operations explains.

    ``operations`` is the smallest set of calls found that shows it, in call order;
    the message lists them with their tasks, times and results.
    """

    def __init__(
        self,
        invariant: str,
        summary: str,
        operations: Iterable[Operation],
        session_id: str | None = None,
    ) -> None:
        self.invariant = invariant
        self.summary = summary
        self.session_id = session_id
        unique = {id(op): op for op in operations}
        self.operations = sorted(unique.values(), key=lambda op: op.call_seq)
        where = f"session {session_id!r}: " if session_id is not None else ""
        lines = [f"{invariant}: {where}{summary}"]
        lines += [f"  {op.describe()}" for op in self.operations]
        super().__init__("\n".join(lines))


def check_history(
    history: History | HistoryRecorder,
    *,
    idle_ttl: float | None = None,
    ttl_granularity: float = 1.0,
) -> None:
    """Raise :class:`HistoryViolation` for the first problem found, if any.

    With ``idle_ttl`` also check invariant I5 (docs/architecture.md): a session is
    never found gone without an end or removal unless it had been idle for ``idle_ttl``
    seconds, and always is after ``idle_ttl + ttl_granularity`` idle seconds.
    """
    violations = find_violations(history, idle_ttl=idle_ttl, ttl_granularity=ttl_granularity)
    if violations:
        raise violations[0]


def find_violations(
    history: History | HistoryRecorder,
    *,
    idle_ttl: float | None = None,
    ttl_granularity: float = 1.0,
) -> list[HistoryViolation]:
    """Every session's first violation (and any history-wide one), in session order."""
    if isinstance(history, HistoryRecorder):
        history = history.history()
    found = _check_global(history)
    for session_id, ops in history.sessions().items():
        try:
            _SessionCheck(session_id, ops, history.shutdown_seq).run()
            if idle_ttl is not None:
                _check_ttl(session_id, ops, history.shutdown_seq, idle_ttl, ttl_granularity)
        except HistoryViolation as violation:
            found.append(violation)
    return found


def _check_global(history: History) -> list[HistoryViolation]:
    found = []
    seen: dict[int, Operation] = {}
    for op in history.operations:
        if op.id in seen:
            found.append(
                HistoryViolation("malformed history", f"op id {op.id} is used twice", [op])
            )
        seen[op.id] = op
        if not op.done:
            found.append(
                HistoryViolation(
                    "I4 nothing lost",
                    "this call never returned nor raised",
                    [op],
                    op.session_id,
                )
            )
    shutdown = history.shutdown_seq
    if shutdown is not None:
        for op in history.operations:
            if op.call_seq > shutdown and op.outcome == "ok" and op.kind != "remove":
                found.append(
                    HistoryViolation(
                        "I9 clean shutdown",
                        f"called after shutdown began (event {shutdown}), yet it succeeded",
                        [op],
                        op.session_id,
                    )
                )
    return found


@attrs.define
class _Bound:
    """A bound on when a version became current, and the operation that set it."""

    at: float
    op: Operation | None = None
    why: str = ""


class _SessionCheck:
    def __init__(self, session_id: str, ops: list[Operation], shutdown_seq: int | None) -> None:
        self.sid = session_id
        self.ops = [op for op in ops if op.done]
        self.shutdown_seq = shutdown_seq
        self.create: Operation | None = None
        self.producers: dict[int, Operation] = {}
        self.observers: dict[int, list[Operation]] = {}
        self.deaths: list[Operation] = []
        self.gone: list[Operation] = []
        self.ran_live: list[Operation] = []
        #: Updates whose outcome is unknown (the node died or hung): each may or may
        #: not have committed one version.
        self.unknown: list[Operation] = []
        self.filled: dict[int, Operation] = {}

    def fail(self, invariant: str, summary: str, ops: Iterable[Operation | None]) -> None:
        raise HistoryViolation(invariant, summary, [op for op in ops if op], self.sid)

    def run(self) -> None:
        self.classify()
        if not self.producers and not self.observers and self.create is None:
            return  # only refusals: nothing to order
        base, last = self.versions()
        self.check_expected_versions()
        self.check_deaths(last)
        self.check_times(base, last)
        self.check_data(base, last)
        self.check_task_order(last)

    # -- what each result says ----------------------------------------------------

    def classify(self) -> None:
        for op in self.ops:
            outcome = op.outcome
            if outcome == "ok":
                if op.kind == "create":
                    self.create = op
                    self.observe(1, op)
                elif op.kind == "update":
                    assert op.version is not None, op
                    other = self.producers.get(op.version)
                    if other is not None:
                        self.fail(
                            "I1/I3 serial, versioned",
                            f"two updates both committed version {op.version} "
                            "(a lost update, or one message handled twice)",
                            [other, op],
                        )
                    self.producers[op.version] = op
                elif op.kind == "remove":
                    self.deaths.append(op)
                else:
                    assert op.version is not None, op
                    self.observe(op.version, op)
                    if op.kind == "end":
                        self.deaths.append(op)
            elif outcome == "conflict" and op.expected_version is not None:
                assert op.version is not None, op
                self.observe(op.version, op)
            elif outcome == "gone" or (outcome == "closed" and not self.after_shutdown(op)):
                self.gone.append(op)
            elif outcome in _RAN_LIVE:
                self.ran_live.append(op)
            elif outcome == "unknown" and op.kind == "update":
                self.unknown.append(op)

    def observe(self, version: int, op: Operation) -> None:
        self.observers.setdefault(version, []).append(op)

    def after_shutdown(self, op: Operation) -> bool:
        shutdown = self.shutdown_seq
        return shutdown is not None and (op.return_seq or 0) > shutdown

    # -- versions -------------------------------------------------------------------

    def versions(self) -> tuple[int, int]:
        """The first version this history starts from, and the last one committed;
        every version in between must have been committed by an acknowledged update."""
        seen = set(self.observers) | set(self.producers)
        last = max(seen)
        if self.create is not None:
            base = 1
        else:
            base = min([*self.observers, *(v - 1 for v in self.producers)])
        for v in self.producers:
            if v <= base:
                self.fail(
                    "I3 versioned",
                    f"an update committed version {v}, but the session began at version {base}",
                    [self.producers[v], self.create],
                )
        self.filled = self.fill_gaps(base, last)
        for v in range(base + 1, last + 1):
            if v not in self.producers and v not in self.filled:
                later = min(u for u in seen if u >= v)
                self.fail(
                    "I3 versioned",
                    f"version {v} was committed by no acknowledged update (a failed, "
                    "cancelled or refused call took effect, a message was handled twice, "
                    "or a version was skipped)",
                    [
                        self.producers.get(v - 1),
                        *self.observers.get(later, [])[:2],
                        self.producers.get(later),
                    ],
                )
        return base, last

    def fill_gaps(self, base: int, last: int) -> dict[int, Operation]:
        """The versions no acknowledged update committed, each given to an update of
        unknown outcome that may have committed it: one called before any call that
        saw that version or a later one returned (and, with an expected_version, only
        the version after it). Those expecting exactly the gap's predecessor go first,
        then the earliest called: the gaps' deadlines only grow with the version."""
        gaps = [v for v in range(base + 1, last + 1) if v not in self.producers]
        if not gaps or not self.unknown:
            return {}
        returns: dict[int, float] = {}
        for v, op in self.producers.items():
            returns[v] = min(
                returns.get(v, math.inf), math.inf if op.return_seq is None else op.return_seq
            )
        for v, ops in self.observers.items():
            for op in ops:
                returns[v] = min(
                    returns.get(v, math.inf), math.inf if op.return_seq is None else op.return_seq
                )
        free = sorted(self.unknown, key=lambda op: op.call_seq)
        filled: dict[int, Operation] = {}
        for v in gaps:
            deadline = min((r for u, r in returns.items() if u >= v), default=math.inf)
            fits = [
                op for op in free if op.call_seq < deadline and op.expected_version in (None, v - 1)
            ]
            if not fits:
                continue  # reported by versions()
            exact = [op for op in fits if op.expected_version == v - 1]
            chosen = (exact or fits)[0]
            free.remove(chosen)
            filled[v] = chosen
        return filled

    def check_expected_versions(self) -> None:
        for v, op in self.producers.items():
            if op.expected_version is not None and op.expected_version != v - 1:
                self.fail(
                    "I3 versioned",
                    f"committed version {v} although it expected version {op.expected_version}",
                    [op, self.producers.get(v - 1)],
                )
        for v, ops in self.observers.items():
            for op in ops:
                if op.outcome == "conflict" and op.expected_version == v:
                    self.fail(
                        "I3 versioned",
                        f"refused as a conflict at version {v}, the version it expected",
                        [op],
                    )

    def check_deaths(self, last: int) -> None:
        if len(self.deaths) > 1:
            self.fail("I4 nothing lost", "the session was ended or removed twice", self.deaths)
        for op in self.deaths:
            if op.kind == "end" and op.version != last:
                assert op.version is not None
                self.fail(
                    "I1 serial",
                    f"end returned version {op.version}, but version {op.version + 1} was "
                    "committed too",
                    [op, self.producers.get(op.version + 1)],
                )

    # -- times ----------------------------------------------------------------------

    def check_times(self, base: int, last: int) -> None:
        """Find times T_base <= ... <= T_last <= T_end, each within its bounds."""
        n = last - base + 2  # versions base..last, then the session's end
        lo = [_Bound(-math.inf) for _ in range(n)]
        hi = [_Bound(math.inf) for _ in range(n)]
        end = n - 1

        def lower(k: int, op: Operation, why: str) -> None:
            if op.call_seq > lo[k].at:
                lo[k] = _Bound(op.call_seq, op, why)

        def upper(k: int, op: Operation, why: str) -> None:
            assert op.return_seq is not None
            if op.return_seq < hi[k].at:
                hi[k] = _Bound(op.return_seq, op, why)

        for v, op in self.producers.items():
            lower(v - base, op, f"op {op.id} committed version {v} only once it was called")
            upper(v - base, op, f"op {op.id}, which committed version {v}, had returned")
        for v, op in self.filled.items():
            lower(
                v - base,
                op,
                f"op {op.id} (outcome unknown) may have committed version "
                f"{v}, but only once it was called",
            )
        if self.create is not None:
            lower(0, self.create, f"op {self.create.id} created the session only once called")
        for v, ops in self.observers.items():
            for op in ops:
                upper(v - base, op, f"op {op.id} had seen version {v} by its return")
                nxt = "the session's end" if v == last else f"version {v + 1}"
                lower(
                    v - base + 1,
                    op,
                    f"{nxt} came after op {op.id}, which saw version {v}, was called",
                )
        for op in self.deaths:
            lower(end, op, f"op {op.id} {op.kind}ed the session only once it was called")
            upper(end, op, f"op {op.id}, which {op.kind}ed the session, had returned")
        for op in self.gone:
            upper(end, op, f"op {op.id} had found the session gone by its return")
        for op in self.ran_live:
            lower(end, op, f"op {op.id} ran on the live session, so its end came after its call")
            if self.create is not None:
                upper(0, op, f"op {op.id} ran on the session, so it existed by its return")

        at, witness, from_k = -math.inf, _Bound(-math.inf), 0
        for k in range(n):
            if lo[k].at > at:
                at, witness, from_k = lo[k].at, lo[k], k
            if at > hi[k].at:
                chain = [self.producers.get(base + j) for j in range(from_k, min(k, n - 2) + 1)]
                self.fail(
                    "I1/I3 linearizability",
                    f"no serial order explains these results: {witness.why}, "
                    f"but {hi[k].why} before that",
                    [witness.op, hi[k].op, *chain],
                )

    # -- data -----------------------------------------------------------------------

    def check_data(self, base: int, last: int) -> None:
        """Replay the committed updates through the reference model; every state seen
        must be the model's state at its version."""
        model: ModelSession | None = None
        if self.create is not None:
            model = ModelSession(self.sid, 1, self.create.data or {})
        for v in range(base, last + 1):
            producer = self.producers.get(v)
            if v > base and producer is None:
                model = None  # an update of unknown outcome: take the data from what is seen
            if v > base and model is not None and producer is not None:
                if producer.change is None:
                    model = None  # an opaque update: take the data from what is seen
                else:
                    try:
                        model.update(producer.change, producer.expected_version)
                    except (ValueError, TypeError, SessionConcurrencyError) as exc:
                        self.fail(
                            "I2 atomic",
                            f"committed a change that the model refuses at version {v - 1}: {exc}",
                            [producer, self.producers.get(v - 1)],
                        )
            seen = [op for op in [producer, *self.observers.get(v, [])] if op is not None]
            for op in seen:
                if op.data is None:
                    continue
                if model is None:
                    model = ModelSession(self.sid, v, op.data)
                elif dict(op.data) != dict(model.data):
                    self.fail(
                        "I1/I2 serial, atomic",
                        f"the state at version {v} is not what the updates committed before "
                        f"it make it: expected data {_show(model.data)}, "
                        f"seen {_show(op.data)}",
                        [self.producers.get(v - 1), producer, op],
                    )

    # -- each task's own order ------------------------------------------------------

    def check_task_order(self, last: int) -> None:
        """A task's calls to this session take effect in the order it made them, even
        when it did not wait for one before making the next."""
        position: dict[int, tuple[float, Operation]] = {}
        for v, op in self.producers.items():
            position[id(op)] = (v - 0.5, op)
        for v, ops in self.observers.items():
            for op in ops:
                position.setdefault(id(op), (v, op))
        for op in self.deaths:
            position[id(op)] = (last + 0.5, op)
        for op in self.gone:
            position[id(op)] = (last + 1, op)
        latest: dict[str, tuple[float, Operation]] = {}
        for op in self.ops:
            if id(op) not in position:
                continue
            pos = position[id(op)][0]
            before = latest.get(op.task)
            if before is not None and pos < before[0]:
                self.fail(
                    "I1 serial",
                    f"task {op.task} made these calls in this order, but they took effect "
                    "in the opposite order",
                    [before[1], op],
                )
            latest[op.task] = (pos, op)


def _show(data: Mapping[str, Any]) -> str:
    text = repr(dict(sorted(data.items())))
    return text if len(text) <= 200 else text[:197] + "..."


class IdleTimes:
    """How long a session had gone without a call that renews its TTL, at any time.

    ``ops`` are the session's operations; idle time counts from the return of its
    create and from the end of each renewing call (I5, docs/architecture.md)."""

    def __init__(self, ops: list[Operation]) -> None:
        self.create = next((op for op in ops if op.kind == "create" and op.outcome == "ok"), None)
        created = self.create.returned_at if self.create is not None else None
        touching = sorted(
            (op for op in ops if op.done and op.touches and op is not self.create),
            key=lambda op: op.called_at,
        )
        self._starts = [op.called_at for op in touching]
        # After the first j renewing calls: the longest idle stretch, and when they ended.
        self._longest = [0.0]
        self._reach = [created if created is not None else -math.inf]
        for op in touching:
            assert op.returned_at is not None
            self._longest.append(max(self._longest[-1], op.called_at - self._reach[-1]))
            self._reach.append(max(self._reach[-1], op.returned_at))

    def longest_before(self, until: float) -> float:
        """The longest idle stretch before ``until``."""
        j = bisect.bisect_left(self._starts, until)
        return max(self._longest[j], until - self._reach[j])


def _check_ttl(
    session_id: str,
    ops: list[Operation],
    shutdown_seq: int | None,
    idle_ttl: float,
    granularity: float,
) -> None:
    """Invariant I5 from the times of the calls that renewed the session."""
    idle = IdleTimes(ops)
    create = idle.create
    if create is None:
        return
    done = [op for op in ops if op.done and op is not create]
    first_stop = min((op.called_at for op in done if op.kind in ("end", "remove")), default=None)
    for op in done:
        assert op.returned_at is not None
        if shutdown_seq is not None and op.call_seq > shutdown_seq:
            continue
        closed_by_shutdown = shutdown_seq is not None and (op.return_seq or 0) > shutdown_seq
        if op.outcome == "closed" and closed_by_shutdown:
            continue  # refused because the manager closed: it says nothing of the session
        saw_gone = op.outcome == "gone" or op.outcome == "closed"
        before = idle.longest_before(op.called_at)
        if not saw_gone and before > idle_ttl + granularity + _EPS:
            raise HistoryViolation(
                "I5 TTL",
                f"idle for {before:.3f} s before this call (idle_ttl {idle_ttl} s, granularity "
                f"{granularity} s), yet the session was still live",
                [op],
                session_id,
            )
        if saw_gone and (first_stop is None or first_stop > op.returned_at):
            before = idle.longest_before(op.returned_at)
            if before < idle_ttl - _EPS:
                raise HistoryViolation(
                    "I5 TTL",
                    f"found the session gone after only {before:.3f} s idle (idle_ttl "
                    f"{idle_ttl} s), with no end or removal before",
                    [create, op],
                    session_id,
                )
