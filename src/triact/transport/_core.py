"""The protocol core both transports share: what the server does with one parsed
JSON-RPC message from one client, whatever carried it.

A transport parses a message, finds the :class:`Peer` it comes from (the stdio
connection; an MCP session or the stateless requests of the HTTP app) and hands it to
:meth:`McpCore.request` or :meth:`McpCore.notification` with the :class:`~._calls.Sink`
its answer goes to. Every MCP method is dispatched here, in :meth:`McpCore.request`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import trio

from ..sessions import Session, SessionManager
from . import _protocol as protocol
from ._calls import Sink, ToolCalls
from ._handlers import ServerHealth
from ._jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    JsonRpcError,
    Notification,
    Request,
    RequestId,
    error_line,
    internal_error,
    result_line,
    shown_name,
)
from ._prompts import PromptSet, advertised
from ._prompts import answer as prompts_answer
from ._tools import ToolSet

logger = logging.getLogger("triact.transport")


class Peer:
    """One client of a server, as its tools see it (it is their ``ToolEnv``): the
    handshake era's state (negotiated version, log level) and its default session.

    ``name`` tells peers of one server apart (the HTTP app's MCP session id);
    ``principal`` is who makes its calls (None: an unauthenticated client, as over
    stdio): the sessions it creates are that principal's, and it reaches no other
    principal's. With ``keyed``, its calls are known by keys other than their request ids, and
    :attr:`requests` maps the request ids of its calls in flight to their keys (so that
    ``notifications/cancelled`` finds them).
    """

    __slots__ = (
        "calls",
        "claim_default",
        "default_creating",
        "default_gone",
        "default_session_id",
        "ended",
        "handshake",
        "lane",
        "manager",
        "principal",
        "requests",
    )

    def __init__(
        self,
        calls: ToolCalls,
        name: str = "",
        *,
        keyed: bool = False,
        principal: str | None = None,
    ) -> None:
        self.calls = calls
        self.principal = principal
        self.manager: SessionManager = calls.manager
        self.handshake = protocol.HandshakeState()
        #: The default session (handshake era), created on first use.
        self.default_session_id: str | None = None
        #: Set while the default session is being created.
        self.default_creating: trio.Event | None = None
        #: The default session last found gone (ended or expired), which a new one
        #: may replace.
        self.default_gone: str | None = None
        #: For a client whose state lives in a shared store (HTTP's MCP sessions):
        #: ``claim_default(peer, session_id)`` names the session just made the
        #: default session where every process sees it, before any call uses it;
        #: None once named, else the id of the one another process named first.
        self.claim_default: Callable[[Peer, str], Awaitable[str | None]] | None = None
        #: The arrival-order lane of the default session (no session id looks like it).
        self.lane = "\x00default" + name
        self.requests: dict[RequestId, Hashable] | None = {} if keyed else None
        #: Set once the client's MCP session has ended (HTTP's DELETE): a call still
        #: running for it must not keep anything of it again.
        self.ended = False

    def session_created(self, session: Session, bound: bool) -> None:
        self.calls.remember(session, unbound=not bound, owner=self.principal)

    def session_gone(self, session_id: str) -> None:
        self.calls.forget(session_id)
        if session_id == self.default_session_id:
            self.default_session_id = None
            self.default_gone = session_id

    def health(self) -> ServerHealth:
        return self.calls.health()


class McpCore:
    """Dispatches the requests and notifications of a server's clients: answers the
    protocol's own methods (and the prompts', with a prompt set) at once and runs tool
    calls in :attr:`calls` (whose ``nursery`` the transport sets before the first
    call)."""

    def __init__(
        self,
        manager: SessionManager,
        tools: ToolSet,
        *,
        max_in_flight: int,
        default_session: bool,
        max_line_bytes: int,
        progress_interval: float,
        prompts: PromptSet | None = None,
    ) -> None:
        self.manager = manager
        self.tools = tools
        self.prompts = prompts
        self.calls = ToolCalls(
            manager,
            tools,
            max_in_flight=max_in_flight,
            default_session=default_session,
            max_line_bytes=max_line_bytes,
            progress_interval=progress_interval,
        )

    def peer(self, name: str = "", *, keyed: bool = False, principal: str | None = None) -> Peer:
        """A new client of this server, whose calls are made as ``principal``."""
        return Peer(self.calls, name, keyed=keyed, principal=principal)

    def request(self, peer: Peer, key: Hashable, request: Request, sink: Sink) -> None:
        """Take ``request`` from ``peer``; its answer (and the notifications before it)
        go to ``sink``, at once or when its tool call is done. ``key`` names the call
        among those in flight. Raises :class:`JsonRpcError` for a request refused
        before it runs (the transport answers it, in its own way)."""
        request_id, method, params = request.id, request.method, request.params
        try:
            if key in self.calls.in_flight:
                raise JsonRpcError(
                    INVALID_REQUEST,
                    f"Invalid Request: request id {_shown_id(request_id)} is already in flight; "
                    "use a new id for every request",
                )
            # (tools/call first: most requests are, and need no other look at the name)
            if method != "tools/call" and method.startswith("notifications/"):
                raise JsonRpcError(
                    INVALID_REQUEST,
                    f"Invalid Request: {shown_name(method)} is a notification; "
                    "send it without an id",
                )
            ctx = protocol.context_for(method, params, peer.handshake)
            if method == "tools/call":
                if peer.requests is not None and type(request_id) in (str, int):
                    peer.requests[request_id] = key
                self.calls.start(key, request_id, ctx, params, peer, sink)
                return
            result = self._answer(peer, ctx, method, params)
        except JsonRpcError:
            raise
        except Exception:  # a bug: answer it and keep serving
            logger.exception("request %r (%s) failed", request_id, method)
            sink.answer(error_line(request_id, internal_error()))
            return
        try:
            line = result_line(request_id, result)
        except (TypeError, ValueError):  # a value JSON cannot carry
            logger.exception("result of request %r cannot be encoded", request_id)
            line = error_line(request_id, internal_error())
        sink.answer(line)

    def _answer(
        self, peer: Peer, ctx: protocol.RequestContext, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        if method == "tools/list":
            if params.get("cursor") is not None:
                raise JsonRpcError(
                    INVALID_PARAMS, "Invalid params: unknown cursor (tools/list has one page)"
                )
            return protocol.shape(
                ctx, {"tools": self.tools.definitions(stateless=ctx.stateless)}, cacheable=True
            )
        if method in protocol.PROMPT_METHODS:
            result = prompts_answer(self.prompts, method, params)
            return protocol.shape(ctx, result, cacheable=method == "prompts/list")
        if method == "initialize":
            return advertised(self.prompts, protocol.initialize(params, peer.handshake))
        if method == "server/discover":
            return advertised(self.prompts, protocol.discover(ctx))
        if method == "logging/setLevel":
            return protocol.set_level(params, peer.handshake)
        assert method == "ping"
        return {}

    def notification(self, peer: Peer, notification: Notification) -> None:
        """Take a notification from ``peer``."""
        method, params = notification.method, notification.params or {}
        if method == "notifications/cancelled":
            request_id = params.get("requestId")
            key: Any = request_id
            if peer.requests is not None:
                key = None
                if type(request_id) is str or type(request_id) is int:
                    key = peer.requests.get(request_id)
            self.calls.cancel(key, params.get("reason"))
        elif method == "notifications/initialized":
            peer.handshake.initialized = True
        else:
            logger.debug("ignored notification %s", method)

    def finished(self, peer: Peer, request_id: RequestId, key: Hashable) -> None:
        """The call ``key`` of a keyed peer is over: forget its request id."""
        if peer.requests is not None and peer.requests.get(request_id) == key:
            del peer.requests[request_id]

    async def drain(self, grace: float) -> None:
        """Take no more calls; let those in flight finish within ``grace`` seconds,
        then cancel what is left (their changes do not happen)."""
        self.calls.close()
        with trio.move_on_after(grace):
            await self.calls.drained.wait()
        if self.calls:
            logger.warning(
                "cancelling %d call(s) still running after the %s s grace period",
                len(self.calls),
                grace,
            )


def _shown_id(request_id: RequestId) -> str:
    """A request id as a refusal quotes it (a long string cut short)."""
    return repr(request_id) if len(str(request_id)) <= 40 else shown_name(str(request_id))
