"""The MCP protocol revisions this server speaks, and the era of each request.

Two eras share one process (2026-07-28 "Versioning and Compatibility", dual-era):

* the handshake era (2024-11-05 ... 2025-11-25): ``initialize`` negotiates a version
  for the whole stdio connection; ``ping``, ``logging/setLevel``, and requests other
  than ``initialize``/``ping`` are refused until it has happened;
* the stateless era (2026-07-28): no handshake; every request carries its protocol
  version, client info and capabilities in ``params._meta``; results carry
  ``resultType`` and the server's identity in ``_meta``.

A request carrying the ``io.modelcontextprotocol/protocolVersion`` key is served
statelessly at the version it names; any other request (``initialize`` always) is
served in the handshake era.
"""

from __future__ import annotations

import re
from typing import Any, Final

from .._version import __version__
from ._jsonrpc import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    SHOWN_CHARS,
    UNSUPPORTED_PROTOCOL_VERSION,
    JsonRpcError,
    encode_json,
    shown_name,
)

# Not 2025-03-26: it requires JSON-RPC batches, which this server does not take (the
# revisions before and after it have none); a client asking for it is offered 2024-11-05.
HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-06-18", "2025-11-25")
STATELESS_VERSIONS: Final = ("2026-07-28",)
#: Every revision served, newest first (the order of the unsupported-version error).
SUPPORTED_VERSIONS: Final = (*reversed(STATELESS_VERSIONS), *reversed(HANDSHAKE_VERSIONS))
LATEST_HANDSHAKE_VERSION: Final = HANDSHAKE_VERSIONS[-1]
#: What an MCP revision looks like (each is a date): see :func:`unsupported_version`.
_REVISION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def unsupported_version(version: str) -> dict[str, Any]:
    """The data of the unsupported-version error: the revisions served, and the one
    requested if it looks like one (a date), else null. The error never quotes
    anything else the client sent in its place (a header of credentials sent in the
    wrong place, say)."""
    shown = version if _REVISION.fullmatch(version) else None
    return {"supported": list(SUPPORTED_VERSIONS), "requested": shown}


#: Revisions in which tool input validation errors are tool results (``isError``)
#: rather than JSON-RPC errors: 2025-11-25 moved them ("Tool Execution Errors").
ARGUMENT_ERRORS_AS_RESULTS: Final = frozenset({"2025-11-25", "2026-07-28"})

PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY: Final = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"

#: RFC 5424 severities, least severe first.
LOG_LEVELS: Final = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
LOG_RANK: Final = {level: rank for rank, level in enumerate(LOG_LEVELS)}

#: Prompts are answered only by a server given a prompt set (else "Method not found").
PROMPT_METHODS: Final = frozenset({"prompts/list", "prompts/get"})
HANDSHAKE_METHODS: Final = (
    frozenset({"initialize", "ping", "tools/list", "tools/call", "logging/setLevel"})
    | PROMPT_METHODS
)
STATELESS_METHODS: Final = (
    frozenset({"server/discover", "tools/list", "tools/call"}) | PROMPT_METHODS
)
KNOWN_METHODS: Final = HANDSHAKE_METHODS | STATELESS_METHODS

#: How long a stateless client may cache tools/list and server/discover (ms).
CACHE_TTL_MS: Final = 300_000

SERVER_INFO: Final = {"name": "triact", "title": "triact sessions", "version": __version__}
INSTRUCTIONS: Final = (
    "triact keeps session state for you. Create a session with session_create and pass "
    "its session_id to the other session_* tools (and its token, if you created it with "
    "bind_client). Under the handshake protocol revisions session_id may be left out to "
    "use this connection's default session. session_update changes the session's data "
    "object (set, increment, delete keys) atomically; expected_version guards against "
    "lost updates. Idle sessions expire."
)
CAPABILITIES: Final = {"tools": {"listChanged": False}, "logging": {}}
#: The members :func:`shape` adds to a stateless result that is not cacheable, encoded,
#: for results encoded piece by piece (``ToolResult.line``).
STATELESS_MEMBERS: Final = ',"resultType":"complete","_meta":' + encode_json(
    {SERVER_INFO_KEY: SERVER_INFO}
)


