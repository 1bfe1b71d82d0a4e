"""WorkSessions: the work-session lifecycle (start, checkpoint, status, end with a
handoff), trusted operations and reflections, on a SessionManager."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import attrs
import trio

from ..sessions import (
    MemoryStore,
    RedisStore,
    Session,
    SessionManager,
    SessionNotFoundError,
    SessionSecurityError,
    SessionState,
    SessionStoreError,
    SessionThrottledError,
    SqliteStore,
)
from . import _search as search
from . import _trust as trust
from ._backend import MemoryWorkStore, WorkStore
from ._config import WorkConfig
from ._embedding import Embedder, semantic_installed
from ._errors import WorkDataError, WorkLimitError, WorkStoreError, commit_kept
from ._git import check_directory, checkpoint_git, report, resolve
from ._handoff import hand_off
from ._records import (
    Checkpoint,
    Excerpt,
    ExcerptHit,
    ExcerptSearch,
    NoteKind,
    NoteScope,
    Reflection,
    ReflectionHit,
    ReflectionSearch,
    SearchMethod,
    StoredExcerpt,
    StoredReflection,
    with_work_record,
    work_record,
)
from ._redis import RedisWorkStore
from ._reports import Ended, Started, TrustState, WorkReport
from ._semantic import Semantic
from ._sqlite import SqliteWorkStore

#: How many times a start names its new session the directory's when each time another
#: start named one first that is gone too (see WorkSessions._session_of).
_CLAIMS = 8

logger = logging.getLogger("triact.work")


class WorkSessions:
    """The work layer of one :class:`~triact.SessionManager`.

    Open it with :func:`open_work_sessions`; :func:`~triact.work.work_tools` offers it
    as MCP tools. It owns what it keeps beside the sessions (its :class:`WorkStore`).
    Calls that act on a session take its handle; like the session API they do not
    check tokens (``start``, which finds a session by its directory, does).
    """

    def __init__(
        self,
        manager: SessionManager,
        config: WorkConfig | None = None,
        store: WorkStore | None = None,
    ) -> None:
        self.manager = manager
        self.config = config or WorkConfig()
        self.store = store or _store_for(manager)
        #: Search by meaning, when on (set by :func:`open_work_sessions`).
        self.semantic: Semantic | None = None
        # Starts in progress, by directory: a second start for a directory waits for
        # the first, so that one directory never gets two sessions.
        self._starting: dict[str, trio.Event] = {}

    # -- lifecycle ------------------------------------------------------------------

    async def start(
        self,
        working_directory: str | os.PathLike[str],
        *,
        project: str | None = None,
        token: str | None = None,
        bind_client: bool = False,
        client_id: str | None = None,
        principal: str | None = None,
    ) -> Started:
        """Resume the live session of ``working_directory``, or create one; record the
        start (and ``project``, if given) in it, and report its state, the project's
        git state and the handoff of the session that last ended there.

        A bound session is resumed only with its ``token`` (SessionSecurityError);
        ``bind_client`` and ``client_id`` apply to a session this call creates. A
        session is resumed only by its own ``principal`` (None: one without); for
        another, this call creates a session of its own, which becomes the directory's
        live session. WorkDirectoryError for a directory that is refused.
        """
        if project is not None:
            project = search.check_project(project)
        directory = await trio.to_thread.run_sync(check_directory, working_directory, self.config)
        now = self.manager.wall_clock()

        def record_start(state: SessionState) -> SessionState:
            record = work_record(state)
            first = now if record.started_at is None else record.started_at
            record = attrs.evolve(record, started_at=first, starts=record.starts + 1)
            if project is not None:
                state = attrs.evolve(state, project_id=project)
            return with_work_record(state, record)

        async with self._turn(directory):
            session, created = await self._session_of(
                directory, project, token, bind_client, client_id, principal
            )
            try:
                state = await session.update(record_start)
                report = await self._report(state)
            except BaseException:
                if created:  # a session whose handle (and token) nobody received
                    with trio.CancelScope(shield=True):
                        await self.manager.remove_session(session.id)
                raise
        return Started(session, created, report)

    @asynccontextmanager
    async def _turn(self, directory: str) -> AsyncIterator[None]:
        """The directory's turn to start: one start at a time per directory, from
        looking for its session to reporting, so that a directory never gets two
        sessions and no start resumes a session another start may still take back."""
        while (pending := self._starting.get(directory)) is not None:
            await pending.wait()
        done = self._starting[directory] = trio.Event()
        try:
            yield
        finally:
            del self._starting[directory]
            done.set()

    async def _session_of(
        self,
        directory: str,
        project: str | None,
        token: str | None,
        bind_client: bool,
        client_id: str | None,
        principal: str | None,
    ) -> tuple[Session, bool]:
        """The directory's live session (False), or a new one that the store now names
        the directory's (True). The index is claimed, not overwritten: a start in
        another process on the store may name one between looking and naming, and its
        session is then the directory's (this one's is removed), so that concurrent
        starts in several processes get one session too."""
        named = await self.store.session_for(directory, principal=principal)
        session = await self._live_session(named, directory, token, principal)
        if session is not None:
            return session, False
        session = await self.manager.create_session(
            f"work: {os.path.basename(directory) or directory}",
            directory,
            bind_client=bind_client,
            client_id=client_id,
            project_id=project,
            principal=principal,
        )
        try:
            for _ in range(_CLAIMS):
                now = self.manager.wall_clock()
                held = await self.store.claim(
                    directory, session.id, now, expected=named, principal=principal
                )
                if held is None:
                    return session, True
                other = await self._live_session(held, directory, token, principal)
                if other is not None:  # another process's start named it first
                    with trio.CancelScope(shield=True):
                        await self.manager.remove_session(session.id)
                    return other, False
                named = held  # gone too: claimed over it
            raise SessionStoreError(
                f"the session recorded for {directory!r} changed {_CLAIMS} times while "
                "this start recorded its own; nothing was done, retry",
                applied=False,
            )
        except BaseException:
            with trio.CancelScope(shield=True):  # no session nobody can find
                await self.manager.remove_session(session.id)
            raise

    async def _live_session(
        self, session_id: str | None, directory: str, token: str | None, principal: str | None
    ) -> Session | None:
        """The session ``session_id`` (the one the index names for ``directory``) if
        it is the directory's live session for ``principal``; None if there is none."""
        if session_id is None:
            await trio.lowlevel.checkpoint()
            return None
        try:
            session = await self.manager.get_session(session_id)
            state = await session.snapshot()
        except SessionNotFoundError:
            return None  # it expired or ended: the index is mended by the new session
        if state.working_directory != directory:
            return None  # it moved to another directory since
        if state.principal != principal:
            return None  # another principal's: not this caller's to resume, nor to know of
        if state.client_binding is not None:
            try:
                await session.validate_security(token, "session_start")
            except SessionThrottledError as exc:
                raise SessionThrottledError(
                    f"{exc} (it is the live session of this working directory)",
                    retry_after=exc.retry_after,
                ) from exc
            except SessionSecurityError as exc:
                raise SessionSecurityError(
                    f"{exc} (it is the live session of this working directory: pass its "
                    "token to resume it, or end it first)"
                ) from exc
        return session

    async def status(self, session: Session) -> WorkReport:
        """The report of :meth:`start`, for a session, without changing anything."""
        return await self._report(await session.snapshot())

    async def _report(self, state: SessionState) -> WorkReport:
        record = work_record(state)
        git = handoff = handoff_error = None
        directory = state.working_directory
        if directory is not None:
            resolved, problem = await resolve(directory, self.config)
            git = await report(resolved, problem, self.config)
            try:
                handoff = await self.store.handoff(resolved or directory, principal=state.principal)
            except WorkDataError as exc:
                # Reported, as a git failure is: a record nobody can read must not keep
                # every start in its directory failing (the next end replaces it).
                handoff_error = str(exc)
                logger.warning("session %s: %s", state.id, exc)
        return WorkReport(
            session_id=state.id,
            version=state.version,
            working_directory=directory,
            project=state.project_id,
            topic=state.topic,
            bound=state.client_binding is not None,
            started_at=record.started_at,
            starts=record.starts,
            git=git,
            checkpoint_count=record.checkpoint_count,
            last_checkpoint=record.checkpoints[-1] if record.checkpoints else None,
            trusted=trust.active_grants(state, self.manager.wall_clock()),
            previous_handoff=handoff,
            handoff_error=handoff_error,
        )

    async def checkpoint(
        self, session: Session, note: str | None = None, *, commit: bool = False
    ) -> Checkpoint:
        """Record a checkpoint in the session: the time, ``note``, and its directory's
        git HEAD, branch and uncommitted paths; with ``commit``, first commit every
        change in the directory (``git add -A``) as a checkpoint commit.

        It runs inside the session's actor, after the calls queued before it and
        before those queued after. NotAGitRepositoryError if ``commit`` and the
        directory is not the top of a git repository; GitError / GitTimeoutError if
        git fails; WorkDirectoryError if the directory went away (or for ``commit``
        without one). Then nothing is recorded. If the call is cancelled after the
        commit was made, the commit stays and the checkpoint is not recorded. If the
        session then refuses or fails to record it (its size past ``max_state_bytes``,
        the store failing, ...), the commit stays too: the error is the session's (its
        type and code) with a message that says so and names the commit, whose hash
        is in its ``commit`` attribute.
        """
        config = self.config
        if note is not None and len(note) > config.max_note_chars:
            raise WorkLimitError(
                f"a checkpoint note has at most {config.max_note_chars} characters "
                "(WorkConfig.max_note_chars)"
            )
        clock = self.manager.wall_clock
        made: str | None = None

        async def take(state: SessionState) -> SessionState:
            nonlocal made
            record = work_record(state)  # refuse a malformed record before git runs
            number = record.checkpoint_count + 1
            git, made = await checkpoint_git(state, note, number, commit, config)
            point = Checkpoint(
                number,
                clock(),
                note,
                git.repository,
                git.branch,
                git.head,
                git.dirty,
                git.dirty_count,
                made,
            )
            kept = (*record.checkpoints, point)[-config.max_checkpoints :]
            record = attrs.evolve(record, checkpoints=kept, checkpoint_count=number)
            return with_work_record(state, record)

        try:
            state = await session.update(take)
        except Exception as exc:
            if made is None:
                raise
            raise commit_kept(exc, made) from exc
        return work_record(state).checkpoints[-1]

    async def end(self, session: Session, *, write_handoff: bool = False) -> Ended:
        """End the session (after the calls queued before this one) and write its
        handoff: into the store, for the next :meth:`start` in its directory, and with
        ``write_handoff`` also as Markdown in the directory (``WorkConfig.handoff_file``).

        Once the session has ended the handoff is seen through even if the caller is
        cancelled, and its failures are reported rather than raised (the session has
        ended all the same): a file that cannot be written in ``file_error``, a store
        that cannot keep it in ``store_error``.
        """
        final = await session.end()
        with trio.CancelScope(shield=True):
            ended = await hand_off(
                final, self.manager.wall_clock(), self.config, self.store, write_handoff
            )
        return ended  # noqa: RET504 (returned from inside the scope, mypy sees no return)

    # -- trusted operations ---------------------------------------------------------

    async def grant(
        self, session: Session, operation: str, *, expires_in: float | None = None
    ) -> TrustState:
        """Trust ``operation`` in this session (its client binding, when bound) for
        ``expires_in`` seconds of wall-clock time, or until revoked. Granting again
        replaces the expiry."""
        now = self.manager.wall_clock()
        state = await session.update(trust.grant(self.config, now, operation, expires_in))
        return self._trust_state(state, now, operation, changed=True)

    async def revoke(self, session: Session, operation: str) -> TrustState:
        """Stop trusting ``operation``; ``changed`` says whether it was trusted."""
        now = self.manager.wall_clock()
        change = trust.revoke(now, operation)
        found: list[bool] = []

        def transform(state: SessionState) -> SessionState:
            found[:] = [trust.is_trusted(state, operation, now)]
            return change(state)

        state = await session.update(transform)
        return self._trust_state(state, now, operation, changed=found[0])

    async def trusted(self, session: Session) -> TrustState:
        """The operations trusted now (a read: changes nothing)."""
        state = await session.snapshot()
        return self._trust_state(state, self.manager.wall_clock(), None, changed=False)

    async def is_trusted(self, session: Session, operation: str) -> bool:
        """Whether ``operation`` is trusted now (a read: changes nothing). A tool that
        holds the session's state already can ask :func:`triact.work.is_trusted`."""
        state = await session.snapshot()
        return trust.is_trusted(state, operation, self.manager.wall_clock())

    def _trust_state(
        self, state: SessionState, now: float, operation: str | None, *, changed: bool
    ) -> TrustState:
        grants = trust.active_grants(state, now)
        return TrustState(
            state.id, state.version, trust.scope_of(state), grants, operation, changed
        )

    # -- reflections and conversation excerpts --------------------------------------

    @property
    def search_mode(self) -> SearchMethod:
        """How searches rank now: "hybrid" while search by meaning is on (its model may
        still fail to load, and a search then says it ranked by words), else the
        store's word search."""
        semantic = self.semantic
        return "hybrid" if semantic is not None and semantic.usable else self.store.search_method

    async def store_reflection(
        self,
        content: str,
        *,
        tags: Iterable[str] = (),
        project: str | None = None,
        principal: str | None = None,
    ) -> StoredReflection:
        """Keep a reflection (at most ``max_reflection_chars``) for ``principal`` (None:
        the caller without one), who alone finds it; its project keeps its newest
        ``max_reflections_per_project`` of the principal's, the oldest are dropped. With
        search by meaning on, it also waits for its embedding (``embedded``)."""
        content, clean_tags, project = search.check_reflection(self.config, content, tags, project)
        note, kept, dropped, embedded = await self._add(
            "reflection",
            content,
            clean_tags,
            project,
            self.config.max_reflections_per_project,
            principal,
        )
        return StoredReflection(note, kept, dropped, embedded)

    async def save_conversation(
        self,
        content: str,
        *,
        tags: Iterable[str] = (),
        project: str | None = None,
        principal: str | None = None,
    ) -> StoredExcerpt:
        """Keep an excerpt of a conversation (at most ``max_conversation_chars``) for
        ``principal``, as :meth:`store_reflection` keeps a reflection; its project keeps
        its newest ``max_conversations_per_project`` of the principal's."""
        content, clean_tags, project = search.check_excerpt(self.config, content, tags, project)
        note, kept, dropped, embedded = await self._add(
            "conversation",
            content,
            clean_tags,
            project,
            self.config.max_conversations_per_project,
            principal,
        )
        return StoredExcerpt(Excerpt.of(note), kept, dropped, embedded)

    async def _add(
        self,
        kind: NoteKind,
        content: str,
        tags: tuple[str, ...],
        project: str | None,
        keep: int,
        principal: str | None,
    ) -> tuple[Reflection, int, int, bool]:
        now = self.manager.wall_clock()
        note, kept, dropped = await self.store.add_note(
            kind, content, tags, project, now, keep, principal=principal
        )
        embedded = False
        if self.semantic is not None:
            embedded = await self.semantic.embed_note(kind, note)
        return note, kept, dropped, embedded

    async def search_reflections(
        self,
        query: str,
        *,
        project: str | None = None,
        tags: Iterable[str] = (),
        limit: int = 10,
        principal: str | None = None,
    ) -> ReflectionSearch:
        """The reflections of ``principal`` (None: those stored without one) matching
        ``query``, best first (newest first among equals), with every tag in ``tags``, of
        ``project`` (None: of every project).
        ``method`` says what ranked them: "hybrid" (words and meaning, weighted by age:
        with the semantic extra), else words alone: "fts5-bm25" (SqliteStore),
        "redis-bm25" (RedisStore) or "text-match" (memory)."""
        method, found = await self._search("reflection", query, project, tags, limit, principal)
        hits = tuple(ReflectionHit(note, score, sim) for note, score, sim in found)
        return ReflectionSearch(method, query, hits)

    async def search_conversations(
        self,
        query: str,
        *,
        project: str | None = None,
        tags: Iterable[str] = (),
        limit: int = 10,
        principal: str | None = None,
    ) -> ExcerptSearch:
        """The conversation excerpts of ``principal`` matching ``query``, as
        :meth:`search_reflections`."""
        method, found = await self._search("conversation", query, project, tags, limit, principal)
        hits = tuple(ExcerptHit(Excerpt.of(note), score, sim) for note, score, sim in found)
        return ExcerptSearch(method, query, hits)

    async def _search(
        self,
        kind: NoteKind,
        query: str,
        project: str | None,
        tags: Iterable[str],
        limit: int,
        principal: str | None,
    ) -> tuple[SearchMethod, list[tuple[Reflection, float, float | None]]]:
        terms = search.check_query(self.config, query)
        clean_tags = search.check_tags(self.config, tags)
        project = search.check_project(project)
        limit = search.check_limit(self.config, limit)
        scope = NoteScope(kind, project, clean_tags, project is None, principal)
        if self.semantic is not None:
            now = self.manager.wall_clock()
            return await self.semantic.search(scope, query, terms, limit, now=now)
        found = await self.store.search_notes(scope, terms, limit)
        return self.store.search_method, [(note, score, None) for note, score in found]


