"""SessionState through the codec: every state round-trips through JSON exactly, and
every bad record is refused with a SessionDataError that says where it is bad.

The strategies come from ``triact.testing``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import inspect
import json
import math
import re
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import triact
from triact import (
    AnalysisRecord,
    ClientBinding,
    RequestRecord,
    SecurityEvent,
    SessionMetrics,
    SessionState,
    Thread,
    ThreadMessage,
)
from triact.sessions._state import stamped
from triact.testing import json_values, session_states

# -- round trips --------------------------------------------------------------------


@given(session_states)
def test_encode_then_decode_gives_the_same_state(state: SessionState) -> None:
    text = triact.encode_state(state)
    assert json.loads(text)["schema"] == triact.SCHEMA_VERSION
    decoded = triact.decode_state(text)
    assert decoded == state
    # == says 1 == 1.0 == True; the text does not, so types survive too
    assert triact.encode_state(decoded) == text


@given(session_states)
def test_decode_accepts_utf8_bytes(state: SessionState) -> None:
    assert triact.decode_state(triact.encode_state(state).encode()) == state


@given(session_states)
def test_unstructure_then_structure_gives_the_same_state(state: SessionState) -> None:
    record = triact.unstructure_state(state)
    assert record["schema"] == triact.SCHEMA_VERSION
    assert json.loads(json.dumps(record)) == record  # plain JSON data only
    assert triact.structure_state(record) == state


# -- the fast lane (orjson) writes what json writes ----------------------------------


def json_text(state: SessionState) -> str:
    """The record as the standard library's json writes it, in canonical form."""
    record = triact.unstructure_state(state)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(text: str) -> str:
    """The same JSON values, written one way (orjson writes 1e-05 as 0.00001)."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def with_data(value: Any) -> SessionState:
    return SessionState(id="s", version=1, created_at=1.5, last_used=2.5, data={"v": value})


@given(session_states)
def test_encoding_writes_the_values_json_writes(state: SessionState) -> None:
    assert canonical(triact.encode_state(state)) == json_text(state)


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        2**70,  # past orjson's 64 bits
        {"deep": [1, -(2**65)]},
        Level.HIGH,  # subclasses: json's way
        Name("x"),
        {1: "a", 2.5: "b"},  # keys json turns into strings
        (1, 2),
        "null",  # looks like what orjson writes for NaN; is not
        [None, {"null": None}],
        "\u2028 \U0001f600 \x00",
    ],
    ids=repr,
)
def test_unusual_data_is_written_as_json_writes_it(value: Any) -> None:
    state = with_data(value)
    text = triact.encode_state(state)
    assert canonical(text) == json_text(state)
    assert triact.decode_state(text).data == json.loads(text)["state"]["data"]


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [
        math.nan,  # orjson would write null
        -math.inf,
        [1.0, math.inf],
        {"deep": {"x": math.nan}},
        datetime.datetime(2026, 1, 1),  # orjson (and cattrs) would write a string
        {1, 2},  # cattrs would write a list
        b"bytes",
        Point(1),  # orjson would write an object
        {(1, 2): "tuple key"},
        object(),
    ],
    # an object()'s repr has its address: a stable id for the test (xdist's workers
    # must collect the same names)
    ids=lambda value: "object()" if type(value) is object else repr(value),
)
def test_data_json_cannot_carry_is_refused(value: Any) -> None:
    with pytest.raises(triact.SessionDataError, match="cannot be stored as JSON"):
        triact.encode_state(with_data(value))


@pytest.mark.parametrize(
    "change",
    [
        {"created_at": math.nan},
        {"last_used": math.inf},
        {"metrics": SessionMetrics(total_latency=math.nan)},
        {"threads": (Thread("t", 1.0, messages=(ThreadMessage("user", "hi", -math.inf),)),)},
        # An int past the largest float: it raised OverflowError (encoded by json, it
        # would not decode back into a float).
        {"created_at": 10**400},
        {"analyses": (AnalysisRecord("p", {}, 1.0, response_time=-(10**400)),)},
    ],
    ids=lambda change: repr(change)[:40],
)
def test_a_typed_float_that_is_not_finite_is_refused(change: dict[str, Any]) -> None:
    state = attrs.evolve(with_data(1), **change)
    with pytest.raises(triact.SessionDataError, match="not JSON compliant"):
        triact.encode_state(state)


# -- the places in a record where a field can be made bad ----------------------------

# For each record class: its fields that hold records, and whether they hold a
# sequence of them (True) or a single optional one (False).
_NESTED: dict[type, dict[str, tuple[type, bool]]] = {
    SessionState: {
        "threads": (Thread, True),
        "analyses": (AnalysisRecord, True),
        "metrics": (SessionMetrics, False),
        "client_binding": (ClientBinding, False),
        "security_events": (SecurityEvent, True),
        "active_requests": (RequestRecord, True),
        "completed_requests": (RequestRecord, True),
    },
    Thread: {"messages": (ThreadMessage, True)},
}
_NUMBERS = {
    (SessionState, "version"),
    (SessionState, "request_counter"),
    (SessionState, "created_at"),
    (SessionState, "last_used"),
    (ThreadMessage, "at"),
    (Thread, "created_at"),
    (AnalysisRecord, "timestamp"),
    (ClientBinding, "created_at"),
    (SecurityEvent, "at"),
    (RequestRecord, "started_at"),
    *((SessionMetrics, f.name) for f in attrs.fields(SessionMetrics)),
}


@attrs.frozen
class Site:
    """A field of one record object inside an unstructured session record."""

    path: str  # as cattrs names it: state.threads[0].created_at
    obj: dict[str, Any] = attrs.field(eq=False, repr=False)
    cls: type
    field: attrs.Attribute[Any] = attrs.field(eq=False, repr=False)

    @property
    def required(self) -> bool:
        return self.field.default is attrs.NOTHING

    @property
    def numeric(self) -> bool:
        """An int or float field that may not be None."""
        return (self.cls, self.field.name) in _NUMBERS


def record_objects(
    obj: dict[str, Any], cls: type, path: str
) -> Iterator[tuple[str, dict[str, Any], type]]:
    """Every record object in ``obj`` (an unstructured ``cls``), with its path."""
    yield path, obj, cls
    for name, (inner, many) in _NESTED.get(cls, {}).items():
        value = obj.get(name)
        if value is None:
            continue
        if many:
            for i, item in enumerate(value):
                yield from record_objects(item, inner, f"{path}.{name}[{i}]")
        else:
            yield from record_objects(value, inner, f"{path}.{name}")


def sites(record: dict[str, Any]) -> list[Site]:
    return [
        Site(f"{path}.{field.name}", obj, cls, field)
        for path, obj, cls in record_objects(record["state"], SessionState, "state")
        for field in attrs.fields(cls)
    ]


def assert_refused_at(record: dict[str, Any], path: str) -> triact.SessionDataError:
    """The record is refused, and the message names ``path`` as a place of error."""
    with pytest.raises(triact.SessionDataError) as info:
        triact.structure_state(record)
    message = str(info.value)
    assert re.search(rf"@ {re.escape(path)}(;|$)", message), message
    # the text form is refused the same way
    with pytest.raises(triact.SessionDataError, match=re.escape(f"@ {path}")):
        triact.decode_state(json.dumps(record))
    return info.value


# -- refusals -----------------------------------------------------------------------


@given(session_states, st.integers(min_value=triact.SCHEMA_VERSION + 1))
def test_a_record_from_a_newer_schema_is_refused_with_advice_to_upgrade(
    state: SessionState, schema: int
) -> None:
    record = triact.unstructure_state(state)
    record["schema"] = schema
    for attempt in (
        lambda: triact.structure_state(record),
        lambda: triact.decode_state(json.dumps(record)),
    ):
        with pytest.raises(triact.SessionDataError) as info:
            attempt()
        message = str(info.value)
        assert "newer" in message, message
        assert "upgrade" in message, message
        assert str(schema) in message, message


@given(session_states, st.data())
def test_text_that_is_not_json_is_refused(state: SessionState, data: st.DataObject) -> None:
    text = triact.encode_state(state)
    cut = data.draw(st.integers(0, len(text) - 1), label="cut")
    with pytest.raises(triact.SessionDataError, match="not valid JSON"):
        triact.decode_state(text[:cut])  # every proper prefix of an object is invalid


@pytest.mark.parametrize("raw", [b"\x80abc", b"\xff\xfe\x00", "{'schema': 1}", "NaN-ish"])
def test_bytes_or_text_that_are_not_json_are_refused(raw: str | bytes) -> None:
    with pytest.raises(triact.SessionDataError, match="not valid JSON"):
        triact.decode_state(raw)


@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_a_record_that_is_not_an_object_is_refused(value: Any) -> None:
    with pytest.raises(triact.SessionDataError, match="not a triact session record"):
        triact.structure_state(value)
    with pytest.raises(triact.SessionDataError, match="not a triact session record"):
        triact.decode_state(json.dumps(value))


@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_a_state_that_is_not_an_object_is_refused(value: Any) -> None:
    # A list or a string here once let an AttributeError escape structure_state.
    record = {"schema": triact.SCHEMA_VERSION, "state": value}
    with pytest.raises(triact.SessionDataError):
        triact.structure_state(record)


@pytest.mark.parametrize("missing", ["schema", "state"])
def test_a_record_without_its_schema_or_state_is_refused(missing: str) -> None:
    record = triact.unstructure_state(SessionState(id="s", version=1, created_at=0, last_used=0))
    del record[missing]
    with pytest.raises(triact.SessionDataError, match="not a triact session record"):
        triact.structure_state(record)


@pytest.mark.parametrize("schema", [0, -1, "1", 1.0, None, [1]])
def test_an_invalid_schema_version_is_refused(schema: Any) -> None:
    record = triact.unstructure_state(SessionState(id="s", version=1, created_at=0, last_used=0))
    record["schema"] = schema
    with pytest.raises(triact.SessionDataError, match="schema"):
        triact.structure_state(record)


def test_a_version_that_is_not_a_number_is_refused_naming_state_version() -> None:
    record = triact.unstructure_state(SessionState(id="s", version=3, created_at=0, last_used=0))
    record["state"]["version"] = "x"
    assert_refused_at(record, "state.version")


@given(session_states, st.data())
def test_a_missing_required_field_is_refused_naming_its_path(
    state: SessionState, data: st.DataObject
) -> None:
    record = copy.deepcopy(triact.unstructure_state(state))
    site = data.draw(st.sampled_from([s for s in sites(record) if s.required]), label="site")
    del site.obj[site.field.name]
    assert_refused_at(record, site.path)


@given(session_states, st.data())
def test_a_numeric_field_holding_something_else_is_refused_naming_its_path(
    state: SessionState, data: st.DataObject
) -> None:
    record = copy.deepcopy(triact.unstructure_state(state))
    site = data.draw(st.sampled_from([s for s in sites(record) if s.numeric]), label="site")
    bad = data.draw(
        st.sampled_from([None, "x", "", "one", [], [1], {}, {"a": 1}]), label="bad value"
    )
    site.obj[site.field.name] = bad
    assert_refused_at(record, site.path)


@given(session_states, st.data())
def test_a_record_field_holding_a_scalar_is_refused_naming_its_path(
    state: SessionState, data: st.DataObject
) -> None:
    record = copy.deepcopy(triact.unstructure_state(state))
    site = data.draw(
        st.sampled_from(
            [s for s in sites(record) if s.field.name in _NESTED.get(s.cls, {})]
            + [s for s in sites(record) if s.field.name in ("data", "metadata", "responses")]
        ),
        label="site",
    )
    site.obj[site.field.name] = data.draw(st.sampled_from([5, 2.5, True]), label="bad value")
    assert_refused_at(record, site.path)


@given(session_states, st.data())
def test_an_unknown_key_is_refused_naming_it_and_where(
    state: SessionState, data: st.DataObject
) -> None:
    record = copy.deepcopy(triact.unstructure_state(state))
    path, obj, cls = data.draw(
        st.sampled_from(list(record_objects(record["state"], SessionState, "state"))),
        label="object",
    )
    names = {f.name for f in attrs.fields(cls)}
    key = data.draw(st.text(min_size=1).filter(lambda k: k not in names), label="key")
    obj[key] = data.draw(json_values, label="value")
    error = assert_refused_at(record, path)
    assert f"extra fields found ({key})" in str(error)


# A JSON value of the wrong type must not be coerced into the field's type: an int
# field given 1.5 would silently become 1, an id given null the string "None".
# (cattrs's default structuring coerces: int(1.5), str(None), tuple({}).)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 1.5),
        ("version", "2"),
        ("version", True),
        ("id", None),
        ("topic", ["a"]),
        ("created_at", "1.5"),
        ("threads", {}),
    ],
)
def test_a_value_of_the_wrong_json_type_is_not_coerced(field: str, value: Any) -> None:
    record = triact.unstructure_state(SessionState(id="s", version=3, created_at=0, last_used=0))
    record["state"][field] = value
    assert_refused_at(record, f"state.{field}")


@given(session_states, st.integers(min_value=1), st.floats(allow_nan=False))
def test_stamped_is_evolve_of_version_last_used_and_metrics(
    state: SessionState, version: int, last_used: float
) -> None:
    metrics = SessionMetrics(operations=3, errors=1, total_latency=0.5, max_latency=0.25)
    new = stamped(state, version, last_used, metrics)
    assert new == attrs.evolve(state, version=version, last_used=last_used, metrics=metrics)
    assert type(new) is SessionState
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        new.version = 1  # type: ignore[misc]


def test_a_traceback_through_the_generated_stamped_function_shows_its_source() -> None:
    import traceback

    from triact.sessions._state import SessionMetrics, stamped

    try:
        stamped(object(), 2, 0.0, SessionMetrics())  # type: ignore[arg-type]
    except AttributeError:
        text = traceback.format_exc()
    else:
        raise AssertionError("stamped accepted an object that is not a state")
    assert "triact generated stamped" in text
    assert "new.id = state.id" in text  # the generated line itself, from the linecache entry


def test_the_state_is_built_as_attrs_would_build_it() -> None:
    """SessionState's __init__ is generated (sessions/_state.py, _make_init): the
    same parameters, defaults and converters as attrs', and the state stays frozen."""
    state = SessionState(id="s", version=1, created_at=1.0, last_used=2.0)
    assert attrs.asdict(state, recurse=False) == {
        field.name: (
            field.default
            if field.default is not attrs.NOTHING
            else {"id": "s", "version": 1, "created_at": 1.0, "last_used": 2.0}[field.name]
        )
        for field in attrs.fields(SessionState)
    }
    changed = attrs.evolve(state, data={"a": [1]}, metadata={"m": 1}, topic="t")
    assert type(changed.data) is MappingProxyType
    assert type(changed.metadata) is MappingProxyType
    assert (changed.data, changed.metadata, changed.topic) == ({"a": [1]}, {"m": 1}, "t")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        changed.topic = "u"  # type: ignore[misc]
    with pytest.raises(TypeError, match="last_used"):
        SessionState(id="s", version=1, created_at=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="expected a mapping"):
        SessionState(id="s", version=1, created_at=1.0, last_used=2.0, data=[1])  # type: ignore[arg-type]
    parameters = inspect.signature(SessionState).parameters
    assert [(p.name, p.default) for p in parameters.values()] == [
        (f.name, inspect.Parameter.empty if f.default is attrs.NOTHING else f.default)
        for f in attrs.fields(SessionState)
    ]


