"""MCP over streamable HTTP: an ASGI app at ``/mcp`` whose requests go to the same
protocol core as stdio's (``_core``), one POST per JSON-RPC message, both eras.

* 2026-07-28 (``MCP-Protocol-Version: 2026-07-28``): each POST stands alone; its
  version and capabilities come from the body's ``_meta``, which must agree with the
  ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers (else 400 and
  ``HeaderMismatch``).
* The handshake revisions: ``initialize`` opens an MCP session, whose record (negotiated
  version, log level, default triact session) lives in the session store, so that any
  process on a shared store serves it; its id comes back in ``Mcp-Session-Id``, which
  every later request carries (without it 400, unknown or expired 404); DELETE ends it.

A request is answered with ``application/json``, or with an SSE stream
(``text/event-stream``) when it sends notifications before its answer: progress, when
it carries a ``progressToken``, or log messages. A client that closes the response
(or sends ``notifications/cancelled``) cancels the call: it did not happen, and its
response ends without an answer. A ``notifications/cancelled`` for a request this
process does not run is kept for a while (the request may come later) and, on a store
that broadcasts (Redis), sent to every process, where it cancels the call of the same
MCP session and principal. GET gets 405: this server sends no messages of its own, and
no stream is resumable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from functools import partial
from itertools import count
from typing import Any, Final

import attrs
import trio

from ..sessions import (
    SessionClosedError,
    SessionManager,
    SessionNotFoundError,
    SessionStoreError,
)
from . import _protocol as protocol
from ._auth import BearerTokens, Unauthorized
from ._calls import ConnectionGoneError
from ._core import McpCore, Peer
from ._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    UNSUPPORTED_PROTOCOL_VERSION,
    Invalid,
    JsonRpcError,
    Notification,
    Request,
    RequestId,
    encode_json,
    parse_line,
    shown_name,
)
from ._prompts import PromptSet
from ._server import ServerOptions, core_for
from ._session_tools import SESSION_TOOLS
from ._tools import ToolSet

logger = logging.getLogger("triact.transport")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The path MCP is served at.
MCP_PATH: Final = "/mcp"
#: MCP 2026-07-28: the HTTP headers do not match the request's body.
HEADER_MISMATCH: Final = -32020
#: The store namespace of MCP session records.
MCP_SESSION_NAMESPACE: Final = "mcp-session"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)
#: Bytes of a body too large that are read (and dropped) before the refusal is sent.
_DISCARD_MAX = 1024 * 1024
#: MCP sessions served lately, kept in memory (their records are the truth).
_PEERS_MAX = 4096
#: Seconds a tool call runs before its client is watched for going away (see
#: McpHttpApp._stream_lines).
_UNWATCHED = 0.05
#: Seconds an MCP session's record, once read, is taken as it was without reading the
#: store again (at most; half the session TTL if that is shorter): a record changed or
#: deleted through another process is seen here within this time.
RECORD_FRESH: Final = 1.0
#: Seconds a ``notifications/cancelled`` for a request this process does not run is
#: kept, so that the request is cancelled if it arrives later (its POST may reach this
#: process after the cancellation reached another).
CANCEL_KEPT: Final = 30.0
#: The most such cancellations kept for one principal (without tokens, for all clients
#: together), the oldest forgotten first: one principal's flood forgets none of
#: another's.
CANCELS_KEPT_MAX: Final = 10_000
#: The store channel cancellations travel on to the other processes.
CANCEL_CHANNEL: Final = "cancel"
#: The longest request id (characters of its JSON) a kept cancellation holds as it is;
#: a longer one is held as its SHA-256 digest, so that kept cancellations take a few
#: hundred bytes each whatever ids a client sends (a body may hold a 4 MiB one).
_CANCEL_ID_CHARS: Final = 128
#: Seconds before listening to that channel again after the store failed, at first and
#: at most (doubling in between).
_RELISTEN = (0.5, 10.0)
#: The versions a handshake-era client may name in MCP-Protocol-Version: those served,
#: and 2025-03-26, which the spec says to assume when the header is missing.
_HANDSHAKE_HEADER_VERSIONS = frozenset({*protocol.HANDSHAKE_VERSIONS, "2025-03-26"})
_JSON = [(b"content-type", b"application/json")]
#: The headers of a 503: retry in a second; the connection is closed after the answer,
#: so that a server at a limit keeps no idle connection (a file descriptor) for it.
_BUSY = [(b"retry-after", b"1"), (b"connection", b"close")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _at_least(minimum: float, *, integer: bool = True) -> Any:
    """A validator of a count (an int, not a bool), or of seconds (a number, not a bool,
    not NaN) without ``integer``, at least ``minimum``."""
    kinds = (int,) if integer else (int, float)
    what = "an int" if integer else "a number"

    def check(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        if not (isinstance(value, kinds) and not isinstance(value, bool) and value >= minimum):
            raise ValueError(
                f"HttpOptions.{attribute.name} must be {what} >= {minimum}, got {value!r}"
            )

    return check


def _origins(_: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for origin in value:
        if not isinstance(origin, str) or _ORIGIN.fullmatch(origin) is None:
            raise ValueError(
                f"HttpOptions.{attribute.name}: {origin!r} is not an origin; write it as "
                "scheme://host[:port] (http or https, no path), e.g. https://app.example"
            )


@attrs.frozen(kw_only=True)
class HttpOptions:
    """How the HTTP transport takes requests."""

    #: Largest request body accepted, in bytes; beyond it, 413.
    max_body_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_at_least(1))
    #: Seconds a client gets to send a request's whole body; slower, 408.
    body_timeout: float = attrs.field(default=30.0, validator=_at_least(0.001, integer=False))
    #: Origins a browser may send requests from (``scheme://host[:port]``), whose
    #: pages may read the answers (CORS); requests with any other ``Origin`` get 403.
    #: Loopback origins are always allowed.
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_origins)
    #: Seconds an MCP session (handshake era) lives after its last request.
    session_ttl: float = attrs.field(default=3600.0, validator=_at_least(1, integer=False))
    #: MCP sessions one principal (or, without tokens, all clients together) may have
    #: open through this process: opened here, neither ended nor expired; beyond,
    #: initialize gets 429 with Retry-After. Each keeps a record in the store.
    max_mcp_sessions: int = attrs.field(default=10_000, validator=_at_least(1))
    #: Requests handled at once; beyond, 503 with Retry-After.
    max_requests: int = attrs.field(default=1000, validator=_at_least(1))
    #: Requests one principal (with ``tokens``) has handled at once; beyond, 503 with
    #: Retry-After, so that no principal takes every request slot from the others.
    #: None: a quarter of ``max_requests`` (at least 1).
    max_requests_per_principal: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least(1))
    )
    #: Bytes of request bodies being received at once, over all requests (at least
    #: ``max_body_bytes``); a body that would take more gets 503 with Retry-After: so
    #: that slow uploads cannot hold ``max_requests`` times ``max_body_bytes`` of memory.
    max_buffered_bytes: int = attrs.field(default=128 * 1024 * 1024, validator=_at_least(1))
    #: The bearer tokens every request must carry one of (else 401), each naming the
    #: principal its calls are made as; None: no authentication (no principal).
    tokens: BearerTokens | None = None


class _Exchange:
    """One request's messages (a :class:`~._calls.Sink`): the notifications sent
    while it runs, then its answer; or none if it was cancelled (``over`` without
    ``answered``)."""

    __slots__ = ("answered", "gone", "lines", "over", "wake")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.answered = False
        self.over = False  # answered, or cancelled: nothing more comes
        self.wake: trio.Event | None = None
        #: The call did nothing because its MCP session was found ended: its answer,
        #: if it comes alone, is a 404 (see _answer).
        self.gone = False

    def notify(self, line: bytes) -> None:
        if not self.answered:
            self.lines.append(line)
            self._wake()

    def answer(self, line: bytes) -> None:
        self.lines.append(line)
        self.answered = self.over = True
        self._wake()

    def dropped(self) -> None:
        self.over = True
        self._wake()

    def connection_gone(self) -> None:
        self.gone = True

    def _wake(self) -> None:
        if self.wake is not None:
            self.wake.set()
            self.wake = None

    async def next_lines(self) -> list[bytes]:
        """The messages sent since the last call, waiting for one if there is none
        (none at all once it is over)."""
        if not self.lines and not self.over:
            self.wake = trio.Event()
            await self.wake.wait()
        lines, self.lines = self.lines, []
        return lines


class _Refused(Exception):
    """A request answered with an HTTP error status and a JSON-RPC error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        request_id: RequestId | None = None,
        data: Any = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = JsonRpcError(code, message, data)
        self.request_id = request_id
        self.headers = headers or []


