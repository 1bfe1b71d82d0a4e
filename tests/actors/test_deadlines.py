"""DeadlineQueue: wakes only for what comes due."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from triact.actors import DeadlineQueue


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