def test_stamped_with_is_stamped_with_new_metrics() -> None:
    from triact.sessions._state import new_metrics, stamped_with

    state = SessionState(id="s", version=1, created_at=1.0, last_used=1.0, data={"a": 1})
    assert stamped_with(state, 2, 3.0, 4, 1, 0.5, 0.25) == stamped(
        state, 2, 3.0, new_metrics(4, 1, 0.5, 0.25)
    )
    assert stamped_with(state, 2, 3.0, 4, 1, 0.5, 0.25).metrics == triact.SessionMetrics(
        4, 1, 0.5, 0.25
    )


@given(session_states)
def test_the_generated_builders_make_frozen_states_never_their_writable_twins(
    state: SessionState,
) -> None:
    """The generated functions build each state (and its metrics) as a writable
    subclass and turn it into the frozen class once whole (sessions/_state.py, with
    triact/_writable.py): what they return is the frozen class itself, frozen."""
    from triact.sessions._state import compact, expand, new_metrics, stamped_with

    made = [
        state.with_data(b=2),
        state.without_data("b"),
        stamped(state, 2, 3.0, new_metrics(4, 1, 0.5, 0.25)),
        stamped_with(state, 2, 3.0, 4, 1, 0.5, 0.25),
        expand(state.id, compact(state)),
    ]
    for new in made:
        assert type(new) is SessionState
        assert type(new.metrics) is SessionMetrics
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            new.topic = "t"  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            del new.topic  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            new.metrics.errors = 9  # type: ignore[misc]
    assert made[4] == state


