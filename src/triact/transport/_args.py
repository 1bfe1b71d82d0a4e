"""Tool arguments: one attrs class per tool, structured from JSON by one cattrs converter
that coerces nothing and names the field path of every problem."""

from __future__ import annotations

import linecache
import math
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.preconf.json import make_converter

from .._writable import writable_twin
from ..sessions import MAX_NESTING, value_problems
from ._jsonrpc import TransportError
from ._schema import Spec, constrained_fields, constraint_problems

converter = make_converter(forbid_extra_keys=True)

_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in (
        (bool, "a boolean"),
        (str, "a string"),
        (int, "an integer"),
        (float, "a number"),
        (dict, "an object"),
        (list, "an array"),
    ):
        if type(value) is kind:
            return name
    return type(value).__name__


def _exactly(*kinds: type) -> Any:
    def structure(value: Any, wanted: type) -> Any:
        if type(value) not in kinds:
            raise TypeError(f"expected {_JSON_NAMES[wanted]}, got {_type_name(value)}")
        return value  # an int stays an int where a number is wanted

    return structure


converter.register_structure_hook(str, _exactly(str))
converter.register_structure_hook(int, _exactly(int))
converter.register_structure_hook(float, _exactly(float, int))
converter.register_structure_hook(bool, _exactly(bool))


def _structure_str_list(value: Any, _: Any) -> list[str]:
    # cattrs would turn any iterable (a string too) into a list.
    if type(value) is not list:
        raise TypeError(f"expected an array of strings, got {_type_name(value)}")
    for index, item in enumerate(value):
        if type(item) is not str:
            raise TypeError(f"[{index}]: expected a string, got {_type_name(item)}")
    return value


converter.register_structure_hook_func(lambda tp: tp == list[str], _structure_str_list)


Responses = dict[str, str] | list[str]


def _structure_responses(value: Any, _: Any) -> Responses:
    if type(value) is dict:
        for key, item in value.items():
            if type(item) is not str:
                raise TypeError(f"[{key!r}]: expected a string, got {_type_name(item)}")
        return value
    if type(value) is list:
        for index, item in enumerate(value):
            if type(item) is not str:
                raise TypeError(f"[{index}]: expected a string, got {_type_name(item)}")
        return value
    raise TypeError(
        f"expected an object of strings or an array of strings, got {_type_name(value)}"
    )


converter.register_structure_hook_func(lambda tp: tp == Responses, _structure_responses)


class ArgumentError(TransportError):
    """A tool's arguments did not fit its input schema; ``problems`` name each field."""

    #: The stable error code of the MCP tools.
    code = "invalid_arguments"

    def __init__(self, tool: str, problems: list[str]) -> None:
        super().__init__(f"invalid arguments for {tool}: {'; '.join(problems)}")
        self.tool = tool
        self.problems = problems


