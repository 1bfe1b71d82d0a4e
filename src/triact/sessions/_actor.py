"""The session actor: owns one session's state and commits its changes.

With an immediate store (memory) a change is applied and committed in the calling
task, without waiting on anything (the call's schedule point, once per
``schedule_slice``, is ``ask``'s own).
With a durable store the actor group-commits: the task that writes takes the plain
changes queued behind it (and those whose token passes), applies them in order, and
commits them all in one store write, as a reply seen through; every caller is
answered only once its change is durable.

Token checks and security events are the session's :class:`SessionGuard`'s
(``_security``): a refusal is raised before the call counts as an operation, and
commits nothing.
"""

from __future__ import annotations

import inspect
import random
import sys
from array import array
from collections.abc import Coroutine
from sys import getrefcount
from types import CoroutineType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from weakref import getweakrefcount

import attrs
import trio

from ..actors import Actor, Queued, SeeThrough, see_through
from ._cycles import hold, holding, release
from ._errors import (
    SessionClosedError,
    SessionConcurrencyError,
    SessionContendedError,
    SessionError,
    SessionFencedError,
    SessionLimitError,
    SessionNotFoundError,
    SessionRateLimitError,
    SessionSecurityError,
    SessionStoreError,
    no_session,
)
from ._limits import Sizes, check_state, check_with_data
from ._ops import Authorized, Change, End, Op, Read, Validate
from ._security import SessionGuard, logger
from ._state import (
    MADE,
    SessionMetrics,
    SessionState,
    new_metrics,
    stamp_in_place,
    stamped_with,
)

if TYPE_CHECKING:
    from ._host import SessionHost
    from ._leases import Entry

_LATENCIES_KEPT = 256
#: With a shared store, how many times a group of changes is run again on the
#: reloaded state after another process committed first (then SessionContendedError).
REPLAYS = 8
_AWAITED = (Coroutine, SeeThrough)  # the replies of receive() that are awaitables

#: What a call of a session's actor answers: the state it committed or read (None for
#: a token check).
Answer: TypeAlias = SessionState | None
#: An answer of a known kind (a state, or None).
A = TypeVar("A", bound=Answer)
#: A commit in progress: a durable write seen through, or a coroutine (an async
#: update, a passivated session's load, a shared store's check).
Pending: TypeAlias = SeeThrough[SessionState] | Coroutine[Any, Any, Answer]
#: What ``receive`` returns: the answer now, or the awaitable that gives it.
Reply: TypeAlias = Answer | Pending
#: How a change taken into a group commit ended: the state it committed, or its error.
Outcome: TypeAlias = SessionState | Exception
#: The changes of a group commit taken from the mailbox, each with its outcome.
Taken: TypeAlias = list[tuple[Queued[Op, Answer], Outcome]]


def _unshared_refs() -> int | None:
    """How many references ``sys.getrefcount`` reports, in
    :meth:`SessionActor._stamp`, for a state only ``_stamp``'s caller and ``_stamp``
    hold (a local and a parameter); None where that cannot be told (see below).

    A state the update returned that holds no more (and no weak reference) is a plain
    SessionState that nothing but the actor's own frames refer to. It is stamped in
    place (version, last_used, metrics) instead of copied: no code can see it before
    it is committed, and none holds it after but through the committed state (I2:
    committed states never change). Anything else is copied."""
    if sys.version_info >= (3, 14) or not getattr(sys, "_is_gil_enabled", lambda: True)():
        # 3.14 may borrow references to locals (fewer counted than held), and without
        # the GIL another thread may take a reference meanwhile: stamp copies.
        return None

    def caller(value: Any) -> int:
        local = value
        del value
        return _probe(local)

    def _probe(value: Any) -> int:
        return sys.getrefcount(value)

    fresh = caller(object())  # held by caller's local and _probe's parameter
    held = object()
    return fresh if caller(held) == fresh + 1 else None


_UNSHARED_REFS = _unshared_refs()


def _foreign(op: Authorized | Validate, state: SessionState) -> bool:
    """Whether ``op`` is made as a principal other than the session's."""
    return op.principal != state.principal


def _groupable_change(op: Op) -> bool:
    """Whether a queued op can join a group commit without waiting on anything."""
    return type(op) is Change and not inspect.iscoroutinefunction(op.transform)


