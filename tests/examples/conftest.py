"""Running an example server in a process of its own, as its docstring says."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
READY_TIMEOUT = 30.0  # imports and startup; a healthy server takes about a second
STOP_TIMEOUT = 20.0


class Served:
    """An example server: ``url`` from its ``ready URL`` line; ``stop()`` sends SIGINT
    and returns its exit code and the lines it printed after ``ready``."""

    def __init__(self, name: str, log: Path) -> None:
        self._log = log
        self._lines: queue.Queue[str | None] = queue.Queue()
        with log.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLES / f"{name}.py"), "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self._next(READY_TIMEOUT)
        if line is None or not line.startswith("ready "):
            self.kill()
            raise AssertionError(f"{name} did not start ({line!r}):\n{self.log()}")
        self.url = line.split()[1]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def log(self) -> str:
        return self._log.read_text()

    def stop(self) -> tuple[int, list[str]]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=STOP_TIMEOUT)
        lines = []
        while (line := self._next(STOP_TIMEOUT)) is not None:
            lines.append(line)
        return code, lines

    def kill(self) -> None:
        """Kill it if it still runs; release the pipe either way."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def serve_example(tmp_path: Path) -> Callable[[str], AbstractContextManager[Served]]:
    """``with serve_example("name") as server:`` runs ``examples/name.py --port 0``
    until the block ends (killed then, if the test did not stop it)."""

    @contextmanager
    def serve(name: str) -> Iterator[Served]:
        server = Served(name, tmp_path / f"{name}.log")
        try:
            yield server
        finally:
            server.kill()

    return serve
