"""Trusted operations: the approvals a user gave, per client binding (or per session
when unbound), kept in the session's work record.

A client binding belongs to exactly one session in triact (its token is made for
it), so the set lives in that session's state: it changes through the session's
actor, persists with it in the store, and goes when the session goes. It is not
shared by ``client_id``, which a caller names freely: sharing by it would let anyone
who names a client inherit its approvals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import attrs

from ..sessions import SessionState
from ._config import WorkConfig
from ._errors import WorkArgumentError, WorkLimitError
from ._records import TrustGrant, with_work_record, work_record

TrustScope = Literal["binding", "session"]
_OPERATION_CHARS = 200


def scope_of(state: SessionState) -> TrustScope:
    """Whose approvals a session holds: its client binding's, or its own."""
    return "binding" if state.client_binding is not None else "session"


def check_operation(operation: str) -> str:
    if not isinstance(operation, str) or not operation.strip():
        raise WorkArgumentError(f"operation must be a non-empty string, got {operation!r}")
    if len(operation) > _OPERATION_CHARS:
        raise WorkLimitError(f"operation names have at most {_OPERATION_CHARS} characters")
    return operation


def active_grants(state: SessionState, now: float) -> tuple[TrustGrant, ...]:
    """The approvals of ``state`` in force at wall-clock time ``now``."""
    return tuple(g for g in work_record(state).trust if g.active(now))


def is_trusted(state: SessionState, operation: str, now: float) -> bool:
    """Whether ``operation`` is approved in ``state`` at wall-clock time ``now``: the
    check a tool that already holds the state makes, without a call to the session."""
    return any(g.operation == operation for g in active_grants(state, now))


def grant(
    config: WorkConfig, now: float, operation: str, expires_in: float | None
) -> Callable[[SessionState], SessionState]:
    """The change that approves ``operation`` (again: its expiry is replaced), for
    ``expires_in`` seconds or until revoked. Expired approvals are dropped."""
    check_operation(operation)
    if expires_in is not None and (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int | float)
        or not 0 < expires_in < math.inf
    ):
        raise WorkArgumentError(f"expires_in must be a number of seconds > 0, got {expires_in!r}")
    new = TrustGrant(operation, now, None if expires_in is None else now + expires_in)

    def transform(state: SessionState) -> SessionState:
        record = work_record(state)
        kept = [g for g in record.trust if g.active(now) and g.operation != operation]
        if len(kept) >= config.max_trusted_operations:
            raise WorkLimitError(
                f"session {state.id!r} trusts {len(kept)} operations already "
                f"(WorkConfig.max_trusted_operations); revoke some first"
            )
        return with_work_record(state, attrs.evolve(record, trust=(*kept, new)))

    return transform


def revoke(now: float, operation: str) -> Callable[[SessionState], SessionState]:
    """The change that withdraws ``operation`` (nothing if it was not approved).
    Expired approvals are dropped."""
    check_operation(operation)

    def transform(state: SessionState) -> SessionState:
        record = work_record(state)
        kept = tuple(g for g in record.trust if g.active(now) and g.operation != operation)
        return with_work_record(state, attrs.evolve(record, trust=kept))

    return transform
