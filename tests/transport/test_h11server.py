"""triact's HTTP/1.1 server (``triact.transport._h11server``): real loopback sockets
in the test's Trio run, small ASGI apps, and raw requests: each limit, timeout and error
path, pipelining, HTTP/1.0, disconnects and the graceful stop."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import attrs
import h11
import pytest
import trio
import trio.testing

from triact.transport import _h11server
from triact.transport._h11server import (
    HttpServerOptions,
    _head_bytes,
    _request_headers,
    serve_http,
)


@attrs.define
class Seen:
    """What the test app saw."""

    requests: list[tuple[str, str, bytes]] = attrs.Factory(list)
    versions: list[str] = attrs.Factory(list)
    targets: list[tuple[str, bytes, bytes]] = attrs.Factory(list)  # path, raw, query
    began: int = 0  # apps started
    partial: int = 0  # bodies' parts received with more to come
    disconnects: int = 0
    cancelled: int = 0
    finished: int = 0
    changed: trio.Event = attrs.Factory(trio.Event)

    def note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, test: Callable[[], bool]) -> None:
        while not test():
            await self.changed.wait()


def make_app(seen: Seen) -> Any:
    """An ASGI app whose path says what to do: ``/echo`` answers the body; ``/sleep/S``
    sleeps S seconds first; ``/raise`` raises; ``/raise-late`` raises once its answer
    started; ``/watch`` waits for the client to go away; ``/stream/N`` streams N
    chunks; ``/flood`` streams until the client goes away; ``/nothing`` answers
    nothing; ``/late-body/S`` sleeps S seconds before it reads its body; ``/unread``
    answers 401 without reading its body."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        seen.began += 1
        seen.note()
        if scope["path"] == "/unread":
            seen.requests.append((scope["method"], scope["path"], b""))
            headers = [(b"content-length", b"6")]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": b"denied"})
            return
        if scope["path"].startswith("/late-body/"):
            await trio.sleep(float(scope["path"].rsplit("/", 1)[1]))
        chunks = []
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                seen.disconnects += 1
                seen.note()
                return
            chunks.append(event["body"])
            if not event["more_body"]:
                break
            seen.partial += 1
            seen.note()
        body = b"".join(chunks)
        path = scope["path"]
        seen.requests.append((scope["method"], path, body))
        seen.versions.append(scope["http_version"])
        seen.targets.append((path, scope["raw_path"], scope["query_string"]))
        seen.note()
        try:
            await _answer(path, body, receive, send, seen)
        except trio.Cancelled:
            seen.cancelled += 1
            seen.note()
            raise
        seen.finished += 1
        seen.note()

    return app


async def _watch(receive: Any, seen: Seen, answer: trio.CancelScope) -> None:
    """Wait for the client to go away, then end the answer."""
    event = await receive()
    assert event["type"] == "http.disconnect"
    seen.disconnects += 1
    seen.note()
    answer.cancel()


async def _answer(path: str, body: bytes, receive: Any, send: Any, seen: Seen) -> None:
    start = {"type": "http.response.start", "status": 200, "headers": []}
    if path.startswith("/sleep/"):
        await trio.sleep(float(path.rsplit("/", 1)[1]))
    elif path == "/raise":
        raise RuntimeError("the app failed")
    elif path == "/raise-late":
        await send(start)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("the app failed midway")
    elif path == "/nothing":
        return
    elif path == "/bad-header":  # a header that would split the answer
        await send({**start, "headers": [(b"x-injected", b"a\r\nset-cookie: b")]})
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/watch":
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch, receive, seen, nursery.cancel_scope)
            await trio.sleep_forever()
        return
    elif path.startswith("/stream/"):
        await send(start)
        for i in range(int(path.rsplit("/", 1)[1])):
            await send({"type": "http.response.body", "body": b"chunk%d;" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/flood":
        await send(start)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch, receive, seen, nursery.cancel_scope)
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body or path))]
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body or path.encode()})


@attrs.define
class Served:
    port: int
    url: str
    stop: trio.Event
    seen: Seen
    stopped: trio.Event
    clients: list[trio.SocketStream] = attrs.Factory(list)


