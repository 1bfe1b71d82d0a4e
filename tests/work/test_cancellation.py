"""A cancelled checkpoint commit or start leaves nothing behind: each is cancelled at
every step it takes (each git command, before it starts and after it ends)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import triact
from triact.work import work_record
from triact.work._git import Git

from .conftest import git, opened


class Steps:
    """Counts the git commands run (through ``Git._spawn``, where every one starts)
    and cancels ``scope`` at command ``at``: before it starts, or once it has ended."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.at = 0
        self.after = False
        self.scope: trio.CancelScope | None = None
        spawn = Git._spawn

        async def counting(git: Git, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            hit = self.count == self.at and self.scope is not None
            if hit and not self.after:
                self.scope.cancel()  # type: ignore[union-attr]
            result = await spawn(git, *args, **kwargs)
            if hit and self.after:
                self.scope.cancel()  # type: ignore[union-attr]
            return result

        monkeypatch.setattr(Git, "_spawn", counting)

    @contextmanager
    def cancelling(self, at: int, *, after: bool) -> Iterator[trio.CancelScope]:
        self.count, self.at, self.after = 0, at, after
        with trio.CancelScope() as self.scope:
            yield self.scope
        self.scope = None


def _leftovers(repo: Path) -> list[str]:
    return sorted(
        p.name for p in (repo / ".git").iterdir() if "index" in p.name and p.name != "index"
    )


def _staged(repo: Path) -> str:
    """What the index holds that HEAD does not (nothing, after any checkpoint)."""
    return git(repo, "diff", "--cached", "--name-only")


@pytest.mark.parametrize("after", [False, True], ids=["before-step", "after-step"])
async def test_a_cancelled_checkpoint_commit_leaves_nothing_staged(
    repo: Path, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first")
    steps = Steps(monkeypatch)
    async with opened() as (_, work):
        session = (await work.start(repo)).session
        done = 0
        for at in range(1, 40):
            (repo / f"file{at}.txt").write_text(f"{at}\n")
            head = git(repo, "rev-parse", "HEAD").strip()
            with steps.cancelling(at, after=after) as scope:
                point = await work.checkpoint(session, f"try {at}", commit=True)
            if not scope.cancelled_caught:  # it ran to the end: it happened
                done += 1
                assert point.commit == git(repo, "rev-parse", "HEAD").strip()
                if not scope.cancel_called:  # every step was tried
                    break
            assert work_record(await session.snapshot()).checkpoint_count == done, at
            assert _leftovers(repo) == [], at
            assert _staged(repo) == "", at
            moved = git(repo, "rev-parse", "HEAD").strip()
            if moved != head:  # cancelled once HEAD had moved: the commit took it all
                assert f"file{at}.txt" in git(repo, "show", "--name-only", "--format=", moved)
                assert git(repo, "status", "--porcelain") == ""
            else:
                assert f"?? file{at}.txt" in git(repo, "status", "--porcelain")
        else:
            pytest.fail("the checkpoint never finished")
        assert at > 8  # lock, add, write-tree, commit-tree, update-ref, ...: each cancelled


@pytest.mark.parametrize("bind_client", [False, True])
@pytest.mark.parametrize("after", [False, True], ids=["before-step", "after-step"])
async def test_a_cancelled_start_leaves_no_session(
    repo: Path, monkeypatch: pytest.MonkeyPatch, after: bool, bind_client: bool
) -> None:
    steps = Steps(monkeypatch)
    async with opened() as (manager, work):
        for at in range(1, 20):
            with steps.cancelling(at, after=after) as scope:
                started = await work.start(repo, bind_client=bind_client)
            if not scope.cancel_called:
                break
            if not scope.cancelled_caught:  # cancelled as it returned: it happened
                await manager.remove_session(started.session.id)
            assert manager.session_count == 0, at
        else:
            pytest.fail("the start never finished")
        # The start that finished made the directory's session, and the next start
        # (with no token) is refused only because that one is bound.
        assert started.created
        assert manager.session_count == 1
        if bind_client:
            with pytest.raises(triact.SessionSecurityError):
                await work.start(repo)
        else:
            assert (await work.start(repo)).session.id == started.session.id


class TaskSteps(trio.abc.Instrument):
    """Cancels ``scope`` once the current task has run ``at`` steps: the cancellation
    lands at its next checkpoint, whatever it awaits (git or not)."""

    def __init__(self, scope: trio.CancelScope, at: int) -> None:
        self.scope, self.at, self.steps = scope, at, 0
        self.task = trio.lowlevel.current_task()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1
            if self.steps == self.at:
                self.scope.cancel()


@contextmanager
def cancelled_at_step(at: int) -> Iterator[trio.CancelScope]:
    with trio.CancelScope() as scope:
        instrument = TaskSteps(scope, at)
        trio.lowlevel.add_instrument(instrument)
        try:
            yield scope
        finally:
            trio.lowlevel.remove_instrument(instrument)


async def test_a_start_cancelled_at_any_checkpoint_leaves_no_session(repo: Path) -> None:
    async with opened() as (manager, work):
        for at in range(1, 400):
            with cancelled_at_step(at) as scope:
                started = await work.start(repo, bind_client=True)
            if not scope.cancel_called:
                break
            if not scope.cancelled_caught:  # cancelled as it returned: it happened
                await manager.remove_session(started.session.id)
            assert manager.session_count == 0, at
        else:
            pytest.fail("the start never finished")
        assert at > 10
        assert started.session.token is not None
        await work.start(repo, token=started.session.token)
        assert manager.session_count == 1


async def test_a_checkpoint_commit_cancelled_at_any_checkpoint_leaves_nothing_staged(
    repo: Path,
) -> None:
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first")
    async with opened() as (_, work):
        session = (await work.start(repo)).session
        for at in range(1, 1000):
            (repo / f"file{at}.txt").write_text(f"{at}\n")
            with cancelled_at_step(at) as scope:
                await work.checkpoint(session, commit=True)
            if not scope.cancel_called:
                break
            assert _leftovers(repo) == [], at
            assert _staged(repo) == "", at
        else:
            pytest.fail("the checkpoint never finished")
        assert at > 20
