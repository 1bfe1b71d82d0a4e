"""The generic actor runtime.

An :class:`Actor` owns its state and handles its messages one at a time; an
:class:`ActorRef` is the handle that sends to it; a :class:`Supervisor`, opened with
:func:`open_supervisor`, spawns actors, restarts crashed ones under a
:class:`RestartPolicy`, stops idle ones and shuts them all down cleanly.
"""

from .._public import fixup_module_metadata
from ._actor import Actor, SeeThrough, see_through
from ._deadlines import DeadlineQueue, IdDeadlineQueue
from ._errors import (
    ActorError,
    ActorFailedError,
    ActorStoppedError,
    MailboxFullError,
    ReentrantCallError,
)
from ._ref import ActorRef, Queued
from ._supervisor import (
    DEFAULT_SCHEDULE_SLICE,
    ActorFailure,
    RestartPolicy,
    Supervisor,
    open_supervisor,
)

__all__ = [
    "DEFAULT_SCHEDULE_SLICE",
    "Actor",
    "ActorError",
    "ActorFailedError",
    "ActorFailure",
    "ActorRef",
    "ActorStoppedError",
    "DeadlineQueue",
    "IdDeadlineQueue",
    "MailboxFullError",
    "Queued",
    "ReentrantCallError",
    "RestartPolicy",
    "SeeThrough",
    "Supervisor",
    "open_supervisor",
    "see_through",
]

fixup_module_metadata(__name__, globals(), __all__)
