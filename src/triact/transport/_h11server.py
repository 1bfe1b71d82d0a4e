"""An HTTP/1.1 server for one ASGI app on Trio sockets, with h11 parsing: what
``triact serve --http`` runs its app (``open_http_app``) on by default.

h11 parses requests and frames answers and keeps each connection's state (keep-alive,
``Connection: close``, HTTP/1.0, pipelined requests taken one at a time); this module
owns the connection loop around it, and with it:

* **Timeouts.** A connection gets ``keep_alive`` seconds to send a whole request head,
  whether it is new or idle after an answer (so a slow or silent client holds its
  connection that long at most; one that sent part of a head then gets 408); none
  while its request runs (a long tool call), the app bounding the time a body takes.
  A write that cannot go out within ``send_timeout`` seconds (a client that stopped
  reading) closes the connection.
* **Limits.** A request head holds at most ``max_head_bytes`` (beyond, 431 and close);
  at most ``max_connections`` connections are served at once: one beyond is answered
  503 with ``Retry-After`` and closed, at once, without its request being read (at
  most 64 such answers under way, each reading what its client sends for a moment so
  that the close does not reset the connection; beyond them, the 503 is written
  without a wait, and the connection closed).
  Empty lines before a request line are skipped, up to ``max_head_bytes`` of them.
* **Errors.** A malformed request (or body) gets 400 and its connection closed (so
  does one with both ``Content-Length`` and ``Transfer-Encoding``, or an HTTP/1.0
  one with ``Transfer-Encoding``, and a chunked body in more than 1024 chunks beyond
  one per 256 bytes of it, whose parsing would hold the loop; one of an HTTP
  major version other than 1, 505; a CONNECT, 501); an app that raises gets 500 if
  nothing of its answer was sent (else its connection is closed); the server goes on
  serving the others.
* **Answers.** ``http.response.start`` waits for the first body: an answer whose body
  comes whole goes out in one write; one with ``more_body`` is chunked (SSE). A
  ``Date`` header (made once a second), no ``Server`` header. An answer begun before
  the app read the whole request body (a refusal) drops the body, and says
  ``Connection: close`` unless all of it had come.
* **Disconnects.** Once the app has read a request's body, a ``receive()`` waits for
  the client to go away (``http.disconnect``) while the answer is not complete.
* **Shutdown.** When ``stop`` is set: no new connections; idle ones are closed at once,
  and so are those whose request's body is still arriving (503 if the app has not
  begun its answer); requests in flight get ``shutdown_grace`` seconds to finish (their
  answers carry ``Connection: close``), then what is left is cancelled.

No lifespan: the app is opened and closed around the server (``open_http_app``).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote

import attrs
import h11
import trio

logger = logging.getLogger("triact.transport")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

#: Bytes read from a socket at once.
_READ: Final = 65536
#: Bytes of pipelined requests read (and held) while a request runs; past them, the
#: connection is not read (nor watched for a disconnect) until its answer is sent.
_PIPELINED_MAX: Final = 65536
#: Chunks a chunked request body may come in beyond one per ``_CHUNK_BYTES`` bytes of
#: it: h11 takes about 8 µs to parse a chunk, so a body of 1-byte chunks (4 MiB of them
#: is a body the app takes) held the loop for half a minute.
_CHUNKS_FREE: Final = 1024
_CHUNK_BYTES: Final = 256
#: Connections being refused (503) at once, beyond ``max_connections``; more are
#: closed without an answer.
_REFUSING_MAX: Final = 64
#: Seconds a refused connection is kept to read its request (so that closing it does
#: not reset it before the client reads the 503).
_REFUSE_LINGER: Final = 1.0
#: Errors of accept() that say the process or the machine is out of something: the
#: server waits a moment and accepts again.
_ACCEPT_RESOURCE_ERRORS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_PAUSE: Final = 0.1
_DISCONNECT: Final = {"type": "http.disconnect"}
#: The answer to a request whose body is still arriving when the server stops.
_STOPPING: Final = (
    503,
    "Service Unavailable: the server is stopping; retry",
    b"retry-after: 1\r\n",
)
_REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}
_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}
#: The response headers h11 is given (it decides the framing and keep-alive from
#: them); the others are written as the app gave them, once checked.
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_HEADER_NAME: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_HEADER_VALUE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
#: Empty lines (CRLF, or a lone LF) that may come before a request line, skipped.
_EMPTY_LINES: Final = re.compile(rb"(?:\r?\n)*")
_LINE_START: Final = (b"\r", b"\n")
#: The scheme and authority of an absolute-form request target (``http://host:port``).
_SCHEME_AUTHORITY: Final = re.compile(rb"[A-Za-z][-+.0-9A-Za-z]*://[^/?]*")
#: Where h11's message about a malformed request quotes its bytes (a repr).
_QUOTED: Final = re.compile(r"(?:bytearray\()?b['\"]")


def _at_least(minimum: float, *, integer: bool = True) -> Any:
    """A validator of a count (an int, not a bool), or of seconds (a number, not a bool,
    not NaN) without ``integer``, at least ``minimum``."""
    kinds = (int,) if integer else (int, float)
    what = "an int" if integer else "a number"

    def check(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        if not (isinstance(value, kinds) and not isinstance(value, bool) and value >= minimum):
            raise ValueError(
                f"HttpServerOptions.{attribute.name} must be {what} >= {minimum}, got {value!r}"
            )

    return check


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"HttpServerOptions.{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class HttpServerOptions:
    """How the server takes connections (the app bounds bodies and requests)."""

    #: Seconds a connection gets to send a whole request head, new or idle after an
    #: answer; beyond, it is closed.
    keep_alive: float = attrs.field(default=5.0, validator=_positive)
    #: Connections served at once; one beyond gets 503 with Retry-After, and is closed.
    max_connections: int = attrs.field(default=1000, validator=_at_least(1))
    #: Bytes a request head (request line and headers) may hold; beyond, 431.
    max_head_bytes: int = attrs.field(default=16 * 1024, validator=_at_least(1024))
    #: Seconds one write of an answer may take (a client not reading blocks it);
    #: beyond, the connection is closed (the app sees it go away).
    send_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds the requests in flight get to finish once the server stops.
    shutdown_grace: float = attrs.field(default=10.0, validator=_at_least(0, integer=False))


class _Clock:
    """The ``Date`` header's value, made again when the second changes."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True).encode()
        return self.value


