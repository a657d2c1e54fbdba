"""Unit tests of sockit.proto.buffer.ReceiveBuffer (sans-I/O).

Every delimiter read is also checked with its input split at every byte offset
(h11's habit), and the limits are checked exactly at the boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, SupportsIndex

import pytest

from sockit.errors import LimitExceeded
from sockit.proto.buffer import ReceiveBuffer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def splits(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every way to cut ``data`` in two pieces (both may be empty)."""
    for index in range(len(data) + 1):
        yield data[:index], data[index:]


def buffer_with(*pieces: bytes | bytearray) -> ReceiveBuffer:
    buffer = ReceiveBuffer()
    for piece in pieces:
        buffer.feed(piece)
    return buffer


# --- basics -------------------------------------------------------------------------


def test_new_buffer_is_empty() -> None:
    buffer = ReceiveBuffer()
    assert len(buffer) == 0
    assert not buffer
    assert buffer.take_some(10) == b""
    assert buffer.take_all() == b""
    assert buffer.take_exactly(1) is None
    assert buffer.take_exactly(0) == b""
    assert buffer.take_until(b"\n", 10) is None
    assert buffer.take_line(10) is None


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_every_buffer_type(kind: Callable[[bytes], bytes]) -> None:
    buffer = ReceiveBuffer()
    buffer.feed(kind(b"abc"))
    buffer.feed(kind(b""))
    buffer.feed(kind(b"def"))
    assert len(buffer) == 6
    assert buffer
    assert buffer.take_all() == b"abcdef"


def test_feed_copies_a_bytearray_it_is_given() -> None:
    data = bytearray(b"abc")
    buffer = buffer_with(data)
    data[:] = b"xyz"
    assert buffer.take_all() == b"abc"


def test_take_some() -> None:
    buffer = buffer_with(b"hello ", b"world")
    assert buffer.take_some(3) == b"hel"
    assert len(buffer) == 8
    assert buffer.take_some(100) == b"lo world"
    assert buffer.take_some(100) == b""
    assert not buffer


def test_take_all_returns_bytes_and_empties() -> None:
    buffer = buffer_with(b"ab", b"cd")
    data = buffer.take_all()
    assert type(data) is bytes
    assert data == b"abcd"
    assert len(buffer) == 0


def test_take_exactly_keeps_everything_until_enough() -> None:
    buffer = buffer_with(b"abc")
    assert buffer.take_exactly(4) is None
    assert len(buffer) == 3
    buffer.feed(b"d")
    data = buffer.take_exactly(4)
    assert data == b"abcd"
    assert type(data) is bytes
    assert not buffer


def test_take_exactly_leaves_the_rest() -> None:
    buffer = buffer_with(b"abcdef")
    assert buffer.take_exactly(2) == b"ab"
    assert buffer.take_exactly(0) == b""
    assert buffer.take_exactly(4) == b"cdef"
    assert buffer.take_exactly(1) is None


def test_unread_puts_bytes_back_in_front() -> None:
    buffer = buffer_with(b"world")
    buffer.unread(b"hello ")
    buffer.unread(b"")
    assert len(buffer) == 11
    assert buffer.take_all() == b"hello world"


# --- take_until ---------------------------------------------------------------------


def test_take_until_returns_message_and_consumes_delimiter() -> None:
    buffer = buffer_with(b"one\r\ntwo\r\nthr")
    assert buffer.take_until(b"\r\n", 100) == b"one"
    assert buffer.take_until(b"\r\n", 100) == b"two"
    assert buffer.take_until(b"\r\n", 100) is None
    assert buffer.take_all() == b"thr"


def test_take_until_empty_message() -> None:
    buffer = buffer_with(b"\0\0x\0")
    assert buffer.take_until(b"\0", 0) == b""
    assert buffer.take_until(b"\0", 0) == b""
    with pytest.raises(LimitExceeded):
        buffer.take_until(b"\0", 0)
    assert buffer.take_until(b"\0", 1) == b"x"
    assert not buffer


def test_take_until_rejects_empty_delimiter() -> None:
    with pytest.raises(ValueError, match="empty"):
        buffer_with(b"abc").take_until(b"", 10)


