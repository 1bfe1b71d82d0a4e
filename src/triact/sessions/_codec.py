"""SessionState to JSON and back, through one configured cattrs converter.

Encoding is on the path of every durable commit, so it has a fast lane: cattrs
unstructures into orjson (fragments for the free-form ``data`` and ``metadata``),
about twice as fast as the standard library's json. Anything orjson would write
differently from ``json.dumps`` (a NaN, which it writes as null; a subclass; a
datetime) goes the standard library's way, so both lanes store the same text or
refuse the same states.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, get_args, get_origin

import cattrs
import orjson
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from ._errors import SessionDataError
from ._state import SessionState, plain_dict

#: Bumped whenever the stored shape changes; records from a newer schema are refused.
SCHEMA_VERSION = 1

converter = make_converter(forbid_extra_keys=True)


def _exactly(*kinds: type) -> Any:
    """A structure hook that accepts only values of ``kinds`` (no coercion: cattrs
    would otherwise turn 5 into "5" and "1.5" into 1.5)."""

    def structure(value: Any, wanted: type) -> Any:
        if type(value) not in kinds:
            raise TypeError(f"expected {wanted.__name__}, got {type(value).__name__} {value!r}")
        return wanted(value)

    return structure


def _json_array_as_tuple(wanted: Any) -> Any:
    """A structure hook for ``tuple[X, ...]`` that accepts only a JSON array (cattrs
    would take any iterable: a string, or an object's keys), keeping cattrs' error
    paths (``state.threads[0].created_at``)."""
    (item_type, _) = get_args(wanted)

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise TypeError(f"expected a JSON array, got {type(value).__name__}")
        item = converter.get_structure_hook(item_type)
        items, errors = [], []
        for index, element in enumerate(value):
            try:
                items.append(item(element, item_type))
            except Exception as exc:  # collected and raised together, as cattrs does
                exc.add_note(
                    IterableValidationNote(
                        f"Structuring {wanted} @ index {index}", index, item_type
                    )
                )
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {wanted!r}", errors, wanted)
        return tuple(items)

    return structure


def _is_variadic_tuple(wanted: Any) -> bool:
    return get_origin(wanted) is tuple and get_args(wanted)[1:] == (...,)


converter.register_structure_hook_factory(_is_variadic_tuple, _json_array_as_tuple)
converter.register_structure_hook(str, _exactly(str))
converter.register_structure_hook(int, _exactly(int))
converter.register_structure_hook(float, _exactly(float, int))
converter.register_structure_hook(bool, _exactly(bool))


def _is_free_form(wanted: Any) -> bool:
    return bool(wanted == Mapping[str, Any])  # ``data`` and ``metadata``


def _as_they_are(value: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` and ``metadata`` hold JSON values, written as they are: a value that is
    not one (a datetime, a set) is refused when encoded, not turned into something
    that would not decode to it."""
    return plain_dict(value)


converter.register_unstructure_hook_func(_is_free_form, _as_they_are)
# An unowned session's record has no "principal" key: the same record as before
# sessions had owners, which every triact reads.
converter.register_unstructure_hook(
    SessionState,
    make_dict_unstructure_fn(SessionState, converter, principal=override(omit_if_default=True)),
)


def unstructure_state(state: SessionState) -> dict[str, Any]:
    """The state as plain JSON-ready data, with its schema version."""
    return {"schema": SCHEMA_VERSION, "state": converter.unstructure(state)}


_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# Types orjson would write although json refuses them, or write otherwise, go to
# _not_plain instead, which sends the whole value to json.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_ORJSON_OPTIONS |= orjson.OPT_PASSTHROUGH_SUBCLASS


class _NotPlain(Exception):
    """Raised out of orjson when a value is not plain JSON data: json decides."""


def _not_plain(value: Any) -> Any:
    raise _NotPlain


def _finite(value: float) -> float:
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int past the largest float: no store reads it back as one
        finite = False
    if not finite:
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r:.40}")
    return value


_EMPTY_OBJECT = orjson.Fragment(b"{}")