class HandshakeState:
    """The handshake era's per-connection state, set by ``initialize``."""

    __slots__ = ("client_info", "context", "initialized", "log_level", "version")

    def __init__(self) -> None:
        self.version: str | None = None
        self.client_info: Any = None
        self.initialized = False  # notifications/initialized seen
        self.log_level: str | None = None  # set by logging/setLevel
        #: The context of the last request without options (no progress token), for
        #: the next ones while the fields above stay the same (see context_for).
        self.context: RequestContext | None = None


class RequestContext:
    """What one request was sent under: its revision and the per-request options."""

    __slots__ = ("client_info", "log_level", "progress_token", "stateless", "version")

    def __init__(
        self,
        version: str,
        stateless: bool,
        progress_token: str | int | None,
        log_level: str | None,
        client_info: Any,
    ) -> None:
        self.version = version
        self.stateless = stateless
        self.progress_token = progress_token
        self.log_level = log_level
        self.client_info = client_info

    @property
    def argument_errors_as_results(self) -> bool:
        return self.version in ARGUMENT_ERRORS_AS_RESULTS


#: The ``_meta`` of a request without one (read only: a dict less per request).
_NO_META: Final[dict[str, Any]] = {}


def _progress_token(meta: dict[str, Any]) -> str | int | None:
    token = meta.get("progressToken")
    return token if type(token) is str or type(token) is int else None


def context_for(method: str, params: dict[str, Any], handshake: HandshakeState) -> RequestContext:
    """The era and revision a request is served under, or the JSON-RPC error to send."""
    if method not in KNOWN_METHODS:
        raise JsonRpcError(
            METHOD_NOT_FOUND,
            f"Method not found: {shown_name(method)}",
            {"method": method[:SHOWN_CHARS]},  # the whole of it, unless it is long
        )
    meta = params.get("_meta")
    if type(meta) is not dict:
        meta = _NO_META
    if method != "initialize" and PROTOCOL_VERSION_KEY in meta:
        return _stateless_context(method, meta)
    if method == "server/discover":
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: server/discover needs params._meta with {PROTOCOL_VERSION_KEY!r} and "
            f"{CLIENT_CAPABILITIES_KEY!r}",
        )
    version = handshake.version
    if version is None:
        if method not in ("initialize", "ping"):
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Invalid params: {method} before initialization: send initialize first "
                f"(protocol revisions {', '.join(HANDSHAKE_VERSIONS)}), or carry params._meta with "
                f"{PROTOCOL_VERSION_KEY!r} (revision {', '.join(STATELESS_VERSIONS)})",
            )
        version = LATEST_HANDSHAKE_VERSION
    progress_token = _progress_token(meta) if meta else None
    if progress_token is not None:
        return RequestContext(
            version, False, progress_token, handshake.log_level, handshake.client_info
        )
    # A context is never changed once made: the last one serves again as long as the
    # connection's version, log level and client info are the ones it was made with.
    ctx = handshake.context
    if (
        ctx is None
        or ctx.version is not version
        or ctx.log_level is not handshake.log_level
        or ctx.client_info is not handshake.client_info
    ):
        ctx = handshake.context = RequestContext(
            version, False, None, handshake.log_level, handshake.client_info
        )
    return ctx


