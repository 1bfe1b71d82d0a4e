"""``triact stress --processes N``: N ``triact serve`` processes (over stdio, or over
HTTP) on one shared store, each call sent to one of them at random (the store decides,
so any of them may answer for any session)."""

from __future__ import annotations

import random
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from typing import Literal

from ._history import Call
from ._http import HttpTarget, open_http
from ._model import DataChange
from ._targets import StdioTarget, StressTarget, open_stdio, own_prefix, server_command

#: How calls are spread over the servers: each to one at random, or each session's
#: to the one its id hashes to (as a load balancer with affinity on the session id
#: header does; ``session_create``, which names none, still goes to one at random).
Routing = Literal["random", "affinity"]


class SpreadTarget:
    """Several :class:`StdioTarget` (or HTTP targets) on one store: each call goes to
    one of them, as ``routing`` says; :attr:`calls` counts the calls each one got once
    the load is armed (so they add up to the report's operations)."""

    def __init__(
        self,
        targets: list[StdioTarget],
        seed: int,
        store: str = "SQLite file",
        transport: str = "stdio",
        routing: Routing = "random",
    ) -> None:
        self.targets = targets
        self.calls = [0] * len(targets)
        self.routing = routing
        self._rng = random.Random(f"{seed}:spread")
        self._armed = False
        self.description = (
            f"{len(targets)} triact serve processes on one {store} over {transport}, "
            + routed(routing)
        )
        if transport == "http":
            self.description += " (MCP sessions too)"

    def _pick(self, session_id: str | None = None) -> StdioTarget:
        """The target of a call on ``session_id`` (None: a call that names none)."""
        if session_id is not None and self.routing == "affinity":
            index = zlib.crc32(session_id.encode()) % len(self.targets)
        else:
            index = self._rng.randrange(len(self.targets))
        if self._armed:
            self.calls[index] += 1
        return self.targets[index]

    async def create(self, call: Call) -> str:
        return await self._pick().create(call)

    async def read(self, call: Call, session_id: str) -> None:
        await self._pick(session_id).read(call, session_id)

    async def update(
        self,
        call: Call,
        session_id: str,
        change: DataChange,
        expected_version: int | None,
        *,
        fails: bool,
        slow: float,
    ) -> None:
        target = self._pick(session_id)
        await target.update(call, session_id, change, expected_version, fails=fails, slow=slow)

    async def end(self, call: Call, session_id: str) -> None:
        await self._pick(session_id).end(call, session_id)

    def faults(self) -> Mapping[str, int]:
        return {}

    def arm(self, armed: bool) -> None:
        self._armed = armed

    def mcp_sessions(self) -> list[str]:
        """The MCP sessions of the HTTP targets' clients (each spoken in through every
        process); none over stdio."""
        http = [t for t in self.targets if isinstance(t, HttpTarget)]
        return sorted({m for t in http for m in t.mcp_sessions()})

    async def update_default(self, call: Call, mcp_session: str, change: DataChange) -> None:
        """An update of the MCP session's default session, through a process picked as
        a call on a session is (with affinity, by the MCP session's id)."""
        target = self._pick(mcp_session)
        assert isinstance(target, HttpTarget)
        await target.update_default(call, mcp_session, change)


def routed(routing: Routing) -> str:
    if routing == "affinity":
        return "each session's calls to the one its id hashes to"
    return "each call to one at random"


@contextmanager
def run_spec(store: str) -> Iterator[str]:
    """``store`` as the run uses it, so that a stress run never writes to a store in
    use: for a bare ``sqlite``, ``sqlite:PATH`` of a file in a temporary directory
    (removed on exit); for a redis:// URL, :func:`own_prefix`."""
    if store.startswith(("redis://", "rediss://")):
        yield own_prefix(store)
        return
    if store != "sqlite":
        yield store
        return
    with tempfile.TemporaryDirectory(prefix="triact-stress-") as directory:
        yield f"sqlite:{directory}/sessions.db"


@asynccontextmanager
async def open_servers(
    store: str,
    processes: int,
    command: list[str] | None,
    seed: int,
    transport: str = "stdio",
    clients: int = 2,
    routing: Routing = "random",
) -> AsyncIterator[StressTarget]:
    """``processes`` servers on ``store`` (a :class:`SpreadTarget` for more than one),
    over ``transport`` ("stdio", or "http": ``clients`` MCP clients spread over the
    servers, at least two per server, and each handshake client's MCP session also
    spoken to through every other server), started one after the other: the first to
    open a new file creates it and its key file, which the others then read. All are
    stopped on exit."""
    with run_spec(store) as spec:
        command = command or server_command(spec)

        def one(index: int) -> AbstractAsyncContextManager[StdioTarget]:
            if transport == "http":
                share = -(-clients // processes)  # ceil: every client somewhere
                return open_http(command, share, f"{seed}:http:{index}")
            return open_stdio(command)

        if processes == 1:
            async with one(0) as target:
                yield target
            return
        async with AsyncExitStack() as stack:
            targets = [await stack.enter_async_context(one(i)) for i in range(processes)]
            if transport == "http":  # every MCP session served by every process
                http = [t for t in targets if isinstance(t, HttpTarget)]
                for target in http:
                    others = [c for t in http if t is not target for c in t.own_sessions()]
                    await stack.enter_async_context(target.serving(others))
            redis = spec.startswith(("redis://", "rediss://"))
            store_name = "Redis" if redis else "SQLite file"
            yield SpreadTarget(targets, seed, store_name, transport, routing)
