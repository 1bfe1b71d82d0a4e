"""triact for asyncio programs, and asyncio code inside triact.

- :func:`open_session_manager` opens a session manager from asyncio: triact's Trio
  runtime runs as a guest of the running asyncio loop (Trio's guest mode), and the
  :class:`SessionManager`, :class:`Session` and :class:`Subscription` it hands out
  have asyncio awaitables with the behaviour and exceptions of their Trio
  counterparts. A call whose caller is cancelled raises
  :class:`asyncio.CancelledError` only if it did not happen.
- :func:`run_asyncio` calls asyncio code from Trio code (an async update function):
  on the host loop in an asyncio program, through the trio-asyncio loop of
  :func:`open_asyncio_bridge` in a Trio program.

See ``docs/embedding.md``.
"""

from .._public import fixup_module_metadata
from ._bridge import open_asyncio_bridge, run_asyncio
from ._manager import Session, SessionManager, Subscription, open_session_manager

__all__ = [
    "Session",
    "SessionManager",
    "Subscription",
    "open_asyncio_bridge",
    "open_session_manager",
    "run_asyncio",
]

fixup_module_metadata(__name__, globals(), __all__)
