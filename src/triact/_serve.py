"""``triact serve``: the store, the secret key, the session and work layers and the
process around the stdio server. The one place (with the CLI) that knows every layer."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import signal
import stat
import sys
import tempfile
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from .sessions import (
    MemoryStore,
    RedisStore,
    SessionConfig,
    SessionManager,
    SessionStore,
    SessionStoreError,
    SqliteStore,
    open_session_manager,
)
from .transport import (
    SESSION_TOOLS,
    BearerTokens,
    HttpOptions,
    PromptSet,
    ServerOptions,
    TokenFileError,
    ToolSet,
    open_http_app,
    serve_stdio,
)
from .transport._http import ANSWER_MARGIN, McpHttpApp, stop_calls
from .work import WorkConfig, WorkStoreError, open_work_sessions, work_prompts, work_tools

logger = logging.getLogger("triact.serve")

_KEY_BYTES = 32


#: The server ``triact serve --http`` runs its app on unless ``--server`` says.
DEFAULT_HTTP_SERVER = "h11"

#: Requests one keep-alive HTTP connection may carry before Hypercorn closes it.
KEEP_ALIVE_MAX_REQUESTS = 1_000_000


class ServeConfigError(Exception):
    """``triact serve`` was configured in a way it cannot run with."""


class ServeStartError(ServeConfigError):
    """``triact serve`` could not start (its store or work layer would not open)."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/triact``, or ``~/.local/state/triact``."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "triact"


def default_store_path() -> Path:
    return default_state_dir() / "sessions.db"


