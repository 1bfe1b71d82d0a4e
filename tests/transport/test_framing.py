"""Line framing with a size bound (``triact.transport._framing``)."""

from __future__ import annotations

import trio
import trio.testing

from triact.transport._framing import LineReader, LineTooLong


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
