"""The SQL behind SqliteStore's shared-store operations and records: functions that
run in the store's worker thread, inside the batch's transaction (changes) or before
it (reads).

Each change is one statement or a few inside the caller's transaction, so it is
atomic against every other connection to the file: SQLite's write lock serialises
transactions across processes, which is what makes the store the one that decides.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ._errors import (
    SessionConcurrencyError,
    SessionDataError,
    SessionFencedError,
    SessionLimitError,
)
from ._store import IndexEntry

#: What layout 2 adds to layout 1's tables: indexes that keep expiry, listing and
#: per-client counts off full scans, and the records table.
INDEXES = (
    "CREATE INDEX sessions_expiry ON sessions (expires_at)",
    "CREATE INDEX sessions_order ON sessions (created_at, id)",
    "CREATE INDEX sessions_client ON sessions (client_id) WHERE client_id IS NOT NULL",
    "CREATE TABLE records (namespace TEXT NOT NULL, key TEXT NOT NULL, "
    "value TEXT NOT NULL, ttl REAL NOT NULL, expires_at REAL NOT NULL, "
    "PRIMARY KEY (namespace, key))",
    "CREATE INDEX records_expiry ON records (expires_at)",
)

#: The file's layout, version 2: v1's sessions table plus each session's fencing
#: epoch, lease holder and deadline; and the above.
LAYOUT_V2 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE sessions (id TEXT PRIMARY KEY, version INTEGER NOT NULL, "
    "created_at REAL NOT NULL, last_used REAL NOT NULL, client_id TEXT, state TEXT NOT NULL, "
    "epoch INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL NOT NULL DEFAULT 0, "
    "expires_at REAL)",
    *INDEXES,
)

#: From layout 1 to 2; rows of v1 get no deadline (due once idle past the TTL of
#: the manager that sweeps) and no lease.
MIGRATE_V1 = (
    "ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sessions ADD COLUMN owner TEXT",
    "ALTER TABLE sessions ADD COLUMN lease_until REAL NOT NULL DEFAULT 0",
    "ALTER TABLE sessions ADD COLUMN expires_at REAL",
    *INDEXES,
)

#: A compare-and-set update of a stored session: the version must match, and the
#: epoch too when one is given (``coalesce`` makes a guest's NULL match any).
UPDATE = (
    "UPDATE sessions SET version = ?, last_used = ?, state = ?, "
    "expires_at = coalesce(?, expires_at) "
    "WHERE id = ? AND version = ? AND epoch = coalesce(?, epoch)"
)


def write_failure(
    conn: sqlite3.Connection, session_id: str, previous_version: int | None, epoch: int | None
) -> SessionConcurrencyError:
    """Why a compare-and-set matched no row: gone, another version, or fenced."""
    stored = conn.execute(
        "SELECT version, epoch FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    actual = None if stored is None else stored[0]
    if stored is not None and actual == previous_version and epoch is not None:
        return SessionFencedError(
            f"session {session_id!r} was taken over by another process (epoch "
            f"{stored[1]}, this one held {epoch}); nothing was saved, retry the call",
            expected=epoch,
            actual=stored[1],
        )
    return SessionConcurrencyError(
        f"session {session_id!r}: store holds version {actual}, "
        f"expected {previous_version}; another writer got there first",
        expected=-1 if previous_version is None else previous_version,
        actual=-1 if actual is None else actual,
    )


def activate(
    conn: sqlite3.Connection, *, session_id: str, node: str, lease: float, now: float, force: bool
) -> tuple[Any, int, int | None, str | None, float] | None:
    """Load and lease in one transaction: (state text, version, epoch or None,
    holder, lease_until), or None if not stored."""
    row = conn.execute(
        "SELECT state, version, epoch, owner, lease_until FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return None
    text, version, epoch, owner, lease_until = row
    if _due(conn, session_id, now):  # past its deadline, not yet swept: gone
        conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return None
    if owner is not None and owner != node and lease_until > now and not force:
        return text, version, None, owner, lease_until
    epoch += 1
    conn.execute(
        "UPDATE sessions SET epoch = ?, owner = ?, lease_until = ? WHERE id = ?",
        (epoch, node, now + lease, session_id),
    )
    return text, version, epoch, node, now + lease


def _due(conn: sqlite3.Connection, session_id: str, now: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sessions WHERE id = ? AND expires_at <= ? AND lease_until <= ?",
        (session_id, now, now),
    ).fetchone()
    return row is not None


_DUE = (
    "(expires_at <= ? OR (expires_at IS NULL AND last_used <= ?)) AND lease_until <= ? "
    "AND id NOT IN (SELECT value FROM json_each(?))"
)


def trim_due(
    conn: sqlite3.Connection,
    now: float,
    idle_before: float,
    limit: int,
    spare: str = "[]",
) -> list[Any]:
    """Delete sessions past their deadline whose lease ran out, except those in
    ``spare`` (a JSON list of ids): (id, version) each."""
    return conn.execute(
        f"DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE {_DUE} LIMIT ?) "
        "RETURNING id, version",
        (now, idle_before, now, spare, limit),
    ).fetchall()


def any_due(conn: sqlite3.Connection, now: float, idle_before: float, spare: str) -> bool:
    """Whether :func:`trim_due` would delete something (a read: no write lock)."""
    query = f"SELECT 1 FROM sessions WHERE {_DUE} LIMIT 1"
    return conn.execute(query, (now, idle_before, now, spare)).fetchone() is not None


#: A session's principal, as its stored state holds it (the codec's layout).
_PRINCIPAL = "json_extract(state, '$.state.principal')"
#: What keeps a per-principal count off a scan of every stored state: made by the first
#: create under a per-principal cap (one pass over the table, in that create's
#: transaction), then kept by SQLite on every write, by every process on the file (a
#: file whose managers set no cap never gets it: it costs each write of a state a
#: second read of its principal).
PRINCIPAL_INDEX = (
    f"CREATE INDEX IF NOT EXISTS sessions_principal ON sessions ({_PRINCIPAL}) "
    f"WHERE {_PRINCIPAL} IS NOT NULL"
)


def create(
    conn: sqlite3.Connection,
    *,
    row: tuple[Any, ...],
    client_id: str | None,
    expires_at: float,
    now: float,
    node: str,
    lease: float,
    max_sessions: int,
    max_per_client: int | None,
    principal: str | None = None,
    max_per_principal: int | None = None,
) -> list[tuple[str, int]]:
    """Trim what is due, check the limits against the store, insert leased to
    ``node`` at epoch 1; returns what was trimmed. (The principal's sessions are
    counted from their states, through :data:`PRINCIPAL_INDEX`.)"""
    trimmed = [(str(i), int(v)) for i, v in trim_due(conn, now, -float("inf"), 1000)]
    (count,) = conn.execute("SELECT count(*) FROM sessions").fetchone()
    if count >= max_sessions:
        raise SessionLimitError(
            f"the store holds its limit of {max_sessions} sessions (max_sessions); "
            "end or remove some first"
        )
    if client_id is not None and max_per_client is not None:
        query = "SELECT count(*) FROM sessions WHERE client_id = ?"
        (held,) = conn.execute(query, (client_id,)).fetchone()
        if held >= max_per_client:
            raise SessionLimitError(
                f"client {client_id!r} holds its limit of {max_per_client} sessions "
                "(max_sessions_per_client); end one first"
            )
    if principal is not None and max_per_principal is not None:
        conn.execute(PRINCIPAL_INDEX)
        query = f"SELECT count(*) FROM sessions WHERE {_PRINCIPAL} = ?"
        (held,) = conn.execute(query, (principal,)).fetchone()
        if held >= max_per_principal:
            raise SessionLimitError(
                f"principal {principal!r} holds its limit of {max_per_principal} sessions "
                "(max_sessions_per_principal); end one first"
            )
    session_id, version, created_at, last_used, _, text = row
    cursor = conn.execute(
        "INSERT INTO sessions (id, version, created_at, last_used, client_id, state, epoch, "
        "owner, lease_until, expires_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        (
            session_id,
            version,
            created_at,
            last_used,
            client_id,
            text,
            node,
            now + lease,
            expires_at,
        ),
    )
    if cursor.rowcount != 1:
        raise write_failure(conn, session_id, None, None)
    return trimmed


def version(conn: sqlite3.Connection, *, session_id: str, now: float | None = None) -> int | None:
    row = conn.execute("SELECT version FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None or (now is not None and _due(conn, session_id, now)):
        return None
    if type(row[0]) is not int:  # a row edited by hand
        raise SessionDataError(
            f"session {session_id!r}'s row says version {row[0]!r:.40}, not an integer",
            applied=False,
        )
    return row[0]


def renew(
    conn: sqlite3.Connection,
    *,
    node: str,
    leases: dict[str, int],
    until: float,
    busy_until: float | None,
) -> set[str]:
    lost = set()
    for session_id, epoch in leases.items():
        cursor = conn.execute(
            "UPDATE sessions SET lease_until = ?, expires_at = CASE WHEN ? IS NULL "
            "THEN expires_at ELSE max(coalesce(expires_at, 0), ?) END "
            "WHERE id = ? AND owner = ? AND epoch = ?",
            (until, busy_until, busy_until, session_id, node, epoch),
        )
        if cursor.rowcount != 1:
            lost.add(session_id)
    return lost


def release(
    conn: sqlite3.Connection, *, session_id: str, node: str, epoch: int, expires_at: float
) -> None:
    touch(conn, session_id=session_id, expires_at=expires_at)
    conn.execute(
        "UPDATE sessions SET owner = NULL, lease_until = 0 "
        "WHERE id = ? AND owner = ? AND epoch = ?",
        (session_id, node, epoch),
    )


def touch(conn: sqlite3.Connection, *, session_id: str, expires_at: float) -> None:
    conn.execute(
        "UPDATE sessions SET expires_at = max(coalesce(expires_at, 0), ?) WHERE id = ?",
        (expires_at, session_id),
    )


def remove(conn: sqlite3.Connection, *, session_id: str, expected: int | None) -> bool:
    if expected is None:
        return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0
    query = "DELETE FROM sessions WHERE id = ? AND version = ?"
    if conn.execute(query, (session_id, expected)).rowcount > 0:
        return True
    stored = version(conn, session_id=session_id)
    if stored is None:
        return False
    raise SessionConcurrencyError(
        f"session {session_id!r} is at version {stored}, not {expected}; "
        "another process changed it first",
        expected=expected,
        actual=stored,
    )


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])


#: What a page tells of each session: its columns, and from the stored state (the
#: codec's layout: ``{"schema": 1, "state": {...}}``) its topic, token HMAC and
#: principal.
#: A row edited by hand into one that is not a record (its state not JSON, its version
#: not an integer) is listed without a token HMAC: the manager then loads it, which
#: says what is wrong, and leaves it out, where json_extract failed the whole listing.
_WELL_FORMED = "json_valid(state) AND typeof(version) = 'integer'"
_PAGE = (
    "SELECT id, created_at, last_used, client_id, version, "
    f"CASE WHEN {_WELL_FORMED} THEN json_extract(state, '$.state.topic') END, "
    f"CASE WHEN {_WELL_FORMED} THEN "
    "coalesce(json_extract(state, '$.state.client_binding.token_hmac'), '') END, "
    f"CASE WHEN {_WELL_FORMED} THEN {_PRINCIPAL} END FROM sessions"
)


def page(
    conn: sqlite3.Connection, *, after: tuple[float, str] | None, limit: int
) -> list[IndexEntry]:
    columns = _PAGE
    if after is None:
        rows = conn.execute(f"{columns} ORDER BY created_at, id LIMIT ?", (limit,))
    else:
        rows = conn.execute(
            f"{columns} WHERE (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
            (*after, limit),
        )
    return [IndexEntry(*row) for row in rows]


# -- records ------------------------------------------------------------------------


def put_record(
    conn: sqlite3.Connection, *, name: tuple[str, str], value: str, ttl: float, now: float
) -> None:
    conn.execute("DELETE FROM records WHERE expires_at <= ?", (now,))
    conn.execute(
        "INSERT INTO records (namespace, key, value, ttl, expires_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
        "ttl = excluded.ttl, expires_at = excluded.expires_at",
        (*name, value, ttl, now + ttl),
    )


def swap_record(
    conn: sqlite3.Connection,
    *,
    name: tuple[str, str],
    value: str,
    expected: str | None,
    ttl: float,
    now: float,
) -> bool:
    row = conn.execute(
        "SELECT value FROM records WHERE namespace = ? AND key = ? AND expires_at > ?",
        (*name, now),
    ).fetchone()
    if (None if row is None else str(row[0])) != expected:
        return False
    put_record(conn, name=name, value=value, ttl=ttl, now=now)
    return True


def get_record(conn: sqlite3.Connection, *, name: tuple[str, str], now: float) -> str | None:
    row = conn.execute(
        "UPDATE records SET expires_at = ? + ttl WHERE namespace = ? AND key = ? "
        "AND expires_at > ? RETURNING value",
        (now, *name, now),
    ).fetchone()
    return None if row is None else str(row[0])


def delete_record(conn: sqlite3.Connection, *, name: tuple[str, str], now: float) -> bool:
    cursor = conn.execute(
        "DELETE FROM records WHERE namespace = ? AND key = ? RETURNING expires_at", name
    )
    return any(expires_at > now for (expires_at,) in cursor.fetchall())
