"""Today's asyncio session layer (:mod:`._lock_manager`): a dict of sessions behind
one global ``asyncio.Lock``, one ``asyncio.Lock`` per session, a versioned
``atomic_update``, PBKDF2 token hashing on the event loop, an hourly cleanup loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from ._lock_manager import LockManager


class AsyncioLockManager(LockManager):
    new_lock = asyncio.Lock
    sleep = staticmethod(asyncio.sleep)


@asynccontextmanager
async def running_cleanup(manager: LockManager) -> AsyncIterator[None]:
    """``manager``'s hourly cleanup loop, as a task, for the duration of the block."""
    cleanup = asyncio.create_task(manager._cleanup_loop())
    try:
        yield
    finally:
        cleanup.cancel()
        with suppress(asyncio.CancelledError):
            await cleanup


@asynccontextmanager
async def open_asyncio_lock_manager(**kwargs: Any) -> AsyncIterator[AsyncioLockManager]:
    """The manager with its cleanup loop running, for the duration of the block."""
    manager = AsyncioLockManager(**kwargs)
    async with running_cleanup(manager):
        yield manager
