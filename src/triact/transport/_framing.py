"""Newline-delimited framing with a bound on the line size."""

from __future__ import annotations

import trio

#: Default bound on one message, newline excluded.
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


class LineTooLong:
    """Stands for a line longer than the bound; its bytes were discarded."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit


class LineReader:
    """Splits a byte stream into lines of at most ``max_line_bytes`` bytes.

    :meth:`receive_lines` returns every complete line a read brought (blank ones
    dropped, a trailing ``\\r`` left for the JSON parser to ignore as whitespace). A
    line over the bound is returned as one :class:`LineTooLong` as soon as it passes
    the bound; the rest of it is skipped up to its newline, so the next line is read
    normally. At end of stream a last line without a newline is returned too.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        self._stream = stream
        self._max = max_line_bytes
        self._partial = b""
        self._discarding = False
        self._eof = False

    async def receive_lines(self) -> list[bytes | LineTooLong] | None:
        """The lines completed by the next read (maybe none), or None at end of stream."""
        if self._eof:
            return None
        data = bytes(await self._stream.receive_some(_CHUNK))  # bytes-like: maybe a bytearray
        if not data:
            self._eof = True
            rest, self._partial = self._partial, b""
            return [rest] if rest.strip() else None
        return self._split(data)

    def _split(self, data: bytes) -> list[bytes | LineTooLong]:
        lines: list[bytes | LineTooLong] = []
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._discarding = False
            data = data[newline + 1 :]
        if self._partial:
            data = self._partial + data
            self._partial = b""
        parts = data.split(b"\n")
        tail = parts.pop()
        limit = self._max
        for part in parts:
            if len(part) > limit:
                lines.append(LineTooLong(limit))
            elif part and not part.isspace():
                lines.append(part)
        if len(tail) > limit:
            lines.append(LineTooLong(limit))
            self._discarding = True
        else:
            self._partial = tail
        return lines
