"""Values are validated at the boundary: a tool argument no session may hold (a number
too large for a float, an integer past 64 bits, a lone surrogate, nesting past the
limit) is refused with ``invalid_arguments`` naming its field, in every revision, and
nothing is committed: the session stays readable, restarts included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import Peer, connect, envelope, error_of
from .test_stdio import INITIALIZE, call, raw_server

DEEP = "[" * 500 + "]" * 500

UPDATE, ANALYSIS, THREAD = "session_update", "session_record_analysis", "session_add_thread"
NOT_FINITE = "number must be finite"
SURROGATE = "holds a lone surrogate"
#: id: (tool, raw JSON arguments after the session id, what the error says)
_BAD = {
    "set-overflow": (UPDATE, '"set":{"a":1e400}', f"arguments.set.a: {NOT_FINITE}"),
    "set-minus-overflow": (UPDATE, '"set":{"a":-1e999}', f"arguments.set.a: {NOT_FINITE}"),
    "increment-huge-int": (
        UPDATE,
        '"increment":{"n":1' + "0" * 400 + "}",
        "arguments.increment.n: integer out of range",
    ),
    "increment-overflow": (
        UPDATE,
        '"increment":{"n":1e400}',
        f"arguments.increment.n: {NOT_FINITE}",
    ),
    "deep": (UPDATE, '"set":{"a":' + DEEP + "}", "nested deeper than 100 levels"),
    "surrogate": (
        UPDATE,
        '"set":{"a":"x\\ud800y"}',
        f"arguments.set.a: {SURROGATE} (U+D800) at index 1",
    ),
    "surrogate-key": (
        UPDATE,
        '"set":{"\\udc00":1}',
        f'arguments.set["\\udc00"]: the key {SURROGATE}',
    ),
    "response-time": (
        ANALYSIS,
        '"prompt":"p","responses":["r"],"response_time":1e400',
        f"arguments.response_time: {NOT_FINITE}",
    ),
    "thread-name": (THREAD, '"name":"\\ud83d"', f"arguments.name: {SURROGATE}"),
}
BAD_ARGUMENTS = [pytest.param(*case, id=name) for name, case in _BAD.items()]


def raw_call(request_id: int, tool: str, session_id: str, rest: str, meta: str = "") -> bytes:
    arguments = f'{{"session_id":"{session_id}",{rest}}}'
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":'
        f'{{"name":"{tool}","arguments":{arguments}{meta}}}}}\n'
    ).encode()


async def unchanged(peer: Peer, session_id: str, **meta: Any) -> None:
    session = (await peer.ok("session_get", {"session_id": session_id}, **meta))["session"]
    assert (session["version"], session["data"], session["analyses"]) == (1, {}, [])


@pytest.mark.parametrize(("tool", "rest", "problem"), BAD_ARGUMENTS)
@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
async def test_a_bad_value_is_a_tool_error_naming_its_field(
    peer: Peer, tool: str, rest: str, problem: str, era: str
) -> None:
    stateless = era == "2026-07-28"
    meta = {"meta": envelope()} if stateless else {}
    session_id = (await peer.ok("session_create", {}, **meta))["session_id"]
    meta_json = ',"_meta":' + json.dumps(envelope()) if stateless else ""
    await peer.send_raw(raw_call(7, tool, session_id, rest, meta_json))
    error = error_of((await peer.response(7))["result"])
    assert error["code"] == "invalid_arguments"
    assert problem in error["message"]
    await unchanged(peer, session_id, **meta)


@pytest.mark.parametrize(("tool", "rest", "problem"), BAD_ARGUMENTS)
async def test_a_bad_value_is_invalid_params_before_2025_11_25(
    manager: Any, tool: str, rest: str, problem: str
) -> None:
    async with connect(manager, initialize="2025-06-18") as peer:
        session_id = (await peer.ok("session_create", {}))["session_id"]
        await peer.send_raw(raw_call(7, tool, session_id, rest))
        error = (await peer.response(7))["error"]
        assert error["code"] == -32602
        assert error["data"]["code"] == "invalid_arguments"
        assert any(problem in p for p in error["data"]["problems"]), error
        await unchanged(peer, session_id)


async def test_session_create_with_overflowing_metadata_creates_nothing(peer: Peer) -> None:
    await peer.send_raw(
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"session_create",'
        b'"arguments":{"metadata":{"t":[1e400]}}}}\n'
    )
    error = error_of((await peer.response(7))["result"])
    assert error["code"] == "invalid_arguments"
    assert "arguments.metadata.t[0]: number must be finite" in error["message"]
    assert (await peer.ok("session_list", {}))["total"] == 0


async def test_bad_values_are_refused_and_the_session_survives_a_restart(tmp_path: Path) -> None:
    """Through the real ``triact serve`` on SQLite: every bad value refused, nothing
    committed, the session readable after a restart."""
    db = tmp_path / "s.db"
    async with raw_server(tmp_path, "--store", f"sqlite:{db}") as server:
        await server.send(INITIALIZE, call(1, "session_create", {"topic": "kept"}))
        await server.receive()
        session_id = (await server.receive())["result"]["structuredContent"]["session_id"]
        for index, bad in enumerate(BAD_ARGUMENTS):
            tool, rest, problem = bad.values
            await server.send(raw_call(10 + index, str(tool), session_id, str(rest)))
            answer = await server.receive()
            assert answer["id"] == 10 + index
            error = error_of(answer["result"])
            assert (error["code"], problem in error["message"]) == ("invalid_arguments", True)
        await server.send(call(2, "session_update", {"session_id": session_id, "set": {"a": 1}}))
        assert (await server.receive())["result"]["isError"] is False
        assert await server.close_input() == 0
    async with raw_server(tmp_path, "--store", f"sqlite:{db}") as server:
        await server.send(INITIALIZE, call(1, "session_get", {"session_id": session_id}))
        await server.receive()
        session = (await server.receive())["result"]["structuredContent"]["session"]
        assert (session["topic"], session["data"], session["version"]) == ("kept", {"a": 1}, 2)
        assert await server.close_input() == 0


async def test_a_change_past_max_state_bytes_is_limit_exceeded(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with raw_server(
        tmp_path, "--store", f"sqlite:{db}", "--max-state-bytes", "3000"
    ) as server:
        await server.send(INITIALIZE, call(1, "session_create", {}))
        await server.receive()
        session_id = (await server.receive())["result"]["structuredContent"]["session_id"]
        await server.send(
            call(2, "session_update", {"session_id": session_id, "set": {"a": "x" * 1000}})
        )
        assert (await server.receive())["result"]["isError"] is False
        await server.send(
            call(3, "session_update", {"session_id": session_id, "set": {"b": "y" * 2000}})
        )
        error = error_of((await server.receive())["result"])
        assert error["code"] == "limit_exceeded"
        assert "more than its limit of 3000 (max_state_bytes)" in error["message"]
        await server.send(call(4, "session_get", {"session_id": session_id}))
        session = (await server.receive())["result"]["structuredContent"]["session"]
        assert (session["version"], sorted(session["data"])) == (2, ["a"])
        assert await server.close_input() == 0


async def test_an_increment_past_64_bits_is_invalid_arguments(peer: Peer) -> None:
    session_id = (await peer.ok("session_create", {}))["session_id"]
    await peer.ok("session_update", {"session_id": session_id, "set": {"n": 2**63 - 1}})
    error = await peer.fails("session_update", {"session_id": session_id, "increment": {"n": 1}})
    assert error["code"] == "invalid_arguments"
    assert "data.n: integer out of range" in error["message"]
    session = (await peer.ok("session_get", {"session_id": session_id}))["session"]
    assert (session["version"], session["data"]) == (2, {"n": 2**63 - 1})