@asynccontextmanager
async def serving(host: str = "127.0.0.1", **options: Any) -> AsyncIterator[Served]:
    seen = Seen()
    stop = trio.Event()
    stopped = trio.Event()
    settings = HttpServerOptions(**options)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_http(make_app(seen), host, 0, settings, stop=stop, task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(run)
        port = int(urls[0].rsplit(":", 1)[1])
        served = Served(port, urls[0], stop, seen, stopped)
        try:
            yield served
        finally:
            stop.set()
            for stream in served.clients:
                stream.socket.close()


class Client:
    """A raw HTTP/1.1 connection: requests as bytes, answers parsed by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, served: Served, host: str = "127.0.0.1") -> Client:
        stream = await trio.open_tcp_stream(host, served.port)
        served.clients.append(stream)
        return cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def post(self, path: str, body: bytes = b"", extra: bytes = b"") -> None:
        await self.send(request(path, body, extra))

    async def _more(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        self.buffer += data
        return bool(data)

    async def answer(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert await self._more(), f"closed before an answer: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buffer:
                    assert await self._more()
                size_line, _, rest = self.buffer.partition(b"\r\n")
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    assert await self._more()
                    size_line, _, rest = self.buffer.partition(b"\r\n")
                body += rest[:size]
                self.buffer = rest[size + 2 :]
                if size == 0:
                    break
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            while len(self.buffer) < length:
                assert await self._more()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        else:  # until the connection closes
            while await self._more():
                pass
            body, self.buffer = self.buffer, b""
        return int(status_line.split(b" ")[1]), headers, body

    async def closed(self) -> bool:
        """Whether the server closes the connection (reading whatever comes first)."""
        while await self._more():
            pass
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


def request(path: str, body: bytes = b"", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST %s HTTP/%s\r\nhost: test\r\ncontent-length: %d\r\n%s\r\n%s" % (
        path.encode(),
        version,
        len(body),
        extra,
        body,
    )


async def test_an_answer_comes_whole_with_a_date_and_no_server_header() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.post("/echo", b"hello")
        status, headers, body = await client.answer()
        assert (status, body) == (200, b"hello")
        assert b"date" in headers
        assert b"server" not in headers
        # Keep-alive: the connection carries the next request.
        await client.post("/echo", b"again")
        assert (await client.answer())[2] == b"again"
        assert served.seen.requests == [("POST", "/echo", b"hello"), ("POST", "/echo", b"again")]


async def test_an_answer_whose_body_comes_whole_is_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[bytes] = []
    send_all = trio.SocketStream.send_all

    async def recorded(self: trio.SocketStream, data: Any) -> None:
        writes.append(bytes(data))
        await send_all(self, data)

    async with serving() as served:
        client = await Client.open(served)
        monkeypatch.setattr(trio.SocketStream, "send_all", recorded)
        await client.post("/echo", b"hello")
        assert (await client.answer())[2] == b"hello"
        monkeypatch.undo()
    server_writes = [write for write in writes if write.startswith(b"HTTP/1.1")]
    assert len(server_writes) == 1
    assert server_writes[0].endswith(b"\r\n\r\nhello")


async def test_a_streamed_answer_is_chunked() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.post("/stream/3")
        _, headers, body = await client.answer()
        assert headers[b"transfer-encoding"] == b"chunked"
        assert body == b"chunk0;chunk1;chunk2;"
        await client.post("/echo", b"next")  # and the connection goes on
        assert (await client.answer())[2] == b"next"


async def test_a_malformed_request_gets_400_and_the_server_goes_on() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, _ = await client.answer()
        assert status == 400
        assert headers[b"connection"] == b"close"
        assert await client.closed()
        other = await Client.open(served)
        await other.post("/echo", b"fine")
        assert (await other.answer())[:1] == (200,)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /echo HTTP/1.1\r\nhost: t\r\nauthorization : Bearer SECRETSECRETSECRET\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nhost: t\r\nauthorization: Bearer SECRETSECRETSECRET\x00\r\n\r\n",
        b"POST /echo?token=SECRETSECRETSECRET HTTP/1.1 x\r\nhost: t\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        b"SECRETSECRETSECRET\r\n",
    ],
)
async def test_the_log_of_a_malformed_request_never_quotes_its_bytes(
    head: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # h11's message quotes the malformed line, which logged a bearer token whose
    # header line was malformed (at debug level).
    caplog.set_level(logging.DEBUG, logger="triact.transport")
    async with serving() as served:
        client = await Client.open(served)
        await client.send(head)
        assert (await client.answer())[0] == 400
        assert await client.closed()
    logged = [record.getMessage() for record in caplog.records]
    assert any("malformed request" in line for line in logged), logged
    assert not any("SECRET" in line for line in logged), logged


async def test_a_malformed_chunked_body_closes_the_connection() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nZZZ\r\n"
        )
        status, headers, body = await client.answer()
        assert (status, headers[b"connection"]) == (400, b"close")
        assert b"malformed request body" in body
        assert await client.closed()
        assert served.seen.disconnects == 1  # the app saw its request go


def chunked_post(pieces: list[bytes]) -> bytes:
    """A chunked POST to /echo of ``pieces``, one chunk each."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return (
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        + body
        + b"0\r\n\r\n"
    )