def _describe(exc: BaseException, _wanted: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = ", ".join(f.name for f in attrs.fields(exc.cl)) or "none"
        return f"unknown field(s) {', '.join(sorted(exc.extra_fields))}; allowed: {allowed}"
    if isinstance(exc, AttributeError) and "'items'" in str(exc):
        return "expected an object"  # cattrs's dict hook met a non-mapping
    if isinstance(exc, TypeError | ValueError) and exc.args:
        return str(exc)
    return cattrs.v.format_exception(exc, _wanted)


# -- the direct path --------------------------------------------------------------
# Where every field's type is one of the few below, the same instance is built directly
# from arguments that fit exactly (every key a field, every value of its field's JSON
# type, every required field there), and that are plainly valid: the values a session
# may hold (ASCII strings, integers within 2**53, finite numbers, objects that
# ``value_problems`` passes) within the fields' Spec constraints. Those are checked in
# the same pass; anything else (a wrong type, an unknown key, a missing field, a value
# or constraint problem, a string beyond ASCII) goes the full way: ``value_problems``,
# cattrs and ``constraint_problems``, for their error messages. The direct path copies
# what cattrs copies (objects), and keeps what it keeps (arrays of strings, values):
# tests/transport/test_args.py checks it against the full way on arbitrary arguments.
# session_update's arguments: about 1.5 µs, where the full way takes about 4.5.

_NO = object()  # the direct path does not take these arguments
#: Integers the direct path takes: well within the 64 bits a session holds (the rest
#: is left to ``value_problems`` to judge).
_SAFE_INT = 2**53
_isfinite = math.isfinite


def _direct_object(value: Any) -> Any:
    if type(value) is not dict:
        return _NO
    for key in value:
        if type(key) is not str:
            return _NO
    # The object is level 2 of the arguments (value_problems counts them as level 1).
    if value_problems(value, "", max_nesting=MAX_NESTING - 1):
        return _NO
    return dict(value)


def _direct_numbers(value: Any) -> Any:
    if type(value) is not dict:
        return _NO
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return _NO
        kind = type(item)
        if kind is float:
            if not _isfinite(item):
                return _NO
        elif kind is not int or not -_SAFE_INT <= item <= _SAFE_INT:
            return _NO
    return dict(value)


def _direct_strings(value: Any) -> Any:
    if type(value) is not list:
        return _NO
    for item in value:
        if type(item) is not str or not item.isascii():
            return _NO
    return value


#: Per field type: the test (Python source, on ``v``) that a value of the direct path
#: fails, or the function that gives the value it keeps (or ``_NO``); and whether None
#: is taken (an optional field).
_FAILS = {
    str: "type(v) is not str or not v.isascii()",
    int: "type(v) is not int or not -SAFE_INT <= v <= SAFE_INT",
    float: (
        "not (isfinite(v) if type(v) is float else type(v) is int and -SAFE_INT <= v <= SAFE_INT)"
    ),
    bool: "type(v) is not bool",
}
_KEEPS: dict[Any, Callable[[Any], Any]] = {
    dict[str, Any]: _direct_object,
    dict[str, float]: _direct_numbers,
    list[str]: _direct_strings,
}
_DIRECT: dict[Any, tuple[Any, bool]] = {
    **{kind: (kind, False) for kind in _FAILS},
    **{kind | None: (kind, True) for kind in (str, int, float, *_KEEPS)},
}


_direct_structurers: dict[type[Any], Callable[[dict[str, Any]], Any] | None] = {}


def direct_structurer(cls: type[Any]) -> Callable[[dict[str, Any]], Any] | None:
    """A function that builds ``cls`` from arguments that fit it exactly and are plainly
    valid, as the full way would, and returns None for any others; None if a field's
    type is not one the direct path knows."""
    try:
        return _direct_structurers[cls]
    except KeyError:
        made = _direct_structurers[cls] = _make_direct_structurer(cls)
        return made


def _make_direct_structurer(cls: type[Any]) -> Callable[[dict[str, Any]], Any] | None:
    """Generated (as attrs generates ``__init__``): one function with every field's
    checks written out, so that a call costs one frame, not one per value.

    Each field's value is a local, its default until its key is met; the instance is
    then made without ``__init__`` (as a writable twin of the class, each field
    written, then given the class: :func:`~triact._writable.writable_twin`), where that is
    what ``__init__`` would do: a slotted class whose fields have plain defaults, no
    validators or converters, and no ``__attrs_post_init__``. A frozen class's
    ``__init__`` sets each field through ``object.__setattr__`` and takes its
    arguments as a dict. Any other class is made by calling it."""
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    plain: type = cls
    constrained = dict(constrained_fields(plain))
    namespace: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "NO": _NO,
        "SAFE_INT": _SAFE_INT,
        "isfinite": _isfinite,
    }
    settable = _settable(cls)
    lines = ["def structure(arguments):"]
    for index, field in enumerate(fields):
        # (called, a class takes its own defaults: those left out are NO until then)
        absent = field.default is attrs.NOTHING or not settable
        namespace[f"default_{index}"] = _NO if absent else field.default
        lines.append(f"    f_{index} = default_{index}")
    lines.append("    for key, v in arguments.items():")
    for index, field in enumerate(fields):
        direct = _DIRECT.get(hints[field.name])
        if direct is None or field.alias != field.name:
            return None
        kind, optional = direct
        lines.append(f"        {'if' if index == 0 else 'elif'} key == {field.name!r}:")
        indent = "            "
        checks = indent
        if optional:
            lines.append(f"{indent}if v is not None:")
            checks += "    "
        if kind in _FAILS:
            lines += [f"{checks}if {_FAILS[kind]}:", f"{checks}    return None"]
        else:
            namespace[f"keep_{index}"] = _KEEPS[kind]
            lines += [f"{checks}v = keep_{index}(v)", f"{checks}if v is NO:"]
            lines.append(f"{checks}    return None")
        for test in _outside(constrained.get(field.name)):
            lines += [f"{checks}if {test}:", f"{checks}    return None"]
        lines.append(f"{indent}f_{index} = v")
    lines += ["        else:", "            return None"] if fields else ["        return None"]
    for index, field in enumerate(fields):
        if field.default is attrs.NOTHING:
            lines += [f"    if f_{index} is NO:", "        return None"]
    if settable:
        namespace["Writable"] = writable_twin(cls)
        lines.append("    made = new(Writable)")
        lines += [f"    made.{field.name} = f_{index}" for index, field in enumerate(fields)]
        lines += ["    made.__class__ = cls", "    return made"]
    else:
        given = ", ".join(f"({field.name!r}, f_{index})" for index, field in enumerate(fields))
        lines.append(f"    return cls(**{{key: v for key, v in ({given},) if v is not NO}})")
    source = "\n".join(lines) + "\n"
    filename = f"<triact generated direct structurer of {cls.__qualname__} (transport/_args.py)>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    structure: Callable[[dict[str, Any]], Any] = namespace["structure"]
    return structure


