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
from typing import Any, Final

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


def value_problems(value: Any, path: str, *, max_nesting: int = MAX_NESTING) -> list[str]:
    """What keeps ``value`` (named ``path``) from being a JSON value a state may hold:
    finite numbers, integers within 64 bits, valid Unicode (no lone surrogates) in
    strings and keys, string keys, objects and arrays nested at most ``max_nesting``
    levels (``value`` itself is level 1). Empty if it may. Lists the first few."""
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
        if mapping:
            problems = value_problems(dict(mapping), name)
            if problems:
                raise SessionValueError(
                    f"session {new.id!r} may not hold this value, nothing was committed: "
                    + "; ".join(problems)
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
    return new
