"""Property-based stress testing for triact sessions (docs/testing.md).

* Hypothesis strategies for :class:`~triact.SessionState` and its parts, for data
  changes, steps and whole concurrent programs (these need Hypothesis: install the
  ``testing`` extra, or ``pip install hypothesis``).
* :class:`ReferenceModel`: the session semantics as plain sequential code.
* :class:`HistoryRecorder` and :func:`check_history`: record calls and returns, and
  check that one serial order per session explains them (:class:`HistoryViolation`).
* Fault injection: :class:`FaultyStore`, failing and slow update functions,
  cancellations and timeouts, clock jumps past TTLs.
* :func:`run_program` and :func:`check_run`: run a generated :class:`Program` against
  a real manager and check invariants I1-I9 (docs/architecture.md).
* :func:`stress` and :func:`run_stress`: ``triact stress``, a real-time random load
  against a manager in process or a ``triact serve`` subprocess, its history checked.

Everything but the strategies works without Hypothesis; the strategies are imported
on first use, so that ``triact stress`` does not pay for importing Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._public import fixup_module_metadata
from ._checker import HistoryViolation, IdleTimes, check_history, find_violations
from ._checks import allowed_outcomes, check_run
from ._faults import (
    TTL_GRANULARITY,
    Cancelled,
    Fault,
    FaultyStore,
    InjectedError,
    InjectedFault,
    advance,
    call_with_timeout,
    failing_update,
    jump_past_ttl,
    slow_update,
)
from ._history import (
    Call,
    History,
    HistoryRecorder,
    Operation,
    RecordedManager,
    RecordedSession,
    classify,
)
from ._model import DataChange, ModelSession, ModelState, ReferenceModel
from ._program import Faults, Program, Step
from ._runner import EPOCH, Run, run_in_trio, run_program
from ._stress import StressOptions, StressReport, run_stress, stress
from ._targets import StressTarget

if TYPE_CHECKING:
    from ._strategies import (
        analysis_records,
        client_bindings,
        data_changes,
        durations,
        fault_schedules,
        finite_floats,
        json_objects,
        json_scalars,
        json_values,
        optional_text,
        programs,
        request_records,
        security_events,
        session_metrics,
        session_states,
        small_json,
        steps,
        thread_messages,
        threads,
        timestamps,
    )

_STRATEGIES = frozenset(
    {
        "analysis_records",
        "client_bindings",
        "data_changes",
        "durations",
        "fault_schedules",
        "finite_floats",
        "json_objects",
        "json_scalars",
        "json_values",
        "optional_text",
        "programs",
        "request_records",
        "security_events",
        "session_metrics",
        "session_states",
        "small_json",
        "steps",
        "thread_messages",
        "threads",
        "timestamps",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _STRATEGIES:
        raise AttributeError(f"module 'triact.testing' has no attribute {name!r}")
    try:
        strategies = importlib.import_module("._strategies", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ImportError(
            f"triact.testing.{name} is a Hypothesis strategy, and Hypothesis is not "
            "installed: pip install 'hypothesis>=6.100' (or install triact with its testing "
            "extra, pip install '.[testing]' in a checkout)"
        ) from exc
    fixup_module_metadata(__name__, vars(strategies), _STRATEGIES)
    return getattr(strategies, name)


__all__ = [
    "EPOCH",
    "TTL_GRANULARITY",
    "Call",
    "Cancelled",
    "DataChange",
    "Fault",
    "Faults",
    "FaultyStore",
    "History",
    "HistoryRecorder",
    "HistoryViolation",
    "IdleTimes",
    "InjectedError",
    "InjectedFault",
    "ModelSession",
    "ModelState",
    "Operation",
    "Program",
    "RecordedManager",
    "RecordedSession",
    "ReferenceModel",
    "Run",
    "Step",
    "StressOptions",
    "StressReport",
    "StressTarget",
    "advance",
    "allowed_outcomes",
    "analysis_records",
    "call_with_timeout",
    "check_history",
    "check_run",
    "classify",
    "client_bindings",
    "data_changes",
    "durations",
    "failing_update",
    "fault_schedules",
    "find_violations",
    "finite_floats",
    "json_objects",
    "json_scalars",
    "json_values",
    "jump_past_ttl",
    "optional_text",
    "programs",
    "request_records",
    "run_in_trio",
    "run_program",
    "run_stress",
    "security_events",
    "session_metrics",
    "session_states",
    "slow_update",
    "small_json",
    "steps",
    "stress",
    "thread_messages",
    "threads",
    "timestamps",
]

fixup_module_metadata(__name__, globals(), __all__)