def _stateless_context(method: str, meta: dict[str, Any]) -> RequestContext:
    # The order of the checks follows the spec's per-request fields: missing required
    # fields are invalid params; a version we do not serve is the dedicated error.
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: params._meta is missing the required key(s): {', '.join(missing)}",
        )
    version = meta[PROTOCOL_VERSION_KEY]
    if type(version) is not str:
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: params._meta[{PROTOCOL_VERSION_KEY!r}] must be a string",
        )
    if version not in STATELESS_VERSIONS:
        raise JsonRpcError(
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            unsupported_version(version),
        )
    if type(meta[CLIENT_CAPABILITIES_KEY]) is not dict:
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: params._meta[{CLIENT_CAPABILITIES_KEY!r}] must be an object",
        )
    log_level = meta.get(LOG_LEVEL_KEY)
    if log_level is not None and (type(log_level) is not str or log_level not in LOG_RANK):
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: params._meta[{LOG_LEVEL_KEY!r}] must be one of "
            f"{', '.join(LOG_LEVELS)}",
        )
    if method not in STATELESS_METHODS:
        raise JsonRpcError(
            METHOD_NOT_FOUND,
            f"Method not found: {method} is not part of protocol revision {version}",
            {"method": method},
        )
    return RequestContext(
        version, True, _progress_token(meta), log_level, meta.get(CLIENT_INFO_KEY)
    )


def shape(
    ctx: RequestContext, result: dict[str, Any], *, cacheable: bool = False
) -> dict[str, Any]:
    """Add what the request's revision requires on every result."""
    if ctx.stateless:
        result["resultType"] = "complete"
        result["_meta"] = {SERVER_INFO_KEY: dict(SERVER_INFO)}
        if cacheable:
            result["ttlMs"] = CACHE_TTL_MS
            result["cacheScope"] = "public"
    return result


def initialize(params: dict[str, Any], handshake: HandshakeState) -> dict[str, Any]:
    """Negotiate a handshake-era version: the client's if we speak it; else the newest
    we speak that is older than it (a client speaks the revisions before its own),
    or our latest if there is none or the client's is newer."""
    requested = params.get("protocolVersion")
    if type(requested) is not str:
        raise JsonRpcError(
            INVALID_PARAMS, "Invalid params: initialize needs params.protocolVersion (a string)"
        )
    if type(params.get("capabilities")) is not dict:
        raise JsonRpcError(
            INVALID_PARAMS, "Invalid params: initialize needs params.capabilities (an object)"
        )
    client_info = params.get("clientInfo")
    if type(client_info) is not dict or type(client_info.get("name")) is not str:
        raise JsonRpcError(
            INVALID_PARAMS,
            "Invalid params: initialize needs params.clientInfo with a name and a version",
        )
    version = _negotiate(requested)
    handshake.version = version
    handshake.client_info = _kept_client_info(client_info)
    return {
        "protocolVersion": version,
        "capabilities": CAPABILITIES,
        "serverInfo": dict(SERVER_INFO),
        "instructions": INSTRUCTIONS,
    }


#: What is kept of an initialize's clientInfo (which over HTTP lives in the MCP
#: session's record in the store for its whole TTL): these strings, each cut to
#: _CLIENT_INFO_CHARS characters; the rest (icons, ...) is dropped, so that a client
#: cannot make the server keep megabytes for it.
_CLIENT_INFO_KEPT = ("name", "version", "title")
_CLIENT_INFO_CHARS = 256


def _kept_client_info(client_info: dict[str, Any]) -> dict[str, str]:
    return {
        key: value[:_CLIENT_INFO_CHARS]
        for key in _CLIENT_INFO_KEPT
        if type(value := client_info.get(key)) is str
    }


def _negotiate(requested: str) -> str:
    if requested in HANDSHAKE_VERSIONS:
        return requested
    older = [version for version in HANDSHAKE_VERSIONS if version < requested]
    if older and requested < LATEST_HANDSHAKE_VERSION:
        return older[-1]
    return LATEST_HANDSHAKE_VERSION


def discover(ctx: RequestContext) -> dict[str, Any]:
    return shape(
        ctx,
        {
            "supportedVersions": list(SUPPORTED_VERSIONS),
            "capabilities": CAPABILITIES,
            "instructions": INSTRUCTIONS,
        },
        cacheable=True,
    )


def set_level(params: dict[str, Any], handshake: HandshakeState) -> dict[str, Any]:
    level = params.get("level")
    if type(level) is not str or level not in LOG_RANK:
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: logging/setLevel needs params.level, one of {', '.join(LOG_LEVELS)}",
        )
    handshake.log_level = level
    return {}
