"""The direct path of tool arguments (``_args.direct_structurer``) builds what cattrs
builds, and leaves to cattrs every argument object it would refuse."""

from __future__ import annotations

from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from triact import value_problems
from triact._writable import writable_twin
from triact.transport._args import (
    ArgumentError,
    UpdateArgs,
    _structure,
    converter,
    direct_structurer,
    structure_arguments,
)
from triact.transport._schema import constraint_problems
from triact.transport._session_tools import SESSION_TOOLS
from triact.work._tools import _TOOLS as WORK_TOOLS

CLASSES = sorted(
    {tool.arguments for tool in (*SESSION_TOOLS, *WORK_TOOLS)}, key=lambda cls: cls.__qualname__
)

# Text with lone surrogates and beyond ASCII too; integers past 64 bits; NaN, infinities.
_text = st.text(st.characters(codec=None, categories=None), max_size=4)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)


def _arguments(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = [field.name for field in attrs.fields(cls)]
    keys = st.sampled_from([*names, "unknown"]) if names else st.just("unknown")
    numbers = st.dictionaries(_text, st.integers() | st.floats(), max_size=3)
    strings = st.lists(_text, max_size=3)
    return st.dictionaries(keys, _values | numbers | strings, max_size=len(names) + 1)


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def _by_cattrs(arguments: dict[str, Any], cls: type[Any]) -> Any:
    try:
        return converter.structure(arguments, cls)
    except cattrs.BaseValidationError:
        return None


def _same(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs)
    for field in attrs.fields(type(ours)):
        mine, cattrs_value = getattr(ours, field.name), getattr(theirs, field.name)
        assert type(mine) is type(cattrs_value), field.name
        assert repr(mine) == repr(cattrs_value), field.name  # NaN equals itself, 1 != 1.0


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_direct_path_builds_what_cattrs_builds(cls: type[Any], data: st.DataObject) -> None:
    direct = direct_structurer(cls)
    if direct is None:  # a field type the direct path does not know: cattrs does it all
        return
    arguments = data.draw(_arguments(cls))
    ours, theirs = direct(arguments), _by_cattrs(arguments, cls)
    if theirs is None:
        assert ours is None  # refused by cattrs, so left to it for the error message
    elif ours is not None:
        _same(ours, theirs)


def _the_full_way(arguments: dict[str, Any], cls: type[Any]) -> Any:
    """What structure_arguments did before the direct path took value and constraint
    checks: an instance, or the ArgumentError's problems."""
    problems = value_problems(arguments, "arguments")
    if problems:
        return problems
    try:
        instance = _structure("tool", arguments, cls)
    except ArgumentError as exc:
        return exc.problems
    return constraint_problems(instance, "arguments") or instance


def _outcome(arguments: dict[str, Any], cls: type[Any]) -> Any:
    """structure_arguments's instance, or its ArgumentError's problems."""
    try:
        return structure_arguments("tool", arguments, cls)
    except ArgumentError as exc:
        return exc.problems


def _same_outcome(ours: Any, expected: Any) -> None:
    if isinstance(expected, list):
        assert ours == expected
        assert expected  # a refusal names its problems
    else:
        _same(ours, expected)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_arguments_are_taken_or_refused_as_the_full_way_does(
    cls: type[Any], data: st.DataObject
) -> None:
    arguments = data.draw(_arguments(cls))
    _same_outcome(_outcome(arguments, cls), _the_full_way(arguments, cls))


@pytest.mark.parametrize(
    "arguments",
    [
        {"session_id": ""},  # minLength
        {"session_id": "s", "expected_version": 0},  # minimum
        {"session_id": "s", "increment": {"n": 2**63}},  # past 64 bits
        {"session_id": "s", "increment": {"n": float("inf")}},
        {"session_id": "s", "set": {"k": float("nan")}},
        {"session_id": "s", "set": {"k": "\ud800"}},  # a lone surrogate
        {"session_id": "s\ud800"},
        {"session_id": "s", "delete": ["\udfff"]},
        {"session_id": "s", "increment": {"\ud800": 1}},
        {"session_id": "s", "set": {"deep": _nested(99)}},  # arguments, set, deep: 101 levels
        {"session_id": "s", "set": {"deep": _nested(98)}},  # 100: accepted
        {"session_id": "s", "set": {"n": 2**60, "x": "\u00e9"}},  # fine, not plainly
    ],
)
def test_values_at_the_limits_are_taken_or_refused_as_the_full_way_does(
    arguments: dict[str, Any],
) -> None:
    _same_outcome(_outcome(arguments, UpdateArgs), _the_full_way(arguments, UpdateArgs))


def test_direct_path_takes_a_typical_update_and_copies_objects_as_cattrs_does() -> None:
    direct = direct_structurer(UpdateArgs)
    assert direct is not None
    increment = {"n": 1}
    arguments = {"session_id": "s", "increment": increment, "delete": ["x"]}
    made = direct(arguments)
    assert made == converter.structure(arguments, UpdateArgs)
    assert made.increment is not increment


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"session_id": "s", "increment": {"n": "1"}}, "increment"),
        ({"session_id": "s", "increment": {"n": True}}, "increment"),
        ({"session_id": 3}, "session_id"),
        ({"session_id": "s", "bogus": 1}, "bogus"),
        ({"session_id": "s", "expected_version": 0}, "expected_version"),
        ({"session_id": "s", "expected_version": 1.0}, "expected_version"),
        ({"session_id": "s", "delete": "x"}, "delete"),
    ],
)
def test_arguments_the_direct_path_refuses_get_cattrs_errors(
    arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ArgumentError) as caught:
        structure_arguments("session_update", arguments, UpdateArgs)
    assert problem in str(caught.value)


