"""Session state: small frozen values. A change is a new value (``attrs.evolve``, or
:meth:`SessionState.with_data` for a change of the data)."""

from __future__ import annotations

import linecache
import marshal
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from .._writable import writable_twin

RequestStatus = Literal["active", "completed", "failed"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a private copy of ``value`` (a state's mappings are part of
    its value: writing into them would change a committed state behind its actor).

    Nested lists and dicts are not copied: treat them as read-only too.
    """
    if type(value) is MappingProxyType:
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return MappingProxyType(dict(value)) if value else _EMPTY


def check_principal(principal: str | None) -> str | None:
    """``principal`` if it may name a session's owner (a non-empty str, or None for
    none); TypeError otherwise."""
    if principal is not None and (type(principal) is not str or not principal):
        raise TypeError(f"principal must be a non-empty str or None, got {principal!r}")
    return principal


def plain_dict(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A state's mapping as a new plain dict: through the view's own ``copy`` (the
    dict's, five to fifteen times faster than ``dict(view)``, which goes key by key)."""
    if type(mapping) is MappingProxyType:
        copy = mapping.copy()
        if type(copy) is dict:
            return copy
    return dict(mapping)


@attrs.frozen
class ThreadMessage:
    """One message in a thread's history."""

    role: str
    content: str
    at: float  #: wall-clock time (seconds since the epoch)


@attrs.frozen
class Thread:
    """A named perspective within a session, with its own system prompt and history."""

    name: str
    created_at: float
    system_prompt: str | None = None
    messages: tuple[ThreadMessage, ...] = ()


@attrs.frozen
class AnalysisRecord:
    """One analysis: the prompt, the responses (by perspective), how long it took."""

    prompt: str
    responses: Mapping[str, str] = attrs.field(converter=frozen_mapping)
    timestamp: float
    response_time: float | None = None


@attrs.frozen
class ClientBinding:
    """The binding of a session to a client: an HMAC-SHA256 of its token, never the
    token itself."""

    token_hmac: str  #: hex digest
    created_at: float
    client_id: str | None = None


@attrs.frozen
class SecurityEvent:
    """A refused token, or a lockout."""

    kind: str  #: "invalid_token", "missing_token" or "locked"
    at: float
    tool_name: str | None = None
    detail: str = ""


@attrs.frozen
class SessionMetrics:
    """Counters of the calls a session has handled.

    Kept live by the session's actor; :meth:`Session.snapshot` returns the current
    figures, and every committed change stores them with the state.
    """

    operations: int = 0
    errors: int = 0
    total_latency: float = 0.0  #: seconds, summed over operations
    max_latency: float = 0.0


@attrs.frozen
class RequestRecord:
    """A tracked request. Its id is ``session:conversation:counter:timestamp:random``."""

    id: str
    conversation_id: str
    started_at: float
    status: RequestStatus = "active"
    tool_name: str | None = None
    finished_at: float | None = None
    error: str | None = None


@attrs.frozen
class SessionState:
    """Everything a session holds. Frozen: the session's actor swaps whole values,
    which is what makes a change atomic (I2, docs/architecture.md)."""

    id: str
    version: int
    created_at: float  #: wall-clock
    last_used: float  #: wall-clock time of the last committed change
    topic: str | None = None
    working_directory: str | None = None
    config_path: str | None = None
    project_id: str | None = None
    threads: tuple[Thread, ...] = ()
    analyses: tuple[AnalysisRecord, ...] = ()
    data: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=frozen_mapping)
    metrics: SessionMetrics = SessionMetrics()
    client_binding: ClientBinding | None = None
    security_events: tuple[SecurityEvent, ...] = ()
    active_requests: tuple[RequestRecord, ...] = ()
    completed_requests: tuple[RequestRecord, ...] = ()
    request_counter: int = 0
    metadata: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=frozen_mapping)
    #: The principal that owns the session: set when it is created, never changed.
    #: Only calls made as that principal reach it (see ``Session.authorized``); None
    #: for an unowned session.
    principal: str | None = None

    def with_data(self, changes: Mapping[str, Any] = _EMPTY, /, **more: Any) -> SessionState:
        """A copy of this state whose data is updated with ``changes``, then ``more``
        (as ``dict.update`` would): the same state as
        ``attrs.evolve(state, data={**state.data, **changes, **more})``, made with one
        copy of the data instead of two and without evolve's field-by-field work.

        Pass keys that are not identifiers in ``changes``:
        ``state.with_data({"a.b": 1}, n=2)``. Remove keys with :meth:`without_data`.
        The copy is frozen like every state; this one is not changed.
        """
        # The reference definition; replaced below by a generated equivalent.
        return attrs.evolve(self, data={**self.data, **changes, **more})

    def without_data(self, *keys: str) -> SessionState:
        """A copy of this state whose data lacks ``keys`` (those it does not hold are
        ignored): the same state as ``attrs.evolve(state, data={k: v for k, v in
        state.data.items() if k not in keys})``, made with one copy of the data."""
        # The reference definition; replaced below by a generated equivalent.
        return attrs.evolve(self, data={k: v for k, v in self.data.items() if k not in keys})

    def thread(self, name: str) -> Thread | None:
        """The thread called ``name``, or None."""
        for thread in self.threads:
            if thread.name == name:
                return thread
        return None