class SessionActor(Actor[Op, Answer]):
    """One session's actor: it holds the session's committed state (on the manager's
    record of the session, so that a restarted or re-activated actor starts from it)
    and handles the session's calls one at a time, in mailbox order.

    Every call is answered with the state it committed (or read), or fails with the
    reason and changes nothing (I2, docs/architecture.md). With a durable store each commit is one
    compare-and-set store write, shared by the plain changes queued behind it (group
    commit), and callers are answered once it is durable. With a shared store the
    actor also keeps its cache honest: reads check the stored version, a conflict
    reloads and replays the group's synchronous changes, and async updates run under
    the session's lease (see ``_leases``).
    """

    __slots__ = (
        "_bucket",
        "_checked",
        "_entry",
        "_guard",
        "_host",
        "_latencies",
        "_now",
        "_sizes",
        "errors",
        "max_latency",
        "operations",
        "total_latency",
        "transient",
    )

    def __init__(self, host: SessionHost, entry: Entry) -> None:
        self._host = host
        self._entry = entry
        metrics = entry.state.metrics if entry.state is not None else SessionMetrics()
        self.operations = metrics.operations
        self.errors = metrics.errors
        self.total_latency = metrics.total_latency
        self.max_latency = metrics.max_latency
        # The latencies of the last _LATENCIES_KEPT calls, in no order, as machine
        # doubles (a deque of floats costs 760 bytes from its first call on).
        self._latencies: array[float] | None = None
        self._bucket: _TokenBucket | None = None
        # The last state this actor checked for a commit, and what its check learnt
        # (see check_state): the next commit after it is checked without encoding.
        self._checked: SessionState | None = None
        self._sizes: Sizes | None = None
        # Whether a plain change commits at once, with nothing else to do first (a
        # memory store, not shared, no rate limit): see receive.
        self._now = host.store.immediate and host.leases is None and host.config.rate_limit is None
        guard = entry.guard
        if guard is None:  # kept on the entry, so that passivation keeps it
            guard = entry.guard = SessionGuard(host.token_digest, host.config)
        self._guard = guard
        #: Set by the manager for a cold call's actor: it leaves as soon as it has
        #: nothing to do.
        self.transient = False
        entry.actor = self  # last: a restart whose actor failed to start keeps the old

    # -- the handler ---------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The last committed state (kept on the manager's entry, so that a restarted
        actor starts from it)."""
        return self._entry.state  # type: ignore[return-value]

    def receive(self, op: Op) -> Reply:
        entry = self._entry
        if entry.gone is not None:
            if entry.gone == "expired":  # gone from a shared store meanwhile
                raise SessionNotFoundError(f"session {entry.id!r} expired; create a new session")
            raise SessionClosedError(
                f"session {entry.id!r} {entry.gone} before this call ran; start a new session"
            )
        state = entry.state
        if state is None:  # passivated with a durable store
            return self._load_then(op)
        kind = type(op)
        if kind is Change and self._now:
            # A change committed at once (see ``_now``): the steps of _change and
            # _commit for it, spelled out in this frame (a frame less than a method of
            # its own). Every in-memory update comes this way, and pays for no step
            # that does nothing here.
            host = self._host
            # The clock and the update function are read into locals, then called:
            # host.now() or op.transform() would look up a method that is no method
            # (an attribute in a slot) at every call, where a slot read is quick.
            clock = host.now
            start = clock()
            try:
                expected = op.expected_version  # type: ignore[union-attr]
                if expected is not None:
                    _check_version(state, expected)
                guard = self._guard
                transform = op.transform  # type: ignore[union-attr]
                # The security events not committed yet are committed with this change.
                result = transform(guard.with_events(state) if guard.pending else state)
                if type(result) is CoroutineType:
                    return self._change_async_now(result, start)
                new = self._stamp(state, result)
                entry = self._entry
                if entry.gone is not None:
                    self._check_live("this change was committed")
                host.store.write_now(new, previous_version=state.version)
                entry.state = new
                if guard.pending:
                    guard.committed()
                if host.subscriptions:  # (a call less when nobody listens)
                    host.publish("updated", new)
            except Exception:
                self._account(start, failed=True)
                raise
            # _account(start, failed=False) spelled out: a frame less for every
            # in-memory update (keep the two alike).
            now = clock()
            entry.last_active = now
            latency = now - start
            operations = self.operations = self.operations + 1
            self.total_latency += latency
            if latency > self.max_latency:
                self.max_latency = latency
            kept = self._latencies
            if kept is None:
                self._latencies = array("d", (latency,))
            elif len(kept) < _LATENCIES_KEPT:
                kept.append(latency)
            else:
                kept[operations % _LATENCIES_KEPT] = latency
            tally = host.tally
            tally.operations += 1
            tally.latencies.append(latency)
            return new
        if (kind is Authorized or kind is Validate) and _foreign(op, entry.state):  # type: ignore[arg-type]
            # Another principal's: it does not exist for that caller, so nothing of
            # the session (not even its rate limit) may answer it.
            raise no_session(entry.id)
        start = self._host.now()
        limit = self._host.config.rate_limit
        if limit is not None:
            if self._bucket is None:
                self._bucket = _TokenBucket(limit.rate, limit.burst, start)
            wait = self._bucket.take(start)
            if wait:  # refused, not handled: counted as a busy rejection
                self._host.tally.busy_rejected()
                raise SessionRateLimitError(
                    f"session {self.state.id!r} is over its rate limit of "
                    f"{limit.rate}/s; retry in {wait:.3f} s",
                    retry_after=wait,
                )
        if kind is Authorized or kind is Validate:
            # A refusal raises here: not an operation, not activity for the TTL.
            self._check(op)  # type: ignore[arg-type]
            if kind is Validate:
                self._account(start, failed=False)
                return None
            op = op.op  # type: ignore[union-attr]
            kind = type(op)
        try:
            if kind is Change:
                reply = self._change(op)  # type: ignore[arg-type]
            elif kind is Read:
                if self._host.leases is not None:
                    reply = self._read_shared()
                else:
                    reply = self._guard.with_events(
                        attrs.evolve(self.state, metrics=self.metrics())
                    )
            else:
                reply = self._end(op)  # type: ignore[arg-type]
        except Exception:
            self._account(start, failed=True)
            raise
        # Every call that got here is counted once, when its reply is known: now,
        # or by _finish once the awaitable that gives it is through.
        shape = type(reply)  # (not isinstance: this is every call's path)
        if shape is SeeThrough:  # a durable commit: seen through, and so its count
            return see_through(self._finish(reply.coroutine, start))  # type: ignore[union-attr]
        if shape is CoroutineType:
            return self._finish(reply, start)  # type: ignore[arg-type]
        self._account(start, failed=False)
        return reply

    async def _load_then(self, op: Op) -> Answer:
        """Bring the state back from the store, then handle ``op``.

        The load runs in the handler, so calls that arrive meanwhile queue behind it
        in arrival order. If it fails, this call gets the error and the next one
        tries again.
        """
        entry = self._entry
        leases = self._host.leases
        try:
            if leases is not None:  # load and lease (a guest if another holds it)
                state = await leases.activate(entry)
            else:
                state = await self._host.store.load(entry.id)
        except Exception as exc:
            raise _store_error(entry.id, exc) from exc
        if entry.gone is None:  # else receive raises: it went while we loaded
            if state is None:
                raise self._gone_from_store()
            self._adopt(state)
        reply = self.receive(op)
        if isinstance(reply, _AWAITED):
            return await reply
        return reply

    def _adopt(self, state: SessionState) -> None:
        """Take ``state`` (just loaded) as the committed state, with its counters."""
        self._entry.state = state
        self._entry.created_wall = state.created_at
        metrics = state.metrics
        self.operations, self.errors = metrics.operations, metrics.errors
        self.total_latency, self.max_latency = metrics.total_latency, metrics.max_latency

    def _gone_from_store(self) -> SessionNotFoundError:
        self._host.session_gone(self._entry, "expired", None)
        return SessionNotFoundError(
            f"session {self._entry.id!r} is no longer in the store (another process ended "
            "it, or it expired); create a new one"
        )

    async def _finish(self, pending: Coroutine[Any, Any, A], start: float) -> A:
        """Await a call's reply, then count the call (see :meth:`_account`)."""
        try:
            reply = await pending
        except Exception:
            self._account(start, failed=True)
            raise
        self._account(start, failed=False)
        return reply

    def on_start(self) -> None:
        if self.transient:
            ref = self._entry.ref
            assert ref is not None
            ref.stop_when_idle()  # once this call and those queued behind it are done

    def on_stop(self) -> None:
        self._host.actor_stopped(self._entry, self)

    # -- metrics -------------------------------------------------------------------

    def _account(self, start: float, *, failed: bool) -> None:
        """Count one handled call, begun at ``start``, once it has ended.

        The rule, "every call is accounted once": each call that reaches
        :meth:`receive` and is not refused unhandled (its session gone, over its rate
        limit, a refused token: those are counted by the manager's :class:`Tally` as
        busy rejections and security failures, not as operations) is counted exactly
        once, when its reply is known. There are two places that do it:

        * :meth:`receive`, for the call it was given: at once for a reply known at
          once (or a raise), else by :meth:`_finish`, through which every awaited
          reply flows (an async update, a shared store's read or check, a durable
          commit or end, seen through), or by :meth:`_change_async_now`, which
          counts an in-memory async update as :meth:`_finish` would. A passivated
          session's call is counted by the :meth:`receive` that :meth:`_load_then`
          runs once the state is loaded (a failed load: not counted). A call
          cancelled before its reply is known (only an async update can be) is not
          counted: it committed nothing.
        * :meth:`_commit_durably`, for each change it takes from the mailbox into a
          group commit (they never reach :meth:`receive`): once, as it is applied.

        (:meth:`receive`'s change committed at once counts a call that succeeded with
        this method's lines spelled out, a frame less per in-memory update: keep the
        two alike.)
        """
        host = self._host
        clock = host.now  # (a slot read, then a call: see receive)
        now = clock()
        # Idle time counts from the end of a call: set before the actor is released,
        # so that the reaper never sees a session that just finished as idle since
        # the call began.
        self._entry.last_active = now
        latency = now - start
        operations = self.operations = self.operations + 1
        self.total_latency += latency
        if latency > self.max_latency:
            self.max_latency = latency
        kept = self._latencies
        if kept is None:
            self._latencies = array("d", (latency,))
        elif len(kept) < _LATENCIES_KEPT:
            kept.append(latency)
        else:  # a ring: operations moves on by one a call
            kept[operations % _LATENCIES_KEPT] = latency
        # The manager's Tally, counted here (every call pays it).
        tally = host.tally
        tally.operations += 1
        tally.latencies.append(latency)
        if failed:
            self.errors += 1
            tally.errors += 1

    def metrics(self) -> SessionMetrics:
        return new_metrics(self.operations, self.errors, self.total_latency, self.max_latency)

    def latencies(self) -> list[float]:
        return list(self._latencies or ())

    # -- changes -------------------------------------------------------------------

    async def _change_async_now(self, pending: Any, start: float) -> SessionState:
        """An async update that :meth:`receive` began (a change committed at once,
        see ``_now``): :meth:`_finish`,
        :meth:`_change_async` and :meth:`_commit` for it, in one coroutine (a
        coroutine less to make, and a frame less that each of its steps passes through,
        for every update whose function awaits)."""
        entry = self._entry
        try:
            # Its calls to other sessions are checked for cycles (holding(), spelled out).
            held = hold(entry)
            try:
                result = await pending  # cancelled or raising here: nothing committed (I2)
            finally:
                release(held)
            if entry.gone is not None:
                self._check_live("this change was committed")
            state: SessionState = entry.state  # type: ignore[assignment]
            new = self._stamp(state, result)
            host = self._host
            host.store.write_now(new, previous_version=state.version)
            entry.state = new
            guard = self._guard
            if guard.pending:
                guard.committed()
            if host.subscriptions:  # (a call less when nobody listens)
                host.publish("updated", new)
        except Exception:  # counted as _finish counts (a cancelled update: not at all)
            self._account(start, failed=True)
            raise
        self._account(start, failed=False)
        return new

    def _change(self, op: Change) -> SessionState | Pending:
        state: SessionState = self._entry.state  # type: ignore[assignment]
        expected = op.expected_version
        if expected is not None and expected != state.version and self._host.leases:
            return self._change_fresh(op)  # the cache may be behind: ask the store
        if expected is not None:
            _check_version(state, expected)
        guard = self._guard
        try:
            # The security events not committed yet are committed with this change.
            result = op.transform(guard.with_events(state) if guard.pending else state)
        except Exception:
            if self._host.leases is not None:  # it may have failed on a stale copy:
                return self._change_fresh(op)  # run it again on the stored state
            raise
        if type(result) is CoroutineType:
            if self._host.leases is not None:
                result.close()  # not begun: it runs again on the latest state, leased
                return self._change_exclusive(op)
            return self._change_async(result)
        return self._commit(self._stamp(state, result), op)

    async def _change_async(self, pending: Any) -> SessionState:
        # Its calls to other sessions are checked for cycles (holding(), spelled out).
        held = hold(self._entry)
        try:
            result = await pending  # cancelled or raising here: nothing committed (I2)
        finally:
            release(held)
        self._check_live("this change was committed")
        # _committed, spelled out: a coroutine less per async update.
        committed = self._commit(self._stamp(self.state, result), None)
        if type(committed) is SeeThrough:
            return await committed
        return committed  # type: ignore[return-value]

    def _check_live(self, before: str) -> None:
        entry = self._entry
        if entry.gone is not None:  # removed while an async update was awaiting
            raise SessionClosedError(
                f"session {entry.id!r} {entry.gone} before {before}; nothing was saved"
            )

    def _stamp(self, state: SessionState, result: Any) -> SessionState:
        # Made by state.with_data(...) (the common update; see MADE): a SessionState
        # whose fields but its data are the state's own, so neither the checks below
        # nor the commit check's comparison of those fields are needed. The record is
        # emptied before the count of references below, which it would add to.
        made = MADE[0]
        MADE[0] = None
        if made is not None and made[0] is result and made[1] is state:
            derived, entries = True, made[2]  # what it set (see check_with_data)
        else:
            derived, entries = False, None
        made = None
        if not derived:
            if type(result) is not SessionState and not isinstance(result, SessionState):
                raise TypeError(
                    f"an update of session {state.id!r} returned {type(result).__name__}, "
                    "not a SessionState (use attrs.evolve(state, ...))"
                )
            # (The same objects, the common case, need no comparison of their values.)
            if (result.id is not state.id and result.id != state.id) or (
                result.principal is not state.principal and result.principal != state.principal
            ):
                raise ValueError(
                    f"an update of session {state.id!r} may not change its id or its principal"
                )
        # A state the update function made and let go of (the common case: it returned
        # state.with_data(...) or attrs.evolve(...)) is stamped in place: nothing else
        # can see it, so it is still a value nobody saw change (see _unshared_refs).
        # (An if statement, not a boolean expression: CPython specialises the
        # comparisons of ints only where a jump follows them.)
        if (
            _UNSHARED_REFS is not None
            and type(result) is SessionState
            and getrefcount(result) == _UNSHARED_REFS
            and getweakrefcount(result) == 0
        ):
            stamp = stamp_in_place
        else:
            stamp = stamped_with
        host = self._host
        wall_clock = host.wall_clock  # (a slot read, not a lookup of a method)
        new = stamp(
            result,
            state.version + 1,
            wall_clock(),
            # Counts the operation being committed, which _account adds once it ends.
            self.operations + 1,
            self.errors,
            self.total_latency,
            self.max_latency,
        )
        known = self._sizes if self._checked is state else None
        try:
            if derived:
                sizes = check_with_data(new, state, host.config.max_state_bytes, known, entries)
            else:
                sizes = check_state(new, state, host.config.max_state_bytes, known)
        except SessionLimitError:
            if not self._guard.pending or new.security_events is state.security_events:
                raise
            # Refused tokens' events not stored yet would take it past its size: the
            # change is committed without them (else whoever sends wrong tokens could
            # keep the owner of a large session from changing it at all).
            new = attrs.evolve(new, security_events=state.security_events)
            sizes = check_state(new, state, host.config.max_state_bytes, None)
            logger.warning(
                "session %r: the security events not stored yet would take it past "
                "max_state_bytes; committed without them",
                state.id,
            )
        self._sizes = sizes
        self._checked = new
        return new

    def _commit(
        self, new: SessionState, replay: Change | None
    ) -> SessionState | SeeThrough[SessionState]:
        """Commit ``new`` now (immediate store), or return the durable commit as a
        reply seen through. ``replay`` is the change that made ``new`` if it may run
        again (a shared store's conflict)."""
        entry = self._entry
        if entry.gone is not None:
            self._check_live("this change was committed")
        host = self._host
        store = host.store
        if store.immediate:
            store.write_now(new, previous_version=entry.state.version)  # type: ignore[union-attr]
            entry.state = new
            if self._guard.pending:
                self._guard.committed()
            if host.subscriptions:  # (a call less when nobody listens)
                host.publish("updated", new)
            return new
        # Seen through: a forced shutdown must not abandon a write once begun.
        return see_through(self._commit_durably(new, replay))

    async def _committed(self, new: SessionState, replay: Change | None) -> SessionState:
        """Commit ``new`` (see :meth:`_commit`) from inside an async reply: the
        committed state, once durable."""
        committed = self._commit(new, replay)
        if isinstance(committed, SeeThrough):
            return await committed
        return committed

    async def _commit_durably(self, new: SessionState, replay: Change | None) -> SessionState:
        """Commit ``new`` and the plain changes queued behind it in one write.

        The queued changes run against the group's uncommitted states, so none of
        their callers is answered, success or refusal, before the write is through:
        if it fails, nothing of the group happened and each gets the store's error.
        """
        host = self._host
        entry = self._entry
        ref = entry.ref
        assert ref is not None
        previous = self.state.version
        committed = [new]
        outcomes: Taken = []
        for queued in ref.take_queued(host.config.group_commit_max - 1, while_=self._groupable):
            queued_start = host.now()
            outcome: Outcome
            try:
                outcome = await self._apply(queued.message, committed[-1])
            except Exception as exc:
                outcome = exc
            else:
                committed.append(outcome)
            # The one count of a change taken into the group (see _account).
            self._account(queued_start, failed=isinstance(outcome, Exception))
            outcomes.append((queued, outcome))
        try:
            await self._write(committed[-1], previous)
        except SessionConcurrencyError as exc:
            if host.leases is None or entry.gone is not None:
                raise self._failed_group(exc, outcomes, len(committed)) from exc
            # Another process committed first: reload, run the group again (seen
            # through: its callers are answered, whatever happens to ours).
            try:
                with trio.CancelScope(shield=True):
                    first, outcomes = await self._replay(exc, replay, outcomes)
            except SessionNotFoundError as gone:  # another process ended it meanwhile
                for queued, _ in outcomes:
                    queued.fail(SessionNotFoundError(str(gone)))
                raise
            except Exception as failure:
                raise self._failed_group(failure, outcomes, len(committed)) from failure
            _answer(outcomes)
            if isinstance(first, Exception):
                raise first from None
            return first
        except Exception as exc:
            raise self._failed_group(exc, outcomes, len(committed)) from exc
        if entry.gone is None:
            entry.state = committed[-1]
            if self._guard.pending:
                self._guard.committed()
        for state in committed:
            host.publish("updated", state)
        _answer(outcomes)
        return new

    async def _apply(self, op: Op, base: SessionState) -> SessionState:
        """The state a queued change makes of ``base`` (stamped); raises its refusal."""
        if type(op) is Authorized:
            # Its token passed against the committed binding when it joined; a change
            # of the group may have replaced the binding since.
            if not self._guard.passes(op.token, base):
                raise SessionSecurityError(
                    f"session {base.id!r} refused the token of a call queued "
                    "behind a change of its client binding"
                )
            op = op.op
        assert isinstance(op, Change)
        _check_version(base, op.expected_version)
        result = op.transform(base)
        if type(result) is CoroutineType:  # a plain function returned a coroutine
            with holding(self._entry):
                result = await result
        return self._stamp(base, result)

    async def _write(self, new: SessionState, previous: int) -> None:
        """One compare-and-set write of ``new`` over version ``previous``, seen
        through once begun (even if we are cancelled)."""
        host = self._host
        leases = host.leases
        if leases is not None:
            write = leases.store.write(
                new,
                previous_version=previous,
                epoch=self._entry.epoch,
                expires_at=leases.expires_at(new.created_at, new.last_used),
            )
        else:
            write = host.store.write(new, previous_version=previous)
        if host.store.writes_see_through:  # no shield needed, and none paid for
            await write
        else:
            with trio.CancelScope(shield=True):
                await write

    def _groupable(self, op: Op) -> bool:
        """Whether a queued op can join a group commit: a plain change, or one that
        carries a token that passes (a refused one is handled on its own, so that its
        refusal is recorded)."""
        if type(op) is Authorized:
            state = self.state
            if op.principal != state.principal or not self._guard.passes(op.token, state):
                return False
            op = op.op
        return _groupable_change(op)

    def _failed_group(self, exc: Exception, outcomes: Taken, group: int) -> SessionError:
        """Fail every queued caller of a group whose write failed; the error for the
        caller that began it."""
        for queued, _ in outcomes:  # each caller gets its own exception object
            queued.fail(self._group_failure(exc, group))
        self._check_live("this change was committed")
        if isinstance(exc, SessionConcurrencyError) and exc.actual == -1:
            return self._gone_from_store()
        return _store_error(self._entry.id, exc)

    def _group_failure(self, exc: Exception, group: int) -> SessionError:
        entry = self._entry
        if entry.gone is not None:
            failure: SessionError = SessionClosedError(
                f"session {entry.id!r} {entry.gone} before this change was committed; "
                "nothing was saved"
            )
        else:
            applied = exc.applied if isinstance(exc, SessionStoreError) else None
            outcome = (
                "nothing of it was saved"
                if applied is False
                else "a store that lost its connection after the write was sent may have "
                "kept it: read the session before retrying"
            )
            failure = SessionStoreError(
                f"session {entry.id!r}: the store failed to commit the write this change "
                f"was grouped in ({group} changes; {outcome}): {exc!r}",
                applied=applied,
            )
        failure.__cause__ = exc
        return failure

    # -- a shared store: reads checked, conflicts replayed, exclusive changes --------

    async def _reload(self) -> SessionState:
        """The stored state, adopted as the committed one (NotFound if gone)."""
        try:
            state = await self._host.store.load(self._entry.id)
        except Exception as exc:
            raise _store_error(self._entry.id, exc) from exc
        self._check_live("it could be read")
        if state is None:
            raise self._gone_from_store()
        self._adopt(state)
        return state

    async def _read_shared(self) -> SessionState:
        """The latest committed state: the cached one if the store still holds its
        version, else reloaded. A read is use: the deadline is pushed (coalesced)."""
        leases = self._host.leases
        assert leases is not None
        entry = self._entry
        try:
            version = await leases.store.version(entry.id)
        except Exception as exc:
            raise _store_error(entry.id, exc) from exc
        self._check_live("it could be read")
        if version is None:
            raise self._gone_from_store()
        if version != self.state.version:
            await self._reload()
        leases.touch(entry, self.state, self._host.now())
        return self._guard.with_events(attrs.evolve(self.state, metrics=self.metrics()))

    async def _change_fresh(self, op: Change) -> SessionState:
        """``op`` on the latest committed state (reloaded if the store moved on)."""
        leases = self._host.leases
        assert leases is not None
        try:
            version = await leases.store.version(self._entry.id)
        except Exception as exc:
            raise _store_error(self._entry.id, exc) from exc
        if version != self.state.version:
            await self._reload()
        state = self.state
        _check_version(state, op.expected_version)
        result = op.transform(self._guard.with_events(state))
        if type(result) is CoroutineType:
            result.close()
            return await self._change_exclusive(op)
        return await self._committed(self._stamp(state, result), op)

    async def _change_exclusive(self, op: Change) -> SessionState:
        """An async update: it runs once, under this process's lease (taken over if
        another holds it), on the latest state; never replayed. If the session moves
        on meanwhile, it fails with SessionConcurrencyError and nothing is saved."""
        leases = self._host.leases
        assert leases is not None
        entry = self._entry
        try:
            if entry.epoch is None:
                state = await leases.activate(entry, force=True)
                if state is None:
                    raise self._gone_from_store()
                self._check_live("it could run")
                self._adopt(state)
            elif await leases.store.version(entry.id) != self.state.version:
                await self._reload()
        except SessionError:
            raise
        except Exception as exc:
            raise _store_error(entry.id, exc) from exc
        self._check_live("it could run")
        state = self.state
        _check_version(state, op.expected_version)
        held = entry.epoch
        with holding(entry):  # its calls to other sessions are checked for cycles
            result = await op.transform(self._guard.with_events(state))  # type: ignore[misc]
        self._check_live("this change was committed")
        if entry.epoch != held:  # the lease renewal found the session taken over
            lost = SessionFencedError(
                f"session {entry.id!r}: the lease of epoch {held} was lost",
                expected=-1 if held is None else held,
                actual=-1,
            )
            raise _moved(entry.id, lost, ran_on=state.version, now_at=state.version)
        return await self._committed(self._stamp(self.state, result), None)

    async def _replay(
        self,
        conflict: SessionConcurrencyError,
        first: Change | None,
        outcomes: Taken,
    ) -> tuple[Outcome, Taken]:
        """After a conflict (or a fencing) of a group's write, reload and run the
        group's changes again on the stored state, then write again: at most
        REPLAYS times. Returns the outcome of ``first`` (None: it may not run again,
        it fails) and of each queued change."""
        entry = self._entry
        host = self._host
        previous = self.state.version
        error: SessionConcurrencyError = conflict
        for attempt in range(REPLAYS):
            if attempt:  # back off, so that contending processes take turns
                await trio.sleep(random.uniform(0, 0.002 * 2**attempt))
            if isinstance(error, SessionFencedError):
                entry.epoch = None  # taken over: go on as a guest
            elif error.actual == -1:
                raise self._gone_from_store()
            base = await self._reload()
            committed = [base]
            head: Outcome
            try:
                if first is None:
                    raise _moved(entry.id, error, ran_on=previous, now_at=base.version)
                committed.append(await self._apply(first, self._guard.with_events(base)))
                head = committed[-1]
            except Exception as exc:
                head = exc
            again: Taken = []
            for queued, _ in outcomes:
                try:
                    committed.append(await self._apply(queued.message, committed[-1]))
                    again.append((queued, committed[-1]))
                except Exception as exc:
                    again.append((queued, exc))
            if len(committed) > 1:
                try:
                    await self._write(committed[-1], base.version)
                except SessionConcurrencyError as exc:
                    error = exc
                    continue
                entry.state = committed[-1]
                self._guard.committed()
                for state in committed[1:]:
                    host.publish("updated", state)
            return head, again
        retry = 0.002 * 2**REPLAYS
        busy = SessionContendedError(
            f"session {entry.id!r} was changed by other processes at each of {REPLAYS} "
            f"tries to commit; nothing was saved, retry in about {retry:.2f} s",
            retry_after=retry,
        )
        return busy, [(queued, _copy(busy)) for queued, _ in outcomes]

    # -- security ------------------------------------------------------------------

    def _check(self, op: Validate | Authorized) -> None:
        """Return if ``op.token`` may use the session; else record the refusal and
        raise it (nothing is committed). (Its principal was checked by receive.)"""
        guard = self._guard
        state = self.state
        if guard.passes(op.token, state):
            return
        host = self._host
        host.tally.security_failed()
        raise guard.refuse(op.token, state, op.tool_name, host.now(), host.wall_clock())

    # -- ending --------------------------------------------------------------------

    def _end(self, op: End) -> SessionState | SeeThrough[SessionState]:
        final = self._guard.with_events(attrs.evolve(self.state, metrics=self.metrics()))
        host = self._host
        if host.store.immediate:
            host.store.discard(final.id)
            host.session_gone(self._entry, op.reason, final)
            return final
        if host.leases is not None:
            return see_through(self._end_shared(op))
        return see_through(self._end_durably(final, op))

    async def _end_shared(self, op: End) -> SessionState:
        """Delete the stored session if it is still at the version this process
        holds, else reload and try again (so that the final state returned is the
        one deleted)."""
        leases = self._host.leases
        assert leases is not None
        for _ in range(REPLAYS):
            final = self._guard.with_events(attrs.evolve(self.state, metrics=self.metrics()))
            try:
                with trio.CancelScope(shield=True):
                    removed = await leases.store.remove(final.id, version=final.version)
            except SessionConcurrencyError:
                await self._reload()
                continue
            except Exception as exc:
                raise _store_error(final.id, exc) from exc
            self._check_live("it could end")
            if not removed:
                raise self._gone_from_store()
            self._host.session_gone(self._entry, op.reason, final)
            return final
        raise SessionContendedError(
            f"session {self._entry.id!r} was changed by other processes at each of "
            f"{REPLAYS} tries to end it; it was not ended, retry",
            retry_after=0.01 * REPLAYS,
        )

    async def _end_durably(self, final: SessionState, op: End) -> SessionState:
        """Delete the stored session, then let it go: if the store fails, the session
        lives on, whole, and the caller gets the error."""
        with trio.CancelScope(shield=True):
            try:
                await self._host.store.delete(final.id)
            except Exception as exc:
                raise _store_error(final.id, exc) from exc
        self._check_live("it could end")  # a removal during the delete came first
        self._host.session_gone(self._entry, op.reason, final)
        return final