@pytest.mark.parametrize(
    ("delimiter", "message"),
    [
        (b"\n", b"hello"),
        (b"\r\n", b"hello\r"),
        (b"\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x"),
        # Self-overlapping delimiters: a resumed search must back up far enough.
        (b"aab", b"xaaaa"),
        (b"abab", b"aba"),
        (b"\0\0", b"\0x"),
    ],
)
def test_take_until_any_split(delimiter: bytes, message: bytes) -> None:
    stream = message + delimiter + b"tail"
    for first, second in splits(stream):
        buffer = ReceiveBuffer()
        buffer.feed(first)
        result = buffer.take_until(delimiter, 1000)
        if result is None:
            buffer.feed(second)
            result = buffer.take_until(delimiter, 1000)
        else:
            buffer.feed(second)
        assert result == message, (first, second)
        assert buffer.take_all() == b"tail"


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"END", b"abab"])
def test_take_until_byte_by_byte(delimiter: bytes) -> None:
    messages = [b"", b"a", b"b" * 10, b"x" * 50]
    stream = b"".join(message + delimiter for message in messages)
    buffer = ReceiveBuffer()
    received = []
    for byte in stream:
        buffer.feed(bytes([byte]))
        while (message := buffer.take_until(delimiter, 100)) is not None:
            received.append(message)
    assert received == messages
    assert not buffer


def test_take_until_delimiter_straddling_three_feeds() -> None:
    buffer = ReceiveBuffer()
    for piece in [b"abc\r", b"\n", b"\r"]:
        buffer.feed(piece)
        assert buffer.take_until(b"\r\n\r\n", 100) is None
    buffer.feed(b"\nnext")
    assert buffer.take_until(b"\r\n\r\n", 100) == b"abc"
    assert buffer.take_all() == b"next"


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"<END>"])
def test_take_until_message_of_exactly_max_bytes(delimiter: bytes) -> None:
    for first, second in splits(b"m" * 10 + delimiter):
        buffer = buffer_with(first)
        message = buffer.take_until(delimiter, 10)
        if message is None:
            buffer.feed(second)
            message = buffer.take_until(delimiter, 10)
        assert message == b"m" * 10, (first, second)
        assert not buffer


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"<END>"])
def test_take_until_message_of_max_bytes_plus_one_raises_and_keeps_bytes(
    delimiter: bytes,
) -> None:
    stream = b"m" * 11 + delimiter
    buffer = buffer_with(stream)
    with pytest.raises(LimitExceeded):
        buffer.take_until(delimiter, 10)
    # Nothing was consumed: the error is repeatable and the bytes can still be read.
    assert len(buffer) == len(stream)
    with pytest.raises(LimitExceeded):
        buffer.take_until(delimiter, 10)
    assert buffer.take_until(delimiter, 11) == b"m" * 11


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"<END>"])
def test_take_until_raises_only_when_the_limit_is_certain(delimiter: bytes) -> None:
    # With max_bytes=10 a delimiter may still start at index 10, so the buffer may
    # hold up to 10 + len(delimiter) - 1 bytes before the answer is known.
    buffer = ReceiveBuffer()
    buffer.feed(b"m" * 10)
    buffer.feed(delimiter[:-1])
    assert buffer.take_until(delimiter, 10) is None
    buffer.feed(b"x")  # not the last byte of the delimiter: now it cannot fit
    with pytest.raises(LimitExceeded):
        buffer.take_until(delimiter, 10)
    assert len(buffer) == 10 + len(delimiter)


def test_take_until_limit_without_any_delimiter() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * 11)
    assert buffer.take_until(b"\r\n", 10) is None  # 11 < 10 + 2: "\r\n" may follow
    buffer.feed(b"x")
    with pytest.raises(LimitExceeded):
        buffer.take_until(b"\r\n", 10)
    assert buffer.take_all() == b"x" * 12


def test_take_until_switching_delimiters() -> None:
    buffer = buffer_with(b"a:b;c:d;")
    assert buffer.take_until(b";", 100) == b"a:b"
    assert buffer.take_until(b":", 100) == b"c"
    assert buffer.take_until(b";", 100) == b"d"
    assert not buffer


def test_take_until_after_a_failed_search_with_another_delimiter() -> None:
    # The resume point of a search for ";" must not be used for ":".
    buffer = buffer_with(b"abc:def")
    assert buffer.take_until(b";", 100) is None
    assert buffer.take_until(b":", 100) == b"abc"
    assert buffer.take_until(b";", 100) is None
    buffer.feed(b";")
    assert buffer.take_until(b";", 100) == b"def"


