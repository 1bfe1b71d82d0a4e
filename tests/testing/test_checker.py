"""The history checker: correct histories pass, and each kind of broken history is
caught and reported as a short, readable history."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from triact.testing import (
    DataChange,
    History,
    HistoryViolation,
    Operation,
    check_history,
    find_violations,
)

INCR = DataChange(increment={"n": 1})


class Script:
    """Builds a history by hand: ``call`` and ``ret`` are event numbers (also used as
    Trio times), so that real-time order is explicit."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.ids = itertools.count()
        self.shutdown: int | None = None

    def op(
        self,
        task: str,
        kind: str,
        call: int,
        ret: int | None,
        outcome: str = "ok",
        version: int | None = None,
        data: Mapping[str, Any] | None = None,
        change: DataChange | None = None,
        expected: int | None = None,
        session: str = "s",
        removed: bool | None = None,
    ) -> Operation:
        op = Operation(
            id=next(self.ids),
            task=task,
            session_id=session,
            kind=kind,  # type: ignore[arg-type]
            call_seq=call,
            called_at=float(call),
            change=change,
            expected_version=expected,
            return_seq=ret,
            returned_at=None if ret is None else float(ret),
            outcome=outcome if ret is not None else None,  # type: ignore[arg-type]
            version=version,
            data=data,
            removed=removed,
            touches=kind != "remove",
        )
        self.ops.append(op)
        return op

    def create(self, call: int = 0, ret: int = 1, session: str = "s") -> Operation:
        return self.op("setup", "create", call, ret, version=1, data={}, session=session)

    def history(self) -> History:
        return History(sorted(self.ops, key=lambda op: op.call_seq), self.shutdown)


def caught(script: Script, **kwargs: Any) -> HistoryViolation:
    with pytest.raises(HistoryViolation) as info:
        check_history(script.history(), **kwargs)
    return info.value


# -- histories that are fine -----------------------------------------------------------


def test_a_concurrent_history_with_a_serial_explanation_passes() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 10, version=2, data={"n": 1}, change=INCR)
    h.op("b", "read", 3, 4, version=1, data={})  # overlaps the update: before it
    h.op("c", "read", 5, 12, version=2, data={"n": 1})  # overlaps it: after it
    h.op("b", "update", 11, 14, version=3, data={"n": 2}, change=INCR, expected=2)
    h.op("a", "update", 13, 15, "conflict", version=3, change=INCR, expected=2)
    h.op("a", "update", 16, 17, "raised", change=INCR)  # failed: no effect
    h.op("c", "end", 18, 19, version=3, data={"n": 2})
    h.op("b", "read", 20, 21, "gone")
    check_history(h.history())


def test_a_history_that_starts_mid_way_passes() -> None:
    h = Script()  # no create: the session was at version 7 before recording began
    h.op("a", "read", 0, 1, version=7, data={"n": 5})
    h.op("a", "update", 2, 3, version=8, data={"n": 6}, change=INCR)
    check_history(h.history())


# -- each broken history is caught -----------------------------------------------------


def test_a_lost_update_is_caught() -> None:
    h = Script()
    h.create()
    first = h.op("a", "update", 2, 4, version=2, data={"n": 1}, change=INCR)
    second = h.op("b", "update", 3, 5, version=2, data={"n": 1}, change=INCR)
    violation = caught(h)
    assert "two updates both committed version 2" in str(violation)
    assert violation.operations == [first, second]


def test_a_lost_update_hidden_behind_a_new_version_is_caught_by_the_data() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 4, version=2, data={"a": 1}, change=DataChange(set={"a": 1}))
    # computed from version 1's data, committed as version 3: "a" is lost
    h.op("b", "update", 3, 5, version=3, data={"b": 1}, change=DataChange(set={"b": 1}))
    violation = caught(h)
    assert "state at version 3" in str(violation)
    assert "expected data {'a': 1, 'b': 1}" in str(violation)


