"""An asyncio app (Starlette under uvicorn) keeping its state in triact through
``triact.aio``.

uvicorn runs the app on an asyncio loop. ``triact.aio.open_session_manager`` runs
triact's Trio runtime as a guest of that loop (Trio's guest mode: on the loop's
thread, with no second event loop) and hands out asyncio awaitables. The app's lifespan opens the
manager; handlers reach it as ``request.state.sessions``. Each counter is a
session: concurrent requests to one counter are applied one at a time by its
actor, so no increment is lost.

    python examples/asyncio_uvicorn.py --port 8000

    curl -X POST localhost:8000/counters                        # {"id": "..."}
    curl -X POST localhost:8000/counters/ID/add -d '{"by": 2}'  # {"count": 2, "version": 2}
    curl localhost:8000/counters/ID
    curl -X DELETE localhost:8000/counters/ID

It prints ``ready http://HOST:PORT`` once it accepts connections (``--port 0``
picks a free port) and ``stopped`` once, after SIGINT or SIGTERM, the session
manager has shut down and its Trio run has ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import triact
import triact.aio


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    config = triact.SessionConfig(idle_ttl=3600.0, shutdown_grace=5.0)
    async with triact.aio.open_session_manager(config) as sessions:
        yield {"sessions": sessions}
    # The manager has shut down and the Trio run has ended: no task is left.
    print("stopped", flush=True)


def add(by: int) -> Callable[[triact.SessionState], triact.SessionState]:
    """An update: a plain function, applied inside the session's actor."""

    def apply(state: triact.SessionState) -> triact.SessionState:
        return attrs.evolve(state, data={**state.data, "count": state.data.get("count", 0) + by})

    return apply


def counter(state: triact.SessionState) -> dict[str, Any]:
    return {"id": state.id, "count": state.data.get("count", 0), "version": state.version}


async def create_counter(request: Request) -> Response:
    sessions: triact.aio.SessionManager = request.state.sessions
    session = await sessions.create_session(topic="counter")
    return JSONResponse({"id": session.id}, status_code=201)


async def add_to_counter(request: Request) -> Response:
    body = await request.json()
    sessions: triact.aio.SessionManager = request.state.sessions
    session = await sessions.get_session(request.path_params["id"])
    state = await session.update(add(int(body.get("by", 1))))
    return JSONResponse(counter(state))


async def read_counter(request: Request) -> Response:
    sessions: triact.aio.SessionManager = request.state.sessions
    session = await sessions.get_session(request.path_params["id"])
    return JSONResponse(counter(await session.snapshot()))


async def end_counter(request: Request) -> Response:
    sessions: triact.aio.SessionManager = request.state.sessions
    session = await sessions.get_session(request.path_params["id"])
    return JSONResponse(counter(await session.end()))


STATUS = {
    triact.SessionNotFoundError: 404,
    triact.SessionBusyError: 429,
    triact.SessionClosedError: 503,
}


async def session_error(request: Request, exc: Exception) -> Response:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 409)
    return JSONResponse({"error": str(exc)}, status_code=status)


app = Starlette(
    routes=[
        Route("/counters", create_counter, methods=["POST"]),
        Route("/counters/{id}", read_counter, methods=["GET"]),
        Route("/counters/{id}", end_counter, methods=["DELETE"]),
        Route("/counters/{id}/add", add_to_counter, methods=["POST"]),
    ],
    exception_handlers={triact.SessionError: session_error},
    lifespan=lifespan,
)


class Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"ready http://{host}:{port}", flush=True)


def main(host: str, port: int) -> None:
    config = uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level="warning")
    # uvicorn shuts down on SIGINT or SIGTERM, then raises the signal again.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Server(config).serve())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    main(args.host, args.port)
