"""Trusted operations: grant, revoke, list, expiry on the wall clock, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

import triact
from triact.work import WorkConfig, WorkLimitError, WorkSessions, is_trusted

from .conftest import Clock, opened


async def test_grant_list_revoke(work: WorkSessions, tmp_path: Path, clock: Clock) -> None:
    session = (await work.start(tmp_path)).session
    assert not await work.is_trusted(session, "git_commit")
    granted = await work.grant(session, "git_commit")
    assert (granted.scope, granted.operation, granted.changed) == ("session", "git_commit", True)
    grant = granted.grant_for("git_commit")
    assert grant is not None
    assert (grant.granted_at, grant.expires_at) == (clock.now, None)
    assert await work.is_trusted(session, "git_commit")
    await work.grant(session, "run_tests")
    listed = await work.trusted(session)
    assert [g.operation for g in listed.trusted] == ["git_commit", "run_tests"]
    assert listed.version == (await session.snapshot()).version

    revoked = await work.revoke(session, "git_commit")
    assert revoked.changed
    assert [g.operation for g in revoked.trusted] == ["run_tests"]
    assert not await work.is_trusted(session, "git_commit")
    assert not (await work.revoke(session, "git_commit")).changed


async def test_grants_expire_on_the_wall_clock(
    work: WorkSessions, tmp_path: Path, clock: Clock
) -> None:
    session = (await work.start(tmp_path)).session
    granted = await work.grant(session, "deploy", expires_in=60)
    assert granted.trusted[0].expires_at == clock.now + 60
    clock.now += 59.9
    assert await work.is_trusted(session, "deploy")
    clock.now += 0.1
    assert not await work.is_trusted(session, "deploy")
    assert (await work.trusted(session)).trusted == ()
    assert not (await work.revoke(session, "deploy")).changed  # expired is not trusted


async def test_granting_again_replaces_the_expiry(
    work: WorkSessions, tmp_path: Path, clock: Clock
) -> None:
    session = (await work.start(tmp_path)).session
    await work.grant(session, "deploy", expires_in=10)
    again = await work.grant(session, "deploy")
    assert [(g.operation, g.expires_at) for g in again.trusted] == [("deploy", None)]


async def test_a_bound_session_holds_its_bindings_approvals(
    work: WorkSessions, tmp_path: Path
) -> None:
    session = (await work.start(tmp_path, bind_client=True)).session
    assert (await work.grant(session, "x")).scope == "binding"


async def test_is_trusted_on_a_state_needs_no_call(
    work: WorkSessions, tmp_path: Path, clock: Clock
) -> None:
    session = (await work.start(tmp_path)).session
    await work.grant(session, "x", expires_in=5)
    state = await session.snapshot()
    assert is_trusted(state, "x", clock.now)
    assert not is_trusted(state, "x", clock.now + 5)
    assert not is_trusted(state, "y", clock.now)


@pytest.mark.parametrize("expires_in", [0, -1, float("inf"), float("nan")])
async def test_bad_expiry_is_refused(work: WorkSessions, tmp_path: Path, expires_in: float) -> None:
    session = (await work.start(tmp_path)).session
    with pytest.raises(ValueError, match="expires_in"):
        await work.grant(session, "x", expires_in=expires_in)


async def test_operations_per_session_are_bounded(clock: Clock, tmp_path: Path) -> None:
    async with opened(clock, WorkConfig(max_trusted_operations=2)) as (_, work):
        session = (await work.start(tmp_path)).session
        await work.grant(session, "a")
        await work.grant(session, "b")
        await work.grant(session, "b", expires_in=5)  # re-granting takes no new place
        with pytest.raises(WorkLimitError, match="revoke some first"):
            await work.grant(session, "c")


async def test_grants_persist_in_the_store(clock: Clock, tmp_path: Path, sqlite_path: Path) -> None:
    key = b"k" * 32
    async with opened(clock, store=triact.SqliteStore(sqlite_path), secret_key=key) as (_, work):
        session = (await work.start(tmp_path)).session
        await work.grant(session, "git_commit")
    async with opened(clock, store=triact.SqliteStore(sqlite_path), secret_key=key) as (
        manager,
        work,
    ):
        again = await manager.get_session(session.id)
        assert await work.is_trusted(again, "git_commit")
