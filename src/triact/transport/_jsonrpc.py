"""JSON-RPC 2.0 messages, one per line: parsing with the spec's error codes, and encoding.

Parsing never raises: a line that is not a usable message becomes an :class:`Invalid`
carrying the error to answer with, so the caller can answer every bad line and keep
serving. A line that is not JSON, or not a valid Request object, is answered with
``"id": null`` (JSON-RPC 2.0, section 5); a valid Request that MCP refuses (``params``
an array) keeps its id.
"""

from __future__ import annotations

import json
import json.encoder
import sys
from typing import Any

import orjson

#: Invalid JSON was received.
PARSE_ERROR = -32700
#: The JSON sent is not a valid request object.
INVALID_REQUEST = -32600
#: The method does not exist or is not available.
METHOD_NOT_FOUND = -32601
#: Invalid method parameters.
INVALID_PARAMS = -32602
#: Internal JSON-RPC error.
INTERNAL_ERROR = -32603
#: MCP 2026-07-28: the request's protocol version is not supported.
UNSUPPORTED_PROTOCOL_VERSION = -32022

RequestId = str | int


class TransportError(Exception):
    """Base class of the errors the transport layer raises. Each subclass carries its
    stable ``code``: a tool error's code is a str (:class:`ToolError`,
    :class:`ArgumentError`); a :class:`JsonRpcError`'s is its JSON-RPC number."""


class JsonRpcError(TransportError):
    """A request failed at the protocol level; it is answered with a JSON-RPC error
    object (``code``, ``message`` and optional ``data``)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def internal_error() -> JsonRpcError:
    """The error that answers a request the server failed on (a bug): it says no more,
    since an exception's text may hold paths or data; the server logs the traceback."""
    return JsonRpcError(
        INTERNAL_ERROR,
        "Internal error: the server failed on this request; its log (stderr) has the details",
    )


class Request:
    """A call that must be answered exactly once."""

    __slots__ = ("id", "method", "params")

    def __init__(self, id: RequestId, method: str, params: dict[str, Any]) -> None:
        self.id = id
        self.method = method
        self.params = params


class Notification:
    """A one-way message: never answered."""

    __slots__ = ("method", "params")

    def __init__(self, method: str, params: dict[str, Any] | None) -> None:
        self.method = method
        self.params = params


class Response:
    """A response from the peer; this server sends no requests, so it is unsolicited."""

    __slots__ = ("id",)

    def __init__(self, id: Any) -> None:
        self.id = id


class Invalid:
    """A line that is answered with ``error`` (``id`` is None when it could not be read)."""

    __slots__ = ("error", "id")

    def __init__(self, id: RequestId | None, error: JsonRpcError) -> None:
        self.id = id
        self.error = error


Message = Request | Notification | Response | Invalid


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_no_constants)
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
#: The C encoder json's own encoder makes for each value (None without _json).
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_ascii_string = json.encoder.encode_basestring_ascii


def encode_json(value: Any) -> str:
    """Compact JSON, ASCII only (so that any string survives, lone surrogates too).
    Raises ValueError or TypeError for a value JSON cannot carry.

    What ``_encoder.encode(value)`` returns, made as it makes it (its C encoder, with
    the same arguments, a new one per value) without its two Python frames: every
    answer is encoded here."""
    if _make_c_encoder is None or isinstance(value, str):
        return _encoder.encode(value)
    chunks = _make_c_encoder(
        {}, _encoder.default, _ascii_string, None, ":", ",", False, False, False
    )(value, 0)
    return "".join(chunks)


#: 19 digits in a row (found as 19 zeros once every digit is made a zero: a tenth of
#: the time a regular expression takes): maybe an integer past 64 bits, which orjson
#: reads as a float.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
#: Any 19 bytes in a row hold six bytes at offsets that are multiples of 3, in a row
#: among every third byte: if those never hold six digits in a row, no 19 bytes do.
_SAMPLED_DIGITS = b"0" * 6


def no_long_digits(data: bytes) -> bool:
    """Whether ``data`` has no 19 digits in a row (True), so that no line of it needs
    :func:`decode_json`'s own check (``digits_checked``). Exact both ways; meant for
    a whole read of many lines: the check costs about 9 instructions a byte, and two
    method calls that a line's own check pays for each line. Every third byte is
    looked at first (a third of the cost), and all of them only if six of those in a
    row are digits (request ids and random session ids rarely make that)."""
    return (
        data[::3].translate(_DIGITS_TO_ZERO).find(_SAMPLED_DIGITS) < 0
        or data.translate(_DIGITS_TO_ZERO).find(_LONG_DIGITS) < 0
    )


#: Brackets and braces (in strings too) past which a text is left to ``json``: nesting
#: this deep is far below its recursion limit.
_ORJSON_MAX_OPENINGS = 256


