"""Fixtures shared by the session-layer tests."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import triact

from ._helpers import OpenManager


@pytest.fixture
def open_manager() -> OpenManager:
    """``open_manager(**config) -> async CM``: a session manager opened with
    ``SessionConfig(**config)``, for tests that need their own knobs."""

    def open_(**config: Any) -> AbstractAsyncContextManager[triact.SessionManager]:
        return triact.open_session_manager(triact.SessionConfig(**config))

    return open_
