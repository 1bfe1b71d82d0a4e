"""Errors carry their stable codes: a tool error's code is its exception's ``code``;
only refused arguments are ``invalid_arguments``; an error without a code is a bug,
answered as a JSON-RPC internal error and logged with its traceback."""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest

import triact
from triact.transport import (
    ERROR_CODES,
    INTERNAL_ERROR,
    SESSION_TOOLS,
    InvalidArgumentsError,
    JsonRpcError,
    TokenFileError,
    ToolError,
    ToolSet,
    TransportError,
)
from triact.work import WORK_ERROR_CODES

from .conftest import Peer, connect

PACKAGES = ["triact.sessions", "triact.transport", "triact.work"]


def _error_classes() -> list[type[Exception]]:
    found = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        found += [
            obj
            for name in module.__all__
            if inspect.isclass(obj := getattr(module, name)) and issubclass(obj, Exception)
        ]
    return found


@pytest.mark.parametrize("kind", _error_classes(), ids=lambda kind: kind.__name__)
def test_every_error_class_carries_a_documented_code(kind: type[Exception]) -> None:
    if kind is JsonRpcError or kind is TransportError:
        return  # a protocol error's code is its JSON-RPC number; the base has none
    if kind is InvalidArgumentsError:
        assert kind("x").code == "invalid_arguments"
        return
    if kind is ToolError:
        return  # its code is given per instance
    if kind is TokenFileError:
        return  # a server's configuration error, raised before it serves: no tool's
    code = getattr(kind, "code", None)
    assert type(code) is str, f"{kind.__name__} has no code"
    assert code in (*ERROR_CODES, *WORK_ERROR_CODES)


def test_the_codes_of_some_causes() -> None:
    assert triact.SessionThrottledError.code == "unauthorized"
    assert triact.SessionValueError.code == "invalid_arguments"
    assert triact.SessionArgumentError.code == "invalid_arguments"
    assert issubclass(triact.SessionArgumentError, ValueError)  # the library's contract
    assert triact.SessionFailedError.code == "session_error"
    assert issubclass(ToolError, TransportError)


def _tool(name: str, run: Any) -> ToolSet:
    health = SESSION_TOOLS.get("health_check")
    assert health is not None
    return ToolSet([attrs.evolve(health, name=name, run=run)])


async def _raises_value_error(env: Any, args: Any) -> Any:
    raise ValueError("a bug in /srv/secret/path")


async def _raises_type_error(env: Any, args: Any) -> Any:
    raise TypeError("a bug")


async def _refuses(env: Any, args: Any) -> Any:
    raise InvalidArgumentsError("'x' must be positive, got -1")


@pytest.mark.parametrize("run", [_raises_value_error, _raises_type_error])
async def test_a_stray_value_or_type_error_is_an_internal_error(
    manager: triact.SessionManager, run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tools = SESSION_TOOLS | _tool("buggy", run)
    with caplog.at_level(logging.ERROR, logger="triact.transport"):
        async with connect(manager, tools=tools, initialize="2025-11-25") as peer:
            response = await peer.request("tools/call", {"name": "buggy", "arguments": {}})
            assert (await peer.ok("health_check"))["status"] == "ok"  # still serving
    error = response["error"]
    assert error["code"] == INTERNAL_ERROR
    assert error["message"].startswith("Internal error: ")
    assert "secret" not in error["message"]
    record = next(r for r in caplog.records if "tool buggy failed" in r.getMessage())
    assert record.exc_info is not None  # the traceback is logged


async def test_a_refused_argument_is_invalid_arguments(manager: triact.SessionManager) -> None:
    tools = SESSION_TOOLS | _tool("picky", _refuses)
    async with connect(manager, tools=tools, initialize="2025-11-25") as peer:
        error = await peer.fails("picky")
    assert error == {"code": "invalid_arguments", "message": "'x' must be positive, got -1"}


async def test_session_api_refusals_keep_their_code(peer: Peer, tmp_path: Path) -> None:
    sid = (await peer.ok("session_create"))["session_id"]
    await peer.ok("session_add_thread", {"session_id": sid, "name": "a"})
    twice = await peer.fails("session_add_thread", {"session_id": sid, "name": "a"})
    assert twice["code"] == "invalid_arguments"
    assert "already has a thread named 'a'" in twice["message"]
    nothing = await peer.fails("session_update", {"session_id": sid})
    assert nothing["code"] == "invalid_arguments"
    missing = await peer.fails(
        "session_set_working_directory", {"session_id": sid, "path": str(tmp_path / "no")}
    )
    assert missing["code"] == "invalid_arguments"
