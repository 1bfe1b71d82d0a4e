"""The work layer's values (frozen attrs), and how its record lives in a session's data.

A session's work record (its checkpoints and trusted operations) is kept in the
session's state, under the reserved key :data:`WORK_DATA_KEY` of ``state.data``, so
that it changes atomically with the session, through its actor, and lives, passivates,
survives restarts and goes exactly as the session does, in every store.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from ..sessions import SessionState
from ._errors import WorkDataError

#: The key of ``SessionState.data`` that holds the work record. Don't write it
#: through ``session_update``: it belongs to the work layer.
WORK_DATA_KEY = "triact.work"
#: Version of the work record's shape; records from a newer one are refused.
WORK_SCHEMA_VERSION = 1

#: What ranked a search: words and meaning ("hybrid": the text score and the cosine
#: similarity of embeddings, weighted by age), or words alone (SQLite FTS5's bm25, the
#: same bm25 computed in Redis, or the memory store's scored text match).
SearchMethod = Literal["hybrid", "fts5-bm25", "redis-bm25", "text-match"]
#: The two kinds of notes the work layer keeps and searches.
NoteKind = Literal["reflection", "conversation"]

converter = make_converter(forbid_extra_keys=True)


def _exactly(*kinds: type) -> Any:
    def structure(value: Any, wanted: type) -> Any:
        if type(value) not in kinds:
            raise TypeError(f"expected {wanted.__name__}, got {type(value).__name__} {value!r}")
        return wanted(value)

    return structure


converter.register_structure_hook(str, _exactly(str))
converter.register_structure_hook(int, _exactly(int))
converter.register_structure_hook(float, _exactly(float, int))
converter.register_structure_hook(bool, _exactly(bool))


@attrs.frozen
class GitState:
    """What git says about a working directory."""

    repository: bool = attrs.field(
        metadata={"description": "True if the directory is the top of a git work tree."}
    )
    branch: str | None = attrs.field(
        metadata={"description": "The current branch; null when detached or not a repository."}
    )
    head: str | None = attrs.field(
        metadata={"description": "The commit HEAD points to; null before the first commit."}
    )
    dirty: tuple[str, ...] = attrs.field(
        metadata={
            "description": "Paths with uncommitted changes, untracked ones included "
            "(the first max_dirty_files of them)."
        }
    )
    dirty_count: int = attrs.field(metadata={"description": "How many paths are uncommitted."})
    error: str | None = attrs.field(
        default=None,
        metadata={"description": "Why git could not report (not installed, timed out...)."},
    )

    @classmethod
    def none(cls, error: str | None = None) -> GitState:
        return cls(False, None, None, (), 0, error)


@attrs.frozen
class Checkpoint:
    """A point in a work session: when, why, and the git state then."""

    number: int = attrs.field(metadata={"description": "1 for the session's first checkpoint."})
    at: float = attrs.field(metadata={"description": "Seconds since the epoch."})
    note: str | None
    repository: bool
    branch: str | None
    head: str | None = attrs.field(
        metadata={"description": "HEAD after the checkpoint (its commit, if one was made)."}
    )
    dirty: tuple[str, ...] = attrs.field(
        metadata={"description": "Uncommitted paths when the checkpoint was taken."}
    )
    dirty_count: int
    commit: str | None = attrs.field(
        default=None, metadata={"description": "The checkpoint commit, if one was made."}
    )


@attrs.frozen
class TrustGrant:
    """An operation the user approved, until ``expires_at`` (None: until revoked)."""

    operation: str
    granted_at: float = attrs.field(metadata={"description": "Seconds since the epoch."})
    expires_at: float | None = attrs.field(
        default=None, metadata={"description": "Seconds since the epoch; null: never."}
    )

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@attrs.frozen
class WorkRecord:
    """What the work layer keeps in a session's state."""

    started_at: float | None = None  #: first session_start (None: never started)
    starts: int = 0  #: how many times it was started or resumed
    checkpoints: tuple[Checkpoint, ...] = ()  #: the last ``max_checkpoints``
    checkpoint_count: int = 0  #: every checkpoint ever taken
    trust: tuple[TrustGrant, ...] = ()


_EMPTY_RECORD = WorkRecord()


def work_record(state: SessionState) -> WorkRecord:
    """The work record of ``state`` (an empty one if it has none); WorkDataError if the
    reserved key holds something else."""
    raw = state.data.get(WORK_DATA_KEY)
    if raw is None:
        return _EMPTY_RECORD
    where = f"session {state.id!r}: data[{WORK_DATA_KEY!r}]"
    remedy = (
        "it belongs to the work layer, and something else wrote it (session_update "
        "cannot); remove the key with Session.update to start the record afresh"
    )
    if not isinstance(raw, dict) or type(raw.get("schema")) is not int:
        raise WorkDataError(f"{where} is not a work record; {remedy}")
    if raw["schema"] > WORK_SCHEMA_VERSION:
        raise WorkDataError(
            f"{where} has schema {raw['schema']}, newer than this triact understands "
            f"({WORK_SCHEMA_VERSION}); upgrade triact"
        )
    body = {key: value for key, value in raw.items() if key != "schema"}
    try:
        return converter.structure(body, WorkRecord)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        problems = (
            "; ".join(cattrs.transform_error(exc, path=where))
            if isinstance(exc, cattrs.BaseValidationError)
            else f"{where}: {exc}"
        )
        raise WorkDataError(f"{problems}; {remedy}") from None


