"""Tool calls run concurrently by a pool of worker tasks: arrival order per session,
the default session, cancellation, progress and log notifications.

The calls of every client a server serves (one stdio connection; each MCP session and
the stateless requests of the HTTP app) run here; what differs per client is its
:class:`~._core.Peer` (handshake state and default session) and, per call, the
:class:`Sink` its messages go to."""

from __future__ import annotations

import logging
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Hashable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..sessions import (
    Session,
    SessionClosedError,
    SessionError,
    SessionManager,
    SessionNotFoundError,
)
from . import _protocol as protocol
from ._args import ArgumentError, direct_structurer, structure_arguments
from ._handlers import ServerHealth
from ._jsonrpc import (
    INVALID_PARAMS,
    JsonRpcError,
    RequestId,
    error_line,
    internal_error,
    notification_line,
    shown_name,
)
from ._lanes import Lanes, Turn
from ._progress import ProgressReports
from ._tools import Tool, ToolError, ToolResult, ToolSet, domain_error, failure, success

if TYPE_CHECKING:
    from ._core import Peer

logger = logging.getLogger("triact.transport")


class Sink(Protocol):
    """Where one request's messages go: the notifications sent while it runs
    (progress, logs), then its answer (exactly once, unless it was cancelled)."""

    def notify(self, line: bytes) -> None: ...
    def answer(self, line: bytes) -> None: ...
    def dropped(self) -> None:
        """The call ended without an answer: it was cancelled, so it never gets one."""

    def connection_gone(self) -> None:
        """Said before the answer of a call that did nothing because the client's
        connection session ended meanwhile (:class:`ConnectionGoneError`): a transport
        that can (HTTP: 404) answers the request as one of an ended connection."""


class ConnectionGoneError(SessionNotFoundError):
    """The client's connection session (HTTP's MCP session) was ended, through
    another process, or expired, while a call made its default session: nothing was
    done, and the client must open a new one (raised by ``Peer.claim_default``)."""


#: Sessions remembered (handles and flags; rebuilt on demand when forgotten).
_KNOWN_MAX = 65_536
#: Idle worker tasks kept once the server has been quiet (no call started and none in
#: flight) for :data:`_QUIET_SECONDS`. Until then every idle worker is kept: a client
#: with C calls in flight reads a burst of answers, then sends as many calls, so the
#: workers that answered are needed again at once (with a fixed bound of 64, at C = 256
#: about seven calls in ten started a task of their own, about 9 µs each).
_IDLE_WORKERS_MAX = 64
_QUIET_SECONDS = 1.0
#: Seconds an unused default session's end may take (see _end_unused).
_END_UNUSED_WITHIN = 5.0
#: The answer of a call cancelled by the server's stop (see ToolCalls._run).
_STOPPED = ToolError(
    "closed",
    "the server stopped before this call finished: it was cancelled and nothing was done; retry it",
)


class _Known:
    """What the server has learnt about one session (for every client: a call skips
    the checks only if the session is ``unbound`` and its ``owner`` is the caller's
    principal)."""

    __slots__ = ("handle", "owner", "unbound")

    def __init__(self, handle: Session, unbound: bool = False, owner: str | None = None) -> None:
        self.handle = handle
        self.unbound = unbound  # needs no token
        self.owner = owner  # its principal (fixed at creation), if unbound


class _Call(Turn):
    """One tools/call, from its arrival to its answer; its own turn in its session's
    lane, if it joined one (``joined``)."""

    __slots__ = (
        "args",
        "cancelled",
        "ctx",
        "joined",
        "key",
        "peer",
        "request_id",
        "scope",
        "sink",
        "tool",
    )

    def __init__(
        self,
        key: Hashable,
        request_id: RequestId,
        ctx: protocol.RequestContext,
        tool: Tool,
        args: Any,
        peer: Peer,
        sink: Sink,
    ) -> None:
        self.key = key
        self.request_id = request_id
        self.peer = peer
        self.sink = sink
        self.ctx = ctx
        self.tool = tool
        self.args = args
        self.joined = False
        #: The scope of the worker running it; None while it waits for a worker.
        self.scope: trio.CancelScope | None = None
        self.cancelled = False


