"""``triact stress --target cluster``: N ``triact serve --http`` nodes on one shared
store, each call sent to a node at random (MCP sessions of the handshake era too), while
one node is killed (SIGKILL) and restarted on its port, and another is paused (SIGSTOP)
for longer than the activation lease and resumed (SIGCONT). A call that gets no answer
(refused, reset, or past its timeout) has an unknown outcome: it may or may not have
taken effect, and the history checker allows both. After the load, every node reads
every session, so that all must agree with what was acknowledged."""

from __future__ import annotations

import shlex
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from ..sessions import SessionConfig, SessionStoreError
from ._history import Call
from ._http import (
    _URL,
    HANDSHAKE,
    STATELESS,
    HttpServerError,
    HttpTarget,
    McpHttpClient,
    MixedClients,
    _h11,
    _listening,
)
from ._model import DataChange
from ._spread import Routing, SpreadTarget, routed, run_spec
from ._targets import StdioTarget, password_apart, server_command

#: Seconds a call waits for its answer before its outcome is unknown.
CALL_TIMEOUT = 2.0
#: Seconds the paused node stays stopped: past the default activation lease, so that
#: the other nodes take its sessions over while it still believes it holds them.
PAUSE = SessionConfig().lease + 1.0
#: Shortest run that fits the faults (the pause ends by 90 % of the run).
MIN_DURATION = 8.0
_STOP_TIMEOUT = 10.0


