"""Random programs over two and three processes on one store, each a SessionManager of
its own, checked as one history by triact.testing's checker: per-session linearizable,
no fork, no lost acknowledged write, a stale owner fenced (tests/sessions/_processes.py
runs them)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triact.testing import HistoryViolation, check_history

from .._redis import unique_prefix
from ._processes import ProcessPlan, Step, process_plans, run_processes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="CLOCK_MONOTONIC across processes")

#: Each example starts two or three Python processes: few of them in CI.
EXAMPLES = 3 if os.environ.get("CI") else 12


@pytest.fixture(params=["sqlite", "redis"])
def new_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], str]:
    """Makes the spec of a new, empty shared store of the kind the test runs on (the
    processes open it by that spec)."""
    kind: str = request.param

    def make() -> str:
        if kind == "sqlite":
            return f"sqlite:{tmp_path_factory.mktemp('shared') / 'sessions.db'}"
        if kind == "redis":  # a new key prefix on the tests' Redis
            return f"{request.getfixturevalue('redis_url')}?prefix={unique_prefix()}"
        raise ValueError(f"no shared store of kind {kind!r} here")

    return make


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plans=st.lists(process_plans, min_size=2, max_size=3))
def test_random_programs_over_separate_processes_are_linearizable(
    new_store: Callable[[], str], plans: list[ProcessPlan]
) -> None:
    history = run_processes(new_store(), plans)
    check_history(history)
    finals: dict[str, set[tuple[int | None, object]]] = {}
    for op in history.operations:
        if op.task.endswith(".final") and op.outcome == "ok":
            assert op.session_id is not None
            assert op.data is not None
            finals.setdefault(op.session_id, set()).add((op.version, op.data.get("n")))
    for session_id, seen in finals.items():
        assert len(seen) == 1, f"processes disagree on {session_id}: {seen}"


def test_an_owner_whose_lease_was_taken_over_is_fenced(new_store: Callable[[], str]) -> None:
    """p0's async update runs under its lease for 2 s; meanwhile p1, whose clock is
    ahead (p0's lease looks run out to it), reads the session and so takes its lease
    over: p0's commit is refused although the version did not move (nothing saved),
    and p0 goes on as a guest."""
    plans = [
        ProcessPlan(((Step("async", hold=2.0), Step("increment"), Step("read")),)),
        ProcessPlan(((Step("read", pause=0.6),),), skew=5.0),
    ]
    history = run_processes(new_store(), plans, sessions=1)
    check_history(history)
    mine = [op for op in history.operations if op.task == "p0.t0"]
    assert [op.outcome for op in mine] == ["conflict", "ok", "ok"], [op.describe() for op in mine]
    assert "taken over by another process" in (mine[0].error or "")
    finals = {op.version for op in history.operations if op.task.endswith(".final")}
    assert finals == {2}  # created, then p0's increment


def test_a_store_without_compare_and_set_is_caught(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The harness can fail: with a store that writes over whatever version is
    stored, concurrent increments from two processes fork versions and lose updates,
    and the checker says so."""
    steady = tuple(Step("increment", pause=0.01) for _ in range(30))  # overlapping in time
    plans = [ProcessPlan((steady, steady)), ProcessPlan((steady, steady))]
    spec = f"blind-sqlite:{tmp_path_factory.mktemp('blind') / 'sessions.db'}"
    with pytest.raises(HistoryViolation):
        check_history(run_processes(spec, plans, sessions=1))
