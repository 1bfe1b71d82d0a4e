"""The types of a state's fields, checked before a commit: an update function that
returns ``attrs.evolve(state, topic=5)`` or ``threads="abc"`` makes a state that
encodes (orjson writes the number, the string as an array of its characters) but
that no store could read back.

Only what changed since the committed state is walked: a field, a record or an
entry of a history that is the very object the committed state holds was checked
when that state was.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from operator import is_
from typing import Any, Literal

import attrs

from ._state import SessionState

# Fields that are not the update function's: the stamp (the actor's own values) and
# the free-form mappings (checked value by value, see _limits).
_NOT_CHECKED = frozenset({"version", "last_used", "metrics", "data", "metadata"})

# A check returns a problem, or None; it takes the value and its counterpart in the
# committed state (or None).
Check = Callable[[Any, Any, str], str | None]


def _named(kind: object) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _exact(*kinds: type) -> Check:
    def check(value: Any, _: Any, where: str) -> str | None:
        if isinstance(value, kinds) and not isinstance(value, bool):
            return None
        expected = " or ".join(kind.__name__ for kind in kinds)
        return f"{where}: expected {expected}, got {_named(type(value))}"

    return check


def _none(value: Any, _: Any, where: str) -> str | None:
    return None if value is None else f"{where}: expected None, got {_named(type(value))}"


def _either(options: list[Check], kind: object) -> Check:
    def check(value: Any, previous: Any, where: str) -> str | None:
        for option in options:
            if option(value, previous, where) is None:
                return None
        return f"{where}: expected {_named(kind)}, got {_named(type(value))}"

    return check


def _optional(check_value: Check) -> Check:
    def check(value: Any, previous: Any, where: str) -> str | None:
        return None if value is None else check_value(value, previous, where)

    return check


def _literal(allowed: tuple[Any, ...]) -> Check:
    def check(value: Any, _: Any, where: str) -> str | None:
        if type(value) is str and value in allowed:
            return None
        return f"{where}: expected one of {', '.join(map(repr, allowed))}, got {value!r:.40}"

    return check


def _strings(value: Any, _: Any, where: str) -> str | None:
    if not isinstance(value, Mapping):
        return f"{where}: expected a mapping of strings, got {_named(type(value))}"
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            return (
                f"{where}: expected a mapping of strings, holds {key!r:.40}: {_named(type(item))}"
            )
    return None


def _history(item: Check) -> Check:
    def check(value: Any, previous: Any, where: str) -> str | None:
        if type(value) is not tuple:
            return f"{where}: expected a tuple, got {_named(type(value))}"
        if not value:
            return None
        # Line the history up with the committed one: the same (entries added or
        # changed), or one entry further (the oldest dropped as one was added).
        before: tuple[Any, ...] = previous if type(previous) is tuple else ()
        shift = 1 if len(before) > 1 and value[0] is before[1] else 0
        same = min(len(value), len(before) - shift)
        start = same if same > 0 and all(map(is_, value[:same], before[shift:])) else 0
        for index in range(start, len(value)):
            entry = value[index]
            counterpart = before[index + shift] if index + shift < len(before) else None
            if entry is not counterpart:
                problem = item(entry, counterpart, f"{where}[{index}]")
                if problem is not None:
                    return problem
        return None

    return check


def _record(cls: type) -> Check:
    fields: list[tuple[str, Check]] = []

    def check(value: Any, previous: Any, where: str) -> str | None:
        if not isinstance(value, cls):
            return f"{where}: expected {cls.__name__}, got {_named(type(value))}"
        if not isinstance(previous, cls):
            previous = None
        for name, field_check in fields:
            field = getattr(value, name)
            counterpart = getattr(previous, name) if previous is not None else None
            if previous is None or field is not counterpart:
                problem = field_check(field, counterpart, f"{where}.{name}")
                if problem is not None:
                    return problem
        return None

    hints = typing.get_type_hints(cls)
    fields.extend(
        (field.name, _check_of(hints[field.name]))
        for field in attrs.fields(cls)
        if cls is not SessionState or field.name not in _NOT_CHECKED
    )
    return check


def _check_of(kind: Any) -> Check:
    origin = typing.get_origin(kind)
    if kind is str:
        return _exact(str)
    if kind is int:
        return _exact(int)
    if kind is float:
        return _exact(float, int)
    if kind is type(None):
        return _none
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return _optional(_check_of(others[0]))
        return _either([_check_of(arg) for arg in args], kind)
    if origin is Literal:
        return _literal(typing.get_args(kind))
    if origin is tuple:
        return _history(_check_of(typing.get_args(kind)[0]))
    if origin is Mapping and typing.get_args(kind) == (str, str):
        return _strings
    if attrs.has(kind):
        return _record(kind)
    raise TypeError(f"no check for {kind!r}")  # a new field's type: add one here


_check_state = _record(SessionState)


def shape_problem(new: SessionState, previous: SessionState | None) -> str | None:
    """What is of the wrong type in ``new`` (walking only what differs from
    ``previous``), as ``state.threads[2].name: expected str, got int``; or None."""
    return _check_state(new, previous, "state")