class ToolCalls:
    """The tool calls of a server, of all its clients. :meth:`start` runs in arrival
    order (under the reading task, for stdio); each call then runs in one of a pool of
    worker tasks in ``nursery``, one call per worker at a time, so calls run as
    concurrently as if each had a task of its own, without the cost of starting one.

    A worker runs the queued calls one after another for as long as they complete
    without suspending (most do: an in-memory session's actor handles a call in the
    caller's task when it is idle), so a burst of calls read at once costs one task
    switch, not one per call. The moment a call is about to suspend (it waits for its
    lane, for a busy actor, for the store...), its worker hands the rest of the queue to
    another worker (woken, or started) before it yields: no queued call waits for
    another call's wait, as if each call had been given a worker of its own.

    Guarantees: calls for one session are issued to it in arrival order; a call is
    answered exactly once (through its sink) unless it is cancelled before it completed,
    in which case its change did not happen and it gets no answer. Calls are known by a
    key unique among those in flight (stdio: the request id; HTTP: one per request).
    """

    def __init__(
        self,
        manager: SessionManager,
        tools: ToolSet,
        *,
        max_in_flight: int,
        default_session: bool,
        max_line_bytes: int,
        progress_interval: float = 1.0,
    ) -> None:
        self.manager = manager
        self.tools = tools
        #: Each tool by name, with its arguments' direct structurer (a ToolSet never changes).
        self._tool_named = {tool.name: (tool, direct_structurer(tool.arguments)) for tool in tools}
        #: Set once no more calls will start; then ``drained`` is set when none run.
        self.closing = False
        #: Set by :meth:`stop`: a call not begun yet never begins.
        self.stopped = False
        self.drained = trio.Event()
        self.nursery: trio.Nursery | None = None
        self._max_in_flight = max_in_flight
        self._default_session_allowed = default_session
        self._max_line_bytes = max_line_bytes
        self._known: dict[str, _Known] = {}
        #: The calls in flight, by key (read it; only this class changes it).
        self.in_flight: dict[Hashable, _Call] = {}
        self._queue: deque[_Call] = deque()  # calls no worker has taken yet
        self._idle = trio.lowlevel.ParkingLot()  # workers waiting for a call
        #: Workers woken or started that will take queued calls before they park or
        #: suspend: while there is one, a new call needs no other.
        self._awake = 0
        self._starts = 0  # calls started so far (the trimmer's sign of activity)
        self._shed = 0  # idle workers to exit (set by the trimmer)
        self._trimming = False  # a trimmer waits for a quiet period
        self._lanes = Lanes(manager.config.mailbox_size)
        #: Called when no worker is awake any more and no call is queued (the calls
        #: of a burst are done or waiting), and whenever a call suspends (at an actor's
        #: schedule point, every millisecond or so of a long burst): where a transport
        #: can write the answers made so far.
        self.on_idle: Callable[[], None] | None = None
        self._reports = ProgressReports(progress_interval)
        self._started = trio.current_time()

    def __len__(self) -> int:
        """Calls in flight."""
        return len(self.in_flight)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.in_flight

    def close(self) -> None:
        """No more calls will start."""
        self.closing = True
        if not self.in_flight:
            self.drained.set()

    def stop(self) -> None:
        """Cancel every call in flight: the server's stop, past its grace period (after
        :meth:`close`). Unlike a client's cancellation, each is answered, ``closed``
        (it was cancelled and did not happen; see :meth:`_run`)."""
        self.stopped = True
        for call in self.in_flight.values():
            if call.scope is not None:
                call.scope.cancel()

    def cancel(self, key: Any, reason: Any) -> None:
        """Cancel the call with this key, if it is in flight."""
        call = None
        if type(key) is str or type(key) is int:
            call = self.in_flight.get(key)
        if call is None:
            logger.debug("cancel of %r: not in flight", key)
            return
        logger.info("cancelling request %r: %s", call.request_id, reason)
        call.cancelled = True
        if call.scope is not None:
            call.scope.cancel()

    def start(
        self,
        key: Hashable,
        request_id: RequestId,
        ctx: protocol.RequestContext,
        params: dict[str, Any],
        peer: Peer,
        sink: Sink,
    ) -> None:
        """Begin a tools/call, synchronously, so that calls join their session's lane in
        arrival order: answer at once what needs no task (bad arguments, busy), start a
        task for the rest. Raises JsonRpcError for a protocol error."""
        name = params.get("name")
        if type(name) is not str:
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: tools/call needs a string 'name'")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        elif type(arguments) is not dict:
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: 'arguments' must be an object")
        named_tool = self._tool_named.get(name)
        if named_tool is None:
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Unknown tool: {shown_name(name)}",
                {"known": list(self.tools.names)},
            )
        tool, direct = named_tool
        try:
            # The direct path first (structure_arguments would take it too): most
            # arguments fit it, and it is a call less.
            args = direct(arguments) if direct is not None else None
            if args is None:
                args = structure_arguments(name, arguments, tool.arguments)
        except ArgumentError as exc:
            if not ctx.argument_errors_as_results:
                raise JsonRpcError(
                    INVALID_PARAMS,
                    f"Invalid params: {exc}",
                    {"code": "invalid_arguments", "problems": exc.problems},
                ) from None
            named = arguments.get("session_id")
            error = ToolError("invalid_arguments", str(exc))
            self._refuse(sink, request_id, ctx, name, named if type(named) is str else None, error)
            return
        call = _Call(key, request_id, ctx, tool, args, peer, sink)
        if tool.session != "none":
            session_id = args.session_id
            # A named session that is not the default one: its own lane (the common
            # case, spelled out); anything else, or a lane too long, is left to _join_lane.
            joined = (
                session_id is not None
                and session_id != peer.default_session_id
                and self._lanes.join(session_id, call)
            )
            try:
                call.joined = joined or self._join_lane(ctx, tool, args, peer, call)
            except ToolError as exc:
                self._refuse(sink, request_id, ctx, name, args.session_id, exc)
                return
        if len(self.in_flight) >= self._max_in_flight:
            if call.joined:
                self._lanes.finish(call)
            error = ToolError(
                "busy",
                f"the server is handling {self._max_in_flight} calls already; retry later",
            )
            self._refuse(sink, request_id, ctx, name, getattr(args, "session_id", None), error)
            return
        self.in_flight[key] = call
        self._starts += 1
        self._queue.append(call)
        if not self._awake:
            self._wake_worker()

    def _wake_worker(self) -> None:
        """Have one more worker take queued calls: an idle one, else a new one."""
        self._awake += 1
        if self._idle:
            self._idle.unpark()
        else:
            assert self.nursery is not None
            self.nursery.start_soon(self._work)

    def _join_lane(
        self, ctx: protocol.RequestContext, tool: Tool, args: Any, peer: Peer, turn: Turn
    ) -> bool:
        """Put ``turn`` in the lane of the call's session, if it has one (False if not);
        ToolError if it may not be made."""
        session_id = args.session_id
        if session_id is None:
            if ctx.stateless or not self._default_session_allowed:
                if tool.session == "optional":
                    return False
                raise ToolError(
                    "invalid_arguments",
                    f"{tool.name} needs session_id"
                    + (
                        f" under protocol revision {ctx.version}, which has no connection session"
                        if ctx.stateless
                        else ""
                    )
                    + "; create a session with session_create and pass its session_id",
                )
            if (
                tool.session == "optional"
                and peer.default_session_id is None
                and peer.default_creating is None
                and peer.lane not in self._lanes
            ):
                return False
            key = peer.lane
        else:
            key = peer.lane if session_id == peer.default_session_id else session_id
        if not self._lanes.join(key, turn):
            raise ToolError(
                "busy",
                f"session {session_id or peer.default_session_id!r} has "
                f"{self.manager.config.mailbox_size} calls waiting (mailbox_size); retry later",
            )
        return True

    async def _work(self) -> None:
        """A worker (counted in ``_awake`` by whoever woke or started it): run queued
        calls one at a time, handing the queue on whenever a call suspends (see
        :meth:`_handing_on`); park when there are none.

        Each call runs inside the worker's cancel scope, which cancels only that call:
        a worker leaves the scope after a call that was cancelled (whether or not the
        cancellation reached it) and opens a new one.
        """
        while True:
            call = None
            try:
                with trio.CancelScope() as scope:
                    while True:
                        if not self._queue:
                            self._awake -= 1
                            if not self._awake and self.on_idle is not None:
                                self.on_idle()
                            if self._shed:
                                self._shed -= 1
                                return
                            await self._idle.park()  # whoever unparks it counts it awake
                            continue
                        call = self._queue.popleft()
                        call.scope = scope
                        await self._handing_on(self._run(call))
                        done, call = call, None
                        if done.cancelled:
                            break
            except BaseException:  # the server's cancellation: this worker is done
                if call is not None:  # it counted as awake (it was not parked)
                    self._awake -= 1
                raise
            if call is not None:
                logger.info(
                    "request %r (%s) was cancelled; %s",
                    call.request_id,
                    call.tool.name,
                    # (see _run: the server's stop answers the calls it cancels)
                    "answered closed" if self.closing and not call.cancelled else "not answered",
                )

    @types.coroutine
    def _handing_on(self, run: Coroutine[Any, Any, None]) -> Generator[Any, Any, None]:
        """``await run``, except that each time it is about to suspend, the worker
        stops counting as awake and, if calls are queued, has another worker take them
        first, and the answers made so far are handed to ``on_idle`` (so that a long
        burst's first answers leave while the rest are made, and the client can work on
        them meanwhile); once resumed it counts again (it takes queued calls when this
        one is done). A call that completes without suspending costs no task switch.

        This is what ``await`` does (every value ``run`` yields goes to Trio, and what
        Trio sends or throws back goes to ``run``), with the count kept around each
        suspension."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                trap = run.send(value) if error is None else run.throw(error)
            except StopIteration:
                return
            self._awake -= 1
            if not self._awake and self._queue:
                self._wake_worker()
            if self.on_idle is not None:
                self.on_idle()
            try:
                value = yield trap
                error = None
            except GeneratorExit:
                run.close()
                raise
            except BaseException as exc:  # Cancelled among others: goes to ``run``
                value, error = None, exc
            self._awake += 1

    async def _trim_when_quiet(self) -> None:
        """Once no call has started and none has been in flight for a quiet period,
        let the idle workers past :data:`_IDLE_WORKERS_MAX` exit."""
        try:
            while True:
                starts = self._starts
                await trio.sleep(_QUIET_SECONDS)
                if self._starts == starts and not self.in_flight:
                    break
        finally:
            self._trimming = False
        excess = len(self._idle) - _IDLE_WORKERS_MAX
        if excess > 0:
            self._shed += excess
            self._awake += excess
            self._idle.unpark(count=excess)

    async def _run(self, call: _Call) -> None:
        """Run one call and answer it, unless its client cancels it (a call the
        server's stop cancels is answered ``closed``: see :meth:`stop`)."""
        ctx, tool = call.ctx, call.tool
        answered = False
        try:
            if call.cancelled:  # before it started: it never runs
                logger.info("request %r (%s) was cancelled; not run", call.request_id, tool.name)
                self._debug_call(call, None, "cancelled", 0.0)
                return
            if self.stopped:  # the server's stop came first: answered "closed" below
                return
            # The call's duration is only logged: read the clock only if it will be.
            debug = logger.isEnabledFor(logging.DEBUG)
            timed = debug or ctx.log_level is not None
            started = trio.current_time() if timed else 0.0
            result: ToolResult | None = None
            outcome = "failed"
            if ctx.progress_token is not None:
                assert self.nursery is not None
                self._reports.watch(
                    call.key, ctx.progress_token, tool.name, self.nursery, call.sink.notify
                )
            try:
                # The tool's run, awaited here (a coroutine less per call than a
                # method of its own): its value or its error becomes the result.
                try:
                    args, peer = call.args, call.peer
                    if tool.session == "none":
                        value = await tool.run(peer, args)
                    else:
                        session_id = args.session_id
                        known = self._known.get(session_id) if session_id is not None else None
                        if (
                            known is None
                            or tool.prepare is not None
                            or args.token is not None
                            or not known.unbound
                            or known.owner != peer.principal
                        ):
                            session, args = await self._before_session_call(call, known)
                        else:  # a session known to need no check: the common case
                            session = known.handle
                        if call.joined and not self._lanes.issue_at_head(call):
                            await self._lanes.wait(call)
                            self._lanes.issue(call)
                        # The session call below is queued before the run suspends.
                        try:
                            value = await tool.run(peer, session, args)
                        except SessionNotFoundError as exc:
                            if args.session_id is not None or session is None or not call.joined:
                                raise
                            value = await self._default_again(call, session, args, exc)
                    result = success(value)
                except ToolError as exc:
                    result = failure(exc)
                except Exception as exc:
                    result = self._domain_failure(exc, call.args)
                    if result is None:
                        raise
                    if isinstance(exc, ConnectionGoneError):
                        call.sink.connection_gone()
                outcome = f"error code={result.code}" if result.error else "ok"
            except trio.Cancelled:
                outcome = "cancelled"
                raise
            except BaseExceptionGroup as group:
                # A cancellation that reached a nursery comes out of it as a group of
                # Cancelled (trio.run_process's, as the work tools run git): the call
                # was cancelled all the same, not failed.
                if group.split(trio.Cancelled)[1] is None:
                    outcome = "cancelled"
                raise
            finally:
                hold_until = (
                    self._reports.stop(call.key) if ctx.progress_token is not None else None
                )
                if debug:
                    elapsed = trio.current_time() - started if timed else 0.0
                    self._debug_call(call, result, outcome, elapsed)
            assert result is not None
            if hold_until is not None:
                # The change is made: a cancellation now must not lose its answer.
                with trio.CancelScope(shield=True):
                    await trio.sleep_until(hold_until)
            if timed:
                self._log_call(call.sink, ctx, tool, result, trio.current_time() - started)
            self._reply_tool(call.sink, call.request_id, ctx, result)
            answered = True
        except Exception:
            logger.exception("tool %s failed (request %r)", tool.name, call.request_id)
            call.sink.answer(error_line(call.request_id, internal_error()))
            answered = True
        finally:
            if not answered:
                if self.closing and not call.cancelled:
                    # Cancelled by the server's stop, past its grace period: it did not
                    # happen (its change was not committed), and its client is told so,
                    # to retry it (on another process behind the same address), rather
                    # than left with no answer and an unknown outcome.
                    self._reply_tool(call.sink, call.request_id, ctx, failure(_STOPPED))
                else:
                    call.sink.dropped()
            if call.joined:
                self._lanes.finish(call)
            del self.in_flight[call.key]
            if not self.in_flight:
                if self.closing:
                    self.drained.set()
                if len(self._idle) >= _IDLE_WORKERS_MAX and not self._trimming:
                    assert self.nursery is not None
                    self._trimming = True
                    self.nursery.start_soon(self._trim_when_quiet)

    async def _before_session_call(self, call: _Call, known: _Known | None) -> tuple[Any, Any]:
        """What a call to a session needs before its turn, where there is more to do
        than to take the handle of a session known to need no check: the handle (None
        for an optional session there is not), looked up or with the caller's checks,
        and the arguments (prepared, if the tool prepares them)."""
        tool, args, peer = call.tool, call.args, call.peer
        turn = call if call.joined else None
        if known is None:
            if turn is not None and tool.session == "optional" and args.session_id is None:
                # Which default session it reads is up to the calls before it.
                await self._lanes.wait(turn)
            known = await self._session_for(args, tool, turn, peer)
        session = known.handle if known is not None else None
        if known is not None and (
            args.token is not None or not known.unbound or known.owner != peer.principal
        ):
            principal = peer.principal
            if tool.prepare is None:
                # Each of the tool's session calls checks the principal and the
                # token in the same actor call (one call, not two).
                session = known.handle.authorized(args.token, tool.name, principal=principal)
            else:  # refuse a bad token before the arguments' own checks run
                await known.handle.validate_security(args.token, tool.name, principal=principal)
        if tool.prepare is not None:
            args = await tool.prepare(args)
        return session, args

    async def _default_again(
        self, call: _Call, gone: Session, args: Any, error: SessionNotFoundError
    ) -> Any:
        """Run ``call`` (with its ``args``) again, on its peer's default session made
        anew: the default session it ran on, ``gone``, was found gone from the store
        (another process ended it, or the store expired it) while this process still
        held it. In one process its end is seen before the next call is made, which
        makes a new one; here too. The first run changed no session.

        Only a call alone in its lane runs again, and only if it still is when it runs:
        calls of the peer sent after it must not take effect before it. Otherwise it
        fails with ``error``, as it did (the calls after it use a new one)."""
        peer = call.peer
        if peer.default_session_id == gone.id:
            peer.session_gone(gone.id)
        else:
            self.forget(gone.id)
        if not self._lanes.alone(call):
            raise error
        session = await self._default_session(peer, create=call.tool.session == "required")
        if not self._lanes.alone(call):
            raise error
        if session is not None and session.id not in self._known:
            self.remember(session, unbound=True, owner=peer.principal)
        # The session call below is queued before the run suspends.
        return await call.tool.run(peer, session, args)

    def _domain_failure(self, exc: Exception, args: Any) -> ToolResult | None:
        """The result that reports ``exc`` (see :func:`domain_error`); None for a bug."""
        error = domain_error(exc)
        if error is None:
            return None
        if error.code in ("not_found", "closed") and args.session_id is not None:
            self._known.pop(args.session_id, None)
        return failure(error)

    async def _session_for(
        self, args: Any, tool: Tool, turn: Turn | None, peer: Peer
    ) -> _Known | None:
        session_id = args.session_id
        if session_id is not None:
            known = self._known.get(session_id)
            if known is None:
                session = await self.manager.get_session(session_id)
                if peer.principal is not None:
                    # Its calls check it: a look at the state first would be a call
                    # that one principal could make to another's session.
                    return self.remember(session, unbound=False)
                # First contact: learn whether it needs a check (a binding and a
                # principal are fixed when a session is created).
                state = await session.snapshot()
                unbound = state.client_binding is None
                known = self.remember(session, unbound=unbound, owner=state.principal)
            return known
        if turn is None:
            return None
        default = await self._default_session(peer, create=tool.session == "required")
        if default is None:
            return None
        return self._known.get(default.id) or self.remember(
            default, unbound=True, owner=peer.principal
        )

    def remember(
        self, session: Session, *, unbound: bool = False, owner: str | None = None
    ) -> _Known:
        """Keep ``session``'s handle (and, if it needs no token, its principal) for the
        next calls."""
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()  # a cache: what is forgotten is looked up again
        known = self._known[session.id] = _Known(session, unbound, owner)
        return known

    async def _default_session(self, peer: Peer, *, create: bool) -> Session | None:
        """The peer's default session, created on first use (and again if it expired
        or ended)."""
        while True:
            if peer.default_session_id is not None:
                try:
                    return await self.manager.get_session(peer.default_session_id)
                except SessionNotFoundError:
                    logger.info("default session %r is gone", peer.default_session_id)
                    peer.session_gone(peer.default_session_id)
            if peer.default_creating is not None:
                await peer.default_creating.wait()
                continue
            if not create:
                return None
            creating = peer.default_creating = trio.Event()
            try:
                session = await self.manager.create_session(
                    "default", metadata={"default_session": True}, principal=peer.principal
                )
                if peer.claim_default is not None:
                    named = await self._claim_default(peer, session)
                    if named is not None:  # another process made one first: that one
                        peer.default_session_id = named
                        continue
                peer.default_session_id = session.id
                self.remember(session, unbound=True, owner=peer.principal)
                logger.info("created the default session %r", session.id)
                return session
            finally:
                peer.default_creating = None
                creating.set()

    @staticmethod
    async def _claim_default(peer: Peer, session: Session) -> str | None:
        """``peer.claim_default`` for the session just made: None once it is the
        peer's default session; else the one named first, and this one is ended
        again (as it is if naming it fails: no call has used it)."""
        assert peer.claim_default is not None
        try:
            named = await peer.claim_default(peer, session.id)
        except BaseException:
            with trio.CancelScope(shield=True):
                await _end_unused(session)
            raise
        if named is not None:
            await _end_unused(session)
        return named

    @staticmethod
    def _reply_tool(
        sink: Sink, request_id: RequestId, ctx: protocol.RequestContext, result: ToolResult
    ) -> None:
        try:
            line = result.line(request_id, stateless=ctx.stateless)
        except (TypeError, ValueError):  # a value JSON cannot carry
            logger.exception("result of request %r cannot be encoded", request_id)
            line = error_line(request_id, internal_error())
        sink.answer(line)

    def _refuse(
        self,
        sink: Sink,
        request_id: RequestId,
        ctx: protocol.RequestContext,
        name: str,
        session_id: str | None,
        error: ToolError,
    ) -> None:
        """Answer a call with a tool error before it runs."""
        logger.debug(
            "tools/call tool=%s request=%r session=%s outcome=error code=%s ms=0",
            name,
            request_id,
            session_id or "-",
            error.code,
        )
        self._reply_tool(sink, request_id, ctx, failure(error))

    def _debug_call(
        self, call: _Call, result: ToolResult | None, outcome: str, elapsed: float
    ) -> None:
        """The stderr log line of a call: ``--log-level debug`` shows one per call, with
        its tool, session, outcome (ok, error and its code, cancelled, failed) and time."""
        session_id = getattr(call.args, "session_id", None)
        if session_id is None and call.tool.session != "none":
            session_id = call.peer.default_session_id
        if session_id is None and result is not None and not result.error:
            session_id = result.structured.get("session_id")  # the one it created
        logger.debug(
            "tools/call tool=%s request=%r session=%s outcome=%s ms=%.2f",
            call.tool.name,
            call.request_id,
            session_id or "-",
            outcome,
            elapsed * 1000,
        )

    @staticmethod
    def _log_call(
        sink: Sink, ctx: protocol.RequestContext, tool: Tool, result: ToolResult, elapsed: float
    ) -> None:
        threshold = ctx.log_level
        if threshold is None:
            return
        error = result.structured["error"] if result.error else None
        level = "warning" if error else "debug"
        if protocol.LOG_RANK[level] < protocol.LOG_RANK[threshold]:
            return
        data = {
            "tool": tool.name,
            "outcome": error["code"] if error else "ok",
            "seconds": round(elapsed, 6),
        }
        if error:
            data["message"] = error["message"]
        params = {"level": level, "logger": "triact", "data": data}
        sink.notify(notification_line("notifications/message", params))

    def forget(self, session_id: str) -> None:
        """Drop what is kept of ``session_id`` (it ended or expired)."""
        self._known.pop(session_id, None)

    def health(self) -> ServerHealth:
        return ServerHealth(
            uptime=trio.current_time() - self._started,
            in_flight=len(self.in_flight),
            max_line_bytes=self._max_line_bytes,
            closing=self.closing,
        )


async def _end_unused(session: Session) -> None:
    """End a default session that no call used; if the store fails, it is left to its
    idle TTL (nothing names it)."""
    with trio.move_on_after(_END_UNUSED_WITHIN):
        try:
            await session.end()
        except (SessionNotFoundError, SessionClosedError):
            return
        except SessionError as exc:  # the store failed, another process took it...
            logger.info("an unused default session was left to its idle TTL: %s", exc)