@attrs.frozen(kw_only=True)
class ServeConfig:
    """Everything ``triact serve`` takes from its command line. A setting left None
    takes the library's default (:class:`~triact.SessionConfig`,
    :class:`~triact.transport.ServerOptions`), written there only."""

    #: "memory", "sqlite" (the default file), "sqlite:PATH", or a redis:// or rediss://
    #: URL; None means "sqlite".
    store: str | None = None
    idle_ttl: float | None = None
    max_sessions: int | None = None
    #: Sessions one principal (a bearer token's, over HTTP) may have at once.
    max_sessions_per_principal: int | None = None
    log_level: str = "warning"
    max_line_bytes: int | None = None
    max_state_bytes: int | None = None
    #: A file holding the hex key that signs session tokens; created (0600) if missing.
    #: By default a SQLite store keeps one next to its database, "<db>.key".
    secret_key_file: Path | None = None
    #: For the server's calls in flight and for the manager's shutdown alike.
    shutdown_grace: float | None = None
    #: Seconds before a long call's first progress report, and between reports.
    progress_interval: float | None = None
    #: The work tools' settings (``--allowed-root``, ``--git-timeout``, ...).
    work: WorkConfig = attrs.field(factory=WorkConfig)
    #: ``[HOST:]PORT``: serve MCP over streamable HTTP there instead of stdio.
    http: str | None = None
    #: With ``http``: the token file (lines ``PRINCIPAL TOKEN``) every request must
    #: carry a token of; None: no authentication.
    tokens: Path | None = None
    #: With ``http`` and no ``tokens``: serve a host beyond loopback all the same.
    allow_unauthenticated: bool = False
    #: Over HTTP: origins allowed beside loopback ones (``--allow-origin``).
    allow_origins: tuple[str, ...] = ()
    #: Over HTTP: the largest request body, in bytes.
    max_body_bytes: int | None = None
    #: Over HTTP: requests handled at once (beyond, 503).
    max_requests: int | None = None
    #: Over HTTP with tokens: requests one principal has handled at once (beyond, 503).
    max_requests_per_principal: int | None = None
    #: Over HTTP: seconds a client gets to send a request's body (beyond, 408).
    read_timeout: float | None = None
    #: Over HTTP: seconds an idle keep-alive connection stays open.
    keep_alive: float | None = None
    #: Over HTTP: the server the app runs on, "h11" (triact's own) or "hypercorn";
    #: None: the default (:data:`DEFAULT_HTTP_SERVER`).
    server: str | None = None
    #: Over HTTP (h11 server): connections served at once (beyond, 503 and close).
    max_connections: int | None = None
    #: Over HTTP: seconds an MCP session lives after its last request.
    mcp_session_ttl: float | None = None
    #: Over HTTP: MCP sessions one principal may have open through this process.
    max_mcp_sessions: int | None = None

    def http_address(self) -> tuple[str, int] | None:
        """The host and port of ``http`` (host 127.0.0.1 by default). Without
        ``tokens``, a loopback host only, unless ``allow_unauthenticated``."""
        if self.http is None:
            for given, option in (
                (self.tokens is not None, "--tokens"),
                (self.allow_unauthenticated, "--allow-unauthenticated"),
            ):
                if given:
                    raise ServeConfigError(f"{option} applies to --http only; add --http PORT")
            return None
        if self.tokens is not None and self.allow_unauthenticated:
            raise ServeConfigError(
                "--tokens and --allow-unauthenticated exclude each other: with --tokens "
                "every request is authenticated"
            )
        host, _, port_text = self.http.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port_text.isdigit() or int(port_text) > 65535:
            raise ServeConfigError(f"--http takes [HOST:]PORT, e.g. 8765; got {self.http!r}")
        loopback = host in ("127.0.0.1", "localhost", "::1")
        if not loopback and self.tokens is None and not self.allow_unauthenticated:
            raise ServeConfigError(
                f"--http {self.http}: a host beyond loopback (127.0.0.1, localhost, ::1) "
                "would serve every session to anyone who can reach it; give --tokens FILE "
                "to require bearer tokens, or --allow-unauthenticated if that is what you "
                "want"
            )
        return host, int(port_text)

    def bearer_tokens(self) -> BearerTokens | None:
        """The tokens of ``tokens`` (None without); ServeConfigError if the file cannot
        be used (the message names the line, never a token)."""
        if self.tokens is None:
            return None
        try:
            return BearerTokens.read(self.tokens)
        except TokenFileError as exc:
            raise ServeConfigError(str(exc)) from None

    def http_options(self, tokens: BearerTokens | None = None) -> HttpOptions:
        """The HTTP transport's options (ServeConfigError if one is refused)."""
        if self.max_requests_per_principal is not None and tokens is None:
            raise ServeConfigError(
                "--max-requests-per-principal needs --tokens: without tokens no request "
                "has a principal"
            )
        given = _given(
            tokens=tokens,
            allowed_origins=self.allow_origins or None,
            max_body_bytes=self.max_body_bytes,
            max_requests=self.max_requests,
            max_requests_per_principal=self.max_requests_per_principal,
            body_timeout=self.read_timeout,
            session_ttl=self.mcp_session_ttl,
            max_mcp_sessions=self.max_mcp_sessions,
        )
        try:
            return HttpOptions(**given)
        except ValueError as exc:
            raise ServeConfigError(
                str(exc).replace("HttpOptions.allowed_origins", "--allow-origin")
            ) from exc

    def open_store(self) -> tuple[SessionStore, Path | None]:
        """The store, and the key file that goes with it by default (None for memory)."""
        spec = self.store or "sqlite"
        if spec == "memory":
            return MemoryStore(), None
        if spec.startswith(("redis://", "rediss://")):
            try:
                store = RedisStore(spec)
            except ValueError as exc:  # the message never holds the password
                raise ServeConfigError(f"--store: {exc}") from None
            # Every process must sign tokens with the same key: by default the one in
            # this machine's state directory (give --secret-key-file on the others).
            key_file = default_state_dir() / "redis.key"
            if self.secret_key_file is None:
                try:
                    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                except OSError as exc:
                    raise ServeConfigError(
                        f"cannot create the directory of {str(key_file)!r}: {exc}"
                    ) from exc
            return store, key_file
        if spec == "sqlite":
            path = default_store_path()
            try:  # only the default location is created
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise ServeConfigError(
                    f"cannot create the directory of {str(path)!r}: {exc}"
                ) from exc
        elif spec.startswith("sqlite:") and len(spec) > len("sqlite:"):
            path = Path(spec[len("sqlite:") :]).expanduser()
            if not path.parent.is_dir():
                raise ServeConfigError(
                    f"--store {spec}: directory {str(path.parent)!r} does not exist; "
                    "create it first (only the default location is created)"
                )
        else:
            raise ServeConfigError(
                "--store must be 'memory', 'sqlite', 'sqlite:PATH' or a redis:// (rediss://) "
                f"URL, not {_hidden(spec)!r}"
            )
        return SqliteStore(path), path.with_name(path.name + ".key")

    def session_config(self) -> tuple[SessionConfig, Path | None]:
        """The sessions' configuration, and the key file whose key it is to take
        (None: none is kept; the manager makes a key of its own)."""
        store, default_key_file = self.open_store()
        key_file = self.secret_key_file or default_key_file
        given = _given(
            idle_ttl=self.idle_ttl,
            max_sessions=self.max_sessions,
            max_sessions_per_principal=self.max_sessions_per_principal,
            max_state_bytes=self.max_state_bytes,
            shutdown_grace=self.shutdown_grace,
        )
        try:
            config = attrs.evolve(SessionConfig(store=store), **given)
        except ValueError as exc:
            raise ServeConfigError(str(exc)) from exc
        return config, key_file

    def server_options(self) -> ServerOptions:
        given = _given(
            max_line_bytes=self.max_line_bytes,
            shutdown_grace=self.shutdown_grace,
            progress_interval=self.progress_interval,
        )
        try:
            return attrs.evolve(ServerOptions(), **given)
        except ValueError as exc:
            raise ServeConfigError(str(exc)) from exc