def test_take_until_after_a_failed_search_with_a_smaller_limit() -> None:
    buffer = buffer_with(b"x" * 20)
    assert buffer.take_until(b"\n", 100) is None
    with pytest.raises(LimitExceeded):
        buffer.take_until(b"\n", 5)
    buffer.feed(b"\n")
    assert buffer.take_until(b"\n", 20) == b"x" * 20


def test_take_until_after_unread_finds_the_delimiter_in_front() -> None:
    buffer = buffer_with(b"xyz")
    assert buffer.take_until(b"\n", 100) is None
    buffer.unread(b"a\n")
    assert buffer.take_until(b"\n", 100) == b"a"
    assert buffer.take_all() == b"xyz"


# --- take_line ----------------------------------------------------------------------


def test_take_line_keeps_carriage_return() -> None:
    buffer = buffer_with(b"one\r\ntwo\n")
    assert buffer.take_line(100) == b"one\r"
    assert buffer.take_line(100) == b"two"
    assert buffer.take_line(100) is None


def test_take_line_many_lines_in_one_feed() -> None:
    lines = [b"line %d" % number for number in range(100)]
    buffer = buffer_with(b"".join(line + b"\n" for line in lines) + b"partial")
    received = []
    while (line := buffer.take_line(100)) is not None:
        received.append(line)
        # len() counts the pre-split lines too.
        remaining = lines[len(received) :]
        assert len(buffer) == sum(len(line) + 1 for line in remaining) + len(b"partial")
    assert received == lines
    assert buffer.take_all() == b"partial"


def test_take_line_any_split() -> None:
    stream = b"first\n\nthird line\r\nfourth\npartial"
    expected = [b"first", b"", b"third line\r", b"fourth"]
    for first, second in splits(stream):
        buffer = ReceiveBuffer()
        received = []
        for piece in (first, second):
            buffer.feed(piece)
            while (line := buffer.take_line(100)) is not None:
                received.append(line)
        assert received == expected, (first, second)
        assert buffer.take_all() == b"partial"


def test_take_line_of_exactly_max_bytes() -> None:
    buffer = buffer_with(b"x" * 10 + b"\n")
    assert buffer.take_line(10) == b"x" * 10


def test_take_line_of_max_bytes_plus_one_raises_and_keeps_bytes() -> None:
    buffer = buffer_with(b"x" * 11 + b"\n")
    with pytest.raises(LimitExceeded):
        buffer.take_line(10)
    assert len(buffer) == 12
    assert buffer.take_line(11) == b"x" * 11


def test_take_line_without_newline_raises_once_over_the_limit() -> None:
    buffer = buffer_with(b"x" * 10)
    assert buffer.take_line(10) is None  # a newline may still come
    buffer.feed(b"x")
    with pytest.raises(LimitExceeded):
        buffer.take_line(10)
    assert buffer.take_all() == b"x" * 11


def test_take_line_too_long_among_pre_split_lines_is_kept() -> None:
    buffer = buffer_with(b"a\n" + b"b" * 20 + b"\nc\n")
    assert buffer.take_line(5) == b"a"
    with pytest.raises(LimitExceeded):
        buffer.take_line(5)
    with pytest.raises(LimitExceeded):
        buffer.take_line(5)
    assert len(buffer) == 23
    assert buffer.take_line(20) == b"b" * 20
    assert buffer.take_line(5) == b"c"
    assert not buffer


def test_take_until_newline_uses_pre_split_lines() -> None:
    buffer = buffer_with(b"a\nb\nc\n")
    assert buffer.take_line(10) == b"a"
    assert buffer.take_until(b"\n", 10) == b"b"
    assert buffer.take_until(b"\n", 10) == b"c"
    assert buffer.take_until(b"\n", 10) is None


def test_take_line_after_take_until_with_another_delimiter() -> None:
    buffer = buffer_with(b"abc;def")
    assert buffer.take_until(b";", 10) == b"abc"
    assert buffer.take_line(10) is None
    buffer.feed(b"\n")
    assert buffer.take_line(10) == b"def"


# --- switching between line reads and raw reads --------------------------------------


STREAM = b"l1\nl2\nl3\r\nl4\nbinary\0data\nl6\ntail"


def test_take_some_after_lines_were_pre_split() -> None:
    buffer = buffer_with(STREAM)
    assert buffer.take_line(100) == b"l1"
    # The rest of the block is pre-split; raw reads must see the exact bytes.
    assert buffer.take_some(4) == b"l2\nl"
    assert buffer.take_line(100) == b"3\r"
    assert buffer.take_some(1) == b"l"
    assert buffer.take_all() == STREAM[len(b"l1\nl2\nl3\r\nl") :]