def _settable(cls: type[Any]) -> bool:
    """Whether ``cls``'s ``__init__`` does nothing but set each field's slot to its
    argument or its (plain, not a factory's) default."""
    init = getattr(cls.__init__, "__code__", None)
    if init is None or not init.co_filename.startswith("<attrs generated"):
        return False  # an __init__ of its own
    if getattr(cls, "__attrs_post_init__", None) is not None:
        return False
    slots = {name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())}
    if slots - {"__weakref__"} != {field.name for field in attrs.fields(cls)}:
        return False  # not slotted, or a slot __init__ sets besides the fields
    for field in attrs.fields(cls):
        if field.validator is not None or field.converter is not None or not field.init:
            return False
        if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            return False
        if not isinstance(getattr(cls, field.name, None), types.MemberDescriptorType):
            return False
    return True


def _outside(keywords: dict[str, Any] | None) -> list[str]:
    """Tests (Python source, on ``v``, not None) of a value that ``constraint_problems``
    refuses for these Spec keywords."""
    if not keywords:
        return []
    tests = []
    if "minimum" in keywords:
        tests.append(f"v < {keywords['minimum']!r}")
    if "maximum" in keywords:
        tests.append(f"v > {keywords['maximum']!r}")
    if "minLength" in keywords:
        tests.append(f"len(v) < {keywords['minLength']!r}")
    longest = min(keywords.get("maxLength", math.inf), keywords.get("maxItems", math.inf))
    if longest != math.inf:
        tests.append(f"len(v) > {longest!r}")
    return tests


def structure_arguments(tool: str, arguments: dict[str, Any], cls: type[Any]) -> Any:
    """``arguments`` as an instance of ``cls``; :class:`ArgumentError` if they do not fit,
    or if any value in them is one a session may not hold (a number too large for a
    float, which JSON reads as infinity; an integer past 64 bits; a lone surrogate;
    nesting past the limit), so that none of those reaches a session."""
    direct = _direct_structurers.get(cls) or direct_structurer(cls)
    if direct is not None:
        instance = direct(arguments)
        if instance is not None:
            return instance
    problems = value_problems(arguments, "arguments")
    if problems:
        raise ArgumentError(tool, problems)
    instance = _structure(tool, arguments, cls)
    problems = constraint_problems(instance, "arguments")
    if problems:
        raise ArgumentError(tool, problems)
    return instance