def _generated(
    name: str, lines: list[str], namespace: dict[str, Any], function: str | None = None
) -> Any:
    """Compile the function ``function`` (default: ``name``) from ``lines``, with a
    file name and a linecache entry (as attrs gives the methods it generates), so
    that a traceback through it shows its source."""
    source = "\n".join(lines) + "\n"
    filename = f"<triact generated {name} (sessions/_state.py)>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    return namespace[function or name]


# The generated functions below build a new state as one of these, a field per line
# (``new.topic = state.topic``, which CPython then writes straight into the slot), and
# turn it into a ``SessionState`` once it is whole by assigning ``__class__``: about
# three times faster than setting each slot through its descriptor's ``__set__``, and
# every commit pays it (the stamp), as does every ``with_data``. Nothing outside those
# functions ever sees one.
_WritableState = writable_twin(SessionState)
_WritableMetrics = writable_twin(SessionMetrics)

#: ``(new, source, entries)``: the state :meth:`SessionState.with_data` (or
#: ``without_data``) made last, the state it made it from, and the entries it set (a
#: dict of its own, which nothing else holds: ``with_data``'s keyword arguments, or
#: its own copy of ``changes`` and them; None for ``without_data``). Kept
#: until a session's actor takes the record when it stamps a state for a commit
#: (``SessionActor._stamp``, which empties it: it holds the state made, which the
#: in-place stamp's count of references must not see). Every field of ``new`` but
#: ``data`` is the very object of ``source``'s, so neither the stamp's checks nor the
#: commit check need compare them one by one, and ``new.data`` is ``source.data``
#: with those entries set (or some keys removed), so the commit check may walk only
#: those entries (``_limits.check_with_data``). The objects are held, not their ids (an
#: id can be reused once its object is freed), in one tuple, replaced whole (a
#: thread reads either the old record or the new one, never half of each).
MADE: list[tuple[SessionState, SessionState, dict[str, Any] | None] | None] = [None]


def _namespace() -> dict[str, Any]:
    """The names the generated functions use (a fresh dict for each)."""
    return {
        "SessionState": SessionState,
        "WritableState": _WritableState,
        "SessionMetrics": SessionMetrics,
        "WritableMetrics": _WritableMetrics,
        "ClientBinding": ClientBinding,
        "MappingProxyType": MappingProxyType,
        "Mapping": Mapping,
        "EMPTY": _EMPTY,
        "evolve": attrs.evolve,
        "plain_dict": plain_dict,
        "made": MADE,
    }


_STAMP = ("version", "last_used", "metrics")
_COUNTERS = [a.name for a in attrs.fields(SessionMetrics)]


def _copy_lines(source: str, skip: tuple[str, ...]) -> list[str]:
    """Lines that make ``new``, a writable state, and copy into it every field of
    ``source`` but ``skip`` (unrolled, as attrs builds its own methods)."""
    kept = [a.name for a in attrs.fields(SessionState) if a.name not in skip]
    return ["    new = WritableState()", *(f"    new.{n} = {source}.{n}" for n in kept)]


def _metrics_lines() -> list[str]:
    """Lines that build ``metrics``, a new :class:`SessionMetrics`, from the arguments
    named as its fields."""
    return [
        "    metrics = WritableMetrics()",
        *(f"    metrics.{name} = {name}" for name in _COUNTERS),
        "    metrics.__class__ = SessionMetrics",
    ]


def _make_stamped() -> Any:
    """Build :func:`stamped`: a copy of the fields but the stamp, then the stamp."""
    lines = [
        "def stamped(state, version, last_used, metrics):",
        *_copy_lines("state", _STAMP),
        *(f"    new.{name} = {name}" for name in _STAMP),
        "    new.__class__ = SessionState",
        "    return new",
    ]
    return _generated("stamped", lines, _namespace())


def _make_new_metrics() -> Any:
    """Build :func:`new_metrics` (a frozen class's ``__init__`` sets each field
    through ``object.__setattr__``, which costs several times as much)."""
    lines = [f"def new_metrics({', '.join(_COUNTERS)}):", *_metrics_lines(), "    return metrics"]
    return _generated("new_metrics", lines, _namespace())


