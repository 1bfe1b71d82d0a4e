"""Real Redis servers for the tests: a private ``redis-server`` started from the
installed binary (on a free loopback port, in a temporary directory, with AOF
persistence when a test restarts or kills it), or else the shared one on
127.0.0.1:6379; every test uses keys under a prefix of its own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

import attrs
import redis
import trio

SHARED = ("127.0.0.1", 6379)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(host: str, port: int) -> bool:
    try:
        with redis.Redis(host=host, port=port, socket_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """A ``redis-server`` of this test's own, in ``directory``; ``fsync`` chooses AOF
    (``always``, ``everysec``) or no persistence at all (None)."""

    def __init__(
        self, directory: Path, fsync: Literal["always", "everysec"] | None = "always"
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.binary = binary
        self.directory = directory
        self.fsync = fsync
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "no"]
        if self.fsync is not None:
            persistence = ["--appendonly", "yes", "--appendfsync", self.fsync]
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            *persistence,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not answers("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: whatever it did not persist is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


@attrs.frozen
class RedisPlace:
    """Where a test keeps its sessions in Redis: a server and a key prefix."""

    url: str
    prefix: str

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def unique_prefix() -> str:
    return f"triact-test-{uuid.uuid4().hex[:12]}:"


@contextmanager
def redis_for_tests(directory: Path) -> Iterator[str | None]:
    """A private server's URL (no persistence), else the shared one's, else None."""
    try:
        server = RedisServer(directory, fsync=None)
    except FileNotFoundError:
        yield f"redis://{SHARED[0]}:{SHARED[1]}/0" if answers(*SHARED) else None
        return
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def forget(place: RedisPlace) -> None:
    """Delete the keys under the place's prefix (on a shared server)."""
    with suppress(redis.RedisError, OSError), place.client() as client:
        keys = list(client.scan_iter(match=f"{place.prefix}*", count=1000))
        if keys:
            client.delete(*keys)


class RedisGate:
    """A TCP proxy in front of a Redis that can hold one process's requests: once
    :meth:`hold` is given some bytes, the first request (on a connection that is not
    subscribed to a channel) that contains them waits, with everything sent after it
    on its connection, until :meth:`release`; subscribed connections always flow.
    Start it with ``await nursery.start(gate.serve)``, which gives its port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._hold_on: bytes | None = None
        self.held = trio.Event()
        self._released = trio.Event()

    def hold(self, marker: bytes) -> None:
        self._hold_on = marker
        self.held = trio.Event()
        self._released = trio.Event()

    def release(self) -> None:
        self._hold_on = None
        self._released.set()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream(*self.target) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._requests, client, server, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, nursery.cancel_scope)

    async def _requests(
        self, source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        subscribed = False
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                subscribed = subscribed or b"SUBSCRIBE" in data.upper()
                marker = self._hold_on
                if not subscribed and marker is not None and marker in data:
                    self.held.set()
                    await self._released.wait()
                await sink.send_all(data)
        done.cancel()

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        done.cancel()