@attrs.frozen(kw_only=True)
class _Defaulted:
    name: str
    tags: list[str] | None = attrs.field(factory=lambda: ["made by the factory"])


@attrs.frozen(kw_only=True)
class _Checked:
    name: str = attrs.field(validator=attrs.validators.max_len(3))


@attrs.frozen(kw_only=True)
class _PostInit:
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.name == "refused":
            raise ValueError("refused")


@pytest.mark.parametrize(
    ("cls", "arguments"),
    [
        (UpdateArgs, {"session_id": "s", "increment": {"n": 1}}),  # made without __init__
        (UpdateArgs, {}),  # every field its default
        (_Defaulted, {"name": "x"}),  # a factory's default: called
        (_Defaulted, {"name": "x", "tags": ["a"]}),
        (_Checked, {"name": "abc"}),  # a validator: called
        (_PostInit, {"name": "kept"}),  # __attrs_post_init__: called
    ],
)
def test_direct_path_makes_the_instance_its_init_would(
    cls: type[Any], arguments: dict[str, Any]
) -> None:
    direct = direct_structurer(cls)
    assert direct is not None
    made = direct(arguments)
    assert made == cls(**arguments)
    _same(made, cls(**arguments))


def test_an_instance_made_through_its_writable_twin_is_the_frozen_class_itself() -> None:
    direct = direct_structurer(UpdateArgs)
    assert direct is not None
    made = direct({"session_id": "s", "increment": {"n": 1}})
    called = UpdateArgs(session_id="s", increment={"n": 1})
    assert type(made) is UpdateArgs
    assert made == called
    assert repr(made) == repr(called)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.session_id = "other"  # type: ignore[misc]
    assert made.session_id == "s"
    # One twin per class, never seen outside: a subclass of it that adds no slot.
    twin = writable_twin(UpdateArgs)
    assert twin is writable_twin(UpdateArgs)
    assert issubclass(twin, UpdateArgs)
    assert twin.__slots__ == ()


@pytest.mark.parametrize(
    ("cls", "arguments", "error"),
    [(_Checked, {"name": "abcd"}, ValueError), (_PostInit, {"name": "refused"}, ValueError)],
)
def test_direct_path_runs_the_checks_of_init(
    cls: type[Any], arguments: dict[str, Any], error: type[Exception]
) -> None:
    direct = direct_structurer(cls)
    assert direct is not None
    with pytest.raises(error):
        direct(arguments)