#: ``attrs.evolve(state, version=..., last_used=..., metrics=...)``, at a fraction of
#: the cost: every commit pays it, and the other fields need no converter again.
stamped: Callable[[SessionState, int, float, SessionMetrics], SessionState] = _make_stamped()
#: ``SessionMetrics(operations, errors, total_latency, max_latency)``, made faster for
#: every commit's stamp (the fields are plain numbers: nothing to convert or check).
new_metrics: Callable[[int, int, float, float], SessionMetrics] = _make_new_metrics()


def _make_stamped_with() -> Any:
    """Build :func:`stamped_with`: :func:`stamped` and :func:`new_metrics` in one."""
    lines = [
        f"def stamped_with(state, version, last_used, {', '.join(_COUNTERS)}):",
        *_metrics_lines(),
        *_copy_lines("state", _STAMP),
        *(f"    new.{name} = {name}" for name in _STAMP),
        "    new.__class__ = SessionState",
        "    return new",
    ]
    return _generated("stamped_with", lines, _namespace())


#: ``stamped(state, version, last_used, new_metrics(operations, errors, total_latency,
#: max_latency))`` in one call: what every commit calls.
stamped_with: Callable[[SessionState, int, float, int, int, float, float], SessionState] = (
    _make_stamped_with()
)


def _make_stamp_in_place() -> Any:
    """Build :func:`stamp_in_place`: :func:`stamped_with`'s stamp, written into
    ``state`` itself, through the slots' descriptors (a frozen state's ``__class__``
    cannot be assigned: that goes through its ``__setattr__``, which refuses)."""
    lines = [
        f"def stamp_in_place(state, version, last_used, {', '.join(_COUNTERS)}):",
        *_metrics_lines(),
        *(f"    set_{name}(state, {name})" for name in _STAMP),
        "    return state",
    ]
    namespace = _namespace()
    namespace.update({f"set_{name}": getattr(SessionState, name).__set__ for name in _STAMP})
    return _generated("stamp_in_place", lines, namespace)


#: :func:`stamped_with` without the copy: only for a state that nothing else can
#: see (the session actor's ``_unshared_refs``), which then becomes the committed state.
stamp_in_place: Callable[[SessionState, int, float, int, int, float, float], SessionState] = (
    _make_stamp_in_place()
)


def _make_init(cls: type) -> Any:
    """Build ``cls.__init__`` as attrs would for a frozen class, but setting each
    field through its slot's descriptor: attrs' frozen ``__init__`` goes through
    ``object.__setattr__`` field by field, which costs half as much again. Same
    parameters, defaults and converters; the instances stay frozen (only
    ``__init__`` is replaced, not attrs' ``__setattr__``)."""
    params, lines = [], []
    namespace: dict[str, Any] = {}
    for field in attrs.fields(cls):
        name = field.name
        if (  # what this does not reproduce: keep attrs' own (SessionState has none)
            field.validator is not None
            or isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
            or not field.init
            or field.kw_only
            or field.alias != name
        ):
            return vars(cls)["__init__"]
        namespace[f"set_{name}"] = getattr(cls, name).__set__
        if field.default is attrs.NOTHING:
            params.append(name)
        else:
            namespace[f"default_{name}"] = field.default
            params.append(f"{name}=default_{name}")
        value = name
        if field.converter is not None:
            namespace[f"convert_{name}"] = field.converter
            value = f"convert_{name}({name})"
        lines.append(f"    set_{name}(self, {value})")
    init = _generated(
        f"{cls.__name__}.__init__",
        [f"def init(self, {', '.join(params)}):", *lines],
        namespace,
        function="init",
    )
    init.__qualname__ = f"{cls.__name__}.__init__"
    return init


SessionState.__init__ = _make_init(SessionState)  # type: ignore[method-assign]