def _store_for(manager: SessionManager) -> WorkStore:
    """The WorkStore that goes with the manager's store: its tables in a SqliteStore's
    file, its keys in a RedisStore's Redis; otherwise memory, kept by this WorkSessions
    (for a store kind this layer does not know, such as a wrapper, that is not
    durable: said at warning level; pass ``store=`` to do better)."""
    store = manager.store
    if isinstance(store, SqliteStore):
        return SqliteWorkStore(store)
    if isinstance(store, RedisStore):
        return RedisWorkStore(store)
    if not isinstance(store, MemoryStore):
        logger.warning(
            "the work layer keeps directory records, handoffs and reflections in "
            "memory for this %s (checkpoints and trust stay in the sessions); pass "
            "open_work_sessions(manager, store=...) a WorkStore to keep them durably",
            type(store).__name__,
        )
    return MemoryWorkStore()


def _embedder_for(config: WorkConfig, store: WorkStore) -> Embedder | None:
    if config.semantic == "off":
        return None
    if not store.keeps_vectors:
        if config.semantic == "on":
            raise WorkStoreError(
                f"search by meaning (semantic 'on') needs a work store that keeps vectors; "
                f"{type(store).__name__} keeps none"
            )
        return None
    if not semantic_installed():
        if config.semantic == "on":
            raise WorkStoreError(
                "search by meaning (semantic 'on') needs triact's semantic extra: "
                "pip install 'triact[semantic]' (see docs/work.md for a CPU-only torch)"
            )
        return None
    return Embedder()