async def test_a_chunked_body_of_too_many_small_chunks_gets_400() -> None:
    # h11 parses a chunk in about 8 us: a body of 4 Mi 1-byte chunks held the loop
    # (every client) for half a minute; one connection sending them slowed every
    # other client's answers from 1.5 to 250 ms.
    async with serving() as served:
        client = await Client.open(served)
        await client.send(chunked_post([b"x"] * 2048))
        status, _, answer = await client.answer()
        assert status == 400
        assert b"too many small chunks" in answer
        assert await client.closed()
        # 1024 of them are served, and more with 256 bytes or more in each.
        for pieces in ([b"x"] * 1024, [b"y" * 256] * 4096):
            client = await Client.open(served)
            await client.send(chunked_post(pieces))
            status, _, answer = await client.answer()
            assert (status, answer) == (200, b"".join(pieces))


@pytest.mark.parametrize("chunked", [b"chunked", b"Chunked"])
async def test_a_request_with_both_content_length_and_transfer_encoding_gets_400(
    chunked: bytes,
) -> None:
    async with serving() as served:
        client = await Client.open(served)
        body = b"5\r\nhello\r\n0\r\n\r\n"
        smuggled = request("/echo", b"smuggled")
        await client.send(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n"
            b"transfer-encoding: %s\r\n\r\n%s%s" % (len(body), chunked, body, smuggled)
        )
        status, _, answer = await client.answer()
        assert status == 400
        assert b"both Content-Length and Transfer-Encoding" in answer
        assert await client.closed()
        assert client.buffer == b""  # the request after it was not served
        assert served.seen.requests == []


