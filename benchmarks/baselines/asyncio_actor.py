"""The actor one writes on asyncio without a library: one task per actor, reading
``(message, future)`` requests from an ``asyncio.Queue`` bounded like a mailbox, and
answering through the future.

:class:`AsyncioActor` runs any async handler that way; :class:`AsyncioActorSessions`
is a session layer built from such actors (one per session, looked up in a dict by
id), whose ``atomic_update(session_id, fn)`` applies ``fn`` (plain or async) in the
session's actor and bumps its version. It is as lean as the design allows: a caller
cancelled while it waits abandons its future, and the message is handled anyway.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from ._model import Session, new_session_id

M = TypeVar("M")
R = TypeVar("R")

MAILBOX = 256  # triact's default mailbox_size


class AsyncioActor(Generic[M, R]):
    """One task serving ``handler`` for the messages of its queue, one at a time."""

    __slots__ = ("_handler", "_queue", "_task")

    def __init__(self, handler: Callable[[M], Awaitable[R]], mailbox: int = MAILBOX) -> None:
        self._handler = handler
        self._queue: asyncio.Queue[tuple[M, asyncio.Future[R]]] = asyncio.Queue(mailbox)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def ask(self, message: M) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((message, future))
        return await future

    async def _serve(self) -> None:
        queue, handler = self._queue, self._handler
        while True:
            message, future = await queue.get()
            try:
                result = await handler(message)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise


class AsyncioActorSessions:
    """Sessions, each owned by an :class:`AsyncioActor`."""

    def __init__(self) -> None:
        self._actors: dict[str, AsyncioActor[Callable[[Session], Any], Session]] = {}
        self._sessions: dict[str, Session] = {}

    async def create_session(self) -> Session:
        session = Session(new_session_id(), lock=None)

        async def handle(fn: Callable[[Session], Any]) -> Session:
            result = fn(session)
            if inspect.isawaitable(result):
                result = await result
            session.version += 1
            return session

        self._sessions[session.session_id] = session
        self._actors[session.session_id] = AsyncioActor(handle)
        return session

    async def atomic_update(self, session_id: str, fn: Callable[[Session], Any]) -> Session:
        return await self._actors[session_id].ask(fn)

    def get_session(self, session_id: str) -> Session:
        return self._sessions[session_id]

    async def aclose(self) -> None:
        for actor in self._actors.values():
            await actor.stop()


@asynccontextmanager
async def open_asyncio_actor_sessions() -> AsyncIterator[AsyncioActorSessions]:
    sessions = AsyncioActorSessions()
    try:
        yield sessions
    finally:
        await sessions.aclose()