# -- with_data and without_data: generated copies, checked against attrs.evolve --------

_keys = st.text(max_size=8)
_changes = st.dictionaries(_keys, json_values, max_size=4)
_more = st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), json_values, max_size=3
)


def _same(made: SessionState, expected: SessionState) -> None:
    """``made`` is ``expected``, field for field and in its data's order, and frozen."""
    assert type(made) is type(expected)
    assert made == expected
    assert list(made.data.items()) == list(expected.data.items())
    assert type(made.data) is MappingProxyType
    for field in attrs.fields(type(made)):  # the other fields are the very same objects
        if field.name != "data":
            assert getattr(made, field.name) is getattr(expected, field.name)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.data = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        made.data["x"] = 1  # type: ignore[index]


@given(session_states, _changes, _more)
def test_with_data_makes_what_evolve_makes(
    state: SessionState, changes: dict[str, Any], more: dict[str, Any]
) -> None:
    before = triact.encode_state(state)
    made = state.with_data(changes, **more)
    _same(made, attrs.evolve(state, data={**state.data, **changes, **more}))
    assert triact.encode_state(state) == before  # the original is untouched
    # The copy is private: changing what was passed changes nothing in it.
    changes["extra key"] = 1
    assert "extra key" not in made.data or "extra key" in state.data
    _same(state.with_data(**more), attrs.evolve(state, data={**state.data, **more}))
    _same(state.with_data(), attrs.evolve(state, data=dict(state.data)))


