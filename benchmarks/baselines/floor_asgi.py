"""The floor of ``benchmarks/mcp_http.py``: an ASGI app doing the least an MCP server
must (read the body, parse its JSON, answer a JSON-RPC result: initialize's protocol
version, a new session id, or the session's next version), with no MCP library, run
on Hypercorn's Trio worker (what ``triact serve --http`` runs on) or on uvicorn (what
the SDK's server runs on). Its CPU per call is what the HTTP server alone costs.

``triact``: the same app on triact's own HTTP/1.1 server (``triact.transport.
_h11server``, what ``triact serve --http`` runs on by default: h11 parsing, its own
connection loop with timeouts, limits and a graceful stop).

``h11``: the same answers with no ASGI server at all, for scale: a loop per
connection on Trio's ``serve_tcp`` that reads requests and writes answers with h11
(the HTTP/1.1 library that Hypercorn and uvicorn parse with). A measuring stick, not a
server: no timeouts, limits, pipelining or error handling.

Prints ``listening on http://HOST:PORT/mcp`` on stderr once it listens.

    python benchmarks/baselines/floor_asgi.py hypercorn|uvicorn|triact|h11
"""

import json
import secrets
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]

_versions: dict[str, int] = {}


def _result(request: dict[str, Any]) -> dict[str, Any]:
    params = request.get("params") or {}
    if request["method"] == "initialize":
        return {"protocolVersion": params["protocolVersion"], "capabilities": {}}
    arguments = params.get("arguments") or {}
    if params.get("name") == "session_create":
        session_id = secrets.token_urlsafe(16)
        _versions[session_id] = 1
        return {"structuredContent": {"session_id": session_id, "version": 1}, "isError": False}
    _versions[arguments["session_id"]] += 1
    version = _versions[arguments["session_id"]]
    return {"structuredContent": {"version": version}, "isError": False}


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            done = event["type"] + ".complete"
            await send({"type": done})
            if event["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        event = await receive()
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            break
    request = json.loads(b"".join(chunks))
    if "id" not in request:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": _result(request)})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


def _hypercorn() -> None:
    from functools import partial

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    async def main() -> None:
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, app, config))
            print(f"listening on {binds[0]}/mcp", file=sys.stderr, flush=True)

    trio.run(main)


def _triact() -> None:
    from functools import partial

    import trio

    from triact.transport._h11server import serve_http

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            run = partial(serve_http, app, "127.0.0.1", 0, stop=trio.Event())
            urls = await nursery.start(run)
            print(f"listening on {urls[0]}/mcp", file=sys.stderr, flush=True)

    trio.run(main)


def _answer(body: bytes) -> tuple[int, bytes]:
    request = json.loads(body)
    if "id" not in request:
        return 202, b""
    answer = {"jsonrpc": "2.0", "id": request["id"], "result": _result(request)}
    return 200, json.dumps(answer).encode()


def _h11() -> None:
    from functools import partial

    import h11
    import trio

    async def connection(stream: trio.SocketStream) -> None:
        http = h11.Connection(h11.SERVER)
        chunks: list[bytes] = []
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                status, body = _answer(b"".join(chunks))
                chunks.clear()
                headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
                out = http.send(h11.Response(status_code=status, headers=headers))
                out += http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
                await stream.send_all(out)
                if http.our_state is h11.MUST_CLOSE:
                    return
                http.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_tcp, connection, 0, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            print(f"listening on http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)

    trio.run(main)


def _uvicorn() -> None:
    import anyio
    import uvicorn

    async def main() -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
                await anyio.sleep(0.01)
            host, port = server.servers[0].sockets[0].getsockname()[:2]
            print(f"listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)

    anyio.run(main)


if __name__ == "__main__":
    {"hypercorn": _hypercorn, "uvicorn": _uvicorn, "triact": _triact, "h11": _h11}[sys.argv[1]]()
