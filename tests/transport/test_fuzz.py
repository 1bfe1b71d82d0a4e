"""A fuzzer over message shapes: whatever arrives, in whatever pieces, the server stays
up, writes only JSON-RPC, answers every well-formed request exactly once and never with
an internal error, and commits nothing a session cannot read back.

Besides random shapes it draws each class of hostile input found once, so that the next
one of each kind is caught too: numbers too large for a float or for 64 bits, nesting
near and past the limits, lone surrogates, lines near and past the size bound sent in
small pieces, batches, and log levels of the wrong type."""

from __future__ import annotations

import itertools
import json
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import triact

from .conftest import Peer, connect, envelope

LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
#: The fuzzed server's line bound, small enough that lines reach it often.
MAX_LINE = 20_000

# Finite floats: json.dumps writes infinity as the non-JSON token Infinity, which the
# server rightly refuses as a parse error (tests/transport/test_jsonrpc.py). Numbers JSON
# can write but a float cannot hold come in as RAW tokens below.
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
#: Text that is not valid Unicode (json.dumps writes lone surrogates as escapes).
lone_surrogates = st.sampled_from(["\ud800", "a\udfff", "\udc00b", "\ud83d"])
#: Raw JSON written where its placeholder string is: numbers too large for a float
#: (read as infinity) or for 64 bits, and nesting near and past the limits (the
#: sessions' 100 levels, the parser's recursion limit).
RAW = {
    f"\x00raw{index}": token
    for index, token in enumerate(
        [
            "1e400",
            "-1e400",
            "1" + "0" * 400,
            "-9223372036854775809",
            "18446744073709551616",
            "1e-400",
            *("[" * depth + "]" * depth for depth in (98, 99, 100, 101, 500, 2000)),
            '{"a":' * 150 + "1" + "}" * 150,
        ]
    )
}
raw_values = st.sampled_from(list(RAW))
raw_numbers = st.sampled_from(list(RAW)[:6])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | finite_floats
    | st.text(max_size=8)
    | lone_surrogates
    | raw_values,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5) | lone_surrogates, inner, max_size=3)
    ),
    max_leaves=8,
)
methods = st.sampled_from(
    [
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "logging/setLevel",
        "server/discover",
        "notifications/initialized",
        "resources/list",
        "",
    ]
) | st.text(max_size=12)
tool_names = st.sampled_from(
    [
        "session_get",
        "session_update",
        "session_create",
        "session_record_analysis",
        "session_add_thread",
        "health_check",
        "nope",
    ]
)
argument_names = st.sampled_from(
    [
        "session_id",
        "set",
        "increment",
        "delete",
        "metadata",
        "topic",
        "prompt",
        "responses",
        "response_time",
        "name",
        "x",
    ]
)
tool_calls = st.fixed_dictionaries(
    {
        "name": tool_names,
        "arguments": st.dictionaries(argument_names, json_values, max_size=3) | json_values,
    }
)
log_levels = st.sampled_from(["debug", "warning", "loud"]) | json_values
params = st.one_of(
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    tool_calls,
    st.just({"_meta": envelope()}),
    st.builds(lambda call: {**call, "_meta": envelope()}, tool_calls),
    st.builds(
        lambda call, level: {**call, "_meta": envelope(**{LOG_LEVEL_KEY: level})},
        tool_calls,
        log_levels,
    ),
    st.builds(lambda level: {"level": level}, log_levels),
    st.just({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "f"}}),
    json_values,
)
# Well-formed requests get unique ids (filled in later); anything else goes.
ids = st.one_of(st.just("UNIQUE"), json_values)


def encode(value: Any) -> bytes:
    """``value`` as one line of JSON, with the RAW tokens in place of their placeholders."""
    line = json.dumps(value)
    for placeholder, token in RAW.items():
        line = line.replace(json.dumps(placeholder), token)
    return line.encode()


