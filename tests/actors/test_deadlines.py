"""DeadlineQueue and IdDeadlineQueue: wake only for what comes due."""

from __future__ import annotations

import gc
import math
from collections import Counter
from collections.abc import Callable

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from triact.actors import DeadlineQueue, IdDeadlineQueue


async def test_due_items_are_handled_in_deadline_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    seen: list[tuple[str, float]] = []

    def on_due(item: str, now: float) -> None:
        seen.append((item, now))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, on_due)
        await trio.testing.wait_all_tasks_blocked()
        queue.push(5.0, "late")
        queue.push(1.0, "early")  # earlier than what the task sleeps until
        queue.push(3.0, "middle")
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert seen == [("early", 1.0), ("middle", 3.0), ("late", 5.0)]
    assert len(queue) == 0


async def test_on_due_can_re_arm(autojump_clock: trio.testing.MockClock) -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    times: list[float] = []

    def on_due(item: str, now: float) -> float | None:
        times.append(now)
        return now + 2.0 if len(times) < 3 else None

    queue.push(1.0, "x")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, on_due)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert times == pytest.approx([1.0, 3.0, 5.0])


async def test_work_is_proportional_to_what_comes_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: DeadlineQueue[int] = DeadlineQueue()
    calls: list[int] = []
    for i in range(10_000):
        queue.push(1000.0 + i, i)
    for i in range(10):
        queue.push(1.0, -i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, lambda item, now: calls.append(item))
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert sorted(calls) == sorted(-i for i in range(10))
    assert len(queue) == 10_000


async def test_mass_expiry_yields_to_other_tasks(autojump_clock: trio.testing.MockClock) -> None:
    queue: DeadlineQueue[int] = DeadlineQueue()
    for i in range(5000):
        queue.push(1.0, i)
    handled = 0
    observed: list[int] = []

    def on_due(item: int, now: float) -> None:
        nonlocal handled
        handled += 1

    async def observer() -> None:
        await trio.sleep_until(1.0)
        while handled < 5000:
            observed.append(handled)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, on_due)
        nursery.start_soon(observer)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert handled == 5000
    assert any(0 < seen < 5000 for seen in observed)


async def test_orderable_items_due_at_the_same_time_are_all_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: DeadlineQueue[int] = DeadlineQueue(orderable=True)
    seen: list[int] = []

    def on_due(item: int, now: float) -> float | None:
        seen.append(item)
        return now + 1.0 if item == 3 and seen.count(3) == 1 else None

    for item in (3, 1, 2):
        queue.push(1.0, item)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, on_due)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert seen == [1, 2, 3, 3]  # ties in the items' own order; 3 re-armed once
    assert len(queue) == 0


# -- IdDeadlineQueue: the same, for string ids, out of the collector's sight --------


async def _serve(
    queue: IdDeadlineQueue, on_due: Callable[[str, float], float | None], until: float
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, on_due)
        await trio.sleep_until(until)
        nursery.cancel_scope.cancel()


async def test_ids_come_due_by_deadline_then_id(autojump_clock: trio.testing.MockClock) -> None:
    queue = IdDeadlineQueue()
    seen: list[tuple[str, float]] = []
    # In later seconds (buckets), in the current one, and tied.
    for deadline, item in ((3.5, "c"), (1.25, "b"), (3.5, "a"), (1.25, "a"), (0.0, "z")):
        queue.push(deadline, item)
    assert len(queue) == 5
    await _serve(queue, lambda item, now: seen.append((item, now)), 10)
    assert seen == [("z", 0.0), ("a", 1.25), ("b", 1.25), ("a", 3.5), ("c", 3.5)]
    assert len(queue) == 0


async def test_an_id_pushed_while_it_sleeps_wakes_it_earlier(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = IdDeadlineQueue()
    seen: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, lambda item, now: seen.append((item, now)))
        await trio.testing.wait_all_tasks_blocked()
        queue.push(50.0, "late")
        queue.push(20.0, "bucket")  # a later second: a bucket
        await trio.sleep(10.5)
        queue.push(10.75, "this second")  # before the next whole second: the heap
        queue.push(4.0, "past")  # already due: handled at once
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert seen == [("past", 10.5), ("this second", 10.75), ("bucket", 20.0), ("late", 50.0)]


async def test_on_due_re_arms_or_drops_an_id(autojump_clock: trio.testing.MockClock) -> None:
    queue = IdDeadlineQueue()
    times: dict[str, list[float]] = {"kept": [], "dropped": []}

    def on_due(item: str, now: float) -> float | None:
        times[item].append(now)
        if item == "kept" and len(times[item]) < 3:
            return now + 2.5  # rescheduled: into a later bucket
        return None  # removed

    queue.push(1.0, "kept")
    queue.push(2.0, "dropped")
    await _serve(queue, on_due, 20)
    assert times == {"kept": [1.0, 3.5, 6.0], "dropped": [2.0]}
    assert len(queue) == 0


async def test_re_armed_in_the_past_is_handled_again_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = IdDeadlineQueue()
    seen: list[tuple[str, float]] = []

    def on_due(item: str, now: float) -> float | None:
        seen.append((item, now))
        return now - 5.0 if len(seen) == 1 else None

    queue.push(2.0, "x")
    await _serve(queue, on_due, 5)
    assert seen == [("x", 2.0), ("x", 2.0)]


async def test_an_empty_queue_never_calls(autojump_clock: trio.testing.MockClock) -> None:
    queue = IdDeadlineQueue()
    seen: list[str] = []
    await _serve(queue, lambda item, now: seen.append(item), 1e6)
    assert seen == []
    assert len(queue) == 0


