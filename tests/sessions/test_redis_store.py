"""What is RedisStore's own (the shared behaviour runs in test_sqlite_shared.py and
test_shared_managers.py for both stores): its URL, its errors, persistence across a
Redis crash, the key expiry backstop, the events it publishes, and functions that
went missing from the server."""

from __future__ import annotations

import contextlib
import os
import signal
from itertools import count
from typing import Any

import attrs
import pytest
import trio

import triact
from triact.sessions._redis import KEY_GRACE, RedisStore
from triact.sessions._redis_lua import LIBRARY
from triact.sessions._redis_url import RedisUrlError, parse_redis_url
from triact.sessions._state import SessionState

from .._redis import RedisGate, RedisPlace, RedisServer, free_port

NOW = 10_000.0


def make_state(session_id: str = "s1", version: int = 1, **data: Any) -> SessionState:
    return SessionState(
        id=session_id, version=version, created_at=NOW, last_used=NOW, data=dict(data)
    )


async def create(store: RedisStore, state: SessionState, **knobs: Any) -> None:
    settings: dict[str, Any] = {
        "client_id": None,
        "expires_at": NOW + 60,
        "now": NOW,
        "node": "a",
        "lease": 5.0,
        "max_sessions": 100,
        "max_per_client": None,
    }
    await store.create(state, **{**settings, **knobs})


def increment(state: triact.SessionState) -> triact.SessionState:
    return attrs.evolve(state, data={**state.data, "n": state.data.get("n", 0) + 1})


# -- the URL ----------------------------------------------------------------------


def test_a_url_gives_host_port_db_tls_prefix_and_password() -> None:
    address = parse_redis_url("rediss://user:p%40ss@cache.example:6380/3?prefix=app:&timeout=2")
    assert (address.host, address.port, address.db, address.tls) == ("cache.example", 6380, 3, True)
    assert (address.prefix, address.timeout) == ("app:", 2.0)
    assert (address.username, address.password) == ("user", "p@ss")
    assert "p@ss" not in repr(address)
    assert address.shown == "rediss://user:***@cache.example:6380/3"
    plain = parse_redis_url("redis://localhost", environ={})
    assert (plain.port, plain.db, plain.prefix, plain.password) == (6379, 0, "triact:", None)


def test_the_password_comes_from_the_environment_when_the_url_has_none() -> None:
    environ = {"TRIACT_REDIS_PASSWORD": "from-env"}
    assert parse_redis_url("redis://h:1/0", environ=environ).password == "from-env"
    assert parse_redis_url("redis://:in-url@h:1/0", environ=environ).password == "in-url"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://:secret@h/0", "starts with redis:// or rediss://"),
        ("redis://:secret@h:99999/0", "the port must be a number from 0 to 65535"),
        ("redis://h/0?password=secret", "the password goes before the host"),
        ("redis://h/0?timeout=1&password=secret", "the password goes before the host"),
        ("redis://h/0?passwd=secret", "unknown option 'passwd'"),
        ("redis://h/0?prefix=a&prefix=secret", "'prefix' is given 2 times"),
        ("redis://h/0#secret", "no #fragment"),
        ("redis://:pw/secret@h/0", "must be percent-encoded"),
        ("redis://:pw?secret@h/0", "must be percent-encoded"),
        ("redis://user:4/secret@h/0", "must be percent-encoded"),
        ("redis://user:4?secret@h/0", "must be percent-encoded"),
        ("redis://user:4#secret@h/0", "must be percent-encoded"),
        ("redis://:secret@h:1/x", "the path is the database number"),
        ("redis://:secret@/0", "no host"),
        ("redis://:secret@h/0?prefx=a", "unknown option 'prefx'"),
        ("redis://:secret@h/0?timeout=0", "timeout is the seconds"),
        ("redis://:secret@h/0?prefix=", "key prefix must be 1 to 100 printable"),
        ("redis://:secret@h/0?prefix=a&prefix=b", "'prefix' is given 2 times"),
    ],
)
def test_a_bad_url_is_refused_saying_why_and_never_showing_the_password(
    url: str, error: str
) -> None:
    with pytest.raises(RedisUrlError, match=error) as info:
        RedisStore(url)
    assert "secret" not in str(info.value)


# -- errors -----------------------------------------------------------------------


