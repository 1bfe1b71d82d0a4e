"""Tools as values: :class:`Tool` (one tool's definition and what carries it out),
:class:`ToolSet` (the tools a server offers, in their tools/list order), and how a
tool's result or error becomes a CallToolResult."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs
import orjson

from ..sessions import (
    SessionBusyError,
    SessionClosedError,
    SessionConcurrencyError,
    SessionError,
    SessionFailedError,
    SessionLimitError,
    SessionNotFoundError,
    SessionRateLimitError,
    SessionSecurityError,
    SessionStoreError,
    SessionThrottledError,
)
from ._args import ArgumentError, converter
from ._jsonrpc import RequestId, TransportError, encode_json
from ._protocol import SERVER_INFO, SERVER_INFO_KEY, STATELESS_MEMBERS
from ._results import UpdateResult
from ._schema import object_schema

logger = logging.getLogger("triact.transport")

SessionUse = Literal["none", "required", "optional"]


@attrs.frozen
class Tool:
    """One tool: its definition, and the functions that carry it out.

    ``run`` is called as ``run(env, args)`` when ``session`` is "none", else as
    ``run(env, session, args)`` (``session`` None for an "optional" tool without one),
    with ``env`` the connection's :class:`ToolEnv` and ``args`` an instance of
    ``arguments``; it returns an instance of ``result``. A ``run`` that names a session
    must make its one session call before it first suspends (the server issues the
    calls for one session in arrival order on that basis); work that must suspend
    before (a check in a thread) goes in ``prepare(args) -> args``. Errors it raises
    with a stable ``code`` attribute (:class:`ToolError`, triact's errors) become
    error results with that code.
    """

    name: str
    title: str
    description: str
    arguments: type[Any]
    result: type[Any]
    #: "required": acts on a session (the default one if session_id is left out);
    #: "optional": uses the named (or existing default) session if there is one.
    session: SessionUse
    run: Callable[..., Awaitable[Any]]
    prepare: Callable[[Any], Awaitable[Any]] | None = None
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False

    def definition(self, *, stateless: bool) -> dict[str, Any]:
        """The tools/list entry; under the stateless revision session_id is required
        (no connection-scoped default session there)."""
        input_schema = object_schema(self.arguments, closed=True, all_required=False)
        if stateless and self.session == "required":
            properties = input_schema["properties"]
            properties["session_id"] = {**properties["session_id"], "type": "string"}
            input_schema["required"] = ["session_id", *input_schema.get("required", ())]
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": input_schema,
            "outputSchema": object_schema(self.result, closed=False, all_required=True),
            "annotations": {
                "title": self.title,
                "readOnlyHint": self.read_only,
                "destructiveHint": self.destructive,
                "idempotentHint": self.idempotent,
                "openWorldHint": False,
            },
        }


def _tools_tuple(tools: Iterable[Tool]) -> tuple[Tool, ...]:
    return tuple(tools)


def _codes_tuple(codes: Iterable[str]) -> tuple[str, ...]:
    return tuple(codes)


@attrs.frozen(eq=False)
class ToolSet:
    """The tools a server offers, by name, in the order tools/list gives them, with
    the error codes their results can carry.

    ``a | b`` combines two sets: a tool of ``b`` replaces the tool of ``a`` with the
    same name, in its place; the others of ``b`` follow ``a``'s, in ``b``'s order.
    """

    tools: tuple[Tool, ...] = attrs.field(converter=_tools_tuple)
    #: Every code an error result of these tools can carry.
    error_codes: tuple[str, ...] = attrs.field(default=(), converter=_codes_tuple)
    _by_name: dict[str, Tool] = attrs.field(init=False, repr=False)
    _definitions: dict[bool, list[dict[str, Any]]] = attrs.field(
        init=False, repr=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        names = [tool.name for tool in self.tools]
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"a ToolSet names each tool once; {twice} appear more than once")
        by_name = dict(zip(names, self.tools, strict=True))
        object.__setattr__(self, "_by_name", by_name)

    def __or__(self, other: ToolSet) -> ToolSet:
        if not isinstance(other, ToolSet):
            return NotImplemented
        replacing = other._by_name
        tools = [replacing.get(tool.name, tool) for tool in self.tools]
        tools += [tool for tool in other.tools if tool.name not in self._by_name]
        codes = tuple(dict.fromkeys((*self.error_codes, *other.error_codes)))
        return ToolSet(tools, codes)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or None."""
        return self._by_name.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """The tools' names, in order."""
        return tuple(self._by_name)

    def definitions(self, *, stateless: bool) -> list[dict[str, Any]]:
        """The tools/list entries, in order (made once per era; do not modify)."""
        made = self._definitions.get(stateless)
        if made is None:
            made = self._definitions[stateless] = [
                tool.definition(stateless=stateless) for tool in self.tools
            ]
        return made


# -- errors ----------------------------------------------------------------------------


class ToolError(TransportError):
    """A tool execution error with its stable ``code``, reported as an ``isError``
    result (``details`` are added to its error object)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class InvalidArgumentsError(ToolError):
    """A tool's arguments fit its schema but are refused (no key to change, a key named
    twice, a cursor that session_list never gave, ...): code ``invalid_arguments``."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__("invalid_arguments", message, **details)