async def test_an_infinite_deadline_never_comes_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = IdDeadlineQueue()
    seen: list[str] = []
    queue.push(math.inf, "never")
    queue.push(1e300, "much later")
    queue.push(-math.inf, "always")
    await _serve(queue, lambda item, now: seen.append(item), 1e6)
    assert seen == ["always"]
    assert len(queue) == 2


def test_a_nan_deadline_is_refused() -> None:
    queue = IdDeadlineQueue()
    with pytest.raises(ValueError, match="NaN"):
        queue.push(math.nan, "x")
    assert len(queue) == 0


async def test_any_string_round_trips(autojump_clock: trio.testing.MockClock) -> None:
    queue = IdDeadlineQueue()
    odd = ["", "é", "\U0001f600", "a\x00b", "\udcff", "x" * 70_000]
    for item in odd:
        queue.push(7.0, item)
    seen: list[str] = []
    await _serve(queue, lambda item, now: seen.append(item), 8)
    assert seen == sorted(odd)


def test_the_collector_does_not_walk_the_entries() -> None:
    queue = IdDeadlineQueue()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(20_000):
        queue.push(100.0 + i / 7, f"session-{i}")
    gc.collect()
    assert len(gc.get_objects()) - before < 10  # no container per entry...
    referents = [
        obj
        for obj in gc.get_referents(queue)
        if isinstance(obj, (list, dict)) and gc.is_tracked(obj) and len(obj) > 100
    ]
    assert referents == []  # ... and no tracked container holding them
    assert len(queue) == 20_000


async def test_a_large_bucket_is_opened_with_schedule_points(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = IdDeadlineQueue()
    for i in range(5000):
        queue.push(3.5, f"s{i:04}")  # one second's bucket
    handled: list[str] = []
    observed: list[int] = []

    def on_due(item: str, now: float) -> float | None:
        handled.append(item)
        if item == "s0000":
            queue.push(3.5, "t, pushed while handling")  # due now: handled in this pass
        return None

    async def observer() -> None:
        await trio.sleep_until(3.5)
        while len(handled) < 5001:
            observed.append(len(handled))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, on_due)
        nursery.start_soon(observer)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert handled == [f"s{i:04}" for i in range(5000)] + ["t, pushed while handling"]
    assert any(0 < seen < 5001 for seen in observed)
    assert len(queue) == 0


# The property: against a sorted list, over pushes before and while it runs, re-arms
# (past, present and future) and drops. Deadlines are quarters of a second, pushes
# come an eighth past a second, so that no push and no deadline share an instant.
_END = 40.2
_IDS = st.sampled_from(["a", "b", "c", "ab", "é", ""])
_DEADLINES = st.one_of(
    st.integers(min_value=-8, max_value=160).map(lambda k: k / 4), st.just(math.inf)
)
_PUSHES = st.lists(
    st.tuples(st.integers(min_value=0, max_value=38).map(lambda j: j + 0.125), _DEADLINES, _IDS),
    max_size=30,
)
_REARMS = st.dictionaries(_IDS, st.lists(_DEADLINES, max_size=3))


def _model(
    initial: list[tuple[float, str]],
    pushes: list[tuple[float, float, str]],
    rearms: dict[str, list[float]],
) -> tuple[list[tuple[str, float]], int]:
    entries = list(initial)
    pending = sorted(pushes)
    calls: list[tuple[str, float]] = []
    counts: Counter[str] = Counter()

    def drain(now: float) -> None:
        while entries and min(entries)[0] <= now:
            entry = min(entries)
            entries.remove(entry)
            calls.append((entry[1], now))
            script, done = rearms.get(entry[1], []), counts[entry[1]]
            counts[entry[1]] += 1
            if done < len(script):
                entries.append((script[done], entry[1]))

    drain(0.0)
    while True:
        due = min(entries)[0] if entries else math.inf
        push_at = pending[0][0] if pending else math.inf
        if min(due, push_at) > _END:
            return calls, len(entries)
        if push_at < due:
            while pending and pending[0][0] == push_at:
                _, deadline, item = pending.pop(0)
                entries.append((deadline, item))
            drain(push_at)
        else:
            drain(due)


async def _real(
    initial: list[tuple[float, str]],
    pushes: list[tuple[float, float, str]],
    rearms: dict[str, list[float]],
) -> tuple[list[tuple[str, float]], int]:
    queue = IdDeadlineQueue()
    calls: list[tuple[str, float]] = []
    counts: Counter[str] = Counter()

    def on_due(item: str, now: float) -> float | None:
        calls.append((item, now))
        script, done = rearms.get(item, []), counts[item]
        counts[item] += 1
        return script[done] if done < len(script) else None

    for deadline, item in initial:
        queue.push(deadline, item)
    by_time: dict[float, list[tuple[float, str]]] = {}
    for at, deadline, item in pushes:
        by_time.setdefault(at, []).append((deadline, item))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, on_due)
        for at in sorted(by_time):
            await trio.sleep_until(at)
            for deadline, item in by_time[at]:  # no schedule point between them
                queue.push(deadline, item)
        await trio.sleep_until(_END)
        nursery.cancel_scope.cancel()
    return calls, len(queue)


@given(st.lists(st.tuples(_DEADLINES, _IDS), max_size=30), _PUSHES, _REARMS)
def test_id_deadlines_match_a_sorted_list(
    initial: list[tuple[float, str]],
    pushes: list[tuple[float, float, str]],
    rearms: dict[str, list[float]],
) -> None:
    expected = _model(initial, pushes, rearms)
    got = trio.run(
        _real, initial, pushes, rearms, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert got == expected
