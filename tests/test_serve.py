"""``triact serve`` and its store file, run as a real subprocess: a start that fails says
why in one line, exits 2 and leaves nothing behind; the files it makes are its owner's
only; a store file deleted while serving is reported, and changes are refused."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ._redis import RedisPlace, RedisServer, free_port
from ._serving import serving


def serve(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triact.cli", "serve", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("triact serve: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def another_apps_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('keep me')")
    conn.close()


def not_a_database(path: Path) -> None:
    path.write_text("my notes\n" * 500)


def corrupt_store(path: Path) -> None:
    assert serve("--store", f"sqlite:{path}").returncode == 0  # a real store, then:
    data = bytearray(path.read_bytes())
    data[100:1000] = b"\xa5" * 900
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (another_apps_database, "SQLite database of another application"),
        (not_a_database, "is not a SQLite database"),
        (corrupt_store, "is corrupt"),
    ],
    ids=["foreign", "not-sqlite", "corrupt"],
)
def test_a_file_that_is_no_usable_store_is_refused_unchanged(
    tmp_path: Path, make: Any, says: str
) -> None:
    path = tmp_path / "store.db"
    make(path)
    before = files(tmp_path)
    done = serve("--store", f"sqlite:{path}")
    assert_one_line_error(done, says)
    assert files(tmp_path) == before  # no WAL switch, no tables, no key file


def test_a_store_in_a_missing_directory_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    done = serve("--store", f"sqlite:{missing / 'store.db'}")
    assert_one_line_error(done, "does not exist", "create it first")
    assert list(tmp_path.iterdir()) == []


def test_a_store_path_that_is_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    done = serve("--store", f"sqlite:{tmp_path}")
    assert_one_line_error(done, "cannot open session store")
    assert list(tmp_path.iterdir()) == []


def test_a_key_file_that_cannot_be_created_fails_the_start_before_the_store(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    key = tmp_path / "locked" / "key"  # its directory is missing: the key cannot be written
    done = serve("--store", f"sqlite:{store / 's.db'}", "--secret-key-file", str(key))
    assert_one_line_error(done, "cannot create the key file")
    assert list(store.iterdir()) == []


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("redis://:secret@127.0.0.1:{port}/0", "could not connect"),
        ("redis://:secret@127.0.0.1:{port}/x", "the path is the database number"),
        ("redis://:secret@127.0.0.1:{port}/0?prefx=a", "unknown option 'prefx'"),
        ("redis:/:secret@127.0.0.1:{port}/0", "or a redis:// (rediss://) URL"),
        ("redis://127.0.0.1:{port}/0?password=secret", "the password goes before the host"),
        ("redis://127.0.0.1:{port}/0?pasword=secret", "unknown option 'pasword'"),
        ("redis://127.0.0.1:{port}/0#secret", "no #fragment"),
        # A password holding an unencoded / ? or #: urllib takes part of it for the
        # port, the path or the query, which the error must not quote either.
        ("redis://:pw/secret@127.0.0.1:{port}/0", "must be percent-encoded"),
        ("redis://user:4/secret@127.0.0.1:{port}/0", "must be percent-encoded"),
        ("redis://user:4?secret@127.0.0.1:{port}/0", "must be percent-encoded"),
        ("redis://user:secret#x@127.0.0.1:{port}/0", "must be percent-encoded"),
    ],
)
def test_a_redis_store_that_cannot_be_used_is_a_one_line_error_without_its_password(
    tmp_path: Path, store: str, says: str
) -> None:
    spec = store.format(port=free_port()) + ("&" if "?" in store else "?") + "timeout=0.5"
    done = subprocess.run(
        [sys.executable, "-m", "triact.cli", "serve", "--store", spec],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert_one_line_error(done, says)
    assert "secret" not in done.stderr


def test_a_malformed_handoff_is_reported_without_the_stores_path_and_the_start_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "private-store-dir" / "s.db"
    path.parent.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    options = ("--semantic", "off", "--allowed-root", str(tmp_path))
    with serving(*options, store=f"sqlite:{path}") as call:
        started = call("session_start", {"working_directory": str(project)})
        session_id = started["structuredContent"]["session_id"]
        assert not call("session_end", {"session_id": session_id}).get("isError")
        with sqlite3.connect(path) as conn:
            assert conn.execute("UPDATE work_handoffs SET record = '{}'").rowcount == 1
        # The directory can still be worked in: the start reports why there is no
        # handoff, and the next end's handoff replaces the record.
        again = call("session_start", {"working_directory": str(project)})
        assert not again.get("isError")
        report = again["structuredContent"]["report"]
        assert report["previous_handoff"] is None
        assert report["handoff_error"].startswith("the handoff of")
        assert "is not a handoff record" in report["handoff_error"]
        assert "private-store-dir" not in json.dumps(again)
        session_id = again["structuredContent"]["session_id"]
        assert not call("session_end", {"session_id": session_id}).get("isError")
        third = call("session_start", {"working_directory": str(project)})
        report = third["structuredContent"]["report"]
        assert report["handoff_error"] is None
        assert report["previous_handoff"]["session_id"] == session_id


def test_the_store_and_key_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with served(path) as call:
        call("session_create", {})
        made = [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", ".key"))]
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {
            p.name: 0o600 for p in made
        }


def served(path: Path) -> Any:
    """``triact serve --store sqlite:PATH``, initialized; yields a tools/call function."""
    return serving(store=f"sqlite:{path}", exit_ok=False)


def test_a_store_file_deleted_while_serving_is_reported_and_refuses_changes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with served(path) as call:
        created = call("session_create", {})["structuredContent"]
        assert call("health_check", {})["structuredContent"]["status"] == "ok"
        for name in ("s.db", "s.db-wal", "s.db-shm"):
            (tmp_path / name).unlink()
        health = call("health_check", {})["structuredContent"]
        assert health["status"] == "store_failed"
        assert "deleted" in health["store_problem"]
        assert str(tmp_path) not in health["store_problem"]
        update = {"session_id": created["session_id"], "set": {"k": 1}}
        refused = call("session_update", update)
        assert refused["isError"] is True
        assert refused["content"][0]["text"].startswith("store_error: ")
        assert str(tmp_path) not in refused["content"][0]["text"]
        # Refused before anything was written: the client may retry it as it is.
        error = refused["_meta"]["triact/error"]
        assert error["applied"] is False
        assert "nothing was saved" in error["message"]
        got = call("session_get", {"session_id": created["session_id"]})["structuredContent"]
        assert got["session"]["data"] == {}  # not acknowledged, not applied


def test_a_change_redis_did_not_answer_may_have_been_saved(private_redis: RedisServer) -> None:
    with serving(store=private_redis.url + "?timeout=0.5", exit_ok=False) as call:
        created = call("session_create", {})["structuredContent"]
        update = {"session_id": created["session_id"], "set": {"k": 1}}
        with RedisPlace(private_redis.url, "").client() as client:
            # Writes wait (reads, such as the version check, are answered): the
            # update is sent, and its answer comes after the store's timeout.
            client.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            refused = call("session_update", update)
            client.execute_command("CLIENT", "UNPAUSE")
        assert refused["isError"] is True
        error = refused["_meta"]["triact/error"]
        assert error["code"] == "store_error"
        assert error["applied"] is None
        assert "read the session" in error["message"]
        assert "127.0.0.1" not in refused["content"][0]["text"]
        # It was in fact applied once Redis ran it: only a read could tell.
        got = call("session_get", {"session_id": created["session_id"]})["structuredContent"]
        assert (got["session"]["version"], got["session"]["data"]) == (2, {"k": 1})


def test_the_start_is_taken_out_of_the_collectors_sight_once_serving() -> None:
    # What the start made (modules, classes, the manager) is frozen, so that a full
    # collection walks only what serving made since.
    done = serve("--store", "memory", "--log-level", "debug")
    assert done.returncode == 0, done.stderr
    frozen = re.search(
        r"(\d+) objects of the start frozen out of the collector's sight", done.stderr
    )
    assert frozen is not None, done.stderr
    assert int(frozen.group(1)) > 10_000