def _free_form(value: Mapping[str, Any]) -> orjson.Fragment:
    """``data`` or ``metadata`` as a JSON fragment, the text json would give."""
    if not value:
        return _EMPTY_OBJECT
    plain = plain_dict(value)
    try:
        text = orjson.dumps(plain, default=_not_plain, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, _NotPlain):  # a big int, a subclass, a str key...
        return orjson.Fragment(_json_encoder.encode(plain))
    if b"null" in text:  # orjson writes NaN and infinities as null: json refuses them
        _json_encoder.encode(plain)
    return orjson.Fragment(text)


_fast = converter.copy()
_fast.register_unstructure_hook(float, _finite)
_fast.register_unstructure_hook_func(_is_free_form, _free_form)
_unstructure_part = _fast.unstructure


def _parts(values: tuple[Any, ...]) -> list[Any]:
    return [_unstructure_part(value) for value in values] if values else []


def _fast_record(state: SessionState) -> dict[str, Any]:
    """``_fast.unstructure(state)``, spelled out for the fields every commit writes
    (twice as fast); the parts go through cattrs. A test holds it to cattrs' output."""
    metrics = state.metrics
    binding = state.client_binding
    record = {
        "id": state.id,
        "version": state.version,
        "created_at": _finite(state.created_at),
        "last_used": _finite(state.last_used),
        "topic": state.topic,
        "working_directory": state.working_directory,
        "config_path": state.config_path,
        "project_id": state.project_id,
        "threads": _parts(state.threads),
        "analyses": _parts(state.analyses),
        "data": _free_form(state.data),
        "metrics": {
            "operations": metrics.operations,
            "errors": metrics.errors,
            "total_latency": _finite(metrics.total_latency),
            "max_latency": _finite(metrics.max_latency),
        },
        "client_binding": None if binding is None else _unstructure_part(binding),
        "security_events": _parts(state.security_events),
        "active_requests": _parts(state.active_requests),
        "completed_requests": _parts(state.completed_requests),
        "request_counter": state.request_counter,
        "metadata": _free_form(state.metadata),
    }
    if state.principal is not None:  # omitted when None, as the converter does
        record["principal"] = state.principal
    return record


def encode_state_bytes(state: SessionState) -> bytes:
    """:func:`encode_state` as UTF-8 bytes."""
    try:
        try:
            record = {"schema": SCHEMA_VERSION, "state": _fast_record(state)}
            return orjson.dumps(record, default=_not_plain, option=_ORJSON_OPTIONS)
        except (orjson.JSONEncodeError, _NotPlain):  # a typed field holds a surprise
            # UnicodeEncodeError (a ValueError) for a lone surrogate: text that no
            # store could keep as UTF-8, refused here rather than in the store's batch.
            return _json_encoder.encode(unstructure_state(state)).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise SessionDataError(
            f"session {state.id!r} cannot be stored as JSON: {_reason(exc)}"
        ) from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return f"a string holds a lone surrogate (U+{ord(exc.object[exc.start]):04X})"
    return str(exc)


def encode_state(state: SessionState) -> str:
    """The state as compact JSON text; SessionDataError if it holds a value JSON cannot
    carry (an object or a datetime in ``data``, a NaN) or a string that is not valid
    Unicode (a lone surrogate)."""
    return encode_state_bytes(state).decode()


def structure_state(record: Any, *, where: str = "session record") -> SessionState:
    """Rebuild a state from :func:`unstructure_state` output; SessionDataError if bad."""
    if not isinstance(record, dict) or "schema" not in record or "state" not in record:
        raise SessionDataError(f"{where} is not a triact session record")
    schema = record["schema"]
    if type(schema) is not int or schema < 1:
        raise SessionDataError(f"{where} has an invalid schema version {schema!r}")
    if schema > SCHEMA_VERSION:
        raise SessionDataError(
            f"{where} was written with schema version {schema}, newer than this "
            f"triact understands ({SCHEMA_VERSION}); upgrade triact to read it"
        )
    if not isinstance(record["state"], dict):
        raise SessionDataError(f"{where} is malformed: state is not a JSON object")
    try:
        return converter.structure(record["state"], SessionState)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        problems = (
            "; ".join(cattrs.transform_error(exc, path="state"))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise SessionDataError(f"{where} is malformed: {problems}") from exc


def decode_state(text: str | bytes, *, where: str = "session record") -> SessionState:
    """Parse :func:`encode_state` output; SessionDataError if it is not valid."""
    try:
        record = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        raise SessionDataError(f"{where} is not valid JSON: {exc}") from exc
    return structure_state(record, where=where)
