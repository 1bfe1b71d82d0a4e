"""The reference MCP server for ``benchmarks/mcp_http.py``: the same session tools as
``mcp_sdk_server.py`` (the SDK's ``MCPServer``, sessions in a dict), served the way the
official MCP Python SDK serves streamable HTTP: its own Starlette app
(``streamable_http_app``), stateless, with JSON responses, on uvicorn.

The SDK's app is dual-era: a request whose ``MCP-Protocol-Version`` header names the
2026-07-28 revision goes to its per-request entry; the others (initialize handshake,
2024-11-05 to 2025-11-25) to its stateless legacy transport.

It listens on a free loopback port and prints ``listening on http://HOST:PORT/mcp``
on stderr once uvicorn has started (so the benchmark needs no port of its own).

    python benchmarks/baselines/mcp_sdk_http_server.py
"""

import sys
from pathlib import Path

import anyio
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mcp_sdk_server import make_server


async def serve() -> None:
    app = make_server().streamable_http_app(stateless_http=True, json_response=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
            await anyio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)


if __name__ == "__main__":
    anyio.run(serve)