def _structure(tool: str, arguments: dict[str, Any], cls: type[Any]) -> Any:
    """``arguments`` as an instance of ``cls`` by cattrs; ArgumentError naming every
    problem if they do not fit."""
    try:
        return converter.structure(arguments, cls)
    except cattrs.BaseValidationError as exc:
        problems = []
        for problem in cattrs.transform_error(exc, path="arguments", format_exception=_describe):
            what, _, where = problem.rpartition(" @ ")
            problems.append(f"{where}{what}" if what.startswith("[") else f"{where}: {what}")
        raise ArgumentError(tool, problems) from None


_SESSION_ID = (
    "The session's id, from session_create. Under the handshake protocol revisions it may "
    "be left out to use this connection's default session (created on first use)."
)
_TOKEN = "The session's token: required for sessions created with bind_client=true."


@attrs.frozen(kw_only=True)
class SessionArgs:
    session_id: Annotated[str | None, Spec(_SESSION_ID, minLength=1)] = None
    token: Annotated[str | None, Spec(_TOKEN)] = None


@attrs.frozen(kw_only=True)
class CreateArgs:
    topic: Annotated[str | None, Spec("What the session is about.")] = None
    working_directory: Annotated[
        str | None, Spec("An absolute path to an existing directory the session works in.")
    ] = None
    metadata: Annotated[
        dict[str, Any] | None, Spec("Free-form JSON metadata kept with the session.")
    ] = None
    bind_client: Annotated[
        bool,
        Spec(
            "Bind the session to you: the result carries a token (shown only once) that "
            "every later call on this session must pass."
        ),
    ] = False
    client_id: Annotated[str | None, Spec("Your client id, for the per-client session cap.")] = None
    config_path: Annotated[str | None, Spec("A configuration file path to record.")] = None
    project_id: Annotated[str | None, Spec("A project id to record.")] = None


@attrs.frozen(kw_only=True)
class UpdateArgs(SessionArgs):
    set: Annotated[
        dict[str, Any] | None,
        Spec("Keys of the session's data object to set to these JSON values."),
    ] = None
    increment: Annotated[
        dict[str, float] | None,
        Spec("Keys of the data object to add these numbers to (a missing key counts as 0)."),
    ] = None
    delete: Annotated[list[str] | None, Spec("Keys of the data object to remove.")] = None
    expected_version: Annotated[
        int | None,
        Spec(
            "Apply the update only if the session is at this version (optimistic "
            "concurrency); otherwise the call fails with code 'conflict' and nothing changes.",
            minimum=1,
        ),
    ] = None


@attrs.frozen(kw_only=True)
class WorkingDirectoryArgs(SessionArgs):
    path: Annotated[str, Spec("An absolute path to an existing directory.", minLength=1)]


@attrs.frozen(kw_only=True)
class AddThreadArgs(SessionArgs):
    name: Annotated[
        str, Spec("The thread's name, unique within the session.", minLength=1, maxLength=200)
    ]
    system_prompt: Annotated[str | None, Spec("The thread's system prompt.")] = None


@attrs.frozen(kw_only=True)
class RecordAnalysisArgs(SessionArgs):
    prompt: Annotated[str, Spec("The prompt that was analysed.")]
    responses: Annotated[
        Responses,
        Spec("The responses: an object of perspective name to text, or an array of texts."),
    ]
    response_time: Annotated[
        float | None, Spec("How long the analysis took, in seconds.", minimum=0)
    ] = None


@attrs.frozen(kw_only=True)
class ListArgs:
    cursor: Annotated[
        str | None, Spec("The next_cursor of the previous page; omit for the first.")
    ] = None
    limit: Annotated[int, Spec("Sessions per page.", minimum=1, maximum=500)] = 50
    tokens: Annotated[
        list[str] | None,
        Spec(
            "Tokens of bound sessions to list too (their session_create or session_start "
            "token); without them only unbound sessions are listed.",
            maxItems=100,
        ),
    ] = None


@attrs.frozen(kw_only=True)
class NoArgs:
    pass