def _request_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A request's headers as ASGI has them: (name, value), names in lower case.
    h11's parsed (raw name, name, value) triples are read directly where they are
    (its ``Headers`` sequence yields them one ``__getitem__`` at a time, several
    times slower); an h11 that keeps them otherwise is iterated as its public API
    says."""
    parsed = getattr(headers, "_full_items", None)
    if parsed is None:
        return list(headers)
    return [(name, value) for _, name, value in parsed]


def _head_bytes(request: h11.Request, headers: list[tuple[bytes, bytes]]) -> int:
    """The bytes of a request's head as h11 parsed it (request line, ``headers`` as
    :func:`_request_headers` gives them, blank line; a few less than sent where h11
    dropped whitespace)."""
    size = len(request.method) + len(request.target) + 14  # " HTTP/1.1\r\n", "\r\n"
    for name, value in headers:
        size += len(name) + len(value) + 4  # ": ", "\r\n"
    return size


def _both_framings(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers have both Content-Length and Transfer-Encoding."""
    length = encoding = False
    for name, _ in headers:
        if name == b"content-length":
            length = True
        elif name == b"transfer-encoding":
            encoding = True
    return length and encoding


def _has_transfer_encoding(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers have Transfer-Encoding."""
    return any(name == b"transfer-encoding" for name, _ in headers)


def _origin_form(target: bytes) -> bytes:
    """An absolute-form request target's path and query (``http://host/mcp?x`` ->
    ``/mcp?x``; ``http://host`` -> ``/``), which a server must accept (RFC 9112
    3.2.2); any other target (``*``) as it is."""
    match = _SCHEME_AUTHORITY.match(target)
    if match is None:
        return target
    rest = target[match.end() :]
    return rest if rest.startswith(b"/") else b"/" + rest


def _after_empty_lines(data: bytes) -> bytes:
    """``data`` without the empty lines it begins with."""
    match = _EMPTY_LINES.match(data)
    assert match is not None  # it matches the empty string
    return data[match.end() :]


def _loggable(exc: h11.RemoteProtocolError) -> str:
    """h11's message for a malformed request without the bytes it quotes (a header
    line, a request line), which may hold a credential (``Authorization``, a token in
    a query)."""
    text = str(exc)
    quoted = _QUOTED.search(text)
    if quoted is None:
        return text
    return text[: quoted.start()].rstrip(": ") + " (not quoted: it may hold a credential)"


def _error_answer(status: int, message: str, date: bytes, extra: bytes = b"") -> bytes:
    """A whole answer to a request the app never saw, closing the connection."""
    body = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"%s"}}' % (
        message.encode()
    )
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\ndate: %s\r\n%s\r\n%s"
        % (status, _REASONS.get(status, b""), len(body), date, extra, body)
    )


class Server:
    """The connections of one server; see :func:`serve_http`."""

    def __init__(self, app: App, options: HttpServerOptions) -> None:
        self.app = app
        self.options = options
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        self.refusing = 0
        self.stopping = False

    async def accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise
                logger.warning("accept() failed (%s); trying again shortly", exc)
                await trio.sleep(_ACCEPT_PAUSE)
                continue
            if len(self.connections) < self.options.max_connections:
                connection = _Connection(self, stream)
                self.connections.add(connection)
                nursery.start_soon(connection.run)
            elif self.refusing < _REFUSING_MAX:
                self.refusing += 1
                nursery.start_soon(self._refuse, stream)
            else:
                self._refuse_at_once(stream.socket)

    def _full(self) -> bytes:
        """The 503 that refuses a connection beyond ``max_connections``."""
        return _error_answer(
            503,
            "Service Unavailable: the server has as many connections as it serves at once; "
            "retry later",
            self.clock.date(),
            b"retry-after: 1\r\n",
        )

    async def _refuse(self, stream: trio.SocketStream) -> None:
        """Answer 503 at once and close (after reading what the client sends, for a
        moment, so that the close does not reset the connection before the client
        reads the answer)."""
        try:
            with trio.move_on_after(_REFUSE_LINGER):
                answer = self._full()
                await stream.send_all(answer)
                await stream.send_eof()
                read = 0
                while read < _READ and (data := await stream.receive_some(_READ)):
                    read += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.refusing -= 1
            stream.socket.close()

    def _refuse_at_once(self, sock: trio.socket.SocketType) -> None:
        """Refuse a connection beyond the refusals under way (a flood of them) without
        a task or a wait: the 503 is written if the socket takes it at once (a new
        one has room), what the client sent already is read (a close with unread
        data would reset the connection), and it is closed. Where a socket's file
        descriptor takes no os.write (Windows), it is closed unanswered."""
        try:
            fd = sock.fileno()
            os.write(fd, self._full())
            sock.shutdown(socket.SHUT_WR)
            os.read(fd, _READ)
        except OSError:  # (BlockingIOError from the read: the client sent nothing yet)
            pass
        sock.close()

    def stop(self) -> None:
        """Take no new request: close the idle connections, and those whose request
        runs once it is answered."""
        self.stopping = True
        for connection in self.connections:
            if connection.idle is not None:
                connection.idle.cancel()
            if connection.reading is not None:
                connection.reading.cancel()


class _Connection:
    """One client connection: its requests, one at a time."""

    __slots__ = (
        "bodiless",
        "body_bytes",
        "body_chunks",
        "body_done",
        "closed",
        "complete",
        "h11",
        "head",
        "held",
        "idle",
        "pipelined",
        "reading",
        "receive",
        "scope_base",
        "send",
        "server",
        "skipped",
        "stream",
    )

    def __init__(self, server: Server, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.h11 = self._new_h11()
        #: The wait for a request head, cancelled to close an idle connection; the
        #: wait for more of a request's body, cancelled to refuse it when stopping.
        self.idle: trio.CancelScope | None = None
        self.reading: trio.CancelScope | None = None
        # The current request's answer: its start (status, headers) until it is sent
        # (None once it is), whether it is complete, and the request's body.
        self.head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.complete = False
        self.body_done = False
        self.bodiless = False  # a HEAD request: its answer's body is not sent
        self.body_bytes = self.body_chunks = 0  # of the request's body, so far
        self.pipelined = 0  # bytes of later requests read while this one runs
        self.closed = False  # the client went away, or the connection was aborted
        self.receive = self._receive
        self.send = self._send
        self.scope_base: dict[str, Any] = {}
        # Before a request line: the bytes of empty lines skipped, a CR held.
        self.skipped = 0
        self.held = b""

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.server.options.max_head_bytes
        )

    async def run(self) -> None:
        try:
            await self._serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            self.server.connections.discard(self)
            self.stream.socket.close()

    def _addresses(self) -> None:
        socket = self.stream.socket
        try:
            client = socket.getpeername()[:2]
        except OSError:
            client = None
        server = socket.getsockname()[:2]
        self.scope_base = {
            "type": "http",
            "asgi": _ASGI,
            "scheme": "http",
            "root_path": "",
            "client": client,
            "server": server,
        }

    async def _serve(self) -> None:
        self._addresses()
        options = self.server.options
        while True:
            head = await self._next_request(options.keep_alive)
            if head is None:
                return
            if not await self._run_app(*head):
                return
            connection = self.h11  # a new one if empty lines led the request
            if connection.our_state is h11.MUST_CLOSE or self.server.stopping:
                return
            if connection.their_state is h11.SEND_BODY:
                self._skip_body()  # the body the app left unread, if it is here
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()

    async def _next_request(
        self, timeout: float
    ) -> tuple[h11.Request, list[tuple[bytes, bytes]]] | None:
        """The next request's head, or None if the connection is to close (the client
        closed it, sent none in time, sent a malformed one, or the server stops)."""
        connection = self.h11
        # Empty lines before a request line are skipped (RFC 9112 2.2: an old client
        # may end a POST body with CRLF); h11 would take them for a missing request
        # line. Those already read (after the previous request) are in h11's buffer:
        # a new h11 connection (the state it has between requests) is given what
        # follows them.
        buffered, eof = connection.trailing_data
        skipping = not buffered  # no byte of the request line has come
        self.held, self.skipped = b"", 0
        try:
            if buffered[:1] in _LINE_START:
                connection = self.h11 = self._new_h11()
                rest = self._skip_empty_lines(buffered)
                if rest:
                    connection.receive_data(rest)
                skipping = not rest
                if eof:
                    connection.receive_data(b"")
            event = connection.next_event()
            if event is h11.NEED_DATA:
                if self.server.stopping:
                    return None
                self.idle = trio.CancelScope(deadline=trio.current_time() + timeout)
                with self.idle:
                    while event is h11.NEED_DATA:
                        data = await self.stream.receive_some(_READ)
                        if skipping and data:
                            data = self._skip_empty_lines(data)
                            if not data:
                                continue
                            skipping = False
                        connection.receive_data(data)
                        event = connection.next_event()
                self.idle = None
                if event is h11.NEED_DATA:  # timed out, or the server stops
                    if connection.trailing_data[0] and not self.server.stopping:
                        # Part of a request came (an idle connection just closes).
                        message = (
                            f"Request Timeout: the request line and headers took over {timeout:g} s"
                        )
                        await self._write(_error_answer(408, message, self.server.clock.date()))
                    return None
        except h11.RemoteProtocolError as exc:
            await self._refuse_malformed(exc)
            return None
        if type(event) is h11.Request:
            # h11 takes any "HTTP/d.d" request line (an HTTP/2 client's "PRI *
            # HTTP/2.0" preface, "HTTP/0.9") and would answer it as HTTP/1.1.
            if not event.http_version.startswith(b"1."):
                message = "HTTP Version Not Supported: this server speaks HTTP/1.1"
                await self._write(_error_answer(505, message, self.server.clock.date()))
                return None
            # h11 makes a CONNECT answered 2xx a tunnel, which this server does not
            # open (the app's body could not be sent): it is refused before the app.
            if event.method == b"CONNECT":
                message = "Not Implemented: this server opens no tunnel (CONNECT)"
                await self._write(_error_answer(501, message, self.server.clock.date()))
                return None
            # h11 bounds a head only while it is incomplete: one whose end came in the
            # same read as the bytes past the limit (up to _READ at once) passed.
            headers = _request_headers(event.headers)
            if _head_bytes(event, headers) > self.server.options.max_head_bytes:
                too_long = h11.RemoteProtocolError("head too long", error_status_hint=431)
                await self._refuse_malformed(too_long)
                return None
            # h11 frames a body that has both by Transfer-Encoding, and keeps the
            # connection; RFC 9112 6.1 says to close it at least (a proxy in front
            # that framed it by Content-Length would see other requests in it).
            if _both_framings(headers):
                message = "Bad Request: both Content-Length and Transfer-Encoding"
                await self._write(_error_answer(400, message, self.server.clock.date()))
                return None
            # h11 takes an HTTP/1.0 request's body as chunked; RFC 9112 6.1 says its
            # framing is faulty (Transfer-Encoding is HTTP/1.1's: a proxy in front
            # may frame it otherwise), so it is refused as such.
            if event.http_version == b"1.0" and _has_transfer_encoding(headers):
                message = "Bad Request: Transfer-Encoding in an HTTP/1.0 request"
                await self._write(_error_answer(400, message, self.server.clock.date()))
                return None
            return event, headers
        return None  # ConnectionClosed

    def _skip_empty_lines(self, data: bytes) -> bytes:
        """``data``, read before any byte of a request line, without the empty lines
        it begins with (a CR at its end is held for the next read, which may bring
        its LF); over ``max_head_bytes`` of them for one request is malformed."""
        data = self.held + data
        rest = _after_empty_lines(data)
        self.skipped += len(data) - len(rest)
        if self.skipped > self.server.options.max_head_bytes:
            raise h11.RemoteProtocolError("too many empty lines before a request line")
        self.held = b""
        if rest == b"\r":
            self.held, rest = rest, b""
        return rest

    async def _refuse_malformed(self, exc: h11.RemoteProtocolError) -> None:
        logger.debug("malformed request: %s", _loggable(exc))
        status = exc.error_status_hint
        if status == 431:
            message = (
                "Request Header Fields Too Large: the request line and headers hold over "
                f"{self.server.options.max_head_bytes} bytes"
            )
        else:
            status, message = 400, "Bad Request: malformed HTTP request"
        await self._write(_error_answer(status, message, self.server.clock.date()))

    def _skip_body(self) -> bool:
        """Drop what is already here of a body the app did not read; whether that
        was the rest of it."""
        try:
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return False
                if type(event) is h11.EndOfMessage:
                    return True
        except h11.RemoteProtocolError:
            return False

    async def _run_app(self, request: h11.Request, headers: list[tuple[bytes, bytes]]) -> bool:
        """Run the app for ``request`` (``headers``: its headers as ASGI has them);
        whether the connection may carry another."""
        target = request.target
        if not target.startswith(b"/"):
            target = _origin_form(target)
        raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        scope = {
            **self.scope_base,
            # 1.2 and later minor versions are served as 1.1 (as h11 does: kept alive)
            "http_version": "1.0" if request.http_version == b"1.0" else "1.1",
            "method": request.method.decode("ascii"),
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
        }
        self.head = None
        self.complete = self.body_done = False
        self.bodiless = request.method == b"HEAD"
        self.pipelined = self.body_bytes = self.body_chunks = 0
        try:
            await self.server.app(scope, self.receive, self.send)
        except Exception:
            logger.exception("the ASGI app raised on %s %s", scope["method"], path)
            if self.closed:
                return False
            if self.h11.our_state is h11.SEND_RESPONSE:
                await self._internal_error()
            return False
        if self.closed:
            return False
        if not self.complete:
            if self.h11.our_state is h11.SEND_RESPONSE:  # the app sent nothing
                logger.error("the ASGI app answered nothing to %s %s", scope["method"], path)
                await self._internal_error()
            return False
        return True

    async def _internal_error(self) -> None:
        message = "Internal Server Error: the server's log says why"
        await self._write(_error_answer(500, message, self.server.clock.date()))
        self.closed = True

    # -- the ASGI receive and send --------------------------------------------------

    async def _receive(self) -> Message:
        if self.body_done:
            return await self._wait_disconnect()
        connection = self.h11
        chunks: list[bytes] = []
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:  # a malformed body
                logger.debug("malformed request body: %s", _loggable(exc))
                return await self._refuse_body(400, "Bad Request: malformed request body")
            kind = type(event)
            if kind is h11.Data:
                data = event.data  # type: ignore[union-attr]
                if event.chunk_start:  # type: ignore[union-attr]
                    self.body_chunks += 1
                    if self.body_chunks > _CHUNKS_FREE + self.body_bytes // _CHUNK_BYTES:
                        return await self._refuse_body(
                            400, "Bad Request: a chunked body of too many small chunks"
                        )
                self.body_bytes += len(data)
                chunks.append(bytes(data))
            elif kind is h11.EndOfMessage:
                self.body_done = True
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                return {"type": "http.request", "body": body, "more_body": False}
            elif chunks:  # more to come
                return {"type": "http.request", "body": b"".join(chunks), "more_body": True}
            elif self.closed:
                return _DISCONNECT
            else:  # NEED_DATA
                if self.server.stopping:
                    return await self._refuse_body(*_STOPPING)
                if connection.they_are_waiting_for_100_continue:
                    await self._write(
                        connection.send(h11.InformationalResponse(status_code=100, headers=[]))
                    )
                self.reading = trio.CancelScope()
                with self.reading:
                    data = await self._read()
                self.reading = None
                if self.server.stopping:  # stop() cancelled the read
                    return await self._refuse_body(*_STOPPING)
                if data is None:
                    return _DISCONNECT
                connection.receive_data(data)

    async def _refuse_body(self, status: int, message: str, extra: bytes = b"") -> Message:
        """Refuse the request whose body is being read (malformed, or the server stops
        while it arrives, which could hold the stop for the whole grace): answered
        ``status`` unless the app began its answer, and closed; the app is told the
        client went away."""
        if self.head is None and self.h11.our_state is h11.SEND_RESPONSE:
            await self._write(_error_answer(status, message, self.server.clock.date(), extra))
        self.closed = True
        return _DISCONNECT

    async def _read(self) -> bytes | None:
        """What the client sends next (None, and the connection closed, if it went
        away)."""
        try:
            data = await self.stream.receive_some(_READ)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            return None
        if not data:
            self.closed = True
            return None
        return data

    async def _wait_disconnect(self) -> Message:
        """Once the body is read: wait for the client to go away while the answer is
        not complete (later requests that come meanwhile are kept for their turn)."""
        while not (self.complete or self.closed):
            if self.pipelined >= _PIPELINED_MAX:
                await trio.sleep_forever()  # the answer's end cancels the app's wait
            data = await self._read()
            if data is None:
                break
            self.pipelined += len(data)
            self.h11.receive_data(data)
        await trio.lowlevel.checkpoint()
        return _DISCONNECT

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.head is not None or self.h11.our_state is not h11.SEND_RESPONSE:
                raise RuntimeError("http.response.start sent twice")
            self.head = (message["status"], list(message.get("headers", ())))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.complete:
            raise RuntimeError("http.response.body sent after the answer's end")
        connection = self.h11
        body = message.get("body", b"")
        more = message.get("more_body", False)
        out = b""
        if self.head is not None:
            status, headers = self.head
            self.head = None
            out = self._head(status, headers)
        elif connection.our_state is h11.SEND_RESPONSE:
            raise RuntimeError("http.response.body sent before http.response.start")
        if body and not self.bodiless:
            out += connection.send(h11.Data(data=body))
        if not more:
            out += connection.send(h11.EndOfMessage())
            self.complete = True
        await self._write(out)

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The answer's status line and headers. h11 is given only the framing
        headers, to decide the framing and whether the connection stays open (and to
        keep its state); the others are checked here (one pass, where h11 would make
        two) and put after them, with ``Date``."""
        framing = []
        lines = []
        if self.h11.their_state is h11.SEND_BODY:
            # Answered before the app read the whole body (a refusal): what is here of
            # it is dropped, and unless that was all of it, the answer says the
            # connection closes (it does, after the answer: a client told nothing would
            # send its next request into a closed connection).
            if not self._skip_body():
                framing.append((b"connection", b"close"))
            self.body_done = True  # the app's next receive() waits for a disconnect
        for name, value in headers:
            lower = name.lower()
            if lower in _FRAMING:
                framing.append((lower, value))
            elif _HEADER_NAME.fullmatch(name) is None or _HEADER_VALUE.fullmatch(value) is None:
                raise ValueError(f"an invalid response header: {name!r}: {value!r}")
            else:
                lines.append(b"%s: %s\r\n" % (name, value))
        if self.server.stopping:
            framing.append((b"connection", b"close"))
        response = h11.Response(
            status_code=status, headers=framing, reason=_REASONS.get(status, b"")
        )
        head = self.h11.send(response)  # ends with the blank line
        return b"%s%sdate: %s\r\n\r\n" % (head[:-2], b"".join(lines), self.server.clock.date())

    async def _write(self, data: bytes) -> None:
        if self.closed:
            await trio.lowlevel.checkpoint()
            return
        try:
            with trio.move_on_after(self.server.options.send_timeout) as timer:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            return
        if timer.cancelled_caught:
            logger.debug("a write took over %g s: closing", self.server.options.send_timeout)
            self.closed = True
            self.stream.socket.close()  # a receive() waiting on it sees the client go


async def serve_http(
    app: App,
    host: str,
    port: int,
    options: HttpServerOptions | None = None,
    *,
    stop: trio.Event,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (port 0: a free one) until ``stop`` is set, then
    stop gracefully (see the module). Started (``nursery.start``) with the URLs it
    listens at, ``http://HOST:PORT``, the real port in them."""
    options = options or HttpServerOptions()
    listeners = await trio.open_tcp_listeners(port, host=host)
    server = Server(app, options)
    urls = []
    for listener in listeners:
        address = listener.socket.getsockname()
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        urls.append(f"http://{shown}:{address[1]}")
    async with trio.open_nursery() as connections:
        try:
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(server.accept, listener, connections)
                task_status.started(urls)
                await stop.wait()
                accepting.cancel_scope.cancel()
        finally:
            for listener in listeners:
                listener.socket.close()
            server.stop()
            grace = options.shutdown_grace
            deadline = trio.current_time() + grace if math.isfinite(grace) else math.inf
            connections.cancel_scope.deadline = deadline