def _hidden(spec: str) -> str:
    """A --store value as fit to show: whatever precedes an ``@`` hidden."""
    return "***@" + spec.rpartition("@")[2] if "@" in spec else spec


def _given(**settings: object) -> dict[str, Any]:
    return {name: value for name, value in settings.items() if value is not None}


def work_config(**settings: object) -> WorkConfig:
    """A WorkConfig of the settings given (None: its default); ServeConfigError if one
    is refused."""
    try:
        return WorkConfig(**_given(**settings))
    except (TypeError, ValueError) as exc:
        raise ServeConfigError(str(exc)) from exc


def ensure_secret_key(path: Path) -> tuple[bytes, bool]:
    """The key in ``path``, and whether this call created the file (readable by its
    owner only, with a new random key) because there was none.

    Processes that start at once on a new store all end up with the one key: the
    file appears whole (written beside it, then linked into place, which fails if
    the name exists), and a process that finds it made meanwhile takes its key."""
    for _ in range(3):
        key = read_secret_key(path)
        if key is not None:
            return key, False
        key = secrets.token_bytes(_KEY_BYTES)
        try:
            if _link_new_key(path, key):
                logger.info("created the secret key file %s", path)
                return key, True
        except OSError as exc:
            raise ServeStartError(
                f"cannot create the key file {str(path)!r}: {exc.strerror or exc}"
            ) from exc
    raise ServeStartError(f"the key file {str(path)!r} keeps appearing and vanishing")


