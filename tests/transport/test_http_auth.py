"""Bearer tokens over MCP's streamable HTTP: refusals (401 with ``WWW-Authenticate``),
principals kept apart (sessions, listing, ``Mcp-Session-Id``), the official SDK client
with a bearer header in both eras, and ``triact serve --tokens`` as a real process,
its principals kept across a restart and seen by a second process on one SQLite file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import mcp
import pytest
import trio
import trio.testing
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import triact
from triact.transport import SESSION_TOOLS, BearerTokens, HttpOptions
from triact.transport._http import CANCELS_KEPT_MAX

from ._http_server import (
    ACCEPT,
    STATELESS_META,
    http_server,
    initialize_body,
    stateless_call,
    stateless_headers,
)
from ._sdk import SERVE
from .test_routing import holding

ALICE = "alice-0123456789abcdefghij"
BOB = "bob-0123456789abcdefghijkl"
TOKENS = BearerTokens.of([("alice", ALICE), ("bob", BOB)])


def bearer(token: str) -> dict[str, str]:
    return {**ACCEPT, "authorization": f"Bearer {token}"}


@pytest.fixture
async def url(manager: triact.SessionManager) -> AsyncIterator[str]:
    async with http_server(manager, http=HttpOptions(tokens=TOKENS)) as served:
        yield served.url


class Caller:
    """Stateless (2026-07-28) tool calls over raw HTTP with one bearer token."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url, self.headers = http, url, bearer(token)
        self.ids = count(1)

    async def call(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        body = stateless_call(tool, arguments, next(self.ids))
        headers = {**self.headers, **stateless_headers("tools/call", tool)}
        answer = await self.http.post(self.url, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()["result"]
        return result


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is False, result
    content: dict[str, Any] = result["structuredContent"]
    return content


def error(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is True, result
    failure: dict[str, Any] = result["_meta"]["triact/error"]
    return failure


async def test_a_request_without_a_valid_token_gets_401_and_a_challenge(url: str) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": STATELESS_META}}
    async with httpx.AsyncClient() as http:
        for headers, status, challenge in [
            (ACCEPT, 401, 'Bearer realm="triact"'),
            ({**ACCEPT, "authorization": "Basic YWxpY2U6eA=="}, 401, 'Bearer realm="triact"'),
            (bearer(ALICE + "x"), 401, 'Bearer realm="triact", error="invalid_token"'),
            (
                {**ACCEPT, "authorization": "Bearer"},
                400,
                'Bearer realm="triact", error="invalid_request"',
            ),
        ]:
            refused = await http.post(url, json=ping, headers=headers)
            assert refused.status_code == status
            assert refused.headers["www-authenticate"].startswith(challenge)
            body = refused.json()
            assert body["jsonrpc"] == "2.0"
            assert body["id"] is None
            assert body["error"]["code"] == -32600
            assert ALICE not in refused.text
        # Every method is authenticated before anything else is looked at.
        assert (await http.get(url, headers=ACCEPT)).status_code == 401
        assert (await http.delete(url, headers=ACCEPT)).status_code == 401
        assert (await http.post(url, content=b"{not json", headers=ACCEPT)).status_code == 401
        headers = {**bearer(ALICE), **stateless_headers("tools/list")}
        listed = await http.post(url, json=ping, headers=headers)
        assert listed.status_code == 200
        assert len(listed.json()["result"]["tools"]) == len(SESSION_TOOLS)


async def test_a_principal_cannot_reach_anothers_sessions(url: str) -> None:
    async with httpx.AsyncClient() as http:
        alice, bob = Caller(http, url, ALICE), Caller(http, url, BOB)
        sid = ok(await alice.call("session_create", topic="alice's"))["session_id"]
        bound = ok(await alice.call("session_create", bind_client=True))
        assert ok(await alice.call("session_update", session_id=sid, set={"a": 1}))["version"] == 2

        nothing = error(await bob.call("session_get", session_id="no-such-session"))
        for name, arguments in [
            ("session_get", {}),
            ("session_update", {"set": {"stolen": True}}),
            ("session_set_working_directory", {"path": "/"}),
            ("session_get_working_directory", {}),
            ("session_add_thread", {"name": "t"}),
            ("session_record_analysis", {"prompt": "p", "responses": ["r"]}),
            ("session_stats", {}),
            ("session_end", {}),
        ]:
            refused = error(await bob.call(name, session_id=sid, **arguments))
            # Word for word what a session that does not exist gets.
            assert refused == {
                **nothing,
                "message": nothing["message"].replace("no-such-session", sid),
            }, name
        # Its token does not open it to another principal either.
        refused = error(
            await bob.call("session_get", session_id=bound["session_id"], token=bound["token"])
        )
        assert refused["code"] == "not_found"

        listed = ok(await bob.call("session_list"))
        assert (listed["sessions"], listed["total"]) == ([], 0)
        own = ok(await alice.call("session_list", tokens=[bound["token"]]))
        assert [s["session_id"] for s in own["sessions"]] == [sid, bound["session_id"]]

        state = ok(await alice.call("session_get", session_id=sid))["session"]
        assert (state["data"], state["version"]) == ({"a": 1}, 2)
        assert ok(await alice.call("session_end", session_id=sid))["ended"] is True


async def test_one_principal_cannot_open_mcp_sessions_without_bound(
    manager: triact.SessionManager,
) -> None:
    http = HttpOptions(tokens=TOKENS, max_mcp_sessions=2)
    async with http_server(manager, http=http) as served, httpx.AsyncClient() as client:

        async def initialize(token: str) -> httpx.Response:
            return await client.post(served.url, json=initialize_body(), headers=bearer(token))

        first, second = await initialize(ALICE), await initialize(ALICE)
        assert first.status_code == second.status_code == 200
        refused = await initialize(ALICE)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == -32600
        assert "MCP sessions of this principal" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        assert "mcp-session-id" not in refused.headers
        # Bob has his own bound.
        assert (await initialize(BOB)).status_code == 200
        # An MCP session ended makes room for another.
        ended = {**bearer(ALICE), "mcp-session-id": first.headers["mcp-session-id"]}
        assert (await client.delete(served.url, headers=ended)).status_code == 200
        assert (await initialize(ALICE)).status_code == 200
        assert (await initialize(ALICE)).status_code == 429


async def test_a_principal_sees_no_server_wide_figures(url: str) -> None:
    # Bob's activity (his sessions, calls, errors) shows nowhere in what alice reads.
    async with httpx.AsyncClient() as http:
        alice, bob = Caller(http, url, ALICE), Caller(http, url, BOB)
        for _ in range(3):
            sid = ok(await bob.call("session_create"))["session_id"]
            error(await bob.call("session_update", session_id=sid, set={"triact.x": 1}))
        mine = ok(await alice.call("session_create"))["session_id"]
        stats = ok(await alice.call("session_stats", session_id=mine))
        assert stats["manager"] is None
        assert stats["session"]["session_id"] == mine
        assert ok(await alice.call("session_stats"))["manager"] is None
        health = ok(await alice.call("health_check"))
        assert health["status"] == "ok"
        assert (health["sessions"], health["active_actors"], health["in_flight"]) == (
            None,
            None,
            None,
        )


async def test_an_mcp_session_id_belongs_to_the_principal_that_made_it(url: str) -> None:
    async with httpx.AsyncClient() as http:
        started = await http.post(url, json=initialize_body(), headers=bearer(ALICE))
        assert started.status_code == 200
        alices = {**bearer(ALICE), "mcp-session-id": started.headers["mcp-session-id"]}
        stolen = {**bearer(BOB), "mcp-session-id": started.headers["mcp-session-id"]}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(url, json=note, headers=alices)).status_code == 202

        # The handshake-era default session is alice's too.
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "session_update", "arguments": {"set": {"k": 1}}},
        }
        answer = await http.post(url, json=call, headers=alices)
        default_id = answer.json()["result"]["structuredContent"]["session_id"]

        ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
        unknown = await http.post(
            url, json=ping, headers={**bearer(BOB), "mcp-session-id": "n" * 22}
        )
        foreign = await http.post(url, json=ping, headers=stolen)
        assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())
        assert foreign.status_code == 404
        assert (await http.delete(url, headers=stolen)).status_code == 404

        bob = Caller(http, url, BOB)
        assert error(await bob.call("session_get", session_id=default_id))["code"] == "not_found"
        # Still alice's, and still open.
        assert (await http.post(url, json=ping, headers=alices)).status_code == 200
        assert (await http.delete(url, headers=alices)).status_code == 200
        assert (await http.post(url, json=ping, headers=alices)).status_code == 404


