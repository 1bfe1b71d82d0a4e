"""What the work layer's calls return."""

from __future__ import annotations

import attrs

from ..sessions import Session, SessionState
from ._records import Checkpoint, GitState, Handoff, TrustGrant
from ._trust import TrustScope


@attrs.frozen
class WorkReport:
    """A work session and its project, as ``start`` and ``status`` report them."""

    session_id: str
    version: int
    working_directory: str | None
    project: str | None
    topic: str | None
    bound: bool
    started_at: float | None = attrs.field(
        metadata={"description": "First session_start of this session (null: never started)."}
    )
    starts: int = attrs.field(metadata={"description": "Times it was started or resumed."})
    git: GitState | None = attrs.field(
        metadata={"description": "The working directory's git state (null: no directory)."}
    )
    checkpoint_count: int
    last_checkpoint: Checkpoint | None
    trusted: tuple[TrustGrant, ...] = attrs.field(
        metadata={"description": "The operations trusted now."}
    )
    previous_handoff: Handoff | None = attrs.field(
        metadata={"description": "The handoff of the last session that ended in this directory."}
    )
    handoff_error: str | None = attrs.field(
        default=None,
        metadata={
            "description": "Why the stored handoff of this directory could not be read "
            "(null: it was, or there is none); the next session_end replaces it."
        },
    )


@attrs.frozen
class Started:
    """What :meth:`WorkSessions.start` returns."""

    session: Session  #: its ``token`` is set only when this call created it bound
    created: bool  #: False: an existing live session was resumed
    report: WorkReport


@attrs.frozen
class Ended:
    """What :meth:`WorkSessions.end` returns."""

    final: SessionState
    handoff: Handoff
    #: Kept in the store for the next start in its directory (False: no directory, or
    #: the store failed: see ``store_error``).
    stored: bool
    #: Why the Markdown file could not be written (None: written, or not asked for).
    file_error: str | None = None
    #: Why the store could not keep it (None: kept, or no directory).
    store_error: str | None = None


@attrs.frozen
class TrustState:
    """A session's trusted operations after a grant, a revocation or a look."""

    session_id: str
    version: int
    scope: TrustScope = attrs.field(
        metadata={
            "description": "'binding': the session's client binding holds them; "
            "'session': an unbound session does."
        }
    )
    trusted: tuple[TrustGrant, ...] = attrs.field(
        metadata={"description": "The operations trusted now (expired ones left out)."}
    )
    #: The operation granted or revoked (None for a look).
    operation: str | None = None
    #: Whether the call changed it: always for a grant; for a revocation, whether the
    #: operation was trusted.
    changed: bool = False

    def grant_for(self, operation: str) -> TrustGrant | None:
        return next((g for g in self.trusted if g.operation == operation), None)
