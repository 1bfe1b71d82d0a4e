"""triact: an actor-model session runtime on Trio.

Each session is an actor that owns its state and handles its messages one at a
time. The session API is re-exported here; the generic runtime lives in
:mod:`triact.actors`.
"""

from ._version import __version__
from .sessions import *  # noqa: F403
from .sessions import __all__ as _sessions_all

__all__ = ["__version__", *_sessions_all]