def test_take_exactly_after_lines_were_pre_split() -> None:
    buffer = buffer_with(STREAM)
    assert buffer.take_line(100) == b"l1"
    assert buffer.take_exactly(100) is None  # keeps everything, lines included
    assert len(buffer) == len(STREAM) - 3
    assert buffer.take_exactly(7) == b"l2\nl3\r\n"
    assert buffer.take_line(100) == b"l4"
    assert buffer.take_exactly(12) == b"binary\0data\n"
    assert buffer.take_line(100) == b"l6"
    assert buffer.take_line(100) is None
    assert buffer.take_all() == b"tail"


def test_take_until_other_delimiter_after_lines_were_pre_split() -> None:
    buffer = buffer_with(STREAM)
    assert buffer.take_line(100) == b"l1"
    assert buffer.take_until(b"\0", 100) == b"l2\nl3\r\nl4\nbinary"
    assert buffer.take_line(100) == b"data"
    assert buffer.take_until(b"\r\n", 100) is None
    assert buffer.take_until(b"ta", 100) == b"l6\n"
    assert buffer.take_all() == b"il"


def test_unread_after_lines_were_pre_split() -> None:
    buffer = buffer_with(b"a\nb\nc")
    assert buffer.take_line(10) == b"a"
    buffer.unread(b"a\n")
    assert len(buffer) == 5
    assert buffer.take_all() == b"a\nb\nc"


def test_feed_after_lines_were_pre_split_keeps_order() -> None:
    buffer = buffer_with(b"a\nb\nc")
    assert buffer.take_line(10) == b"a"
    buffer.feed(b"d\ne\n")
    assert [buffer.take_line(10) for _ in range(3)] == [b"b", b"cd", b"e"]
    assert buffer.take_line(10) is None


def test_every_read_kind_interleaved_reconstructs_the_stream() -> None:
    data = b"".join(b"line %d\n" % number for number in range(50)) * 3
    for chunk_size in (1, 3, 7, 64, len(data)):
        buffer = ReceiveBuffer()
        out = bytearray()
        step = 0
        for offset in range(0, len(data), chunk_size):
            buffer.feed(data[offset : offset + chunk_size])
            while True:
                step += 1
                kind = step % 4
                if kind == 0:
                    line = buffer.take_line(100)
                    piece = None if line is None else line + b"\n"
                elif kind == 1:
                    piece = buffer.take_some(5) or None
                elif kind == 2:
                    piece = buffer.take_exactly(9)
                else:
                    message = buffer.take_until(b" 1", 1000)
                    piece = None if message is None else message + b" 1"
                if piece is None:
                    break
                out += piece
        out += buffer.take_all()
        assert bytes(out) == data, chunk_size


# --- cost is linear in the bytes fed ---------------------------------------------------


class CountingBytearray(bytearray):
    """A bytearray that counts how many bytes its searches look at."""

    scanned = 0

    def find(
        self,
        sub: bytes | SupportsIndex,  # type: ignore[override]
        start: SupportsIndex | None = None,
        end: SupportsIndex | None = None,
    ) -> int:
        low = 0 if start is None else int(start)
        high = len(self) if end is None else min(int(end), len(self))
        CountingBytearray.scanned += max(0, high - low)
        return super().find(sub, start, end)

    def rfind(
        self,
        sub: bytes | SupportsIndex,  # type: ignore[override]
        start: SupportsIndex | None = None,
        end: SupportsIndex | None = None,
    ) -> int:
        low = 0 if start is None else int(start)
        high = len(self) if end is None else min(int(end), len(self))
        CountingBytearray.scanned += max(0, high - low)
        return super().rfind(sub, start, end)