def _store_failed(
    what: str, exc: SessionStoreError, request_id: RequestId | None = None
) -> _Refused:
    """The answer to a request whose MCP session's record the store could not read or
    write: 503, to retry; the details (addresses, the driver's error) go to the log."""
    logger.warning("an MCP session's record could not be %s: %s", what, exc)
    return _Refused(
        503,
        INTERNAL_ERROR,
        "Service Unavailable: the session store failed; retry later (the server's log says why)",
        request_id,
        headers=_BUSY,
    )


#: What an MCP session's record holds, as a tuple that compares cheaply: the
#: handshake's four fields (:func:`_handshake`), the default session's id, the principal.
_State = tuple[Any, ...]
#: Where the default session's id is in a :data:`_State`.
_DEFAULT = 4
#: How many times a change of an MCP session's record is tried again when another
#: process changed the record first (each try reads it again) before giving up.
_SWAPS = 8


def _handshake(peer: Peer) -> _State:
    """The fields of an MCP session's record that its requests change (the handshake
    era's state), as in a :data:`_State`."""
    handshake = peer.handshake
    return (handshake.version, handshake.client_info, handshake.initialized, handshake.log_level)


def _set_handshake(peer: Peer, fields: _State) -> None:
    handshake = peer.handshake
    version, client_info, initialized, log_level = fields
    handshake.version = version
    handshake.client_info = client_info
    handshake.initialized = initialized
    handshake.log_level = log_level


class _Known:
    """An MCP session served lately: its peer, the record the store holds as this
    process last read or saved it (text, and that record's state: the peer's differs
    while a change of it is not saved yet), and when the store last saw it."""

    __slots__ = ("peer", "read_at", "state", "text")

    def __init__(self, peer: Peer, text: str, state: _State, read_at: float) -> None:
        self.peer = peer
        self.text = text
        self.state = state
        self.read_at = read_at


def _record_key(session_id: str, principal: str | None) -> str:
    """The store key of an MCP session's record: its id, under its principal's name
    (``principal/id``; a principal name holds no ``/``). A request made as another
    principal looks its id up under its own name and finds nothing, as for an unknown
    id: it reads (so keeps alive) no other principal's record."""
    return session_id if principal is None else f"{principal}/{session_id}"


def _record(state: _State) -> str:
    version, client_info, initialized, log_level, default_session_id, principal = state
    return encode_json(
        {
            "version": version,
            "client_info": client_info,
            "initialized": initialized,
            "log_level": log_level,
            "default_session_id": default_session_id,
            "principal": principal,
        }
    )


class _RecordGone(Exception):
    """The MCP session's record is no longer in the store: it was ended (DELETE,
    perhaps through another process) or it expired."""