def _link_new_key(path: Path, key: bytes) -> bool:
    """Put a file holding ``key`` at ``path`` unless one is there (then False)."""
    fd, aside = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:  # mkstemp's file is its owner's only
            file.write(key.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(aside)


def read_secret_key(path: Path) -> bytes | None:
    """The key in ``path`` (hex text); None if there is no such file."""
    if not path.exists():
        return None
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


def _check_stdio_open() -> None:
    """Refuse to serve on a closed stdin or stdout: the first file opened would take
    its fd (the store's, say) and MCP be read from it or written into it."""
    for fd, name in ((0, "stdin"), (1, "stdout")):
        try:
            os.fstat(fd)
        except OSError:
            raise ServeConfigError(
                f"{name} is closed: without --http, triact serve speaks MCP on its stdin "
                "and stdout (an MCP client starts it with both as pipes)"
            ) from None


def run_serve(config: ServeConfig) -> int:
    """Run the stdio MCP server in this process until stdin ends or SIGTERM/SIGINT;
    return the exit status."""
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    address = config.http_address()
    http = config.http_options(config.bearer_tokens())
    given_http_only = any(
        given is not None for given in (config.keep_alive, config.max_connections, config.server)
    )
    if address is None and (http != HttpOptions() or given_http_only):
        raise ServeConfigError(
            "--allow-origin, --max-body-bytes, --max-requests, "
            "--max-requests-per-principal, --read-timeout, --keep-alive, --server, "
            "--max-connections, --mcp-session-ttl and --max-mcp-sessions are for the HTTP "
            "transport: add --http"
        )
    server = config.server or DEFAULT_HTTP_SERVER
    if server == "hypercorn" and config.max_connections is not None:
        raise ServeConfigError(
            "--max-connections is for --server h11 (Hypercorn has no cap on connections)"
        )
    served_by = HttpServing(server, config.keep_alive, config.max_connections)
    if address is None:
        _check_stdio_open()
    session_config, key_file = config.session_config()
    options = config.server_options()
    work_config = config.work
    store = session_config.store
    leftovers = _not_there_yet(store)
    if key_file is not None:
        key, created = ensure_secret_key(key_file)
        session_config = attrs.evolve(session_config, secret_key=key)
        if created:
            leftovers.append(key_file)
    if address is None and sys.stdin.isatty():
        print(
            "triact serve: speaking MCP (JSON-RPC, one message per line) on stdin/stdout; "
            "an MCP client normally starts this command itself (see docs/mcp.md). "
            "Ctrl-D ends it.",
            file=sys.stderr,
        )
    shown = store.url if isinstance(store, RedisStore) else getattr(store, "path", None)
    transport = "stdio" if address is None else "HTTP"
    logger.info("serving MCP on %s; store: %s", transport, shown or "memory")
    try:
        trio.run(_serve, session_config, options, work_config, address, http, served_by)
    except ServeStartError:
        _remove(leftovers, store)
        raise
    except (SessionStoreError, WorkStoreError):
        logger.exception("the session store failed")
        return 1
    return 0


def _not_there_yet(store: SessionStore | None) -> list[Path]:
    """The store's files that a start may create and that do not exist yet."""
    paths = []
    if isinstance(store, SqliteStore):
        db = Path(store.path)
        paths += [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm"))]
    return [path for path in paths if not path.exists()]


def _remove(leftovers: list[Path], store: SessionStore | None) -> None:
    """A start that fails leaves nothing behind: remove the files it created, unless
    another process has the store open (SQLite removes the write-ahead log when the
    last connection closes; a log still there after ours closed is another's), which
    then uses them."""
    if isinstance(store, SqliteStore):
        db = Path(store.path)
        if any(db.with_name(db.name + suffix).exists() for suffix in ("-wal", "-shm")):
            return
    for path in leftovers:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _serve(
    session_config: SessionConfig,
    options: ServerOptions,
    work_config: WorkConfig,
    address: tuple[str, int] | None = None,
    http: HttpOptions | None = None,
    serving: HttpServing | None = None,
) -> None:
    async with AsyncExitStack() as stack:
        try:
            manager = await stack.enter_async_context(open_session_manager(session_config))
            work = await stack.enter_async_context(open_work_sessions(manager, work_config))
        except Exception as exc:
            logger.debug("triact serve could not start", exc_info=True)
            raise ServeStartError(_one_line(exc)) from exc
        tools = SESSION_TOOLS | work_tools(work)
        prompts = work_prompts()
        if address is None:
            _freeze_the_start()
            await serve_stdio(manager, tools, options, prompts=prompts)
        else:
            await _serve_http(manager, tools, options, address, http, serving, prompts)
    logger.info("stopped; the store is flushed")


@attrs.frozen
class HttpServing:
    """What serves the HTTP app: the server ("h11", triact's own, or "hypercorn") and
    its connection settings (None: the server's default)."""

    server: str = DEFAULT_HTTP_SERVER
    keep_alive: float | None = None
    max_connections: int | None = None


async def _serve_http(
    manager: SessionManager,
    tools: ToolSet,
    options: ServerOptions,
    address: tuple[str, int],
    http: HttpOptions | None = None,
    serving: HttpServing | None = None,
    prompts: PromptSet | None = None,
) -> None:
    """MCP over streamable HTTP until SIGTERM or SIGINT, on triact's h11 server (or
    Hypercorn's Trio worker): then it takes no new connections, lets the requests in
    flight finish within the grace period (their calls too), and returns."""
    serving = serving or HttpServing()
    if serving.server == "hypercorn":
        try:
            import hypercorn.trio  # noqa: F401
        except ImportError as exc:
            raise ServeStartError(
                "--server hypercorn needs Hypercorn: install triact's hypercorn extra "
                "(pip install '.[hypercorn]' in a checkout)"
            ) from exc
    else:
        try:
            import h11  # noqa: F401
        except ImportError as exc:
            raise ServeStartError(
                "--http needs h11: install triact's http extra (pip install '.[http]' in a "
                "checkout)"
            ) from exc
    host, port = address
    http = http or HttpOptions()
    stop = trio.Event()
    tokens = http.tokens
    if tokens is None and host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "serving %s without authentication (--allow-unauthenticated): anyone who can "
            "reach it can use every session",
            host,
        )
    async with (
        open_http_app(manager, tools, options, http, prompts=prompts) as app,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_set_on_signal, stop)
        nursery.start_soon(_stop_calls_on, stop, app, options.shutdown_grace)
        # The connections get a moment more than the calls' grace period: the calls
        # still running then are cancelled and answered (see stop_calls).
        options = attrs.evolve(options, shutdown_grace=options.shutdown_grace + ANSWER_MARGIN)
        if serving.server == "hypercorn":
            run = _hypercorn(app, host, port, options, serving, stop)
        else:
            from .transport._h11server import HttpServerOptions, serve_http

            settings = _given(
                keep_alive=serving.keep_alive,
                max_connections=serving.max_connections,
                shutdown_grace=options.shutdown_grace,
            )
            run = partial(serve_http, app, host, port, HttpServerOptions(**settings), stop=stop)
        binds = await nursery.start(run)
        if tokens is not None:
            logger.info("bearer tokens required: %d principal(s)", len(tokens.principals))
        _freeze_the_start()
        print(f"triact serve: MCP over HTTP at {binds[0]}/mcp", file=sys.stderr, flush=True)


def _freeze_the_start() -> None:
    """Take what the start made (the modules' functions, classes and dicts, the
    store's and the manager's own objects: about 35,000 objects, more with the
    semantic extra's model) out of the cyclic collector's sight, once the server is
    ready to serve: a full collection then walks only what its sessions and calls made
    since, where it walked the start's objects too, about 5 ms each time (more on a
    loaded machine), whatever the number of sessions. The start's garbage is collected
    first; a frozen object is still freed when nothing refers to it, only a cycle
    among frozen objects would never be collected."""
    gc.collect()
    gc.freeze()
    logger.debug(
        "%d objects of the start frozen out of the collector's sight", gc.get_freeze_count()
    )


def _hypercorn(
    app: Any, host: str, port: int, options: ServerOptions, serving: HttpServing, stop: trio.Event
) -> Any:
    """Hypercorn's Trio worker serving ``app`` until ``stop`` (for ``nursery.start``)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = options.shutdown_grace
    # Hypercorn closes a keep-alive connection after 1,000 requests by default (a
    # multi-worker server's way to spread connections anew); this is one process, so
    # a client keeps its connection (and skips a reconnect) for far longer.
    config.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
    # No "server: hypercorn-h11" header: one header less to build and send per
    # answer, and nothing told about the server's software.
    config.include_server_header = False
    # No read_timeout: Hypercorn's closes a connection whose client is silent that long
    # even while its request runs (a long call). A connection that has not sent a
    # whole request head is closed after keep_alive_timeout; the app bounds the time a
    # body takes (body_timeout, 408).
    if serving.keep_alive is not None:
        config.keep_alive_timeout = serving.keep_alive
    return partial(serve, app, config, shutdown_trigger=stop.wait)


async def _stop_calls_on(stop: trio.Event, app: McpHttpApp, grace: float) -> None:
    await stop.wait()
    await stop_calls(app, grace)


async def _set_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("%s: stopping", signal.strsignal(signum))
            stop.set()
            return


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, SessionStoreError | WorkStoreError):
        return text
    return f"{type(exc).__name__}: {text} (--log-level debug shows where)"
