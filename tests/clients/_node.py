"""The official MCP TypeScript SDK clients, installed from this directory's
``package-lock.json`` and driven through ``driver.mjs``: one Node process per client."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
#: What ``driver.mjs`` accepts: the v1 SDK, and v2 in its handshake (legacy) and
#: negotiating (``auto``: the stateless 2026-07-28 revision) modes.
FLAVOURS = ("v1", "v2", "v2-auto")
#: The name ``driver.mjs`` is installed under: by its content, since the install
#: directory is shared by every checkout with the same lock file (two checkouts with
#: different drivers, testing at once, must not run each other's).
DRIVER = f"driver-{hashlib.sha256((HERE / 'driver.mjs').read_bytes()).hexdigest()[:16]}.mjs"
ANSWER_TIMEOUT = 60.0
INSTALL_TIMEOUT = 600.0


def _cache_root() -> Path:
    configured = os.environ.get("TRIACT_NODE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "triact" / "node-clients"


def installed_clients() -> Path:
    """A directory holding ``driver.mjs`` (as :data:`DRIVER`) beside the SDKs the lock
    file names (see :func:`installed_packages`)."""
    target = installed_packages(HERE)
    if not (target / DRIVER).exists():  # written whole, then renamed into place
        staging = target / f"{DRIVER}.{os.getpid()}.tmp"
        shutil.copyfile(HERE / "driver.mjs", staging)
        staging.rename(target / DRIVER)
    return target


def installed_packages(source: Path) -> Path:
    """A directory holding the packages ``source``'s ``package-lock.json`` names,
    installed with ``npm ci`` once per lock file (reused while its hash is the same);
    skips the test where Node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed to test with the TypeScript MCP clients")
    lock = (source / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (source / "package.json").read_bytes()).hexdigest()[:16]
    target = _cache_root() / digest
    if not (target / "node_modules" / ".installed").exists():
        staging = target.with_name(f"{digest}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(source / name, staging / name)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
        (staging / "node_modules" / ".installed").touch()
        try:
            staging.rename(target)
        except OSError:  # another run installed it first
            shutil.rmtree(staging, ignore_errors=True)
    return target


_LISTENING = re.compile(r"MCP over HTTP at (http://\S+/mcp)")


def server_env(tmp: Path) -> dict[str, str]:
    """The environment of a ``triact serve`` under test: its state and home under
    ``tmp``, nothing of the caller's but ``PATH`` (and ``PYTHONPATH``)."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "XDG_STATE_HOME": str(tmp / "state"),
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
    }
    if "PYTHONPATH" in os.environ:  # the triact under test, not the one installed
        paths = os.environ["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(path) for path in paths)
    return env


def start_http_server(
    tmp: Path, serve_args: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """``triact serve --http 127.0.0.1:0 --store memory *serve_args`` (state and home
    under ``tmp``, stderr in ``tmp/serve.log``), and the URL it prints once it listens."""
    env = server_env(tmp)
    log = tmp / "serve.log"
    command = [sys.executable, "-m", "triact.cli", "serve", "--store", "memory", *serve_args]
    with log.open("ab") as stderr:
        server = subprocess.Popen(
            [*command, "--http", "127.0.0.1:0"], stdin=subprocess.DEVNULL, stderr=stderr, env=env
        )
    deadline = time.monotonic() + 60
    while (found := _LISTENING.search(log.read_text())) is None:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            raise AssertionError(f"triact serve --http did not listen:\n{log.read_text()}")
        time.sleep(0.05)
    return server, found.group(1)


def stop_http_server(server: subprocess.Popen[bytes], tmp: Path) -> None:
    """SIGTERM to a server :func:`start_http_server` started: it must exit with 0."""
    server.send_signal(signal.SIGTERM)
    try:
        status = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        raise
    assert status == 0, (tmp / "serve.log").read_text()


class DriverError(Exception):
    """The client threw: ``name``, ``code`` and ``message`` of what it threw."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error['name']} {error['code']}: {error['message']}")
        self.name = error["name"]
        self.code = error["code"]
        self.message = error["message"]


class Driver:
    """One SDK client in a Node process; :meth:`request` sends a command and waits for
    its answer, :meth:`send` and :meth:`wait` let several run at once."""

    def __init__(self, flavour: str, directory: Path, log: Path) -> None:
        self.flavour = flavour
        self._log = log
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}
        self._arrived: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with log.open("a") as stderr:
            self.proc = subprocess.Popen(
                ["node", str(directory / DRIVER), flavour],
                cwd=directory,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._arrived.put(json.loads(line))
        self._arrived.put(None)

    def send(self, op: str, **fields: Any) -> int:
        command_id = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": command_id, "op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        return command_id

    def wait(self, command_id: int) -> Any:
        """The answer to a command; raises DriverError if the client threw."""
        while command_id not in self._answers:
            try:
                message = self._arrived.get(timeout=ANSWER_TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no answer from the {self.flavour} client") from None
            if message is None:
                raise AssertionError(f"the {self.flavour} client exited:\n{self._log.read_text()}")
            self._answers[message["id"]] = message
        message = self._answers.pop(command_id)
        if "error" in message:
            raise DriverError(message["error"])
        return message["ok"]

    def request(self, op: str, **fields: Any) -> Any:
        return self.wait(self.send(op, **fields))

    def call(self, name: str, arguments: dict[str, Any] | None = None, **options: Any) -> Any:
        """The CallToolResult of a call (``result``), with ``progress`` when asked."""
        return self.request("call", name=name, arguments=arguments or {}, **options)

    def connect(self, tmp: Path, *args: str) -> Any:
        """Start ``triact serve *args`` (state and home under ``tmp``, stderr in
        ``tmp/serve.log``) and connect to it."""
        env = server_env(tmp)
        return self.request(
            "connect",
            command=sys.executable,
            args=["-m", "triact.cli", "serve", *args],
            env=env,
            stderr=str(tmp / "serve.log"),
        )

    def close(self) -> None:
        """End the client (it closes the server) and the Node process."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=ANSWER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
