"""Today's session layer moved to Trio as is (:mod:`._lock_manager`): the design of
:mod:`.asyncio_lock_manager` with ``trio.Lock`` in place of ``asyncio.Lock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._lock_manager import LockManager


class TrioLockManager(LockManager):
    new_lock = trio.Lock
    sleep = staticmethod(trio.sleep)


@asynccontextmanager
async def open_trio_lock_manager(**kwargs: Any) -> AsyncIterator[TrioLockManager]:
    """The manager with its cleanup loop running, for the duration of the block."""
    manager = TrioLockManager(**kwargs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager._cleanup_loop)
        yield manager
        nursery.cancel_scope.cancel()
