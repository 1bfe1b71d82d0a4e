"""Where the work layer keeps what outlives a session: the index of live sessions by
directory, the last handoff of each directory, and reflections. :class:`WorkStore` is
the interface; :class:`MemoryWorkStore` keeps them in memory, for as long as the
WorkSessions that owns it."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import trio

from ._records import Handoff, Reflection, SearchMethod
from ._search import text_match


class WorkStore(abc.ABC):
    """The work layer's storage. Methods raise SessionStoreError (or a WorkError) for
    failures. Directories are resolved paths; a project of None is its own bucket."""

    #: What ranks :meth:`search` results.
    search_method: ClassVar[SearchMethod]

    @abc.abstractmethod
    async def prepare(self) -> None:
        """Make ready (create tables); safe to call more than once."""

    @abc.abstractmethod
    async def session_for(self, directory: str) -> str | None:
        """The id last recorded for ``directory`` (the session may be gone since)."""

    @abc.abstractmethod
    async def remember(self, directory: str, session_id: str, now: float) -> None:
        """Record ``session_id`` as the session of ``directory``."""

    @abc.abstractmethod
    async def handoff(self, directory: str) -> Handoff | None:
        """The last handoff written for ``directory``."""

    @abc.abstractmethod
    async def finish(self, directory: str, session_id: str, handoff: Handoff) -> None:
        """Keep ``handoff`` as the directory's last, and forget ``session_id`` as its
        session (if it still is), together."""

    @abc.abstractmethod
    async def add_reflection(
        self,
        content: str,
        tags: tuple[str, ...],
        project: str | None,
        now: float,
        keep: int,
    ) -> tuple[Reflection, int, int]:
        """Store a reflection, dropping the oldest of its project beyond ``keep``;
        returns it, how many its project keeps and how many were dropped."""

    @abc.abstractmethod
    async def search(
        self,
        terms: Sequence[str],
        project: str | None,
        tags: tuple[str, ...],
        limit: int,
        *,
        all_projects: bool,
    ) -> list[tuple[Reflection, float]]:
        """The best ``limit`` reflections for the terms (any of them), with their scores,
        best first, newest first among equal scores; only those with every tag in
        ``tags``, of ``project`` unless ``all_projects``."""


class _MemoryData:
    __slots__ = ("directories", "handoffs", "next_id", "reflections")

    def __init__(self) -> None:
        self.directories: dict[str, str] = {}
        self.handoffs: dict[str, Handoff] = {}
        self.reflections: dict[str | None, list[Reflection]] = {}
        self.next_id = 1


class MemoryWorkStore(WorkStore):
    """In memory; search is a simple scored text match ("text-match")."""

    search_method = "text-match"

    def __init__(self) -> None:
        self._data = _MemoryData()

    async def prepare(self) -> None:
        await trio.lowlevel.checkpoint()

    async def session_for(self, directory: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._data.directories.get(directory)

    async def remember(self, directory: str, session_id: str, now: float) -> None:
        await trio.lowlevel.checkpoint()
        self._data.directories[directory] = session_id

    async def handoff(self, directory: str) -> Handoff | None:
        await trio.lowlevel.checkpoint()
        return self._data.handoffs.get(directory)

    async def finish(self, directory: str, session_id: str, handoff: Handoff) -> None:
        await trio.lowlevel.checkpoint()
        self._data.handoffs[directory] = handoff
        if self._data.directories.get(directory) == session_id:
            del self._data.directories[directory]

    async def add_reflection(
        self,
        content: str,
        tags: tuple[str, ...],
        project: str | None,
        now: float,
        keep: int,
    ) -> tuple[Reflection, int, int]:
        await trio.lowlevel.checkpoint()
        data = self._data
        reflection = Reflection(data.next_id, content, tags, project, now)
        data.next_id += 1
        kept = data.reflections.setdefault(project, [])
        kept.append(reflection)
        dropped = max(0, len(kept) - keep)
        del kept[:dropped]
        return reflection, len(kept), dropped

    async def search(
        self,
        terms: Sequence[str],
        project: str | None,
        tags: tuple[str, ...],
        limit: int,
        *,
        all_projects: bool,
    ) -> list[tuple[Reflection, float]]:
        await trio.lowlevel.checkpoint()
        buckets = (
            list(self._data.reflections.values())
            if all_projects
            else [self._data.reflections.get(project, [])]
        )
        wanted = set(tags)
        candidates = [r for bucket in buckets for r in bucket if wanted.issubset(r.tags)]
        return text_match(candidates, terms, limit)