async def test_an_unreachable_redis_is_a_store_error_without_the_password() -> None:
    store = RedisStore(f"redis://:secret@127.0.0.1:{free_port()}/0?timeout=0.5")
    with pytest.raises(triact.SessionStoreError, match="could not connect") as info:
        async with store.open():
            pass
    assert "secret" not in str(info.value)
    assert "127.0.0.1" in str(info.value)


async def test_the_trio_loop_runs_while_the_store_connects(redis_place: RedisPlace) -> None:
    # The proxy runs in this Trio run and holds each connection's first request until
    # a task of this run releases it: a connect that blocked the Trio thread would
    # wait for it in vain, and fail when its timeout ran out.
    address = parse_redis_url(redis_place.url)
    gate = RedisGate(address.host, address.port)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(gate.serve)
        gate.hold(b"")

        async def release_when_held() -> None:
            await gate.held.wait()
            gate.release()

        nursery.start_soon(release_when_held)
        store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix=redis_place.prefix)
        async with store.open():
            assert gate.held.is_set()
            await create(store, make_state())
            assert await store.count() == 1
        nursery.cancel_scope.cancel()


async def test_a_wrong_password_is_refused_and_the_right_one_comes_from_the_environment(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RedisPlace(private_redis.url, "p:").client() as client:
        client.config_set("requirepass", "right-one")
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    with pytest.raises(triact.SessionStoreError, match="could not connect") as info:
        async with RedisStore(url.replace("//", "//:wrong-one@")).open():
            pass
    assert "wrong-one" not in str(info.value)
    monkeypatch.setenv("TRIACT_REDIS_PASSWORD", "right-one")
    store = RedisStore(url)
    async with store.open():
        assert await store.check() is None
        assert await store.count() == 0


async def test_calls_outside_the_open_block_are_refused(redis_place: RedisPlace) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix)
    with pytest.raises(triact.SessionStoreError, match="is not open"):
        await store.load("s1")
    with pytest.raises(triact.SessionStoreError, match="is not open"):
        store.touch("s1", expires_at=NOW)


async def test_functions_flushed_from_the_server_are_loaded_again(redis_place: RedisPlace) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    async with store.open():
        await create(store, make_state())
        with redis_place.client() as client:
            client.function_delete(LIBRARY)
        await store.write(make_state(version=2), previous_version=1, epoch=1)
        assert await store.version("s1") == 2


_OTHER = """#!lua name=triact_test_other
redis.register_function('triact_test_other_echo', function(keys, args) return args[1] end)
"""


async def test_run_lends_the_connection_and_loads_a_lost_library_again(
    redis_place: RedisPlace,
) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)

    async def echo(client: Any) -> Any:
        return await client.fcall("triact_test_other_echo", keys=[], arguments=["hi"])

    with pytest.raises(triact.SessionStoreError, match="is not open"):
        await store.run("echo", echo, library=_OTHER)
    async with store.open():
        # Not loaded yet: run loads it, once Redis says the function is missing.
        assert await store.run("echo", echo, library=_OTHER) == b"hi"
        with redis_place.client() as client:
            client.function_delete("triact_test_other")
        assert await store.run("echo", echo, library=_OTHER) == b"hi"
        # Without the library, a missing function stays an error, saying what failed.
        with redis_place.client() as client:
            client.function_delete("triact_test_other")
        with pytest.raises(triact.SessionStoreError, match=r"could not echo: .*[Ff]unction"):
            await store.run("echo", echo)


# -- pipelines ---------------------------------------------------------------------


async def write_all(
    store: RedisStore, writes: list[tuple[SessionState, int, int | None]]
) -> list[BaseException | None]:
    """Make ``writes`` (state, previous version, epoch) at once; each one's error."""
    outcomes: list[BaseException | None] = [None] * len(writes)

    async def one(index: int, state: SessionState, previous: int, epoch: int | None) -> None:
        try:
            await store.write(state, previous_version=previous, epoch=epoch)
        except triact.SessionError as exc:
            outcomes[index] = exc

    async with trio.open_nursery() as nursery:
        for index, (state, previous, epoch) in enumerate(writes):
            nursery.start_soon(one, index, state, previous, epoch)
    return outcomes