@given(session_states, st.lists(_keys, max_size=4))
def test_without_data_makes_what_evolve_makes(state: SessionState, drop: list[str]) -> None:
    drop.extend(list(state.data)[:1])  # a key it holds, if it holds any
    made = state.without_data(*drop)
    _same(made, attrs.evolve(state, data={k: v for k, v in state.data.items() if k not in drop}))


@pytest.mark.parametrize("changes", [[("a", 1)], "ab", 3, None, {1, 2}])
def test_with_data_refuses_what_evolve_refuses(changes: Any) -> None:
    state = SessionState(id="s", version=1, created_at=1.0, last_used=1.0, data={"a": 0})
    with pytest.raises(TypeError):
        attrs.evolve(state, data={**state.data, **changes})
    with pytest.raises(
        TypeError, match=f"with_data takes a mapping of changes.*{type(changes).__name__}"
    ):
        state.with_data(changes)
    assert state.data == {"a": 0}


def test_with_data_of_a_subclass_is_evolve() -> None:
    @attrs.frozen
    class Tagged(SessionState):
        tag: str = "t"

    state = Tagged(id="s", version=1, created_at=1.0, last_used=1.0, data={"a": 1}, tag="x")
    made = state.with_data({"b": 2}, c=3)
    assert type(made) is Tagged
    assert made.tag == "x"
    assert made == attrs.evolve(state, data={"a": 1, "b": 2, "c": 3})
    assert state.without_data("a") == attrs.evolve(state, data={})


def test_with_data_keeps_a_mapping_that_is_no_dict_in_order() -> None:
    from collections import OrderedDict

    state = SessionState(
        id="s",
        version=1,
        created_at=1.0,
        last_used=1.0,
        data=MappingProxyType(OrderedDict(b=1, a=2)),
    )
    made = state.with_data(OrderedDict(c=3), a=4)
    assert list(made.data.items()) == [("b", 1), ("a", 4), ("c", 3)]
    assert type(made.data) is MappingProxyType
    assert (
        made.without_data("b", "a", "c").data
        is SessionState(id="s", version=1, created_at=1.0, last_used=1.0).data
    )  # empty data is the shared empty view, as the converter gives


def test_a_traceback_through_with_data_shows_its_source() -> None:
    import traceback

    state = SessionState(id="s", version=1, created_at=1.0, last_used=1.0)
    try:
        state.with_data({1: 2}.keys())  # type: ignore[arg-type]
    except TypeError:
        text = traceback.format_exc()
    else:
        raise AssertionError("with_data accepted keys that are no mapping")
    assert "triact generated SessionState.with_data" in text
    assert SessionState.with_data.__qualname__ == "SessionState.with_data"
    assert "attrs.evolve" in (SessionState.with_data.__doc__ or "")