class ClusterNode:
    """One ``triact serve --http`` process that can be killed, restarted on its port,
    paused and resumed."""

    def __init__(self, command: list[str], index: int, logs: Path) -> None:
        self.command = command
        self.index = index
        self.url = ""
        self.port = 0
        self.process: trio.Process | None = None
        self.paused = False
        #: Whether its process listens (False while it starts).
        self.ready = False
        #: The stderr of each process this node ran, in order.
        self.logs: list[Path] = []
        self._logs = logs

    async def start(self) -> None:
        """Start the process (on a free port the first time, on its port after) and
        wait until it listens."""
        self.ready = False
        command, env = password_apart([*self.command, "--http", f"127.0.0.1:{self.port}"])
        path = self._logs / f"node{self.index + 1}-{len(self.logs) + 1}.log"
        self.logs.append(path)
        with path.open("w+b") as log:
            try:
                self.process = await trio.lowlevel.open_process(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                )
            except OSError as exc:
                raise HttpServerError(
                    f"cannot start the server command {shlex.join(command)!r}: "
                    f"{exc.strerror or exc}"
                ) from None
            self.url = await _listening(self.process, log)
        found = _URL.fullmatch(self.url)
        assert found is not None
        self.port = int(found.group("port"))
        self.ready = True

    async def kill(self) -> None:
        self.ready = False
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def pause(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self) -> None:
        """SIGCONT if paused, SIGTERM, then SIGKILL."""
        with trio.CancelScope(shield=True):
            process = self.process
            if process is not None and process.returncode is None:
                self.resume()
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(_STOP_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


class ClusterTarget(SpreadTarget):
    """:class:`SpreadTarget` over the nodes' HTTP targets, with faults once armed and
    a timeout on every call: no answer is an ``unknown`` outcome, not an error."""

    def __init__(
        self,
        nodes: list[ClusterNode],
        targets: list[HttpTarget],
        seed: int,
        duration: float,
        nursery: trio.Nursery,
        store: str,
        routing: Routing = "random",
    ) -> None:
        super().__init__(list[StdioTarget](targets), seed, store, "http", routing)
        self.nodes = nodes
        self.duration = duration
        self.nursery = nursery
        self.call_timeout = CALL_TIMEOUT
        self.injected: dict[str, int] = {"SIGKILL": 0, "restart": 0, "SIGSTOP": 0, "SIGCONT": 0}
        #: (seconds into the load, what happened) for the report.
        self.log: list[tuple[float, str]] = []
        self._faults: trio.CancelScope | None = None
        self._start = 0.0  # when the faults began (Trio time)
        #: Fault actions begun and not finished (a restart the end of the load cut
        #: short): name -> what the log says; settle() finishes them.
        self._pending: dict[str, str] = {}
        self.description = (
            f"{len(nodes)} triact serve --http nodes on one {store}, {routed(routing)} "
            "(MCP sessions too); faults: SIGKILL and restart, SIGSTOP past the lease and "
            "SIGCONT"
        )

    def arm(self, armed: bool) -> None:
        super().arm(armed)
        if armed and self._faults is None:
            self._faults = trio.CancelScope()
            self.nursery.start_soon(self._inject, self._faults)

    def faults(self) -> Mapping[str, int]:
        return dict(self.injected)

    async def _inject(self, scope: trio.CancelScope) -> None:
        """Kill node 2 at a third of the run and restart it at half; pause node 3
        for :data:`PAUSE` seconds, from 60 % of the run (earlier in short runs, so that
        it is resumed by 90 %)."""
        d = self.duration
        start = self._start = trio.current_time()
        killed, paused = self.nodes[1], self.nodes[2 % len(self.nodes)]
        stop_at = max(0.0, min(0.6 * d, 0.9 * d - PAUSE))
        # Two chains, each in order, side by side: a slow restart delays no other.
        chains: list[list[tuple[float, str, Callable[[], Awaitable[None]]]]] = [
            [(d / 3, "SIGKILL", killed.kill), (d / 2, "restart", killed.start)],
            [
                (stop_at, "SIGSTOP", _sync(paused.pause)),
                (stop_at + PAUSE, "SIGCONT", _sync(paused.resume)),
            ],
        ]

        async def run(chain: list[tuple[float, str, Callable[[], Awaitable[None]]]]) -> None:
            for at, name, action in chain:
                await trio.sleep_until(start + at)
                node = killed if name in ("SIGKILL", "restart") else paused
                label = f"{name} node {node.index + 1}"
                self._pending[name] = label
                await action()
                del self._pending[name]
                self._done(name, label)

        with scope:
            async with trio.open_nursery() as nursery:
                for chain in chains:
                    nursery.start_soon(run, chain)

    def _done(self, name: str, label: str) -> None:
        self.injected[name] += 1
        self.log.append((trio.current_time() - self._start, label))

    async def settle(self) -> None:
        """Stop injecting faults, and bring every node back (resumed, restarted);
        a fault action the end of the load cut short is finished here, and counted."""
        if self._faults is not None:
            self._faults.cancel()
        cut, self._pending = self._pending, {}
        # A start the end of the faults cut short is made again.
        for node in self.nodes:
            if node.paused:
                node.resume()
            if not node.ready:
                await node.kill()
            if not node.running:
                await node.start()
        for name, label in cut.items():
            self._done(name, label)

    async def _guard(self, call: Call, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt``; no answer within the timeout, or a connection that fails,
        leaves the call's outcome unknown."""
        with trio.move_on_after(self.call_timeout):
            try:
                await attempt()
            except HttpServerError as exc:
                if not call.op.done:
                    call.failed("unknown", str(exc)[:300])
                return
        if not call.op.done:
            call.failed("unknown", f"no answer within {self.call_timeout:g} s")

    async def create(self, call: Call) -> str:
        found: list[str] = []
        target = self._pick()

        async def attempt() -> None:
            found.append(await target.create(call))

        await self._guard(call, attempt)
        if not found:
            raise SessionStoreError(f"session_create: {call.op.error}")
        return found[0]

    async def read(self, call: Call, session_id: str) -> None:
        target = self._pick(session_id)
        await self._guard(call, lambda: target.read(call, session_id))

    async def read_on(self, node: int, call: Call, session_id: str) -> None:
        """A read through node ``node`` (0-based), for the final agreement check."""
        await self._guard(call, lambda: self.targets[node].read(call, session_id))

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
        await self._guard(
            call,
            lambda: target.update(
                call, session_id, change, expected_version, fails=fails, slow=slow
            ),
        )

    async def end(self, call: Call, session_id: str) -> None:
        target = self._pick(session_id)
        await self._guard(call, lambda: target.end(call, session_id))

    async def update_default(self, call: Call, mcp_session: str, change: DataChange) -> None:
        target = self._pick(mcp_session)
        assert isinstance(target, HttpTarget)
        await self._guard(call, lambda: target.update_default(call, mcp_session, change))


def _sync(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        fn()
        await trio.lowlevel.checkpoint()

    return run


@asynccontextmanager
async def open_cluster(
    store: str,
    nodes: int,
    command: list[str] | None,
    seed: int,
    clients: int,
    duration: float,
    routing: Routing = "random",
) -> AsyncIterator[ClusterTarget]:
    """``nodes`` servers on ``store``, each with its share of ``clients`` MCP clients
    (at least two, of both eras), each handshake client's MCP session also spoken to
    through every other node; all stopped on exit."""
    if nodes < 3:
        raise ValueError(f"--target cluster needs at least 3 nodes, got {nodes}")
    _h11()
    async with AsyncExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="triact-cluster-")))
        spec = stack.enter_context(run_spec(store))
        command = command or server_command(spec)
        members = [ClusterNode(command, i, logs) for i in range(nodes)]
        for node in members:
            stack.push_async_callback(node.stop)
        async with trio.open_nursery() as starting:
            for node in members:
                starting.start_soon(node.start)
        share = max(2, -(-clients // nodes))
        targets = []
        for index, node in enumerate(members):
            mcp = []
            for i in range(share):
                client = McpHttpClient(node.url, (HANDSHAKE, STATELESS)[i % 2])
                stack.push_async_callback(client.aclose)
                await client.open()
                mcp.append(client)
            targets.append(HttpTarget(MixedClients(mcp, f"{seed}:http:{index}"), node.url))
        for target in targets:
            others = [c for t in targets if t is not target for c in t.own_sessions()]
            await stack.enter_async_context(target.serving(others))
        shared = "Redis" if spec.startswith(("redis://", "rediss://")) else "SQLite file"
        async with trio.open_nursery() as nursery:
            cluster = ClusterTarget(members, targets, seed, duration, nursery, shared, routing)
            yield cluster
            nursery.cancel_scope.cancel()
