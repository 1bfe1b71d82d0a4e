"""Parsing and encoding of JSON-RPC lines (``triact.transport._jsonrpc``)."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triact.transport._jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    Invalid,
    JsonRpcError,
    Notification,
    Request,
    Response,
    _decoder,
    decode_json,
    encode,
    error_line,
    no_long_digits,
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


@pytest.mark.parametrize(
    ("member", "value", "shown"),
    [
        ("id", True, "got true"),
        ("id", None, "got null"),
        ("id", 1.5, "got 1.5"),
        ("id", {"a": 1}, "got an object"),
        ("id", ["x"], "got an array"),
        ("jsonrpc", "1.0", 'got "1.0"'),
        ("jsonrpc", False, "got false"),
        ("jsonrpc", "Bearer " + "t" * 40, "got a string"),
        ("jsonrpc", ["2.0"] * 100_000, "got an array"),
    ],
)
def test_a_refused_id_or_jsonrpc_is_quoted_as_json_or_named_by_its_kind(
    member: str, value: object, shown: str
) -> None:
    """What the client sent is quoted as JSON, not as Python writes it (True,
    None), and only when short: an object, an array or a long string (megabytes, or a
    credential in the wrong member) is named by its kind."""
    line = json.dumps({"jsonrpc": "2.0", "method": "ping", "id": 1, member: value}).encode()
    message = parse_line(line)
    assert isinstance(message, Invalid)
    assert message.error.code == INVALID_REQUEST
    assert message.error.message.endswith(shown), message.error.message
    assert len(message.error.message) < 120


def test_a_number_of_too_many_digits_is_a_parse_error_saying_so() -> None:
    message = parse_line(b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}')
    assert isinstance(message, Invalid)
    assert (message.id, message.error.code) == (None, PARSE_ERROR)
    digits = sys.get_int_max_str_digits()
    assert message.error.message == f"Parse error: a number has more than {digits} digits"


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


# -- decode_json: orjson first, json's value or error in every case -------------------


def _json_reading(line: bytes) -> object:
    """What the standard json module makes of ``line`` (the value, or the error)."""
    try:
        return ("value", _decoder.decode(line.decode("utf-8")))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return ("error", type(exc), str(exc))


def _decode_reading(line: bytes) -> object:
    try:
        return ("value", decode_json(line))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc), str(exc))


def _typed(value: object) -> object:
    """``value`` with each number's type kept (1 == 1.0 == True in Python); floats by
    repr, so NaN compares equal to itself."""
    if isinstance(value, dict):
        return ("dict", [(key, _typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def _same_reading(line: bytes) -> None:
    ours, theirs = _decode_reading(line), _json_reading(line)
    if ours[0] == "value" and theirs[0] == "value":
        assert _typed(ours[1]) == _typed(theirs[1]), line
    else:
        assert ours == theirs, line


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(value=_json_values, ascii_only=st.booleans())
def test_decode_json_reads_every_json_text_as_json_does(value: object, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    _same_reading(text.encode("utf-8", "surrogatepass"))


@given(
    line=st.binary(max_size=40)
    | st.text(alphabet='{}[]",:0123456789.eE+-\\u tnrfalsNI ', max_size=40).map(str.encode)
)
def test_decode_json_reads_any_bytes_as_json_does(line: bytes) -> None:
    _same_reading(line)


@pytest.mark.parametrize(
    "line",
    [
        b"18446744073709551616",  # past 64 bits: orjson would make it a float
        b"-9223372036854775809",
        b'{"n":123456789012345678901234567890}',
        b"1e400",
        b"NaN",
        b'"\\ud800"',
        b"\xef\xbb\xbf{}",
        b"[" * 2000 + b"]" * 2000,
        b"[" * 1010 + b"]" * 1010,  # orjson's limit is 1024 levels, json's lower
        b"[" * 256 + b"]" * 256,
        b'"\xff"',
        b' {"a":1,"a":2} \r',
    ],
)
def test_decode_json_edge_cases_read_as_json_does(line: bytes) -> None:
    _same_reading(line)


def _has_long_digits(data: bytes) -> bool:
    run = 0
    for byte in data:
        run = run + 1 if 48 <= byte <= 57 else 0
        if run >= 19:
            return True
    return False


@given(
    data=st.binary(max_size=200)
    | st.text(alphabet="0123456789a,", max_size=200).map(str.encode)
    | st.tuples(st.integers(0, 40), st.integers(17, 21)).map(
        lambda at: b"x" * at[0] + b"7" * at[1] + b"y"
    )
)
def test_no_long_digits_is_exact(data: bytes) -> None:
    assert no_long_digits(data) is not _has_long_digits(data)


@pytest.mark.parametrize("offset", range(6))
@pytest.mark.parametrize("digits", [18, 19, 20])
def test_a_long_number_at_any_offset_is_found(offset: int, digits: int) -> None:
    data = b'{"id":' + b" " * offset + b"9" * digits + b"}"
    assert no_long_digits(data) is (digits < 19)
    # Each line of a read checked as a whole reads as json reads it.
    ours = decode_json(data, digits_checked=no_long_digits(data))
    assert _typed(ours) == _typed(json.loads(data))


@given(value=_json_values)
def test_a_line_checked_with_its_read_reads_as_json_does(value: object) -> None:
    line = json.dumps(value).encode()
    checked = no_long_digits(line)
    try:
        ours: object = ("value", _typed(decode_json(line, digits_checked=checked)))
    except ValueError as exc:
        ours = ("error", type(exc), str(exc))
    theirs = _json_reading(line)
    assert ours == (("value", _typed(theirs[1])) if theirs[0] == "value" else theirs)  # type: ignore[index]
    if ours[0] == "value":  # type: ignore[index]
        message = b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"v":%s}}' % line
        parsed = parse_line(message, checked)
        assert type(parsed) is Request
        assert _typed(parsed.params["v"]) == ours[1]  # type: ignore[index]


def test_nesting_past_the_parsers_depth_is_a_parse_error_in_plain_words() -> None:
    parsed = parse_line(b"[" * 100_000)
    assert type(parsed) is Invalid
    assert parsed.error.code == PARSE_ERROR
    assert parsed.error.message == "Parse error: arrays or objects nested too deeply"
