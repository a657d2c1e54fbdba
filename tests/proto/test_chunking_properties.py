"""Property tests: any chunking of a byte stream gives the same lines, frames and splits.

For random messages and random ways of cutting the byte stream into received chunks,
ReceiveBuffer (take_line, take_until, and those mixed with take_some/take_exactly) and
every framing decoder must produce exactly what a naive reference produces from the
whole stream at once, including where a limit is exceeded and what is left at EOF.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.errors import IncompleteRead, LimitExceeded
from sockit.proto.buffer import ReceiveBuffer
from sockit.proto.framing import (
    Delimited,
    DelimiterDecoder,
    LengthPrefixDecoder,
    LengthPrefixed,
    LineDecoder,
    Lines,
    PrefixSize,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockit.proto.framing import FrameDecoder, Framing

EXAMPLES = settings(max_examples=200, deadline=None)

# Small alphabets make delimiters, partial delimiters and self-overlaps common.
ALPHABET = b"ab\r\n\x00x"
DELIMITERS = [b"\n", b"\r\n", b"\x00", b"aa", b"aba", b"abab", b"\r\n\r\n", b"xab"]

byte_strings = st.lists(st.sampled_from(list(ALPHABET)), max_size=40).map(bytes)
streams = st.lists(st.sampled_from(list(ALPHABET)), max_size=300).map(bytes)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Cut ``data`` into consecutive pieces (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=30)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


# --- the outcome of reading a whole stream ---------------------------------------------


@dataclass
class Outcome:
    """Messages read, then how the stream ended."""

    messages: list[bytes]
    ending: str  # "clean", "limit" or "incomplete"
    rest: bytes = b""  # the partial message at EOF, or what stayed buffered at "limit"


def reference_split(stream: bytes, delimiter: bytes, max_bytes: int) -> Outcome:
    """What a delimiter reader with a limit must return, computed on the whole stream."""
    messages: list[bytes] = []
    position = 0
    while True:
        index = stream.find(delimiter, position)
        if index < 0:
            break
        message = stream[position:index]
        if len(message) > max_bytes:
            return Outcome(messages, "limit", stream[position:])
        messages.append(message)
        position = index + len(delimiter)
    tail = stream[position:]
    # The limit is only certain once max_bytes + len(delimiter) bytes are buffered
    # without a delimiter starting within the first max_bytes + 1 of them.
    if len(tail) >= max_bytes + len(delimiter):
        return Outcome(messages, "limit", tail)
    if tail:
        return Outcome(messages, "incomplete", tail)
    return Outcome(messages, "clean")


def read_buffer(chunks: list[bytes], take: Callable[[ReceiveBuffer], bytes | None]) -> Outcome:
    """Feed ``chunks`` one by one, taking every complete message after each."""
    buffer = ReceiveBuffer()
    messages: list[bytes] = []
    for index, chunk in enumerate(chunks):
        buffer.feed(chunk)
        while True:
            try:
                message = take(buffer)
            except LimitExceeded:
                # The error is repeatable and loses nothing: feed the rest and check
                # that every byte from the offending message on is still there.
                for later in chunks[index + 1 :]:
                    buffer.feed(later)
                try:
                    take(buffer)
                except LimitExceeded:
                    return Outcome(messages, "limit", buffer.take_all())
                raise AssertionError("LimitExceeded was not repeated") from None
            if message is None:
                break
            messages.append(message)
    rest = buffer.take_all()
    return Outcome(messages, "incomplete" if rest else "clean", rest)


def read_decoder(decoder: FrameDecoder, chunks: list[bytes]) -> Outcome:
    """Feed ``chunks`` to a decoder, draining frames after each, then close its input."""
    messages: list[bytes] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            messages.extend(decoder)
        assert decoder.next_frame() is None
        decoder.close_input()
    except LimitExceeded:
        return Outcome(messages, "limit")
    except IncompleteRead as error:
        assert decoder.at_boundary
        assert decoder.buffered == 0
        return Outcome(messages, "incomplete", error.partial)
    assert decoder.at_boundary
    return Outcome(messages, "clean")


# --- ReceiveBuffer ------------------------------------------------------------------


@EXAMPLES
@given(st.data(), streams, st.integers(0, 20))
def test_take_line_any_chunking(data: st.DataObject, stream: bytes, max_bytes: int) -> None:
    chunks = data.draw(chunkings(stream))
    outcome = read_buffer(chunks, lambda buffer: buffer.take_line(max_bytes))
    assert outcome == reference_split(stream, b"\n", max_bytes)


@EXAMPLES
@given(st.data(), streams, st.sampled_from(DELIMITERS), st.integers(0, 20))
def test_take_until_any_chunking(
    data: st.DataObject, stream: bytes, delimiter: bytes, max_bytes: int
) -> None:
    chunks = data.draw(chunkings(stream))
    outcome = read_buffer(chunks, lambda buffer: buffer.take_until(delimiter, max_bytes))
    assert outcome == reference_split(stream, delimiter, max_bytes)


class ReferenceBuffer:
    """The obvious (slow) ReceiveBuffer: one bytes object and slicing."""

    def __init__(self) -> None:
        self.data = b""

    def feed(self, data: bytes) -> None:
        self.data += data

    def _cut(self, end: int, skip: int = 0) -> bytes:
        message, self.data = self.data[:end], self.data[end + skip :]
        return message

    def take_some(self, max_bytes: int) -> bytes:
        return self._cut(max_bytes)

    def take_exactly(self, n: int) -> bytes | None:
        return self._cut(n) if len(self.data) >= n else None

    def take_until(self, delimiter: bytes, max_bytes: int) -> bytes | None:
        index = self.data.find(delimiter, 0, max_bytes + len(delimiter))
        if index >= 0:
            return self._cut(index, len(delimiter))
        if len(self.data) >= max_bytes + len(delimiter):
            raise LimitExceeded
        return None

    def take_line(self, max_bytes: int) -> bytes | None:
        return self.take_until(b"\n", max_bytes)

    def unread(self, data: bytes) -> None:
        self.data = data + self.data


operations = st.one_of(
    st.tuples(st.just("take_line"), st.integers(0, 12)),
    st.tuples(st.just("take_until"), st.sampled_from(DELIMITERS), st.integers(0, 12)),
    st.tuples(st.just("take_some"), st.integers(0, 12)),
    st.tuples(st.just("take_exactly"), st.integers(0, 12)),
    st.tuples(st.just("unread"), byte_strings),
    st.tuples(st.just("len")),
)


def apply(buffer: ReceiveBuffer | ReferenceBuffer, operation: tuple[object, ...]) -> object:
    """Run one operation; return its result, or the name of the exception it raised."""
    name = operation[0]
    try:
        if name == "len":
            return len(buffer.data) if isinstance(buffer, ReferenceBuffer) else len(buffer)
        if name == "take_until":
            delimiter, max_bytes = operation[1], operation[2]
            assert isinstance(delimiter, bytes)
            assert isinstance(max_bytes, int)
            return buffer.take_until(delimiter, max_bytes)
        argument = operation[1]
        if name == "unread":
            assert isinstance(argument, bytes)
            buffer.unread(argument)
            return None
        assert isinstance(argument, int)
        if name == "take_line":
            return buffer.take_line(argument)
        if name == "take_some":
            return buffer.take_some(argument)
        assert name == "take_exactly"
        return buffer.take_exactly(argument)
    except LimitExceeded:
        return "LimitExceeded"


@EXAMPLES
@given(
    st.lists(
        st.tuples(st.just("feed"), byte_strings) | st.tuples(st.just("feed"), streams) | operations,
        max_size=60,
    )
)
def test_mixed_reads_match_the_reference(program: list[tuple[object, ...]]) -> None:
    # Lines pre-split by take_line, then raw reads and other delimiters, and back: the
    # buffer must behave exactly like one bytes object sliced naively.
    buffer = ReceiveBuffer()
    reference = ReferenceBuffer()
    for step, operation in enumerate(program):
        if operation[0] == "feed":
            data = operation[1]
            assert isinstance(data, bytes)
            buffer.feed(data)
            reference.feed(data)
            continue
        assert apply(buffer, operation) == apply(reference, operation), (step, operation)
    assert buffer.take_all() == reference.data


@EXAMPLES
@given(st.data(), st.lists(byte_strings, max_size=20))
def test_lines_then_raw_reads_any_chunking(data: st.DataObject, bodies: list[bytes]) -> None:
    # A line-based header followed by a raw body (newlines included) of the length the
    # header announces: the typical switch between line reads and take_exactly.
    stream = b"".join(b"%d\n" % len(body) + body for body in bodies)
    chunks = data.draw(chunkings(stream))
    buffer = ReceiveBuffer()
    received = []
    expected_size: int | None = None
    for chunk in chunks:
        buffer.feed(chunk)
        while True:
            if expected_size is None:
                header = buffer.take_line(10)
                if header is None:
                    break
                expected_size = int(header)
            body = buffer.take_exactly(expected_size)
            if body is None:
                break
            received.append(body)
            expected_size = None
    assert received == bodies
    assert not buffer


# --- framing decoders -----------------------------------------------------------------


@EXAMPLES
@given(st.data(), streams, st.integers(0, 20))
def test_line_decoder_any_chunking(data: st.DataObject, stream: bytes, max_line: int) -> None:
    outcome = read_decoder(LineDecoder(max_line), data.draw(chunkings(stream)))
    expected = reference_split(stream, b"\n", max_line)
    expected.rest = expected.rest if expected.ending == "incomplete" else b""
    assert outcome == expected


@EXAMPLES
@given(st.data(), streams, st.sampled_from(DELIMITERS), st.integers(0, 20))
def test_delimiter_decoder_any_chunking(
    data: st.DataObject, stream: bytes, delimiter: bytes, max_bytes: int
) -> None:
    decoder = DelimiterDecoder(delimiter, max_bytes)
    outcome = read_decoder(decoder, data.draw(chunkings(stream)))
    expected = reference_split(stream, delimiter, max_bytes)
    expected.rest = expected.rest if expected.ending == "incomplete" else b""
    assert outcome == expected


def reference_length_prefixed(stream: bytes, prefix_size: int, max_size: int) -> Outcome:
    messages: list[bytes] = []
    position = 0
    while len(stream) - position >= prefix_size:
        length = int.from_bytes(stream[position : position + prefix_size], "big")
        if length > max_size:
            return Outcome(messages, "limit")
        end = position + prefix_size + length
        if end > len(stream):
            break
        messages.append(stream[position + prefix_size : end])
        position = end
    if position < len(stream):
        return Outcome(messages, "incomplete", stream[position:])
    return Outcome(messages, "clean")


prefix_sizes = st.sampled_from([1, 2, 4, 8])


@EXAMPLES
@given(st.data(), prefix_sizes, st.integers(0, 300))
def test_length_prefix_decoder_on_arbitrary_bytes(
    data: st.DataObject, prefix_size: PrefixSize, max_size: int
) -> None:
    # Arbitrary bytes, mostly small lengths: each prefix byte is 0 or small, so frames
    # parse, exceed the limit, or stop half way.
    stream = data.draw(
        st.lists(st.sampled_from([0, 0, 0, 1, 2, 3, 200, 255]), max_size=120).map(bytes)
    )
    outcome = read_decoder(LengthPrefixDecoder(prefix_size, max_size), data.draw(chunkings(stream)))
    assert outcome == reference_length_prefixed(stream, prefix_size, max_size)


framings = st.one_of(
    st.builds(Lines, max_line=st.integers(40, 50)),
    st.builds(Delimited, st.sampled_from(DELIMITERS), max_bytes=st.integers(40, 50)),
    st.builds(LengthPrefixed, prefix_sizes, max_size=st.integers(40, 50)),
)


def encodable(framing: Framing, frame: bytes) -> bool:
    try:
        framing.encode(frame)
    except ValueError:
        return False
    return True


@EXAMPLES
@given(st.data(), framings, st.lists(byte_strings, max_size=15))
def test_encode_then_decode_any_chunking(
    data: st.DataObject, framing: Framing, frames: list[bytes]
) -> None:
    frames = [frame for frame in frames if encodable(framing, frame)]
    stream = b"".join(framing.encode(frame) for frame in frames)
    outcome = read_decoder(framing.decoder(), data.draw(chunkings(stream)))
    assert outcome == Outcome(frames, "clean")


@EXAMPLES
@given(st.data(), framings, st.lists(byte_strings, min_size=1, max_size=10))
def test_truncated_stream_gives_the_frames_then_incomplete_read(
    data: st.DataObject, framing: Framing, frames: list[bytes]
) -> None:
    frames = [frame for frame in frames if encodable(framing, frame)]
    wire = [framing.encode(frame) for frame in frames]
    stream = b"".join(wire)
    cut = data.draw(st.integers(0, len(stream)))
    outcome = read_decoder(framing.decoder(), data.draw(chunkings(stream[:cut])))
    # The reference: whole frames that fit before the cut, then the cut frame's bytes.
    complete = []
    position = 0
    for frame, encoded in zip(frames, wire, strict=True):
        if position + len(encoded) > cut:
            break
        complete.append(frame)
        position += len(encoded)
    if position == cut:
        assert outcome == Outcome(complete, "clean")
    else:
        # Prefix included, delimiter part included: no byte is lost.
        assert outcome == Outcome(complete, "incomplete", stream[position:cut])
