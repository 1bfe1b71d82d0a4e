"""Output backpressure: a client that does not read its answers makes the server stop
reading requests, so the output it holds stays bounded; serving resumes when the client
reads."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import triact
from triact.transport import McpServer, ServerOptions

BOUND = 64 * 1024
REQUESTS = 10_000


def request(request_id: int, session_id: str) -> bytes:
    params = {"name": "session_get", "arguments": {"session_id": session_id}}
    message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    return json.dumps(message).encode() + b"\n"


@asynccontextmanager
async def connection(
    kind: str,
) -> AsyncIterator[
    tuple[trio.abc.HalfCloseableStream, trio.abc.ReceiveStream, trio.abc.SendStream]
]:
    """The client's stream, and the server's receiving and sending ends: a socket pair,
    or two pipes (as stdio serves them: the server reads and writes them directly)."""
    if kind == "socket":
        client_socket, server_socket = trio.socket.socketpair()
        client = trio.SocketStream(client_socket)
        server_end = trio.SocketStream(server_socket)
        async with client, server_end:
            yield client, server_end, server_end
        return
    to_server, from_server = os.pipe(), os.pipe()
    client_send = trio.lowlevel.FdStream(to_server[1])
    server_receive = trio.lowlevel.FdStream(to_server[0])
    server_send = trio.lowlevel.FdStream(from_server[1])
    client_receive = trio.lowlevel.FdStream(from_server[0])
    stapled = trio.StapledStream(client_send, client_receive)
    async with server_receive, server_send, stapled:
        yield stapled, server_receive, server_send


@pytest.mark.parametrize("kind", ["socket", "pipe"])
async def test_a_client_that_does_not_read_stops_the_server_reading(kind: str) -> None:
    # Real sockets or pipes: the server's writes block once the kernel's buffers are full.
    async with (
        connection(kind) as (client, server_receive, server_send),
        triact.open_session_manager() as manager,
        trio.open_nursery() as nursery,
    ):
        session = await manager.create_session(metadata={"pad": "x" * 1000})
        server = McpServer(manager, options=ServerOptions(max_output_bytes=BOUND))
        nursery.start_soon(server.serve, server_receive, server_send)
        await client.send_all(
            b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
            b'"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}\n'
            + request(REQUESTS + 1, session.id)
        )
        # The size of one answer (the largest id's): the initialize answer, then it.
        received = b""
        while received.count(b"\n") < 2:
            received += await client.receive_some(1 << 16)
        first, second, rest = received.split(b"\n", 2)
        answer_size = len(second) + 1
        requests = b"".join(request(i, session.id) for i in range(1, REQUESTS + 1))
        sent = trio.Event()

        async def send_all() -> None:
            await client.send_all(requests)
            sent.set()

        nursery.start_soon(send_all)
        await trio.testing.wait_all_tasks_blocked()
        assert json.loads(first)["id"] == 0
        # Unbounded, the server would now hold all the answers (REQUESTS of about 3 KB).
        # It holds its bound plus the answers to one read of input (64 KiB of requests).
        one_read = (64 * 1024 // len(request(1, session.id)) + 1) * answer_size
        assert 0 < server.output_backlog <= BOUND + one_read < REQUESTS * answer_size // 4
        assert not sent.is_set()  # the server stopped reading: the requests wait

        buffer, answered = rest, {0, REQUESTS + 1}
        with trio.fail_after(60):  # a guard: serving resumes as soon as the client reads
            while len(answered) < REQUESTS + 2:
                buffer += await client.receive_some(1 << 20)
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    message = json.loads(line)
                    assert "result" in message, message
                    answered.add(message["id"])
        assert answered == set(range(REQUESTS + 2))
        await sent.wait()
        # The client may read the last bytes before the writer task sees its write done.
        await trio.testing.wait_all_tasks_blocked()
        assert server.output_backlog == 0
        await client.send_eof()


class _TaskSteps(trio.abc.Instrument):
    """Counts the steps of the tasks whose name holds ``part``."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.part in task.name:
            self.steps += 1


async def test_a_burst_of_answers_is_written_without_a_step_of_the_writer() -> None:
    # Over a pipe with room, the worker that answered a burst writes its answers when
    # it is done with it (in order, in one write); the writer task stays parked.
    config = triact.SessionConfig(schedule_slice=60.0)  # no actor yields in the burst
    async with (
        connection("pipe") as (client, server_receive, server_send),
        triact.open_session_manager(config) as manager,
        trio.open_nursery() as nursery,
    ):
        session = await manager.create_session()
        nursery.start_soon(McpServer(manager).serve, server_receive, server_send)
        await client.send_all(
            b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
            b'"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}\n'
        )
        assert json.loads(await client.receive_some(1 << 16))["id"] == 0
        await trio.testing.wait_all_tasks_blocked()
        writer = _TaskSteps("_write_loop")
        trio.lowlevel.add_instrument(writer)
        try:
            await client.send_all(b"".join(request(i, session.id) for i in range(1, 51)))
            received = b""
            while received.count(b"\n") < 50:
                received += await client.receive_some(1 << 20)
        finally:
            trio.lowlevel.remove_instrument(writer)
        answers = [json.loads(line) for line in received.splitlines()]
        assert [answer["id"] for answer in answers] == list(range(1, 51))  # in order
        assert all(answer["result"]["isError"] is False for answer in answers)
        assert writer.steps == 0
        await client.send_eof()
