"""The HTTP transport when the store fails under an MCP session's record: a request it
could not serve gets 503 with Retry-After (never a 500 or a traceback), a tool call that
ran is answered as it went, and the server serves again once the store is back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

import triact
from triact.transport import HttpOptions, _http

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


async def test_a_call_that_ran_is_answered_though_its_record_was_not_saved(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    async with served_on(store) as (served, manager):
        headers = await initialize(client, served.url)
        store.failing = {"put"}  # the call makes the MCP session's default session
        answered = await client.post(
            served.url, json=call(2, {"increment": {"n": 1}}), headers=headers
        )
        assert answered.status_code == 200, answered.text
        state = answered.json()["result"]["structuredContent"]
        assert state["data"] == {"n": 1}
        session = await manager.get_session(state["session_id"])
        assert (await session.snapshot()).data == {"n": 1}  # it happened, as answered


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


async def default_made_unsaved(
    store: FailingRecords, client: httpx.AsyncClient, url: str
) -> tuple[dict[str, str], str]:
    """An MCP session opened at ``url`` whose first call made its default session while
    the store refused to keep the record; its headers and that session's id."""
    headers = await initialize(client, url)
    store.failing = {"put"}
    answered = await client.post(url, json=call(2, {"increment": {"n": 1}}), headers=headers)
    store.failing = set()
    return headers, answered.json()["result"]["structuredContent"]["session_id"]


async def increment(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], request_id: int
) -> tuple[str, object]:
    """The default session's id and data after a call at ``url`` increments its n."""
    answered = await client.post(
        url, json=call(request_id, {"increment": {"n": 1}}), headers=headers
    )
    state = answered.json()["result"]["structuredContent"]
    return state["session_id"], state["data"]


async def test_a_record_change_the_store_refused_is_saved_by_the_next_request(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    async with two_apps_on(store) as (first, second):
        headers, made = await default_made_unsaved(store, client, first.url)
        assert await increment(client, first.url, headers, 3) == (made, {"n": 2})  # not a new one
        # The record was saved along: another process serves the same default session.
        assert await increment(client, second.url, headers, 4) == (made, {"n": 3})


async def test_a_ping_saves_a_record_change_the_store_refused(
    store: FailingRecords, client: httpx.AsyncClient
) -> None:
    async with two_apps_on(store) as (first, second):
        headers, made = await default_made_unsaved(store, client, first.url)
        ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
        assert (await client.post(first.url, json=ping, headers=headers)).status_code == 200
        assert await increment(client, second.url, headers, 4) == (made, {"n": 2})


async def test_an_unsaved_default_session_survives_a_record_changed_elsewhere(
    store: FailingRecords, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "RECORD_FRESH", 0.0)  # every request reads the record
    async with two_apps_on(store) as (first, second):
        headers, made = await default_made_unsaved(store, client, first.url)
        level = {"level": "error"}
        set_level = {"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel", "params": level}
        assert (await client.post(second.url, json=set_level, headers=headers)).status_code == 200
        # The record changed, and names no default session: the one made here stays.
        assert await increment(client, first.url, headers, 4) == (made, {"n": 2})
        assert await increment(client, second.url, headers, 5) == (made, {"n": 3})