async def test_an_http_1_0_request_with_transfer_encoding_gets_400() -> None:
    # h11 read its body as chunked; RFC 9112 6.1 says its framing is faulty (a proxy
    # in front might take the chunks for the next request).
    async with serving() as served:
        client = await Client.open(served)
        await client.send(
            b"POST /echo HTTP/1.0\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        status, _, answer = await client.answer()
        assert status == 400
        assert b"Transfer-Encoding in an HTTP/1.0 request" in answer
        assert await client.closed()
        assert served.seen.requests == []


async def test_a_request_head_over_the_limit_gets_431() -> None:
    async with serving(max_head_bytes=2048) as served:
        client = await Client.open(served)
        await client.send(b"POST /echo HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 4096)
        status, _, body = await client.answer()
        assert status == 431
        assert b"2048 bytes" in body
        assert await client.closed()


@pytest.mark.parametrize(
    "head",
    [
        b"POST /echo HTTP/1.1\r\nhost: t\r\nx-big: %s\r\n\r\n" % (b"a" * 4096),
        b"POST /echo?%s HTTP/1.1\r\nhost: t\r\n\r\n" % (b"a" * 4096),
        b"POST /echo HTTP/1.1\r\nhost: t\r\n%s\r\n" % (b"x: y\r\n" * 700),
    ],
)
async def test_a_whole_request_head_over_the_limit_gets_431(head: bytes) -> None:
    """h11 bounds a head still incomplete; one that arrives whole in one read is
    measured too."""
    async with serving(max_head_bytes=2048) as served:
        client = await Client.open(served)
        await client.send(head)
        status, _, body = await client.answer()
        assert status == 431
        assert b"2048 bytes" in body
        assert await client.closed()
        assert served.seen.requests == []


async def test_beyond_max_connections_a_connection_gets_503_and_is_closed() -> None:
    async with serving(max_connections=2, keep_alive=60) as served:
        first, second = await Client.open(served), await Client.open(served)
        for client in (first, second):
            await client.post("/echo", b"in")
            assert (await client.answer())[0] == 200
        third = await Client.open(served)
        await third.post("/echo", b"refused")
        status, headers, _ = await third.answer()
        assert status == 503
        assert headers[b"retry-after"] == b"1"
        assert await third.closed()
        assert len(served.seen.requests) == 2  # the app never saw it
        # A connection that ends frees its place.
        await first.aclose()
        with trio.fail_after(10):  # once the server has seen it go (no sleep and hope)
            while True:
                fourth = await Client.open(served)
                await fourth.post("/echo", b"taken")
                status = (await fourth.answer())[0]
                if status != 503:
                    break
        assert status == 200


@pytest.mark.parametrize("sends_first", [False, True])
async def test_beyond_the_refusals_under_way_a_connection_gets_503_without_a_wait(
    monkeypatch: pytest.MonkeyPatch, sends_first: bool
) -> None:
    monkeypatch.setattr(_h11server, "_REFUSING_MAX", 1)
    async with serving(max_connections=1, keep_alive=60) as served:
        first = await Client.open(served)
        await first.post("/echo", b"in")
        assert (await first.answer())[0] == 200
        refused = await Client.open(served)  # its refusal lingers while it is open
        status, headers, _ = await refused.answer()
        assert (status, headers[b"retry-after"]) == (503, b"1")
        # One more: answered and closed at once, by the accepting task.
        flooding = await Client.open(served)
        if sends_first:  # (read before the close, which then does not reset it)
            await flooding.post("/echo", b"refused")
        status, headers, body = await flooding.answer()
        assert (status, headers[b"retry-after"], headers[b"connection"]) == (503, b"1", b"close")
        assert b"retry later" in body
        assert await flooding.closed()
        assert served.seen.requests == [("POST", "/echo", b"in")]


async def test_beyond_the_refusals_under_way_a_socket_that_takes_no_write_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_h11server, "_REFUSING_MAX", 0)

    def no_write(fd: int, data: bytes) -> int:
        raise OSError("no os.write on a socket here")

    monkeypatch.setattr(_h11server.os, "write", no_write)
    async with serving(max_connections=1, keep_alive=60) as served:
        first = await Client.open(served)
        await first.post("/echo", b"in")
        assert (await first.answer())[0] == 200
        dropped = await Client.open(served)
        assert await dropped.closed()
        assert dropped.buffer == b""  # closed unanswered


async def test_empty_lines_before_a_request_line_are_skipped() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(b"\r\n\r\n\n" + request("/echo", b"first"))
        assert (await client.answer())[2] == b"first"
        # An old client's CRLF after a POST body, read with the body, then a request.
        await client.send(request("/echo", b"second") + b"\r\n")
        assert (await client.answer())[2] == b"second"
        await client.send(request("/echo", b"third"))
        assert (await client.answer())[2] == b"third"
        # In the same read as the next request (pipelined).
        await client.send(request("/echo", b"fourth") + b"\r\n" + request("/echo", b"fifth"))
        assert (await client.answer())[2] == b"fourth"
        assert (await client.answer())[2] == b"fifth"
        # An empty line split across reads, its CR alone in one.
        for part in (b"\r", b"\n\r", b"\n" + request("/echo", b"sixth")):
            await client.send(part)
            await trio.testing.wait_all_tasks_blocked()
        assert (await client.answer())[2] == b"sixth"
        # A request line split across reads after empty lines.
        await client.send(b"\r\nPO")
        await trio.testing.wait_all_tasks_blocked()
        await client.send(request("/echo", b"seventh")[2:])
        assert (await client.answer())[2] == b"seventh"
    assert [body for _, _, body in served.seen.requests] == [
        b"first",
        b"second",
        b"third",
        b"fourth",
        b"fifth",
        b"sixth",
        b"seventh",
    ]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\r\n" * 513 + request("/echo", b"x"), id="over-max-head-bytes"),
        pytest.param(b"\rPOST /echo HTTP/1.1\r\nhost: t\r\n\r\n", id="a-lone-cr"),
        pytest.param(b"\r\n \r\n" + request("/echo", b"x"), id="a-blank-line"),
    ],
)
async def test_what_is_not_empty_lines_before_a_request_line_gets_400(data: bytes) -> None:
    async with serving(max_head_bytes=1024) as served:
        client = await Client.open(served)
        await client.send(data)
        assert (await client.answer())[0] == 400
        assert await client.closed()
        assert served.seen.requests == []