async def test_probing_anothers_mcp_session_id_leaves_no_trace(
    manager: triact.SessionManager,
) -> None:
    # Bob's requests with alice's Mcp-Session-Id do not keep her MCP session alive:
    # it expires a TTL after her own last request, however often he probes it.
    http = HttpOptions(tokens=TOKENS, session_ttl=1.0)
    async with http_server(manager, http=http) as served, httpx.AsyncClient() as client:
        started = await client.post(served.url, json=initialize_body(), headers=bearer(ALICE))
        session_id = started.headers["mcp-session-id"]
        alices = {**bearer(ALICE), "mcp-session-id": session_id}
        stolen = {**bearer(BOB), "mcp-session-id": session_id}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        assert (await client.post(served.url, json=ping, headers=alices)).status_code == 200
        last_use = trio.current_time()
        while trio.current_time() - last_use < 1.6:  # beyond the TTL
            probe = await client.post(served.url, json=ping, headers=stolen)
            assert probe.status_code == 404
            assert (await client.delete(served.url, headers=stolen)).status_code == 404
            await trio.sleep(0.2)
        expired = await client.post(served.url, json=ping, headers=alices)
        assert expired.status_code == 404
        assert "unknown or expired" in expired.json()["error"]["message"]


async def test_one_principal_cannot_take_every_request_slot(
    manager: triact.SessionManager,
) -> None:
    session_id = (await manager.create_session(principal="alice")).id
    http = HttpOptions(tokens=TOKENS, max_requests=10, max_requests_per_principal=2)
    async with http_server(manager, http=http) as served, httpx.AsyncClient(timeout=30) as client:
        body = stateless_call("session_get", {"session_id": session_id})
        headers = {**bearer(ALICE), **stateless_headers("tools/call", "session_get")}
        answers: list[httpx.Response] = []

        async def held() -> None:
            answers.append(await client.post(served.url, json=body, headers=headers))

        async with holding(manager, session_id) as release, trio.open_nursery() as nursery:
            nursery.start_soon(held)
            nursery.start_soon(held)
            with trio.fail_after(10):
                while served.app.calls_in_flight < 2:  # noqa: ASYNC110 (the server, from outside)
                    await trio.sleep(0.01)
            busy = await client.post(served.url, json=body, headers=headers)
            assert busy.status_code == 503
            assert "this principal" in busy.json()["error"]["message"]
            assert busy.headers["retry-after"] == "1"
            # Another principal is served meanwhile.
            bob = Caller(client, served.url, BOB)
            assert ok(await bob.call("health_check"))["status"] == "ok"
            release.set()
        assert [answer.status_code for answer in answers] == [200, 200]
        # Its slots are free again once its requests are done (the server's tasks may
        # finish a moment after their answers arrive).
        await trio.testing.wait_all_tasks_blocked()
        alice = Caller(client, served.url, ALICE)
        for _ in range(3):
            assert ok(await alice.call("session_get", session_id=session_id))["session"]


