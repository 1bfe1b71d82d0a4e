"""A fuzzer at the HTTP transport's boundary: arbitrary methods, paths, headers
(bearer tokens, MCP headers, duplicates, bytes outside ASCII) and bodies (the shapes of
``test_fuzz``, whole or in pieces) thrown at the ASGI app in-process, and junk thrown at
a real ``triact serve --http`` and ``triact serve`` (stdio) over their sockets and pipes.

Whatever arrives: every answer is an HTTP status with a JSON-RPC body (or the empty
body of a 202, or SSE events of JSON-RPC messages), every error carries a code of the
protocol's (never -32603, an internal error: a bug), no answer or log shows a traceback,
a path of the server's or a token, and a valid call afterwards is served."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import triact
from triact.transport import SESSION_TOOLS, BearerTokens, HttpOptions, open_http_app

from ._http_server import STATELESS_META, serve_process, stateless_call, stateless_headers
from ._sdk import SERVE
from .test_fuzz import encode, ids, messages, tool_calls

ALICE = "alice-fuzz-0123456789abcdef"
BOB = "bob-fuzz-0123456789abcdefgh"
TOKENS = BearerTokens.of([("alice", ALICE), ("bob", BOB)])
#: The error codes an answer may carry: JSON-RPC's (but -32603) and MCP's.
CODES = {-32700, -32600, -32601, -32602, -32020, -32022, -32042}
#: Text no answer may hold: a traceback, the server's own files, the tokens.
SECRETS = (
    "Traceback",
    'File "',
    str(Path(triact.__file__).parent),
    "site-packages",
    ALICE,
    BOB,
)
MAX_BODY = 30_000

header_names = st.sampled_from(
    [
        b"accept",
        b"content-type",
        b"authorization",
        b"mcp-session-id",
        b"mcp-protocol-version",
        b"mcp-method",
        b"mcp-name",
        b"mcp-param-session-id",
        b"origin",
        b"content-length",
        b"Mcp-Name",
        b"x-other",
    ]
)
header_values = st.one_of(
    st.sampled_from(
        [
            b"application/json, text/event-stream",
            b"application/json",
            b"text/event-stream",
            b"*/*",
            f"Bearer {ALICE}".encode(),
            f"Bearer {BOB}".encode(),
            f"bearer  {ALICE} ".encode(),
            b"Bearer",
            b"Basic YWxpY2U6eA==",
            b"2026-07-28",
            b"2025-11-25",
            b"2025-03-26",
            b"1900-01-01",
            b"tools/call",
            b"tools/list",
            b"initialize",
            b"health_check",
            b"session_get",
            b"=?base64?aGVhbHRoX2NoZWNr?=",
            b"=?base64?!!?=",
            b"http://localhost:1",
            b"https://evil.example",
            b"null",
            b"A" * 22,
            b"SESSION",
        ]
    ),
    st.binary(max_size=30),
)
#: The headers of a well-formed request of each era (``SESSION``: the last
#: Mcp-Session-Id an answer gave), to which the drawn ones are added, or which they
#: replace: so that most requests get past the first checks.
STATELESS_BASE = {
    b"accept": b"application/json, text/event-stream",
    b"content-type": b"application/json",
    b"authorization": f"Bearer {ALICE}".encode(),
    b"mcp-protocol-version": b"2026-07-28",
    b"mcp-method": b"tools/call",
}
HANDSHAKE_BASE = {
    b"accept": b"application/json, text/event-stream",
    b"content-type": b"application/json",
    b"authorization": f"Bearer {ALICE}".encode(),
    b"mcp-protocol-version": b"2025-11-25",
    b"mcp-session-id": b"SESSION",
}
INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "0"},
        },
    }
).encode()
methods = st.sampled_from(["POST"] * 12 + ["GET", "DELETE", "PUT", "OPTIONS"])
paths = st.sampled_from(["/mcp"] * 12 + ["/mcp/", "/", "/mcp/x", "/MCP"])

Request = tuple[str, str, list[tuple[bytes, bytes]], bytes]


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A request of either era, mostly well-formed up to its body's values."""
    era = draw(st.sampled_from(["stateless", "stateless", "handshake", "initialize", "junk"]))
    if era == "stateless":
        call = draw(tool_calls)
        base = {**STATELESS_BASE, b"mcp-name": str(call["name"]).encode()}
        params = {**call, "_meta": STATELESS_META}
        body = encode({"jsonrpc": "2.0", "id": draw(ids), "method": "tools/call", "params": params})
    elif era == "initialize":
        base = {k: v for k, v in HANDSHAKE_BASE.items() if k != b"mcp-session-id"}
        body = INITIALIZE
    elif era == "handshake":
        base, body = dict(HANDSHAKE_BASE), draw(messages())
    else:
        base, body = {}, draw(st.binary(max_size=200) | messages())
    if draw(st.integers(0, 3)):  # mostly the base headers, as they are
        return "POST", "/mcp", list(base.items()), body
    base = {name: value for name, value in base.items() if draw(st.integers(0, 5))}
    drawn = draw(st.lists(st.tuples(header_names, header_values), max_size=3))
    if draw(st.booleans()):
        for name, value in drawn:
            base[name.lower()] = value
        head = list(base.items())
    else:
        head = [*base.items(), *drawn]
    return draw(methods), draw(paths), head, body


@contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """The records of level ERROR or above that triact's loggers write meanwhile."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.ERROR)
    logger = logging.getLogger("triact")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def check_answer(status: int, response_headers: dict[bytes, bytes], body: bytes) -> None:
    """An answer of the HTTP transport, as every client may rely on."""
    text = body.decode("utf-8")  # always UTF-8
    for secret in SECRETS:
        assert secret not in text, (secret, text)
    if status == 202 or (status == 200 and not body):  # a notification; a DELETE
        assert not body
        return
    content_type = response_headers[b"content-type"]
    if content_type == b"text/event-stream":
        assert status == 200
        events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
        assert events
        for event in events[:-1]:
            assert "method" in json.loads(event)  # notifications, then the answer
        check_message(json.loads(events[-1]), status)
        return
    assert content_type == b"application/json", (status, response_headers)
    check_message(json.loads(text), status)


def check_message(message: dict[str, Any], status: int) -> None:
    assert message["jsonrpc"] == "2.0"
    assert ("result" in message) != ("error" in message), message
    if "error" in message:
        error = message["error"]
        assert error["code"] in CODES, message
        assert type(error["message"]) is str
        assert error["message"]
    else:
        assert status == 200, message


async def ask(
    app: Any, method: str, path: str, head: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request to the ASGI app; its status, headers and whole body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": head,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8765),
    }
    events = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await trio.sleep_forever()  # the client waits for its answer
        raise AssertionError("unreachable")

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)
        await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        await app(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    body = b"".join(event.get("body", b"") for event in sent[1:])
    assert not sent[-1].get("more_body", False)  # the answer is complete
    return start["status"], dict(start["headers"]), body


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(body) + 1) for cut in cuts})
    pieces, last = [], 0
    for point in [*points, len(body)]:
        pieces.append(body[last:point])
        last = point
    return [piece for piece in pieces if piece] or [b""]


HEALTH = stateless_call("health_check", {})
HEALTH_HEADERS = [
    (name.encode(), value.encode())
    for name, value in {
        **stateless_headers("tools/call", "health_check"),
        "content-type": "application/json",
        "authorization": f"Bearer {ALICE}",
    }.items()
]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(requests(), st.lists(st.integers(0, 10_000), max_size=3)), max_size=8),
    st.booleans(),
)
async def test_the_http_app_answers_anything_with_json_rpc_and_keeps_serving(
    sent: list[tuple[Request, list[int]]], with_tokens: bool
) -> None:
    http = HttpOptions(max_body_bytes=MAX_BODY, tokens=TOKENS if with_tokens else None)
    session_id = b"none-yet-0123456789"
    counter = itertools.count()
    with errors_logged() as logged:
        async with (
            triact.open_session_manager() as manager,
            open_http_app(manager, SESSION_TOOLS, http=http) as app,
        ):
            for (method, path, head, body), cuts in sent:
                head = [
                    (name, session_id if value == b"SESSION" else value) for name, value in head
                ]
                while b'"UNIQUE"' in body:
                    body = body.replace(b'"UNIQUE"', f'"u{next(counter)}"'.encode(), 1)
                status, answer_headers, answer = await ask(
                    app, method, path, head, split(body, cuts)
                )
                assert 200 <= status < 600
                check_answer(status, answer_headers, answer)
                session_id = answer_headers.get(b"mcp-session-id", session_id)
            body = json.dumps(HEALTH).encode()
            status, answer_headers, answer = await ask(app, "POST", "/mcp", HEALTH_HEADERS, [body])
            assert status == 200, answer
            assert json.loads(answer)["result"]["structuredContent"]["status"] == "ok"
    assert not logged, [record.getMessage() for record in logged]


JUNK = [
    b"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\x00\xff}",
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Accept: */*\r\nContent-Length: 12\r\n\r\n[1,2,3,4,5]\n",
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS hello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 30,
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Name: a\r\nMcp-Name: b\r\nContent-Length: 0\r\n\r\n",
    b"POST " + b"/mcp" * 5000 + b" HTTP/1.1\r\n\r\n",
    b"\r\n\r\n\r\n",
    bytes(range(256)),
]


async def test_a_real_http_server_survives_junk_on_its_sockets() -> None:
    async with serve_process("--store", "memory") as server:
        host, port = server.url.removeprefix("http://").removesuffix("/mcp").split(":")

        async def throw(junk: bytes) -> None:
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(junk)
                reply = b""
                with trio.move_on_after(2):  # some junk is a request not yet complete
                    while chunk := await stream.receive_some(65536):
                        reply += chunk
                for secret in SECRETS:
                    assert secret.encode() not in reply, (junk, reply)

        async with trio.open_nursery() as nursery:
            for junk in JUNK:
                nursery.start_soon(throw, junk)
        async with httpx.AsyncClient(timeout=30) as client:
            headers = stateless_headers("tools/call", "health_check")
            answer = await client.post(server.url, json=HEALTH, headers=headers)
            assert answer.status_code == 200
            assert answer.json()["result"]["structuredContent"]["status"] == "ok"
        assert server.process.returncode is None
    assert b"Traceback" not in server.stderr, server.stderr.decode(errors="replace")


def test_a_real_stdio_server_survives_junk_on_its_stdin() -> None:
    junk = b"\n".join(
        [
            b"\xff\xfe\x00garbage",
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x",',
            b"[" * 5000,
            b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}',
            b'{"jsonrpc":"2.0","id":2,"method":"initialize","params":[]}',
            b'{"jsonrpc":"1.0","id":3,"method":"ping"}',
            b"\x00" * 1000,
            b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"session_get",'
            b'"arguments":{"session_id":"\\ud800"},"_meta":'
            + json.dumps(STATELESS_META).encode()
            + b"}}",
            b'{"jsonrpc":"2.0","id":"last","method":"ping"}',
        ]
    )
    done = subprocess.run(
        [*SERVE, "--store", "memory"],
        input=junk + b"\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    for answer in answers:
        check_message(answer, 200)
        for secret in SECRETS:
            assert secret not in json.dumps(answer)
    assert answers[-1] == {"jsonrpc": "2.0", "id": "last", "result": {}}
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
