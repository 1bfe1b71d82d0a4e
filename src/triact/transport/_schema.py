"""JSON Schemas (2020-12) derived from attrs classes, so a tool's schemas and the
classes its arguments are structured into cannot disagree.

A field is described by a :class:`Spec` in its ``Annotated`` type (a description and
extra keywords such as ``minimum`` or ``minLength``, which :func:`constraint_problems`
also enforces), or by ``description`` in its attrs ``metadata``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Literal

import attrs

_SIMPLE: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class Spec:
    """``Annotated`` metadata of a field: its description and JSON Schema keywords."""

    __slots__ = ("description", "keywords")

    def __init__(self, description: str, **keywords: Any) -> None:
        self.description = description
        self.keywords = keywords


@cache
def _fields(cls: type) -> list[tuple[attrs.Attribute[Any], Any, Spec | None]]:
    """Each field of ``cls`` with its plain type and its Spec, if any."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for field in attrs.fields(cls):
        tp, spec = hints[field.name], None
        if typing.get_origin(tp) is typing.Annotated:
            spec = next((m for m in tp.__metadata__ if isinstance(m, Spec)), None)
            tp = typing.get_args(tp)[0]
        out.append((field, tp, spec))
    return out


def type_schema(tp: Any, *, closed: bool) -> dict[str, Any]:
    """The schema of one Python type; ``closed`` forbids unknown object keys."""
    if tp is Any:
        return {}
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    if tp is type(None):
        return {"type": "null"}
    if attrs.has(tp):
        return object_schema(tp, closed=closed, all_required=not closed)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (types.UnionType, typing.Union):
        members = [type_schema(arg, closed=closed) for arg in args]
        kinds = [m.get("type") for m in members]
        if all(
            isinstance(kind, str) and len(m) == 1 for kind, m in zip(kinds, members, strict=True)
        ):
            return {"type": kinds}
        return {"anyOf": members}
    if origin in (dict, Mapping):
        value = type_schema(args[1], closed=closed) if args else {}
        return {"type": "object", "additionalProperties": value} if value else {"type": "object"}
    if origin in (list, tuple, Sequence):
        return {"type": "array", "items": type_schema(args[0], closed=closed)} if args else {}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its null alternative."""
    kinds = schema.get("type")
    if isinstance(kinds, list) and "null" in kinds:
        kinds = [kind for kind in kinds if kind != "null"]
        schema = {**schema, "type": kinds[0] if len(kinds) == 1 else kinds}
    members = schema.get("anyOf")
    if members is not None:
        members = [member for member in members if member != {"type": "null"}]
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        schema = {**members[0], **rest} if len(members) == 1 else {**rest, "anyOf": members}
    return schema


def object_schema(cls: type, *, closed: bool, all_required: bool) -> dict[str, Any]:
    """The schema of an attrs class: its fields in order; required are those without a
    default (or all of them, for results)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field, tp, spec in _fields(cls):
        schema = type_schema(tp, closed=closed)
        description = field.metadata.get("description")
        if spec is not None:
            schema.update(spec.keywords)
            description = spec.description
        if closed and field.default is not attrs.NOTHING:
            # Optional means "may be left out", not "may be null": form-based clients
            # (the MCP Inspector) fill "object or null" fields in as strings. null is
            # still accepted, as leaving the field out.
            schema = _not_null(schema)
            if field.default is not None:
                schema["default"] = field.default
        if description is not None:
            schema = {"description": description, **schema}
        properties[field.name] = schema
        if all_required or field.default is attrs.NOTHING:
            required.append(field.name)
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if closed:
        result["additionalProperties"] = False
    return result


@cache
def constrained_fields(cls: type) -> list[tuple[str, dict[str, Any]]]:
    """The fields of ``cls`` with Spec keywords, and those keywords."""
    return [
        (field.name, spec.keywords) for field, _, spec in _fields(cls) if spec and spec.keywords
    ]


def constraint_problems(instance: Any, path: str) -> list[str]:
    """Problems with the Spec keywords of an attrs instance's fields."""
    problems = []
    cls: type = type(instance)
    for name, keywords in constrained_fields(cls):
        value = getattr(instance, name)
        if value is None:
            continue
        where = f"{path}.{name}"
        if "minimum" in keywords and value < keywords["minimum"]:
            problems.append(f"{where}: must be >= {keywords['minimum']}, got {value!r}")
        if "maximum" in keywords and value > keywords["maximum"]:
            problems.append(f"{where}: must be <= {keywords['maximum']}, got {value!r}")
        if "minLength" in keywords and len(value) < keywords["minLength"]:
            problems.append(f"{where}: must have at least {keywords['minLength']} character(s)")
        if "maxLength" in keywords and len(value) > keywords["maxLength"]:
            problems.append(f"{where}: must have at most {keywords['maxLength']} characters")
        if "maxItems" in keywords and len(value) > keywords["maxItems"]:
            problems.append(f"{where}: must have at most {keywords['maxItems']} items")
    return problems
