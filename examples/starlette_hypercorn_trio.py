"""A Starlette app served by Hypercorn's Trio worker, keeping its state in triact.

Starlette is built on anyio, so on Hypercorn's Trio worker the whole server is one
Trio run and triact is used directly, with no adapter. The app's lifespan opens a
``triact.SessionManager``; request handlers reach it as ``request.state.sessions``
(Starlette's lifespan state). Each counter is a session: concurrent requests to one
counter are applied one at a time by its actor, so no increment is lost.

    python examples/starlette_hypercorn_trio.py --port 8000

    curl -X POST localhost:8000/counters                        # {"id": "..."}
    curl -X POST localhost:8000/counters/ID/add -d '{"by": 2}'  # {"count": 2, "version": 2}
    curl localhost:8000/counters/ID
    curl -X DELETE localhost:8000/counters/ID

It prints ``ready http://HOST:PORT`` once it accepts connections (``--port 0``
picks a free port) and ``stopped`` once, after SIGINT or SIGTERM, the session
manager has shut down.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import triact


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    config = triact.SessionConfig(idle_ttl=3600.0, shutdown_grace=5.0)
    async with triact.open_session_manager(config) as sessions:
        yield {"sessions": sessions}
    # The manager has shut down: calls in flight finished, no task is left.
    print("stopped", flush=True)


def add(by: int) -> Callable[[triact.SessionState], triact.SessionState]:
    """An update: applied inside the session's actor, one at a time."""

    def apply(state: triact.SessionState) -> triact.SessionState:
        return attrs.evolve(state, data={**state.data, "count": state.data.get("count", 0) + by})

    return apply


def counter(state: triact.SessionState) -> dict[str, Any]:
    return {"id": state.id, "count": state.data.get("count", 0), "version": state.version}


async def create_counter(request: Request) -> Response:
    sessions: triact.SessionManager = request.state.sessions
    session = await sessions.create_session(topic="counter")
    return JSONResponse({"id": session.id}, status_code=201)


async def add_to_counter(request: Request) -> Response:
    body = await request.json()
    sessions: triact.SessionManager = request.state.sessions
    session = await sessions.get_session(request.path_params["id"])
    state = await session.update(add(int(body.get("by", 1))))
    return JSONResponse(counter(state))


async def read_counter(request: Request) -> Response:
    sessions: triact.SessionManager = request.state.sessions
    session = await sessions.get_session(request.path_params["id"])
    return JSONResponse(counter(await session.snapshot()))


async def end_counter(request: Request) -> Response:
    sessions: triact.SessionManager = request.state.sessions
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


async def until_signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def main(host: str, port: int) -> None:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = 5.0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=until_signalled))
        print(f"ready {binds[0]}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
