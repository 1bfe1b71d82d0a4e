"""Hypothesis strategies: session states and their parts, data changes, steps, and
whole concurrent programs."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ..sessions import (
    AnalysisRecord,
    ClientBinding,
    RequestRecord,
    SecurityEvent,
    SessionMetrics,
    SessionState,
    Thread,
    ThreadMessage,
)
from ._model import DataChange
from ._program import Faults, Program, Step

# -- session states ---------------------------------------------------------------

#: Finite floats: JSON has no NaN or infinity, and finite floats round-trip exactly.
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
timestamps = finite_floats
durations = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
optional_text = st.none() | st.text()

json_scalars = st.none() | st.booleans() | st.integers() | finite_floats | st.text()
#: Any JSON value (lists, not tuples: a JSON array comes back as a list).
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
#: A JSON object, as ``SessionState.data`` and ``metadata`` hold.
json_objects = st.dictionaries(st.text(), json_values, max_size=5)

thread_messages = st.builds(ThreadMessage, role=st.text(), content=st.text(), at=timestamps)
threads = st.builds(
    Thread,
    name=st.text(),
    created_at=timestamps,
    system_prompt=optional_text,
    messages=st.lists(thread_messages, max_size=3).map(tuple),
)
analysis_records = st.builds(
    AnalysisRecord,
    prompt=st.text(),
    responses=st.dictionaries(st.text(), st.text(), max_size=3),
    timestamp=timestamps,
    response_time=st.none() | durations,
)
client_bindings = st.builds(
    ClientBinding,
    token_hmac=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    created_at=timestamps,
    client_id=optional_text,
)
security_events = st.builds(
    SecurityEvent,
    kind=st.sampled_from(["invalid_token", "missing_token", "locked"]),
    at=timestamps,
    tool_name=optional_text,
    detail=st.text(),
)
session_metrics = st.builds(
    SessionMetrics,
    operations=st.integers(min_value=0),
    errors=st.integers(min_value=0),
    total_latency=durations,
    max_latency=durations,
)
request_records = st.builds(
    RequestRecord,
    id=st.text(),
    conversation_id=st.text(),
    started_at=timestamps,
    status=st.sampled_from(["active", "completed", "failed"]),
    tool_name=optional_text,
    finished_at=st.none() | timestamps,
    error=optional_text,
)


def _tuples(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(elements, max_size=3).map(tuple)


session_states = st.builds(
    SessionState,
    id=st.text(),
    version=st.integers(min_value=1),
    created_at=timestamps,
    last_used=timestamps,
    topic=optional_text,
    working_directory=optional_text,
    config_path=optional_text,
    project_id=optional_text,
    threads=_tuples(threads),
    analyses=_tuples(analysis_records),
    data=json_objects,
    metrics=session_metrics,
    client_binding=st.none() | client_bindings,
    security_events=_tuples(security_events),
    active_requests=_tuples(request_records),
    completed_requests=_tuples(request_records),
    request_counter=st.integers(min_value=0),
    metadata=json_objects,
)

# -- operations -------------------------------------------------------------------

#: Small JSON values for data changes: what they are matters less than that they differ.
small_json = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["x", "y", ""])


@st.composite
def _data_changes(draw: st.DrawFn) -> DataChange:
    # Keys a, b, c are set or deleted; n is only ever incremented or deleted, so an
    # increment never meets a value that is not a number.
    set_: dict[str, Any] = {}
    delete: list[str] = []
    for key in draw(st.lists(st.sampled_from("abc"), unique=True, max_size=2)):
        if draw(st.integers(0, 4)):
            set_[key] = draw(small_json)
        else:
            delete.append(key)
    increment: dict[str, int] = {}
    n = draw(st.sampled_from([None, None, "incr", "incr", "incr", "del"]))
    if n == "incr":
        increment["n"] = draw(st.integers(-3, 3))
    elif n == "del":
        delete.append("n")
    return DataChange(set=set_, increment=increment, delete=tuple(delete))


#: A change to a session's data, with distinct keys (as ``session_update`` wants).
data_changes: st.SearchStrategy[DataChange] = _data_changes()


def steps(sessions: int = 4) -> st.SearchStrategy[Step]:
    """One step of a task against one of ``sessions`` sessions: mostly updates
    (plain, failing, slow, version-checked, some cancelled) and reads, a few ends and
    removals, with pauses that let TTLs run out."""
    updates = st.builds(
        Step,
        action=st.just("update"),
        session=st.integers(0, sessions - 1),
        pause=st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, 2.5, 6.0]),
        change=data_changes,
        fails=st.sampled_from([False] * 9 + [True]),
        duration=st.sampled_from([0.0] * 3 + [0.5, 1.0, 3.0, 8.0]),
        expect=st.sampled_from(["none", "none", "seen", "seen", "stale", "ahead"]),
        timeout=st.sampled_from([None, None, None, 0.25, 0.5, 1.0, 3.0, 5.0]),
        cancel_by_task=st.booleans(),
        lookup=st.booleans(),
    )
    others = st.builds(
        Step,
        action=st.sampled_from(["read"] * 20 + ["end", "remove"]),
        session=st.integers(0, sessions - 1),
        pause=st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, 2.5, 6.0]),
        timeout=st.sampled_from([None] * 6 + [0.25, 1.0]),
        cancel_by_task=st.booleans(),
        lookup=st.booleans(),
    )
    return st.one_of(updates, updates, updates, others)


#: Seeded fault schedules, from none at all to one store call in three failing.
fault_schedules = st.builds(
    Faults,
    seed=st.integers(0, 2**32 - 1),
    fail_rate=st.sampled_from([0.0, 0.05, 0.2]),
    stall_rate=st.sampled_from([0.0, 0.1, 0.3]),
    stall=st.sampled_from([0.5, 2.0]),
    corrupt_rate=st.sampled_from([0.0, 0.1]),
)


_SESSIONS = st.integers(2, 4)
_IDLE_TTLS = st.sampled_from([2.0, 5.0, 30.0, 7200.0, 7200.0])
_MAILBOX_SIZES = st.sampled_from([1, 2, 256])
_NONE = st.none()


def programs(
    *,
    sessions: st.SearchStrategy[int] = _SESSIONS,
    max_tasks: int = 5,
    max_steps: int = 25,
    idle_ttls: st.SearchStrategy[float] = _IDLE_TTLS,
    mailbox_sizes: st.SearchStrategy[int] = _MAILBOX_SIZES,
    passivate: st.SearchStrategy[float | None] = _NONE,
    faults: st.SearchStrategy[Faults | None] = _NONE,
    with_shutdown: bool = False,
) -> st.SearchStrategy[Program]:
    """Whole programs: 2 to ``max_tasks`` tasks of 1 to ``max_steps`` steps each.

    ``faults`` draws the program's store faults (e.g. ``st.none() | fault_schedules``);
    ``with_shutdown`` sometimes closes the manager while the tasks still call it.
    """
    return st.builds(
        Program,
        sessions=sessions,
        tasks=st.lists(
            st.lists(steps(), min_size=1, max_size=max_steps).map(tuple),
            min_size=2,
            max_size=max_tasks,
        ).map(tuple),
        idle_ttl=idle_ttls,
        mailbox_size=mailbox_sizes,
        passivate_after=passivate,
        faults=faults,
        shutdown_after=(
            st.none() | st.sampled_from([0.0, 1.0, 4.0, 10.0]) if with_shutdown else st.none()
        ),
        shutdown_grace=st.sampled_from([0.5, 5.0]) if with_shutdown else st.just(5.0),
    )