async def test_writes_of_many_sessions_share_pipelines_and_keep_their_own_outcomes(
    redis_place: RedisPlace,
) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    async with store.open():
        for n in range(12):
            await create(store, make_state(f"s{n}"))
        with redis_place.client() as client:  # a key Redis cannot read as a hash
            client.set(f"{redis_place.prefix}{{s11}}", "not a hash")
        writes: list[tuple[SessionState, int, int | None]] = [
            (make_state(f"s{n}", version=2, n=n), 1, 1) for n in range(12)
        ]
        writes[3] = (make_state("s3", version=3), 2, 1)  # a stale version
        writes[4] = (make_state("s4", version=2), 1, 7)  # a stale epoch
        calls = store.calls
        outcomes = await write_all(store, writes)
        # The first goes alone; the eleven made meanwhile share one pipeline.
        assert store.calls - calls == 2
        assert isinstance(outcomes[3], triact.SessionConcurrencyError)
        assert isinstance(outcomes[4], triact.SessionFencedError)
        assert isinstance(outcomes[11], triact.SessionStoreError)
        assert "could not store a session" in str(outcomes[11])
        # The function failed once running: what it did before is not the store's to say.
        assert outcomes[11].applied is None
        assert [n for n, outcome in enumerate(outcomes) if outcome is None] == [
            0,
            1,
            2,
            5,
            6,
            7,
            8,
            9,
            10,
        ]
        for n in (0, 1, 2, 5, 6, 7, 8, 9, 10):
            state = await store.load(f"s{n}")
            assert state is not None
            assert (state.version, state.data) == (2, {"n": n})
        assert await store.version("s3") == 1
        assert await store.version("s4") == 1


async def test_a_pipeline_finds_its_functions_loaded_again(redis_place: RedisPlace) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    async with store.open():
        for n in range(4):
            await create(store, make_state(f"s{n}"))
        with redis_place.client() as client:
            client.function_delete(LIBRARY)
        writes: list[tuple[SessionState, int, int | None]] = [
            (make_state(f"s{n}", version=2), 1, 1) for n in range(4)
        ]
        assert await write_all(store, writes) == [None] * 4
        assert [await store.version(f"s{n}") for n in range(4)] == [2] * 4


async def test_a_pipeline_redis_does_not_answer_fails_each_of_its_writes(
    private_redis: RedisServer,
) -> None:
    store = RedisStore(private_redis.url + "?timeout=0.5", clock=lambda: NOW)
    async with store.open():
        for n in range(4):
            await create(store, make_state(f"s{n}"))
        assert private_redis.process is not None
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            calls = store.calls
            writes: list[tuple[SessionState, int, int | None]] = [
                (make_state(f"s{n}", version=2), 1, 1) for n in range(4)
            ]
            outcomes = await write_all(store, writes)
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        assert store.calls - calls == 2
        assert all(isinstance(outcome, triact.SessionStoreError) for outcome in outcomes)
        assert len({id(outcome) for outcome in outcomes}) == 4  # each its own
        # Sent, and no answer: maybe applied.
        assert [getattr(outcome, "applied", "?") for outcome in outcomes] == [None] * 4
        # Whether they were applied is unknown; the store works on.
        assert await version_once_answered(store, "s0") in (1, 2)


async def version_once_answered(store: RedisStore, session_id: str) -> int | None:
    """The session's version, asked again until the store answers (Redis, paused,
    runs again: an external process, polled, no clock to jump)."""
    with trio.fail_after(10):
        while True:
            try:
                return await store.version(session_id)
            except triact.SessionStoreError:
                await trio.sleep(0.1)


async def test_a_write_redis_does_not_answer_may_be_applied_a_read_was_not(
    private_redis: RedisServer,
) -> None:
    store = RedisStore(private_redis.url + "?timeout=0.5", clock=lambda: NOW)
    async with store.open():
        await create(store, make_state())
        assert private_redis.process is not None
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(triact.SessionStoreError, match="could not store") as wrote:
                await store.write(make_state(version=2), previous_version=1)
            with pytest.raises(triact.SessionStoreError, match="could not load") as loaded:
                await store.load("s1")
            with pytest.raises(triact.SessionStoreError, match="could not read") as read:
                await store.version("s1")
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        assert wrote.value.applied is None  # sent, its answer lost: maybe saved
        assert loaded.value.applied is False  # a read: nothing to apply
        assert read.value.applied is False
        # The store answers again once Redis runs (saved or not).
        assert await version_once_answered(store, "s1") in (1, 2)


async def test_a_change_redis_refuses_before_running_it_was_not_applied(
    private_redis: RedisServer,
) -> None:
    store = RedisStore(private_redis.url + "?timeout=2", clock=lambda: NOW)
    async with store.open():
        for n in range(3):
            await create(store, make_state(f"s{n}"))
        with RedisPlace(private_redis.url, "").client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "1")  # full: every write refused (OOM)
        try:
            with pytest.raises(triact.SessionStoreError, match="OOM") as refused:
                await store.write(make_state(version=2), previous_version=1)
            writes: list[tuple[SessionState, int, int | None]] = [
                (make_state(f"s{n}", version=2), 1, None) for n in range(3)
            ]
            outcomes = await write_all(store, writes)  # the last two as one pipeline
        finally:
            with RedisPlace(private_redis.url, "").client() as client:
                client.config_set("maxmemory", "0")
        assert refused.value.applied is False
        assert [getattr(outcome, "applied", "?") for outcome in outcomes] == [False] * 3
        assert [await store.version(f"s{n}") for n in range(3)] == [1, 1, 1]


async def test_calls_of_a_store_that_is_not_open_were_not_applied() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(triact.SessionStoreError, match="not open") as info:
        await store.write(make_state(version=2), previous_version=1)
    assert info.value.applied is False


async def test_a_session_key_of_another_type_is_a_data_error_and_others_are_served(
    redis_place: RedisPlace,
) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    async with store.open():
        for sid in ("a", "b"):
            await create(store, make_state(sid))
        with redis_place.client() as client:
            client.set(f"{redis_place.prefix}{{a}}", "not a hash")
        with pytest.raises(triact.SessionDataError, match="another type") as info:
            await store.load("a")
        assert info.value.applied is False  # a read
        with pytest.raises(triact.SessionDataError, match="another type"):
            await store.write(make_state("a", version=2), previous_version=1)
        await store.write(make_state("b", version=2), previous_version=1)
        assert await store.load("b") == make_state("b", version=2)


async def test_a_hash_whose_numbers_are_not_numbers_is_a_data_error(
    redis_place: RedisPlace,
) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    async with store.open():
        for sid in ("a", "b", "c"):
            await create(store, make_state(sid))
        with redis_place.client() as client:
            client.hset(f"{redis_place.prefix}{{a}}", "v", "abc")
            client.hset(f"{redis_place.prefix}{{b}}", "u", "yesterday")
        with pytest.raises(triact.SessionDataError, match=r"'a' in .* not a number") as info:
            await store.version("a")
        assert info.value.applied is False
        # Listed without a token HMAC: the manager loads them to know, and leaves out
        # those that do not load (where the listing failed with a ValueError).
        entries = await store.page(None, 10)
        assert [(e.id, e.token_hmac) for e in entries] == [("a", None), ("b", None), ("c", "")]
        with redis_place.client() as client:
            client.hset(f"{redis_place.prefix}{{c}}", "c", "x")
        with pytest.raises(triact.SessionDataError, match=r"'c' .* creation time") as info:
            await store.page(None, 10)
        assert info.value.applied is False


# -- keys, expiry and events --------------------------------------------------------


async def test_keys_expire_in_redis_a_grace_after_the_deadline(redis_place: RedisPlace) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    async with store.open():
        await create(store, make_state(), expires_at=NOW + 100)
        with redis_place.client() as client:
            key = f"{redis_place.prefix}{{s1}}"
            assert client.pttl(key) == pytest.approx((100 + KEY_GRACE) * 1000, abs=2000)
            await store.write(make_state(version=2), previous_version=1, expires_at=NOW + 500)
            assert client.pttl(key) == pytest.approx((500 + KEY_GRACE) * 1000, abs=2000)
            store.touch("s1", expires_at=NOW + 200)  # never earlier
            await store.version("s1")
            assert client.pttl(key) == pytest.approx((500 + KEY_GRACE) * 1000, abs=2000)
            client.delete(key)  # as Redis does once that time comes
            assert await store.count() == 1  # listed until swept
            assert await store.expire_due(NOW + 1000, idle_before=0, limit=10) == []
            assert await store.count() == 0


async def test_every_change_is_published_in_commit_order(redis_place: RedisPlace) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    with redis_place.client() as client, client.pubsub() as pubsub:
        pubsub.subscribe(f"{redis_place.prefix}events")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        async with store.open():
            await create(store, make_state())
            for version in range(2, 5):
                await store.write(make_state(version=version), previous_version=version - 1)
            assert await store.remove("s1", version=4)
        messages = [pubsub.get_message(timeout=5) for _ in range(5)]
    assert [m["data"] for m in messages if m] == [
        b"created s1 1",
        b"updated s1 2",
        b"updated s1 3",
        b"updated s1 4",
        b"removed s1 4",
    ]


async def test_a_pipeline_of_commits_reaches_a_follower_whole_and_in_order(
    redis_place: RedisPlace,
) -> None:
    writer = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    follower = RedisStore(redis_place.url, prefix=redis_place.prefix, clock=lambda: NOW)
    heard: list[tuple[str, str, int]] = []
    all_heard = trio.Event()

    def deliver(kind: str, session_id: str, version: int) -> None:
        heard.append((kind, session_id, version))
        if len(heard) == 24:
            all_heard.set()

    async with writer.open(), follower.open(), trio.open_nursery() as nursery:
        nursery.start_soon(follower.follow, deliver)
        for n in range(8):
            await create(writer, make_state(f"s{n}"))
        for version in (2, 3):  # eight commits at once, twice: pipelines
            writes: list[tuple[SessionState, int, int | None]] = [
                (make_state(f"s{n}", version=version), version - 1, 1) for n in range(8)
            ]
            assert await write_all(writer, writes) == [None] * 8
        with trio.fail_after(10):
            await all_heard.wait()
        nursery.cancel_scope.cancel()
    assert sorted(heard[:8]) == [("created", f"s{n}", 1) for n in range(8)]
    assert sorted(heard[8:16]) == [("updated", f"s{n}", 2) for n in range(8)]
    assert sorted(heard[16:]) == [("updated", f"s{n}", 3) for n in range(8)]


async def next_event(subscription: triact.Subscription) -> tuple[str, str, int]:
    with trio.fail_after(10):
        event = await subscription.__anext__()
    return event.kind, event.session_id, event.version


async def test_every_manager_hears_of_the_others_changes_once_in_commit_order(
    redis_place: RedisPlace,
) -> None:
    configs = [
        triact.SessionConfig(store=RedisStore(redis_place.url, prefix=redis_place.prefix))
        for _ in range(2)
    ]
    async with (
        triact.open_session_manager(configs[0]) as a,
        triact.open_session_manager(configs[1]) as b,
    ):
        heard_a, heard_b = a.subscribe(), b.subscribe()
        session = await a.create_session()
        sid = session.id
        assert await next_event(heard_a) == ("created", sid, 1)  # its own
        assert await next_event(heard_b) == ("created", sid, 1)  # a's, through Redis
        for _ in range(3):
            await (await b.get_session(sid)).update(increment)
        for version in (2, 3, 4):
            assert await next_event(heard_b) == ("updated", sid, version)
            assert await next_event(heard_a) == ("updated", sid, version)
        await session.end()
        assert await next_event(heard_a) == ("ended", sid, 4)
        assert await next_event(heard_b) == ("removed", sid, 4)  # ended elsewhere
        other = await b.create_session()
        # The next a hears is b's creation: no echo of its own changes came between.
        assert await next_event(heard_a) == ("created", other.id, 1)
        assert await next_event(heard_b) == ("created", other.id, 1)


async def test_a_broadcast_reaches_every_listener_of_its_channel_and_no_other(
    redis_place: RedisPlace,
) -> None:
    stores = [RedisStore(redis_place.url, prefix=redis_place.prefix) for _ in range(2)]
    other = RedisStore(redis_place.url, prefix="another:" + redis_place.prefix)
    heard: list[list[str]] = [[], [], [], []]
    async with stores[0].open(), stores[1].open(), other.open(), trio.open_nursery() as nursery:
        await nursery.start(stores[0].listen, "cancel", heard[0].append)
        await nursery.start(stores[1].listen, "cancel", heard[1].append)
        await nursery.start(stores[1].listen, "other", heard[2].append)
        await nursery.start(other.listen, "cancel", heard[3].append)  # another prefix
        assert await stores[1].broadcast("cancel", "m1")
        assert await stores[0].broadcast("cancel", '{"m": 2}')
        with trio.fail_after(10):
            while len(heard[0]) < 2 or len(heard[1]) < 2:  # noqa: ASYNC110 (glide's thread)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert heard == [["m1", '{"m": 2}'], ["m1", '{"m": 2}'], [], []]