async def test_empty_lines_after_a_request_then_nothing_close_the_connection_unanswered() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(request("/echo", b"x") + b"\r\n\r")
        assert (await client.answer())[2] == b"x"
        await client.stream.send_eof()
        assert await client.closed()
        assert client.buffer == b""
        other = await Client.open(served)
        await other.send(b"\r\n")
        await other.stream.send_eof()
        assert await other.closed()
        assert other.buffer == b""


async def test_a_request_head_not_sent_within_keep_alive_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(keep_alive=5) as served:
        client = await Client.open(served)
        began = trio.current_time()
        await client.send(b"POST /echo HTTP/1.1\r\nhost: t\r\n")  # and no more (slowloris)
        status, headers, body = await client.answer()
        assert (status, headers[b"connection"]) == (408, b"close")
        assert b"took over 5 s" in body
        assert await client.closed()
        assert trio.current_time() - began == pytest.approx(5, abs=0.01)
        assert served.seen.requests == []


async def test_an_idle_keep_alive_connection_closes_after_keep_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(keep_alive=5) as served:
        client = await Client.open(served)
        await trio.sleep(4)
        await client.post("/echo", b"x")  # within the time: taken
        assert (await client.answer())[0] == 200
        answered = trio.current_time()
        assert await client.closed()
        assert client.buffer == b""  # no 408: it sent nothing of a request
        assert trio.current_time() - answered == pytest.approx(5, abs=0.01)


async def test_a_long_request_keeps_its_connection_past_keep_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(keep_alive=5) as served:
        client = await Client.open(served)
        await client.post("/sleep/60")
        status, _, body = await client.answer()
        assert (status, body) == (200, b"/sleep/60")


async def test_pipelined_requests_are_answered_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as served:
        client = await Client.open(served)
        # The first takes longest: its answer must still come first.
        await client.send(request("/sleep/2") + request("/sleep/1") + request("/echo", b"3"))
        bodies = [(await client.answer())[2] for _ in range(3)]
        assert bodies == [b"/sleep/2", b"/sleep/1", b"3"]


async def test_an_answer_before_the_body_came_whole_says_the_connection_closes() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(b"POST /unread HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc")
        status, headers, body = await client.answer()
        assert (status, body, headers[b"connection"]) == (401, b"denied", b"close")
        assert await client.closed()


async def test_an_answer_before_the_body_was_read_keeps_the_connection_if_it_all_came() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.post("/unread", b"0123456789")
        status, headers, _ = await client.answer()
        assert status == 401
        assert b"connection" not in headers
        await client.post("/echo", b"next")  # the body before it was dropped
        assert (await client.answer())[2] == b"next"
        assert [path for _, path, _ in served.seen.requests] == ["/unread", "/echo"]


