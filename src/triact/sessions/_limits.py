"""What a session state may hold, checked before every commit: nothing is committed
that a store could not write and read back, and no state grows past its size limit.

The same value rules serve the MCP transport, which checks tool arguments with
:func:`value_problems` before they reach a session, so that a client is told which
field was wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import attrs
import orjson

from ._codec import encode_state_bytes
from ._errors import SessionDataError, SessionLimitError, SessionValueError
from ._shape import shape_problem
from ._state import SessionState, plain_dict

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


#: What a commit check learns of a state it accepts, for the next check to build on:
#: bounds of the state's JSON size and of its ``data``'s and ``metadata``'s JSON sizes
#: (as the codec writes plain JSON types), and how many values at the top level of
#: its ``data`` are lists, tuples or dicts if that data was made by ``with_data`` or
#: ``without_data`` (a private dict) and found plainly valid, else -1.
Sizes: TypeAlias = tuple[int, int, int, int]


def check_state(
    new: SessionState,
    previous: SessionState | None,
    max_state_bytes: int,
    known: Sizes | None = None,
    *,
    same_rest: bool = False,
    private: bool = False,
) -> Sizes | None:
    """Check that ``new`` may be committed (after ``previous``, or as a new session);
    else raise, and nothing may be committed.

    Raises :class:`SessionValueError` if ``data`` or ``metadata`` holds what
    :func:`value_problems` refuses, or anything else in the state cannot be written
    as JSON and read back; :class:`SessionLimitError` if its JSON is longer than
    ``max_state_bytes``. Mappings unchanged since ``previous`` are not walked again.

    ``known`` is what the check of ``previous`` returned, if the caller kept it: then a
    change of ``data``, ``metadata`` and the stamp only (the common change) is checked
    without encoding the state (see below). Returns what to give the check of the
    state after ``new`` (None: nothing is known, that check encodes in full).
    ``same_rest``: the caller knows that every field of ``new`` but ``data``,
    ``metadata`` and the stamp is the very object of ``previous``'s (``new`` is
    ``previous.with_data(...)``, stamped: see ``_state.MADE``); ``private``: and that
    ``new``'s data is a dict of its own, as ``with_data`` makes it (then what is
    returned says what :func:`check_with_data` needs to know of it).
    """
    if known is not None and previous is not None and (same_rest or _same_rest(new, previous)):
        bound, data_size, metadata_size, nested = known
        data, metadata = new.data, new.metadata
        if metadata is previous.metadata:  # the commonest change: data (and the stamp)
            if data is previous.data:
                new_data: int | None = data_size
            else:
                counted = _size_bound(data)
                if counted is None:
                    new_data = None
                else:
                    new_data, nested = counted
                    if not private:  # another's dict may be behind it
                        nested = -1
            if new_data is not None:
                size = bound - data_size + new_data + _STAMP_ROOM
                if size <= max_state_bytes:
                    return size, new_data, metadata_size, nested
        data_changed = data is not previous.data
        metadata_changed = metadata is not previous.metadata
        new_data = _bound_only(data) if data_changed else data_size
        new_metadata = _bound_only(metadata) if metadata_changed else metadata_size
        if new_data is not None and new_metadata is not None:  # both plainly valid
            rest = bound - data_size - metadata_size + _STAMP_ROOM
            if rest + new_data + new_metadata <= max_state_bytes:
                return rest + new_data + new_metadata, new_data, new_metadata, -1
            # Too loose to tell: measure the changed mappings exactly.
            new_data = _json_size(data) if data_changed else data_size
            new_metadata = _json_size(metadata) if metadata_changed else metadata_size
            if (
                new_data is not None
                and new_metadata is not None
                and rest + new_data + new_metadata <= max_state_bytes
            ):
                return rest + new_data + new_metadata, new_data, new_metadata, -1
    return _check_in_full(new, previous, max_state_bytes)


def _check_in_full(
    new: SessionState, previous: SessionState | None, max_state_bytes: int
) -> Sizes | None:
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
    problem = shape_problem(new, previous)
    if problem is not None:
        raise SessionValueError(
            f"session {new.id!r} may not hold this value, nothing was committed: {problem}"
        )
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
    data_size, metadata_size = _json_size(new.data), _json_size(new.metadata)
    if data_size is None or metadata_size is None:
        return None
    return size, data_size, metadata_size, -1


# Most changes replace only data (or metadata) and the stamp (version, last_used,
# metrics). For those the state need not be encoded again: every other field is the
# very object that was checked in the previous state, so the new state's size is
# bounded by the previous state's bound, less the bounds of the mappings replaced,
# plus the new mappings' bounds and room for the stamp's numbers to grow. The caller
# keeps the sizes of the state it last checked (a session's actor: its committed
# state's) and passes them back with it.
#
# A new mapping's bound is counted while its top level is walked for validity
# (_size_bound), without encoding it: strings and keys at 6 bytes a character (an
# escape such as \u001f is 6), numbers at their longest. It is loose, so the bound
# creeps up (and by _STAMP_ROOM a commit); once it would pass the limit, the changed
# mappings are encoded to measure them exactly, and if that is not enough either,
# the whole state is (which makes every figure exact again).
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
_dumps = orjson.dumps
_isfinite = math.isfinite


def _json_size(mapping: Any) -> int | None:
    """The JSON size of a mapping as the codec writes plain JSON types (None: it holds
    something else, which only a full encoding measures)."""
    if not mapping:
        return 2
    try:
        return len(_dumps(plain_dict(mapping), option=_PLAIN_ONLY))
    except orjson.JSONEncodeError:
        return None


#: Bounds of JSON scalars as orjson writes them: -9223372036854775808 (20 characters),
#: -2.2250738585072014e-308 (24), false, null.
_INT_BOUND, _FLOAT_BOUND, _BOOL_BOUND, _NULL_BOUND = 20, 24, 5, 4
#: The same with the 4 bytes of an entry's quotes, colon and comma: an entry
#: ``"key":value,`` is bounded by 6 bytes a character of its key and one of these.
_INT_ENTRY, _FLOAT_ENTRY, _BOOL_ENTRY, _NULL_ENTRY = (
    4 + _INT_BOUND,
    4 + _FLOAT_BOUND,
    4 + _BOOL_BOUND,
    4 + _NULL_BOUND,
)


def _size_bound(mapping: Any) -> tuple[int, int] | None:
    """A bound of the JSON size of a new ``data`` or ``metadata`` if it is plainly
    valid (as :func:`_plainly_valid` judges: its top level is walked here, values
    nested in it by that function and measured by encoding them), with the number of
    its values that are lists, tuples or dicts; else None, and the state is checked
    in full (which names the problems, or accepts a subclass that it can encode).

    The bound is 1 and a bound of ``"key":value,`` per entry (2 if it is empty):
    :func:`check_with_data` relies on that."""
    size = 1  # "{", then each "key":value and a "," or the closing "}"
    nested = 0
    for key, value in mapping.items():
        if type(key) is not str or not (key.isascii() or _string_problem(key) is None):
            return None
        kind = type(value)
        if kind is str:
            if not (value.isascii() or _string_problem(value) is None):
                return None
            size += 6 * (len(key) + len(value)) + 6
        elif kind is int:
            if not MIN_INT <= value <= MAX_INT:
                return None
            size += 6 * len(key) + 4 + _INT_BOUND
        elif kind is float:
            if not _isfinite(value):
                return None
            size += 6 * len(key) + 4 + _FLOAT_BOUND
        elif kind is dict or kind is list or kind is tuple:
            # At level 2 of the mapping: as if at level 1 with one level less.
            if not _plainly_valid(value, MAX_NESTING - 1):
                return None
            try:
                size += 6 * len(key) + 4 + len(_dumps(value, option=_PLAIN_ONLY))
            except orjson.JSONEncodeError:
                return None
            nested += 1
        elif value is None:
            size += 6 * len(key) + 4 + _NULL_BOUND
        elif kind is bool:
            size += 6 * len(key) + 4 + _BOOL_BOUND
        else:
            return None
    return (size, nested) if mapping else (2, 0)


def _bound_only(mapping: Any) -> int | None:
    counted = _size_bound(mapping)
    return None if counted is None else counted[0]


def check_with_data(
    new: SessionState,
    previous: SessionState,
    max_state_bytes: int,
    known: Sizes | None,
    entries: dict[str, Any] | None,
) -> Sizes | None:
    """:func:`check_state` of ``new``, made by ``previous.with_data(...)``, which set
    ``entries`` in its data (None: ``without_data`` removed keys), and stamped (see
    ``_state.MADE``): the same checks, the same refusals.

    Where ``previous``'s data was so made too, and checked, and holds only strings,
    numbers, booleans and nulls at its top level (``known[3] == 0``), only the entries
    set are walked: the others are ``previous``'s, checked, and immutable. (A list or
    dict left in place may have been changed in place since, by an update function
    that holds it: while one is there the whole data is walked, as before, as it is
    for a list or dict among the entries.) The data's bound is then ``previous``'s
    plus each entry's (as :func:`_size_bound` counts it): an entry replaced or
    removed only makes the JSON shorter. The bound creeps up faster so (a replaced
    entry is not taken off), until it would pass the limit: then the data is walked
    whole, which makes it a fresh bound (and, if that is not enough either, the state
    is measured exactly, as for any change)."""
    # (``not known[3]`` rather than ``known[3] == 0``: CPython does not specialise a
    # comparison followed by a jump as long as the one past the loop.)
    if known is not None and not known[3]:
        bound, size, metadata_size, _ = known
        for key, value in entries.items() if entries else ():
            if type(key) is not str or not (key.isascii() or _string_problem(key) is None):
                break
            kind = type(value)
            if kind is str:
                if not (value.isascii() or _string_problem(value) is None):
                    break
                size += 6 * (len(key) + len(value)) + 6
            elif kind is int:
                if not MIN_INT <= value <= MAX_INT:
                    break
                size += 6 * len(key) + _INT_ENTRY
            elif kind is float:
                if not _isfinite(value):
                    break
                size += 6 * len(key) + _FLOAT_ENTRY
            elif value is None:
                size += 6 * len(key) + _NULL_ENTRY
            elif kind is bool:
                size += 6 * len(key) + _BOOL_ENTRY
            else:  # a list or dict (walked with the rest), or not a JSON value
                break
        else:
            bound += size - known[1] + _STAMP_ROOM
            if bound <= max_state_bytes:
                return bound, size, metadata_size, 0
    return check_state(new, previous, max_state_bytes, known, same_rest=True, private=True)