def _make_data_copies() -> tuple[Any, Any]:
    """Build :meth:`SessionState.with_data` and :meth:`SessionState.without_data`:
    the other fields copied field by field (as :func:`stamped` does; they come from a
    valid state and need no converter again), the data copied once, kept private
    and wrapped read-only (which is all its converter, :func:`frozen_mapping`, does
    with a fresh dict). A subclass goes through ``attrs.evolve`` (its fields, and its
    ``__init__``, are its own)."""
    copy = [
        *_copy_lines("self", ("data",)),
        "    new.data = MappingProxyType(data) if data else EMPTY",
        "    new.__class__ = SessionState",
    ]
    with_data = [
        "def with_data(self, changes=EMPTY, /, **more):",
        "    if type(self) is not SessionState:",
        "        return evolve(self, data={**self.data, **changes, **more})",
        "    data = self.data.copy()",  # plain_dict, spelled out
        "    if type(data) is not dict:",
        "        data = dict(self.data)",
        "    if changes is not EMPTY:",  # (not the ABC's isinstance on every call)
        "        if type(changes) is not dict and not isinstance(changes, Mapping):",
        "            raise TypeError(",
        "                'with_data takes a mapping of changes (and keyword arguments), '",
        "                f'got {type(changes).__name__}'",
        "            )",
        # The entries set, in a dict of its own (the caller keeps changes): MADE says
        # them. ``more`` is one already (a fresh dict each call).
        "        changes = dict(changes)",
        "        changes |= more",
        "        more = changes",
        "    data |= more",  # (dict.update without the method call)
        *copy,
        "    made[0] = (new, self, more)",  # see MADE
        "    return new",
    ]
    without_data = [
        "def without_data(self, *keys):",
        "    if type(self) is not SessionState:",
        "        return evolve(self, data={k: v for k, v in self.data.items() if k not in keys})",
        "    data = plain_dict(self.data)",
        "    for key in keys:",
        "        data.pop(key, None)",
        *copy,
        "    made[0] = (new, self, None)",  # see MADE
        "    return new",
    ]
    made = []
    for name, lines in (("with_data", with_data), ("without_data", without_data)):
        function = _generated(f"SessionState.{name}", lines, _namespace(), function=name)
        reference = vars(SessionState)[name]
        function.__qualname__ = reference.__qualname__
        function.__doc__ = reference.__doc__
        function.__module__ = reference.__module__
        made.append(function)
    return made[0], made[1]


SessionState.with_data, SessionState.without_data = _make_data_copies()  # type: ignore[method-assign]


# -- the compact form: a state that costs the garbage collector nothing ---------------

#: A state's compact form (:func:`compact`): its fields but the id as one ``bytes``
#: (``marshal``), which CPython's collector never tracks, or as a tuple where marshal
#: cannot encode them (a session with threads, analyses, security events or request
#: records: those are frozen instances; the tuple is then tracked, and costs what the
#: state did). A session kept this way is walked by no collection, where a
#: ``SessionState`` (an instance, with its metrics and its read-only views) is walked
#: by every full one, and each new one by the next young one.
Compact = bytes | tuple[Any, ...]


def _make_compact() -> tuple[Any, Any]:
    """Build the tuple of a state's fields but its id (``flat``), and the state from
    the id and that tuple (``unflat``), unrolled over the fields (as :func:`stamped`
    is): ``unflat(state.id, flat(state)) == state`` for every state."""
    binding = [a.name for a in attrs.fields(ClientBinding)]
    packed: list[str] = []  # flat's values, one slot of the tuple each
    unpacked: list[str] = []  # unflat's lines
    for name in [a.name for a in attrs.fields(SessionState)]:
        slot = f"flat[{len(packed)}]"
        if name == "id":
            unpacked.append("    new.id = session_id")
        elif name in ("data", "metadata"):
            packed.append(f"plain_dict(state.{name})")
            unpacked.append(f"    mapping = {slot}")
            unpacked.append(f"    new.{name} = MappingProxyType(mapping) if mapping else EMPTY")
        elif name == "metrics":
            unpacked.append("    metrics = WritableMetrics()")
            for counter in _COUNTERS:
                unpacked.append(f"    metrics.{counter} = flat[{len(packed)}]")
                packed.append(f"metrics.{counter}")
            unpacked.append("    metrics.__class__ = SessionMetrics")
            unpacked.append("    new.metrics = metrics")
        elif name == "client_binding":
            fields = ", ".join(f"binding.{field}" for field in binding)
            packed.append(f"None if binding is None else ({fields})")
            unpacked += [
                f"    binding = {slot}",
                "    new.client_binding = None if binding is None else ClientBinding(*binding)",
            ]
        else:
            packed.append(f"state.{name}")
            unpacked.append(f"    new.{name} = {slot}")
    flat_lines = [
        "def flat(state):",
        "    metrics = state.metrics",
        "    binding = state.client_binding",
        "    return (",
        *(f"        {value}," for value in packed),
        "    )",
    ]
    unflat_lines = ["def unflat(session_id, flat):", "    new = WritableState()"]
    unflat_lines += [*unpacked, "    new.__class__ = SessionState", "    return new"]
    return _generated("flat", flat_lines, _namespace()), _generated(
        "unflat", unflat_lines, _namespace()
    )


_flat, _unflat = _make_compact()


def compact(state: SessionState) -> Compact:
    """``state``'s :data:`Compact` form (a plain ``SessionState``: a subclass's own
    fields would be lost)."""
    flat: tuple[Any, ...] = _flat(state)
    try:
        return marshal.dumps(flat)
    except ValueError:  # frozen records, or values of types marshal does not know
        return flat


def expand(session_id: str, held: Compact) -> SessionState:
    """The state whose :func:`compact` form is ``held`` (equal to it, new, frozen;
    the data's nested lists and dicts are new too, where marshal was used)."""
    return _unflat(session_id, marshal.loads(held) if type(held) is bytes else held)  # type: ignore[no-any-return]
