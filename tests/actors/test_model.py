"""Random concurrent programs against a sequential model of each actor.

Several tasks run lists of operations (ask, tell, send, with timeouts and
cancellations, failing and slow handlers, time jumps) against a few actors under
one supervisor and Trio's autojump clock. Afterwards, for each actor:

* its handlers never overlapped (I1, serial);
* asks and tells were handled in the order they were accepted (I1, order);
* every accepted tell/send was handled exactly once, every ask that returned or
  raised the handler's error was handled exactly once, every ask refused with
  MailboxFullError never ran, and every cancelled ask either never ran or was
  cancelled inside its handler (exactly once or not at all);
* each reply equals what a plain sequential replay of the handled messages gives.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from triact.actors import Actor, MailboxFullError, open_supervisor


@attrs.frozen
class Msg:
    id: int
    fail: bool
    duration: float


@attrs.frozen
class Op:
    kind: str  # "ask" | "tell" | "send" | "sleep"
    actor: int
    fail: bool
    duration: float
    timeout: float | None


class Logged(Actor[Msg, int]):
    """Counts successful messages; logs every start and end in a shared log."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log
        self.count = 0

    async def receive(self, message: Msg) -> int:
        self.log.append(("start", message.id))
        try:
            if message.duration:
                await trio.sleep(message.duration)
            else:
                await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            self.log.append(("cancelled", message.id))
            raise
        if message.fail:
            self.log.append(("failed", message.id))
            raise ValueError(message.id)
        self.count += 1
        self.log.append(("done", message.id))
        return self.count


ops = st.one_of(
    st.builds(
        Op,
        kind=st.sampled_from(["ask", "tell", "send"]),
        actor=st.integers(0, 2),
        fail=st.booleans(),
        duration=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
        timeout=st.one_of(st.none(), st.sampled_from([0.25, 1.0, 2.0, 5.0])),
    ),
    st.builds(
        Op,
        kind=st.just("sleep"),
        actor=st.just(0),
        fail=st.just(False),
        duration=st.sampled_from([0.1, 1.0, 2.5]),
        timeout=st.none(),
    ),
)
programs = st.lists(st.lists(ops, max_size=12), min_size=1, max_size=4)


@attrs.define
class Record:
    op: Op
    msg: Msg
    accepted_seq: int | None = None  # order of acceptance, for ask and tell
    result: Any = None


async def run_program(program: list[list[Op]]) -> tuple[list[Record], list[list[Any]]]:
    ids = itertools.count()
    seqs = itertools.count()
    records: list[Record] = []
    logs: list[list[tuple[str, int]]] = [[] for _ in range(3)]

    async with open_supervisor(shutdown_grace=1000.0) as sup:
        refs = [
            sup.spawn(lambda log=log: Logged(log), mailbox_size=3)  # type: ignore[misc]
            for log in logs
        ]

        async def client(task_ops: list[Op]) -> None:
            for op in task_ops:
                if op.kind == "sleep":
                    await trio.sleep(op.duration)
                    continue
                rec = Record(op, Msg(next(ids), op.fail, op.duration))
                records.append(rec)
                ref = refs[op.actor]
                try:
                    if op.kind == "tell":
                        ref.tell(rec.msg)
                        rec.accepted_seq = next(seqs)
                        rec.result = "told"
                    elif op.kind == "send":
                        await ref.send(rec.msg)
                        rec.result = "told"
                    else:
                        # ask accepts before its first schedule point, so the
                        # sequence number taken here is the acceptance order
                        rec.accepted_seq = next(seqs)
                        rec.result = await ref.ask(rec.msg, timeout=op.timeout)
                except (MailboxFullError, ValueError, trio.TooSlowError) as exc:
                    rec.result = exc

        async with trio.open_nursery() as nursery:
            for task_ops in program:
                nursery.start_soon(client, task_ops)
    return records, [list(log) for log in logs]


def pairs(log: list[tuple[str, int]]) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    return list(zip(log[::2], log[1::2], strict=True))


def check(records: list[Record], logs: list[list[tuple[str, int]]]) -> None:
    by_id = {rec.msg.id: rec for rec in records}
    for actor, log in enumerate(logs):
        # serial: a start is always followed by the end of the same message
        assert len(log) % 2 == 0, log
        handled = []
        for (start, sid), (end, eid) in pairs(log):
            assert start == "start", log
            assert end in ("done", "failed", "cancelled"), log
            assert sid == eid, f"handlers overlapped on actor {actor}: {log}"
            handled.append((sid, end))
        ids = [i for i, _ in handled]
        assert len(ids) == len(set(ids)), f"a message ran twice: {log}"

        # order: asks and tells start in acceptance order
        seqs = [by_id[i].accepted_seq for i in ids if by_id[i].accepted_seq is not None]
        assert seqs == sorted(seqs), f"out of order on actor {actor}: {log}"

        # replies match a sequential replay of what was handled
        count = 0
        for i, end in handled:
            rec = by_id[i]
            if end == "done":
                count += 1
                if rec.op.kind == "ask" and not isinstance(rec.result, BaseException):
                    assert rec.result == count, (rec, log)

    handled_ends = {i: end for log in logs for (_, i), (end, _) in pairs(log)}
    for rec in records:
        end = handled_ends.get(rec.msg.id)
        if rec.result == "told":
            assert end in ("done", "failed"), f"accepted tell not handled: {rec}"
        elif isinstance(rec.result, MailboxFullError):
            assert end is None, f"refused message ran: {rec}"
        elif isinstance(rec.result, ValueError):
            assert end == "failed", rec
        elif isinstance(rec.result, trio.TooSlowError):
            assert end in (None, "cancelled"), rec
        else:
            assert end == "done", rec


@given(programs)
def test_random_programs_match_the_sequential_model(program: list[list[Op]]) -> None:
    records, logs = trio.run(
        run_program, program, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    check(records, logs)