async def open_mcp_session(client: httpx.AsyncClient, url: str, token: str) -> dict[str, str]:
    """The headers of requests in a new MCP session opened with ``token``."""
    started = await client.post(url, json=initialize_body(), headers=bearer(token))
    return {
        **bearer(token),
        "mcp-session-id": started.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }


def increment(session_id: str, request_id: str | int) -> dict[str, Any]:
    arguments = {"session_id": session_id, "increment": {"n": 1}}
    params = {"name": "session_update", "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_one_principals_cancellations_forget_none_of_anothers(
    manager: triact.SessionManager,
) -> None:
    bobs_session = (await manager.create_session(principal="bob")).id
    alices_session = (await manager.create_session(principal="alice")).id
    async with (
        http_server(manager, http=HttpOptions(tokens=TOKENS)) as served,
        httpx.AsyncClient(timeout=30) as client,
    ):
        bob = await open_mcp_session(client, served.url, BOB)
        alice = await open_mcp_session(client, served.url, ALICE)
        for request_id in ("first", "last"):
            params = {"requestId": request_id}
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
            assert (await client.post(served.url, json=cancel, headers=bob)).status_code == 202
        # Alice's cancellations of requests that have not come, one more than are kept
        # of hers (as other processes send them on, or her own POSTs would keep them).
        for request_id in range(CANCELS_KEPT_MAX + 1):
            text = {"session": alice["mcp-session-id"], "principal": "alice", "reason": None}
            served.app.cancelled_elsewhere(json.dumps({**text, "request": request_id}))
        for request_id in ("first", "last"):
            dropped = await client.post(
                served.url, json=increment(bobs_session, request_id), headers=bob
            )
            assert dropped.status_code == 200
            assert dropped.content == b""  # cancelled: an SSE stream without an answer
        # Hers are bounded: the oldest was forgotten, the newest is kept.
        ran = await client.post(served.url, json=increment(alices_session, 0), headers=alice)
        assert ran.json()["result"]["structuredContent"]["data"] == {"n": 1}
        newest = increment(alices_session, CANCELS_KEPT_MAX)
        assert (await client.post(served.url, json=newest, headers=alice)).content == b""
    assert (await (await manager.get_session(bobs_session)).snapshot()).data == {}