def test_a_duplicated_message_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 3, version=2, data={"n": 1}, change=INCR)
    h.op("b", "read", 4, 5, version=3, data={"n": 2})  # the increment ran twice
    violation = caught(h)
    assert "version 3 was committed by no acknowledged update" in str(violation)
    assert violation.invariant == "I3 versioned"


def test_an_out_of_order_commit_is_caught() -> None:
    h = Script()
    h.create()
    first = h.op("a", "update", 2, 3, version=3, data={"n": 2}, change=INCR)
    second = h.op("a", "update", 4, 5, version=2, data={"n": 1}, change=INCR)
    violation = caught(h)
    assert violation.invariant == "I1/I3 linearizability"
    assert violation.operations == [first, second]


def test_a_stale_read_is_caught() -> None:
    h = Script()
    h.create()
    update = h.op("a", "update", 2, 3, version=2, data={"n": 1}, change=INCR)
    read = h.op("b", "read", 4, 5, version=1, data={})  # called after the commit returned
    violation = caught(h)
    assert violation.operations == [update, read]
    message = str(violation)
    assert "version 2 came after op 2, which saw version 1, was called" in message
    assert "op 1, which committed version 2, had returned before that" in message


def test_a_skipped_version_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 3, version=2, data={"n": 1}, change=INCR)
    h.op("a", "update", 4, 5, version=4, data={"n": 2}, change=INCR)
    violation = caught(h)
    assert "version 3 was committed by no acknowledged update" in str(violation)


def test_a_failed_update_that_left_a_trace_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 3, "raised", change=DataChange(set={"x": 1}))
    h.op("a", "read", 4, 5, version=1, data={"x": 1})
    violation = caught(h)
    assert "state at version 1" in str(violation)


def test_a_commit_against_the_wrong_expected_version_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 3, version=2, data={"n": 1}, change=INCR, expected=5)
    assert "although it expected version 5" in str(caught(h))


def test_a_conflict_at_the_expected_version_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 3, "conflict", version=1, change=INCR, expected=1)
    assert "the version it expected" in str(caught(h))


def test_a_commit_after_the_end_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "end", 2, 3, version=1, data={})
    h.op("b", "update", 4, 5, version=2, data={"n": 1}, change=INCR)
    assert "end returned version 1" in str(caught(h))


def test_a_session_alive_after_its_removal_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "remove", 2, 3, removed=True)
    h.op("b", "read", 4, 5, version=1, data={})
    assert caught(h).invariant == "I1/I3 linearizability"


def test_a_session_ended_twice_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "end", 2, 3, version=1, data={})
    h.op("b", "remove", 4, 5, removed=True)
    assert "ended or removed twice" in str(caught(h))


def test_a_call_that_never_returned_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, None, change=INCR)
    assert caught(h).invariant == "I4 nothing lost"


def test_a_success_after_shutdown_began_is_caught() -> None:
    h = Script()
    h.create()
    h.shutdown = 2
    h.op("a", "read", 3, 4, version=1, data={})
    assert caught(h).invariant == "I9 clean shutdown"


def test_pipelined_calls_of_one_task_that_take_effect_out_of_order_are_caught() -> None:
    h = Script()
    h.create()
    # task a sends both before either returns: real time allows either order, its own
    # order does not
    h.op("a", "update", 2, 9, version=3, data={"n": 2}, change=INCR)
    h.op("a", "update", 3, 8, version=2, data={"n": 1}, change=INCR)
    assert "opposite order" in str(caught(h))


def test_expiry_without_idle_time_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "read", 2, 3, version=1, data={})
    h.op("a", "read", 5, 6, "gone")  # 2 s idle, idle_ttl 10 s
    violation = caught(h, idle_ttl=10.0)
    assert violation.invariant == "I5 TTL"
    check_history(h.history())  # without a TTL to check, an expiry is possible


def test_a_session_live_long_past_its_ttl_is_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "read", 30, 31, version=1, data={})  # 29 s idle, idle_ttl 10 s
    assert "yet the session was still live" in str(caught(h, idle_ttl=10.0))


