"""triact.aio's SessionManager, Session and Subscription: the Trio API, as asyncio
awaitables, with the same results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.lowlevel

import triact
import triact.aio

from .conftest import RunAio


def add(key: str, by: int = 1) -> Callable[[triact.SessionState], triact.SessionState]:
    def apply(state: triact.SessionState) -> triact.SessionState:
        return attrs.evolve(state, data={**state.data, key: state.data.get(key, 0) + by})

    return apply


def test_create_update_and_read_from_asyncio(aio_run: RunAio[None], tmp_path: Path) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session(
                topic="t",
                working_directory=str(tmp_path),
                metadata={"k": "v"},
                project_id="p",
            )
            assert session.token is None
            state = await session.update(add("n"))
            assert (state.version, state.data["n"], state.topic) == (2, 1, "t")
            assert state.working_directory == str(tmp_path)
            assert state.metadata == {"k": "v"}
            assert state.project_id == "p"
            same = await manager.get_session(session.id)
            assert (await same.snapshot()).version == 2
            assert manager.session_count == 1
            assert manager.session_ids() == [session.id]
            assert manager.config.idle_ttl == triact.SessionConfig().idle_ttl
            assert repr(session) == f"<triact.aio.Session {session.id!r}>"

    aio_run(main)


def test_the_session_helpers_commit_like_their_trio_twins(
    aio_run: RunAio[None], tmp_path: Path
) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            await session.set_working_directory(tmp_path)
            await session.add_thread("critic", system_prompt="Find the flaws.")
            await session.add_thread_message("critic", "user", "hello")
            await session.record_analysis("p", {"critic": "r"}, response_time=0.5)
            request = await session.begin_request("c1", tool_name="review")
            await session.complete_request(request.id)
            failing = await session.begin_request("c1")
            state = await session.fail_request(failing.id, "boom")
            assert state.working_directory == str(tmp_path)
            assert [t.name for t in state.threads] == ["critic"]
            assert state.threads[0].messages[0].content == "hello"
            assert state.analyses[0].prompt == "p"
            assert [r.status for r in state.completed_requests] == ["completed", "failed"]
            stats = await session.stats()
            assert stats.completed_requests == 1
            assert stats.failed_requests == 1
            assert (await manager.stats()).sessions == 1
            final = await session.end()
            assert final.version == state.version
            assert manager.session_count == 0

    aio_run(main)


def test_bound_sessions_check_tokens(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session(bind_client=True, client_id="c")
            assert session.token is not None
            await session.validate_security(session.token, tool_name="t")
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security(None)

    aio_run(main)


def test_remove_and_temporary_sessions(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            assert await manager.remove_session(session.id) is True
            assert await manager.remove_session(session.id) is False
            with pytest.raises(triact.SessionNotFoundError):
                await session.snapshot()
            async with manager.session(topic="scratch") as tmp:
                assert (await tmp.snapshot()).topic == "scratch"
                assert manager.session_count == 1
            assert manager.session_count == 0

    aio_run(main)


def test_concurrent_tasks_lose_no_update(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            sessions = [await manager.create_session() for _ in range(5)]

            async def client(i: int) -> None:
                for j in range(10):
                    await sessions[(i + j) % 5].update(add("n"))

            await asyncio.gather(*(client(i) for i in range(40)))
            for session in sessions:
                state = await session.snapshot()
                assert state.data["n"] == 80
                assert state.version == 81

    aio_run(main)


def test_subscription_streams_events_to_asyncio(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            with manager.subscribe() as events:
                session = await manager.create_session()
                await session.update(add("n"))
                await session.end()
                kinds = []
                async for event in events:
                    assert event.session_id == session.id
                    kinds.append(event.kind)
                    if event.kind == "ended":
                        break
                assert kinds == ["created", "updated", "ended"]
                assert events.dropped == 0

    aio_run(main)


def test_subscription_iteration_ends_when_the_manager_closes(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            events = manager.subscribe()
            reader = asyncio.create_task(anext(events, None))
            await asyncio.sleep(0)
        assert await reader is None

    aio_run(main)


# -- asyncio code inside an update --------------------------------------------------------


def test_an_async_update_runs_asyncio_code_on_the_host_loop(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        host = asyncio.get_running_loop()
        queue: asyncio.Queue[int] = asyncio.Queue()  # asyncio-only, bound to this loop

        async def take() -> int:
            assert asyncio.get_running_loop() is host
            return await queue.get()

        async def put_taken(state: triact.SessionState) -> triact.SessionState:
            value = await triact.aio.run_asyncio(take)
            await trio.lowlevel.checkpoint()  # still a Trio coroutine
            return attrs.evolve(state, data={**state.data, "taken": value})

        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            call = asyncio.create_task(session.update(put_taken))
            await asyncio.sleep(0)
            await queue.put(42)
            assert (await call).data["taken"] == 42

    aio_run(main)


def test_cancelling_run_asyncio_cancels_the_asyncio_task(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        started = asyncio.Event()
        seen: list[str] = []

        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("asyncio task cancelled")
                raise

        async def wait_forever(state: triact.SessionState) -> triact.SessionState:
            await triact.aio.run_asyncio(forever)
            return state

        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            call = asyncio.create_task(session.update(wait_forever))
            await started.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert seen == ["asyncio task cancelled"]
            assert (await session.snapshot()).version == 1

    aio_run(main)


def test_open_asyncio_bridge_in_an_asyncio_host_yields_the_host_loop(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        host = asyncio.get_running_loop()
        loops: list[asyncio.AbstractEventLoop] = []

        async def note_loop(state: triact.SessionState) -> triact.SessionState:
            async with triact.aio.open_asyncio_bridge() as loop:
                loops.append(loop)
            return state

        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            await session.update(note_loop)
        assert loops == [host]

    aio_run(main)


def test_principals_from_asyncio(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session(bind_client=True, principal="alice")
            same = await manager.get_session(session.id)
            with pytest.raises(triact.SessionNotFoundError):
                await same.authorized(session.token, principal="bob").snapshot()
            with pytest.raises(triact.SessionNotFoundError):
                await same.validate_security(session.token, principal="bob")
            await same.validate_security(session.token, principal="alice")
            state = await same.authorized(session.token, principal="alice").snapshot()
            assert state.principal == "alice"
            assert session.token is not None
            listed = await manager.usable_sessions([session.token], principal="alice")
            assert [s.id for s in listed] == [session.id]
            assert await manager.usable_sessions([session.token], principal="bob") == []

    aio_run(main)
