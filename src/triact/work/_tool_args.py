"""The arguments and results of the work-session tools (``_tools``), as attrs classes:
their input and output schemas are derived from these."""

from __future__ import annotations

from typing import Annotated

import attrs

from ..transport import SessionArgs, SessionView, Spec
from ._records import (
    Checkpoint,
    ExcerptSearch,
    Handoff,
    ReflectionHit,
    ReflectionSearch,
    SearchMethod,
)
from ._reports import WorkReport

# -- arguments -------------------------------------------------------------------------

_TAGS = "Tags (up to 16, each up to 64 characters; stored lower-cased)."


@attrs.frozen(kw_only=True)
class StartArgs:
    working_directory: Annotated[
        str, Spec("An absolute path to an existing directory: the project to work in.", minLength=1)
    ]
    project: Annotated[
        str | None, Spec("A project name to record in the session.", minLength=1, maxLength=200)
    ] = None
    token: Annotated[
        str | None, Spec("The token of the directory's live session, if it is bound.")
    ] = None
    bind_client: Annotated[
        bool,
        Spec(
            "If a new session is created: bind it to you (the result carries its token, shown "
            "only once, which every later call on it must pass)."
        ),
    ] = False
    client_id: Annotated[
        str | None, Spec("Your client id, for the per-client session cap (new sessions).")
    ] = None


@attrs.frozen(kw_only=True)
class CheckpointArgs(SessionArgs):
    note: Annotated[str | None, Spec("What was done or is about to be tried.")] = None
    commit: Annotated[
        bool,
        Spec(
            "Also commit every change in the working directory (git add -A; the handoff file "
            "and .gitignore'd files excepted) as a checkpoint commit. The directory must be "
            "the top of a git repository."
        ),
    ] = False


@attrs.frozen(kw_only=True)
class EndArgs(SessionArgs):
    write_handoff: Annotated[
        bool,
        Spec(
            "Also write the handoff as Markdown into the working directory "
            "(.triact-handoff.md unless configured)."
        ),
    ] = False


_OPERATION = Spec("The operation's name, e.g. 'git_commit'.", minLength=1, maxLength=200)


@attrs.frozen(kw_only=True)
class TrustGrantArgs(SessionArgs):
    operation: Annotated[str, _OPERATION]
    expires_in: Annotated[
        float | None,
        Spec(
            "Seconds until the approval lapses; omit to keep it until revoked.", exclusiveMinimum=0
        ),
    ] = None


@attrs.frozen(kw_only=True)
class TrustRevokeArgs(SessionArgs):
    operation: Annotated[str, _OPERATION]


@attrs.frozen(kw_only=True)
class ReflectionStoreArgs:
    content: Annotated[str, Spec("The reflection (up to 10000 characters).", minLength=1)]
    tags: Annotated[list[str] | None, Spec(_TAGS)] = None
    project: Annotated[
        str | None, Spec("The project it belongs to.", minLength=1, maxLength=200)
    ] = None


@attrs.frozen(kw_only=True)
class ConversationSaveArgs:
    content: Annotated[
        str,
        Spec(
            "The excerpt: what was asked and answered, decided and why (up to 20000 characters).",
            minLength=1,
        ),
    ]
    tags: Annotated[list[str] | None, Spec(_TAGS)] = None
    project: Annotated[
        str | None, Spec("The project it belongs to.", minLength=1, maxLength=200)
    ] = None


@attrs.frozen(kw_only=True)
class ReflectionSearchArgs:
    query: Annotated[
        str,
        Spec(
            "What to look for, in your own words: with search by meaning ('hybrid') one "
            "that says it differently is found too; by words alone, one matching more "
            "(and rarer) of them ranks higher. Up to 2000 characters.",
            minLength=1,
        ),
    ]
    project: Annotated[
        str | None,
        Spec("Only this project's (omit: every project's).", minLength=1, maxLength=200),
    ] = None
    tags: Annotated[list[str] | None, Spec("Only those with all of these tags.")] = None
    limit: Annotated[int, Spec("Most results.", minimum=1, maximum=100)] = 10


# -- results ---------------------------------------------------------------------------


@attrs.frozen
class StartResult:
    session_id: str
    token: str | None = attrs.field(
        metadata={
            "description": "Only when this call created a bound session (bind_client): pass "
            "it as 'token' on every call to this session. Shown only here."
        }
    )
    created: bool = attrs.field(
        metadata={"description": "True: a new session; false: the directory's live one resumed."}
    )
    report: WorkReport
    handoff_markdown: str | None = attrs.field(
        metadata={"description": "The previous session's handoff as Markdown, if there is one."}
    )


@attrs.frozen
class StatusResult:
    session_id: str
    report: WorkReport
    handoff_markdown: str | None = attrs.field(
        metadata={"description": "The previous session's handoff as Markdown, if there is one."}
    )


@attrs.frozen
class CheckpointResult:
    session_id: str
    checkpoint: Checkpoint


@attrs.frozen
class EndResult:
    session_id: str
    ended: bool
    session: SessionView = attrs.field(metadata={"description": "The session's final state."})
    handoff: Handoff
    handoff_markdown: str
    handoff_stored: bool = attrs.field(
        metadata={
            "description": "Kept for the next session_start in the directory (false: the "
            "session had no working directory)."
        }
    )
    handoff_file_error: str | None = attrs.field(
        metadata={"description": "Why the handoff file was not written, if it was asked for."}
    )
    handoff_store_error: str | None = attrs.field(
        metadata={"description": "Why the store could not keep the handoff, if it failed."}
    )


@attrs.frozen
class Found:
    """A reflection or conversation excerpt found by a search."""

    id: int
    content: str
    tags: tuple[str, ...]
    project: str | None
    created_at: float = attrs.field(metadata={"description": "Seconds since the epoch."})
    score: float = attrs.field(
        metadata={"description": "Higher is better; comparable within one search only."}
    )
    similarity: float | None = attrs.field(
        metadata={
            "description": "Cosine similarity of its meaning to the query's (-1 to 1); null "
            "when the search ranked by words alone."
        }
    )


@attrs.frozen
class SearchResult:
    method: SearchMethod = attrs.field(
        metadata={
            "description": "What ranked the results: 'hybrid' (words and meaning: bm25 and "
            "the cosine similarity of embeddings, weighted by age), or words alone: "
            "'fts5-bm25' (SQLite FTS5's bm25, recency breaking ties), 'redis-bm25' (the "
            "same bm25, in Redis) or 'text-match' (a simple scored match, in memory)."
        }
    )
    query: str
    count: int
    results: tuple[Found, ...] = attrs.field(
        metadata={"description": "Best first; newest first among equal scores."}
    )

    @classmethod
    def of(cls, found: ReflectionSearch | ExcerptSearch) -> SearchResult:
        results = tuple(
            Found(
                note.id, note.content, note.tags, note.project, note.created_at, score, similarity
            )
            for note, score, similarity in (
                (
                    hit.reflection if isinstance(hit, ReflectionHit) else hit.excerpt,
                    hit.score,
                    hit.similarity,
                )
                for hit in found.hits
            )
        )
        return cls(found.method, found.query, len(results), results)
