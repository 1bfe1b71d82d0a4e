"""The stdio target reads a tool error into the outcome the checker judges: an update
whose store may have saved it (``applied`` null) is of unknown outcome."""

from __future__ import annotations

from typing import Any

import pytest

from triact.testing._history import HistoryRecorder
from triact.testing._model import DataChange
from triact.testing._targets import StdioTarget


class Answers:
    """A tool client that answers every call with one error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        return True, {"error": self.error}


STORE_FAILED = {"code": "store_error", "message": "the session store failed"}


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        ({**STORE_FAILED, "applied": None}, "unknown"),  # maybe saved
        ({**STORE_FAILED, "applied": False}, "store_error"),  # certainly not
        (STORE_FAILED, "store_error"),  # a server that does not say
        ({"code": "conflict", "message": "", "actual_version": 3}, "conflict"),
    ],
)
async def test_an_update_error_is_read_into_its_outcome(
    error: dict[str, Any], outcome: str
) -> None:
    target = StdioTarget(Answers(error), ["triact", "serve"])
    recorder = HistoryRecorder()
    change = DataChange(increment={"n": 1})
    with recorder.call("a", "s1", "update", change=change) as call:
        await target.update(call, "s1", change, None, fails=False, slow=0)
    assert recorder.operations[0].outcome == outcome


async def test_a_read_whose_store_failed_is_a_store_error_whatever_applied_says() -> None:
    target = StdioTarget(Answers({**STORE_FAILED, "applied": None}), ["triact", "serve"])
    recorder = HistoryRecorder()
    with recorder.call("a", "s1", "read") as call:
        await target.read(call, "s1")
    assert recorder.operations[0].outcome == "store_error"
