"""The reference model: its own semantics, and a real manager that gets the same calls
one at a time answers exactly as the model does."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import triact
from triact.testing import (
    DataChange,
    InjectedError,
    ModelState,
    ReferenceModel,
    data_changes,
    failing_update,
)


def test_updates_count_versions_and_conflicts_change_nothing() -> None:
    model = ReferenceModel()
    model.create("s")
    assert model.update("s", DataChange(increment={"n": 2})).version == 2
    with pytest.raises(triact.SessionConcurrencyError) as info:
        model.update("s", DataChange(set={"a": 1}), expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    state = model.read("s")
    assert (state.version, dict(state.data)) == (2, {"n": 2})


def test_a_failing_update_changes_nothing() -> None:
    model = ReferenceModel()
    model.create("s")

    def fail(data: Any) -> Any:
        raise InjectedError

    with pytest.raises(InjectedError):
        model.update("s", fail)
    with pytest.raises(ValueError, match="cannot be incremented"):
        model.update("s", DataChange(set={"a": "x"}, increment={"a": 1}))
    assert model.read("s").version == 1


def test_end_remove_and_expiry() -> None:
    model = ReferenceModel(idle_ttl=10.0)
    for name in "abc":
        model.create(name)
    assert model.end("a").version == 1
    assert model.remove("b") is True
    assert model.remove("b") is False
    model.advance(9.0)
    assert model.read("c").version == 1  # renews it
    assert model.advance(9.5) == []
    assert model.advance(0.5) == ["c"]
    for name in "abc":
        with pytest.raises(triact.SessionNotFoundError):
            model.read(name)
    assert model.live() == []


def test_data_change_has_the_semantics_of_the_session_update_tool() -> None:
    change = DataChange(set={"a": 1}, increment={"n": 2}, delete=("b",))
    assert change.apply({"b": 0, "n": 1}) == {"a": 1, "n": 3}
    assert change.arguments() == {"set": {"a": 1}, "increment": {"n": 2}, "delete": ["b"]}
    state = triact.SessionState(id="s", version=1, created_at=0.0, last_used=0.0)
    assert dict(change(state).data) == {"a": 1, "n": 2}
    assert repr(change) == "DataChange(set={'a': 1}, increment={'n': 2}, delete=('b',))"


@attrs.frozen
class Call:
    action: str  # update, fail, read, end, remove, wait
    session: int
    change: DataChange = attrs.field(factory=DataChange)
    expected: int | None = None  # offset from the model's version
    seconds: float = 0.0


calls = st.one_of(
    st.builds(
        Call,
        action=st.sampled_from(["update"] * 6 + ["fail", "read", "read", "end", "remove"]),
        session=st.integers(0, 2),
        change=data_changes,
        expected=st.none() | st.integers(-1, 1),
    ),
    st.builds(
        Call, action=st.just("wait"), session=st.just(0), seconds=st.sampled_from([1.0, 5.0, 11.0])
    ),
)


async def _outcome(call: Any) -> Any:
    try:
        result = await call()
    except (triact.SessionError, InjectedError, ValueError) as exc:
        return type(exc)
    if isinstance(result, triact.SessionState | ModelState):
        return (result.version, dict(result.data))
    return result


@given(st.lists(calls, max_size=30))
def test_a_manager_called_one_call_at_a_time_answers_as_the_model(script: list[Call]) -> None:
    async def main() -> None:
        model = ReferenceModel(idle_ttl=10.0)
        config = triact.SessionConfig(idle_ttl=10.0)
        async with triact.open_session_manager(config) as manager:
            sessions = [await manager.create_session() for _ in range(3)]
            for s in sessions:
                model.create(s.id)
            for call in script:
                session = sessions[call.session]
                if call.action == "wait":
                    # whole seconds past the TTL: the reaper's granularity never shows
                    await trio.sleep(call.seconds)
                    model.advance(call.seconds)
                    continue
                version = model.sessions[session.id].version
                expected = None if call.expected is None else version + call.expected
                real, modelled = _calls(session, manager, model, call, expected)
                assert await _outcome(real) == await _outcome(modelled), call
            assert sorted(manager.session_ids()) == sorted(model.live())

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def _calls(
    session: triact.Session,
    manager: triact.SessionManager,
    model: ReferenceModel,
    call: Call,
    expected: int | None,
) -> tuple[Any, Any]:
    sid = session.id

    async def modelled() -> Any:
        await trio.lowlevel.checkpoint()
        if call.action == "update":
            return model.update(sid, call.change, expected)
        if call.action == "fail":
            return model.update(sid, failing_update_on_data, expected)
        if call.action == "read":
            return model.read(sid)
        if call.action == "end":
            return model.end(sid)
        return model.remove(sid)

    def real() -> Any:
        if call.action == "update":
            return session.update(call.change, expected)
        if call.action == "fail":
            return session.update(failing_update(), expected)
        if call.action == "read":
            return session.snapshot()
        if call.action == "end":
            return session.end()
        return manager.remove_session(sid)

    return real, modelled


def failing_update_on_data(data: Any) -> Any:
    raise InjectedError