class McpHttpApp:
    """The ASGI app; make it with :func:`open_http_app`, which runs what it needs."""

    def __init__(self, core: McpCore, http: HttpOptions) -> None:
        self._core = core
        self._store = core.manager.store
        self._http = http
        self._keys = count(1)
        # The stateless requests' client, one per principal.
        self._stateless: dict[str | None, Peer] = {}
        self._peers: dict[str, _Known] = {}  # MCP sessions served lately, by id
        self._fresh = min(RECORD_FRESH, http.session_ttl / 2)
        self._requests = 0  # being handled
        self._per_principal = http.max_requests_per_principal or max(1, http.max_requests // 4)
        self._held: dict[str, int] = {}  # requests being handled, by principal
        self._buffered = 0  # bytes of bodies being received
        self._buffer_budget = max(http.max_buffered_bytes, http.max_body_bytes)
        # The MCP sessions opened here, by principal: id -> when its record expires,
        # unless read again (soonest first).
        self._opened: dict[str | None, dict[str, float]] = {}
        # Cancellations of requests not (yet) running here, by principal: (MCP session
        # id, request id) -> until when (Trio's clock), oldest first.
        self._cancels: dict[str | None, dict[tuple[str, RequestId | bytes], float]] = {}
        self.closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_headers = scope["headers"]
        headers = {name.lower(): value for name, value in raw_headers}
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix (path is the full one)
            path = path[len(root) :]
        try:
            if path.rstrip("/") != MCP_PATH:
                raise _Refused(404, INVALID_REQUEST, f"Not Found: MCP is at {MCP_PATH}")
            if len(headers) != len(raw_headers):
                _check_single(raw_headers)
            if b"transfer-encoding" in headers and b"content-length" in headers:
                await self._refuse_both_framings(receive)
            origin = headers.get(b"origin")
            if not self._origin_allowed(origin):
                raise _Refused(403, INVALID_REQUEST, "Forbidden: origin not allowed")
            if origin is not None:
                # A browser page of an allowed origin: it may read the answers (CORS),
                # and its preflight (an OPTIONS before each POST, DELETE or GET it
                # sends with MCP's headers) is answered before any other check.
                if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                    start = {"type": "http.response.start", "status": 204}
                    await send({**start, "headers": _preflight(origin)})
                    await send({"type": "http.response.body", "body": b""})
                    return
                send = partial(_with_cors, send, _cors(origin))
            if self._requests >= self._http.max_requests or self.closing:
                raise _Refused(
                    503,
                    INVALID_REQUEST,
                    "Service Unavailable: the server is busy or shutting down; retry later",
                    headers=_BUSY,
                )
            # Every request's client is known here, before its body is read: the one
            # place where a caller is authenticated.
            principal = self._authenticate(headers)
            if principal is not None:
                held = self._held.get(principal, 0)
                if held >= self._per_principal:
                    raise _Refused(
                        503,
                        INVALID_REQUEST,
                        f"Service Unavailable: {held} requests of this principal are being "
                        "handled, the most one principal may have at once; retry later",
                        headers=_BUSY,
                    )
                self._held[principal] = held + 1
            method = scope["method"]
            self._requests += 1
            try:
                if method == "POST":
                    await self._post(headers, receive, send, principal)
                elif method == "DELETE":
                    await self._delete(headers, send, principal)
                else:
                    raise _Refused(
                        405,
                        INVALID_REQUEST,
                        f"Method Not Allowed: {method}; POST MCP messages (DELETE ends an "
                        "MCP session). This server sends no messages of its own, so there "
                        "is no stream to GET.",
                        headers=[(b"allow", b"POST, DELETE")],
                    )
            finally:
                self._requests -= 1
                if principal is not None:
                    held = self._held.pop(principal) - 1
                    if held:
                        self._held[principal] = held
        except _Refused as refused:
            error = {"code": refused.error.code, "message": refused.error.message}
            if refused.error.data is not None:
                error["data"] = refused.error.data
            body = encode_json({"jsonrpc": "2.0", "id": refused.request_id, "error": error})
            await _respond(send, refused.status, body.encode(), [*refused.headers, *_JSON])

    async def _refuse_both_framings(self, receive: Receive) -> None:
        """400, closing the connection, for a request with both Content-Length and
        Transfer-Encoding, whose body a proxy in front may frame otherwise (RFC 9112
        6.1). triact's own server refuses it before the app; Hypercorn frames it as
        chunked and keeps the connection, where a proxy that framed the body by its
        Content-Length would have sent the next request inside it. The body (as
        chunked) is dropped first, up to a bound: Hypercorn loses an answer sent while
        a body it will not read is still coming."""
        with trio.move_on_after(self._http.body_timeout):
            await _discard_body(receive, {"type": "http.request", "more_body": True}, _DISCARD_MAX)
        raise _Refused(
            400,
            INVALID_REQUEST,
            "Bad Request: both Content-Length and Transfer-Encoding",
            headers=[(b"connection", b"close")],
        )

    @property
    def calls_in_flight(self) -> int:
        """Tool calls running or waiting to run."""
        return len(self._core.calls)

    def _authenticate(self, headers: dict[bytes, bytes]) -> str | None:
        """The principal the request is made as (None without tokens); _Refused (401,
        or 400 for a malformed header, with a ``WWW-Authenticate`` challenge) if it
        carries no valid bearer token."""
        tokens = self._http.tokens
        if tokens is None:
            return None
        try:
            return tokens.authenticate(headers.get(b"authorization"))
        except Unauthorized as refused:
            challenge = [(b"www-authenticate", refused.challenge)]
            raise _Refused(
                refused.status, INVALID_REQUEST, refused.message, headers=challenge
            ) from None

    def _origin_allowed(self, origin: bytes | None) -> bool:
        if origin is None:
            return True  # not a browser
        text = origin.decode("latin-1")
        return _origin_host(text) in _LOOPBACK_HOSTS or text in self._http.allowed_origins

    # -- POST ----------------------------------------------------------------------

    async def _post(
        self, headers: dict[bytes, bytes], receive: Receive, send: Send, principal: str | None
    ) -> None:
        _check_accept(headers.get(b"accept"))
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if content_type != b"application/json":
            raise _Refused(
                415,
                INVALID_REQUEST,
                "Unsupported Media Type: POST one JSON-RPC message as application/json",
            )
        body = await self._read_body(receive, headers.get(b"content-length"))
        if body is None:
            return  # the client went away
        if body.lstrip()[:1] == b"[":
            raise _Refused(
                400,
                INVALID_REQUEST,
                "Invalid Request: batches (JSON arrays) are not part of the protocol "
                "revisions served here; POST one message per request",
            )
        message = parse_line(body)
        if type(message) is Invalid:
            assert isinstance(message, Invalid)
            raise _Refused(400, message.error.code, message.error.message, message.id)
        version = _header(headers, b"mcp-protocol-version")
        if version is not None and version in protocol.STATELESS_VERSIONS:
            await self._stateless_post(headers, version, message, receive, send, principal)
            return
        if version is not None and version not in _HANDSHAKE_HEADER_VERSIONS:
            raise _unsupported(version, getattr(message, "id", None))
        if isinstance(message, Request | Notification):
            meta = (message.params or {}).get("_meta")
            if type(meta) is dict and protocol.PROTOCOL_VERSION_KEY in meta:
                raise _Refused(
                    400,
                    HEADER_MISMATCH,
                    "Header mismatch: a request with params._meta"
                    f"[{protocol.PROTOCOL_VERSION_KEY!r}] needs the MCP-Protocol-Version "
                    "header with the same version",
                    getattr(message, "id", None),
                )
        await self._session_post(headers, message, receive, send, principal)

    async def _read_body(self, receive: Receive, declared: bytes | None = None) -> bytes | None:
        """The request's body, or None if the client went away first. A body whose
        ``Content-Length`` (``declared``) is over the bound is refused before any of
        it is read: its client need not send it, nor wait for the body timeout."""
        limit = self._http.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await trio.lowlevel.checkpoint()
            raise _Refused(413, INVALID_REQUEST, f"Content Too Large: over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            with trio.move_on_after(self._http.body_timeout):
                while True:
                    event = await receive()
                    if event["type"] == "http.disconnect":
                        return None
                    chunk = event.get("body", b"")
                    size += len(chunk)
                    self._buffered += len(chunk)
                    if size > limit:
                        await _discard_body(receive, event, _DISCARD_MAX)
                        raise _Refused(
                            413, INVALID_REQUEST, f"Content Too Large: over {limit} bytes"
                        )
                    if self._buffered > self._buffer_budget:
                        await _discard_body(receive, event, _DISCARD_MAX)
                        raise _Refused(
                            503,
                            INVALID_REQUEST,
                            "Service Unavailable: the server is receiving as many request "
                            "bytes as it holds at once; retry later",
                            headers=_BUSY,
                        )
                    chunks.append(chunk)
                    if not event.get("more_body", False):
                        return b"".join(chunks)
        finally:
            self._buffered -= size
        raise _Refused(
            408,
            INVALID_REQUEST,
            f"Request Timeout: the body took over {self._http.body_timeout} s to arrive",
        )

    async def _stateless_post(
        self,
        headers: dict[bytes, bytes],
        version: str,
        message: Any,
        receive: Receive,
        send: Send,
        principal: str | None,
    ) -> None:
        """A 2026-07-28 POST: the headers must agree with the body; no MCP session."""
        if type(message) is Notification:
            # None is defined for the client over HTTP (closing a stream cancels).
            await _respond(send, 202, b"", [])
            return
        if type(message) is not Request:
            raise _Refused(
                400, INVALID_REQUEST, "Invalid Request: a client sends no responses in " + version
            )
        request: Request = message
        meta = request.params.get("_meta")
        body_version = meta.get(protocol.PROTOCOL_VERSION_KEY) if type(meta) is dict else None
        if body_version is None:
            raise _Refused(
                400,
                HEADER_MISMATCH,
                f"Header mismatch: MCP-Protocol-Version is {version}, but the request has no "
                f"params._meta[{protocol.PROTOCOL_VERSION_KEY!r}] (every {version} request "
                "carries its version, client info and capabilities in params._meta)",
                request.id,
            )
        if body_version != version:
            raise _Refused(
                400,
                HEADER_MISMATCH,
                f"Header mismatch: MCP-Protocol-Version {version!r} does not match "
                f"params._meta[{protocol.PROTOCOL_VERSION_KEY!r}] {_quoted(body_version)}",
                request.id,
            )
        _check_header(headers, b"mcp-method", "Mcp-Method", request.method, request.id)
        if request.method in ("tools/call", "prompts/get"):
            name = request.params.get("name")
            _check_header(headers, b"mcp-name", "Mcp-Name", name, request.id)
        peer = self._stateless.get(principal)
        if peer is None:
            peer = self._stateless[principal] = self._core.peer(
                "\x00stateless", keyed=True, principal=principal
            )
        await self._dispatch(peer, request, receive, send, stateless=True)

    async def _session_post(
        self,
        headers: dict[bytes, bytes],
        message: Any,
        receive: Receive,
        send: Send,
        principal: str | None,
    ) -> None:
        """A handshake-era POST: ``initialize`` opens an MCP session; the rest name one."""
        request_id = getattr(message, "id", None)
        session_id = _header(headers, b"mcp-session-id")
        if session_id is None:
            if type(message) is Request and message.method == "initialize":
                await self._initialize(message, receive, send, principal)
                return
            raise _Refused(
                400,
                INVALID_REQUEST,
                "Bad Request: no Mcp-Session-Id header; send initialize first and then its "
                "Mcp-Session-Id with every request (or use protocol revision "
                f"{protocol.STATELESS_VERSIONS[-1]}, which needs no session)",
                request_id,
            )
        if type(message) is Request and message.method == "initialize":
            raise _Refused(
                400,
                INVALID_REQUEST,
                "Bad Request: initialize opens a new MCP session; send it without Mcp-Session-Id",
                request_id,
            )
        peer = await self._session_peer(
            session_id, principal, default=_may_use_default_session(message), request_id=request_id
        )
        if peer is None:
            raise _Refused(
                404,
                INVALID_REQUEST,
                "Not Found: unknown or expired MCP session; send initialize to open a new one",
                request_id,
            )
        if type(message) is Notification:
            elsewhere = _not_running_here(peer, message)
            self._core.notification(peer, message)
            if elsewhere is not None:
                await self._cancel_elsewhere(session_id, peer, elsewhere, message)
            await self._save(session_id, peer)
            await _respond(send, 202, b"", [])
            return
        if type(message) is not Request:
            await _respond(send, 202, b"", [])  # a response: this server asked nothing
            return
        await self._dispatch(peer, message, receive, send, session_id=session_id)

    # -- notifications/cancelled across processes ------------------------------------

    async def _cancel_elsewhere(
        self, session_id: str, peer: Peer, request_id: RequestId, message: Notification
    ) -> None:
        """A cancellation of a request this process does not run: kept here for a while
        (its POST may still come), and sent to every other process on the store."""
        self._keep_cancel(session_id, peer.principal, request_id)
        if self._store.broadcasts:
            reason = (message.params or {}).get("reason")
            text = encode_json(
                {
                    "session": session_id,
                    "principal": peer.principal,
                    "request": request_id,
                    "reason": reason if type(reason) is str else None,
                }
            )
            try:
                await self._store.broadcast(CANCEL_CHANNEL, text)
            except SessionStoreError as exc:  # kept here all the same
                logger.warning("a cancellation could not be sent to other processes: %s", exc)

    def _keep_cancel(self, session_id: str, principal: str | None, request_id: RequestId) -> None:
        now = trio.current_time()
        cancels = self._cancels.setdefault(principal, {})
        while cancels:  # oldest first: drop those past their time, and past the bound
            oldest, until = next(iter(cancels.items()))
            if until > now and len(cancels) < CANCELS_KEPT_MAX:
                break
            del cancels[oldest]
        name = _cancel_name(session_id, request_id)
        cancels.pop(name, None)
        cancels[name] = now + CANCEL_KEPT

    def cancelled_elsewhere(self, text: str) -> None:
        """A cancellation another process received (see :meth:`_cancel_elsewhere`):
        cancel the request if it runs here for the same MCP session and principal,
        else keep it for a while."""
        try:
            message = json.loads(text)
            session_id = message["session"]
            principal = message["principal"]
            request_id = message["request"]
            reason = message["reason"]
        except (ValueError, TypeError, KeyError):
            logger.warning("ignored a malformed cancellation from the store: %.200r", text)
            return
        if not (
            type(session_id) is str
            and (principal is None or type(principal) is str)
            and type(request_id) in (str, int)
        ):
            logger.warning("ignored a malformed cancellation from the store: %.200r", text)
            return
        known = self._peers.get(session_id)
        peer = known.peer if known is not None else None
        if peer is not None and peer.principal == principal and peer.requests:
            key = peer.requests.get(request_id)
            if key is not None:
                self._core.calls.cancel(key, reason)
                return
        logger.info(
            "notifications/cancelled of request %.200r, received by another process: "
            "not running here; kept %g s",
            request_id,
            CANCEL_KEPT,
        )
        self._keep_cancel(session_id, principal, request_id)

    def _cancelled_before(self, session_id: str, principal: str | None, request: Request) -> bool:
        """Whether the request was cancelled before it arrived here (and the
        cancellation is still kept); forgets that cancellation."""
        cancels = self._cancels.get(principal)
        if cancels is None:
            return False
        until = cancels.pop(_cancel_name(session_id, request.id), None)
        if not cancels:
            del self._cancels[principal]
        return until is not None and until > trio.current_time()

    async def _initialize(
        self, request: Request, receive: Receive, send: Send, principal: str | None
    ) -> None:
        opened = self._opened.setdefault(principal, {})
        now = trio.current_time()
        while opened and next(iter(opened.values())) <= now:  # expired meanwhile
            del opened[next(iter(opened))]
        if len(opened) >= self._http.max_mcp_sessions:
            retry = math.ceil(next(iter(opened.values())) - now)
            raise _Refused(
                429,
                INVALID_REQUEST,
                f"Too Many Requests: {len(opened)} MCP sessions of this principal are open, "
                "the most one principal may have; end those it no longer uses (DELETE), or "
                "retry once one has expired",
                request.id,
                headers=[(b"retry-after", str(max(1, retry)).encode())],
            )
        session_id = secrets.token_urlsafe(16)  # 128 bits
        peer = self._peer(session_id, principal)
        await self._dispatch(peer, request, receive, send, session_id=session_id, new=True)
        if peer.handshake.version is not None:  # opened: its record is in the store
            opened[session_id] = trio.current_time() + self._http.session_ttl

    async def _session_peer(
        self,
        session_id: str,
        principal: str | None,
        *,
        fresh: bool = False,
        default: bool = True,
        request_id: RequestId | None = None,
    ) -> Peer | None:
        """The MCP session ``session_id`` as its record in the store says (reading it
        starts its time to live again), or None if it has none, or if it is another
        principal's: that is looked up under the caller's principal (see
        :func:`_record_key`) and found missing, like an unknown id, at the same cost and
        without a trace (no TTL started again, nothing forgotten here). A record read or saved
        here less than ``self._fresh`` seconds ago is not read again, unless ``fresh``,
        or the request may use (``default``) the session's default session and it has
        none yet (one made through another process is then used at once, rather than
        one made here only to find, when naming it, that another was named first)."""
        if _SESSION_ID.fullmatch(session_id) is None:
            return None
        known = self._peers.get(session_id)
        foreign = known is not None and known.peer.principal != principal
        if foreign:
            known = None  # another principal's: looked up as an unknown id is
        now = trio.current_time()
        if (
            known is not None
            and not fresh
            and now - known.read_at < self._fresh
            # Without a default session yet, another process may have just made one.
            and (known.peer.default_session_id is not None or not default)
        ):
            await trio.lowlevel.checkpoint()
            return known.peer
        key = _record_key(session_id, principal)
        try:
            text = await self._store.get_record(MCP_SESSION_NAMESPACE, key)
        except SessionStoreError as exc:
            raise _store_failed("read", exc, request_id) from None
        if text is None:
            if not foreign:  # (the other principal's stays known)
                self._peers.pop(session_id, None)
            return None
        self._opened_again(principal, session_id, now)
        if known is not None and text == known.text:
            # As this process last saw it: nothing to decode, and what the peer
            # changed since (a save the store refused, or a call's that is not
            # answered yet) is kept, to be saved with the request.
            known.read_at = now
            return known.peer
        peer = known.peer if known is not None else self._peer(session_id, principal)
        if self._adopt(session_id, peer, text, now) is None:
            return None
        return peer

    def _peer(self, session_id: str, principal: str | None) -> Peer:
        """A new peer for the MCP session ``session_id``, whose default session is
        named in its record before any call uses it (:meth:`_claim_default`)."""
        peer = self._core.peer(session_id, keyed=True, principal=principal)
        peer.claim_default = partial(self._claim_default, session_id)
        return peer

    def _adopt(self, session_id: str, peer: Peer, text: str, now: float) -> _Known | None:
        """Make ``peer`` what the record ``text`` (read from the store at ``now``)
        says, and remember it; None if the record is another principal's."""
        record = json.loads(text)
        principal = peer.principal
        if record.get("principal") != principal:
            return None
        fields = (
            record["version"],
            record["client_info"],
            record["initialized"],
            record["log_level"],
        )
        _set_handshake(peer, fields)
        default = record["default_session_id"]
        if peer.default_creating is None:  # else this process is naming one
            peer.default_session_id = default
        return self._know(session_id, peer, text, (*fields, default, principal), now)

    def _opened_again(self, principal: str | None, session_id: str, now: float) -> None:
        """The record of an MCP session opened here was read: it lives a TTL from now."""
        opened = self._opened.get(principal)
        if opened is not None and opened.pop(session_id, None) is not None:
            opened[session_id] = now + self._http.session_ttl

    def _know(self, session_id: str, peer: Peer, text: str, state: _State, now: float) -> _Known:
        if session_id not in self._peers and len(self._peers) >= _PEERS_MAX:
            self._peers.clear()  # a cache: what is forgotten is read again
        known = self._peers[session_id] = _Known(peer, text, state, now)
        return known

    async def _swap(self, session_id: str, peer: Peer, known: _Known | None, state: _State) -> bool:
        """Put the record ``state`` for ``peer`` if the store holds what ``known``
        says (no record, without ``known``); True if put. SessionStoreError if the
        store fails."""
        text = _record(state)
        swapped = await self._store.swap_record(
            MCP_SESSION_NAMESPACE,
            _record_key(session_id, peer.principal),
            text,
            expected=None if known is None else known.text,
            ttl=self._http.session_ttl,
        )
        if swapped:
            self._know(session_id, peer, text, state, trio.current_time())
        return swapped

    async def _read_again(self, session_id: str, peer: Peer) -> _Known:
        """Read the MCP session's record again after another process changed it, and
        make ``peer`` what it says; _RecordGone if it is no longer there.
        SessionStoreError if the store fails."""
        key = _record_key(session_id, peer.principal)
        text = await self._store.get_record(MCP_SESSION_NAMESPACE, key)
        known = None if text is None else self._adopt(session_id, peer, text, trio.current_time())
        if known is None:
            self._peers.pop(session_id, None)
            raise _RecordGone
        return known

    async def _claim_default(self, session_id: str, peer: Peer, default_id: str) -> str | None:
        """Name the session ``default_id`` (just made) the default session of the MCP
        session ``session_id`` in its record, which is what makes it so for every
        process: None once named; or, if the record names another (one that
        another process named, and not the one this peer found gone), that one's id.
        Swapped in, so that two processes making a default session for one MCP
        session at once cannot both name theirs. SessionStoreError (nothing was
        named) if the store fails; ConnectionGoneError (nothing was done: the call's
        request gets 404, as the MCP session's next requests here do) if the MCP
        session is gone: ended through another process while this one still held its
        record, or expired."""
        known = self._peers.get(session_id)
        try:
            if known is None or known.peer is not peer:  # forgotten here meanwhile
                known = await self._read_again(session_id, peer)
            for _ in range(_SWAPS):
                named = known.state[_DEFAULT]
                if named is not None and named != peer.default_gone:
                    # Named by another process meanwhile (perhaps gone too: the
                    # caller looks, and comes back if it is).
                    return str(named)
                state = (*known.state[:_DEFAULT], default_id, peer.principal)
                if await self._swap(session_id, peer, known, state):
                    return None
                known = await self._read_again(session_id, peer)
        except SessionStoreError as exc:
            logger.warning("an MCP session's record could not name its default session: %s", exc)
            raise SessionStoreError(
                "the MCP session's record could not be kept in the store, so it has no "
                "default session yet and nothing was done; retry",
                applied=False,
            ) from None
        except _RecordGone:
            peer.ended = True  # nothing of it is kept again
            # Not a store's failure (whose answer says to retry as it is): the client
            # must open a new MCP session, as the 404 of its next request will say.
            raise ConnectionGoneError(
                "this MCP session was ended (DELETE, perhaps through another server "
                "process) or expired, so it has no default session; nothing was done. "
                "Send initialize to open a new MCP session"
            ) from None
        raise SessionStoreError(
            f"the MCP session's record changed {_SWAPS} times while its default session "
            "was named; nothing was done, retry",
            applied=False,
        )

    async def _save(
        self,
        session_id: str,
        peer: Peer,
        *,
        new: bool = False,
        answered: bool = False,
        request_id: RequestId | None = None,
    ) -> None:
        """Put the MCP session's record if the peer differs from the record this
        process last read or saved; the first record of a session (``new``) only once
        ``initialize`` has succeeded. A record that is gone (the MCP session ended
        through another process, or expired) is not made again.

        If the store fails, the request is refused (503) unless it is ``answered``: a
        tool call that ran is answered as it went (refusing it would tell the client
        that it did not happen, and a retry would do it twice); the peer keeps the
        change, which the session's next request saves (its record keeps the earlier
        state until then)."""
        if peer.handshake.version is None or peer.ended:
            return
        mine = _handshake(peer)
        known = self._peers.get(session_id)
        if known is not None and known.peer is not peer:
            known = None
        if known is not None and known.state[:_DEFAULT] == mine:
            return
        try:
            if known is None and not new:  # forgotten here: read, never made again
                known = await self._read_again(session_id, peer)
                _set_handshake(peer, mine)
            await self._save_handshake(session_id, peer, known, mine)
        except _RecordGone:
            peer.ended = True  # ended through another process meanwhile: not made again
        except SessionStoreError as exc:
            if not answered:
                raise _store_failed("saved", exc, request_id) from None
            logger.warning("an MCP session's record could not be saved: %s", exc)

    async def _save_handshake(
        self, session_id: str, peer: Peer, known: _Known | None, mine: _State
    ) -> None:
        """Swap the peer's handshake fields ``mine`` into its record (``known``, as
        this process last read or saved it; None for a new MCP session). When another
        process changed the record meanwhile, its changes are kept: each field this
        process did not change since ``known`` takes the record's value, and its
        default session is always the record's (only :meth:`_claim_default` names
        one)."""
        ours = mine
        base = None if known is None else known.state[:_DEFAULT]
        changed = None if base is None else [m != b for m, b in zip(mine, base, strict=True)]
        for _ in range(_SWAPS):
            default = None if known is None else known.state[_DEFAULT]
            if await self._swap(session_id, peer, known, (*mine, default, peer.principal)):
                return
            known = await self._read_again(session_id, peer)
            if changed is not None:
                theirs = known.state[:_DEFAULT]
                mine = tuple(o if c else t for o, c, t in zip(ours, changed, theirs, strict=True))
            _set_handshake(peer, mine)
        raise SessionStoreError(
            f"the MCP session's record changed {_SWAPS} times while this process saved it"
        )

    async def _dispatch(
        self,
        peer: Peer,
        request: Request,
        receive: Receive,
        send: Send,
        *,
        session_id: str | None = None,
        new: bool = False,
        stateless: bool = False,
    ) -> None:
        """Hand ``request`` to the core and send its answer (JSON, or SSE when
        notifications come before it); a client that goes away cancels it. With
        ``new``, the request opens the MCP session ``session_id``."""
        key = next(self._keys)
        exchange = _Exchange()
        extra: list[tuple[bytes, bytes]] = []
        try:
            try:
                self._core.request(peer, key, request, exchange)
            except JsonRpcError as exc:
                status = 200
                if exc.code == UNSUPPORTED_PROTOCOL_VERSION:
                    status = 400
                elif exc.code == METHOD_NOT_FOUND and stateless:
                    status = 404
                raise _Refused(status, exc.code, exc.message, request.id, exc.data) from None
            if (
                self._cancels
                and session_id is not None
                and self._cancelled_before(session_id, peer.principal, request)
            ):
                self._core.calls.cancel(key, "notifications/cancelled came before the request")
            if exchange.answered and len(exchange.lines) == 1:  # answered at once
                if session_id is not None:
                    await self._save(
                        session_id, peer, new=new, answered=not new, request_id=request.id
                    )
                    if new and peer.handshake.version is not None:
                        extra.append((b"mcp-session-id", session_id.encode()))
                await _respond(send, 200, exchange.lines[0], [*extra, *_JSON])
                return
            if await self._stream(key, exchange, receive, send, extra, peer, session_id):
                raise _Refused(  # the call's answer, not sent: a 404 in its place
                    404,
                    INVALID_REQUEST,
                    "Not Found: this MCP session was ended or expired, and nothing was "
                    "done; send initialize to open a new one",
                    request.id,
                )
        finally:
            self._core.finished(peer, request.id, key)

    async def _stream(
        self,
        key: int,
        exchange: _Exchange,
        receive: Receive,
        send: Send,
        extra: list[tuple[bytes, bytes]],
        peer: Peer,
        session_id: str | None,
    ) -> bool:
        """Wait for a tool call's answer while watching for the client to go away;
        with a progressToken, stream the notifications as they come (SSE). True if
        the answer was not sent because the call found its MCP session ended
        (``exchange.gone``), and comes alone: the request is then answered 404."""
        try:
            return await self._stream_lines(key, exchange, receive, send, extra, peer, session_id)
        finally:
            if not exchange.answered:  # the client went away, or the server is stopping
                self._core.calls.cancel(key, "the HTTP request ended before its answer")

    async def _stream_lines(
        self,
        key: int,
        exchange: _Exchange,
        receive: Receive,
        send: Send,
        extra: list[tuple[bytes, bytes]],
        peer: Peer,
        session_id: str | None,
    ) -> bool:
        # Most calls are answered within a few milliseconds: the client is watched
        # (a task reading ``receive`` for its disconnect) only once a call has taken
        # _UNWATCHED seconds or sent a notification. A client that goes away before
        # then cancels the call when the watch starts, unless it was answered first.
        lines: list[bytes] = []
        with trio.move_on_after(_UNWATCHED):
            lines = await exchange.next_lines()
        if exchange.answered and len(lines) == 1:
            if exchange.gone:  # answered as a request of an ended MCP session (404)
                return True
            if session_id is not None:
                await self._save(session_id, peer, answered=True)
            await _respond(send, 200, lines[0], [*extra, *_JSON])
            return False
        streaming = False
        gone = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_on_disconnect, receive, key, nursery.cancel_scope)
            while True:
                if not lines:
                    lines = await exchange.next_lines()
                if exchange.over and session_id is not None:
                    await self._save(session_id, peer, answered=True)
                if not streaming:
                    if exchange.answered and len(lines) == 1:
                        if exchange.gone:  # as above
                            gone = True
                            break
                        await _respond(send, 200, lines[0], [*extra, *_JSON])
                        break
                    streaming = True
                    start = {"type": "http.response.start", "status": 200}
                    await send({**start, "headers": [*extra, *_SSE]})
                # A cancelled call's stream ends without its answer.
                data = b"".join(b"event: message\ndata: " + line + b"\n\n" for line in lines)
                await send(
                    {"type": "http.response.body", "body": data, "more_body": not exchange.over}
                )
                if exchange.over:
                    break
                lines = []
            nursery.cancel_scope.cancel()
        return gone

    async def _cancel_on_disconnect(
        self, receive: Receive, key: int, response: trio.CancelScope
    ) -> None:
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                self._core.calls.cancel(key, "the client closed the HTTP request")
                response.cancel()
                return

    # -- DELETE --------------------------------------------------------------------

    async def _delete(self, headers: dict[bytes, bytes], send: Send, principal: str | None) -> None:
        session_id = _header(headers, b"mcp-session-id")
        peer = (
            await self._session_peer(session_id, principal, fresh=True)
            if session_id is not None
            else None
        )
        if session_id is None or peer is None:
            raise _Refused(404, INVALID_REQUEST, "Not Found: no such MCP session")
        peer.ended = True  # before the delete: a call that outlives it saves nothing
        try:
            await self._store.delete_record(
                MCP_SESSION_NAMESPACE, _record_key(session_id, principal)
            )
        except SessionStoreError as exc:
            peer.ended = False  # still open: the client may DELETE it again
            raise _store_failed("deleted", exc) from None
        self._peers.pop(session_id, None)
        opened = self._opened.get(principal)
        if opened is not None:
            opened.pop(session_id, None)
        default = peer.default_session_id
        if default is not None:
            # Else already gone, or ended by a call of the session meanwhile.
            try:
                await (await self._core.manager.get_session(default)).end()
            except (SessionNotFoundError, SessionClosedError):
                pass
            except SessionStoreError as exc:  # the MCP session is gone all the same
                logger.warning(
                    "an ended MCP session's default session was left to its idle TTL: %s", exc
                )
            peer.session_gone(default)
        await _respond(send, 200, b"", [])


@asynccontextmanager
async def open_http_app(
    manager: SessionManager,
    tools: ToolSet = SESSION_TOOLS,
    options: ServerOptions | None = None,
    http: HttpOptions | None = None,
    *,
    prompts: PromptSet | None = None,
) -> AsyncIterator[McpHttpApp]:
    """An ASGI app serving ``tools`` (and ``prompts``, if given) for ``manager``'s
    sessions over MCP's streamable HTTP at ``/mcp``, for the block; mount it in any ASGI
    server or framework that runs on Trio. On exit it takes no more requests (503), lets
    the calls in flight finish within ``options.shutdown_grace`` and cancels the rest."""
    options = options or ServerOptions()
    core = core_for(manager, tools, options, prompts)
    async with trio.open_nursery() as nursery:
        core.calls.nursery = nursery
        app = McpHttpApp(core, http or HttpOptions())
        if manager.store.broadcasts:
            await nursery.start(_listen_for_cancels, app, manager)
        try:
            yield app
        finally:
            app.closing = True
            with trio.CancelScope(shield=True):
                await core.drain(options.shutdown_grace)
            nursery.cancel_scope.cancel()


async def stop_calls(app: McpHttpApp, grace: float) -> None:
    """Stop ``app``'s calls as its exit would, but while its server still writes
    answers: new requests get 503, the calls in flight get ``grace`` seconds to
    finish, and those still running then are cancelled and answered ``closed`` (they
    did not happen), rather than cut off with their connections. ``triact serve
    --http`` calls it when it is told to stop, and gives its server's connections a
    moment more than ``grace`` (:data:`ANSWER_MARGIN`)."""
    app.closing = True
    core = app._core  # noqa: SLF001 (this module's own class)
    await core.drain(grace)
    core.calls.stop()


#: Seconds a stopping ``triact serve --http`` gives its connections beyond the calls'
#: grace period, to write the answers of the calls cancelled then (see stop_calls).
ANSWER_MARGIN = 1.0


async def _listen_for_cancels(
    app: McpHttpApp, manager: SessionManager, *, task_status: trio.TaskStatus[None]
) -> None:
    """Take the cancellations other processes on the store received. While the store
    fails, cancellations reach only the process they are sent to: listening is tried
    again (after :data:`_RELISTEN` seconds, doubling), and the loss and the recovery
    are logged. Started once listening (or after its first failure)."""
    first_delay, longest = _RELISTEN
    delay = first_delay
    lost = False  # logged as lost, not yet as back

    def subscribed() -> None:
        nonlocal delay, lost
        if not started.done:
            started.started()
        if lost:
            logger.warning("notifications/cancelled from other processes reach this one again")
            lost = False
        delay = first_delay

    started = _Status(task_status.started)
    while True:
        attempt = _Status(subscribed)
        try:
            await manager.store.listen(CANCEL_CHANNEL, app.cancelled_elsewhere, task_status=attempt)
        except SessionStoreError as exc:
            if not lost:
                logger.warning(
                    "notifications/cancelled from other processes do not reach this one "
                    "(tried again every %g s at most): %s",
                    longest,
                    exc,
                )
                lost = True
        if not started.done:
            started.started()
        await trio.sleep(delay)
        delay = min(delay * 2, longest)


class _Status(trio.TaskStatus[None]):
    """A task status that calls ``on_started`` (the first time) and tells whether it
    was started."""

    def __init__(self, on_started: Callable[[], None]) -> None:
        self._on_started = on_started
        self.done = False

    def started(self, value: None = None) -> None:
        if not self.done:
            self.done = True
            self._on_started()


def _cancel_name(session_id: str, request_id: RequestId) -> tuple[str, RequestId | bytes]:
    """What a kept cancellation of ``request_id`` of the MCP session is found by: the
    id itself, or the SHA-256 digest of its JSON if that is longer than
    ``_CANCEL_ID_CHARS`` (bytes, so that it never equals an id)."""
    text = encode_json(request_id)
    if len(text) <= _CANCEL_ID_CHARS:
        return session_id, request_id
    return session_id, hashlib.sha256(text.encode()).digest()


def _not_running_here(peer: Peer, message: Notification) -> RequestId | None:
    """The request id a ``notifications/cancelled`` names if no call of ``peer``
    with that id runs here (None otherwise, and for any other notification)."""
    if message.method != "notifications/cancelled" or message.params is None:
        return None
    request_id = message.params.get("requestId")
    if type(request_id) not in (str, int) or peer.requests is None:
        return None
    return None if request_id in peer.requests else request_id


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _discard_body(receive: Receive, event: MutableMapping[str, Any], limit: int) -> None:
    """Read and drop the rest of a refused body, up to ``limit`` bytes in all: closing
    the connection with a body still arriving resets it, and the client may then lose
    the refusal before it reads it."""
    size = 0
    while event.get("more_body", False) and event["type"] != "http.disconnect":
        event = await receive()
        size += len(event.get("body", b""))
        if size > limit:
            return


def _may_use_default_session(message: Any) -> bool:
    """Whether a handshake-era message may use its MCP session's default session: any
    request but a ping and a tool call that names its session."""
    if type(message) is not Request:
        return False
    if message.method == "ping":
        return False
    if message.method == "tools/call":
        arguments = message.params.get("arguments")
        return not (type(arguments) is dict and type(arguments.get("session_id")) is str)
    return True


def _origin_host(origin: str) -> str:
    """The host of an origin (``scheme://host[:port]``), an IPv6 one in brackets."""
    if "://" not in origin:
        return ""
    authority = origin.split("://", 1)[1]
    if authority.startswith("["):
        return authority[: authority.find("]") + 1]
    return authority.split(":", 1)[0]


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1").strip()


def _check_accept(accept: bytes | None) -> None:
    """A POST's Accept must allow both JSON and SSE (wildcards do)."""
    types = {part.split(b";", 1)[0].strip().lower() for part in (accept or b"").split(b",") if part}
    json_ok = bool(types & {b"application/json", b"application/*", b"*/*"})
    sse_ok = bool(types & {b"text/event-stream", b"text/*", b"*/*"})
    if not (json_ok and sse_ok):
        raise _Refused(
            406,
            INVALID_REQUEST,
            "Not Acceptable: a POST's Accept header must list both application/json and "
            "text/event-stream",
        )


def _decoded(value: str) -> str | None:
    """A header value, its Base64 sentinel form (``=?base64?...?=``) decoded."""
    if not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    try:
        return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


#: Headers a request may carry once: a second copy could tell an intermediary (which
#: may act on the first) another story than the one this server acts on (the last).
_SINGLE: Final = {
    b"authorization": "Authorization",
    b"content-type": "Content-Type",
    b"origin": "Origin",
    b"mcp-session-id": "Mcp-Session-Id",
    b"mcp-protocol-version": "MCP-Protocol-Version",
    b"mcp-method": "Mcp-Method",
    b"mcp-name": "Mcp-Name",
}
#: What a header value may hold that MCP compares with the body (RFC 9110's visible
#: ASCII, space and tab); anything else travels in the ``=?base64?...?=`` form.
_HEADER_VALUE = re.compile(rb"[\x20-\x7e\t]*")
#: A header value that an error may quote (see _check_header).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._/:-]{1,128}")


def _check_single(raw_headers: list[tuple[bytes, bytes]]) -> None:
    """400 if a header of :data:`_SINGLE` appears more than once."""
    seen: set[bytes] = set()
    for name, _ in raw_headers:
        name = name.lower()
        if name in _SINGLE:
            if name in seen:
                code = HEADER_MISMATCH if name.startswith(b"mcp-") else INVALID_REQUEST
                raise _Refused(
                    400, code, f"Bad Request: the {_SINGLE[name]} header appears more than once"
                )
            seen.add(name)


def _check_header(
    headers: dict[bytes, bytes], name: bytes, title: str, expected: Any, request_id: RequestId
) -> None:
    value = _header(headers, name)
    if value is None:
        raise _Refused(
            400, HEADER_MISMATCH, f"Header mismatch: the {title} header is missing", request_id
        )
    if _HEADER_VALUE.fullmatch(headers[name]) is None:
        raise _Refused(
            400,
            HEADER_MISMATCH,
            f"Header mismatch: the {title} header holds characters a header value may not "
            "carry (send a value outside visible ASCII as =?base64?...?=)",
            request_id,
        )
    if _decoded(value) != expected:
        # The header's value is quoted only if it is a plain name (as a method, a tool
        # name or an id is): never what may be a credential sent in the wrong place.
        shown = repr(value) if _PLAIN_NAME.fullmatch(value) else "(not a plain name)"
        raise _Refused(
            400,
            HEADER_MISMATCH,
            f"Header mismatch: {title} header value {shown} does not match the body's "
            f"{_quoted(expected)}",
            request_id,
        )


def _quoted(value: Any) -> str:
    """A value of the request's body, as a refusal quotes it: a short one whole (its
    repr), a long string by its first characters and its length, anything else
    long by its type."""
    if isinstance(value, str) and len(value) > 40:
        return shown_name(value)
    shown = repr(value)
    return shown if len(shown) <= 42 else f"a {type(value).__name__}"


def _unsupported(version: str, request_id: RequestId | None) -> _Refused:
    return _Refused(
        400,
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        request_id,
        protocol.unsupported_version(version),
    )


#: What a browser page of an allowed origin may send (CORS preflight): the methods
#: this endpoint answers (GET with 405, which a client takes as "no stream"), and the
#: request headers it reads.
_CORS_PREFLIGHT = [
    (b"access-control-allow-methods", b"GET, POST, DELETE"),
    (
        b"access-control-allow-headers",
        b"Accept, Authorization, Content-Type, Last-Event-ID, Mcp-Method, Mcp-Name, "
        b"Mcp-Protocol-Version, Mcp-Session-Id",
    ),
    (b"access-control-max-age", b"600"),
]
#: The answer headers such a page may read beside the CORS-safelisted ones.
_CORS_EXPOSED = (b"access-control-expose-headers", b"Mcp-Session-Id, WWW-Authenticate")


def _cors(origin: bytes) -> list[tuple[bytes, bytes]]:
    """The CORS headers of an answer to a request from ``origin`` (an allowed one)."""
    return [(b"access-control-allow-origin", origin), _CORS_EXPOSED, (b"vary", b"Origin")]


def _preflight(origin: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of the answer to a CORS preflight from ``origin`` (an allowed one)."""
    return [(b"access-control-allow-origin", origin), *_CORS_PREFLIGHT, (b"vary", b"Origin")]


async def _with_cors(
    send: Send, cors: list[tuple[bytes, bytes]], message: MutableMapping[str, Any]
) -> None:
    """``send`` with the CORS headers ``cors`` added to the answer's start."""
    if message["type"] == "http.response.start":
        message = {**message, "headers": [*message.get("headers", ()), *cors]}
    await send(message)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    start = {"type": "http.response.start", "status": status}
    await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