def with_work_record(state: SessionState, record: WorkRecord) -> SessionState:
    """``state`` with ``record`` as its work record."""
    raw = {"schema": WORK_SCHEMA_VERSION, **converter.unstructure(record)}
    return state.with_data({WORK_DATA_KEY: raw})


@attrs.frozen
class ThreadSummary:
    name: str
    messages: int


@attrs.frozen
class RequestSummary:
    active: int
    completed: int
    failed: int


@attrs.frozen
class FailedRequest:
    id: str
    tool_name: str | None
    error: str | None


@attrs.frozen
class Handoff:
    """What a work session did, written when it ends, for whoever starts next in its
    directory."""

    session_id: str
    working_directory: str | None
    project: str | None
    topic: str | None
    started_at: float = attrs.field(metadata={"description": "When the session was created."})
    ended_at: float
    operations: int
    errors: int = attrs.field(metadata={"description": "Calls to the session that failed."})
    security_events: int
    checkpoints: tuple[Checkpoint, ...]
    threads: tuple[ThreadSummary, ...]
    analyses: int
    recent_prompts: tuple[str, ...] = attrs.field(
        metadata={"description": "The prompts of the last few analyses (shortened)."}
    )
    requests: RequestSummary
    failed_requests: tuple[FailedRequest, ...] = attrs.field(
        metadata={"description": "The last few failed requests, with their errors."}
    )
    git: GitState | None = attrs.field(
        metadata={"description": "The git state when the session ended."}
    )
    file: str | None = attrs.field(
        default=None, metadata={"description": "The Markdown file it was written to, if any."}
    )


def encode_handoff(handoff: Handoff) -> dict[str, Any]:
    return {"schema": WORK_SCHEMA_VERSION, **converter.unstructure(handoff)}


def decode_handoff(raw: Any, *, where: str) -> Handoff:
    if not isinstance(raw, dict) or type(raw.get("schema")) is not int:
        raise WorkDataError(f"{where} is not a handoff record")
    if raw["schema"] > WORK_SCHEMA_VERSION:
        raise WorkDataError(f"{where} was written by a newer triact; upgrade triact")
    body = {key: value for key, value in raw.items() if key != "schema"}
    try:
        return converter.structure(body, Handoff)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise WorkDataError(f"{where} is malformed: {exc}") from None


@attrs.frozen
class Reflection:
    """A note kept for later, searchable."""

    id: int
    content: str
    tags: tuple[str, ...]
    project: str | None
    created_at: float = attrs.field(metadata={"description": "Seconds since the epoch."})


@attrs.frozen
class NoteScope:
    """Which notes a search looks through: those of ``kind`` kept for ``principal``
    (None: kept without one), with every tag in ``tags``, of ``project`` (None is a
    project of its own) or, with ``all_projects``, of every project."""

    kind: NoteKind
    project: str | None = None
    tags: tuple[str, ...] = ()
    all_projects: bool = False
    principal: str | None = None


_SCORE = {"description": "Higher is better; comparable within one search only."}
_SIMILARITY = {
    "description": "Cosine similarity of its meaning to the query's (-1 to 1); null when "
    "the search ranked by words alone."
}
_METHOD = {
    "description": "What ranked the results: 'hybrid' (words and meaning, weighted by "
    "age), or words alone: 'fts5-bm25' (SQLite FTS5's bm25), 'redis-bm25' (the same "
    "bm25, in Redis) or 'text-match' (a simple scored match, in memory)."
}


@attrs.frozen
class ReflectionHit:
    reflection: Reflection
    score: float = attrs.field(metadata=_SCORE)
    similarity: float | None = attrs.field(default=None, metadata=_SIMILARITY)


@attrs.frozen
class ReflectionSearch:
    """Reflections that match a query, best first (recency breaks ties)."""

    method: SearchMethod = attrs.field(metadata=_METHOD)
    query: str
    hits: tuple[ReflectionHit, ...]


@attrs.frozen
class Excerpt:
    """An excerpt of a conversation kept for later, searchable."""

    id: int
    content: str
    tags: tuple[str, ...]
    project: str | None
    created_at: float = attrs.field(metadata={"description": "Seconds since the epoch."})

    @classmethod
    def of(cls, note: Reflection) -> Excerpt:
        return cls(note.id, note.content, note.tags, note.project, note.created_at)


@attrs.frozen
class ExcerptHit:
    excerpt: Excerpt
    score: float = attrs.field(metadata=_SCORE)
    similarity: float | None = attrs.field(default=None, metadata=_SIMILARITY)


@attrs.frozen
class ExcerptSearch:
    """Conversation excerpts that match a query, best first (recency breaks ties)."""

    method: SearchMethod = attrs.field(metadata=_METHOD)
    query: str
    hits: tuple[ExcerptHit, ...]


@attrs.frozen
class StoredExcerpt:
    excerpt: Excerpt
    kept: int = attrs.field(
        metadata={"description": "Conversation excerpts now kept for its project."}
    )
    dropped: int = attrs.field(
        metadata={"description": "Oldest excerpts of its project dropped to stay in bound."}
    )
    embedded: bool = attrs.field(
        default=False,
        metadata={"description": "Its meaning was embedded (hybrid search is on)."},
    )


@attrs.frozen
class StoredReflection:
    reflection: Reflection
    kept: int = attrs.field(metadata={"description": "Reflections now kept for its project."})
    dropped: int = attrs.field(
        metadata={"description": "Oldest reflections of its project dropped to stay in bound."}
    )
    embedded: bool = attrs.field(
        default=False,
        metadata={"description": "Its meaning was embedded (hybrid search is on)."},
    )
