"""What a session state may hold, checked before every commit: nothing is committed
that a store could not write and read back, and no state grows past its size limit.

The same value rules serve the MCP transport, which checks tool arguments with
:func:`value_problems` before they reach a session, so that a client is told which
field was wrong.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any, Final

import attrs
import orjson

from ._codec import encode_state_bytes
from ._errors import SessionDataError, SessionLimitError, SessionValueError
from ._state import SessionState

#: Deepest nesting of objects and arrays in ``data`` or ``metadata`` (the object itself
#: is level 1). Deeper values cost recursion in every encoder and decoder on their way.
MAX_NESTING: Final = 100
#: Integers a state may hold: signed 64 bits, what SQLite, orjson and most JSON peers
#: keep exactly.
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1
#: Default bound of one state's encoded JSON (``SessionConfig.max_state_bytes``).
DEFAULT_MAX_STATE_BYTES: Final = 1024 * 1024
#: Problems reported at most per value: enough to fix them, small enough to read.
_PROBLEMS_SHOWN = 5


def _where(path: tuple[Any, ...]) -> str:
    """``("data", "a", 3)`` as ``data.a[3]``; keys that are not plain names quoted."""
    parts = [str(path[0])]
    for key in path[1:]:
        if type(key) is int:
            parts.append(f"[{key}]")
        elif key.isidentifier() and key.isascii():
            parts.append(f".{key}")
        else:  # ASCII JSON: a lone surrogate in a key stays printable
            parts.append(f"[{json.dumps(key)}]")
    return "".join(parts)


def _string_problem(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"holds a lone surrogate (U+{ord(text[exc.start]):04X}) at index {exc.start}, "
            "which is not valid Unicode"
        )
    return None


def _scalar_problem(value: Any) -> str | None:
    kind = type(value)
    if kind is str or isinstance(value, str):
        return _string_problem(value)
    if value is None or kind is bool:
        return None
    if kind is int or isinstance(value, int):
        if MIN_INT <= value <= MAX_INT:
            return None
        return f"integer out of range: must fit in 64 bits (-2**63 to 2**63-1), got {_short(value)}"
    if kind is float or isinstance(value, float):
        if math.isfinite(value):
            return None
        return (
            f"number must be finite, got {value} (JSON numbers too large for a float "
            "are read as infinity)"
        )
    return f"expected a JSON value, got {type(value).__name__}"


def _short(value: int) -> str:
    digits = abs(value).bit_length() * 30103 // 100000 + 1  # about log10(2) per bit
    return f"an integer of about {digits} digits"


def _walk(value: Any, path: tuple[Any, ...], max_nesting: int) -> Iterator[str]:
    """Each problem of ``value`` as ``"<path>: <what>"``, depth first, without
    recursion (a value nested a million levels deep is refused, not a crash)."""
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(value, path, 0)]
    while stack:
        item, where, level = stack.pop()
        if isinstance(item, dict | list | tuple):
            if level + 1 > max_nesting:
                yield f"{_where(where)}: nested deeper than {max_nesting} levels"
                continue
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        yield f"{_where(where)}: keys must be strings, got {type(key).__name__}"
                        continue
                    problem = _string_problem(key)
                    if problem is not None:
                        yield f"{_where((*where, key))}: the key {problem}"
                        continue
                    children.append((child, (*where, key), level + 1))
            else:
                children = [(child, (*where, i), level + 1) for i, child in enumerate(item)]
            stack.extend(reversed(children))
            continue
        problem = _scalar_problem(item)
        if problem is not None:
            yield f"{_where(where)}: {problem}"


def _plainly_valid(value: Any, max_nesting: int) -> bool:
    """True if ``value`` is valid and made of the exact JSON types only: the common
    case, checked without building paths (every commit that changes data pays it).
    False means: walk it (a problem, or a subclass that the walk judges)."""
    isfinite = math.isfinite
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        kind = type(item)
        if kind is dict or kind is MappingProxyType:  # a state's own mappings are proxies
            for key in item:
                if type(key) is not str or not (key.isascii() or _string_problem(key) is None):
                    return False
            children: Any = item.values()
        elif kind is list or kind is tuple:
            children = item
        else:
            return False
        if level > max_nesting:
            return False
        for child in children:
            kind = type(child)
            if kind is str:
                if not (child.isascii() or _string_problem(child) is None):
                    return False
            elif kind is int:
                if not MIN_INT <= child <= MAX_INT:
                    return False
            elif kind is float:
                if not isfinite(child):
                    return False
            elif kind is dict or kind is list or kind is tuple:
                stack.append((child, level + 1))
            elif child is not None and kind is not bool:
                return False
    return True


def value_problems(value: Any, path: str, *, max_nesting: int = MAX_NESTING) -> list[str]:
    """What keeps ``value`` (named ``path``) from being a JSON value a state may hold:
    finite numbers, integers within 64 bits, valid Unicode (no lone surrogates) in
    strings and keys, string keys, objects and arrays nested at most ``max_nesting``
    levels (``value`` itself is level 1). Empty if it may. Lists the first few."""
    if _plainly_valid(value, max_nesting):
        return []
    problems = []
    for problem in _walk(value, (path,), max_nesting):
        problems.append(problem)
        if len(problems) == _PROBLEMS_SHOWN:
            break
    return problems


def check_state(
    new: SessionState, previous: SessionState | None, max_state_bytes: int
) -> SessionState:
    """``new``, if it may be committed (after ``previous``, or as a new session);
    else raise, and nothing may be committed.

    Raises :class:`SessionValueError` if ``data`` or ``metadata`` holds what
    :func:`value_problems` refuses, or anything else in the state cannot be written
    as JSON and read back; :class:`SessionLimitError` if its JSON is longer than
    ``max_state_bytes``. Mappings unchanged since ``previous`` are not walked again.
    """
    for name in ("data", "metadata"):
        mapping = getattr(new, name)
        if previous is not None and mapping is getattr(previous, name):
            continue
        if mapping and not _plainly_valid(mapping, MAX_NESTING):
            problems = value_problems(dict(mapping), name)
            if problems:
                raise SessionValueError(
                    f"session {new.id!r} may not hold this value, nothing was committed: "
                    + "; ".join(problems)
                )
    bound = _bound_after(previous, new)
    if bound is not None and bound[0] <= max_state_bytes:
        _remember(new, bound)
        return new
    try:
        size = len(encode_state_bytes(new))
    except SessionDataError as exc:  # a field other than data or metadata
        raise SessionValueError(f"{exc}; nothing was committed") from exc
    if size > max_state_bytes:
        raise SessionLimitError(
            f"session {new.id!r} would take {size} bytes of JSON, more than its limit of "
            f"{max_state_bytes} (max_state_bytes); nothing was committed. Keep less in "
            "the session (large values belong in files it names)"
        )
    _remember(new, (size, _json_size(new.data), _json_size(new.metadata)))
    return new


# Most changes replace only data (or metadata) and the stamp (version, last_used,
# metrics). For those the state need not be encoded again: every other field is the
# very object that was checked in the previous state, and the size is bounded by the
# previous state's bound, changed by the free-form parts' difference, plus room for the
# stamp's numbers to grow. Each checked state's size bound and parts' sizes are kept
# while the state lives, by identity (states cannot carry it: they are frozen values).
_STAMP_ROOM = 256  # what version, last_used and the metrics may add as JSON: far less
_STAMP_AND_FREE_FORM = ("data", "metadata", "version", "last_used", "metrics")


def _make_same_rest() -> Any:
    """Build ``same_rest(a, b)``: whether every field of two states but the stamp and
    the free-form parts is the same object (spelled out: a third of the cost of a loop)."""
    names = [f.name for f in attrs.fields(SessionState) if f.name not in _STAMP_AND_FREE_FORM]
    body = " and ".join(f"a.{name} is b.{name}" for name in names)
    namespace: dict[str, Any] = {}
    exec(f"def same_rest(a, b):\n    return {body}\n", namespace)
    return namespace["same_rest"]


_same_rest = _make_same_rest()
_PLAIN_ONLY = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
#: id(state) -> (the state, weakly; its size bound; its data's and metadata's sizes)
_bounds: dict[int, tuple[weakref.ref[SessionState], int, int, int]] = {}


def _json_size(mapping: Any) -> int | None:
    try:  # as the codec writes plain JSON types; anything else is encoded in full
        return len(orjson.dumps(dict(mapping), option=_PLAIN_ONLY))
    except orjson.JSONEncodeError:
        return None


def _bound_after(
    previous: SessionState | None, new: SessionState
) -> tuple[int, int | None, int | None] | None:
    """An upper bound of ``new``'s size, with its data's and metadata's sizes, if it
    differs from ``previous`` (which was checked) in data, metadata and the stamp only."""
    if previous is None:
        return None
    known = _bounds.get(id(previous))
    if known is None or known[0]() is not previous:
        return None
    if not _same_rest(new, previous):
        return None
    _, bound, data_size, metadata_size = known
    new_data = data_size if new.data is previous.data else _json_size(new.data)
    new_metadata = metadata_size if new.metadata is previous.metadata else _json_size(new.metadata)
    if new_data is None or new_metadata is None:
        return None
    grown = new_data - data_size + new_metadata - metadata_size
    return bound + grown + _STAMP_ROOM, new_data, new_metadata


def _remember(state: SessionState, bound: tuple[int, int | None, int | None]) -> None:
    size, data_size, metadata_size = bound
    if data_size is None or metadata_size is None:
        return
    key = id(state)
    ref = weakref.ref(state, lambda _: _bounds.pop(key, None))
    _bounds[key] = (ref, size, data_size, metadata_size)
