"""Fixtures for the asyncio-side tests: each test body runs on a fresh asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import trio

T = TypeVar("T")
RunAio = Callable[[Callable[[], Coroutine[Any, Any, T]]], T]

# A test that hangs fails after this long instead of blocking the suite.
TEST_TIMEOUT = 20.0


@pytest.fixture
def aio_run() -> RunAio[Any]:
    """``aio_run(main)`` runs ``main()`` on a new asyncio loop (a plain selector
    loop, whatever loop policy was installed) and checks that no Trio run is left
    in the thread afterwards."""

    def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        async def guarded() -> T:
            async with asyncio.timeout(TEST_TIMEOUT):
                return await main()

        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            result = runner.run(guarded())
        assert not trio.lowlevel.in_trio_run(), "a Trio guest run outlived its manager"
        return result

    return run
