"""Hybrid search: notes ranked by their words (bm25, or the memory store's text match)
and their meaning (the cosine similarity of embeddings), weighted by age.

For a query, the candidates are the best word matches and the notes most similar in
meaning (at least ``WorkConfig.min_similarity``); each gets

    score = (TEXT_WEIGHT * text + (1 - TEXT_WEIGHT) * similarity) * age

with ``text`` its word score divided by the best word score of the search, times the
square of the share of the query's words it has (0 without a word match: a note that
has only a common word of the query, such as "on", counts for little),
``similarity`` its cosine similarity to the query (a negative one counts as 0), and
``age = (1 - w) + w * 0.5 ** (age_days / half_life_days)`` for the recency weight ``w``
and half-life of the configuration. An exact word match keeps at least half the score
of a best match, and a match by meaning alone at most half: words rank first when
they match.

A note's vector is made when it is stored (its own embedding is all a store waits
for) and kept beside it in the store; notes without one (stored while the model could
not load, by another process with search by meaning off, or before the extra was
installed) get theirs in the background, a few at a time, once a search sees them
missing. Until then they are found by their words.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ..sessions import SessionStoreError
from ._backend import WorkStore
from ._config import WorkConfig
from ._embedding import Embedder, EmbeddingUnavailableError
from ._errors import WorkStoreError
from ._records import NoteKind, NoteScope, Reflection, SearchMethod
from ._search import coverage

logger = logging.getLogger("triact.work")

#: The share of a hybrid score that comes from the words (the rest from meaning).
TEXT_WEIGHT = 0.5
#: Candidates taken from each side, as a multiple of the search's limit (at least 50).
CANDIDATES = 4
#: Notes embedded per background batch, so that a store waits for at most this many
#: embeddings ahead of its own.
BACKFILL_BATCH = 8
#: Seconds after which a search looks again for notes without vectors (another process
#: may have stored some).
RECHECK_SECONDS = 60.0
_DAY = 86_400.0


#: Sets of vectors (one per kind, principal, project and tags searched) kept in memory.
CACHED_SETS = 8


class _Cached:
    """The vectors of one kind, project and tags, by id, as one matrix."""

    __slots__ = ("high", "ids", "index", "matrix", "signature")

    def __init__(self, signature: tuple[int, int, int], ids: list[int], matrix: Any) -> None:
        self.signature = signature
        self.ids = ids
        self.index = {note_id: row for row, note_id in enumerate(ids)}
        self.matrix = matrix
        self.high = ids[-1] if ids else 0

    @classmethod
    def empty(cls, signature: tuple[int, int, int]) -> _Cached:
        import numpy as np

        return cls(signature, [], np.zeros((0, 0), dtype="<f4"))

    def updated(
        self, first: int, rows: list[tuple[int, float, bytes]], signature: tuple[int, int, int]
    ) -> _Cached:
        """These vectors from row ``first`` on, and ``rows`` after them."""
        import numpy as np

        ids = self.ids[first:] + [row[0] for row in rows]
        parts = [self.matrix[first:]] if len(self.ids) > first else []
        if rows:
            added = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4")
            parts.append(added.reshape(len(rows), -1))
        matrix = np.concatenate(parts) if parts else np.zeros((0, 0), dtype="<f4")
        return _Cached(signature, ids, matrix)


class Semantic:
    """Search by meaning for one WorkSessions: its embedder, and the background
    backfill of missing vectors (run in ``nursery``)."""

    def __init__(
        self,
        store: WorkStore,
        embedder: Embedder,
        config: WorkConfig,
        nursery: trio.Nursery,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self._nursery = nursery
        self._backfills: dict[NoteKind, trio.Event] = {}
        self._cache: dict[NoteScope, _Cached] = {}
        self._checked: dict[NoteKind, float] = {}

    @property
    def usable(self) -> bool:
        return self.embedder.failed is None

    async def embed_note(self, kind: NoteKind, note: Reflection) -> bool:
        """Make and keep the vector of a note just stored; False (and a log line) if the
        model could not (a later search fills it in)."""
        if not self.usable:
            await trio.lowlevel.checkpoint()
            return False
        try:
            (vector,) = await self.embedder.embed([note.content])
        except EmbeddingUnavailableError:
            self._checked.pop(kind, None)
            return False
        try:
            await self.store.put_vectors(kind, self.embedder.name, [(note.id, vector)])
        except (SessionStoreError, WorkStoreError):  # the note is kept: a search fills it in
            logger.warning("keeping the vector of %s %d failed", kind, note.id, exc_info=True)
            self._checked.pop(kind, None)
            return False
        return True

    async def search(
        self, scope: NoteScope, query: str, terms: Sequence[str], limit: int, *, now: float
    ) -> tuple[SearchMethod, list[tuple[Reflection, float, float | None]]]:
        """The best ``limit`` notes in ``scope``, as ``(note, score, similarity)``, and
        how they were ranked: "hybrid", or the store's word search if the model cannot
        be had."""
        wide = max(limit * CANDIDATES, 50)
        word_hits = await self.store.search_notes(scope, terms, wide)
        if self.usable:
            try:
                (query_vector,) = await self.embedder.embed([query])
            except EmbeddingUnavailableError:
                pass
            else:
                self._maybe_backfill(scope.kind)
                ranked = await self._hybrid(query_vector, terms, word_hits, scope, limit, now)
                return "hybrid", ranked
        return self.store.search_method, [(note, score, None) for note, score in word_hits[:limit]]

    async def _hybrid(
        self,
        query_vector: bytes,
        terms: Sequence[str],
        word_hits: list[tuple[Reflection, float]],
        scope: NoteScope,
        limit: int,
        now: float,
    ) -> list[tuple[Reflection, float, float | None]]:
        import numpy as np  # with the semantic extra only

        cached = await self._vectors(scope)
        similarity: dict[int, float] = {}
        semantic_ids: list[int] = []
        if cached.ids:
            scores = cached.matrix @ np.frombuffer(query_vector, dtype="<f4")
            wide = max(limit * CANDIDATES, 50)
            if len(scores) > wide:
                top = np.argpartition(-scores, wide)[:wide]
                top = top[np.argsort(-scores[top], kind="stable")]
            else:
                top = np.argsort(-scores, kind="stable")
            floor = self.config.min_similarity
            for i in top.tolist():
                value = float(scores[i])
                if value >= floor:
                    semantic_ids.append(cached.ids[i])
                    similarity[cached.ids[i]] = value
            for note, _ in word_hits:  # the word matches' similarities too
                row = cached.index.get(note.id)
                if row is not None and note.id not in similarity:
                    similarity[note.id] = float(scores[row])
        notes = {note.id: note for note, _ in word_hits}
        missing = [note_id for note_id in semantic_ids if note_id not in notes]
        if missing:
            for note in await self.store.notes(scope.kind, missing, principal=scope.principal):
                notes[note.id] = note
        best_text = max((score for _, score in word_hits), default=0.0)
        text = {
            note.id: score / best_text * coverage(note, terms) ** 2
            for note, score in word_hits
            if best_text > 0
        }
        weight = self.config.recency_weight
        half_life = self.config.recency_half_life_days * _DAY
        ranked = []
        for note_id, note in notes.items():
            sim = similarity.get(note_id)
            base = TEXT_WEIGHT * text.get(note_id, 0.0) + (1 - TEXT_WEIGHT) * max(sim or 0.0, 0.0)
            age = max(0.0, now - note.created_at)
            score = base * ((1 - weight) + weight * math.pow(0.5, age / half_life))
            ranked.append((note, score, sim))
        ranked.sort(key=lambda item: (-item[1], -item[0].created_at, -item[0].id))
        return ranked[:limit]

    async def _vectors(self, scope: NoteScope) -> _Cached:
        """The vectors a search compares with, from the cache if they are still what the
        store holds; only those stored since are read, when that is all that changed
        (oldest dropped, newest added)."""
        model = self.embedder.name
        key = attrs.evolve(scope, project=None) if scope.all_projects else scope
        signature = await self.store.vector_signature(scope, model)
        cached = self._cache.pop(key, None)
        if cached is not None and cached.signature != signature:
            count, low, _ = signature
            rows = await self.store.vectors(scope, model, after=cached.high)
            first = bisect.bisect_left(cached.ids, low)
            if len(cached.ids) - first + len(rows) == count:
                cached = cached.updated(first, rows, signature)
            else:
                cached = None
        if cached is None:
            rows = await self.store.vectors(scope, model)
            cached = _Cached.empty(signature).updated(0, rows, signature)
        self._cache[key] = cached  # the most recently used last
        while len(self._cache) > CACHED_SETS:
            del self._cache[next(iter(self._cache))]
        return cached

    # -- backfill ------------------------------------------------------------------

    def _maybe_backfill(self, kind: NoteKind) -> None:
        checked = self._checked.get(kind)
        now = trio.current_time()
        if kind in self._backfills or (checked is not None and now - checked < RECHECK_SECONDS):
            return
        self._nursery.start_soon(self.backfill, kind)

    async def backfill(self, kind: NoteKind) -> None:
        """Embed the notes of ``kind`` that have no vector, newest first, a few at a
        time, until none is left (or the model fails: then later searches try again).
        If that is under way already, wait for it instead."""
        running = self._backfills.get(kind)
        if running is not None:
            await running.wait()
            return
        finished = self._backfills[kind] = trio.Event()
        done = 0
        try:
            while True:
                missing = await self.store.missing_vectors(kind, self.embedder.name, BACKFILL_BATCH)
                if not missing:
                    self._checked[kind] = trio.current_time()
                    break
                vectors = await self.embedder.embed([content for _, content in missing])
                rows = [
                    (note_id, vector) for (note_id, _), vector in zip(missing, vectors, strict=True)
                ]
                await self.store.put_vectors(kind, self.embedder.name, rows)
                done += len(rows)
        except EmbeddingUnavailableError:
            pass
        except (SessionStoreError, WorkStoreError):  # said; a later search tries again
            logger.warning("embedding the stored %ss without a vector failed", kind, exc_info=True)
        finally:
            del self._backfills[kind]
            finished.set()
            if done:
                logger.info("embedded %d stored %s(s) that had no vector", done, kind)