@asynccontextmanager
async def sdk_client(url: str, token: str, era: str) -> AsyncIterator[mcp.Client]:
    """The official SDK's client, sending ``Authorization: Bearer token`` on every
    request (as a remote server's client configuration does)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        async with mcp.Client(transport, mode=era) as client:
            yield client


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_sdk_client_with_a_bearer_token(url: str, era: str) -> None:
    async with sdk_client(url, ALICE, era) as alice, sdk_client(url, BOB, era) as bob:
        assert [t.name for t in (await alice.list_tools()).tools] == list(SESSION_TOOLS.names)
        created = await alice.call_tool("session_create", {"topic": "sdk"})
        sid = created.structured_content["session_id"]  # type: ignore[index]
        updated = await alice.call_tool("session_update", {"session_id": sid, "set": {"a": 1}})
        assert updated.structured_content["version"] == 2  # type: ignore[index]
        refused = await bob.call_tool("session_get", {"session_id": sid})
        assert refused.is_error
        assert refused.content[0].text.startswith("not_found: ")  # type: ignore[union-attr]
        listed = await bob.call_tool("session_list", {})
        assert listed.structured_content["total"] == 0  # type: ignore[index]
        got = await alice.call_tool("session_get", {"session_id": sid})
        assert got.structured_content["session"]["data"] == {"a": 1}  # type: ignore[index]


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_sdk_client_with_a_wrong_token_is_refused(url: str, era: str) -> None:
    with pytest.raises(Exception) as refused:  # noqa: PT011 (the SDK's own error types vary)
        async with sdk_client(url, ALICE + "x", era) as client:
            await client.list_tools()
    assert "401" in repr(refused.value) or "Unauthorized" in repr(refused.value)
    assert ALICE not in repr(refused.value)


# -- triact serve --http --tokens, as a process ---------------------------------------


@asynccontextmanager
async def served(*options: str, env_home: Path) -> AsyncIterator[tuple[str, list[bytes]]]:
    """``triact serve`` with ``options`` until the block ends (then SIGTERM, exit 0);
    yields the URL it printed and its stderr so far."""
    env = {**os.environ, "HOME": str(env_home), "XDG_STATE_HOME": str(env_home / "state")}
    process = await trio.lowlevel.open_process([*SERVE, *options], stderr=subprocess.PIPE, env=env)
    try:
        assert process.stderr is not None
        seen = b""
        with trio.fail_after(30):
            while b"/mcp\n" not in seen:
                chunk = await process.stderr.receive_some(4096)
                assert chunk, seen
                seen += chunk
        found = re.search(rb"MCP over HTTP at (\S+/mcp)", seen)
        assert found is not None, seen
        yield found.group(1).decode(), [seen]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# principals of the tests\nalice {ALICE}\n\nbob {BOB}\n")
    path.chmod(0o600)
    return path


async def test_triact_serve_tokens_keeps_principals_across_processes_and_restarts(
    tmp_path: Path,
) -> None:
    tokens = token_file(tmp_path)
    store = f"sqlite:{tmp_path / 'shared.db'}"
    options = ("--http", "127.0.0.1:0", "--tokens", str(tokens), "--store", store)
    async with httpx.AsyncClient() as http:
        async with (
            served(*options, env_home=tmp_path) as (first, _),
            served(*options, env_home=tmp_path) as (second, _),
        ):
            refused = await http.post(first, json=initialize_body(), headers=ACCEPT)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == 'Bearer realm="triact"'
            sid = ok(await Caller(http, first, ALICE).call("session_create", topic="kept"))[
                "session_id"
            ]
            # The second process, on the same file, knows whose it is.
            assert (
                error(await Caller(http, second, BOB).call("session_get", session_id=sid))["code"]
                == "not_found"
            )
            got = ok(await Caller(http, second, ALICE).call("session_get", session_id=sid))
            assert got["session"]["topic"] == "kept"
            assert ok(await Caller(http, second, BOB).call("session_list"))["total"] == 0
            # So does the MCP session's record: alice's Mcp-Session-Id, from either.
            started = await http.post(first, json=initialize_body(), headers=bearer(ALICE))
            mcp_session = {"mcp-session-id": started.headers["mcp-session-id"]}
            ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
            as_bob = await http.post(second, json=ping, headers={**bearer(BOB), **mcp_session})
            assert as_bob.status_code == 404
            as_alice = await http.post(second, json=ping, headers={**bearer(ALICE), **mcp_session})
            assert as_alice.status_code == 200
        # Both stopped; a new process on the file still keeps it alice's.
        async with served(*options, env_home=tmp_path) as (again, _):
            bob = Caller(http, again, BOB)
            assert (
                error(await bob.call("session_update", session_id=sid, set={"x": 1}))["code"]
                == "not_found"
            )
            alice = Caller(http, again, ALICE)
            listed = ok(await alice.call("session_list"))
            assert [s["session_id"] for s in listed["sessions"]] == [sid]
            async with sdk_client(again, ALICE, "legacy") as client:
                got_sdk = await client.call_tool("session_get", {"session_id": sid})
                assert got_sdk.structured_content["session"]["version"] == 1  # type: ignore[index]


async def test_triact_serve_beyond_loopback_with_allow_unauthenticated(tmp_path: Path) -> None:
    options = ("--http", "0.0.0.0:0", "--allow-unauthenticated", "--store", "memory")
    async with served(*options, env_home=tmp_path) as (url, stderr):
        assert b"without authentication" in stderr[0]
        assert url.startswith("http://0.0.0.0:"), url
        local = url.replace("0.0.0.0", "127.0.0.1")
        async with httpx.AsyncClient() as http:
            body = stateless_call("health_check", {})
            headers = stateless_headers("tools/call", "health_check")
            answer = await http.post(local, json=body, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["structuredContent"]["status"] == "ok"


def run_serve(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *options, "--store", "memory"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (("--http", "0.0.0.0:8765"), "give --tokens FILE to require bearer tokens, or"),
        (("--tokens", "TOKENS"), "--tokens applies to --http only"),
        (("--allow-unauthenticated",), "--allow-unauthenticated applies to --http only"),
        (
            ("--http", "0", "--tokens", "TOKENS", "--allow-unauthenticated"),
            "--tokens and --allow-unauthenticated exclude each other",
        ),
        (("--http", "0", "--tokens", "MISSING"), "cannot read the token file"),
        (("--http", "0", "--tokens", "BAD"), "line 3: the token is shorter than 16 characters"),
        (("--http", "0", "--max-requests-per-principal", "2"), "needs --tokens"),
        (("--max-mcp-sessions", "2"), "are for the HTTP transport"),
    ],
)
def test_triact_serve_refuses_bad_auth_options(
    tmp_path: Path, options: tuple[str, ...], problem: str
) -> None:
    good = token_file(tmp_path)
    bad = tmp_path / "bad"
    bad.write_text(f"alice {ALICE}\n# next: too short\nbob shortsecret1\n")
    bad.chmod(0o600)
    paths = {"TOKENS": str(good), "MISSING": str(tmp_path / "missing"), "BAD": str(bad)}
    done = run_serve(*(paths.get(option, option) for option in options))
    assert done.returncode == 2, done.stderr
    assert problem in done.stderr
    assert done.stderr.count("\n") == 1  # one line, no traceback
    for secret in (ALICE, BOB, "shortsecret1"):
        assert secret not in done.stderr