def _answer(outcomes: Taken) -> None:
    """Answer each change taken into a group commit with its outcome (they were
    counted as they were applied)."""
    for queued, outcome in outcomes:
        if isinstance(outcome, Exception):
            queued.fail(outcome)
        else:
            queued.reply(outcome)


def _moved(
    session_id: str, error: SessionConcurrencyError, *, ran_on: int, now_at: int
) -> SessionConcurrencyError:
    """The error of an exclusive change (run on version ``ran_on``) whose commit met
    another process's (the session is at ``now_at``)."""
    what = (
        "taken over by another process"
        if isinstance(error, SessionFencedError)
        else ("changed by another process")
    )
    moved = SessionConcurrencyError(
        f"session {session_id!r} was {what} while an exclusive update ran; "
        "nothing was saved, retry",
        expected=ran_on,
        actual=now_at,
    )
    moved.__cause__ = error
    return moved


def _copy(error: SessionContendedError) -> SessionContendedError:
    return SessionContendedError(str(error), retry_after=error.retry_after)


def _check_version(state: SessionState, expected: int | None) -> None:
    if expected is not None and expected != state.version:
        raise SessionConcurrencyError(
            f"session {state.id!r} is at version {state.version}, not {expected}; "
            "read it again and retry against the current version",
            expected=expected,
            actual=state.version,
        )


def _store_error(session_id: str, exc: Exception) -> SessionError:
    if isinstance(exc, SessionError):
        return exc
    return SessionStoreError(f"session {session_id!r}: the store failed: {exc!r}")


class _TokenBucket:
    """``rate`` tokens per second up to ``burst``, on Trio's clock."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if one was there, else the seconds until one will be."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate
