"""What a state may hold, checked before every commit (sessions/_limits.py): values a
store could not write and read back are refused with SessionValueError, states past
max_state_bytes with SessionLimitError, and nothing is committed either way, in memory
and in SQLite."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import triact
from triact.sessions._limits import MAX_INT, MIN_INT, check_state, check_with_data

from ._helpers import put


def nested(levels: int) -> Any:
    """A list nested ``levels`` deep (built without recursion)."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


BAD_VALUES = [
    pytest.param(float("inf"), "data.bad: number must be finite", id="infinity"),
    pytest.param(float("nan"), "data.bad: number must be finite", id="nan"),
    pytest.param(2**63, "data.bad: integer out of range", id="int-past-64-bits"),
    pytest.param(-(2**63) - 1, "data.bad: integer out of range", id="int-below-64-bits"),
    pytest.param(10**5000, "data.bad: integer out of range", id="int-past-str-digits"),
    pytest.param("\ud800", "data.bad: holds a lone surrogate (U+D800)", id="lone-surrogate"),
    pytest.param({"\udfff": 1}, 'data.bad["\\udfff"]: the key holds a lone', id="surrogate-key"),
    pytest.param({1: "x"}, "data.bad: keys must be strings", id="int-key"),
    pytest.param(nested(100), "data.bad" + "[0]" * 99 + ": nested deeper than 100", id="deep"),
    pytest.param(nested(100_000), "nested deeper than 100 levels", id="very-deep"),
    pytest.param({1, 2}, "data.bad: expected a JSON value, got set", id="set"),
]


@asynccontextmanager
async def manager_on(store: str, tmp_path: Path, **config: Any) -> AsyncIterator[Any]:
    backend = triact.SqliteStore(tmp_path / "s.db") if store == "sqlite" else None
    async with triact.open_session_manager(
        triact.SessionConfig(store=backend, **config)
    ) as manager:
        yield manager


stores = pytest.mark.parametrize("store", ["memory", "sqlite"])


@stores
@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
async def test_an_update_to_a_value_no_store_could_read_back_is_refused(
    store: str, value: Any, message: str, tmp_path: Path
) -> None:
    async with manager_on(store, tmp_path) as manager:
        session = await manager.create_session()
        await session.update(put("good", 1))
        with pytest.raises(triact.SessionValueError, match=re.escape(message)) as info:
            await session.update(put("bad", value))
        assert isinstance(info.value, triact.SessionDataError)
        state = await session.snapshot()  # still readable, unchanged
        assert state.version == 2
        assert dict(state.data) == {"good": 1}
        assert triact.decode_state(triact.encode_state(state)).data == {"good": 1}


@stores
async def test_a_session_created_with_metadata_no_store_could_read_back_is_refused(
    store: str, tmp_path: Path
) -> None:
    async with manager_on(store, tmp_path, max_sessions=1) as manager:
        with pytest.raises(triact.SessionValueError, match=r"metadata\.t: number must be finite"):
            await manager.create_session(metadata={"t": float("inf")})
        assert manager.session_count == 0
        await manager.create_session(metadata={"t": 1.5})  # the reservation was released


@stores
async def test_a_string_field_with_a_lone_surrogate_is_refused(store: str, tmp_path: Path) -> None:
    async with manager_on(store, tmp_path) as manager:
        session = await manager.create_session()
        with pytest.raises(triact.SessionValueError, match=r"lone surrogate \(U\+DC00\)"):
            await session.update(lambda s: attrs.evolve(s, topic="a\udc00"))
        with pytest.raises(triact.SessionValueError, match="lone surrogate"):
            await manager.create_session(topic="\ud800")
        assert (await session.snapshot()).topic is None


WRONG_TYPES = [
    pytest.param({"topic": 5}, "state.topic: expected str, got int", id="topic"),
    pytest.param({"threads": "abc"}, "state.threads: expected a tuple, got str", id="str-history"),
    pytest.param(
        {"threads": (triact.Thread(name=5, created_at=1.0),)},  # type: ignore[arg-type]
        "state.threads[0].name: expected str, got int",
        id="thread-name",
    ),
    pytest.param(
        {"active_requests": (triact.RequestRecord("r", "c", 1.0, status="done"),)},  # type: ignore[arg-type]
        "state.active_requests[0].status: expected one of 'active', 'completed', 'failed'",
        id="request-status",
    ),
    pytest.param(
        {"request_counter": "7"}, "state.request_counter: expected int, got str", id="counter"
    ),
    pytest.param(
        {"created_at": True}, "state.created_at: expected float or int, got bool", id="bool"
    ),
]


@stores
@pytest.mark.parametrize(("fields", "message"), WRONG_TYPES)
async def test_an_update_that_gives_a_field_the_wrong_type_is_refused(
    store: str, fields: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """It encoded (a string as an array of its characters, a number where a str
    goes), so it was committed, and no store could read it back: the session failed
    at its next load with SessionDataError, after a restart for good."""
    async with manager_on(store, tmp_path) as manager:
        session = await manager.create_session()
        await session.update(put("good", 1))
        with pytest.raises(triact.SessionValueError, match=re.escape(message)):
            await session.update(lambda state: attrs.evolve(state, **fields))
        state = await session.snapshot()
        assert (state.version, state.topic, state.threads) == (2, None, ())
        if "topic" in fields:  # create_session takes it too, and creates nothing
            with pytest.raises(triact.SessionValueError, match=re.escape(message)):
                await manager.create_session(topic=fields["topic"])
            assert manager.session_count == 1
        session_id = session.id
    if store == "sqlite":  # it reads back after a restart
        async with manager_on(store, tmp_path) as manager:
            state = await (await manager.get_session(session_id)).snapshot()
            assert (state.version, dict(state.data)) == (2, {"good": 1})


async def test_a_change_of_one_entry_in_a_long_history_is_checked(tmp_path: Path) -> None:
    """Entries the committed state holds are not walked again; a changed one is."""
    async with manager_on("sqlite", tmp_path, max_thread_messages=3) as manager:
        session = await manager.create_session()
        await session.add_thread("t")
        for n in range(5):  # past the bound: the oldest are dropped
            await session.add_thread_message("t", "user", f"m{n}")

        def corrupt_last(state: triact.SessionState) -> triact.SessionState:
            thread = state.threads[0]
            last = attrs.evolve(thread.messages[-1], content=b"bytes")
            messages = (*thread.messages[:-1], last)
            return attrs.evolve(state, threads=(attrs.evolve(thread, messages=messages),))

        with pytest.raises(triact.SessionValueError, match=r"threads\[0\]\.messages\[2\]"):
            await session.update(corrupt_last)
        state = await session.snapshot()
        assert [m.content for m in state.threads[0].messages] == ["m2", "m3", "m4"]


async def test_nesting_at_the_limit_is_committed_and_reads_back(tmp_path: Path) -> None:
    async with manager_on("sqlite", tmp_path) as manager:
        session = await manager.create_session()
        # data is level 1, so a value in it may nest 99 levels.
        await session.update(put("deep", nested(99)))
        session_id = session.id
    async with manager_on("sqlite", tmp_path) as manager:
        state = await (await manager.get_session(session_id)).snapshot()
        assert state.data["deep"] == nested(99)


@pytest.mark.parametrize("value", [MIN_INT, MAX_INT, 1.7976931348623157e308, "\u00e9\U0001f600"])
async def test_values_at_the_edges_round_trip_through_sqlite(value: Any, tmp_path: Path) -> None:
    async with manager_on("sqlite", tmp_path) as manager:
        session = await manager.create_session()
        await session.update(put("v", value))
        session_id = session.id
    async with manager_on("sqlite", tmp_path) as manager:
        state = await (await manager.get_session(session_id)).snapshot()
        assert state.data["v"] == value


@stores
async def test_a_state_past_max_state_bytes_is_refused_and_nothing_is_committed(
    store: str, tmp_path: Path
) -> None:
    async with manager_on(store, tmp_path, max_state_bytes=10_000) as manager:
        session = await manager.create_session()
        await session.update(put("a", "x" * 5000))
        with pytest.raises(triact.SessionLimitError, match=r"more than its limit of 10000 \("):
            await session.update(put("b", "y" * 5000))
        state = await session.snapshot()
        assert state.version == 2
        assert set(state.data) == {"a"}
        # Anything that grows the state counts, not only data.
        with pytest.raises(triact.SessionLimitError, match="max_state_bytes"):
            await session.add_thread("t", system_prompt="z" * 6000)
        await session.update(put("a", "small"))  # and it can shrink again


@stores
async def test_a_state_growing_in_small_steps_stops_at_the_limit_exactly(
    store: str, tmp_path: Path
) -> None:
    """Most changes are not encoded in full (their size is bounded from the previous
    state's): the refusal still comes only when the state would pass the limit."""
    limit = 6000
    async with manager_on(store, tmp_path, max_state_bytes=limit) as manager:
        session = await manager.create_session()
        for step in range(1000):
            try:
                await session.update(put(f"k{step}", "x" * 40))
            except triact.SessionLimitError:
                break
        state = await session.snapshot()
        size = len(triact.encode_state(state).encode())
        assert limit - 60 < size <= limit  # a 50-byte entry more would pass the limit
        assert len(state.data) == step


@stores
async def test_a_state_growing_by_with_data_stops_at_the_limit_exactly(
    store: str, tmp_path: Path
) -> None:
    """The same through with_data, whose commit check walks only the entries set and
    lets its bound creep (see check_with_data): refused only past the limit."""
    limit = 6000
    async with manager_on(store, tmp_path, max_state_bytes=limit) as manager:
        session = await manager.create_session()
        for step in range(1000):
            try:
                await session.update(
                    lambda state, step=step: state.with_data({f"k{step}": "x" * 40}, n=step)
                )
            except triact.SessionLimitError:
                break
        state = await session.snapshot()
        size = len(triact.encode_state(state).encode())
        assert limit - 60 < size <= limit
        assert len(state.data) == step + 1  # the k entries and n


@stores
async def test_a_state_made_by_with_data_then_changed_otherwise_is_checked_in_full(
    store: str, tmp_path: Path
) -> None:
    """The commit check trusts the record of what ``with_data`` made last (its other
    fields are the state's own) only for that very state, made from the committed one:
    a state evolved from it, or made by ``with_data`` from another state, is compared
    field by field, so a change of another field is still bounded and checked."""
    from triact.sessions import _state

    async with manager_on(store, tmp_path, max_state_bytes=10_000) as manager:
        session = await manager.create_session()
        await session.update(put("a", 1))
        stale = await session.snapshot()
        await session.update(lambda state: attrs.evolve(state, topic="t" * 3000))

        def evolved(state: triact.SessionState) -> triact.SessionState:
            return attrs.evolve(state.with_data(n=1), topic="x" * 20_000)

        def from_another(state: triact.SessionState) -> triact.SessionState:
            state.with_data(n=2)  # recorded, then not returned
            return attrs.evolve(stale, version=state.version, topic="y" * 20_000).with_data(n=3)

        for fn in (evolved, from_another):
            with pytest.raises(triact.SessionLimitError, match="max_state_bytes"):
                await session.update(fn)
            assert _state.MADE[0] is None  # the record keeps no state alive
        state = await session.snapshot()
        assert (state.version, state.topic, dict(state.data)) == (3, "t" * 3000, {"a": 1})
        # A state made from an older one by with_data carries that one's other fields:
        # committed as it is, checked field by field (here: the old topic is back).
        assert (await session.update(lambda _: stale.with_data(n=4))).topic is None
        assert (await session.snapshot()).data == {"a": 1, "n": 4}


async def test_max_state_bytes_defaults_to_one_mib() -> None:
    assert triact.SessionConfig().max_state_bytes == 1024 * 1024
    with pytest.raises(ValueError, match="max_state_bytes"):
        triact.SessionConfig(max_state_bytes=0)


async def test_a_bad_change_in_a_group_commit_fails_only_its_own_caller(tmp_path: Path) -> None:
    async with manager_on("sqlite", tmp_path) as manager:
        session = await manager.create_session()
        outcomes: dict[str, Any] = {}

        async def update(name: str, fn: Callable[[Any], Any]) -> None:
            try:
                outcomes[name] = (await session.update(fn)).version
            except triact.SessionError as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            for name, value in [("a", 1), ("b", float("inf")), ("c", 3)]:
                nursery.start_soon(update, name, put(name, value))
                await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcomes.pop("b"), triact.SessionValueError)
        assert sorted(outcomes.values()) == [2, 3]
        assert dict((await session.snapshot()).data) == {"a": 1, "c": 3}


async def test_an_unencodable_state_fails_only_its_own_write_in_a_store_batch(
    tmp_path: Path,
) -> None:
    """Two sessions' writes in one SQLite batch, one holding a lone surrogate (written
    to the store directly, past the actor's check): the other is committed."""
    store = triact.SqliteStore(tmp_path / "s.db")
    good = triact.SessionState(id="good", version=1, created_at=1.0, last_used=1.0)
    bad = triact.SessionState(id="bad", version=1, created_at=1.0, last_used=1.0, topic="\ud800")
    outcomes: dict[str, BaseException | None] = {}

    async def write(state: triact.SessionState) -> None:
        try:
            await store.write(state, previous_version=None)
            outcomes[state.id] = None
        except triact.SessionError as exc:
            outcomes[state.id] = exc

    async with store.open():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, good)
            nursery.start_soon(write, bad)
        assert outcomes["good"] is None
        assert isinstance(outcomes["bad"], triact.SessionDataError)
        assert "lone surrogate (U+D800)" in str(outcomes["bad"])
        assert await store.load("good") == good
        assert await store.load("bad") is None


def test_check_state_walks_only_the_mappings_that_changed() -> None:
    state = triact.SessionState(id="s", version=1, created_at=1.0, last_used=1.0, data={"a": 1})
    # A mapping carried over from the previous state is not walked again (it was
    # checked when it was committed); a new one is.
    carried = attrs.evolve(state, version=2)
    assert check_state(carried, state, 10_000) is not None
    with pytest.raises(triact.SessionValueError, match=r"data\.x"):
        check_state(attrs.evolve(state, data={"x": float("inf")}), state, 10_000)


def test_check_state_with_known_sizes_refuses_what_a_full_check_refuses() -> None:
    """Given the sizes its check of the previous state returned, a change of data or
    metadata is checked without encoding the state: the same values and sizes are
    refused, and the sizes stay a bound of the state's JSON."""
    limit = 2_000
    state = triact.SessionState(id="s", version=1, created_at=1.0, last_used=1.0)
    known = check_state(state, None, limit)
    assert known is not None
    for bad in [float("nan"), 2**63, "\ud800", {1: 2}, nested(100)]:
        for field in ("data", "metadata"):
            with pytest.raises(triact.SessionValueError, match=f"{field}\\.bad"):
                check_state(attrs.evolve(state, **{field: {"bad": bad}}), state, limit, known)
    with pytest.raises(triact.SessionLimitError, match="max_state_bytes"):
        check_state(attrs.evolve(state, data={"a": "x" * limit}), state, limit, known)
    for step in range(100):  # each state checked after the last, with its sizes
        new = attrs.evolve(
            state, version=state.version + 1, data={**state.data, f"k{step}": "x" * 10}
        )
        try:
            known = check_state(new, state, limit, known)
        except triact.SessionLimitError:
            break
        assert known is not None
        size = len(triact.encode_state(new).encode())
        assert size <= known[0] <= limit
        data_size = size - len(triact.encode_state(attrs.evolve(new, data={})).encode()) + 2
        assert data_size <= known[1]
        state = new
    assert limit - 30 < len(triact.encode_state(state).encode()) <= limit


# -- the check of a state made by with_data: only the entries it set are walked -------


@stores
@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
async def test_a_with_data_update_to_a_value_no_store_could_read_back_is_refused(
    store: str, value: Any, message: str, tmp_path: Path
) -> None:
    """The same refusals when the update is ``with_data`` after ``with_data`` updates
    (whose commit check walks only the entries set, see check_with_data)."""
    async with manager_on(store, tmp_path) as manager:
        session = await manager.create_session()
        for n in range(3):
            await session.update(lambda state, n=n: state.with_data(good=n, s="x"))
        with pytest.raises(triact.SessionValueError, match=re.escape(message)):
            await session.update(lambda state: state.with_data(bad=value))
        with pytest.raises(triact.SessionValueError, match=re.escape(message)):
            await session.update(lambda state: state.with_data({"bad": value}, good=9))
        state = await session.snapshot()
        assert (state.version, dict(state.data)) == (4, {"good": 2, "s": "x"})
        await session.update(lambda state: state.with_data(good=3))


def derived(
    state: triact.SessionState, make: Callable[[triact.SessionState], triact.SessionState]
) -> tuple[triact.SessionState, dict[str, Any] | None]:
    """``make(state)`` (a with_data or without_data of ``state``) stamped as a commit
    stamps it, with the entries the record of with_data says it set."""
    from triact.sessions import _state

    new = make(state)
    record = _state.MADE[0]
    _state.MADE[0] = None
    assert record is not None
    assert record[0] is new
    assert record[1] is state
    stamped = _state.stamped_with(new, state.version + 1, 2.0, 1, 0, 0.0, 0.0)
    return stamped, record[2]


def json_size(state: triact.SessionState) -> int:
    return len(triact.encode_state(state).encode())


def data_json_size(state: triact.SessionState) -> int:
    return json_size(state) - json_size(attrs.evolve(state, data={})) + 2


def test_check_with_data_refuses_what_check_state_refuses() -> None:
    limit = 5_000
    state = triact.SessionState(id="s", version=1, created_at=1.0, last_used=1.0, data={"a": 1})
    known = check_state(state, None, limit)
    for make in (lambda s: s.with_data(b="x"), lambda s: s.with_data(c=2.5)):
        new, entries = derived(state, make)
        known = check_with_data(new, state, limit, known, entries)
        state = new
    assert known is not None
    assert known[3] == 0
    for bad in [float("nan"), 2**63, "\ud800", None, True, [1, {"x": float("inf")}], {1, 2}]:
        for make in (
            lambda s, bad=bad: s.with_data(bad=bad),
            lambda s, bad=bad: s.with_data({"bad": bad}),
        ):
            new, entries = derived(state, make)
            if bad is None or bad is True:  # valid: committed
                assert check_with_data(new, state, limit, known, entries) is not None
                continue
            with pytest.raises(triact.SessionValueError, match=r"data\.bad"):
                check_with_data(new, state, limit, known, entries)
    for key in ("\udfff", 1):  # keys that no JSON object holds
        new, entries = derived(state, lambda s, key=key: s.with_data({key: 1}))
        with pytest.raises(triact.SessionValueError, match="key"):
            check_with_data(new, state, limit, known, entries)
    new, entries = derived(state, lambda s: s.with_data(huge="x" * limit))
    with pytest.raises(triact.SessionLimitError, match="max_state_bytes"):
        check_with_data(new, state, limit, known, entries)


def test_the_entries_with_data_says_it_set_are_its_own() -> None:
    """The caller's mapping of changes may change after with_data returns: the record
    holds a copy of what was set."""
    limit = 5_000
    state = triact.SessionState(id="s", version=1, created_at=1.0, last_used=1.0)
    known = check_state(state, None, limit)
    for _ in range(2):
        new, entries = derived(state, lambda s: s.with_data(n=1))
        known = check_with_data(new, state, limit, known, entries)
        state = new
    assert known is not None
    assert known[3] == 0
    changes = {"bad": float("inf")}
    new, entries = derived(state, lambda s: s.with_data(changes))
    changes.clear()
    with pytest.raises(triact.SessionValueError, match=r"data\.bad"):
        check_with_data(new, state, limit, known, entries)


def test_check_with_data_keeps_a_bound_through_overwrites_and_removals() -> None:
    """Entries overwritten again and again, removed, added: every size returned stays
    a bound of the state's JSON (an entry replaced or removed is not taken off, so it
    creeps up, and is made afresh by a walk of the whole data before it would pass
    the limit), and a state within the limit is never refused."""
    limit = 4_000
    state = triact.SessionState(id="s", version=1, created_at=1.0, last_used=1.0)
    known = check_state(state, None, limit)
    walks = 0
    for step in range(600):
        if step % 7 == 3:
            make: Any = lambda s: s.without_data("s", "s", "gone")  # noqa: E731
        elif step % 5 == 0:
            make = lambda s, step=step: s.with_data({f"k.{step % 3}": step * 1.5})  # noqa: E731
        else:
            make = lambda s, step=step: s.with_data(n=step, s="é" * (step % 40))  # noqa: E731
        new, entries = derived(state, make)
        armed = known is not None and known[3] == 0
        known = check_with_data(new, state, limit, known, entries)
        assert known is not None
        walks += armed and known[1] < 200  # a fresh bound: the walk made it
        assert json_size(new) <= known[0] <= limit
        assert data_json_size(new) <= known[1]
        state = new
    assert walks >= 2


def test_a_list_left_in_the_data_is_walked_again() -> None:
    """A list or dict in the data may be changed in place by an update function that
    holds it: while one is there, a with_data of other entries walks it too."""
    limit = 5_000
    items: list[Any] = [1]
    state = triact.SessionState(id="s", version=1, created_at=1.0, last_used=1.0)
    known = check_state(state, None, limit)
    new, entries = derived(state, lambda s: s.with_data(items=items, n=0))
    known = check_with_data(new, state, limit, known, entries)
    assert known is not None
    assert known[3] == 1
    state = new
    items.append(float("inf"))  # in place, behind the committed state's back
    new, entries = derived(state, lambda s: s.with_data(n=1))
    with pytest.raises(triact.SessionValueError, match=r"data\.items\[1\]"):
        check_with_data(new, state, limit, known, entries)
    items[1] = "x" * limit  # or grown past the limit
    with pytest.raises(triact.SessionLimitError, match="max_state_bytes"):
        check_with_data(new, state, limit, known, entries)
    del items[1:]
    # Replaced by a scalar: the data holds none any more, only entries are walked.
    new, entries = derived(state, lambda s: s.with_data(items=0))
    known = check_with_data(new, state, limit, known, entries)
    assert known is not None
    assert known[3] == 0