@asynccontextmanager
async def open_work_sessions(
    manager: SessionManager,
    config: WorkConfig | None = None,
    *,
    store: WorkStore | None = None,
    embedder: Embedder | None = None,
) -> AsyncIterator[WorkSessions]:
    """A :class:`WorkSessions` for ``manager``, ready for the block (tables created:
    WorkStoreError here if SQLite lacks FTS5). Without ``store``, it keeps its records
    in the tables of the manager's SqliteStore or the keys of its RedisStore, or else
    in memory for as long as it lives.

    Search by meaning follows ``config.semantic``: by default it is on where the
    ``semantic`` extra is installed, its model loaded on first use (in a worker thread),
    not here. ``embedder`` replaces the extra's model (its vectors are kept under its
    ``name``). Vectors missing from stored notes are made in the background during the
    block, which ends that work when it ends."""
    work = WorkSessions(manager, config, store)
    await work.store.prepare()
    if embedder is None:
        embedder = _embedder_for(work.config, work.store)
    elif not work.store.keeps_vectors or work.config.semantic == "off":
        embedder = None
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        if embedder is not None:
            work.semantic = Semantic(work.store, embedder, work.config, nursery)
        try:
            yield work
        except BaseException as exc:
            body_error = exc  # raised again below, outside the nursery, unwrapped
        finally:
            nursery.cancel_scope.cancel()  # ends the background embedding
    if body_error is not None:
        raise body_error