async def test_a_listener_hears_broadcasts_again_once_a_restarted_redis_is_back(
    private_redis: RedisServer,
) -> None:
    store = RedisStore(private_redis.url + "?timeout=0.5")
    heard: list[str] = []
    async with store.open(), trio.open_nursery() as nursery:
        await nursery.start(store.listen, "cancel", heard.append)
        await trio.to_thread.run_sync(private_redis.kill)
        await trio.to_thread.run_sync(private_redis.start)
        # What is published before glide has subscribed again is lost (Redis keeps
        # nothing for a subscriber that is away): sent again until one is heard.
        with trio.fail_after(10):
            for n in count():
                with contextlib.suppress(triact.SessionStoreError):
                    await store.broadcast("cancel", f"m{n}")
                await trio.sleep(0.1)
                if heard:
                    break
        nursery.cancel_scope.cancel()
    assert heard[0].startswith("m")


@pytest.mark.parametrize("channel", ["events", "Cancel", "", "a:b", "x" * 33, 3])
async def test_a_broadcast_channel_is_a_lowercase_word_other_than_events(
    redis_place: RedisPlace, channel: Any
) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix)
    async with store.open():
        with pytest.raises(ValueError, match="channel"):
            await store.broadcast(channel, "m")
        with pytest.raises(ValueError, match="channel"):
            await store.listen(channel, print)


async def test_a_store_that_is_not_shared_broadcasts_to_nobody() -> None:
    store = triact.MemoryStore()
    assert not store.broadcasts
    async with store.open(), trio.open_nursery() as nursery:
        await nursery.start(store.listen, "cancel", print)
        assert not await store.broadcast("cancel", "m")
        nursery.cancel_scope.cancel()


async def test_listening_outside_the_open_block_is_refused(redis_place: RedisPlace) -> None:
    store = RedisStore(redis_place.url, prefix=redis_place.prefix)
    with pytest.raises(triact.SessionStoreError, match="is not open"):
        await store.listen("cancel", print)
    with pytest.raises(triact.SessionStoreError, match="is not open"):
        await store.broadcast("cancel", "m")


# -- persistence ------------------------------------------------------------------


async def test_a_redis_crash_with_aof_always_keeps_every_acknowledged_update(
    private_redis: RedisServer,
) -> None:
    """Two managers increment one session until Redis is SIGKILLed; restarted from
    its append-only file, Redis holds every increment either of them acknowledged."""
    configs = [
        triact.SessionConfig(store=RedisStore(private_redis.url + "?timeout=1"), lease=1.0)
        for _ in range(2)
    ]
    acknowledged = attempted = 0
    async with (
        triact.open_session_manager(configs[0]) as a,
        triact.open_session_manager(configs[1]) as b,
    ):
        session = await a.create_session()
        handles = [session, await b.get_session(session.id)]
        killed, enough = trio.Event(), trio.Event()

        async def bump(handle: triact.Session) -> None:
            nonlocal acknowledged, attempted
            while not killed.is_set():
                attempted += 1
                try:
                    await handle.update(increment)
                except triact.SessionContendedError:
                    continue  # outrun by the other manager at each replay: nothing saved
                except triact.SessionStoreError:
                    return  # Redis is gone: what this call did is unknown
                acknowledged += 1
                if acknowledged >= 200:
                    enough.set()

        async with trio.open_nursery() as nursery:
            for handle in handles * 2:
                nursery.start_soon(bump, handle)
            await enough.wait()
            private_redis.kill()
            killed.set()
        private_redis.start()  # same port, same directory: it replays its AOF
        with trio.fail_after(20):  # the client reconnects by itself
            while True:
                try:
                    state = await (await b.get_session(session.id)).snapshot()
                    break
                except triact.SessionStoreError:
                    await trio.sleep(0.1)
    assert acknowledged <= state.data["n"] <= attempted
    assert state.version == 1 + state.data["n"]


def test_the_private_redis_of_these_tests_uses_aof_always(private_redis: RedisServer) -> None:
    with RedisPlace(private_redis.url, "p:").client() as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert os.path.isdir(private_redis.directory)
