"""The floor of ``benchmarks/mcp_http.py``: an ASGI app doing the least an MCP server
must (read the body, parse its JSON, answer a JSON-RPC result: initialize's protocol
version, a new session id, or the session's next version), with no MCP library, run
on Hypercorn's Trio worker (what ``triact serve --http`` runs on) or on uvicorn (what
the SDK's server runs on). Its CPU per call is what the HTTP server alone costs.

Prints ``listening on http://HOST:PORT/mcp`` on stderr once it listens.

    python benchmarks/baselines/floor_asgi.py hypercorn|uvicorn
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
            binds = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
            print(f"listening on {binds[0]}/mcp", file=sys.stderr, flush=True)

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
    {"hypercorn": _hypercorn, "uvicorn": _uvicorn}[sys.argv[1]]()
