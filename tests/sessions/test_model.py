"""Random concurrent programs over a few sessions, checked against the sequential
reference model by ``triact.testing``.

Several tasks run lists of calls (plain, failing, version-checked and slow async
updates, some cancelled by a deadline or by another task; snapshots; lookups; ends;
removes), with time jumps between them, against 2-4 sessions of one manager under
Trio's autojump clock, sometimes with a TTL short enough to expire sessions
mid-program. Every call and return is recorded; :func:`triact.testing.check_run` then
checks, for each session:

* one serial order of the calls explains every result, respecting real time and each
  task's order: committed updates are versions 2, 3, ... with no gap or repeat, each
  state is the model's replay of the updates before it, every read and refusal saw a
  version current during its call, and no task sees a session go back in time
  (I1, I3);
* a raising, refused or cancelled update left no trace in any state (I2);
* every call returned or raised an error documented for it, nothing hung (I4);
* a session idle for longer than ``idle_ttl`` (plus the reaper's 1 s busy recheck)
  was gone for every later call, and one never idle for ``idle_ttl`` was not (I5);
* the manager's counters of ended, removed and expired sessions match the history.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import Phase, example, given, settings

from triact import SessionState
from triact.sessions import _actor as _actor_module
from triact.sessions._actor import SessionActor
from triact.testing import DataChange, Program, Step, check_run, programs, run_in_trio


def run_and_check(program: Program) -> None:
    check_run(run_in_trio(program))


def _slow(session: int, pause: float = 0.0) -> Step:
    return Step("update", session, pause, DataChange(set={"a": 1}), duration=3.0)


@settings(deadline=None)
@given(programs())
# An async update whose session is removed while it sleeps gets SessionClosedError
# (it raised AttributeError: the commit stamped the state the removal had cleared).
@example(Program(2, ((_slow(0),), (Step("remove", 0, pause=1.0),))))
# A call longer than idle_ttl: the reaper may look at the session as it finishes, and
# must count its idle time from then (it counted from the call's start and expired it).
@example(Program(2, ((_slow(0),) * 3, (_slow(1),) * 3), idle_ttl=2.0))
def test_random_programs_match_the_sequential_model(program: Program) -> None:
    run_and_check(program)


# -- the property can fail ------------------------------------------------------------
# Each mutation breaks the session actor in the test process only; the property must
# find a counterexample (it does within a few examples; derandomized, so stable).


def _stamp_without_bump(self: SessionActor, state: SessionState, result: Any) -> SessionState:
    return attrs.evolve(_STAMP(self, state, result), version=state.version)


_STAMP = SessionActor._stamp
MUTATIONS = {
    # I3: a commit that does not increment the version
    "stamp": (SessionActor, "_stamp", _stamp_without_bump),
    # I3: expected_version ignored
    "check_version": (_actor_module, "_check_version", lambda state, expected: None),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_model_catches_a_broken_session_actor(
    monkeypatch: pytest.MonkeyPatch, mutation: str
) -> None:
    monkeypatch.setattr(*MUTATIONS[mutation])
    find = settings(
        max_examples=100,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        report_multiple_bugs=False,
        deadline=None,
    )(given(programs())(run_and_check))
    with pytest.raises(AssertionError):
        find()
