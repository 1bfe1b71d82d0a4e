"""``triact serve``: the store, the secret key, the session and work layers and the
process around the stdio server. The one place (with the CLI) that knows every layer."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import sys
from pathlib import Path

import attrs
import trio

from .sessions import (
    DEFAULT_MAX_STATE_BYTES,
    MemoryStore,
    SessionConfig,
    SessionStore,
    SessionStoreError,
    SqliteStore,
    open_session_manager,
)
from .transport import DEFAULT_MAX_LINE_BYTES, SESSION_TOOLS, ServerOptions, serve_stdio
from .work import WorkConfig, WorkStoreError, open_work_sessions, work_tools

logger = logging.getLogger("triact.serve")

_KEY_BYTES = 32


class ServeConfigError(Exception):
    """``triact serve`` was configured in a way it cannot run with."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/triact``, or ``~/.local/state/triact``."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "triact"


def default_store_path() -> Path:
    return default_state_dir() / "sessions.db"


@attrs.frozen(kw_only=True)
class ServeConfig:
    """Everything ``triact serve`` takes from its command line."""

    #: "memory", "sqlite" (the default file) or "sqlite:PATH"; None means "sqlite".
    store: str | None = None
    idle_ttl: float = 7200.0
    max_sessions: int = 10_000
    log_level: str = "warning"
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_state_bytes: int = DEFAULT_MAX_STATE_BYTES
    #: A file holding the hex key that signs session tokens; created (0600) if missing.
    #: By default a SQLite store keeps one next to its database, "<db>.key".
    secret_key_file: Path | None = None
    shutdown_grace: float = 5.0
    #: Seconds before a long call's first progress report, and between reports.
    progress_interval: float = 1.0
    #: The work tools' settings (``--allowed-root``, ``--git-timeout``, ...), as keyword
    #: arguments of :class:`~triact.work.WorkConfig`; checked by :meth:`work_config`.
    work: dict[str, object] = attrs.field(factory=dict)

    def open_store(self) -> tuple[SessionStore, Path | None]:
        """The store, and the key file that goes with it by default (None for memory)."""
        spec = self.store or "sqlite"
        if spec == "memory":
            return MemoryStore(), None
        if spec == "sqlite":
            path = default_store_path()
        elif spec.startswith("sqlite:") and len(spec) > len("sqlite:"):
            path = Path(spec[len("sqlite:") :]).expanduser()
        else:
            raise ServeConfigError(
                f"--store must be 'memory', 'sqlite' or 'sqlite:PATH', not {spec!r}"
            )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ServeConfigError(f"cannot create the directory of {str(path)!r}: {exc}") from exc
        return SqliteStore(path), path.with_name(path.name + ".key")

    def session_config(self) -> SessionConfig:
        store, default_key_file = self.open_store()
        key_file = self.secret_key_file or default_key_file
        key = load_secret_key(key_file) if key_file is not None else None
        try:
            return SessionConfig(
                idle_ttl=self.idle_ttl,
                max_sessions=self.max_sessions,
                max_state_bytes=self.max_state_bytes,
                store=store,
                secret_key=key,
                shutdown_grace=self.shutdown_grace,
            )
        except ValueError as exc:
            raise ServeConfigError(str(exc)) from exc

    def work_config(self) -> WorkConfig:
        try:
            return WorkConfig(**self.work)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ServeConfigError(str(exc)) from exc

    def server_options(self) -> ServerOptions:
        try:
            return ServerOptions(
                max_line_bytes=self.max_line_bytes,
                shutdown_grace=self.shutdown_grace,
                progress_interval=self.progress_interval,
            )
        except ValueError as exc:
            raise ServeConfigError(str(exc)) from exc


def load_secret_key(path: Path) -> bytes:
    """The key in ``path`` (hex text), creating the file with a new random key, readable
    by its owner only, if it does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ServeConfigError(f"cannot create the key file {str(path)!r}: {exc}") from exc
    else:
        key = secrets.token_bytes(_KEY_BYTES)
        with os.fdopen(fd, "w") as file:
            file.write(key.hex() + "\n")
        logger.info("created the secret key file %s", path)
        return key
    try:
        text = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ServeConfigError(f"cannot read the key file {str(path)!r}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("the key file %s is readable by others; chmod 600 it", path)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ServeConfigError(
            f"the key file {str(path)!r} must hold at least 16 bytes as hex "
            "(e.g. the output of: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key


def run_serve(config: ServeConfig) -> int:
    """Run the stdio MCP server in this process until stdin ends or SIGTERM/SIGINT;
    return the exit status."""
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    session_config = config.session_config()
    options = config.server_options()
    work_config = config.work_config()
    if sys.stdin.isatty():
        print(
            "triact serve: speaking MCP (JSON-RPC, one message per line) on stdin/stdout; "
            "an MCP client normally starts this command itself (see docs/mcp.md). "
            "Ctrl-D ends it.",
            file=sys.stderr,
        )
    store = session_config.store
    logger.info("serving MCP on stdio; store: %s", getattr(store, "path", None) or "memory")
    try:
        trio.run(_serve, session_config, options, work_config)
    except (SessionStoreError, WorkStoreError):
        logger.exception("the session store failed")
        return 1
    return 0


async def _serve(
    session_config: SessionConfig, options: ServerOptions, work_config: WorkConfig
) -> None:
    async with (
        open_session_manager(session_config) as manager,
        open_work_sessions(manager, work_config) as work,
    ):
        await serve_stdio(manager, SESSION_TOOLS | work_tools(work), options)
    logger.info("stopped; the store is flushed")
