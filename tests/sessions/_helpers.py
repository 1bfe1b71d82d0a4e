"""What many of the session-layer tests use: update functions and the fixture's type."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import attrs
import trio

import triact

#: The type of the ``open_manager`` fixture (conftest.py).
OpenManager = Callable[..., AbstractAsyncContextManager[triact.SessionManager]]


def put(key: str, value: object) -> Callable[[triact.SessionState], triact.SessionState]:
    """An update that sets ``data[key]``."""
    return lambda state: attrs.evolve(state, data={**state.data, key: value})


def sleep_then_put(
    seconds: float, key: str, value: object
) -> Callable[[triact.SessionState], object]:
    """An async update that sleeps (Trio's clock), then sets ``data[key]``."""

    async def fn(state: triact.SessionState) -> triact.SessionState:
        await trio.sleep(seconds)
        return attrs.evolve(state, data={**state.data, key: value})

    return fn
