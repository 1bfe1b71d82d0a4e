"""Temporary git repositories, a settable wall clock, managers with work sessions, and
the session stores their work stores go with (memory, SQLite, Redis)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

import triact
from triact.work import Embedder, WorkConfig, WorkSessions, open_work_sessions


def git(directory: Path, *args: str) -> str:
    """Run git in ``directory`` (test set-up and checks: blocking is fine here)."""
    done = subprocess.run(["git", *args], cwd=directory, check=True, capture_output=True, text=True)
    return done.stdout


def make_repo(directory: Path, *, user: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    git(directory, "init", "-q", "-b", "main")
    if user:
        git(directory, "config", "user.name", "Test User")
        git(directory, "config", "user.email", "test@example.com")
    return directory


@pytest.fixture(autouse=True)
def _no_global_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing from the machine's git configuration or GIT_* environment reaches git.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_DIR",
        "GIT_WORK_TREE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository (user configured) with one uncommitted file."""
    directory = make_repo(tmp_path / "repo")
    (directory / "README.md").write_text("hello\n")
    return directory


class Clock:
    """A wall clock tests move by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@asynccontextmanager
async def opened(
    clock: Clock | None = None,
    config: WorkConfig | None = None,
    *,
    semantic: str = "off",
    embedder: Embedder | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[triact.SessionManager, WorkSessions]]:
    """A manager (``SessionConfig(**settings)``) and its work sessions: searching by
    words alone unless ``semantic`` says otherwise (test_semantic.py searches by
    meaning, with ``embedder`` or the semantic extra's model)."""
    if clock is not None:
        settings["wall_clock"] = clock
    config = attrs.evolve(config or WorkConfig(), semantic=semantic)
    async with (
        triact.open_session_manager(triact.SessionConfig(**settings)) as manager,
        open_work_sessions(manager, config, embedder=embedder) as work,
    ):
        yield manager, work


@pytest.fixture
async def work(clock: Clock) -> AsyncIterator[WorkSessions]:
    async with opened(clock) as (_, work):
        yield work


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


#: A new session store object on the same place each call (a restart, or another
#: process), whose work store is the one under test.
StoreMaker = Callable[[], "triact.SessionStore | None"]


def store_maker(
    request: pytest.FixtureRequest, kind: str, clock: Clock, sqlite_path: Path
) -> StoreMaker:
    """Memory (None: the manager's own, a work store in memory), a SQLite file, or a
    prefix of this test's own on the tests' Redis (skipped without one)."""
    if kind == "sqlite":
        return lambda: triact.SqliteStore(sqlite_path)
    if kind == "redis":
        place = request.getfixturevalue("redis_place")
        return lambda: triact.RedisStore(place.url, prefix=place.prefix, clock=clock)
    assert kind == "memory", kind
    return lambda: None


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, clock: Clock, sqlite_path: Path) -> StoreMaker:
    """Each kind of store in turn."""
    return store_maker(request, request.param, clock, sqlite_path)


@pytest.fixture(params=["sqlite", "redis"])
def durable_store(request: pytest.FixtureRequest, clock: Clock, sqlite_path: Path) -> StoreMaker:
    """Each store that outlives its process in turn: SQLite and Redis."""
    return store_maker(request, request.param, clock, sqlite_path)


def words_method(store: triact.SessionStore | None) -> str:
    """The method of a search by words alone with this store's work store."""
    if isinstance(store, triact.SqliteStore):
        return "fts5-bm25"
    if isinstance(store, triact.RedisStore):
        return "redis-bm25"
    return "text-match"
