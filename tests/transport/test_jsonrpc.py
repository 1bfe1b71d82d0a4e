"""Parsing and encoding of JSON-RPC lines (``triact.transport._jsonrpc``)."""

from __future__ import annotations

import json

import pytest

from triact.transport._jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    Invalid,
    JsonRpcError,
    Notification,
    Request,
    Response,
    encode,
    error_line,
    parse_line,
    result_line,
)


def test_request_is_parsed() -> None:
    message = parse_line(b'{"jsonrpc":"2.0","id":7,"method":"ping","params":{"a":1}}')
    assert isinstance(message, Request)
    assert (message.id, message.method, message.params) == (7, "ping", {"a": 1})


def test_request_without_params_gets_empty_params() -> None:
    message = parse_line(b'{"jsonrpc":"2.0","id":"x","method":"ping"}')
    assert isinstance(message, Request)
    assert message.params == {}


def test_notification_has_no_id() -> None:
    message = parse_line(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert isinstance(message, Notification)
    assert message.method == "notifications/initialized"


@pytest.mark.parametrize(
    "line",
    [b'{"jsonrpc":"2.0","id":1,"result":{}}', b'{"jsonrpc":"2.0","id":1,"error":{"code":1}}'],
)
def test_responses_are_recognised(line: bytes) -> None:
    assert isinstance(parse_line(line), Response)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", PARSE_ERROR),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"', PARSE_ERROR),
        (b"\xff\xfe\x00garbage", PARSE_ERROR),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":NaN}}', PARSE_ERROR),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":-Infinity}}', PARSE_ERROR),
        (b"[" * 100_000 + b"]" * 100_000, PARSE_ERROR),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST),
        (b"[]", INVALID_REQUEST),
        (b'"a string"', INVALID_REQUEST),
        (b"42", INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":7}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"x","params":"bar"}', INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","method":"x"}', INVALID_REQUEST),
    ],
)
def test_unusable_lines_are_answered_with_id_null(line: bytes, code: int) -> None:
    message = parse_line(line)
    assert isinstance(message, Invalid)
    assert message.id is None
    assert message.error.code == code


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"1.0","id":3,"method":"ping"}',
        b'{"id":3,"method":"ping"}',
        b'{"jsonrpc":"2.0","id":3,"method":["ping"]}',
        b'{"jsonrpc":"2.0","id":3,"method":"ping","params":7}',
        b'{"jsonrpc":"2.0","id":3}',
    ],
)
def test_an_invalid_request_object_is_answered_with_id_null_even_with_an_id(line: bytes) -> None:
    message = parse_line(line)
    assert isinstance(message, Invalid)
    assert (message.id, message.error.code) == (None, INVALID_REQUEST)


def test_array_params_of_a_request_are_invalid_params() -> None:
    message = parse_line(b'{"jsonrpc":"2.0","id":3,"method":"ping","params":[1]}')
    assert isinstance(message, Invalid)
    assert (message.id, message.error.code) == (3, INVALID_PARAMS)


def test_array_params_of_a_notification_are_not_answered() -> None:
    assert isinstance(parse_line(b'{"jsonrpc":"2.0","method":"x","params":[1]}'), Notification)


def test_encoding_is_one_ascii_line() -> None:
    line = encode({"text": "snow\n\u2603 \ud800"})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line.isascii()
    assert json.loads(line) == {"text": "snow\n\u2603 \ud800"}


def test_encoding_refuses_nan() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode({"x": float("nan")})


def test_result_and_error_lines() -> None:
    assert json.loads(result_line(1, {})) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    error = JsonRpcError(INVALID_PARAMS, "bad", {"why": 1})
    assert json.loads(error_line(None, error)) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32602, "message": "bad", "data": {"why": 1}},
    }