#: Every error code the session tools' results can carry (docs/mcp.md describes each),
#: from the classes that carry them.
ERROR_CODES: tuple[str, ...] = tuple(
    dict.fromkeys(
        kind.code
        for kind in (
            SessionNotFoundError,
            SessionSecurityError,
            SessionConcurrencyError,
            SessionRateLimitError,
            SessionBusyError,
            SessionLimitError,
            SessionClosedError,
            SessionStoreError,
            SessionError,
            ArgumentError,
        )
    )
)


#: What a client is told of a store's failure whose change may have been saved (the
#: error's ``applied`` is None): its details (the file, the driver's own error, maybe
#: part of a record) are the server's, and go to its log. A store that stopped
#: answering during a write (Redis killed, or past its timeout) may have committed it,
#: so it does not say that nothing changed.
STORE_FAILED = (
    "the session store failed before it confirmed this call; a change it makes "
    "may have been saved (the store stopped answering mid-way): read the session (its "
    "version) before you retry. If it goes on failing, the server's log (stderr) says why"
)
#: ... and of one the store knows it did not save (``applied`` False).
STORE_FAILED_NOT_APPLIED = (
    "the session store failed before it confirmed this call; nothing was saved, so you "
    "may retry it as it is. If it goes on failing, the server's log (stderr) says why"
)
SESSION_FAILED = (
    "the session failed and was stopped; create a new session. The server's log (stderr) says why"
)


def domain_error(exc: Exception) -> ToolError | None:
    """The tool error that reports ``exc``: one that carries a stable ``code`` (a str),
    as triact's errors do. None for anything else: a bug, which the caller reports as
    an internal error.

    A store's or a session's failure is reported by its code and a message that names
    no file, record or secret; the whole error goes to the server's log. A store's
    carries ``applied``: false if nothing of the call was saved, null if it may have
    been (see SessionStoreError)."""
    if isinstance(exc, ToolError):
        return exc
    code = getattr(exc, "code", None)
    if type(code) is not str:
        return None
    # A store's error carries its file and its driver's error; a session's crash, the
    # repr of what crashed it.
    # A work checkpoint's failure after its git commit was made names the commit.
    commit = getattr(exc, "commit", None)
    kept: dict[str, Any] = {"commit": commit} if type(commit) is str else {}
    if code == "store_error":
        logger.warning("a tool call failed (%s), reported without details: %r", code, exc)
        # (SessionStoreError's, or the work layer's WorkStoreError's: always False.)
        applied = False if getattr(exc, "applied", None) is False else None
        message = STORE_FAILED if applied is None else STORE_FAILED_NOT_APPLIED
        if kept:
            message = (
                f"the checkpoint commit {commit} was made in git and stays; in recording "
                f"the checkpoint in the session, {message}"
            )
        return ToolError(code, message, applied=applied, **kept)
    if isinstance(exc, SessionFailedError):
        logger.warning("a tool call failed (%s), reported without details: %r", code, exc)
        return ToolError(code, SESSION_FAILED)
    details: dict[str, Any] = {}
    if isinstance(exc, SessionConcurrencyError):
        details = {"expected_version": exc.expected, "actual_version": exc.actual}
    elif isinstance(exc, SessionRateLimitError | SessionThrottledError):
        details = {"retry_after": exc.retry_after}
    return ToolError(code, str(exc), **details, **kept)


#: The ``_meta`` key of an error result that holds the error object: ``{"code",
#: "message", ...details}``.
ERROR_META_KEY = "triact/error"
#: How a plain result's line ends under the stateless revision (see ToolResult.line).
_STATELESS_END = f',"isError":false{STATELESS_MEMBERS}}}}}\n'.encode()


