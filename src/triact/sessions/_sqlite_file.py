"""The SQLite store's file: how it is created (readable by its owner only), what marks
it as triact's, how a foreign or corrupt file is told apart before anything in it is
changed, and whether its path still names the file the store has open.

Everything here runs in the store's worker thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Literal

from ._errors import SessionStoreError

#: ``PRAGMA application_id`` of triact's store files ("tria"). Files made before the
#: mark existed are recognised by their tables, and marked when next opened.
APPLICATION_ID = 0x74726961

#: What SQLite keeps beside a database file.
_COMPANIONS = ("-wal", "-shm", "-journal")

FileKind = Literal["new", "triact", "unmarked"]
Identity = tuple[int, int]  # (st_dev, st_ino)


def on_disk(path: str) -> bool:
    """Whether ``path`` names a file (not ``:memory:`` or a URI)."""
    return path != ":memory:" and not path.startswith("file:")


def create_private(path: str) -> bool:
    """Create ``path`` empty with mode 0600 if it does not exist; True if this call
    created it. SQLite then opens it as an empty database, and creates its ``-wal``
    and ``-shm`` files with the same mode."""
    if not on_disk(path):
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise SessionStoreError(
            f"cannot open session store {path!r}: {exc.strerror or exc}" + _missing_directory(path)
        ) from exc
    os.close(fd)
    return True


def remove_created(path: str) -> None:
    """Remove a store file that :func:`create_private` made, and what SQLite made
    beside it, after opening it failed: a failed start leaves nothing behind."""
    for name in (path, *(path + suffix for suffix in _COMPANIONS)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def identify(conn: sqlite3.Connection, path: str) -> FileKind:
    """What the file holds, read without changing it: nothing yet ("new"), a marked
    triact store, or an unmarked one made by an older triact. SessionStoreError for
    any other SQLite file (another application's: it is left as it is)."""
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    if application_id == APPLICATION_ID:
        return "triact"
    if application_id == 0 and not names:
        return "new"
    if application_id == 0 and {"meta", "sessions"} <= names:
        return "unmarked"
    what = f"application id {application_id:#x}" if application_id else "tables of its own"
    raise SessionStoreError(
        f"{path!r} is a SQLite database of another application ({what}), not a triact "
        "session store; it was left unchanged. Give triact a path of its own"
    )


def mark(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _corrupt(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return isinstance(exc, sqlite3.DatabaseError) and (
        name.startswith("SQLITE_CORRUPT") or "malformed" in str(exc)
    )


def corruption_hint(exc: BaseException) -> str:
    """What to add to a store error that SQLite's finding of corruption caused."""
    if not _corrupt(exc):
        return ""
    return "; the store's file is corrupt: restore it from a backup"


def open_error(path: str, exc: sqlite3.Error) -> SessionStoreError:
    """The error that says why ``path`` could not be opened as a store."""
    name = getattr(exc, "sqlite_errorname", "")
    if _corrupt(exc):
        return SessionStoreError(
            f"session store {path!r} is corrupt ({exc}); restore it from a backup, or move "
            "it away to start with an empty store"
        )
    if name == "SQLITE_NOTADB":
        return SessionStoreError(
            f"{path!r} is not a SQLite database, so not a triact session store; it was "
            "left unchanged. Give triact a path of its own"
        )
    return SessionStoreError(f"cannot open session store {path!r}: {exc}{_missing_directory(path)}")


def check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """SessionStoreError if SQLite finds the file corrupt (it reads every page: call it
    only once something already looks wrong)."""
    found = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(3)")]
    if found != ["ok"]:
        raise SessionStoreError(
            f"session store {path!r} is corrupt ({'; '.join(found)}); restore it "
            "from a backup, or move it away to start with an empty store"
        )


def identity(path: str) -> Identity | None:
    """The device and inode ``path`` names now; None if nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def lost(path: str, opened: Identity | None) -> str | None:
    """None while ``path`` still names the file that was opened (as ``opened``); else
    what happened to it (without the path: it may reach clients)."""
    if opened is None:
        return None
    now = identity(path)
    if now == opened:
        return None
    what = "deleted" if now is None else "replaced by another file"
    return (
        f"the session store's file was {what} while the server ran; changes are refused, "
        "as they would be lost: restart the server"
    )


def _missing_directory(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    return "" if os.path.isdir(directory) else f" (directory {directory!r} does not exist)"
