"""Sessions: state, the session actor, the SessionManager and the stores.

Open a manager with :func:`open_session_manager`; each session is an actor that
owns its :class:`SessionState` and handles its calls one at a time.
"""

from .._public import fixup_module_metadata
from ._codec import SCHEMA_VERSION, decode_state, encode_state, structure_state, unstructure_state
from ._config import RateLimit, SessionConfig
from ._errors import (
    RequestNotFoundError,
    SessionArgumentError,
    SessionBusyError,
    SessionClosedError,
    SessionConcurrencyError,
    SessionContendedError,
    SessionDataError,
    SessionError,
    SessionFailedError,
    SessionFencedError,
    SessionLimitError,
    SessionNotFoundError,
    SessionRateLimitError,
    SessionReentrancyError,
    SessionSecurityError,
    SessionStoreError,
    SessionThrottledError,
    SessionValueError,
)
from ._events import EventKind, SessionEvent, Subscription
from ._limits import DEFAULT_MAX_STATE_BYTES, MAX_NESTING, value_problems
from ._manager import SessionManager, open_session_manager
from ._redis import RedisStore
from ._session import Session, Update
from ._sqlite import SqliteStore
from ._state import (
    AnalysisRecord,
    ClientBinding,
    RequestRecord,
    SecurityEvent,
    SessionMetrics,
    SessionState,
    Thread,
    ThreadMessage,
)
from ._stats import LatencySummary, ManagerStats, SessionStats
from ._store import Activation, IndexEntry, MemoryStore, SessionStore, SharedSessionStore

__all__ = [
    "DEFAULT_MAX_STATE_BYTES",
    "MAX_NESTING",
    "SCHEMA_VERSION",
    "Activation",
    "AnalysisRecord",
    "ClientBinding",
    "EventKind",
    "IndexEntry",
    "LatencySummary",
    "ManagerStats",
    "MemoryStore",
    "RateLimit",
    "RedisStore",
    "RequestNotFoundError",
    "RequestRecord",
    "SecurityEvent",
    "Session",
    "SessionArgumentError",
    "SessionBusyError",
    "SessionClosedError",
    "SessionConcurrencyError",
    "SessionConfig",
    "SessionContendedError",
    "SessionDataError",
    "SessionError",
    "SessionEvent",
    "SessionFailedError",
    "SessionFencedError",
    "SessionLimitError",
    "SessionManager",
    "SessionMetrics",
    "SessionNotFoundError",
    "SessionRateLimitError",
    "SessionReentrancyError",
    "SessionSecurityError",
    "SessionState",
    "SessionStats",
    "SessionStore",
    "SessionStoreError",
    "SessionThrottledError",
    "SessionValueError",
    "SharedSessionStore",
    "SqliteStore",
    "Subscription",
    "Thread",
    "ThreadMessage",
    "Update",
    "decode_state",
    "encode_state",
    "open_session_manager",
    "structure_state",
    "unstructure_state",
    "value_problems",
]

fixup_module_metadata(__name__, globals(), __all__)