async def test_a_head_request_gets_the_headers_without_the_body() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(b"HEAD /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        while b"\r\n\r\n" not in client.buffer:
            assert await client._more()
        head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-length: 5" in head  # the length of /echo, not sent
        await client.post("/echo", b"after")  # the connection goes on, in step
        assert (await client.answer())[2] == b"after"


async def test_http_1_0_is_answered_then_closed() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(request("/echo", b"old", version=b"1.0"))
        status, _, body = await client.answer()
        assert (status, body) == (200, b"old")
        assert await client.closed()


@pytest.mark.parametrize(
    "head",
    [
        b"POST /echo HTTP/2.0\r\nhost: t\r\ncontent-length: 0\r\n\r\n",
        b"GET /echo HTTP/0.9\r\nhost: t\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # an HTTP/2 client's preface
    ],
)
async def test_a_request_of_another_major_version_gets_505(head: bytes) -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(head + request("/echo", b"next"))
        status, headers, _ = await client.answer()
        assert status == 505
        assert headers[b"connection"] == b"close"
        assert await client.closed()  # the request after it is not read
        assert served.seen.requests == []


async def test_an_absolute_form_target_is_served_as_its_path_and_query() -> None:
    async with serving() as served:
        client = await Client.open(served)
        for target in (b"http://test/echo", b"HTTPS://test:8080/e%63ho?a=1", b"http://test?b"):
            await client.send(b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n" % target)
            assert (await client.answer())[0] == 200
        assert served.seen.targets == [
            ("/echo", b"/echo", b""),
            ("/echo", b"/e%63ho", b"a=1"),
            ("/", b"/", b"b"),
        ]
        await client.send(b"OPTIONS * HTTP/1.1\r\nhost: t\r\n\r\n")  # not absolute: as it is
        assert (await client.answer())[::2] == (200, b"*")
        assert served.seen.targets[-1] == ("*", b"*", b"")


async def test_connect_gets_501_as_the_server_opens_no_tunnel() -> None:
    """h11 would switch a CONNECT answered 2xx to a tunnel: the app's body could not be
    sent (a traceback, and no answer at all)."""
    async with serving() as served:
        client = await Client.open(served)
        await client.send(b"CONNECT /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        status, headers, _ = await client.answer()
        assert status == 501
        assert headers[b"connection"] == b"close"
        assert await client.closed()
        assert served.seen.requests == []
        other = await Client.open(served)
        await other.post("/echo", b"fine")
        assert (await other.answer())[::2] == (200, b"fine")


async def test_a_later_http_1_minor_version_is_served_as_1_1() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(request("/echo", b"new", version=b"1.2") * 2)
        for _ in range(2):  # kept alive, as 1.1
            assert (await client.answer())[::2] == (200, b"new")
        assert served.seen.versions == ["1.1", "1.1"]


async def test_connection_close_from_the_client_closes_after_the_answer() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.post("/echo", b"bye", b"connection: close\r\n")
        assert (await client.answer())[2] == b"bye"
        assert await client.closed()


@pytest.mark.parametrize("path", ["/raise", "/nothing", "/bad-header"])
async def test_an_app_that_fails_before_answering_gives_500_and_the_server_goes_on(
    path: str,
) -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.post(path)
        status, headers, _ = await client.answer()
        assert status == 500
        assert headers[b"connection"] == b"close"
        assert await client.closed()
        other = await Client.open(served)
        await other.post("/echo", b"fine")
        assert (await other.answer())[0] == 200


async def test_an_app_that_fails_midway_closes_the_connection() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.post("/raise-late")
        await client.closed()
        assert client.buffer.startswith(b"HTTP/1.1 200 ")
        assert not client.buffer.endswith(b"0\r\n\r\n")  # no end of the chunked body


async def test_a_client_going_away_mid_call_is_told_to_the_app() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.post("/watch")
        await served.seen.until(lambda: bool(served.seen.requests))
        await client.aclose()
        with trio.fail_after(5):
            await served.seen.until(lambda: served.seen.finished == 1)
        assert served.seen.disconnects == 1  # the app ended its call itself


async def test_a_client_that_stops_reading_is_closed_after_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(send_timeout=3) as served:
        client = await Client.open(served)
        client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await client.post("/flood")  # and never reads
        with trio.fail_after(60):
            await served.seen.until(lambda: served.seen.finished == 1)
        assert served.seen.disconnects == 1
        # And the server serves others meanwhile and after.
        other = await Client.open(served)
        await other.post("/echo", b"fine")
        assert (await other.answer())[0] == 200


async def test_stopping_finishes_the_request_in_flight_and_closes_idle_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(shutdown_grace=10) as served:
        idle = await Client.open(served)
        await idle.post("/echo", b"x")
        await idle.answer()
        busy = await Client.open(served)
        await busy.post("/sleep/3")
        await served.seen.until(lambda: len(served.seen.requests) == 2)
        stopping = trio.current_time()
        served.stop.set()
        assert await idle.closed()
        assert trio.current_time() - stopping < 0.1  # at once
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", served.port)
        status, headers, body = await busy.answer()
        assert (status, body) == (200, b"/sleep/3")
        assert headers[b"connection"] == b"close"
        await served.stopped.wait()
        assert trio.current_time() - stopping == pytest.approx(3, abs=0.1)


async def test_stopping_cancels_what_outlives_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(shutdown_grace=2) as served:
        busy = await Client.open(served)
        await busy.post("/sleep/100")
        await served.seen.until(lambda: bool(served.seen.requests))
        stopping = trio.current_time()
        served.stop.set()
        await served.stopped.wait()
        assert trio.current_time() - stopping == pytest.approx(2, abs=0.1)
        assert served.seen.cancelled == 1
        assert await busy.closed()
        assert busy.buffer == b""


async def test_stopping_refuses_a_request_whose_body_is_still_arriving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(shutdown_grace=10) as served:
        busy = await Client.open(served)
        await busy.post("/sleep/3")
        uploading = await Client.open(served)
        await uploading.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc")
        await served.seen.until(lambda: served.seen.partial == 1 and served.seen.began == 2)
        stopping = trio.current_time()
        served.stop.set()
        status, headers, body = await uploading.answer()
        assert trio.current_time() - stopping < 0.1  # at once, not after the grace
        assert (status, headers[b"retry-after"], headers[b"connection"]) == (503, b"1", b"close")
        assert b"stopping" in body
        assert await uploading.closed()
        assert served.seen.disconnects == 1  # the app was told
        assert (await busy.answer())[2] == b"/sleep/3"  # a request in flight finishes
        await served.stopped.wait()
        assert trio.current_time() - stopping == pytest.approx(3, abs=0.1)


async def test_stopping_refuses_a_body_read_once_the_server_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(shutdown_grace=10) as served:
        client = await Client.open(served)
        await client.send(
            b"POST /late-body/2 HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n"
            b"expect: 100-continue\r\n\r\n"
        )
        await served.seen.until(lambda: served.seen.began == 1)
        stopping = trio.current_time()
        served.stop.set()
        status, headers, _ = await client.answer()  # no 100 (Continue) first
        assert (status, headers[b"connection"]) == (503, b"close")
        assert trio.current_time() - stopping == pytest.approx(2, abs=0.1)
        assert await client.closed()
        await served.stopped.wait()
        assert trio.current_time() - stopping == pytest.approx(2, abs=0.1)
        assert served.seen.disconnects == 1


async def test_it_serves_ipv6() -> None:
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 here")
    async with serving("::1") as served:
        assert served.url.startswith("http://[::1]:")
        client = await Client.open(served, "::1")
        await client.post("/echo", b"six")
        assert (await client.answer())[2] == b"six"


async def test_port_0_gives_the_real_port() -> None:
    async with serving() as served:
        assert served.port != 0
        assert served.url == f"http://127.0.0.1:{served.port}"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        HttpServerOptions(max_connections=0)
    with pytest.raises(ValueError, match="keep_alive"):
        HttpServerOptions(keep_alive=0)
    with pytest.raises(ValueError, match="send_timeout"):
        HttpServerOptions(send_timeout=-1)
    # Any time over 0, as `triact serve --keep-alive` takes (a smaller bound here made
    # `--keep-alive 0.0001` end in a traceback).
    options = HttpServerOptions(keep_alive=0.0001, send_timeout=0.0001)
    assert (options.keep_alive, options.send_timeout) == (0.0001, 0.0001)


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with serving() as served:
        client = await Client.open(served)
        await client.send(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
        )
        while b"\r\n\r\n" not in client.buffer:
            assert await client._more()
        assert client.buffer.startswith(b"HTTP/1.1 100 ")
        client.buffer = client.buffer.partition(b"\r\n\r\n")[2]
        await client.send(b"body")
        assert (await client.answer())[2] == b"body"


def test_request_headers_are_lower_case_pairs_with_or_without_h11s_parsed_triples() -> None:
    request = h11.Request(
        method="POST",
        target="/mcp",
        headers=[("Host", "x"), ("Content-Type", "application/json"), ("X-A", "1")],
    )
    expected = [(b"host", b"x"), (b"content-type", b"application/json"), (b"x-a", b"1")]
    assert _request_headers(request.headers) == expected
    # An h11 that keeps its parsed headers otherwise: its public sequence of pairs.
    assert _request_headers(list(request.headers)) == expected


def test_a_heads_bytes_are_counted_with_or_without_h11s_parsed_triples() -> None:
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    request = connection.next_event()
    assert isinstance(request, h11.Request)
    assert _head_bytes(request, _request_headers(request.headers)) == len(head)
    # An h11 that keeps its parsed headers otherwise: its public sequence of pairs.
    other = SimpleNamespace(
        method=request.method, target=request.target, headers=list(request.headers)
    )
    assert _head_bytes(other, _request_headers(other.headers)) == len(head)  # type: ignore[arg-type]
