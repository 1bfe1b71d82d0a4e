"""A fuzzer over message shapes: whatever arrives, the server stays up, writes only
JSON-RPC, and answers every well-formed request exactly once."""

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

# Finite floats: json.dumps writes infinity as the non-JSON token Infinity, which the
# server rightly refuses as a parse error (tests/transport/test_jsonrpc.py).
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
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
tool_calls = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["session_get", "session_update", "health_check", "nope"]),
        "arguments": st.dictionaries(
            st.sampled_from(["session_id", "set", "increment", "delete", "x"]),
            json_values,
            max_size=3,
        )
        | json_values,
    }
)
params = st.one_of(
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    tool_calls,
    st.just({"_meta": envelope()}),
    st.builds(lambda call: {**call, "_meta": envelope()}, tool_calls),
    st.just({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "f"}}),
    json_values,
)
# Well-formed requests get unique ids (filled in later); anything else goes.
ids = st.one_of(st.just("UNIQUE"), json_values)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["request", "object", "junk"]))
    if kind == "junk":
        raw = draw(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
        return raw.replace(b"\n", b" ")
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
    return json.dumps(message).encode()


def well_formed_request(message: Any) -> bool:
    return (
        type(message) is dict
        and message.get("jsonrpc") == "2.0"
        and type(message.get("id")) in (str, int)
        and type(message.get("method")) is str
        and (type(message.get("params")) is dict or "params" not in message)
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(messages(), max_size=15))
async def test_every_well_formed_request_gets_one_answer(lines: list[bytes]) -> None:
    counter = itertools.count()
    sent = []
    for line in lines:
        if b'"UNIQUE"' in line:
            line = line.replace(b'"UNIQUE"', f'"u{next(counter)}"'.encode())
        sent.append(line)
    expected: dict[Any, int] = {}
    for line in sent:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if well_formed_request(message) and message.get("result") is None:
            expected[message["id"]] = expected.get(message["id"], 0) + 1
    async with triact.open_session_manager() as manager, connect(manager) as peer:
        await peer.send_raw(b"".join(line + b"\n" for line in sent))
        await trio.testing.wait_all_tasks_blocked()  # every call has been answered
        await peer.send({"jsonrpc": "2.0", "id": "final", "method": "ping"})
        answers = await read_until_final(peer)
    for message_id, count in expected.items():
        if isinstance(message_id, str) and message_id.startswith("u"):
            assert answers.get(message_id, 0) == count, (message_id, answers)
    assert answers["final"] == 1


async def read_until_final(peer: Peer) -> dict[Any, int]:
    """Counts of responses by id, up to the answer to the final ping."""
    answers: dict[Any, int] = {}
    while True:
        message = await peer.receive()
        assert message["jsonrpc"] == "2.0"
        if "method" in message:
            assert message["method"] in ("notifications/progress", "notifications/message")
            continue
        assert ("result" in message) != ("error" in message)
        assert message["id"] is None or type(message["id"]) in (str, int)
        answers[message["id"]] = answers.get(message["id"], 0) + 1
        if message["id"] == "final":
            return answers
