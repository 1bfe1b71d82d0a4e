"""The HTTP transport as raw HTTP sees it: the statuses and JSON-RPC error bodies of
bad requests, MCP sessions by header, SSE, and clients that send slowly."""

from __future__ import annotations

import gc
import json
import tracemalloc
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import triact
from triact.transport import HttpOptions, ServerOptions, open_http_app

from ._http_server import (
    ACCEPT,
    MCP_NAMESPACE,
    STATELESS_META,
    Served,
    http_server,
    initialize_body,
    stateless_call,
    stateless_headers,
)
from .test_http_fuzz import ask
from .test_routing import holding

PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


@pytest.fixture
async def served(manager: triact.SessionManager) -> Any:
    http = HttpOptions(max_body_bytes=64 * 1024, allowed_origins=("https://app.example",))
    async with http_server(
        manager, options=ServerOptions(progress_interval=0.05), http=http
    ) as served:
        yield served


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def open_session(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    """Initialize an MCP session; the headers of its later requests."""
    started = await client.post(url, json=initialize_body(), headers=ACCEPT)
    assert started.status_code == 200
    assert started.headers["content-type"] == "application/json"
    assert started.json()["result"]["protocolVersion"] == "2025-11-25"
    headers = {
        **ACCEPT,
        "mcp-session-id": started.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await client.post(url, json=note, headers=headers)).status_code == 202
    return headers


def refused(response: httpx.Response, status: int, code: int) -> str:
    """The message of a refusal with this status and JSON-RPC error code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    return message


async def test_an_mcp_session_from_initialize_to_delete(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    headers = await open_session(client, served.url)
    session_id = headers["mcp-session-id"]
    assert len(session_id) >= 22  # 128 bits, URL-safe base64
    listed = await client.post(
        served.url, json={"jsonrpc": "2.0", "id": "x", "method": "tools/list"}, headers=headers
    )
    assert listed.json()["id"] == "x"
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "session_update", "arguments": {"set": {"a": 1}}},
    }
    updated = await client.post(served.url, json=call, headers=headers)
    default = updated.json()["result"]["structuredContent"]["session_id"]
    record = json.loads(await manager.store.get_record(MCP_NAMESPACE, session_id) or "{}")
    assert record["version"] == "2025-11-25"
    assert record["default_session_id"] == default

    deleted = await client.delete(served.url, headers=headers)
    assert deleted.status_code == 200
    assert await manager.store.get_record(MCP_NAMESPACE, session_id) is None
    with pytest.raises(triact.SessionNotFoundError):
        await manager.get_session(default)
    gone = await client.post(served.url, json=PING, headers=headers)
    assert "unknown or expired MCP session" in refused(gone, 404, -32600)
    assert refused(await client.delete(served.url, headers=headers), 404, -32600)


async def test_an_mcp_session_record_keeps_a_bounded_client_info(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    # Whatever clientInfo a client sends (up to the body limit), its MCP session's
    # record, kept in the store for the TTL, holds a few short strings of it.
    body = initialize_body()
    body["params"]["clientInfo"] = {
        "name": "n" * 10_000,
        "version": "1",
        "icons": [{"src": "data:image/png;base64," + "A" * 40_000}],
        "extra": {"deep": ["x" * 10_000]},
    }
    started = await client.post(served.url, json=body, headers=ACCEPT)
    assert started.status_code == 200
    text = await manager.store.get_record(MCP_NAMESPACE, started.headers["mcp-session-id"])
    assert text is not None
    assert len(text) < 1024
    assert json.loads(text)["client_info"] == {"name": "n" * 256, "version": "1"}


async def test_mcp_sessions_open_are_counted_until_they_expire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # In-process, on Trio's clock: an MCP session counts against max_mcp_sessions for a
    # TTL after its last use (its record's life), then no more.
    http = HttpOptions(max_mcp_sessions=1, session_ttl=10)
    init = [
        (b"accept", b"application/json, text/event-stream"),
        (b"content-type", b"application/json"),
    ]
    body = json.dumps(initialize_body()).encode()
    async with (
        triact.open_session_manager() as manager,
        open_http_app(manager, http=http) as app,
    ):
        status, headers, _ = await ask(app, "POST", "/mcp", init, [body])
        assert status == 200
        session = [*init, (b"mcp-session-id", headers[b"mcp-session-id"])]
        status, headers, _ = await ask(app, "POST", "/mcp", init, [body])
        assert (status, headers[b"retry-after"]) == (429, b"10")
        await trio.sleep(6)
        status, _, _ = await ask(app, "POST", "/mcp", session, [json.dumps(PING).encode()])
        assert status == 200  # used: it lives (and counts) 10 s from now
        await trio.sleep(6)
        status, _, _ = await ask(app, "POST", "/mcp", init, [body])
        assert status == 429
        await trio.sleep(5)
        status, _, _ = await ask(app, "POST", "/mcp", init, [body])
        assert status == 200


async def test_a_call_that_outlives_the_delete_of_its_mcp_session_does_not_bring_it_back(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    headers = await open_session(client, served.url)
    session_id = headers["mcp-session-id"]
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "session_update", "arguments": {"set": {"a": 1}}},
    }
    updated = await client.post(served.url, json=call, headers=headers)
    default = updated.json()["result"]["structuredContent"]["session_id"]
    end = {**call, "id": 4, "params": {"name": "session_end", "arguments": {}}}
    answers: list[httpx.Response] = []

    async def post(body: dict[str, Any]) -> None:
        answers.append(await client.post(served.url, json=body, headers=headers))

    async with holding(manager, default) as release, trio.open_nursery() as nursery:
        # An end of the default session waits behind the hold; the MCP session is
        # deleted meanwhile; then the end runs, and changes what its record would say.
        nursery.start_soon(post, end)
        with trio.fail_after(10):
            while not served.app.calls_in_flight:  # noqa: ASYNC110 (the server, from outside)
                await trio.sleep(0.01)
        nursery.start_soon(partial(client.delete, served.url, headers=headers))
        with trio.fail_after(10):
            while await manager.store.get_record(MCP_NAMESPACE, session_id):  # noqa: ASYNC110
                await trio.sleep(0.01)
        release.set()
    assert answers[0].status_code == 200
    assert await manager.store.get_record(MCP_NAMESPACE, session_id) is None
    gone = await client.post(served.url, json=PING, headers=headers)
    assert "unknown or expired MCP session" in refused(gone, 404, -32600)


async def test_an_mcp_session_in_use_outlives_its_ttl_and_an_idle_one_expires(
    manager: triact.SessionManager, client: httpx.AsyncClient
) -> None:
    # Its record is read from the store (which starts its TTL again) at most every
    # half TTL while in use: often enough to keep it; idle, it expires all the same.
    async with http_server(manager, http=HttpOptions(session_ttl=1.0)) as served:
        headers = await open_session(client, served.url)
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "session_update", "arguments": {"set": {"a": 1}}},
        }
        assert (await client.post(served.url, json=call, headers=headers)).status_code == 200
        for _ in range(8):  # 2.4 s in all, beyond the TTL
            await trio.sleep(0.3)
            assert (await client.post(served.url, json=PING, headers=headers)).status_code == 200
        await trio.sleep(1.2)
        gone = await client.post(served.url, json=PING, headers=headers)
        assert "unknown or expired MCP session" in refused(gone, 404, -32600)


async def test_session_headers_are_required_and_checked(
    served: Served, client: httpx.AsyncClient
) -> None:
    missing = await client.post(served.url, json=PING, headers=ACCEPT)
    assert "no Mcp-Session-Id header" in refused(missing, 400, -32600)
    unknown = await client.post(
        served.url, json=PING, headers={**ACCEPT, "mcp-session-id": "A" * 22}
    )
    refused(unknown, 404, -32600)
    malformed = await client.post(
        served.url, json=PING, headers={**ACCEPT, "mcp-session-id": "../../etc"}
    )
    refused(malformed, 404, -32600)
    headers = await open_session(client, served.url)
    again = await client.post(served.url, json=initialize_body(), headers=headers)
    assert "without Mcp-Session-Id" in refused(again, 400, -32600)
    wrong = await client.post(
        served.url, json=PING, headers={**headers, "mcp-protocol-version": "1900-01-01"}
    )
    refused(wrong, 400, -32022)
    assert wrong.json()["error"]["data"]["requested"] == "1900-01-01"
    assert "2026-07-28" in wrong.json()["error"]["data"]["supported"]
    # Anything but a revision in its place is not quoted back (a credential, say).
    secret = await client.post(
        served.url, json=PING, headers={**headers, "mcp-protocol-version": "Bearer s3cr3t-x"}
    )
    refused(secret, 400, -32022)
    assert secret.json()["error"]["data"]["requested"] is None
    assert "s3cr3t" not in secret.text


async def test_bad_requests_get_their_status_and_a_json_rpc_error(
    served: Served, client: httpx.AsyncClient
) -> None:
    url = served.url
    json_only = await client.post(url, json=PING, headers={"accept": "application/json"})
    assert "Accept" in refused(json_only, 406, -32600)
    no_accept = await client.post(url, json=PING, headers={"accept": ""})
    refused(no_accept, 406, -32600)
    wildcard = await client.post(url, json=initialize_body(), headers={"accept": "*/*"})
    assert wildcard.status_code == 200
    text = await client.post(url, content=b"{}", headers={**ACCEPT, "content-type": "text/plain"})
    assert "application/json" in refused(text, 415, -32600)
    bad = await client.post(
        url, content=b"{not json", headers={**ACCEPT, "content-type": "application/json"}
    )
    refused(bad, 400, -32700)
    batch = await client.post(url, json=[PING, PING], headers=ACCEPT)
    assert "batches" in refused(batch, 400, -32600)
    not_rpc = await client.post(url, json={"hello": 1}, headers=ACCEPT)
    refused(not_rpc, 400, -32600)
    big = await client.post(
        url, content=b" " * (65 * 1024), headers={**ACCEPT, "content-type": "application/json"}
    )
    assert "over 65536 bytes" in refused(big, 413, -32600)
    elsewhere = await client.post(url.replace("/mcp", "/other"), json=PING, headers=ACCEPT)
    refused(elsewhere, 404, -32600)


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


@pytest.mark.parametrize("server", ["h11", "hypercorn"])
@pytest.mark.parametrize(
    ("version", "framing", "message"),
    [
        (b"1.1", b"content-length: %d\r\n", b"both Content-Length and Transfer-Encoding"),
        (b"1.0", b"", b"Transfer-Encoding in an HTTP/1.0 request"),
    ],
)
async def test_a_request_whose_framing_a_proxy_may_read_otherwise_gets_400_and_a_close(
    manager: triact.SessionManager, server: Any, version: bytes, framing: bytes, message: bytes
) -> None:
    # Hypercorn framed it as chunked and kept the connection: a proxy in front that
    # framed it by its Content-Length (or HTTP/1.0's rules) took the next request,
    # here a DELETE, for its body, and the server served it.
    body = b"0\r\n\r\n"
    smuggled = b"DELETE /mcp HTTP/1.1\r\nhost: t\r\nmcp-session-id: " + b"Q" * 22 + b"\r\n\r\n"
    if framing:
        framing %= len(body) + len(smuggled)
    head = (
        b"POST /mcp HTTP/" + version + b"\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"accept: application/json, text/event-stream\r\n" + framing
    )
    async with http_server(manager, server=server) as served:
        port = int(served.url.rsplit(":", 1)[1].split("/")[0])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head + b"transfer-encoding: chunked\r\n\r\n" + body + smuggled)
            received = await read_until_closed(stream)
    assert received.startswith(b"HTTP/1.1 400 "), received
    assert received.count(b"HTTP/1.1 ") == 1, received  # the DELETE was not served
    if server == "h11" or version == b"1.1":  # (Hypercorn refuses HTTP/1.0's itself)
        assert message in received


async def test_a_body_declared_too_large_is_refused_before_it_is_sent(served: Served) -> None:
    # Content-Length over max_body_bytes: 413 at once, not after the body (or, for a
    # client that waits for a 100 Continue, after the body timeout).
    host, port = served.url.removeprefix("http://").removesuffix("/mcp").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"accept: application/json, text/event-stream\r\n"
            b"content-length: 1000000000\r\nexpect: 100-continue\r\n\r\n"
        )
        answer = b""
        with trio.fail_after(10):  # the body timeout is 30 s
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer


async def test_get_and_other_methods_get_405_with_allow(
    served: Served, client: httpx.AsyncClient
) -> None:
    for method in ("GET", "PUT", "PATCH"):
        response = await client.request(method, served.url, headers={"accept": "text/event-stream"})
        refused(response, 405, -32600)
        assert response.headers["allow"] == "POST, DELETE"


async def test_origins(served: Served, client: httpx.AsyncClient) -> None:
    foreign = await client.post(
        served.url, json=initialize_body(), headers={**ACCEPT, "origin": "https://evil.example"}
    )
    assert "origin" in refused(foreign, 403, -32600)
    # A rebinding attack names the attacker's host in Origin, whatever the Host is.
    rebound = await client.post(
        served.url,
        json=initialize_body(),
        headers={**ACCEPT, "origin": "http://attacker.example:8765"},
    )
    refused(rebound, 403, -32600)
    for origin in ("https://app.example", "http://localhost:3000", "http://127.0.0.1"):
        allowed = await client.post(
            served.url, json=initialize_body(), headers={**ACCEPT, "origin": origin}
        )
        assert allowed.status_code == 200, origin


def preflight_allows(
    response: httpx.Response, origin: str, method: str, request_headers: list[str]
) -> bool:
    """Whether a browser takes ``response`` as letting a page of ``origin`` send
    ``method`` with ``request_headers`` (the Fetch standard's CORS-preflight check)."""
    allowed_headers = response.headers.get("access-control-allow-headers", "")
    return (
        response.is_success
        and response.headers.get("access-control-allow-origin") == origin
        and method in response.headers.get("access-control-allow-methods", "").split(", ")
        and {name.lower() for name in request_headers}
        <= {name.strip().lower() for name in allowed_headers.split(",")}
    )


async def test_a_browser_page_of_an_allowed_origin_can_call_and_read_the_answers(
    served: Served, client: httpx.AsyncClient
) -> None:
    # A page's fetch of JSON with MCP's headers is preflighted (OPTIONS), and it reads
    # an answer only with Access-Control-Allow-Origin (Mcp-Session-Id only if exposed):
    # the server answered the preflight 405 and sent neither, so no page could call it.
    for origin in ("https://app.example", "http://localhost:6274"):
        asked = ["content-type", "mcp-session-id", "mcp-protocol-version", "authorization"]
        for method in ("POST", "DELETE", "GET"):
            preflight = await client.options(
                served.url,
                headers={
                    "origin": origin,
                    "access-control-request-method": method,
                    "access-control-request-headers": ", ".join(asked),
                },
            )
            assert preflight_allows(preflight, origin, method, asked), preflight.headers
            assert preflight.headers["vary"] == "Origin"
        started = await client.post(
            served.url, json=initialize_body(), headers={**ACCEPT, "origin": origin}
        )
        assert started.status_code == 200
        assert started.headers["access-control-allow-origin"] == origin
        exposed = started.headers["access-control-expose-headers"].lower().split(", ")
        assert "mcp-session-id" in exposed
        assert started.headers["vary"] == "Origin"
        # Refusals too, so that the page can read why.
        headers = {**ACCEPT, "origin": origin, "mcp-session-id": "x" * 22}
        gone = await client.post(served.url, json=PING, headers=headers)
        refused(gone, 404, -32600)
        assert gone.headers["access-control-allow-origin"] == origin
    # Another origin's page gets no preflight, nor CORS headers on a refusal.
    preflight = await client.options(
        served.url,
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    refused(preflight, 403, -32600)
    assert "access-control-allow-origin" not in preflight.headers
    # A client that is not a browser gets none, and OPTIONS without a preflight's
    # headers is a method this endpoint does not have.
    plain = await client.post(served.url, json=initialize_body(), headers=ACCEPT)
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers
    options = await client.options(served.url, headers={"origin": "https://app.example"})
    refused(options, 405, -32600)


async def test_a_header_mismatch_quotes_a_long_body_value_cut_short(
    served: Served, client: httpx.AsyncClient
) -> None:
    long = "x" * 30_000
    body = stateless_call(long, {})
    named = await client.post(
        served.url, json=body, headers=stateless_headers("tools/call", "health_check")
    )
    said = refused(named, 400, -32020)
    assert said.endswith(f'the body\'s "{"x" * 40}"... (30000 characters)')
    older = {**body, "params": {**body["params"], "_meta": {**STATELESS_META}}}
    older["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = [long]
    version = await client.post(
        served.url, json=older, headers=stateless_headers("tools/call", "health_check")
    )
    said = refused(version, 400, -32020)
    assert said.endswith("a list")
    assert len(named.text) + len(version.text) < 2_000


async def test_stateless_requests_are_checked_against_their_headers(
    served: Served, client: httpx.AsyncClient
) -> None:
    url = served.url
    body = stateless_call("health_check", {})
    ok = await client.post(url, json=body, headers=stateless_headers("tools/call", "health_check"))
    assert ok.status_code == 200
    assert ok.json()["result"]["structuredContent"]["status"] == "ok"
    assert ok.json()["result"]["resultType"] == "complete"
    assert "mcp-session-id" not in ok.headers

    no_meta = {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {}}
    missing = await client.post(url, json=no_meta, headers=stateless_headers("tools/list"))
    assert "no params._meta" in refused(missing, 400, -32020)
    assert missing.json()["id"] == 4
    method = await client.post(url, json=body, headers=stateless_headers("tools/list"))
    assert "Mcp-Method" in refused(method, 400, -32020)
    no_name = await client.post(url, json=body, headers=stateless_headers("tools/call"))
    assert "Mcp-Name header is missing" in refused(no_name, 400, -32020)
    other = await client.post(url, json=body, headers=stateless_headers("tools/call", "x"))
    assert "value 'x' does not match the body's 'health_check'" in refused(other, 400, -32020)
    secret = await client.post(
        url, json=body, headers=stateless_headers("tools/call", "Bearer s3cr3t-x")
    )
    assert "(not a plain name) does not match" in refused(secret, 400, -32020)
    assert "s3cr3t" not in secret.text
    encoded = await client.post(
        url, json=body, headers=stateless_headers("tools/call", "=?base64?aGVhbHRoX2NoZWNr?=")
    )
    assert encoded.status_code == 200
    older = {**body, "params": {**body["params"], "_meta": {**STATELESS_META}}}
    older["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2025-11-25"
    mismatch = await client.post(
        url, json=older, headers=stateless_headers("tools/call", "health_check")
    )
    refused(mismatch, 400, -32020)
    no_header = await client.post(url, json=body, headers=ACCEPT)
    assert "MCP-Protocol-Version" in refused(no_header, 400, -32020)
    unknown = {**body, "method": "resources/list"}
    not_found = await client.post(url, json=unknown, headers=stateless_headers("resources/list"))
    refused(not_found, 404, -32601)
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    assert (await client.post(url, json=note, headers=stateless_headers("x"))).status_code == 202


async def test_mcp_headers_must_be_plain_ascii_and_single(
    served: Served, client: httpx.AsyncClient
) -> None:
    url = served.url
    # A name outside visible ASCII travels as =?base64?...?=, never as raw bytes, even
    # when those bytes, read as Latin-1, spell the body's name.
    latin = stateless_call("h\u00e9alth_check", {})
    raw = {**stateless_headers("tools/call"), "mcp-name": b"h\xe9alth_check"}
    assert "characters" in refused(await client.post(url, json=latin, headers=raw), 400, -32020)
    control = {**stateless_headers("tools/call"), "mcp-name": b"health_check\x7f"}
    body = stateless_call("health_check", {})
    refused(await client.post(url, json=body, headers=control), 400, -32020)
    # Two copies of a header: an intermediary may route on the first, this server
    # would act on the last; so neither.
    base = [(k, v) for k, v in stateless_headers("tools/call").items()]
    twice = [*base, ("mcp-name", "session_end"), ("Mcp-Name", "health_check")]
    message = refused(await client.post(url, json=body, headers=twice), 400, -32020)
    assert "Mcp-Name header appears more than once" in message
    auth = [*base, ("mcp-name", "health_check"), ("authorization", "a"), ("authorization", "b")]
    refused(await client.post(url, json=body, headers=auth), 400, -32600)
    # Headers that may repeat still may.
    again = [*base, ("mcp-name", "health_check"), ("x-trace", "1"), ("x-trace", "2")]
    assert (await client.post(url, json=body, headers=again)).status_code == 200


async def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"] == "text/event-stream"
    events = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return events


async def test_a_call_with_a_progress_token_streams_progress_then_its_answer(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    session_id = (await manager.create_session()).id
    body = stateless_call("session_get", {"session_id": session_id}, request_id=9)
    body["params"]["_meta"] = {**STATELESS_META, "progressToken": "p"}
    async with holding(manager, session_id) as release:
        headers = stateless_headers("tools/call", "session_get")
        async with client.stream("POST", served.url, json=body, headers=headers) as response:
            events = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) == 2:
                        release.set()
    assert response.headers["content-type"] == "text/event-stream"
    *progress, answer = events
    assert [event["method"] for event in progress] == ["notifications/progress"] * len(progress)
    assert [event["params"]["progress"] for event in progress][:2] == [1, 2]
    assert answer["id"] == 9
    assert answer["result"]["structuredContent"]["session"]["session_id"] == session_id


async def test_a_client_that_closes_its_request_cancels_the_call(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    session_id = (await manager.create_session()).id
    body = stateless_call("session_update", {"session_id": session_id, "set": {"a": 1}})
    async with holding(manager, session_id) as release:
        headers = stateless_headers("tools/call", "session_update")
        with trio.move_on_after(0.3):
            await client.post(served.url, json=body, headers=headers)
        with trio.fail_after(10):
            while served.app.calls_in_flight:  # noqa: ASYNC110 (the server, from outside)
                await trio.sleep(0.01)
        release.set()
    state = await (await manager.get_session(session_id)).snapshot()
    assert state.data == {}


async def test_a_client_gone_before_its_call_is_watched_still_cancels_it(
    served: Served, manager: triact.SessionManager
) -> None:
    # The client is watched only once a call has run 50 ms; one that closes its
    # connection right after sending the request is seen going away then.
    session_id = (await manager.create_session()).id
    body = json.dumps(
        stateless_call("session_update", {"session_id": session_id, "set": {"a": 1}})
    ).encode()
    head = "".join(
        f"{name}: {value}\r\n"
        for name, value in stateless_headers("tools/call", "session_update").items()
    )
    host, port = served.url.removeprefix("http://").removesuffix("/mcp").split(":")
    async with holding(manager, session_id) as release:
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + head.encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            with trio.fail_after(10):
                while not served.app.calls_in_flight:  # noqa: ASYNC110 (the server, from outside)
                    await trio.sleep(0.001)
        with trio.fail_after(10):
            while served.app.calls_in_flight:  # noqa: ASYNC110 (the server, from outside)
                await trio.sleep(0.01)
        release.set()
    state = await (await manager.get_session(session_id)).snapshot()
    assert state.data == {}


async def test_notifications_cancelled_cancels_a_call_of_the_mcp_session(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    headers = await open_session(client, served.url)
    session_id = (await manager.create_session()).id
    call = {
        "jsonrpc": "2.0",
        "id": "c",
        "method": "tools/call",
        "params": {
            "name": "session_update",
            "arguments": {"session_id": session_id, "set": {"a": 1}},
        },
    }
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "c"}}
    responses: list[httpx.Response] = []

    async def post_call() -> None:
        responses.append(await client.post(served.url, json=call, headers=headers))

    async with holding(manager, session_id) as release, trio.open_nursery() as nursery:
        nursery.start_soon(post_call)
        with trio.fail_after(10):
            while not served.app.calls_in_flight:  # noqa: ASYNC110 (the server, from outside)
                await trio.sleep(0.01)
        assert (await client.post(served.url, json=cancel, headers=headers)).status_code == 202
        with trio.fail_after(10):
            while not responses:  # noqa: ASYNC110 (the server, from outside)
                await trio.sleep(0.01)
        assert not served.app.calls_in_flight
        release.set()
    # Its request ends without an answer: an SSE stream with no message.
    (response,) = responses
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content == b""
    state = await (await manager.get_session(session_id)).snapshot()
    assert state.data == {}


async def test_a_cancellation_that_comes_before_its_request_cancels_it_when_it_comes(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    headers = await open_session(client, served.url)
    session_id = (await manager.create_session()).id

    def update(request_id: Any) -> dict[str, Any]:
        arguments = {"session_id": session_id, "increment": {"n": 1}}
        params = {"name": "session_update", "arguments": arguments}
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}

    for request_id in ("c", 7):
        params = {"requestId": request_id, "reason": "changed my mind"}
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
        assert (await client.post(served.url, json=cancel, headers=headers)).status_code == 202
    # Another MCP session's request "c", and request "7" (not 7), are not those.
    other = await open_session(client, served.url)
    ran = await client.post(served.url, json=update("c"), headers=other)
    assert ran.json()["result"]["structuredContent"]["version"] == 2
    ran = await client.post(served.url, json=update("7"), headers=headers)
    assert ran.json()["result"]["structuredContent"]["version"] == 3
    for request_id in ("c", 7):
        dropped = await client.post(served.url, json=update(request_id), headers=headers)
        assert dropped.status_code == 200
        assert dropped.headers["content-type"] == "text/event-stream"
        assert dropped.content == b""
    state = await (await manager.get_session(session_id)).snapshot()
    assert (state.version, state.data) == (3, {"n": 2})


async def test_cancellations_kept_for_later_hold_long_request_ids_as_digests(
    served: Served, client: httpx.AsyncClient, manager: triact.SessionManager
) -> None:
    # A kept cancellation held its request id whole: 10,000 of them (the bound) with
    # ids of a body's size could hold 40 GiB of a process's memory for 30 s.
    headers = await open_session(client, served.url)
    session_id = (await manager.create_session()).id
    long_id = "x" * 60_000

    def update(request_id: Any) -> dict[str, Any]:
        arguments = {"session_id": session_id, "increment": {"n": 1}}
        params = {"name": "session_update", "arguments": arguments}
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}

    def cancel(request_id: Any) -> dict[str, Any]:
        params = {"requestId": request_id}
        return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(40):
            kept = await client.post(served.url, json=cancel(f"{n}{long_id}"), headers=headers)
            assert kept.status_code == 202
        gc.collect()  # the client's requests, in reference cycles
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, held  # 40 ids of 60 kB: 2.4 MB held whole
    # They still cancel their requests when these come, and only those.
    assert (await client.post(served.url, json=cancel(10**30), headers=headers)).status_code == 202
    for request_id in (f"0{long_id}", f"39{long_id}", 10**30):
        dropped = await client.post(served.url, json=update(request_id), headers=headers)
        assert dropped.headers["content-type"] == "text/event-stream"
        assert dropped.content == b""
    ran = await client.post(served.url, json=update(f"40{long_id}"), headers=headers)
    assert ran.json()["result"]["structuredContent"]["version"] == 2
    ran = await client.post(served.url, json=update(str(10**30)), headers=headers)
    assert ran.json()["result"]["structuredContent"]["version"] == 3


async def test_a_slow_client_gets_408_and_holds_nobody_up(manager: triact.SessionManager) -> None:
    http = HttpOptions(body_timeout=0.5)
    async with http_server(manager, http=http, keep_alive=0.5) as served:
        host, port = served.url.removeprefix("http://").removesuffix("/mcp").split(":")
        # One that never finishes its request head is closed after the keep-alive time.
        head = await trio.open_tcp_stream(host, int(port))
        async with head:
            await head.send_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")
            with trio.fail_after(10):
                while await head.receive_some(4096):
                    pass
        host, port = served.url.removeprefix("http://").removesuffix("/mcp").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream, httpx.AsyncClient(timeout=30) as client:
            await stream.send_all(
                b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{"
            )
            # Meanwhile others are served.
            body = stateless_call("health_check", {})
            headers = stateless_headers("tools/call", "health_check")
            assert (await client.post(served.url, json=body, headers=headers)).status_code == 200
            reply = b""
            with trio.fail_after(10):
                while b"\r\n\r\n" not in reply:
                    reply += await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 408")


async def test_bodies_being_received_are_bounded_in_all(manager: triact.SessionManager) -> None:
    http = HttpOptions(max_body_bytes=1000, max_buffered_bytes=1500)
    async with http_server(manager, http=http) as served, httpx.AsyncClient() as client:
        body = stateless_call("health_check", {})
        body["params"]["_meta"] = {**STATELESS_META, "pad": ""}
        body["params"]["_meta"]["pad"] = "x" * (900 - len(json.dumps(body)))
        payload = json.dumps(body).encode()
        assert len(payload) == 900
        headers = {
            **stateless_headers("tools/call", "health_check"),
            "content-type": "application/json",
        }
        host, port = served.url.removeprefix("http://").removesuffix("/mcp").split(":")
        slow = await trio.open_tcp_stream(host, int(port))
        async with slow:
            await slow.send_all(
                b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n"
                + b" "
                * 900
            )
            with trio.fail_after(10):  # until the server holds the slow body's 900 bytes
                while True:
                    answer = await client.post(served.url, content=payload, headers=headers)
                    if answer.status_code != 200:
                        break
                    await trio.sleep(0.01)
            assert "receiving" in refused(answer, 503, -32600)
            assert answer.headers["retry-after"] == "1"
        # The slow client gone, its bytes are free again.
        with trio.fail_after(10):
            while True:
                answer = await client.post(served.url, content=payload, headers=headers)
                if answer.status_code != 503:
                    break
                await trio.sleep(0.01)
        assert answer.status_code == 200, answer.text


async def test_requests_beyond_max_requests_get_503(manager: triact.SessionManager) -> None:
    session_id = (await manager.create_session()).id
    async with (
        http_server(manager, http=HttpOptions(max_requests=1), keep_alive=60) as served,
        httpx.AsyncClient(timeout=30) as client,
        holding(manager, session_id) as release,
        trio.open_nursery() as nursery,
    ):
        body = stateless_call("session_get", {"session_id": session_id})
        headers = stateless_headers("tools/call", "session_get")
        answers: list[httpx.Response] = []

        async def held() -> None:
            answers.append(await client.post(served.url, json=body, headers=headers))

        nursery.start_soon(held)
        with trio.fail_after(10):
            while not served.app.calls_in_flight:  # noqa: ASYNC110 (the server, from outside)
                await trio.sleep(0.01)
        busy = await client.post(served.url, json=body, headers=headers)
        assert "busy" in refused(busy, 503, -32600)
        assert busy.headers["retry-after"] == "1"
        # The refused client's connection is closed after the answer, long before the
        # keep-alive time: a server at its limit holds no idle connection for it.
        host, port = served.url.removeprefix("http://").removesuffix("/mcp").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            payload = json.dumps(body).encode()
            head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            await stream.send_all(
                f"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"{head}Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            reply = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(4096):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 503")
        release.set()
    assert answers[0].status_code == 200