class ToolResult:
    """A CallToolResult before encoding: its structured content (for an error, the
    error object under ``"error"``), and whether it reports an error; its text
    rendering is made when it is encoded (:meth:`line`).

    An error result carries no ``structuredContent``: the tools' output schemas
    describe their results, and clients that check ``structuredContent`` against them
    even when ``isError`` is set (the TypeScript SDK v1) would refuse the error. Its
    code is machine-readable twice: as the text block's prefix (``"<code>: <message>"``)
    and in ``_meta["triact/error"]``, the whole error object.

    ``plain``: the structured content is known to hold only JSON values a session may
    hold (string keys, finite numbers, integers within 64 bits), as the results made
    by hand from a session's state do (see :func:`success`); it is then encoded by
    orjson, about ten times faster than ``json`` (UTF-8 rather than ASCII: a value
    orjson refuses, such as a lone surrogate, takes ``json``'s way)."""

    __slots__ = ("error", "plain", "structured")

    def __init__(
        self, structured: dict[str, Any], error: bool = False, plain: bool = False
    ) -> None:
        self.structured = structured
        self.error = error
        self.plain = plain

    @property
    def code(self) -> str | None:
        """The error's stable code; None for a success."""
        return self.structured["error"]["code"] if self.error else None

    def text(self) -> str:
        """The text block: ``"<code>: <message>"`` for an error, else the structured
        content as compact JSON."""
        if self.error:
            failure = self.structured["error"]
            return f"{failure['code']}: {failure['message']}"
        return json.dumps(self.structured, ensure_ascii=False, separators=(",", ":"))

    def line(self, request_id: RequestId, *, stateless: bool) -> bytes:
        """The response carrying this result, shaped for the request's era: encoded as
        a whole message would be, but with the structured content encoded once and
        reused for the text block when they are the same JSON.

        Raises ValueError or TypeError if the content holds a value JSON cannot carry.
        """
        id_json = str(request_id) if type(request_id) is int else encode_json(request_id)
        if self.error:
            return self._error_line(id_json, stateless=stateless)
        if self.plain:
            try:
                encoded = orjson.dumps(self.structured)
            except orjson.JSONEncodeError:  # (a TypeError) encoded below instead
                pass
            else:
                # The text block is that JSON as a JSON string: orjson escapes control
                # characters, so only backslashes and quotes need escaping (the rest,
                # non-ASCII included, may stand as it is in a JSON string).
                escaped = encoded.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
                return b"".join(
                    (
                        b'{"jsonrpc":"2.0","id":',
                        id_json.encode(),
                        b',"result":{"content":[{"type":"text","text":"',
                        escaped,
                        b'"}],"structuredContent":',
                        encoded,
                        _STATELESS_END if stateless else b',"isError":false}}\n',
                    )
                )
        structured = encode_json(self.structured)
        # The text block repeats the JSON, with readable characters where it escapes.
        # Else it is ``structured`` as a JSON string: ASCII without control characters
        # (encode_json escapes those), so only backslashes and quotes need escaping.
        text = (
            encode_json(self.text())
            if "\\u" in structured
            else '"' + structured.replace("\\", "\\\\").replace('"', '\\"') + '"'
        )
        return (
            f'{{"jsonrpc":"2.0","id":{id_json},"result":{{"content":'
            f'[{{"type":"text","text":{text}}}],"structuredContent":{structured},'
            f'"isError":false{STATELESS_MEMBERS if stateless else ""}}}}}\n'
        ).encode()

    def _error_line(self, id_json: str, *, stateless: bool) -> bytes:
        meta = {ERROR_META_KEY: self.structured["error"]}
        result: dict[str, Any] = {
            "content": [{"type": "text", "text": self.text()}],
            "isError": True,
        }
        if stateless:
            result["resultType"] = "complete"
            meta[SERVER_INFO_KEY] = SERVER_INFO
        result["_meta"] = meta
        return f'{{"jsonrpc":"2.0","id":{id_json},"result":{encode_json(result)}}}\n'.encode()


def _update_result(result: UpdateResult) -> dict[str, Any]:
    # The converter copies the data's nested objects too; this result is only encoded.
    data = result.data
    copy = data.copy() if type(data) is MappingProxyType else None  # a state's: a dict's view
    return {
        "session_id": result.session_id,
        "version": result.version,
        "data": copy if type(copy) is dict else converter.unstructure(data, Mapping[str, Any]),
    }


#: Results made into their structured content by hand, to the same JSON as the
#: converter's, without its dispatch (tests/transport/test_tools.py checks both agree):
#: session_update's, every update call's.
_STRUCTURED: dict[type[Any], Callable[[Any], dict[str, Any]]] = {UpdateResult: _update_result}


def success(value: Any) -> ToolResult:
    by_hand = _STRUCTURED.get(type(value))
    if by_hand is None:
        return ToolResult(converter.unstructure(value))
    # (plain given by position: a class called with keywords makes a dict of them,
    # about 1,100 instructions in every session_update)
    return ToolResult(by_hand(value), False, True)


def failure(error: ToolError) -> ToolResult:
    return ToolResult(error.payload(), error=True)
