"""The HTTP transport when the store fails under an MCP session's record: a request it
could not serve gets 503 with Retry-After (never a 500 or a traceback), a tool call that
ran is answered as it went, and the server serves again once the store is back."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio

import triact
from triact.transport import ERROR_META_KEY, HttpOptions, ServerOptions, _http

from ._http_server import ACCEPT, Served, http_server, initialize_body

#: What the store's error says: the client must see none of it.
SECRET = "redis://:hunter2@10.0.0.7/0"


class FailingRecords(triact.MemoryStore):
    """A memory store whose record operations named in ``failing`` fail as a store that
    lost its server does."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    def _check(self, operation: str) -> None:
        if operation in self.failing:
            raise triact.SessionStoreError(f"the store at {SECRET} could not {operation}")

    async def put_record(self, namespace: str, key: str, value: str, *, ttl: float) -> None:
        self._check("put")
        await super().put_record(namespace, key, value, ttl=ttl)

    async def swap_record(
        self, namespace: str, key: str, value: str, *, expected: str | None, ttl: float
    ) -> bool:
        self._check("put")
        return await super().swap_record(namespace, key, value, expected=expected, ttl=ttl)

    async def get_record(self, namespace: str, key: str) -> str | None:
        self._check("get")
        return await super().get_record(namespace, key)

    async def delete_record(self, namespace: str, key: str) -> bool:
        self._check("delete")
        return await super().delete_record(namespace, key)


@pytest.fixture
def store() -> FailingRecords:
    return FailingRecords()


@asynccontextmanager
async def served_on(
    store: FailingRecords,
) -> AsyncIterator[tuple[Served, triact.SessionManager]]:
    config = triact.SessionConfig(store=store)
    async with (
        triact.open_session_manager(config) as manager,
        http_server(manager, http=HttpOptions()) as served,
    ):
        yield served, manager


@asynccontextmanager
async def two_apps_on(store: FailingRecords) -> AsyncIterator[tuple[Served, Served]]:
    """Two apps (as two processes would be) on one manager: the sessions one makes,
    the other serves."""
    config = triact.SessionConfig(store=store)
    async with (
        triact.open_session_manager(config) as manager,
        http_server(manager, http=HttpOptions()) as first,
        http_server(manager, http=HttpOptions()) as second,
    ):
        yield first, second


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def unavailable(response: httpx.Response, request_id: int | None = None) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["id"] == request_id
    error = response.json()["error"]
    assert error["code"] == -32603
    assert "session store failed; retry later" in error["message"]
    assert "hunter2" not in response.text
    assert "10.0.0.7" not in response.text


async def initialize(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    started = await client.post(url, json=initialize_body(), headers=ACCEPT)
    assert started.status_code == 200, started.text
    return {
        **ACCEPT,
        "mcp-session-id": started.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }


def call(request_id: int, arguments: dict[str, object]) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "session_update", "arguments": arguments},
    }


async def test_initialize_whose_record_cannot_be_kept_gets_503_then_succeeds(
    store: FailingRecords, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with served_on(store) as (served, _manager):
        store.failing = {"put"}
        with caplog.at_level(logging.WARNING, logger="triact.transport"):
            body = initialize_body()
            unavailable(await client.post(served.url, json=body, headers=ACCEPT), body["id"])
        assert any("could not be saved" in r.getMessage() for r in caplog.records)
        assert not any(r.exc_info for r in caplog.records)  # no traceback
        store.failing = set()
        headers = await initialize(client, served.url)
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await client.post(served.url, json=note, headers=headers)).status_code == 202