@st.composite
def message_objects(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    message: dict[str, Any] = {}
    for key, strategy in [
        ("jsonrpc", st.just("2.0") if kind == "request" else json_values),
        ("id", ids),
        ("method", methods),
        ("params", params),
        ("result", json_values),
    ]:
        if draw(st.booleans()) or (kind == "request" and key in ("jsonrpc", "method")):
            message[key] = draw(strategy)
    if message.get("method") == "notifications/cancelled":
        message["method"] = "ping"  # cancelling may rightly leave a request unanswered
    return message


numbers = raw_numbers | st.integers() | finite_floats
texts = st.text(max_size=8) | lone_surrogates
#: Arguments of the tools that commit values, shaped as the tools take them.
arguments = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "set": st.dictionaries(texts, raw_values | json_values, max_size=3),
            "increment": st.dictionaries(texts, numbers, max_size=2),
            "delete": st.lists(texts, max_size=2),
        },
    ).map(lambda args: {"tool": "session_update", **args}),
    st.fixed_dictionaries(
        {},
        optional={
            "metadata": st.dictionaries(texts, raw_values | json_values, max_size=3),
            "topic": texts,
        },
    ).map(lambda args: {"tool": "session_create", **args}),
    st.fixed_dictionaries(
        {"prompt": texts, "responses": st.lists(texts, max_size=2)},
        optional={"response_time": numbers},
    ).map(lambda args: {"tool": "session_record_analysis", **args}),
    st.fixed_dictionaries({"name": texts}).map(lambda args: {"tool": "session_add_thread", **args}),
)


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed tools/call or log level request whose values are hostile."""
    if draw(st.booleans()):
        level_params: dict[str, Any] = {"level": draw(log_levels)}
        if draw(st.booleans()):
            method, level_params = (
                "tools/list",
                {"_meta": envelope(**{LOG_LEVEL_KEY: level_params["level"]})},
            )
        else:
            method = "logging/setLevel"
        return {"jsonrpc": "2.0", "id": "UNIQUE", "method": method, "params": level_params}
    args = draw(arguments)
    tool = args.pop("tool")
    return {
        "jsonrpc": "2.0",
        "id": "UNIQUE",
        "method": "tools/call",
        "params": {"name": tool, "arguments": args},
    }


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["request", "object", "junk", "batch", "long", "call", "call"]))
    if kind == "call":
        return encode(draw(calls()))
    if kind == "junk":
        raw = draw(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
        return raw.replace(b"\n", b" ")
    if kind == "batch":  # refused whole: no revision this server speaks takes batches
        return encode(draw(st.lists(message_objects("request"), max_size=3)))
    message = draw(message_objects("object" if kind == "object" else "request"))
    if kind == "long":  # near or past the line bound
        message["pad"] = "p" * draw(st.integers(MAX_LINE - 200, MAX_LINE + 200))
    return encode(message)


INITIALIZE = (
    b'{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":'
    b'"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"0"}}}'
)


def well_formed_request(message: Any) -> bool:
    return (
        type(message) is dict
        and message.get("jsonrpc") == "2.0"
        and type(message.get("id")) in (str, int)
        and type(message.get("method")) is str
        and (type(message.get("params")) is dict or "params" not in message)
    )


def expected_answers(lines: list[bytes]) -> dict[Any, int]:
    """How many answers each id of a well-formed request within the bound must get."""
    expected: dict[Any, int] = {}
    for line in lines:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if len(line) > MAX_LINE or message is None or type(message) is not dict:
            continue
        if well_formed_request(message) and message.get("result") is None:
            expected[message["id"]] = expected.get(message["id"], 0) + 1
    return expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(messages(), max_size=15),
    st.booleans(),
    st.lists(st.integers(1, 4096), min_size=1, max_size=8),
)
async def test_every_well_formed_request_gets_one_answer(
    lines: list[bytes], initialize: bool, pieces: list[int]
) -> None:
    counter = itertools.count()
    sent = [INITIALIZE] if initialize else []
    for line in lines:
        if b'"UNIQUE"' in line:
            line = line.replace(b'"UNIQUE"', f'"u{next(counter)}"'.encode())
        sent.append(line)
    expected = expected_answers(sent)
    data = memoryview(b"".join(line + b"\n" for line in sent))
    async with (
        triact.open_session_manager() as manager,
        connect(manager, max_line_bytes=MAX_LINE) as peer,
    ):
        for size in itertools.cycle(pieces):  # in pieces of the drawn sizes
            if not data:
                break
            await peer.send_raw(bytes(data[:size]))
            data = data[size:]
        await trio.testing.wait_all_tasks_blocked()  # every call has been answered
        await peer.send({"jsonrpc": "2.0", "id": "final", "method": "ping"})
        answers = await read_until_final(peer)
        for session_id in manager.session_ids():  # nothing unreadable was committed
            state = await (await manager.get_session(session_id)).snapshot()
            text = triact.encode_state(state)
            text.encode("utf-8")  # valid Unicode: what every store can keep
            assert triact.decode_state(text).data == state.data
    for message_id, count in expected.items():
        if isinstance(message_id, str) and message_id.startswith("u"):
            assert answers.get(message_id, 0) == count, (message_id, answers)
    assert answers["final"] == 1


async def read_until_final(peer: Peer) -> dict[Any, int]:
    """Counts of responses by id, up to the answer to the final ping; no response may
    be an internal error (a server bug, never the client's input)."""
    answers: dict[Any, int] = {}
    while True:
        message = await peer.receive()
        assert message["jsonrpc"] == "2.0"
        if "method" in message:
            assert message["method"] in ("notifications/progress", "notifications/message")
            continue
        assert ("result" in message) != ("error" in message)
        assert message.get("error", {}).get("code") != -32603, message
        assert message["id"] is None or type(message["id"]) in (str, int)
        answers[message["id"]] = answers.get(message["id"], 0) + 1
        if message["id"] == "final":
            return answers