def counting_buffer() -> ReceiveBuffer:
    """A ReceiveBuffer whose internal bytearray counts the bytes searched.

    White-box: relies on ReceiveBuffer keeping its unsplit bytes in ``_rest``. If that
    changes, update this helper (do not delete the tests that use it).
    """
    buffer = ReceiveBuffer()
    assert isinstance(getattr(buffer, "_rest", None), bytearray), "update counting_buffer()"
    buffer._rest = CountingBytearray()
    CountingBytearray.scanned = 0
    return buffer


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"--boundary--"])
def test_long_message_in_small_pieces_is_searched_once(delimiter: bytes) -> None:
    size = 1 << 20
    piece = b"x" * 1024
    buffer = counting_buffer()
    for _ in range(size // len(piece)):
        buffer.feed(piece)
        assert buffer.take_until(delimiter, 2 * size) is None
    buffer.feed(delimiter)
    assert buffer.take_until(delimiter, 2 * size) == b"x" * size
    # A rescan from the start after every piece would look at ~size**2 / 2048 bytes
    # (512 MiB here); a resumed search looks at each byte about once.
    assert CountingBytearray.scanned <= 2 * size + 1024 * len(delimiter)


def test_long_line_in_small_pieces_is_searched_once() -> None:
    size = 1 << 20
    piece = b"x" * 1024
    buffer = counting_buffer()
    for _ in range(size // len(piece)):
        buffer.feed(piece)
        assert buffer.take_line(2 * size) is None
    buffer.feed(b"\nnext")
    assert buffer.take_line(2 * size) == b"x" * size
    assert CountingBytearray.scanned <= 3 * size


@pytest.mark.timeout(20)
@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n"])
def test_ten_mebibyte_message_in_one_kibibyte_pieces(delimiter: bytes) -> None:
    # End-to-end guard against quadratic behaviour: 10240 feeds, each followed by a
    # search. Linear code takes well under a second; a rescan of the whole buffer per
    # feed is 50 GiB of searching and hits the timeout.
    size = 10 << 20
    piece = b"y" * 1024
    buffer = ReceiveBuffer()
    for _ in range(size // len(piece)):
        buffer.feed(piece)
        if delimiter == b"\n":
            assert buffer.take_line(size) is None
        else:
            assert buffer.take_until(delimiter, size) is None
    buffer.feed(delimiter)
    message = buffer.take_line(size) if delimiter == b"\n" else buffer.take_until(delimiter, size)
    assert message is not None
    assert len(message) == size
    assert not buffer


@pytest.mark.timeout(20)
def test_many_short_lines_fed_in_large_chunks() -> None:
    line = b"x" * 99 + b"\n"
    chunk = line * 655  # about 64 KiB, what one recv returns
    buffer = ReceiveBuffer()
    count = 0
    for _ in range(160):  # 10 MiB
        buffer.feed(chunk)
        while buffer.take_line(200) is not None:
            count += 1
    assert count == 160 * 655
    assert not buffer


def count_rejoined_lines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many pre-split lines each ``_unsplit`` joins back (white-box)."""
    original = ReceiveBuffer._unsplit
    counts: list[int] = []

    def counting_unsplit(self: ReceiveBuffer) -> None:
        counts.append(len(self.lines))
        original(self)

    monkeypatch.setattr(ReceiveBuffer, "_unsplit", counting_unsplit)
    return counts


def read_header_and_body_messages(chunks: list[bytes]) -> int:
    """Read ``b"<size>\\n" + body`` messages with take_line then take_exactly."""
    buffer = ReceiveBuffer()
    count = 0
    size: int | None = None
    for chunk in chunks:
        buffer.feed(chunk)
        while True:
            if size is None:
                header = buffer.take_line(20)
                if header is None:
                    break
                size = int(header)
            body = buffer.take_exactly(size)
            if body is None:
                break
            assert body == b"0123456789"
            size = None
            count += 1
    assert not buffer
    return count


def test_alternating_lines_and_raw_reads_do_not_rejoin_every_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A header line then a raw body, many messages per 64 KiB chunk: each take_exactly
    # must not join every pre-split line of the chunk back (that is quadratic in the
    # number of messages per chunk).
    counts = count_rejoined_lines(monkeypatch)
    stream = b"10\n0123456789" * 20000
    chunks = [stream[offset : offset + 65536] for offset in range(0, len(stream), 65536)]
    assert read_header_and_body_messages(chunks) == 20000
    # Only a body cut by the end of a chunk may need its (few) lines joined back.
    assert sum(counts) <= 2 * len(chunks)


@pytest.mark.timeout(20)
def test_alternating_lines_and_raw_reads_in_large_chunks() -> None:
    # Black-box twin of the test above: 4 MB of 13-byte messages. Quadratic joining
    # takes tens of seconds here; linear code well under one.
    stream = b"10\n0123456789" * 320000
    chunks = [stream[offset : offset + 65536] for offset in range(0, len(stream), 65536)]
    assert read_header_and_body_messages(chunks) == 320000
