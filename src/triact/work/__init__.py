"""Work sessions: a layer on the session runtime that follows a working session from
start to end (checkpoints, git state, a handoff for the next session in the same
directory), remembers the operations a user trusts, and keeps reflections to search.

Open it on a manager with :func:`open_work_sessions`; offer its MCP tools with
:func:`work_tools` (``SESSION_TOOLS | work_tools(work)``), and the lifecycle's MCP
prompts with :func:`work_prompts`; see ``docs/work.md``.
"""

from .._public import fixup_module_metadata
from ._backend import MemoryWorkStore, WorkStore
from ._config import WorkConfig
from ._embedding import Embedder
from ._errors import (
    GitError,
    GitTimeoutError,
    NotAGitRepositoryError,
    WorkArgumentError,
    WorkDataError,
    WorkDirectoryError,
    WorkError,
    WorkLimitError,
    WorkStoreError,
)
from ._handoff import render_handoff
from ._prompts import work_prompts
from ._records import (
    WORK_DATA_KEY,
    Checkpoint,
    Excerpt,
    ExcerptHit,
    ExcerptSearch,
    FailedRequest,
    GitState,
    Handoff,
    NoteScope,
    Reflection,
    ReflectionHit,
    ReflectionSearch,
    RequestSummary,
    SearchMethod,
    StoredExcerpt,
    StoredReflection,
    ThreadSummary,
    TrustGrant,
    WorkRecord,
    work_record,
)
from ._redis import RedisWorkStore
from ._reports import Ended, Started, TrustState, WorkReport
from ._sqlite import SqliteWorkStore
from ._tools import WORK_ERROR_CODES, work_tools
from ._trust import TrustScope, active_grants, is_trusted, scope_of
from ._work import WorkSessions, open_work_sessions

__all__ = [
    "WORK_DATA_KEY",
    "WORK_ERROR_CODES",
    "Checkpoint",
    "Embedder",
    "Ended",
    "Excerpt",
    "ExcerptHit",
    "ExcerptSearch",
    "FailedRequest",
    "GitError",
    "GitState",
    "GitTimeoutError",
    "Handoff",
    "MemoryWorkStore",
    "NotAGitRepositoryError",
    "NoteScope",
    "RedisWorkStore",
    "Reflection",
    "ReflectionHit",
    "ReflectionSearch",
    "RequestSummary",
    "SearchMethod",
    "SqliteWorkStore",
    "Started",
    "StoredExcerpt",
    "StoredReflection",
    "ThreadSummary",
    "TrustGrant",
    "TrustScope",
    "TrustState",
    "WorkArgumentError",
    "WorkConfig",
    "WorkDataError",
    "WorkDirectoryError",
    "WorkError",
    "WorkLimitError",
    "WorkRecord",
    "WorkReport",
    "WorkSessions",
    "WorkStore",
    "WorkStoreError",
    "active_grants",
    "is_trusted",
    "open_work_sessions",
    "render_handoff",
    "scope_of",
    "work_prompts",
    "work_record",
    "work_tools",
]

fixup_module_metadata(__name__, globals(), __all__)