def decode_json(line: bytes, digits_checked: bool = False) -> Any:
    """The value of one JSON text, as :mod:`json` (with :data:`_decoder`) reads it.
    ``digits_checked``: the caller found no 19 digits in a row in ``line``
    (:func:`no_long_digits` of the read it is part of).

    orjson reads it first, about three times faster: every text it accepts, it reads to
    the same value as ``json``, except integers past 64 bits (it makes them floats), so
    a text with 19 digits in a row (in a number or a string) is left to ``json``; and it
    accepts nesting up to 1024 levels, where ``json`` stops at the interpreter's
    recursion limit (about 1000, less the caller's stack), so a text with more than
    :data:`_ORJSON_MAX_OPENINGS` brackets and braces is left to ``json`` too. What
    orjson refuses (NaN, lone surrogates, text that is not UTF-8 or not JSON) goes to
    ``json``, which accepts it or raises as it always has: the value or the error is
    ``json``'s in every case."""
    shallow = (  # (a line this short cannot hold more: no need to count)
        len(line) <= _ORJSON_MAX_OPENINGS
        or line.count(b"[") + line.count(b"{") <= _ORJSON_MAX_OPENINGS
    )
    # (find, not ``in``: bytes' ``in`` first tries its operand as an integer, and
    # makes and clears a TypeError for a bytes one: about 1% of a call's cost)
    if shallow and (digits_checked or line.translate(_DIGITS_TO_ZERO).find(_LONG_DIGITS) < 0):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return _decoder.decode(line.decode("utf-8"))


#: The longest value a refusal quotes back (as JSON); a longer one is named by its kind
#: (a name, by its first characters and its length: see shown_name).
SHOWN_CHARS = 40


def _shown(value: Any) -> str:
    """A value a client sent, as a refusal quotes it: as JSON (``true``, ``1.5``,
    ``"1.0"``), never as Python writes it (``True``), and by its kind alone when it is
    an object, an array or longer than a few words (an error never echoes a client's
    megabytes, nor a secret sent in the wrong member)."""
    if value is None or type(value) in (bool, int, float, str):
        text = json.dumps(value)
        if len(text) <= SHOWN_CHARS:
            return text
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds |= {dict: "an object", list: "an array"}
    return kinds.get(type(value), "a value")


def shown_name(name: str) -> str:
    """A name a client sent (a method, a tool), as an error quotes it: as it is when
    short and printable, as JSON when short, else as JSON of its first characters
    followed by its length."""
    if len(name) <= SHOWN_CHARS:
        return name if name.isprintable() else json.dumps(name)
    return f"{json.dumps(name[:SHOWN_CHARS])}... ({len(name)} characters)"


def parse_line(line: bytes, digits_checked: bool = False) -> Message:
    """Classify one line (without its newline) as a JSON-RPC message
    (``digits_checked``: see :func:`decode_json`)."""
    try:
        obj = decode_json(line, digits_checked)
    except UnicodeDecodeError:
        return Invalid(None, JsonRpcError(PARSE_ERROR, "Parse error: the line is not UTF-8 text"))
    except RecursionError:  # Python's words for it are about its own stack
        return Invalid(
            None, JsonRpcError(PARSE_ERROR, "Parse error: arrays or objects nested too deeply")
        )
    except ValueError as exc:
        reason = str(exc)
        if "integer string conversion" in reason:  # Python's words name its own setting
            reason = f"a number has more than {sys.get_int_max_str_digits()} digits"
        return Invalid(None, JsonRpcError(PARSE_ERROR, f"Parse error: {reason}"))
    if type(obj) is not dict:
        if type(obj) is list:
            return Invalid(
                None,
                JsonRpcError(
                    INVALID_REQUEST,
                    "Invalid Request: batches (JSON arrays) are not supported; "
                    "send one message per line",
                ),
            )
        return Invalid(
            None, JsonRpcError(INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
        )
    if "method" not in obj:
        if "result" in obj or "error" in obj:
            return Response(obj.get("id"))
        return Invalid(
            None,
            JsonRpcError(
                INVALID_REQUEST, "Invalid Request: neither a request (no 'method') nor a response"
            ),
        )
    has_id = "id" in obj
    request_id: RequestId | None = obj.get("id")
    # MCP: a string or an integer, never null; JSON-RPC discourages fractions.
    if has_id and type(request_id) is not str and type(request_id) is not int:
        return Invalid(
            None,
            JsonRpcError(
                INVALID_REQUEST,
                f"Invalid Request: 'id' must be a string or an integer, got {_shown(request_id)}",
            ),
        )
    if obj.get("jsonrpc") != "2.0":
        return Invalid(
            None,
            JsonRpcError(
                INVALID_REQUEST,
                f"Invalid Request: 'jsonrpc' must be \"2.0\", got {_shown(obj.get('jsonrpc'))}",
            ),
        )
    method = obj["method"]
    if type(method) is not str:
        return Invalid(
            None,
            JsonRpcError(INVALID_REQUEST, "Invalid Request: 'method' must be a string"),
        )
    params = obj.get("params")
    if params is not None and type(params) is not dict:
        if type(params) is not list:
            return Invalid(
                None,
                JsonRpcError(INVALID_REQUEST, "Invalid Request: 'params' must be an object"),
            )
        if not has_id:  # a structurally valid notification: never answered
            return Notification(method, None)
        return Invalid(
            request_id,
            JsonRpcError(INVALID_PARAMS, "Invalid params: MCP 'params' must be an object"),
        )
    if not has_id:
        return Notification(method, params)
    assert request_id is not None
    return Request(request_id, method, params if params is not None else {})


def encode(message: dict[str, Any]) -> bytes:
    """One line of compact JSON (ASCII, so any string survives), newline included.

    Raises ValueError or TypeError if ``message`` holds a value JSON cannot carry.
    """
    return encode_json(message).encode() + b"\n"


def result_line(request_id: RequestId, result: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "result": result})


def error_line(request_id: RequestId | None, error: JsonRpcError) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "error": error.to_error()})


def notification_line(method: str, params: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})
