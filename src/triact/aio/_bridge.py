"""asyncio code called from Trio code (an async update function, say): on the host
loop when triact runs as a guest of asyncio, through trio-asyncio in a Trio host."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from ._guest import HOST_LOOP

T = TypeVar("T")


async def run_asyncio(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """From Trio code, run ``await async_fn(*args)`` as asyncio code and return its
    result (or raise its exception).

    Inside :func:`triact.aio.open_session_manager` (an asyncio host) it runs as a
    task of the host loop, the loop the application's asyncio clients belong to. In
    a Trio host it runs on the loop of the enclosing :func:`open_asyncio_bridge`
    block (trio-asyncio).

    Cancellation keeps Trio's rule: if the caller is cancelled, the asyncio task is
    cancelled and waited for; :class:`trio.Cancelled` is raised if it ended
    cancelled, and if it completed anyway its result is returned (Trio delivers
    the cancellation at the caller's next checkpoint).
    """
    loop = HOST_LOOP.get()
    if loop is not None:
        return await _on_host_loop(loop, async_fn, args)
    # Only an open_asyncio_bridge() block can have imported it: not importing it
    # here keeps its changes to asyncio out of programs that never asked for them.
    trio_asyncio = sys.modules.get("trio_asyncio")
    if trio_asyncio is None or trio_asyncio.current_loop.get() is None:
        raise RuntimeError(
            "run_asyncio() found no asyncio loop: in a Trio program, call it inside "
            "`async with triact.aio.open_asyncio_bridge():` (opened around the tasks "
            "that call it); in an asyncio program, inside triact.aio.open_session_manager"
        )
    result: T = await trio_asyncio.aio_as_trio(async_fn)(*args)
    return result


@asynccontextmanager
async def open_asyncio_bridge() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """Make :func:`run_asyncio` work in the tasks started inside the block, and
    yield the asyncio loop it runs on.

    In a Trio host this opens a trio-asyncio loop (``pip install trio-asyncio``, or
    triact's ``aio`` extra); it closes on exit, cancelling what still runs on it.
    Open it around the code whose tasks call :func:`run_asyncio`: Trio tasks
    inherit it from the task that started them. Inside
    :func:`triact.aio.open_session_manager` there is nothing to open: it yields the
    host loop.

    Importing trio-asyncio changes asyncio for the whole process (its loop policy
    makes ``asyncio.new_event_loop()`` return trio-asyncio loops): keep it out of
    programs that also run asyncio event loops of their own.
    """
    loop = HOST_LOOP.get()
    if loop is not None:
        await trio.lowlevel.checkpoint()
        yield loop
        return
    async with _import_trio_asyncio().open_loop() as bridged:
        yield bridged


async def _on_host_loop(
    loop: asyncio.AbstractEventLoop, async_fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
) -> T:
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    # We run in a step of the guest run, on the loop's thread: the task starts on
    # the loop's next pass, outside Trio.
    task = asyncio.ensure_future(async_fn(*args), loop=loop)
    task.add_done_callback(lambda _: token.run_sync_soon(done.set))
    try:
        await done.wait()
    except trio.Cancelled:
        task.cancel()
        with trio.CancelScope(shield=True):
            await done.wait()
        if task.cancelled():
            raise
    return task.result()


def _import_trio_asyncio() -> Any:
    try:
        import trio_asyncio  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise ModuleNotFoundError(
            "the asyncio bridge of a Trio program needs trio-asyncio: pip install "
            "'trio-asyncio>=0.15' (or install triact with its aio extra)",
            name="trio_asyncio",
        ) from exc
    return trio_asyncio