# -- reports ---------------------------------------------------------------------------


def test_a_violation_lists_only_the_calls_involved_with_tasks_and_times() -> None:
    h = Script()
    h.create()
    for i in range(20):  # noise: reads of other sessions
        h.op(f"n{i}", "read", 100 + 2 * i, 101 + 2 * i, version=1, data={}, session=f"x{i}")
    h.op("a", "update", 2, 3, version=2, data={"n": 1}, change=INCR)
    h.op("b", "read", 4, 5, version=1, data={})
    violation = caught(h)
    lines = str(violation).splitlines()
    assert lines[0].startswith("I1/I3 linearizability: session 's': ")
    assert lines[1:] == [
        "  op 21 task a 2.000..3.000 (events 2..3): update(n+=1) -> ok version 2 data={'n': 1}",
        "  op 22 task b 4.000..5.000 (events 4..5): read() -> ok version 1 data={}",
    ]


def test_find_violations_reports_each_broken_session_once() -> None:
    h = Script()
    for session in ("s", "t", "u"):
        h.create(session=session)
    for session in ("s", "u"):
        h.op("a", "update", 2, 3, version=2, data={"n": 1}, change=INCR, session=session)
        h.op("b", "read", 4, 5, version=1, data={}, session=session)
        h.op("b", "read", 6, 7, version=1, data={}, session=session)
    found = find_violations(h.history())
    assert [v.session_id for v in found] == ["s", "u"]


# -- calls of unknown outcome (a node died or hung under them) -------------------------


def test_an_update_of_unknown_outcome_may_have_committed_a_version() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 9, "unknown", change=INCR)  # timed out: took effect
    h.op("b", "update", 3, 10, "unknown", change=INCR)  # timed out: did not
    h.op("c", "read", 11, 12, version=2, data={"n": 1})
    h.op("c", "update", 13, 14, version=3, data={"n": 2}, change=INCR, expected=2)
    check_history(h.history())


def test_an_update_of_unknown_outcome_is_not_an_error_by_itself() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 3, "unknown", change=INCR)
    h.op("b", "read", 4, 5, version=1, data={})
    assert find_violations(h.history()) == []


def test_more_new_versions_than_updates_of_unknown_outcome_are_caught() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 9, "unknown", change=INCR)
    h.op("c", "read", 11, 12, version=3, data={"n": 2})  # two versions, one candidate
    violation = caught(h)
    assert "version 3 was committed by no acknowledged update" in str(violation)


def test_an_update_of_unknown_outcome_called_after_the_version_was_seen_is_caught() -> None:
    h = Script()
    h.create()
    h.op("c", "read", 2, 3, version=2, data={"n": 1})
    h.op("a", "update", 4, 5, "unknown", change=INCR)  # too late to have made version 2
    violation = caught(h)
    assert "version 2 was committed by no acknowledged update" in str(violation)


def test_an_unknown_update_expecting_another_version_cannot_fill_a_gap() -> None:
    h = Script()
    h.create()
    h.op("a", "update", 2, 3, version=2, data={"n": 1}, change=INCR)
    h.op("b", "update", 4, 9, "unknown", change=INCR, expected=1)  # stale: cannot be 3
    h.op("c", "read", 10, 11, version=3, data={"n": 2})
    violation = caught(h)
    assert "version 3 was committed by no acknowledged update" in str(violation)


def test_a_lost_acknowledged_update_is_caught_despite_unknown_ones() -> None:
    h = Script()
    h.create()
    h.op("x", "update", 2, 9, "unknown", change=INCR)
    first = h.op("a", "update", 3, 5, version=2, data={"n": 1}, change=INCR)
    second = h.op("b", "update", 4, 6, version=2, data={"n": 1}, change=INCR)
    violation = caught(h)
    assert "two updates both committed version 2" in str(violation)
    assert violation.operations == [first, second]
