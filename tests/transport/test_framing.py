"""Line framing with a size bound (``triact.transport._framing``)."""

from __future__ import annotations

import os
import time

import pytest
import trio
import trio.testing

from triact.transport._framing import (
    LineReader,
    LineTooLong,
    PipeReceive,
    pipe_fd,
    send_to_pipe,
)


async def read_all(chunks: list[bytes], max_line_bytes: int = 10) -> list[bytes | str]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = LineReader(receive, max_line_bytes)
    out: list[bytes | str] = []
    for chunk in chunks:
        await send.send_all(chunk)
        lines = await reader.receive_lines()
        assert lines is not None
        out += ["too long" if isinstance(line, LineTooLong) else line for line in lines]
    await send.aclose()
    while (lines := await reader.receive_lines()) is not None:
        out += ["too long" if isinstance(line, LineTooLong) else line for line in lines]
    return out


async def test_lines_are_split_across_reads() -> None:
    assert await read_all([b"ab\ncd", b"e\nf", b"\n"]) == [b"ab", b"cde", b"f"]


async def test_blank_lines_are_skipped() -> None:
    assert await read_all([b"\n\n  \r\na\r\n"]) == [b"a\r"]


async def test_a_last_line_without_newline_is_read_at_eof() -> None:
    assert await read_all([b"a\nlast"]) == [b"a", b"last"]


async def test_line_at_the_bound_is_read() -> None:
    assert await read_all([b"0123456789\n"]) == [b"0123456789"]


async def test_oversized_complete_line_is_reported_once() -> None:
    assert await read_all([b"0123456789X\nok\n"]) == ["too long", b"ok"]


async def test_oversized_line_is_reported_early_and_skipped_to_its_newline() -> None:
    chunks = [b"0123456789", b"ABCDEFGHIJ", b"KLMNOP", b"QRS\nnext\n"]
    assert await read_all(chunks) == ["too long", b"next"]


async def test_oversized_unterminated_line_at_eof() -> None:
    assert await read_all([b"a\n", b"x" * 50]) == [b"a", "too long"]


async def checked_reads(chunks: list[bytes]) -> list[tuple[list[bytes], bool]]:
    """Each read's lines, and whether the reader found no 19 digits in a row in them."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = LineReader(receive, 1000)
    out = []
    for chunk in chunks:
        await send.send_all(chunk)
        lines = await reader.receive_lines()
        assert lines is not None
        out.append(([line for line in lines if type(line) is bytes], reader.digits_checked))
    return out


async def test_a_read_without_long_digits_is_checked_for_all_its_lines() -> None:
    reads = await checked_reads([b'{"id":1}\n{"id":22}\n{"id":3', b"33}\n", b"[1]\n[2]\n"])
    assert reads == [
        ([b'{"id":1}', b'{"id":22}'], True),
        ([b'{"id":333}'], True),
        ([b"[1]", b"[2]"], True),
    ]


async def test_long_digits_in_any_line_of_a_read_leave_it_unchecked() -> None:
    long = b"1" * 19
    reads = await checked_reads(
        [
            b"[1]\n[" + long + b"]\n",  # in a line of the read
            b"[" + long[:10],  # a line split across reads (no line: nothing checked)
            long[10:] + b"]\n[2]\n",  # its digits are found when it is whole
            b"[" + b"1" * 18 + b"]\n",  # 18 are not a long run
        ]
    )
    assert [checked for _, checked in reads] == [False, False, False, True]
    assert reads[2][0] == [b"[" + long + b"]", b"[2]"]


class Pieces(trio.abc.ReceiveStream):
    """Hands out ``data`` in pieces of ``size`` bytes, as fast as it is asked (no
    scheduling: the reader's own work is what is measured), then end of stream. Fails
    once reading has taken ``cpu_bound`` seconds of CPU."""

    def __init__(self, data: bytes, size: int, cpu_bound: float) -> None:
        self._view = memoryview(data)
        self._at = 0
        self._size = size
        self._deadline = time.process_time() + cpu_bound

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._at % 65536 == 0:
            assert time.process_time() < self._deadline, f"still at byte {self._at}"
        piece = self._view[self._at : self._at + self._size]
        self._at += len(piece)
        return bytes(piece)

    async def aclose(self) -> None:
        pass


async def test_a_long_line_in_one_byte_pieces_costs_linear_time() -> None:
    """1 MiB in 1-byte pieces: about a second when linear; when each piece copies the
    line so far (quadratic: half a terabyte copied), far past the generous bound."""
    line = b"x" * (1024 * 1024)
    reader = LineReader(Pieces(line + b"\nnext\n", 1, cpu_bound=60.0), 2 * len(line))
    got: list[bytes | LineTooLong] = []
    while (lines := await reader.receive_lines()) is not None:
        got += lines
    assert got == [line, b"next"]


async def test_an_oversized_line_in_small_pieces_is_skipped_in_linear_time() -> None:
    data = b"y" * (1024 * 1024) + b"\nok\n"
    reader = LineReader(Pieces(data, 3, cpu_bound=60.0), 1000)
    got: list[bytes | str] = []
    while (lines := await reader.receive_lines()) is not None:
        got += ["too long" if isinstance(line, LineTooLong) else line for line in lines]
    assert got == ["too long", b"ok"]


# -- pipes, read and written directly (stdio) ---------------------------------------


def _pipe() -> tuple[trio.lowlevel.FdStream, trio.lowlevel.FdStream]:
    read_fd, write_fd = os.pipe()
    return trio.lowlevel.FdStream(read_fd), trio.lowlevel.FdStream(write_fd)


async def test_only_an_fd_stream_is_read_and_written_directly() -> None:
    receive, send = _pipe()
    async with receive, send:
        assert pipe_fd(receive) == receive.fileno()
        assert pipe_fd(send) == send.fileno()
    assert pipe_fd(trio.testing.memory_stream_one_way_pair()[0]) is None


async def test_a_pipe_is_read_until_end_of_input_and_written_past_its_buffer() -> None:
    receive, send = _pipe()
    data = bytes(range(256)) * 4096  # 1 MiB: more than the pipe holds
    received = bytearray()
    async with receive, trio.open_nursery() as nursery:

        async def write() -> None:
            async with send:
                await send_to_pipe(send.fileno(), data)

        nursery.start_soon(write)
        reader = PipeReceive(receive.fileno())
        while chunk := await reader.receive_some(1 << 16):
            received += chunk
        await reader.aclose()  # the FdStream keeps the fd
    assert received == data


async def test_a_pipe_closed_while_read_is_a_closed_resource() -> None:
    receive, send = _pipe()
    async with send, trio.open_nursery() as nursery:

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await receive.aclose()

        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await PipeReceive(receive.fileno()).receive_some()


async def test_writing_to_a_pipe_nobody_reads_is_a_broken_resource() -> None:
    receive, send = _pipe()
    await receive.aclose()
    async with send:
        with pytest.raises(trio.BrokenResourceError, match="the pipe failed"):
            await send_to_pipe(send.fileno(), b"x\n")


async def test_writing_to_a_closed_fd_is_a_closed_resource() -> None:
    receive, send = _pipe()
    fd = send.fileno()
    await send.aclose()
    async with receive:
        with pytest.raises(trio.ClosedResourceError):
            await send_to_pipe(fd, b"x\n")
