"""The direct path of tool arguments (``_args.direct_structurer``) builds what cattrs
builds, and leaves to cattrs every argument object it would refuse."""

from __future__ import annotations

from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from triact.transport._args import (
    ArgumentError,
    UpdateArgs,
    converter,
    direct_structurer,
    structure_arguments,
)
from triact.transport._session_tools import SESSION_TOOLS
from triact.work._tools import _TOOLS as WORK_TOOLS

CLASSES = sorted(
    {tool.arguments for tool in (*SESSION_TOOLS, *WORK_TOOLS)}, key=lambda cls: cls.__qualname__
)

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _arguments(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = [field.name for field in attrs.fields(cls)]
    keys = st.sampled_from([*names, "unknown"]) if names else st.just("unknown")
    numbers = st.dictionaries(st.text(max_size=3), st.integers() | st.floats(), max_size=3)
    strings = st.lists(st.text(max_size=3), max_size=3)
    return st.dictionaries(keys, _values | numbers | strings, max_size=len(names) + 1)


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
