"""Errors reach clients as a code and a useful message that holds no file path, no
serialised state and no token HMAC; the server's log (stderr) keeps the details."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest

import triact
from triact.transport import SESSION_TOOLS, Tool, ToolSet
from triact.transport._tools import STORE_FAILED, STORE_FAILED_NOT_APPLIED, domain_error
from triact.work import WorkStoreError
from triact.work._errors import commit_kept

from .conftest import connect


async def test_a_store_failure_reaches_the_client_as_store_error_without_details(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "private-dir" / "sessions.db"
    db.parent.mkdir()
    store = triact.SqliteStore(db, timeout=0.05)
    async with (
        triact.open_session_manager(triact.SessionConfig(store=store)) as manager,
        connect(manager, initialize="2025-11-25") as peer,
    ):
        created = await peer.ok(
            "session_create", {"bind_client": True, "metadata": {"note": "private-note"}}
        )
        arguments = {"session_id": created["session_id"], "token": created["token"]}
        state = await (await manager.get_session(created["session_id"])).snapshot()
        assert state.client_binding is not None
        blocker = sqlite3.connect(db)  # holds the write lock: the store's writes fail
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with caplog.at_level(logging.WARNING, logger="triact.transport"):
                error = await peer.fails("session_update", {**arguments, "set": {"a": 1}})
        finally:
            blocker.rollback()
            blocker.close()
        # The transaction never began (the lock): nothing was saved, and it says so.
        assert error == {
            "code": "store_error",
            "message": STORE_FAILED_NOT_APPLIED,
            "applied": False,
        }
        text = json.dumps(error)
        for private in ("private-dir", "sessions.db", "private-note", "locked", "sqlite3"):
            assert private not in text
        assert state.client_binding.token_hmac not in text
        # The server's log keeps what happened, where.
        assert "database is locked" in caplog.text
        # Nothing was committed, and the store serves again once it can.
        assert (await peer.ok("session_get", arguments))["session"]["version"] == 1
        await peer.ok("session_update", {**arguments, "set": {"a": 1}})


@attrs.frozen
class Empty:
    pass


async def explode(env: Any, args: Any) -> Empty:
    raise RuntimeError("cannot open /srv/private/state.db: token_hmac=abc123")


async def test_an_internal_error_says_nothing_of_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = Tool("broken", "Broken", "Fails.", Empty, Empty, "none", explode)
    async with (
        triact.open_session_manager() as manager,
        connect(manager, tools=SESSION_TOOLS | ToolSet([broken]), initialize="2025-11-25") as peer,
    ):
        response = await peer.request("tools/call", {"name": "broken", "arguments": {}})
        error = response["error"]
        assert error["code"] == -32603
        assert "/srv/private" not in error["message"]
        assert "token_hmac" not in error["message"]
        assert error["message"].startswith("Internal error")
        assert "cannot open /srv/private/state.db" in caplog.text  # logged, with traceback
        assert (await peer.request("ping"))["result"] == {}  # and it keeps serving


def test_a_store_error_that_may_have_been_applied_says_read_before_retrying() -> None:
    for exc in (
        triact.SessionStoreError("lost the connection to /srv/redis.sock after sending"),
        triact.SessionStoreError("timed out", applied=None),
    ):
        error = domain_error(exc)
        assert error is not None
        assert error.payload() == {
            "error": {"code": "store_error", "message": STORE_FAILED, "applied": None}
        }
        assert "read the session" in STORE_FAILED
        assert "/srv" not in json.dumps(error.payload())
    refused = domain_error(triact.SessionStoreError("refused by /srv/db", applied=False))
    assert refused is not None
    assert refused.payload()["error"]["applied"] is False
    assert "nothing was saved" in refused.message


def test_a_store_error_after_a_checkpoint_commit_names_the_commit() -> None:
    cause = triact.SessionStoreError("refused by /srv/db", applied=False)
    error = domain_error(commit_kept(cause, "ab12" * 10))
    assert error is not None
    assert error.payload()["error"] == {
        "code": "store_error",
        "message": f"the checkpoint commit {'ab12' * 10} was made in git and stays; in "
        f"recording the checkpoint in the session, {STORE_FAILED_NOT_APPLIED}",
        "applied": False,
        "commit": "ab12" * 10,
    }
    maybe = domain_error(commit_kept(triact.SessionStoreError("timed out"), "ab12" * 10))
    assert maybe is not None
    assert maybe.payload()["error"]["commit"] == "ab12" * 10
    assert maybe.message.endswith(STORE_FAILED)
    assert "/srv" not in json.dumps(error.payload())


def test_a_store_error_is_never_applied() -> None:
    with pytest.raises(ValueError, match="not applied"):
        triact.SessionStoreError("saved after all", applied=True)


def test_a_work_store_error_says_nothing_was_saved_and_names_nothing() -> None:
    error = domain_error(WorkStoreError("the work tables in '/srv/x.db' have layout 9; upgrade"))
    assert error is not None
    assert error.payload()["error"] == {
        "code": "store_error",
        "message": STORE_FAILED_NOT_APPLIED,
        "applied": False,
    }


async def test_a_response_sent_to_the_server_is_logged_with_its_id_cut_short(
    manager: triact.SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(manager, initialize="2025-11-25") as peer:
        with caplog.at_level(logging.WARNING, logger="triact.transport"):
            await peer.send({"jsonrpc": "2.0", "id": "x" * 1_000_000, "result": {}})
            assert (await peer.request("ping"))["result"] == {}  # still served
    (record,) = [r for r in caplog.records if "ignored a response" in r.getMessage()]
    assert len(record.getMessage()) < 300  # not the client's megabyte, once per message