async def test_a_record_that_cannot_be_read_gets_503_and_changes_nothing(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    async with served_on(store) as (first, _), served_on(store) as (second, _):
        headers = await initialize(client, first.url)
        store.failing = {"get"}  # the second process has not read the record yet
        refused = await client.post(second.url, json=call(2, {"set": {"a": 1}}), headers=headers)
        unavailable(refused, 2)
        store.failing = set()
        answered = await client.post(
            second.url, json=call(3, {"increment": {"n": 1}}), headers=headers
        )
        state = answered.json()["result"]["structuredContent"]
        assert state["data"] == {"n": 1}  # the refused call did not happen


async def test_a_first_call_whose_default_session_cannot_be_named_does_nothing(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    """The default session is named in the MCP session's record before any call uses
    it: if the store will not keep the record, the call is a store_error saying that
    nothing was done, and the session it made is ended again."""
    async with served_on(store) as (served, manager):
        headers = await initialize(client, served.url)
        store.failing = {"put"}  # the call would make the MCP session's default session
        refused = await client.post(
            served.url, json=call(2, {"increment": {"n": 1}}), headers=headers
        )
        assert refused.status_code == 200, refused.text
        result = refused.json()["result"]
        assert result["isError"]
        error = result["_meta"][ERROR_META_KEY]
        assert (error["code"], error["applied"]) == ("store_error", False)
        assert "hunter2" not in refused.text
        assert manager.session_ids() == []  # made, then ended again
        store.failing = set()
        answered = await client.post(
            served.url, json=call(3, {"increment": {"n": 1}}), headers=headers
        )
        assert answered.json()["result"]["structuredContent"]["data"] == {"n": 1}


async def test_a_delete_the_store_refuses_gets_503_and_leaves_the_session_open(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    async with served_on(store) as (served, _manager):
        headers = await initialize(client, served.url)
        store.failing = {"delete"}
        unavailable(await client.delete(served.url, headers=headers))
        store.failing = set()
        answered = await client.post(served.url, json=call(2, {"set": {"a": 1}}), headers=headers)
        assert answered.json()["result"]["structuredContent"]["data"] == {"a": 1}
        assert (await client.delete(served.url, headers=headers)).status_code == 200


async def increment(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], request_id: int
) -> tuple[str, object]:
    """The default session's id and data after a call at ``url`` increments its n."""
    answered = await client.post(
        url, json=call(request_id, {"increment": {"n": 1}}), headers=headers
    )
    state = answered.json()["result"]["structuredContent"]
    return state["session_id"], state["data"]


async def stored(store: triact.SessionStore, headers: dict[str, str]) -> dict[str, object] | None:
    """The MCP session's record as the store holds it."""
    text = await store.get_record(_http.MCP_SESSION_NAMESPACE, headers["mcp-session-id"])
    return None if text is None else json.loads(text)


def set_level(request_id: int, level: str) -> dict[str, object]:
    params = {"level": level}
    return {"jsonrpc": "2.0", "id": request_id, "method": "logging/setLevel", "params": params}


async def test_a_record_change_the_store_refused_is_saved_by_the_next_request(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    async with two_apps_on(store) as (first, _second):
        headers = await initialize(client, first.url)
        store.failing = {"put"}
        answered = await client.post(first.url, json=set_level(2, "error"), headers=headers)
        assert answered.status_code == 200, answered.text  # it was answered as it went
        store.failing = set()
        record = await stored(store, headers)
        assert record is not None
        assert record["log_level"] != "error"
        ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
        assert (await client.post(first.url, json=ping, headers=headers)).status_code == 200
        record = await stored(store, headers)
        assert record is not None
        assert record["log_level"] == "error"


async def test_a_save_keeps_what_another_process_changed_in_the_record(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    async with two_apps_on(store) as (first, second):
        headers = await initialize(client, first.url)
        assert (await increment(client, first.url, headers, 2))[1] == {"n": 1}
        answered = await client.post(second.url, json=set_level(3, "error"), headers=headers)
        assert answered.status_code == 200
        # The first process read the record less than a second ago: it does not read
        # it again, and its own change (initialized) is swapped in over the second's.
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await client.post(first.url, json=note, headers=headers)).status_code == 202
        record = await stored(store, headers)
        assert record is not None
        assert (record["initialized"], record["log_level"]) == (True, "error")
        assert record["default_session_id"] is not None


async def change_the_client_info(
    store: triact.SessionStore, headers: dict[str, str], changes: Iterator[int]
) -> None:
    """Another process's change of the MCP session's record (its client info, told
    apart by the next of ``changes``)."""
    record = await stored(store, headers)
    assert record is not None
    record["client_info"] = {"name": f"changed {next(changes)}", "version": "1"}
    key = headers["mcp-session-id"]
    await store.put_record(_http.MCP_SESSION_NAMESPACE, key, json.dumps(record), ttl=60.0)


class RacingRecords(FailingRecords):
    """Records whose swaps of MCP-session records wait until ``racers`` of them have
    come: as when processes make a default session for one MCP session at once."""

    def __init__(self, racers: int) -> None:
        super().__init__()
        self.racers = racers
        self.arrived = 0
        self.all_there = trio.Event()
        self.racing = False
        self.before_swap: Callable[[], Awaitable[None]] | None = None

    async def swap_record(
        self, namespace: str, key: str, value: str, *, expected: str | None, ttl: float
    ) -> bool:
        if self.before_swap is not None:
            await self.before_swap()
        if self.racing and expected is not None:
            self.arrived += 1
            if self.arrived == self.racers:
                self.all_there.set()
            with trio.fail_after(10):
                await self.all_there.wait()
        return await super().swap_record(namespace, key, value, expected=expected, ttl=ttl)


async def test_a_save_does_not_bring_back_an_mcp_session_ended_through_another_process(
    client: httpx.AsyncClient,
) -> None:
    store = RacingRecords(racers=1)
    async with served_on(store) as (served, _manager):
        headers = await initialize(client, served.url)

        async def end_it() -> None:  # as another process's DELETE, just before the save
            store.before_swap = None
            key = headers["mcp-session-id"]
            assert await store.delete_record(_http.MCP_SESSION_NAMESPACE, key)

        store.before_swap = end_it
        answered = await client.post(served.url, json=set_level(2, "error"), headers=headers)
        assert answered.status_code == 200
        assert await stored(store, headers) is None  # not put back
        ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
        assert (await client.post(served.url, json=ping, headers=headers)).status_code == 404


async def test_two_processes_making_a_default_session_at_once_agree_on_one(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "RECORD_FRESH", 0.0)
    store = RacingRecords(racers=2)
    async with two_apps_on(store) as (first, second):
        headers = await initialize(client, first.url)
        store.racing = True
        answers: list[tuple[str, object]] = []

        async def first_call(url: str, request_id: int) -> None:
            answers.append(await increment(client, url, headers, request_id))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_call, first.url, 2)
            nursery.start_soon(first_call, second.url, 3)
        (one, _), (other, _) = answers
        assert one == other  # one default session, named by whichever swapped first
        assert sorted(data["n"] for _, data in answers) == [1, 2]  # type: ignore[index]
        store.racing = False
        assert await increment(client, first.url, headers, 4) == (one, {"n": 3})
        assert await increment(client, second.url, headers, 5) == (one, {"n": 4})


async def test_a_default_session_whose_mcp_session_ended_meanwhile_is_not_named(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    store = RacingRecords(racers=1)
    async with served_on(store) as (first, manager), served_on(store) as (second, _):
        headers = await initialize(client, first.url)

        async def end_it() -> None:
            store.before_swap = None
            assert (await client.delete(second.url, headers=headers)).status_code == 200

        store.before_swap = end_it
        with caplog.at_level(logging.WARNING, logger="triact.transport"):
            refused = await client.post(
                first.url, json=call(2, {"increment": {"n": 1}}), headers=headers
            )
        # Nothing was done: answered as a request of an ended MCP session is.
        assert refused.status_code == 404, refused.text
        assert refused.json()["id"] == 2
        assert "send initialize" in refused.json()["error"]["message"]
        assert await stored(store, headers) is None
        assert manager.session_ids() == []  # the session it made was ended again
        gone = await client.post(first.url, json=call(3, {"increment": {"n": 1}}), headers=headers)
        assert gone.status_code == 404, gone.text


async def test_a_call_through_another_process_just_after_delete_gets_404(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    # The first app still holds the MCP session's record (read less than a second
    # ago) when the second ends it: the call finds its default session ended with it,
    # and must not be told that the store failed and to retry as it is (it was, as
    # store_error with applied false, once for each process that held the record).
    async with two_apps_on(store) as (first, second):
        headers = await initialize(client, first.url)
        made, _ = await increment(client, first.url, headers, 2)
        assert (await client.delete(second.url, headers=headers)).status_code == 200
        answered = await client.post(
            first.url, json=call(3, {"increment": {"n": 1}}), headers=headers
        )
        assert answered.status_code == 404, answered.text
        assert answered.json()["error"]["code"] == -32600
        assert answered.json()["id"] == 3
        assert await stored(store, headers) is None  # not made again
        gone = await client.post(first.url, json=call(4, {"increment": {"n": 1}}), headers=headers)
        assert gone.status_code == 404, gone.text
        # The client opens a new MCP session, with a default session of its own.
        again = await initialize(client, first.url)
        fresh, data = await increment(client, second.url, again, 5)
        assert fresh != made
        assert data == {"n": 1}


async def test_a_call_that_streamed_progress_then_found_its_mcp_session_ended_says_so(
    client: httpx.AsyncClient,
) -> None:
    # Its stream (200) already began: its answer is a not_found tool error that says
    # to open a new MCP session, never a store_error to retry as it is.
    store = RacingRecords(racers=1)
    config = triact.SessionConfig(store=store)
    options = ServerOptions(progress_interval=0.05)
    async with (
        triact.open_session_manager(config) as manager,
        http_server(manager, options=options, http=HttpOptions()) as first,
        http_server(manager, options=options, http=HttpOptions()) as second,
    ):
        headers = await initialize(client, first.url)
        streaming = trio.Event()  # a progress report has reached the client

        async def end_it() -> None:
            store.before_swap = None
            await streaming.wait()
            assert (await client.delete(second.url, headers=headers)).status_code == 200

        store.before_swap = end_it
        body = call(2, {"increment": {"n": 1}})
        body["params"]["_meta"] = {"progressToken": "p"}  # type: ignore[index]
        lines: list[str] = []
        async with client.stream("POST", first.url, json=body, headers=headers) as answered:
            assert answered.status_code == 200
            assert answered.headers["content-type"].startswith("text/event-stream")
            async for line in answered.aiter_lines():
                lines.append(line)
                if line.startswith("data: "):
                    streaming.set()
        messages = [
            json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")
        ]
        assert messages[0]["method"] == "notifications/progress"
        result = messages[-1]["result"]
        error = result["_meta"][ERROR_META_KEY]
        assert error["code"] == "not_found", error
        assert "Send initialize" in error["message"]
        assert manager.session_ids() == []
        gone = await client.post(first.url, json=call(3, {"increment": {"n": 1}}), headers=headers)
        assert gone.status_code == 404, gone.text


async def test_a_record_that_keeps_changing_gives_up_and_says_so(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    store = RacingRecords(racers=1)
    async with two_apps_on(store) as (first, _second):
        headers = await initialize(client, first.url)
        changes = iter(range(10**6))
        store.before_swap = partial(change_the_client_info, store, headers, changes)
        with caplog.at_level(logging.WARNING, logger="triact.transport"):
            refused = await client.post(
                first.url, json=call(2, {"increment": {"n": 1}}), headers=headers
            )
        error = refused.json()["result"]["_meta"][ERROR_META_KEY]
        assert (error["code"], error["applied"]) == ("store_error", False)
        assert any("changed 8 times" in r.getMessage() for r in caplog.records)
        assert next(changes) == 8


async def test_a_default_session_replaces_only_the_one_its_peer_found_gone(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    """A process names its new default session in the record only over none, or over
    the one it found gone: one that another process named meanwhile is used, whether
    this process forgot the record (a cache) or read it while it made its own."""
    async with served_on(store) as (served, manager):
        headers = await initialize(client, served.url)
        made, _ = await increment(client, served.url, headers, 2)
        app, mcp_session = served.app, headers["mcp-session-id"]
        app._peers.clear()
        peer = app._peer(mcp_session, None)
        assert await app._claim_default(mcp_session, peer, "a-new-one") == made
        record = await stored(store, headers)
        assert record is not None
        assert record["default_session_id"] == made
        # Knowing the record (read while it made its own) changes nothing: the one
        # named stays, unless this peer found it gone.
        assert await app._claim_default(mcp_session, peer, "a-new-one") == made
        peer.session_gone(made)
        assert await app._claim_default(mcp_session, peer, "a-new-one") is None
        record = await stored(store, headers)
        assert record is not None
        assert record["default_session_id"] == "a-new-one"
        assert made in manager.session_ids()


async def test_a_save_that_loses_twice_keeps_its_own_change_and_the_others(
    client: httpx.AsyncClient,
) -> None:
    store = RacingRecords(racers=1)
    async with served_on(store) as (served, _manager):
        headers = await initialize(client, served.url)
        others = iter(
            [  # another process's changes before each of the first two swaps
                {"log_level": "error", "client_info": {"name": "other", "version": "1"}},
                {"log_level": "warning", "client_info": {"name": "other", "version": "2"}},
            ]
        )

        async def change_it() -> None:
            change = next(others, None)
            if change is None:
                return
            record = await stored(store, headers)
            assert record is not None
            key = headers["mcp-session-id"]
            text = json.dumps({**record, **change})
            await store.put_record(_http.MCP_SESSION_NAMESPACE, key, text, ttl=60.0)

        store.before_swap = change_it
        answered = await client.post(served.url, json=set_level(2, "error"), headers=headers)
        assert answered.status_code == 200
        record = await stored(store, headers)
        assert record is not None
        assert record["log_level"] == "error"  # this request's, the last to commit
        assert record["client_info"] == {"name": "other", "version": "2"}


async def test_a_default_session_that_ended_is_replaced_for_every_process(
    store: FailingRecords, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "RECORD_FRESH", 0.0)  # every request reads the record
    async with two_apps_on(store) as (first, second):
        headers = await initialize(client, first.url)
        made, _ = await increment(client, first.url, headers, 2)
        end = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "session_end", "arguments": {"session_id": made}},
        }
        ended = await client.post(first.url, json=end, headers=headers)
        assert not ended.json()["result"].get("isError"), ended.text
        again, data = await increment(client, second.url, headers, 4)
        assert again != made
        assert data == {"n": 1}  # a new one
        assert await increment(client, first.url, headers, 5) == (again, {"n": 2})
        record = await stored(store, headers)
        assert record is not None
        assert record["default_session_id"] == again


async def test_an_unused_default_session_that_cannot_be_ended_is_left_to_its_ttl(
    store: FailingRecords,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def cannot_end(self: triact.Session) -> object:
        raise triact.SessionStoreError("the store is away")

    async with served_on(store) as (served, manager):
        headers = await initialize(client, served.url)
        store.failing = {"put"}
        monkeypatch.setattr(triact.Session, "end", cannot_end)
        with caplog.at_level(logging.INFO, logger="triact.transport"):
            refused = await client.post(
                served.url, json=call(2, {"increment": {"n": 1}}), headers=headers
            )
        error = refused.json()["result"]["_meta"][ERROR_META_KEY]
        assert (error["code"], error["applied"]) == ("store_error", False)  # the claim's
        assert any("left to its idle TTL" in r.getMessage() for r in caplog.records)
        (unused,) = manager.session_ids()  # left, named nowhere
        monkeypatch.undo()
        store.failing = set()
        made, data = await increment(client, served.url, headers, 3)
        assert data == {"n": 1}
        assert made != unused  # the record never named it
        assert sorted(manager.session_ids()) == sorted([unused, made])


async def test_a_save_of_a_record_that_keeps_changing_gives_up_and_says_so(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    store = RacingRecords(racers=1)
    async with served_on(store) as (served, _manager):
        headers = await initialize(client, served.url)
        changes = iter(range(10**6))
        store.before_swap = partial(change_the_client_info, store, headers, changes)
        with caplog.at_level(logging.WARNING, logger="triact.transport"):
            answered = await client.post(served.url, json=set_level(2, "error"), headers=headers)
        assert answered.status_code == 200  # answered as it went
        assert any(
            "changed 8 times while this process saved it" in r.getMessage() for r in caplog.records
        )
        store.before_swap = None
        record = await stored(store, headers)
        assert record is not None
        assert record["log_level"] != "error"  # not saved: the next request saves it
