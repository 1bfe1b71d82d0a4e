"""The session layer our users run today, rebuilt as faithfully as we can, to measure
triact against in the same run.

* :mod:`.asyncio_lock_manager`: a dict of sessions, a global ``asyncio.Lock`` around
  it, one ``asyncio.Lock`` per session, a versioned ``atomic_update``, client tokens
  hashed with PBKDF2 on the event loop, and an hourly cleanup loop (the design itself
  is :mod:`._lock_manager`'s, for either library).
* :mod:`.trio_lock_manager`: the same design with ``trio.Lock``.
* :mod:`.asyncio_sqlite_manager`: the asyncio design, plus one synchronous SQLite
  write (WAL) of the session's JSON per update, as durable variants do today.
* :mod:`.asyncio_actor`: the actor one writes on asyncio (a task per actor, an
  ``asyncio.Queue`` in, a future out), and sessions built from such actors.

They are deliberately lean (no logging, no deep copies): every cost they carry is one
the design itself imposes.
"""
