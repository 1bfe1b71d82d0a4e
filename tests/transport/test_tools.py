"""Every tool, its results and its errors, over an in-memory connection."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import triact
from triact.transport import ERROR_CODES
from triact.transport._args import converter
from triact.transport._jsonrpc import encode
from triact.transport._protocol import SERVER_INFO
from triact.transport._results import UpdateResult, WorkingDirectoryResult, update_result
from triact.transport._tools import ToolResult, success
from triact.work import WORK_ERROR_CODES

from .conftest import Peer, connect, envelope, serving


async def create(peer: Peer, **arguments: Any) -> dict[str, Any]:
    result: dict[str, Any] = await peer.ok("session_create", arguments)
    return result


async def test_create_returns_the_session(peer: Peer) -> None:
    created = await create(peer, topic="review", metadata={"k": [1]}, project_id="p")
    session = created["session"]
    assert created["token"] is None
    assert session["session_id"] == created["session_id"]
    assert (session["topic"], session["metadata"], session["project_id"]) == (
        "review",
        {"k": [1]},
        "p",
    )
    assert (session["version"], session["bound"], session["data"]) == (1, False, {})


async def test_get_update_and_text_rendering(peer: Peer) -> None:
    session_id = (await create(peer))["session_id"]
    result = await peer.call(
        "session_update", {"session_id": session_id, "set": {"a": {"b": [1, 2]}, "c": "x"}}
    )
    assert result["structuredContent"] == {
        "session_id": session_id,
        "version": 2,
        "data": {"a": {"b": [1, 2]}, "c": "x"},
    }
    assert result["content"][0]["type"] == "text"
    assert '"version":2' in result["content"][0]["text"]
    got = await peer.ok("session_get", {"session_id": session_id})
    assert got["session"]["data"] == {"a": {"b": [1, 2]}, "c": "x"}
    assert got["session"]["version"] == 2


async def test_update_set_increment_delete_at_once(peer: Peer) -> None:
    session_id = (await create(peer))["session_id"]
    await peer.ok("session_update", {"session_id": session_id, "set": {"n": 1, "gone": True}})
    result = await peer.ok(
        "session_update",
        {
            "session_id": session_id,
            "increment": {"n": 2, "f": 0.5},
            "delete": ["gone", "never-there"],
            "set": {"s": "t"},
        },
    )
    assert result["data"] == {"n": 3, "f": 0.5, "s": "t"}
    assert result["version"] == 3


async def test_expected_version_conflict_changes_nothing(peer: Peer) -> None:
    session_id = (await create(peer))["session_id"]
    ok = await peer.ok(
        "session_update", {"session_id": session_id, "set": {"a": 1}, "expected_version": 1}
    )
    assert ok["version"] == 2
    error = await peer.fails(
        "session_update", {"session_id": session_id, "set": {"a": 2}, "expected_version": 1}
    )
    assert error["code"] == "conflict"
    assert (error["expected_version"], error["actual_version"]) == (1, 2)
    assert session_id in error["message"]
    got = await peer.ok("session_get", {"session_id": session_id})
    assert (got["session"]["version"], got["session"]["data"]) == (2, {"a": 1})


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({}, "at least one key"),
        ({"set": {"a": 1}, "delete": ["a"]}, "more than once"),
    ],
)
async def test_update_refuses_meaningless_changes(
    peer: Peer, arguments: dict[str, Any], fragment: str
) -> None:
    error = await peer.fails("session_update", arguments)
    assert error["code"] == "invalid_arguments"
    assert fragment in error["message"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"set": {"triact.work": {"schema": 1, "trust": []}}},
        {"set": {"ok": 1, "triact.anything": 1}},
        {"increment": {"triact.count": 1}},
        {"delete": ["triact.work"]},
    ],
)
async def test_update_refuses_the_keys_reserved_for_triact(
    peer: Peer, arguments: dict[str, Any]
) -> None:
    before = (await peer.ok("session_get"))["session"]["version"]
    error = await peer.fails("session_update", arguments)
    assert error["code"] == "invalid_arguments"
    assert "reserved for triact's own layers" in error["message"]
    session = (await peer.ok("session_get"))["session"]
    assert (session["version"], session["data"]) == (before, {})


async def test_increment_of_a_non_number_changes_nothing(peer: Peer) -> None:
    await peer.ok("session_update", {"set": {"s": "text"}})
    error = await peer.fails("session_update", {"increment": {"s": 1}, "set": {"other": 1}})
    assert error["code"] == "invalid_arguments"
    assert "cannot be incremented" in error["message"]
    session = (await peer.ok("session_get"))["session"]
    assert (session["version"], session["data"]) == (2, {"s": "text"})


async def test_increment_overflow_is_refused(peer: Peer) -> None:
    await peer.ok("session_update", {"set": {"x": 1e308}})
    assert (await peer.fails("session_update", {"increment": {"x": 1e308}}))["code"] == (
        "invalid_arguments"
    )


async def test_working_directory(peer: Peer, tmp_path: Path) -> None:
    assert (await peer.ok("session_get_working_directory"))["working_directory"] is None
    result = await peer.ok("session_set_working_directory", {"path": str(tmp_path / ".")})
    assert result["working_directory"] == str(tmp_path)
    got = await peer.ok("session_get_working_directory")
    assert (got["working_directory"], got["version"]) == (str(tmp_path), result["version"])


@pytest.mark.parametrize("path", ["relative/dir", "/no/such/directory/anywhere"])
async def test_working_directory_must_be_an_existing_absolute_dir(peer: Peer, path: str) -> None:
    error = await peer.fails("session_set_working_directory", {"path": path})
    assert error["code"] == "invalid_arguments"


async def test_create_with_a_bad_working_directory(peer: Peer) -> None:
    error = await peer.fails("session_create", {"working_directory": "relative"})
    assert error["code"] == "invalid_arguments"


async def test_threads(peer: Peer) -> None:
    result = await peer.ok("session_add_thread", {"name": "critic", "system_prompt": "Be harsh."})
    assert result["thread"]["name"] == "critic"
    assert result["thread"]["system_prompt"] == "Be harsh."
    assert result["thread_count"] == 1
    error = await peer.fails("session_add_thread", {"name": "critic"})
    assert error["code"] == "invalid_arguments"
    assert "already has a thread named 'critic'" in error["message"]


async def test_record_analysis_by_name_or_list(peer: Peer) -> None:
    by_name = await peer.ok(
        "session_record_analysis",
        {"prompt": "p", "responses": {"critic": "bad", "fan": "good"}, "response_time": 1.5},
    )
    assert by_name["analysis"]["responses"] == {"critic": "bad", "fan": "good"}
    assert by_name["analysis"]["response_time"] == 1.5
    listed = await peer.ok("session_record_analysis", {"prompt": "q", "responses": ["a", "b"]})
    assert listed["analysis"]["responses"] == {"response_1": "a", "response_2": "b"}
    assert listed["analysis_count"] == 2


async def test_end_then_not_found(peer: Peer) -> None:
    session_id = (await create(peer))["session_id"]
    ended = await peer.ok("session_end", {"session_id": session_id})
    assert ended["ended"] is True
    assert ended["session"]["session_id"] == session_id
    error = await peer.fails("session_get", {"session_id": session_id})
    assert error["code"] == "not_found"
    assert session_id in error["message"]


async def test_default_session_is_created_once_and_reused(peer: Peer) -> None:
    first = await peer.ok("session_update", {"increment": {"n": 1}})
    second = await peer.ok("session_update", {"increment": {"n": 1}})
    assert first["session_id"] == second["session_id"]
    assert second["data"] == {"n": 2}
    same = await peer.ok("session_get", {"session_id": first["session_id"]})
    assert same["session"]["data"] == {"n": 2}


async def test_ending_the_default_session_makes_a_new_one_on_next_use(peer: Peer) -> None:
    old = (await peer.ok("session_get"))["session"]["session_id"]
    await peer.ok("session_end")
    new = (await peer.ok("session_get"))["session"]["session_id"]
    assert new != old
    listed = await peer.ok("session_list")
    assert listed["default_session_id"] == new


async def test_concurrent_first_calls_share_one_default_session(peer: Peer) -> None:
    messages = [peer.call_message("session_update", {"increment": {"n": 1}}) for _ in range(20)]
    for message in messages:
        await peer.send(message)
    results = [(await peer.response(m["id"]))["result"] for m in messages]
    assert len({r["structuredContent"]["session_id"] for r in results}) == 1
    assert (await peer.ok("session_get"))["session"]["data"] == {"n": 20}


async def test_stateless_calls_need_a_session_id(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        error = await peer.fails("session_get", {}, meta=envelope())
        assert error["code"] == "invalid_arguments"
        assert "session_id" in error["message"]
        created = await peer.ok("session_create", {}, meta=envelope())
        got = await peer.ok("session_get", {"session_id": created["session_id"]}, meta=envelope())
        assert got["session"]["version"] == 1
        stats = await peer.ok("session_stats", {}, meta=envelope())
        assert stats["session"] is None


async def test_bound_sessions_need_their_token(peer: Peer) -> None:
    created = await create(peer, bind_client=True, topic="secret")
    session_id, token = created["session_id"], created["token"]
    assert token
    assert created["session"]["bound"] is True
    missing = await peer.fails("session_get", {"session_id": session_id})
    wrong = await peer.fails("session_get", {"session_id": session_id, "token": "wrong"})
    assert missing["code"] == wrong["code"] == "unauthorized"
    for tool, extra in [
        ("session_get", {}),
        ("session_update", {"set": {"a": 1}}),
        ("session_add_thread", {"name": "t"}),
        ("session_get_working_directory", {}),
    ]:
        await peer.ok(tool, {"session_id": session_id, "token": token, **extra})
    failed = (await peer.ok("session_get", {"session_id": session_id, "token": token}))["session"]
    assert [event["kind"] for event in failed["security_events"]] == [
        "missing_token",
        "invalid_token",
    ]
    listed = await peer.ok("session_list", {"tokens": [token]})
    summary = next(s for s in listed["sessions"] if s["session_id"] == session_id)
    assert summary["bound"] is True
    assert summary["topic"] == "secret"


async def test_wrong_tokens_never_lock_out_the_owner_nor_move_the_version(peer: Peer) -> None:
    created = await create(peer, bind_client=True)
    owner = {"session_id": created["session_id"], "token": created["token"]}
    for _ in range(5):  # security_max_failures
        await peer.fails("session_update", {**owner, "token": "wrong", "set": {"a": 1}})
    throttled = await peer.fails("session_get", {**owner, "token": "wrong"})
    assert throttled["code"] == "unauthorized"
    assert throttled["retry_after"] == pytest.approx(300.0, abs=5.0)
    assert "still accepted" in throttled["message"]
    updated = await peer.ok("session_update", {**owner, "set": {"a": 2}, "expected_version": 1})
    assert (updated["version"], updated["data"]) == (2, {"a": 2})
    session = (await peer.ok("session_get", owner))["session"]
    assert [event["kind"] for event in session["security_events"]] == [
        *["invalid_token"] * 5,
        "throttled",
    ]
    stats = await peer.ok("session_stats", owner)
    assert stats["manager"]["security_failures"] == 6


async def test_a_bound_sessions_token_is_checked_in_the_same_actor_call(peer: Peer) -> None:
    created = await create(peer, bind_client=True)
    arguments = {"session_id": created["session_id"], "token": created["token"]}
    for _ in range(3):
        await peer.ok("session_update", {**arguments, "increment": {"n": 1}})
    stats = await peer.ok("session_stats", arguments)
    # session_create's snapshot and the three updates; with a separate token check
    # per tool call it was 8 (and the stats call's own check).
    assert stats["session"]["operations"] == 4


async def test_list_pages_with_a_cursor(peer: Peer) -> None:
    ids = [(await create(peer, topic=f"t{i}"))["session_id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        arguments: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            arguments["cursor"] = cursor
        page = await peer.ok("session_list", arguments)
        assert page["total"] == 7
        seen += [s["session_id"] for s in page["sessions"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3


async def test_list_cursor_survives_ended_sessions(peer: Peer) -> None:
    ids = [(await create(peer))["session_id"] for _ in range(6)]
    first = await peer.ok("session_list", {"limit": 3})
    await peer.ok("session_end", {"session_id": ids[0]})
    second = await peer.ok("session_list", {"limit": 3, "cursor": first["next_cursor"]})
    assert [s["session_id"] for s in second["sessions"]] == ids[3:]


async def test_list_shows_a_caller_only_the_sessions_it_may_use(peer: Peer) -> None:
    unbound = (await create(peer, topic="open"))["session_id"]
    mine = await create(peer, bind_client=True, topic="mine")
    theirs = await create(peer, bind_client=True, topic="theirs")

    listed = await peer.ok("session_list")
    assert [s["session_id"] for s in listed["sessions"]] == [unbound]
    assert listed["total"] == 1
    assert mine["session_id"] not in json.dumps(listed)
    assert theirs["session_id"] not in json.dumps(listed)

    listed = await peer.ok("session_list", {"tokens": [mine["token"], "not a token"]})
    assert [(s["session_id"], s["topic"], s["bound"]) for s in listed["sessions"]] == [
        (unbound, "open", False),
        (mine["session_id"], "mine", True),
    ]
    assert listed["total"] == 2
    assert theirs["session_id"] not in json.dumps(listed)

    both = [mine["token"], theirs["token"]]
    first = await peer.ok("session_list", {"tokens": both, "limit": 2})
    rest = await peer.ok("session_list", {"tokens": both, "cursor": first["next_cursor"]})
    assert [s["session_id"] for s in first["sessions"] + rest["sessions"]] == [
        unbound,
        mine["session_id"],
        theirs["session_id"],
    ]
    assert (first["total"], rest["next_cursor"]) == (3, None)

    # a token that opens no session is no refusal: nothing recorded, nothing changed
    arguments = {"session_id": theirs["session_id"], "token": theirs["token"]}
    state = (await peer.ok("session_get", arguments))["session"]
    assert (state["version"], state["security_events"]) == (1, [])


async def test_list_takes_at_most_100_tokens(peer: Peer) -> None:
    error = await peer.fails("session_list", {"tokens": ["t"] * 101})
    assert error["code"] == "invalid_arguments"
    assert "tokens" in error["message"]


async def test_listing_keeps_no_session_alive(autojump_clock: object) -> None:
    async with serving(idle_ttl=100.0) as (_, peer):
        await create(peer)
        for _ in range(30):
            await trio.sleep(5.0)
            listed = await peer.ok("session_list")
        assert listed["total"] == 0  # expired at 100 s, listed or not


async def test_list_refuses_a_made_up_cursor(peer: Peer) -> None:
    error = await peer.fails("session_list", {"cursor": "not-a-cursor"})
    assert error["code"] == "invalid_arguments"


async def test_stats(peer: Peer) -> None:
    none_yet = await peer.ok("session_stats")
    assert none_yet["session"] is None
    await peer.ok("session_update", {"set": {"a": 1}})
    stats = await peer.ok("session_stats")
    assert stats["manager"]["sessions"] == 1
    assert stats["manager"]["store"] == "memory"
    assert stats["session"]["version"] == 2
    assert stats["session"]["operations"] >= 1


async def test_health_check(peer: Peer) -> None:
    health = await peer.ok("health_check")
    assert health["status"] == "ok"
    assert health["version"] == triact.__version__
    assert health["protocol_versions"][0] == "2026-07-28"
    assert health["in_flight"] == 1


async def test_session_limit() -> None:
    config = triact.SessionConfig(max_sessions=1)
    async with (
        triact.open_session_manager(config) as small,
        connect(small, initialize="2025-11-25") as peer,
    ):
        await create(peer)
        assert (await peer.fails("session_create"))["code"] == "limit_exceeded"


# -- argument errors, per revision ---------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (
            {"expected_version": "3", "set": {"a": 1}},
            "arguments.expected_version: expected an integer",
        ),
        ({"set": [1]}, "arguments.set: expected an object"),
        ({"delete": "abc"}, "arguments.delete: expected an array of strings"),
        ({"increment": {"n": "1"}}, "arguments.increment['n']: expected a number"),
        ({"sett": {"a": 1}}, "unknown field(s) sett"),
        ({"expected_version": 0, "set": {"a": 1}}, "arguments.expected_version: must be >= 1"),
    ],
)
async def test_bad_arguments_are_tool_errors_from_2025_11_25(
    peer: Peer, arguments: dict[str, Any], fragment: str
) -> None:
    error = await peer.fails("session_update", arguments)
    assert error["code"] == "invalid_arguments"
    assert fragment in error["message"]


@pytest.mark.parametrize("version", ["2024-11-05", "2025-06-18"])
async def test_bad_arguments_are_invalid_params_before_2025_11_25(
    manager: triact.SessionManager, version: str
) -> None:
    async with connect(manager, initialize=version) as peer:
        response = await peer.request(
            "tools/call", {"name": "session_add_thread", "arguments": {"name": 5}}
        )
    error = response["error"]
    assert error["code"] == -32602
    assert error["data"]["code"] == "invalid_arguments"
    assert error["data"]["problems"] == ["arguments.name: expected a string, got an integer"]


async def test_bad_arguments_in_2026_are_tool_errors(manager: triact.SessionManager) -> None:
    async with connect(manager) as peer:
        error = await peer.fails("session_add_thread", {"session_id": "x"}, meta=envelope())
    assert error["message"].endswith("arguments.name: required field missing")


#: Every code a tool result of ``triact serve`` can carry.
SERVE_ERROR_CODES = tuple(dict.fromkeys((*ERROR_CODES, *WORK_ERROR_CODES)))


def test_error_codes_are_stable() -> None:
    assert SERVE_ERROR_CODES == (
        "not_found",
        "unauthorized",
        "conflict",
        "rate_limited",
        "busy",
        "limit_exceeded",
        "closed",
        "store_error",
        "session_error",
        "invalid_arguments",
        "not_a_git_repository",
        "git_failed",
        "git_timeout",
        "data_error",
        "work_error",
    )


def test_docs_describe_every_error_code_and_no_other() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "mcp.md").read_text()
    table = docs[docs.index("| Code | When |") : docs.index("Which revisions report")]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(documented) == sorted(SERVE_ERROR_CODES)


def old_encoding(
    request_id: Any, structured: dict[str, Any], *, error: bool, stateless: bool
) -> bytes:
    """The response as one dict encoded whole: what ToolResult.line must write."""
    if error:
        text = f"{structured['error']['code']}: {structured['error']['message']}"
    else:
        text = json.dumps(structured, ensure_ascii=False, separators=(",", ":"))
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if not error:  # an error's object is in _meta: output schemas describe results
        result["structuredContent"] = structured
    result["isError"] = error
    meta: dict[str, Any] = {"triact/error": structured["error"]} if error else {}
    if stateless:
        result["resultType"] = "complete"
        meta["io.modelcontextprotocol/serverInfo"] = dict(SERVER_INFO)
    if meta:
        result["_meta"] = meta
    return encode({"jsonrpc": "2.0", "id": request_id, "result": result})


@pytest.mark.parametrize("stateless", [False, True])
@pytest.mark.parametrize("request_id", [7, 'req-\u00e9"1'])
@pytest.mark.parametrize(
    "result",
    [
        ToolResult({"session_id": "s", "version": 2, "data": {"a": [1, 2.5, None, True]}}),
        ToolResult({"data": {"snow": "\u2603", "lone": "\ud800", "slash": "\\u0041"}}),
        ToolResult({"data": {'say "hi"': 'back\\slash "quoted" \\"', "tab": "a\tb\n\x00"}}),
        ToolResult(
            {"error": {"code": "conflict", "message": "at 3, not \u00e9", "actual": 3}}, error=True
        ),
    ],
    ids=["plain", "non-ascii", "quotes", "error"],
)
def test_a_result_is_encoded_as_the_whole_message_would_be(
    result: ToolResult, request_id: Any, stateless: bool
) -> None:
    line = result.line(request_id, stateless=stateless)
    assert line == old_encoding(
        request_id, result.structured, error=result.error, stateless=stateless
    )
    assert line.isascii()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(structured=st.dictionaries(st.text(), _JSON, max_size=4), stateless=st.booleans())
def test_any_result_is_encoded_as_the_whole_message_would_be(
    structured: dict[str, Any], stateless: bool
) -> None:
    # The text block of a plain result is built by escaping the structured JSON.
    line = ToolResult(structured).line(3, stateless=stateless)
    assert line == old_encoding(3, structured, error=False, stateless=stateless)


def _same_message(line: bytes, expected: bytes) -> None:
    """``line`` is ``expected`` as JSON, the text block compared as the JSON it holds."""
    got, want = json.loads(line), json.loads(expected)
    got_text = got["result"]["content"][0].pop("text")
    want_text = want["result"]["content"][0].pop("text")
    assert got == want
    assert json.loads(got_text) == json.loads(want_text)


@given(
    data=st.dictionaries(st.text(), _JSON | st.sampled_from(["\ud800", 2**64]), max_size=4),
    stateless=st.booleans(),
    request_id=st.integers(-(2**70), 2**70) | st.text(),
)
def test_a_plain_result_is_the_same_json(
    data: dict[str, Any], stateless: bool, request_id: Any
) -> None:
    # Encoded by orjson (UTF-8), or by json where orjson refuses (a lone surrogate, an
    # integer past 64 bits): either way the same message as the whole dict's encoding.
    structured = {"session_id": "s", "version": 3, "data": data}
    line = ToolResult(structured, plain=True).line(request_id, stateless=stateless)
    expected = old_encoding(request_id, structured, error=False, stateless=stateless)
    _same_message(line, expected)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    line.decode()  # UTF-8


@given(data=st.dictionaries(st.text(), _JSON, max_size=4), version=st.integers(1, 2**63 - 1))
def test_an_update_result_is_structured_as_the_converter_does(
    data: dict[str, Any], version: int
) -> None:
    result = UpdateResult("s", version, MappingProxyType(data))
    by_twin = update_result("s", version, result.data)  # what session_update returns
    assert by_twin == result
    assert type(by_twin) is UpdateResult
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        by_twin.version = 0  # type: ignore[misc]
    made = success(result)
    assert made.plain
    assert not made.error
    assert made.structured == converter.unstructure(result)
    other = WorkingDirectoryResult("s", version, None)  # through the converter
    assert not success(other).plain
    assert success(other).structured == converter.unstructure(other)


def test_a_result_json_cannot_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        ToolResult({"x": float("inf")}).line(1, stateless=False)


class CountingStore(triact.SqliteStore):
    """A SqliteStore that counts the states it loads."""

    loads = 0

    async def load(self, session_id: str) -> triact.SessionState | None:
        self.loads += 1
        return await super().load(session_id)


async def test_list_with_a_shared_store_reads_its_index_and_loads_no_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    counting = CountingStore(path)
    key = b"k" * 32
    async with (
        triact.open_session_manager(
            triact.SessionConfig(store=triact.SqliteStore(path), secret_key=key)
        ) as other,
        triact.open_session_manager(triact.SessionConfig(store=counting, secret_key=key)) as ours,
        connect(ours, initialize="2025-11-25") as peer,
    ):
        unbound = await other.create_session(topic="open")
        bound = await other.create_session(topic="bound", bind_client=True)
        await (await other.get_session(unbound.id)).update(lambda s: s)
        assert bound.token is not None
        listed = await peer.ok("session_list", {"tokens": [bound.token]})
        assert [
            (s["session_id"], s["topic"], s["version"], s["bound"]) for s in listed["sessions"]
        ] == [(unbound.id, "open", 2, False), (bound.id, "bound", 1, True)]
        listed = await peer.ok("session_list")
        assert [s["session_id"] for s in listed["sessions"]] == [unbound.id]
        assert listed["total"] == 1
        assert counting.loads == 0
