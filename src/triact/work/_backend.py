"""Where the work layer keeps what outlives a session: the index of live sessions by
directory, the last handoff of each directory, and notes (reflections and conversation
excerpts) with their embedding vectors. :class:`WorkStore` is the interface;
:class:`MemoryWorkStore` keeps them in memory, for as long as the WorkSessions that
owns it."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import trio

from ._records import Handoff, NoteKind, NoteScope, Reflection, SearchMethod
from ._search import text_match


class WorkStore(abc.ABC):
    """The work layer's storage. Methods raise SessionStoreError (or a WorkError) for
    failures. Directories are resolved paths; a project of None is its own bucket.

    Everything is kept per ``principal`` (the authenticated caller's name, None for an
    unauthenticated one, each its own bucket): a method reads only what was written
    with the same principal, and a bound drops only that principal's oldest notes."""

    #: What ranks :meth:`search` results.
    search_method: ClassVar[SearchMethod]

    @abc.abstractmethod
    async def prepare(self) -> None:
        """Make ready (create tables); safe to call more than once."""

    @abc.abstractmethod
    async def session_for(self, directory: str, *, principal: str | None = None) -> str | None:
        """The id last recorded for ``directory`` (the session may be gone since)."""

    @abc.abstractmethod
    async def remember(
        self, directory: str, session_id: str, now: float, *, principal: str | None = None
    ) -> None:
        """Record ``session_id`` as the session of ``directory``."""

    async def claim(
        self,
        directory: str,
        session_id: str,
        now: float,
        *,
        expected: str | None,
        principal: str | None = None,
    ) -> str | None:
        """Record ``session_id`` as the session of ``directory`` if the store names
        none for it, or still names ``expected`` (the session a start found gone):
        None once recorded; else the id it names (another process's start recorded
        it meanwhile), and nothing is changed. A store shared by several processes
        makes this one atomic step; this default, a read then :meth:`remember`, is
        right only for a store that one process uses."""
        held = await self.session_for(directory, principal=principal)
        if held is not None and held != expected:
            return held
        await self.remember(directory, session_id, now, principal=principal)
        return None

    @abc.abstractmethod
    async def handoff(self, directory: str, *, principal: str | None = None) -> Handoff | None:
        """The last handoff written for ``directory``."""

    @abc.abstractmethod
    async def finish(
        self, directory: str, session_id: str, handoff: Handoff, *, principal: str | None = None
    ) -> None:
        """Keep ``handoff`` as the directory's last, and forget ``session_id`` as its
        session (if it still is), together."""

    @abc.abstractmethod
    async def add_note(
        self,
        kind: NoteKind,
        content: str,
        tags: tuple[str, ...],
        project: str | None,
        now: float,
        keep: int,
        *,
        principal: str | None = None,
    ) -> tuple[Reflection, int, int]:
        """Store a note of ``kind`` (a reflection or a conversation excerpt; each kind
        has ids of its own), dropping the oldest of its kind and project beyond
        ``keep``; returns it, how many its project keeps and how many were dropped."""

    @abc.abstractmethod
    async def search_notes(
        self, scope: NoteScope, terms: Sequence[str], limit: int
    ) -> list[tuple[Reflection, float]]:
        """The best ``limit`` notes in ``scope`` for the terms (any of them), with their
        scores, best first, newest first among equal scores."""

    # -- embedding vectors (search by meaning); a store that keeps none says so ------

    #: Whether this store keeps vectors (the methods below); without, search is by
    #: words alone.
    keeps_vectors: ClassVar[bool] = False

    async def vectors(
        self, scope: NoteScope, model: str, *, after: int = 0
    ) -> list[tuple[int, float, bytes]]:
        """``(id, created_at, vector)`` of every note in ``scope`` with an id above
        ``after`` that has a vector made by ``model``, by id."""
        raise NotImplementedError

    async def vector_signature(self, scope: NoteScope, model: str) -> tuple[int, int, int]:
        """How many notes :meth:`vectors` would give, and their lowest and highest ids
        (0 for none): what a cache of them checks (ids only grow). This one reads them
        all; a store that can count them where they are does better."""
        ids = [row[0] for row in await self.vectors(scope, model)]
        return len(ids), min(ids, default=0), max(ids, default=0)

    async def notes(
        self, kind: NoteKind, ids: Sequence[int], *, principal: str | None = None
    ) -> list[Reflection]:
        """The notes of ``kind`` with these ids that are still kept (and ``principal``'s),
        in any order."""
        raise NotImplementedError

    async def missing_vectors(
        self, kind: NoteKind, model: str, limit: int
    ) -> list[tuple[int, str]]:
        """``(id, content)`` of up to ``limit`` notes of ``kind`` with no vector made by
        ``model``, newest first, whoever's (for the background embedding only)."""
        raise NotImplementedError

    async def put_vectors(
        self, kind: NoteKind, model: str, rows: Sequence[tuple[int, bytes]]
    ) -> None:
        """Keep ``(id, vector)`` for notes of ``kind`` still kept (others are skipped),
        replacing a vector of another model."""
        raise NotImplementedError


