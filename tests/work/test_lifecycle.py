"""WorkSessions: start, checkpoint, status, end with a handoff."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

import triact
from triact.work import (
    WORK_DATA_KEY,
    MemoryWorkStore,
    NotAGitRepositoryError,
    Started,
    WorkConfig,
    WorkDataError,
    WorkDirectoryError,
    WorkLimitError,
    WorkSessions,
    open_work_sessions,
    work_record,
)

from .._serving import serving
from .conftest import Clock, StoreMaker, git, opened


async def test_start_creates_a_session_and_reports_the_project(
    work: WorkSessions, repo: Path, clock: Clock
) -> None:
    started = await work.start(repo, project="alpha")
    assert started.created
    report = started.report
    assert report.working_directory == str(repo)
    assert (report.project, report.started_at, report.starts) == ("alpha", clock.now, 1)
    assert report.git is not None
    assert (report.git.repository, report.git.branch, report.git.dirty) == (
        True,
        "main",
        ("README.md",),
    )
    assert report.previous_handoff is None
    state = await started.session.snapshot()
    assert (state.working_directory, state.project_id, state.version) == (str(repo), "alpha", 2)


async def test_start_again_resumes_the_live_session(work: WorkSessions, repo: Path) -> None:
    first = await work.start(repo)
    again = await work.start(str(repo) + "/.", project="beta")
    assert not again.created
    assert again.session.id == first.session.id
    assert (again.report.starts, again.report.project) == (2, "beta")
    assert work.manager.session_count == 1


async def test_concurrent_starts_for_one_directory_make_one_session(
    work: WorkSessions, repo: Path
) -> None:
    ids: list[str] = []

    async def start() -> None:
        ids.append((await work.start(repo)).session.id)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(start)
    assert len(set(ids)) == 1
    assert work.manager.session_count == 1


async def test_concurrent_starts_through_two_processes_make_one_session(
    clock: Clock, repo: Path, durable_store: StoreMaker
) -> None:
    """Two managers on one store (as two ``triact serve`` processes on one SQLite file or
    Redis) start one directory at once, five times each: one session, which both
    resume. Each process's starts waited only for each other, so each process made
    a session of its own (both created, the index naming the last)."""
    async with (
        opened(clock, store=durable_store()) as (one, first),
        opened(clock, store=durable_store()) as (_, second),
    ):
        started: list[Started] = []

        async def start(work: WorkSessions) -> None:
            started.append(await work.start(repo))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(start, first)
                nursery.start_soon(start, second)
        assert len({each.session.id for each in started}) == 1
        assert [each.created for each in started].count(True) == 1
        assert await one.count_sessions() == 1
        assert (await first.start(repo)).report.starts == 11


class _LateIndex(MemoryWorkStore):
    """A work store whose look-up finds no session for the directory once ``miss`` is
    set, as a start does when another process's start names one just after it looked;
    with ``gone``, each claim finds another gone session named first."""

    def __init__(self, gone: int = 0) -> None:
        super().__init__()
        self.miss = False
        self.gone = gone

    async def session_for(self, directory: str, *, principal: str | None = None) -> str | None:
        held = await super().session_for(directory, principal=principal)
        if self.miss:
            self.miss = False
            return None
        return held

    async def claim(
        self,
        directory: str,
        session_id: str,
        now: float,
        *,
        expected: str | None,
        principal: str | None = None,
    ) -> str | None:
        if self.gone:
            self.gone -= 1
            return f"gone-{self.gone}"
        return await super().claim(
            directory, session_id, now, expected=expected, principal=principal
        )


@asynccontextmanager
async def late_index(
    clock: Clock, gone: int = 0
) -> AsyncIterator[tuple[triact.SessionManager, WorkSessions, _LateIndex]]:
    store = _LateIndex(gone)
    async with (
        opened(clock) as (manager, _),
        open_work_sessions(manager, WorkConfig(semantic="off"), store=store) as work,
    ):
        yield manager, work, store


async def test_a_start_resumes_the_session_named_while_it_made_its_own(
    clock: Clock, repo: Path
) -> None:
    async with late_index(clock) as (manager, work, store):
        first = await work.start(repo)
        store.miss = True
        resumed = await work.start(repo)
        assert (resumed.created, resumed.session.id) == (False, first.session.id)
        assert resumed.report.starts == 2
        assert manager.session_count == 1  # the session it made is removed again


async def test_a_start_that_finds_a_bound_session_named_meanwhile_is_refused(
    clock: Clock, repo: Path
) -> None:
    async with late_index(clock) as (manager, work, store):
        first = await work.start(repo, bind_client=True)
        store.miss = True
        with pytest.raises(triact.SessionSecurityError, match="pass its token"):
            await work.start(repo)
        assert manager.session_count == 1  # the session it made is removed again
        assert await store.session_for(str(repo)) == first.session.id


async def test_a_start_whose_claims_keep_finding_gone_sessions_gives_up(
    clock: Clock, repo: Path
) -> None:
    async with late_index(clock, gone=8) as (manager, work, store):
        with pytest.raises(triact.SessionStoreError, match="changed 8 times") as failed:
            await work.start(repo)
        assert failed.value.applied is False
        assert manager.session_count == 0  # the session it made is removed again
        assert store.gone == 0
        assert (await work.start(repo)).created  # a start after it names its own


async def test_claim_names_a_session_only_over_none_or_the_one_expected(
    clock: Clock, repo: Path, any_store: StoreMaker
) -> None:
    async with opened(clock, store=any_store()) as (_, work):
        store, where = work.store, str(repo)
        assert await store.claim(where, "a", clock.now, expected="x") is None  # none named
        assert await store.claim(where, "b", clock.now, expected=None) == "a"
        assert await store.claim(where, "b", clock.now, expected="x") == "a"
        assert await store.session_for(where) == "a"
        assert await store.claim(where, "b", clock.now, expected="a") is None
        assert await store.session_for(where) == "b"
        assert await store.session_for(where, principal="alice") is None
        assert await store.claim(where, "c", clock.now, expected=None, principal="alice") is None
        assert await store.session_for(where) == "b"


async def test_start_refuses_bad_directories(work: WorkSessions, tmp_path: Path) -> None:
    with pytest.raises(WorkDirectoryError, match="does not exist"):
        await work.start(tmp_path / "missing")
    with pytest.raises(WorkDirectoryError, match="absolute"):
        await work.start("relative")
    assert work.manager.session_count == 0


async def test_start_refuses_a_directory_outside_the_allowed_roots(
    clock: Clock, tmp_path: Path
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    async with opened(clock, WorkConfig(allowed_roots=(allowed,))) as (manager, work):
        await work.start(allowed)
        with pytest.raises(WorkDirectoryError, match="outside the allowed roots"):
            await work.start(outside)
        assert manager.session_count == 1


async def test_a_bound_session_resumes_only_with_its_token(work: WorkSessions, repo: Path) -> None:
    started = await work.start(repo, bind_client=True)
    token = started.session.token
    assert token is not None
    with pytest.raises(triact.SessionSecurityError, match="pass its token"):
        await work.start(repo)
    resumed = await work.start(repo, token=token)
    assert resumed.session.id == started.session.id
    assert resumed.session.token is None  # a token is shown once, at creation


async def test_a_throttled_start_keeps_its_retry_after(clock: Clock, repo: Path) -> None:
    async with opened(clock, security_max_failures=2) as (_, work):
        started = await work.start(repo, bind_client=True)
        for _ in range(2):
            with pytest.raises(triact.SessionSecurityError, match="pass its token"):
                await work.start(repo, token="wrong")
        with pytest.raises(triact.SessionThrottledError) as refused:
            await work.start(repo, token="wrong")
        assert refused.value.retry_after > 0
        assert "live session of this working directory" in str(refused.value)
        assert (await work.start(repo, token=started.session.token)).session.id == (
            started.session.id
        )


async def test_an_expired_session_is_replaced(clock: Clock, repo: Path) -> None:
    async with opened(clock, idle_ttl=60) as (manager, work):
        first = await work.start(repo)
        await manager.remove_session(first.session.id)
        second = await work.start(repo)
        assert second.created
        assert second.session.id != first.session.id


async def test_checkpoints_record_note_time_and_git_state(
    work: WorkSessions, repo: Path, clock: Clock
) -> None:
    session = (await work.start(repo)).session
    clock.now += 60
    first = await work.checkpoint(session, "looked around")
    assert (first.number, first.at, first.note, first.commit) == (
        1,
        clock.now,
        "looked around",
        None,
    )
    assert (first.repository, first.branch, first.head, first.dirty) == (
        True,
        "main",
        None,
        ("README.md",),
    )
    second = await work.checkpoint(session, "saved", commit=True)
    head = git(repo, "rev-parse", "HEAD").strip()
    assert (second.number, second.commit, second.head) == (2, head, head)
    assert second.dirty == ("README.md",)  # what the commit took in
    assert git(repo, "log", "-1", "--format=%s") == "triact checkpoint 2: saved\n"
    assert session.id in git(repo, "log", "-1", "--format=%b")
    record = work_record(await session.snapshot())
    assert [c.number for c in record.checkpoints] == [1, 2]


async def test_checkpoints_are_bounded(clock: Clock, tmp_path: Path) -> None:
    async with opened(clock, WorkConfig(max_checkpoints=2)) as (_, work):
        session = (await work.start(tmp_path)).session
        for i in range(4):
            await work.checkpoint(session, f"n{i}")
        record = work_record(await session.snapshot())
        assert [c.note for c in record.checkpoints] == ["n2", "n3"]
        assert record.checkpoint_count == 4


async def test_checkpoint_commit_outside_a_repository_records_nothing(
    work: WorkSessions, tmp_path: Path
) -> None:
    session = (await work.start(tmp_path)).session
    before = await session.snapshot()
    with pytest.raises(NotAGitRepositoryError, match="not a git repository"):
        await work.checkpoint(session, "nope", commit=True)
    after = await session.snapshot()
    assert after.version == before.version
    plain = await work.checkpoint(session, "fine")  # without commit it is recorded
    assert (plain.repository, plain.head) == (False, None)


async def test_checkpoint_without_a_directory(work: WorkSessions) -> None:
    session = await work.manager.create_session("plain")
    point = await work.checkpoint(session, "no directory")
    assert not point.repository
    with pytest.raises(WorkDirectoryError, match="no working directory"):
        await work.checkpoint(session, commit=True)


async def test_checkpoint_note_is_bounded(clock: Clock, tmp_path: Path) -> None:
    async with opened(clock, WorkConfig(max_note_chars=5)) as (_, work):
        session = (await work.start(tmp_path)).session
        with pytest.raises(WorkLimitError, match="max_note_chars"):
            await work.checkpoint(session, "too long")


async def test_a_clobbered_work_record_is_reported(work: WorkSessions, tmp_path: Path) -> None:
    session = (await work.start(tmp_path)).session
    await session.update(lambda state: attrs.evolve(state, data={WORK_DATA_KEY: "junk"}))
    with pytest.raises(WorkDataError, match="remove the key"):
        await work.checkpoint(session)


async def test_status_reports_without_changing_anything(work: WorkSessions, repo: Path) -> None:
    session = (await work.start(repo)).session
    await work.checkpoint(session, "one")
    version = (await session.snapshot()).version
    report = await work.status(session)
    assert (report.version, report.checkpoint_count) == (version, 1)
    assert report.last_checkpoint is not None
    assert report.last_checkpoint.note == "one"
    assert (await session.snapshot()).version == version


async def test_end_writes_a_handoff_that_the_next_start_shows(
    work: WorkSessions, repo: Path, clock: Clock
) -> None:
    session = (await work.start(repo, project="alpha")).session
    await work.checkpoint(session, "first")
    await session.add_thread("critic")
    await session.record_analysis("is it good?", ["yes"])
    request = await session.begin_request("c1", tool_name="build")
    await session.fail_request(request.id, "compiler exploded")
    clock.now += 600
    ended = await work.end(session, write_handoff=True)
    assert ended.stored
    assert ended.file_error is None
    handoff = ended.handoff
    assert handoff.file == str(repo / ".triact-handoff.md")
    assert (handoff.ended_at, handoff.project, handoff.analyses) == (clock.now, "alpha", 1)
    assert [c.note for c in handoff.checkpoints] == ["first"]
    assert [(t.name, t.messages) for t in handoff.threads] == [("critic", 0)]
    assert (handoff.requests.failed, handoff.failed_requests[0].error) == (1, "compiler exploded")
    text = (repo / ".triact-handoff.md").read_text()
    assert "# Handoff: alpha" in text
    assert "compiler exploded" in text
    assert "first" in text
    with pytest.raises(triact.SessionNotFoundError):
        await session.snapshot()

    again = await work.start(repo)
    assert again.created
    assert again.session.id != session.id
    previous = again.report.previous_handoff
    assert previous is not None
    assert previous.session_id == session.id
    assert previous == handoff


async def test_end_without_the_file_still_stores_the_handoff(
    work: WorkSessions, repo: Path
) -> None:
    session = (await work.start(repo)).session
    ended = await work.end(session)
    assert ended.stored
    assert ended.handoff.file is None
    assert not (repo / ".triact-handoff.md").exists()
    report = (await work.start(repo)).report
    assert report.previous_handoff is not None
    assert report.previous_handoff.session_id == session.id


async def test_an_unwritable_handoff_file_is_reported_not_raised(
    work: WorkSessions, repo: Path
) -> None:
    session = (await work.start(repo)).session
    (repo / ".triact-handoff.md").mkdir()  # a directory where the file should go
    ended = await work.end(session, write_handoff=True)
    assert ended.stored
    assert ended.file_error is not None
    assert "not written" in ended.file_error
    assert str(repo) not in ended.file_error  # no server path in what a client sees
    assert sorted(os.listdir(repo)) == [".git", ".triact-handoff.md", "README.md"]  # no leftovers


async def test_a_symlinked_handoff_file_is_replaced_not_followed(
    work: WorkSessions, repo: Path, tmp_path: Path
) -> None:
    target = tmp_path / "outside.md"
    target.write_text("keep me\n")
    (repo / ".triact-handoff.md").symlink_to(target)
    await work.end((await work.start(repo)).session, write_handoff=True)
    assert target.read_text() == "keep me\n"
    assert not (repo / ".triact-handoff.md").is_symlink()


async def test_handoffs_survive_a_restart(
    clock: Clock, repo: Path, durable_store: StoreMaker
) -> None:
    async with opened(clock, store=durable_store()) as (_, work):
        first = await work.start(repo)
        await work.checkpoint(first.session, "before the restart")
    async with opened(clock, store=durable_store()) as (_, work):
        resumed = await work.start(repo)  # the session survived, and so did the index
        assert not resumed.created
        assert resumed.session.id == first.session.id
        assert resumed.report.last_checkpoint is not None
        await work.end(resumed.session)
    async with opened(clock, store=durable_store()) as (_, work):
        report = (await work.start(repo)).report
        assert report.previous_handoff is not None
        assert report.previous_handoff.checkpoints[0].note == "before the restart"


async def test_other_store_kinds_keep_the_work_data_in_memory(
    clock: Clock, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from triact.testing import FaultyStore

    async with opened(clock, store=FaultyStore(triact.MemoryStore())) as (_, work):
        session = (await work.start(repo)).session
        ended = await work.end(session)
        assert ended.stored
        report = (await work.start(repo)).report
        assert report.previous_handoff is not None
    assert "keeps directory records, handoffs and reflections in memory" in caplog.text


async def test_a_handoff_the_store_cannot_keep_is_reported_after_the_end(
    clock: Clock, tmp_path: Path, sqlite_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triact.work import _sqlite as work_sqlite

    monkeypatch.setattr(work_sqlite, "FTS_MODULE", "fts_nope")  # the tables cannot be made
    config = triact.SessionConfig(store=triact.SqliteStore(sqlite_path), wall_clock=clock)
    async with triact.open_session_manager(config) as manager:
        session = await manager.create_session("plain", tmp_path)
        ended = await WorkSessions(manager).end(session, write_handoff=True)
        assert not ended.stored
        assert ended.store_error is not None
        assert "FTS5" in ended.store_error
        assert ended.handoff.file == str(tmp_path / ".triact-handoff.md")  # the file is there
        assert manager.session_count == 0


async def test_a_handoff_is_found_through_a_symlinked_directory(
    work: WorkSessions, repo: Path, tmp_path: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(repo)
    session = await work.manager.create_session("made by hand", link)
    assert (await session.snapshot()).working_directory == str(link)  # kept unresolved
    await work.end(session, write_handoff=True)
    report = (await work.start(repo)).report
    assert report.previous_handoff is not None
    assert report.previous_handoff.session_id == session.id
    assert report.previous_handoff.file == str(repo / ".triact-handoff.md")


class FailingWrites(triact.SqliteStore):
    """Once armed, fails every write, knowing that nothing was saved."""

    armed = False

    async def write(self, state: triact.SessionState, **kwargs: object) -> None:
        if self.armed:
            await trio.lowlevel.checkpoint()
            raise triact.SessionStoreError("the disk is full", applied=False)
        await super().write(state, **kwargs)  # type: ignore[arg-type]


async def test_a_checkpoint_not_recorded_after_its_commit_names_the_commit(
    clock: Clock, repo: Path, tmp_path: Path
) -> None:
    store = FailingWrites(tmp_path / "sessions.db")
    async with opened(clock, store=store) as (_, work):
        session = (await work.start(repo)).session
        store.armed = True
        with pytest.raises(triact.SessionStoreError) as failed:
            await work.checkpoint(session, "saved", commit=True)
    head = git(repo, "rev-parse", "HEAD").strip()
    assert str(failed.value).startswith(f"the checkpoint commit {head} was made in git and stays")
    assert failed.value.commit == head  # type: ignore[attr-defined]
    assert failed.value.applied is False
    assert isinstance(failed.value.__cause__, triact.SessionStoreError)


async def test_a_checkpoint_over_the_size_limit_after_its_commit_names_the_commit(
    clock: Clock, repo: Path
) -> None:
    async with opened(clock, max_state_bytes=2048) as (_, work):
        session = (await work.start(repo)).session
        with pytest.raises(triact.SessionLimitError) as failed:
            await work.checkpoint(session, "n" * 1900, commit=True)
        assert work_record(await session.snapshot()).checkpoint_count == 0
    head = git(repo, "rev-parse", "HEAD").strip()
    said = str(failed.value)
    assert said.startswith(f"the checkpoint commit {head} was made in git and stays")
    assert "nothing was committed" not in said
    assert "max_state_bytes" in said


def test_a_checkpoint_not_recorded_after_its_commit_names_it_through_triact_serve(
    repo: Path,
) -> None:
    with serving("--semantic", "off", "--max-state-bytes", "2048") as call:
        started = call("session_start", {"working_directory": str(repo)})["structuredContent"]
        arguments = {"session_id": started["session_id"], "note": "n" * 1900, "commit": True}
        failed = call("session_checkpoint", arguments)
    head = git(repo, "rev-parse", "HEAD").strip()
    error = failed["_meta"]["triact/error"]
    assert (failed["isError"], error["code"], error["commit"]) == (True, "limit_exceeded", head)
    assert error["message"].startswith(f"the checkpoint commit {head} was made in git")
    assert "nothing was committed" not in error["message"]
