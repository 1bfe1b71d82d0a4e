"""Session states in Redis (or Valkey): a SharedSessionStore for many processes on
many machines, through valkey-glide, which runs natively under Trio."""

from __future__ import annotations

import importlib
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import trio

from . import _redis_lua as lua
from ._codec import decode_state, encode_state
from ._errors import (
    SessionConcurrencyError,
    SessionDataError,
    SessionFencedError,
    SessionLimitError,
    SessionStoreError,
)
from ._redis_url import RedisAddress, parse_redis_url
from ._state import SessionState
from ._store import (
    Activation,
    IndexEntry,
    SharedSessionStore,
    check_channel,
    check_expected,
    check_record,
)

if TYPE_CHECKING:
    from glide import Batch, GlideClient

logger = logging.getLogger("triact.sessions")

_T = TypeVar("_T")

#: Redis expires a session's keys itself this long after its deadline: the backstop
#: for sessions that no process is left to sweep. While processes run, their sweep
#: expires a session at its deadline (and only once its lease ran out).
KEY_GRACE = 60.0
#: How many background changes (touches, releases, discards) go in one pipeline.
_NOTE_BATCH = 512
#: The most events of its own a following store remembers, to leave their echo out.
_OWN_KEPT = 4096
#: Milliseconds between glide's checks that a subscribed connection is subscribed
#: (after a reconnection it is not until the next check; glide's own interval left
#: a restarted Redis's broadcasts unheard for 2 to 3 s).
_RESUBSCRIBE_MS = 500