#: A bucket of notes: (principal, project).
_Bucket = tuple[str | None, str | None]


class _Notes:
    __slots__ = ("by_project", "next_id", "vectors")

    def __init__(self) -> None:
        self.by_project: dict[_Bucket, list[Reflection]] = {}
        self.vectors: dict[int, tuple[str, bytes]] = {}
        self.next_id = 1

    def kept(
        self, principal: str | None = None, *, everyone: bool = False
    ) -> dict[int, Reflection]:
        return {
            note.id: note
            for (owner, _), notes in self.by_project.items()
            if everyone or owner == principal
            for note in notes
        }


class _MemoryData:
    __slots__ = ("directories", "handoffs", "notes")

    def __init__(self) -> None:
        # Keyed by (principal, directory).
        self.directories: dict[tuple[str | None, str], str] = {}
        self.handoffs: dict[tuple[str | None, str], Handoff] = {}
        self.notes: dict[NoteKind, _Notes] = {"reflection": _Notes(), "conversation": _Notes()}


class MemoryWorkStore(WorkStore):
    """In memory; search is a simple scored text match ("text-match")."""

    search_method = "text-match"
    keeps_vectors = True

    def __init__(self) -> None:
        self._data = _MemoryData()

    async def prepare(self) -> None:
        await trio.lowlevel.checkpoint()

    async def session_for(self, directory: str, *, principal: str | None = None) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._data.directories.get((principal, directory))

    async def remember(
        self, directory: str, session_id: str, now: float, *, principal: str | None = None
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._data.directories[principal, directory] = session_id

    async def handoff(self, directory: str, *, principal: str | None = None) -> Handoff | None:
        await trio.lowlevel.checkpoint()
        return self._data.handoffs.get((principal, directory))

    async def finish(
        self, directory: str, session_id: str, handoff: Handoff, *, principal: str | None = None
    ) -> None:
        await trio.lowlevel.checkpoint()
        key = (principal, directory)
        self._data.handoffs[key] = handoff
        if self._data.directories.get(key) == session_id:
            del self._data.directories[key]

    async def add_note(
        self,
        kind: NoteKind,
        content: str,
        tags: tuple[str, ...],
        project: str | None,
        now: float,
        keep: int,
        *,
        principal: str | None = None,
    ) -> tuple[Reflection, int, int]:
        await trio.lowlevel.checkpoint()
        notes = self._data.notes[kind]
        note = Reflection(notes.next_id, content, tags, project, now)
        notes.next_id += 1
        kept = notes.by_project.setdefault((principal, project), [])
        kept.append(note)
        dropped = max(0, len(kept) - keep)
        for gone in kept[:dropped]:
            notes.vectors.pop(gone.id, None)
        del kept[:dropped]
        return note, len(kept), dropped

    def _candidates(self, scope: NoteScope) -> list[Reflection]:
        by_project = self._data.notes[scope.kind].by_project
        if scope.all_projects:
            buckets = [
                notes for (owner, _), notes in by_project.items() if owner == scope.principal
            ]
        else:
            buckets = [by_project.get((scope.principal, scope.project), [])]
        wanted = set(scope.tags)
        return [note for bucket in buckets for note in bucket if wanted.issubset(note.tags)]

    async def search_notes(
        self, scope: NoteScope, terms: Sequence[str], limit: int
    ) -> list[tuple[Reflection, float]]:
        await trio.lowlevel.checkpoint()
        return text_match(self._candidates(scope), terms, limit)

    async def vectors(
        self, scope: NoteScope, model: str, *, after: int = 0
    ) -> list[tuple[int, float, bytes]]:
        await trio.lowlevel.checkpoint()
        vectors = self._data.notes[scope.kind].vectors
        found = [
            (note.id, note.created_at, vectors[note.id][1])
            for note in self._candidates(scope)
            if note.id > after and vectors.get(note.id, ("", b""))[0] == model
        ]
        found.sort()
        return found

    async def notes(
        self, kind: NoteKind, ids: Sequence[int], *, principal: str | None = None
    ) -> list[Reflection]:
        await trio.lowlevel.checkpoint()
        kept = self._data.notes[kind].kept(principal)
        return [kept[note_id] for note_id in ids if note_id in kept]

    async def missing_vectors(
        self, kind: NoteKind, model: str, limit: int
    ) -> list[tuple[int, str]]:
        await trio.lowlevel.checkpoint()
        notes = self._data.notes[kind]
        missing = [
            (note.id, note.content)
            for note in notes.kept(everyone=True).values()
            if notes.vectors.get(note.id, ("", b""))[0] != model
        ]
        missing.sort(reverse=True)
        return missing[:limit]

    async def put_vectors(
        self, kind: NoteKind, model: str, rows: Sequence[tuple[int, bytes]]
    ) -> None:
        await trio.lowlevel.checkpoint()
        notes = self._data.notes[kind]
        kept = notes.kept(everyone=True)
        for note_id, vector in rows:
            if note_id in kept:
                notes.vectors[note_id] = (model, vector)
