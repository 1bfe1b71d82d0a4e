"""Progress notifications: only while a call runs long (first after
``progress_interval`` on Trio's clock, then one per interval), never after its answer,
and an answer held a moment after a report of its call."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import triact
from triact.transport import ServerOptions
from triact.transport._progress import ANSWER_GAP

from .conftest import Peer, connect
from .test_routing import holding


def _reports(peer: Peer, token: Any) -> list[dict[str, Any]]:
    return [
        n["params"]
        for n in peer.notifications
        if n["method"] == "notifications/progress" and n["params"]["progressToken"] == token
    ]


def _with_token(peer: Peer, tool: str, arguments: dict[str, Any], token: Any) -> dict[str, Any]:
    message = peer.call_message(tool, arguments)
    message["params"]["_meta"] = {"progressToken": token}
    return message


async def test_a_quick_call_gets_no_progress(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        message = _with_token(peer, "session_create", {}, "quick")
        await peer.send(message)
        assert (await peer.response(message["id"]))["result"]["isError"] is False
        await trio.sleep(10)
    assert _reports(peer, "quick") == []


async def test_a_long_call_reports_every_interval_until_answered(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(manager, initialize="2025-11-25", progress_interval=1.0) as peer:
        session_id = (await peer.ok("session_create", {}))["session_id"]
        async with holding(manager, session_id) as release:
            start = trio.current_time()
            message = _with_token(peer, "session_get", {"session_id": session_id}, 7)
            await peer.send(message)
            await trio.sleep(3.5)
            release.set()
            response = await peer.response(message["id"])
        answered = trio.current_time() - start
        reports = _reports(peer, 7)
        assert [r["progress"] for r in reports] == [1, 2, 3]
        assert all("total" not in r for r in reports)
        assert reports[0]["message"] == "session_get running for 1 s"
        assert response["result"]["isError"] is False
        assert answered == pytest.approx(3.5, abs=0.01)
        await trio.sleep(10)  # nothing after the answer
        assert len(_reports(peer, 7)) == 3


async def test_an_answer_right_after_a_report_waits_the_gap(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(manager, initialize="2025-11-25", progress_interval=1.0) as peer:
        session_id = (await peer.ok("session_create", {}))["session_id"]
        async with holding(manager, session_id) as release:
            start = trio.current_time()
            message = _with_token(peer, "session_get", {"session_id": session_id}, "t")
            await peer.send(message)
            await trio.sleep(1.001)  # just after the first report
            release.set()
            await peer.response(message["id"])
        assert trio.current_time() - start == pytest.approx(1.0 + ANSWER_GAP, abs=1e-6)
        assert [r["progress"] for r in _reports(peer, "t")] == [1]


async def test_a_cancelled_call_reports_no_more(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(manager, initialize="2025-11-25", progress_interval=1.0) as peer:
        session_id = (await peer.ok("session_create", {}))["session_id"]
        async with holding(manager, session_id):
            message = _with_token(peer, "session_get", {"session_id": session_id}, "c")
            await peer.send(message)
            await trio.sleep(2.5)
            cancel = {"requestId": message["id"], "reason": "enough"}
            await peer.send(
                {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel}
            )
            await trio.sleep(5)
            assert (await peer.request("ping", {}))["result"] == {}  # still serving
        assert [r["progress"] for r in _reports(peer, "c")] == [1, 2]
        assert message["id"] not in peer.responses


async def test_calls_report_on_their_own_clocks(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with connect(manager, initialize="2025-11-25", progress_interval=2.0) as peer:
        first = (await peer.ok("session_create", {}))["session_id"]
        second = (await peer.ok("session_create", {}))["session_id"]
        async with holding(manager, first) as release_first:
            a = _with_token(peer, "session_get", {"session_id": first}, "a")
            await peer.send(a)
            await trio.sleep(1.0)
            async with holding(manager, second) as release_second:
                b = _with_token(peer, "session_get", {"session_id": second}, "b")
                await peer.send(b)
                await trio.sleep(4.5)  # a at 2, 4, (b at 3, 5), a at 6 comes later
                release_first.set()
                await peer.response(a["id"])
                await trio.sleep(2.0)
                release_second.set()
                await peer.response(b["id"])
        assert [r["progress"] for r in _reports(peer, "a")] == [1, 2]
        assert [r["progress"] for r in _reports(peer, "b")] == [1, 2, 3]


def test_the_interval_must_be_positive_and_finite() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="progress_interval must be > 0 and finite"):
            ServerOptions(progress_interval=bad)


@pytest.mark.parametrize("token", [1.5, 7.0, True, None, [7], {"t": 7}])
async def test_a_progress_token_that_is_not_a_string_or_an_integer_is_none(
    manager: triact.SessionManager, autojump_clock: trio.testing.MockClock, token: Any
) -> None:
    async with connect(manager, initialize="2025-11-25", progress_interval=1.0) as peer:
        session_id = (await peer.ok("session_create", {}))["session_id"]
        async with holding(manager, session_id) as release:
            message = _with_token(peer, "session_get", {"session_id": session_id}, token)
            await peer.send(message)
            await trio.sleep(3.5)
            release.set()
            response = await peer.response(message["id"])
        assert response["result"]["isError"] is False
    assert [n for n in peer.notifications if n["method"] == "notifications/progress"] == []