class RedisStore(SharedSessionStore):
    """Keeps each session as a Redis hash, shared by every process that opens the same
    Redis with the same key prefix: a :class:`SharedSessionStore` for many processes
    on many machines.

    Every change is one call of a Redis function (``FUNCTION LOAD``, loaded when the
    store opens), which Redis runs atomically: the compare-and-set on the version and
    the fencing epoch, the idle deadline and the event on the ``<prefix>events``
    channel commit together or not at all. An activation (load, lease and new epoch)
    is one round trip too. Concurrent calls from many sessions share one connection
    and are pipelined on it.

    ``url`` is ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P&timeout=S]``, or
    ``rediss://`` for TLS; without a password in the URL, the ``TRIACT_REDIS_PASSWORD``
    environment variable gives it. The password never appears in errors, logs or
    ``repr``. ``prefix`` (default ``triact:``) starts every key, so several
    independent sets of sessions can share one Redis database; ``timeout`` bounds each
    Redis call (default 5 s).

    Times: leases and deadlines are kept on the Redis server's clock. When it opens,
    the store measures the difference between this machine's clock and the server's
    ``TIME``, and maps the times its manager gives onto the server's clock, so that
    processes on machines whose clocks disagree agree on leases and deadlines.
    Correctness never depends on it. With ``clock``, the times are on that clock
    instead, taken as shared by every process (for tests with a fake clock: every
    store of the set must then be given the same one). Records expire by Redis's own
    key expiry.

    Writes are seen through: once :meth:`write` (or :meth:`create`, :meth:`remove`)
    is called, it is carried out and its outcome returned, and a cancellation
    arrives at the caller's next checkpoint. If Redis does not answer within the
    timeout, the call fails with :class:`SessionStoreError`, and whether the change
    was applied is unknown (the next compare-and-set settles it): its ``applied`` is
    None. It is False when nothing was sent (the store not open, a state JSON cannot
    hold), when the call only read, and when Redis refused a change before running
    it (out of memory under ``noeviction``, a read-only replica, missing
    permissions, still loading, busy with a script).
    """

    immediate = False
    writes_see_through = True
    kind: ClassVar[str] = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._address: RedisAddress = parse_redis_url(url, prefix=prefix)
        self._clock = time.time if clock is None else clock
        self._map_clock = clock is None
        self._prefix = self._address.prefix
        self._client: GlideClient | None = None
        self._offset = 0.0  # store time minus the manager's clock (0 with a given clock)
        self._server_offset = 0.0  # the server's clock minus time.time()
        self._notes: list[tuple[str, list[str], list[str]]] = []
        self._wakeup = trio.Event()
        self._phase: Literal["closed", "opening", "open", "closing"] = "closed"
        # While following events: those this store's own calls publish (or may), so
        # that their echo is not reported as another's change. Bounded, oldest first.
        self._following = False
        self._own: dict[tuple[str, str, int | None], None] = {}
        self._events: GlideClient | None = None  # subscribed to the events channel
        # Seen-through function calls waiting for the one pipeline on its way.
        self._queued: list[_Queued] = []
        self._sending = False
        #: Redis function calls and pipelines this store has sent (reads of single
        #: fields, such as version checks, not counted).
        self.calls = 0

    @property
    def url(self) -> str:
        """The store's URL without its password."""
        return self._address.shown

    @property
    def prefix(self) -> str:
        """The prefix of every key of this store."""
        return self._prefix

    def __repr__(self) -> str:
        return f"RedisStore({self._address.shown!r}, prefix={self._prefix!r})"

    # -- opening ---------------------------------------------------------------------

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Connect, load the functions and measure the server's clock, for the block;
        on exit, send the background changes still queued, then disconnect.

        SessionStoreError if Redis cannot be reached, refuses the credentials, or is
        older than Redis 7 (which brought functions)."""
        if self._phase != "closed":
            raise SessionStoreError(f"{self!r} is already open; a store opens once at a time")
        self._phase = "opening"
        try:
            client = await self._connect()
        except BaseException:
            self._phase = "closed"
            raise
        self._client = client
        body_error: BaseException | None = None
        try:
            await self._guard("load its functions", self._load_functions)
            await self._measure_clock()
            # Subscribed before the store is used, so that :meth:`follow` misses
            # nothing published after the store opened.
            self._events = await self._connect(events=True)
            self._following = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_notes)
                self._phase = "open"
                try:
                    yield
                except BaseException as exc:
                    # Re-raised below, after the nursery, so that it keeps its type.
                    body_error = exc
                finally:
                    self._phase = "closing"
                    self._wakeup.set()
        finally:
            with trio.CancelScope(shield=True):
                await client.close()
                if self._events is not None:
                    await self._events.close()
            self._client = self._events = None
            self._following = False
            self._own.clear()
            self._phase = "closed"
            self._wakeup = trio.Event()
        if body_error is not None:
            raise body_error

    async def _connect(self, *, events: bool = False, channel: str | None = None) -> GlideClient:
        """A client connected (and, with ``events`` or ``channel``, subscribed) by the
        time this returns. The Trio thread is never blocked meanwhile: glide connects
        lazily (its eager connect is a blocking call, as long as the server takes to
        answer) and the first PING, awaited, makes the connection."""
        await _import_glide()
        from glide import (
            AdvancedGlideClientConfiguration,
            GlideClient,
            GlideClientConfiguration,
            Logger,
            LogLevel,
            NodeAddress,
            ServerCredentials,
        )

        # glide's core logs to stdout unless told otherwise, which would corrupt an MCP
        # stdio stream: off, unless the program configured glide's logger first.
        # Its errors reach triact as exceptions anyway.
        Logger.init(LogLevel.OFF)
        address = self._address
        credentials = None
        if address.password is not None:
            credentials = ServerCredentials(password=address.password, username=address.username)
        subscriptions = None
        advanced = None
        if events or channel is not None:
            exact = GlideClientConfiguration.PubSubChannelModes.Exact
            subscriptions = GlideClientConfiguration.PubSubSubscriptions(
                channels_and_patterns={exact: {f"{self._prefix}{channel or 'events'}"}},
                callback=None,
                context=None,
            )
            # glide subscribes again after a reconnection when it next reconciles its
            # subscriptions: soon, so that a restarted Redis costs little of the
            # broadcasts (which it does not keep for a subscriber that is away).
            advanced = AdvancedGlideClientConfiguration(
                pubsub_reconciliation_interval=_RESUBSCRIBE_MS
            )
        config = GlideClientConfiguration(
            [NodeAddress(address.host, address.port)],
            use_tls=address.tls,
            credentials=credentials,
            database_id=address.db,
            request_timeout=max(1, round(address.timeout * 1000)),
            client_name="triact",
            pubsub_subscriptions=subscriptions,
            lazy_connect=True,
            advanced_config=advanced,
        )
        try:
            client = await GlideClient.create(config)
        except Exception as exc:
            raise self._failure("connect", exc) from None
        try:
            # Connects, subscribing first (the subscriptions go on the connection
            # before any command): once answered, nothing published is missed.
            await client.ping()
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await client.close()
            if isinstance(exc, Exception):
                raise self._failure("connect", exc) from None
            raise
        return client

    async def _load_functions(self, client: GlideClient) -> None:
        await client.function_load(lua.SOURCE, replace=True)

    async def _measure_clock(self) -> None:
        before = time.time()
        reply = await self._guard("read its clock", lambda c: c.time())
        after = time.time()
        seconds, micros = (int(part) for part in reply)
        self._server_offset = seconds + micros / 1e6 - (before + after) / 2
        if self._map_clock:
            self._offset = self._server_offset

    def _server_time(self, t: float) -> float:
        """The store's time of the manager's time ``t``."""
        return t + self._offset

    def _expiry_ms(self, deadline: float) -> str:
        """PEXPIREAT (the server's clock, ms) of a session whose deadline (store time)
        is ``deadline``: KEY_GRACE after it."""
        left = deadline - self._server_time(self._clock())
        server_now = time.time() + self._server_offset
        return str(math.ceil((server_now + left + KEY_GRACE) * 1000))

    # -- calling Redis ---------------------------------------------------------------

    async def run(
        self,
        what: str,
        call: Callable[[GlideClient], Awaitable[_T]],
        *,
        library: str | None = None,
    ) -> _T:
        """``call(client)`` on this store's connection, for a layer that keeps keys of
        its own beside the sessions, under :attr:`prefix` (the work layer does): glide's
        errors as SessionStoreError saying the store could not ``what`` (the password
        hidden). ``library`` is the source of the Redis function library ``call`` uses:
        if Redis lost it (restarted without persistence, or flushed), it is loaded
        again and the call made once more. ``call`` is taken to write: a lost answer is
        ``applied=None`` (see :class:`SessionStoreError`)."""
        return await self._guard(what, call, library=library)

    async def _guard(
        self,
        what: str,
        call: Callable[[GlideClient], Awaitable[_T]],
        *,
        library: str | None = None,
        writes: bool = True,
    ) -> _T:
        """``call(client)``; glide's errors as SessionStoreError. A library of
        functions missing from the server (a Redis restarted without persistence,
        or flushed) is loaded again (``library``, by default the sessions') and the
        call made once more. ``writes=False``: the call only reads, so its failure
        applied nothing."""
        client = self._client
        if client is None:
            await trio.lowlevel.checkpoint()
            raise SessionStoreError(
                f"{self!r} is not open; use it inside 'async with store.open()'",
                applied=False,
            )
        if self._notes:  # background changes go first: through once a later call is
            await self._send_queued()
        try:
            return await call(client)
        except Exception as exc:
            if "function not found" not in str(exc).lower():
                raise self._failure(what, exc, writes=writes) from None
        try:
            if library is None:
                await self._load_functions(client)
            else:
                await client.function_load(library, replace=True)
            return await call(client)
        except Exception as exc:
            raise self._failure(what, exc, writes=writes) from None

    def _failure(self, what: str, exc: Exception, *, writes: bool = True) -> SessionStoreError:
        text = " ".join(str(exc).split())
        password = self._address.password
        if password:
            text = text.replace(password, "***")
        if "unknown command" in text.lower() and "function" in text.lower():
            text += " (RedisStore needs Redis 7 or later, or Valkey, for its functions)"
        if "WRONGTYPE" in text:  # not worth retrying: a key holds what triact never wrote
            return SessionDataError(
                f"the Redis store at {self._address.shown} could not {what}: a key under "
                f"its prefix {self._prefix!r} holds a value of another type than triact "
                f"writes there (written by something else): {type(exc).__name__}: {text}",
                applied=_applied(exc) if writes else False,
            )
        return SessionStoreError(
            f"the Redis store at {self._address.shown} could not {what}: "
            f"{type(exc).__name__}: {text}",
            applied=_applied(exc) if writes else False,
        )

    async def _fcall(
        self, name: str, what: str, keys: list[str], args: list[str], *, writes: bool = True
    ) -> Any:
        self.calls += 1
        function = lua.function(name)
        return await self._guard(
            what, lambda c: c.fcall(function, keys=keys, arguments=args), writes=writes
        )

    async def _fcall_through(
        self,
        name: str,
        what: str,
        keys: list[str],
        args: list[str],
        *,
        own: Sequence[tuple[str, str, int | None]] = (),
    ) -> Any:
        """:meth:`_fcall`, seen through whatever happens to the caller (a change);
        ``own``: the events it may publish, forgotten again if it fails.

        Such calls of many sessions share round trips: while one is on its way, those
        made meanwhile wait, and go together, as one pipeline, once it is answered
        (the first of them sends it). Each is still one atomic function call; the
        pipeline only saves the client's cost per call, which is most of a commit's."""
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            with trio.CancelScope(shield=True):
                return await self._pipelined(_Queued(lua.function(name), what, keys, args))
        except BaseException:
            for key in own:
                self._disown(key)
            raise

    async def _pipelined(self, call: _Queued) -> Any:
        """``call``'s reply, sent with the calls queued beside it (see
        :meth:`_fcall_through`); shielded by the caller."""
        self._queued.append(call)
        if self._sending:
            await call.turn.wait()  # answered, or handed the next pipeline to send
        if not call.done:
            self._sending = True
            taken, self._queued = self._queued, []
            try:
                await self._send_calls(taken)
            finally:
                for each in taken:
                    if not each.done:  # only if sending raised past its own handling
                        each.fail(SessionStoreError("the Redis call was not sent"))
                if self._queued:
                    self._queued[0].turn.set()  # it sends the next pipeline
                else:
                    self._sending = False
        return call.result()

    async def _send_calls(self, calls: list[_Queued]) -> None:
        """Send ``calls`` (one function call, or a pipeline of them) and settle each
        with its reply or its error."""
        if len(calls) == 1:
            call = calls[0]
            try:
                call.answer(await self._fcall_now(call))
            except SessionStoreError as exc:
                call.fail(exc)
            return
        from glide import Batch

        batch = Batch(is_atomic=False)
        for call in calls:
            batch.fcall(call.function, keys=call.keys, arguments=call.args)
        self.calls += 1
        try:
            replies = await self._guard(
                "send a pipeline of changes", lambda c: c.exec(batch, raise_on_error=False)
            )
        except SessionStoreError as exc:
            for call in calls:  # each its own exception object
                call.fail(SessionStoreError(str(exc), applied=exc.applied))
            return
        assert replies is not None  # a pipeline, not a transaction: never aborted
        for call, reply in zip(calls, replies, strict=True):
            if not isinstance(reply, Exception):
                call.answer(reply)
            elif "function not found" in str(reply).lower():
                try:  # a Redis that lost its functions: loaded again, and called again
                    call.answer(await self._fcall_now(call))
                except SessionStoreError as exc:
                    call.fail(exc)
            else:
                call.fail(self._failure(call.what, reply))

    async def _fcall_now(self, call: _Queued) -> Any:
        self.calls += 1
        return await self._guard(
            call.what, lambda c: c.fcall(call.function, keys=call.keys, arguments=call.args)
        )

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}{{{session_id}}}"

    def _decode(self, session_id: str, text: Any, version: Any) -> SessionState:
        where = f"session {session_id!r} in {self._address.shown}"
        if not isinstance(text, bytes | str):
            raise SessionDataError(f"{where} holds no JSON record")
        state = decode_state(text, where=where)
        if state.id != session_id or str(state.version) != _text(version):
            raise SessionDataError(
                f"{where} holds session {state.id!r} at version {state.version}, "
                f"but its hash says version {_text(version)}"
            )
        return state

    async def _encode(self, state: SessionState) -> str:
        try:
            return encode_state(state)
        except (TypeError, ValueError) as exc:
            await trio.lowlevel.checkpoint()
            raise SessionStoreError(
                f"session {state.id!r} cannot be stored: {exc}", applied=False
            ) from exc

    # -- the plain store interface ---------------------------------------------------

    async def load(self, session_id: str) -> SessionState | None:
        reply = await self._guard(
            "load a session", lambda c: c.hmget(self._key(session_id), ["s", "v"]), writes=False
        )
        text, version = reply
        if text is None:
            return None
        return self._decode(session_id, text, version)

    async def write(
        self,
        state: SessionState,
        *,
        previous_version: int | None,
        epoch: int | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Store ``state`` if the stored version is still ``previous_version`` and,
        with ``epoch``, its epoch is that: one function call. SessionConcurrencyError
        (SessionFencedError for the epoch) otherwise. Without ``previous_version``
        the session must not be stored yet (created without limits or lease)."""
        text = await self._encode(state)
        if previous_version is None:
            await self._insert(state, text, expires_at)
            return
        deadline = ["", ""]
        if expires_at is not None:
            at = self._server_time(expires_at)
            deadline = [repr(at), self._expiry_ms(at)]
        args = [
            self._prefix,
            state.id,
            str(previous_version),
            str(state.version),
            "" if epoch is None else str(epoch),
            text,
            repr(state.last_used),
            *deadline,
        ]
        own = self._expect("updated", state.id, state.version)
        reply = await self._fcall_through(
            "write", "store a session", [self._key(state.id)], args, own=[own]
        )
        outcome = _text(reply[0])
        if outcome == "OK":
            return
        self._disown(own)
        if outcome == "FENCED":
            stored = int(reply[1])
            raise SessionFencedError(
                f"session {state.id!r} was taken over by another process (epoch "
                f"{stored}, this one held {epoch}); nothing was saved, retry the call",
                expected=-1 if epoch is None else epoch,
                actual=stored,
            )
        actual = int(reply[1]) if outcome == "CONFLICT" else None
        raise _conflict(state.id, previous_version, actual)

    async def _insert(self, state: SessionState, text: str, expires_at: float | None) -> None:
        now = self._clock()
        await self._create(
            state,
            text,
            client_id=_client_id(state),
            expires_at=expires_at if expires_at is not None else math.inf,
            now=now,
            node="",
            lease_until=0.0,
            max_sessions=None,
            max_per_client=None,
        )

    async def delete(self, session_id: str) -> bool:
        return await self.remove(session_id, version=None)

    def discard(self, session_id: str) -> None:
        self._expect("removed", session_id, None)
        self._note("remove", session_id, [self._prefix, session_id, ""])

    async def index(self) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        after: tuple[float, str] | None = None
        while page := await self.page(after, 1000):
            entries += page
            after = (page[-1].created_at, page[-1].id)
        return entries

    async def check(self) -> str | None:
        try:
            await self._guard("answer a ping", lambda c: c.ping(), writes=False)
        except SessionStoreError as exc:
            return str(exc)
        return None

    # -- the shared store (see SharedSessionStore) ------------------------------------

    async def activate(
        self, session_id: str, *, node: str, lease: float, now: float, force: bool = False
    ) -> Activation | None:
        server_now = self._server_time(now)
        args = [
            self._prefix,
            session_id,
            node,
            repr(server_now + lease),
            repr(server_now),
            "1" if force else "0",
        ]
        reply = await self._fcall("activate", "activate a session", [self._key(session_id)], args)
        outcome = _text(reply[0])
        if outcome == "GONE":
            return None
        state = self._decode(session_id, reply[1], reply[2])
        lease_left = max(0.0, float(reply[4]) - server_now)
        if outcome == "HELD":
            return Activation(state, None, _text(reply[3]), lease_left)
        return Activation(state, int(reply[3]), node, lease_left)

    async def create(
        self,
        state: SessionState,
        *,
        client_id: str | None,
        expires_at: float,
        now: float,
        node: str,
        lease: float,
        max_sessions: int,
        max_per_client: int | None,
        max_per_principal: int | None = None,
    ) -> list[tuple[str, int]]:
        text = await self._encode(state)
        return await self._create(
            state,
            text,
            client_id=client_id,
            expires_at=expires_at,
            now=now,
            node=node,
            lease_until=self._server_time(now) + lease,
            max_sessions=max_sessions,
            max_per_client=max_per_client,
            max_per_principal=max_per_principal,
        )

    async def _create(
        self,
        state: SessionState,
        text: str,
        *,
        client_id: str | None,
        expires_at: float,
        now: float,
        node: str,
        lease_until: float,
        max_sessions: int | None,
        max_per_client: int | None,
        max_per_principal: int | None = None,
    ) -> list[tuple[str, int]]:
        deadline = self._server_time(expires_at)
        args = [
            self._prefix,
            state.id,
            str(state.version),
            text,
            repr(state.created_at),
            repr(state.last_used),
            client_id or "",
            repr(deadline) if math.isfinite(deadline) else "inf",
            self._expiry_ms(deadline) if math.isfinite(deadline) else "",
            node,
            repr(lease_until),
            repr(self._server_time(now)),
            "inf" if max_sessions is None else str(max_sessions),
            "" if max_per_client is None else str(max_per_client),
            state.principal or "",
            "" if max_per_principal is None else str(max_per_principal),
        ]
        own = self._expect("created", state.id, state.version)
        reply = await self._fcall_through(
            "create", "create a session", [self._key(state.id)], args, own=[own]
        )
        outcome = _text(reply[0])
        if outcome != "OK":
            self._disown(own)
        if outcome == "EXISTS":
            raise _conflict(state.id, None, int(reply[1]))
        trimmed = _pairs(reply[-1])
        if outcome == "LIMIT":
            if _text(reply[1]) == "principal":
                raise SessionLimitError(
                    f"principal {state.principal!r} holds its limit of {max_per_principal} "
                    "sessions (max_sessions_per_principal); end one first"
                )
            if _text(reply[1]) == "client":
                raise SessionLimitError(
                    f"client {client_id!r} holds its limit of {max_per_client} sessions "
                    "(max_sessions_per_client); end one first"
                )
            raise SessionLimitError(
                f"the store holds its limit of {max_sessions} sessions (max_sessions); "
                "end or remove some first"
            )
        return trimmed

    async def version(self, session_id: str, *, now: float | None = None) -> int | None:
        reply = await self._guard(
            "read a session's version",
            lambda c: c.hmget(self._key(session_id), ["v", "dl", "lx"]),
            writes=False,
        )
        version, deadline, lease_until = reply
        if version is None:
            return None
        try:
            number = int(version)
            if now is not None and deadline is not None:
                server_now = self._server_time(now)
                if float(deadline) <= server_now and float(lease_until or 0) <= server_now:
                    return None  # past its deadline, not yet swept
        except ValueError:  # a hash written by something else than triact
            raise SessionDataError(
                f"session {session_id!r} in {self._address.shown} has a version, deadline "
                "or lease that is not a number",
                applied=False,
            ) from None
        return number

    async def renew(
        self, node: str, leases: dict[str, int], *, until: float, busy_until: float | None
    ) -> set[str]:
        if not leases:
            await trio.lowlevel.checkpoint()
            return set()
        from glide import Batch

        lease_until = repr(self._server_time(until))
        busy = ["", ""]
        if busy_until is not None:
            at = self._server_time(busy_until)
            busy = [repr(at), self._expiry_ms(at)]
        batch = Batch(is_atomic=False)
        ids = list(leases)
        for session_id in ids:
            args = [
                self._prefix,
                session_id,
                node,
                str(leases[session_id]),
                lease_until,
                *busy,
            ]
            batch.fcall(lua.function("renew"), keys=[self._key(session_id)], arguments=args)
        replies = await self._exec("renew leases", batch)
        return {sid for sid, kept in zip(ids, replies, strict=True) if kept != 1}

    async def _exec(self, what: str, batch: Batch) -> list[Any]:
        self.calls += 1
        replies = await self._guard(what, lambda c: c.exec(batch, raise_on_error=True))
        assert replies is not None  # a pipeline, not a transaction: never aborted
        return replies

    def release(self, session_id: str, *, node: str, epoch: int, expires_at: float) -> None:
        deadline = self._server_time(expires_at)
        args = [
            self._prefix,
            session_id,
            repr(deadline),
            self._expiry_ms(deadline),
            node,
            str(epoch),
        ]
        self._note("release", session_id, args)

    def touch(self, session_id: str, *, expires_at: float) -> None:
        deadline = self._server_time(expires_at)
        self._note(
            "touch",
            session_id,
            [self._prefix, session_id, repr(deadline), self._expiry_ms(deadline)],
        )

    async def remove(self, session_id: str, *, version: int | None) -> bool:
        args = [self._prefix, session_id, "" if version is None else str(version)]
        own = self._expect("removed", session_id, None)
        reply = await self._fcall_through(
            "remove", "remove a session", [self._key(session_id)], args, own=[own]
        )
        outcome = _text(reply[0])
        if outcome != "OK":
            self._disown(own)
        if outcome == "CONFLICT":
            stored = int(reply[1])
            raise SessionConcurrencyError(
                f"session {session_id!r} is at version {stored}, not {version}; "
                "another process changed it first",
                expected=-1 if version is None else version,
                actual=stored,
            )
        return outcome == "OK"

    async def expire_due(
        self, now: float, *, idle_before: float, limit: int, spare: Collection[str] = ()
    ) -> list[tuple[str, int]]:
        # Every session here has a deadline, so ``idle_before`` has nothing to do.
        server_now = self._server_time(now)
        deadlines = f"{self._prefix}deadlines"
        spared = set(spare)
        # Look first (one cheap read): usually nothing is due.
        due = await self._guard(
            "find the sessions due to expire",
            lambda c: c.custom_command(
                [
                    "ZRANGEBYSCORE",
                    deadlines,
                    "-inf",
                    repr(server_now),
                    "LIMIT",
                    "0",
                    str(limit + len(spared)),
                ]
            ),
        )
        ids = [sid for sid in (_text(raw) for raw in due) if sid not in spared][:limit]
        if not ids:
            return []
        own = [self._expect("expired", sid, None) for sid in ids]
        reply = await self._fcall_through(
            "expire",
            "expire sessions",
            [deadlines],
            [self._prefix, repr(server_now), *ids],
            own=own,
        )
        expired = _pairs(reply)
        gone = {sid for sid, _ in expired}
        for key in own:
            if key[1] not in gone:
                self._disown(key)
        return expired

    async def count(self) -> int:
        order = f"{self._prefix}order"
        return int(await self._guard("count sessions", lambda c: c.zcard(order), writes=False))

    async def page(self, after: tuple[float, str] | None, limit: int) -> list[IndexEntry]:
        args = [self._prefix, "", "", str(limit)]
        if after is not None:
            args[1:3] = [repr(after[0]), after[1]]
        keys = [f"{self._prefix}order"]
        function = lua.function("page")
        rows = await self._guard(
            "list sessions",
            lambda c: c.fcall_ro(function, keys=keys, arguments=args),
            writes=False,
        )
        return [self._entry(*row) for row in rows]

    def _entry(
        self,
        sid: Any,
        created: Any,
        used: Any,
        client: Any,
        version: Any,
        topic: Any,
        token_hmac: Any,
        principal: Any,
    ) -> IndexEntry:
        """An entry of a page. A hash written by something else than triact (a version
        or last use that is no number) is listed without a token HMAC, so that the
        manager loads it, which says what is wrong, and leaves it out; one without a
        creation time is an error, since pages follow it."""
        try:
            created_at = float(created)
        except (TypeError, ValueError):
            raise SessionDataError(
                f"session {_text(sid)!r} in {self._address.shown} has a creation time "
                "that is not a number",
                applied=False,
            ) from None
        try:
            return IndexEntry(
                _text(sid),
                created_at,
                float(used),
                _optional(client),
                int(version),
                topic=_optional(topic),
                token_hmac=_optional(token_hmac),
                principal=None if token_hmac is None else _optional(principal),
            )
        except (TypeError, ValueError):
            return IndexEntry(_text(sid), created_at, 0.0, None, 0, token_hmac=None)

    # -- records ---------------------------------------------------------------------

    def _record_key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}rec:{len(namespace)}:{namespace}:{key}"

    async def put_record(self, namespace: str, key: str, value: str, *, ttl: float) -> None:
        """See :meth:`SessionStore.put_record`; the ttl runs on Redis's clock."""
        check_record(namespace, key, value, ttl)
        ttl_ms = str(max(1, math.ceil(ttl * 1000)))
        await self._fcall_through(
            "record_put", "keep a record", [self._record_key(namespace, key)], [value, ttl_ms]
        )

    async def swap_record(
        self, namespace: str, key: str, value: str, *, expected: str | None, ttl: float
    ) -> bool:
        """See :meth:`SessionStore.swap_record`; one function call on Redis."""
        check_record(namespace, key, value, ttl)
        check_expected(expected)
        ttl_ms = str(max(1, math.ceil(ttl * 1000)))
        compared = ["0", ""] if expected is None else ["1", expected]
        reply = await self._fcall_through(
            "record_swap",
            "keep a record",
            [self._record_key(namespace, key)],
            [value, ttl_ms, *compared],
        )
        return int(reply) == 1

    async def get_record(self, namespace: str, key: str) -> str | None:
        reply = await self._fcall(
            "record_get", "read a record", [self._record_key(namespace, key)], [], writes=False
        )
        return None if reply is None else _text(reply)

    async def delete_record(self, namespace: str, key: str) -> bool:
        name = self._record_key(namespace, key)
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.CancelScope(shield=True):
            removed = await self._guard("remove a record", lambda c: c.delete([name]))
        return int(removed) > 0

    # -- broadcasts --------------------------------------------------------------------

    broadcasts = True

    async def broadcast(self, channel: str, message: str) -> bool:
        """See :meth:`SessionStore.broadcast`: ``PUBLISH`` on ``<prefix><channel>``."""
        check_channel(channel)
        name = f"{self._prefix}{channel}"
        await self._guard("broadcast", lambda c: c.publish(message, name))
        return True

    async def listen(
        self,
        channel: str,
        deliver: Callable[[str], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """See :meth:`SessionStore.listen`: subscribed to ``<prefix><channel>`` on a
        connection of its own (glide subscribes again after a reconnection; what is
        published meanwhile is not delivered)."""
        check_channel(channel)
        if self._phase != "open":
            await trio.lowlevel.checkpoint()
            raise SessionStoreError(
                f"{self!r} is not open; use it inside 'async with store.open()'"
            )
        client = await self._connect(channel=channel)
        try:
            task_status.started()
            while True:
                try:
                    message = await client.get_pubsub_message()
                except Exception as exc:
                    raise self._failure(f"listen on its {channel!r} channel", exc) from None
                deliver(_text(message.message))
        finally:
            with trio.CancelScope(shield=True):
                await client.close()

    # -- events of other processes ------------------------------------------------------

    async def follow(self, deliver: Callable[[str, str, int], None]) -> None:
        """See :meth:`SharedSessionStore.follow`: the ``<prefix>events`` channel, on a
        connection of its own, which the Redis functions publish to as they commit
        (so in commit order, and at most once: Redis pub/sub keeps nothing for a
        subscriber that is away). The changes of this store object are left out.
        Every change published since the store opened is delivered (one follower at
        a time)."""
        client = self._events
        if client is None:
            await trio.lowlevel.checkpoint()
            raise SessionStoreError(
                f"{self!r} is not open; use it inside 'async with store.open()'"
            )
        while True:
            try:
                message = await client.get_pubsub_message()
                # The events of a pipeline of commits come together: those already
                # here are taken without waiting (and waking) once for each.
                messages = [message]
                while (more := client.try_get_pubsub_message()) is not None:
                    messages.append(more)
            except Exception as exc:
                raise self._failure("follow its events", exc) from None
            for message in messages:
                self._arrived(_text(message.message), deliver)

    def _expect(
        self, kind: str, session_id: str, version: int | None
    ) -> tuple[str, str, int | None]:
        """Note an event that a call of this store is about to publish."""
        key = (kind, session_id, version)
        if self._following:
            self._own[key] = None
            if len(self._own) > _OWN_KEPT:
                del self._own[next(iter(self._own))]
        return key

    def _disown(self, key: tuple[str, str, int | None]) -> None:
        self._own.pop(key, None)

    def _arrived(self, text: str, deliver: Callable[[str, str, int], None]) -> None:
        kind, session_id, version_text = text.split(" ")
        version = int(version_text)
        for key in ((kind, session_id, version), (kind, session_id, None)):
            if key in self._own:
                del self._own[key]
                return
        deliver(kind, session_id, version)

    # -- background changes ----------------------------------------------------------

    def _note(self, name: str, session_id: str, args: list[str]) -> None:
        """Queue a change that nobody waits for: sent with the next pipeline, and
        before any later call of this store."""
        if self._phase not in ("open", "closing"):
            raise SessionStoreError(
                f"{self!r} is not open; use it inside 'async with store.open()'"
            )
        self._notes.append((name, [self._key(session_id)], args))
        self._wakeup.set()

    async def _send_notes(self) -> None:
        """Send queued background changes, many per pipeline, until the store closes;
        then the last ones (shielded: closing must not lose them)."""
        while self._phase != "closing":
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self._send_queued()
        with trio.CancelScope(shield=True):
            await self._send_queued()

    async def _send_queued(self) -> None:
        from glide import Batch

        while self._notes:
            taken, self._notes = self._notes[:_NOTE_BATCH], self._notes[_NOTE_BATCH:]
            batch = Batch(is_atomic=False)
            for name, keys, args in taken:
                batch.fcall(lua.function(name), keys=keys, arguments=args)
            try:
                await self._exec("send deadline and lease changes", batch)
            except SessionStoreError as exc:  # best effort: leases and deadlines run out
                logger.warning("%s (%d changes not sent)", exc, len(taken))


#: The errors with which Redis refuses a command before running it: a change refused
#: so was not applied. (An error a function raises once running may follow some of its
#: writes: those, like every other failure of a write, leave it unknown.)
_REFUSED = frozenset(
    ("OOM", "READONLY", "NOAUTH", "NOPERM", "WRONGPASS", "LOADING", "BUSY", "MASTERDOWN", "MISCONF")
)


def _applied(exc: Exception) -> bool | None:
    """Whether a change that failed with glide's ``exc`` is known not to be applied
    (False: Redis refused it before running it); None if it may have been (sent, and
    the connection lost or the timeout passed before its answer)."""
    from glide import RequestError

    if not isinstance(exc, RequestError):
        return None
    words = str(exc).replace(":", " ").split()
    return False if any(word in _REFUSED for word in words[:8]) else None


async def _import_glide() -> None:
    """Import valkey-glide in a worker thread the first time (its import takes seconds
    on a loaded machine: the Trio thread keeps running meanwhile)."""
    if "glide" in sys.modules:
        await trio.lowlevel.checkpoint()
        return
    try:
        await trio.to_thread.run_sync(importlib.import_module, "glide")
    except ImportError as exc:
        raise SessionStoreError(
            "RedisStore needs valkey-glide: install triact's redis extra "
            "(pip install 'triact[redis]')",
            applied=False,
        ) from exc


class _Queued:
    """A seen-through function call waiting to be sent (see
    :meth:`RedisStore._fcall_through`): its reply or error once settled; ``turn`` is
    set when it is settled, or when it is to send the next pipeline."""

    __slots__ = ("args", "done", "error", "function", "keys", "reply", "turn", "what")

    def __init__(self, function: str, what: str, keys: list[str], args: list[str]) -> None:
        self.function = function
        self.what = what
        self.keys = keys
        self.args = args
        self.done = False
        self.reply: Any = None
        self.error: SessionStoreError | None = None
        self.turn = trio.Event()

    def answer(self, reply: Any) -> None:
        self.reply, self.done = reply, True
        self.turn.set()

    def fail(self, error: SessionStoreError) -> None:
        self.error, self.done = error, True
        self.turn.set()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.reply


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _optional(raw: Any) -> str | None:
    return None if raw is None else _text(raw)


def _pairs(flat: list[Any]) -> list[tuple[str, int]]:
    return [(_text(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]


def _client_id(state: SessionState) -> str | None:
    binding = state.client_binding
    return binding.client_id if binding is not None else None


def _conflict(
    session_id: str, previous_version: int | None, actual: int | None
) -> SessionConcurrencyError:
    return SessionConcurrencyError(
        f"session {session_id!r}: store holds version {actual}, "
        f"expected {previous_version}; another writer got there first",
        expected=-1 if previous_version is None else previous_version,
        actual=-1 if actual is None else actual,
    )
