"""``triact demo``: the actor runtime in a few lines of output."""

from __future__ import annotations

import trio
import trio.lowlevel

from .actors import Actor, ActorFailedError, RestartPolicy, open_supervisor


class Counter(Actor[int, int]):
    """Adds what it is told; replies with the running total."""

    def __init__(self) -> None:
        self.total = 0

    def receive(self, message: int) -> int:
        self.total += message
        return self.total


class Flaky(Actor[str, str]):
    """Crashes on "boom": its state is declared broken, so it restarts."""

    fatal_exceptions = (RuntimeError,)

    def __init__(self) -> None:
        self.seen = 0

    async def receive(self, message: str) -> str:
        await trio.lowlevel.checkpoint()
        if message == "boom":
            raise RuntimeError("boom")
        self.seen += 1
        return f"{message} (message {self.seen} since the last start)"


async def demo() -> None:
    """Print what the runtime guarantees, one step at a time."""
    async with open_supervisor(restart=RestartPolicy(max_restarts=1, within=60)) as sup:
        counter = sup.spawn(Counter, name="counter")
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(counter.ask, 1)
        print(f"1,000 concurrent asks, one at a time: total = {await counter.ask(0)}")

        flaky = sup.spawn(Flaky, name="flaky")
        print("flaky:", await flaky.ask("hello"))
        for attempt in (1, 2):
            try:
                await flaky.ask("boom")
            except RuntimeError as exc:
                print(f"flaky crash {attempt}: the asker got {exc!r}")
            try:
                print("flaky after the crash:", await flaky.ask("hello"))
            except ActorFailedError as exc:
                print(f"flaky gave up (restart policy): {exc}")

        sup.spawn(Counter, name="sleepy", idle_timeout=0.05)
        print("sleepy running:", sup.get("sleepy") is not None)
        await trio.sleep(0.1)
        print("sleepy after 0.1 s idle:", sup.get("sleepy"))
    print("supervisor closed; failures reported:", len(sup.failures))
