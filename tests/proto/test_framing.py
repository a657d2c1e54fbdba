"""Unit tests of sockit.proto.framing: decoders fed input split at every byte offset,
limits, EOF mid-frame, every prefix size, zero-length frames, and the encoders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from sockit.errors import IncompleteRead, LimitExceeded
from sockit.proto.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE,
    Delimited,
    DelimiterDecoder,
    LengthPrefixDecoder,
    LengthPrefixed,
    LineDecoder,
    Lines,
    encode_delimited,
    encode_length_prefixed,
    encode_line,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sockit.proto.framing import FrameDecoder, Framing, PrefixSize

PREFIX_SIZES: list[PrefixSize] = [1, 2, 4, 8]

FRAMES = [b"", b"a", b"hello world", b"\r", b"x" * 200, b"", b"\xff\xfe binary \x01"]


def framing_cases() -> list[Framing]:
    return [
        Lines(),
        Delimited(b"\0", max_bytes=1000),
        Delimited(b"\r\n", max_bytes=1000),
        Delimited(b"--end--", max_bytes=1000),
        Delimited(b"aab", max_bytes=1000),  # self-overlapping
        *(LengthPrefixed(size, max_size=1000) for size in PREFIX_SIZES),
    ]


def splits(data: bytes) -> Iterator[list[bytes]]:
    for index in range(len(data) + 1):
        yield [data[:index], data[index:]]


def state(decoder: FrameDecoder) -> tuple[bool, int]:
    """``(at_boundary, buffered)``; a call, so mypy does not narrow the properties."""
    return decoder.at_boundary, decoder.buffered


def decode(decoder: FrameDecoder, pieces: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for piece in pieces:
        decoder.feed(piece)
        frames.extend(decoder)
    return frames


# --- every framing, every split ------------------------------------------------------


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_round_trip_split_at_every_offset(framing: Framing) -> None:
    stream = b"".join(framing.encode(frame) for frame in FRAMES)
    for pieces in splits(stream):
        decoder = framing.decoder()
        assert decode(decoder, pieces) == FRAMES, pieces
        assert decoder.at_boundary
        assert decoder.buffered == 0
        decoder.close_input()  # a clean end: no error
        assert decoder.next_frame() is None


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_round_trip_split_at_every_pair_of_offsets(framing: Framing) -> None:
    frames = [b"", b"ab", b"", b"cde"]
    stream = b"".join(framing.encode(frame) for frame in frames)
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            pieces = [stream[:first], stream[first:second], stream[second:]]
            assert decode(framing.decoder(), pieces) == frames, pieces


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_round_trip_byte_by_byte(framing: Framing) -> None:
    stream = b"".join(framing.encode(frame) for frame in FRAMES)
    decoder = framing.decoder()
    frames: list[bytes] = []
    for position, byte in enumerate(stream):
        decoder.feed(bytes([byte]))
        frames.extend(decoder)
        # buffered counts exactly the bytes of the unfinished frame.
        consumed = sum(len(framing.encode(frame)) for frame in frames)
        assert decoder.buffered == position + 1 - consumed
        assert decoder.at_boundary == (decoder.buffered == 0)
    assert frames == FRAMES


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_eof_at_every_offset_inside_a_frame(framing: Framing) -> None:
    first = framing.encode(b"first")
    second = framing.encode(b"second frame")
    for cut in range(1, len(second)):
        decoder = framing.decoder()
        decoder.feed(first + second[:cut])
        assert decoder.next_frame() == b"first"
        assert decoder.next_frame() is None
        assert state(decoder) == (False, cut)
        with pytest.raises(IncompleteRead) as caught:
            decoder.close_input()
        # The partial frame is handed over exactly as it was on the wire.
        assert caught.value.partial == second[:cut]
        if isinstance(framing, LengthPrefixed):
            size = framing.prefix_size
            assert caught.value.expected == (len(second) if cut >= size else size)
        else:
            assert caught.value.expected is None
        # Raised once; afterwards the decoder is empty and at a boundary.
        assert state(decoder) == (True, 0)
        decoder.close_input()
        assert decoder.next_frame() is None


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_close_input_keeps_complete_frames_before_a_partial_one(framing: Framing) -> None:
    stream = framing.encode(b"one") + framing.encode(b"two") + framing.encode(b"three")[:-1]
    decoder = framing.decoder()
    decoder.feed(stream)
    decoder.close_input()  # complete frames are still buffered: no error yet
    assert not decoder.at_boundary
    assert decoder.buffered == len(stream)
    assert decoder.next_frame() == b"one"
    assert decoder.buffered == len(stream) - len(framing.encode(b"one"))
    assert decoder.next_frame() == b"two"
    with pytest.raises(IncompleteRead) as caught:
        decoder.next_frame()
    assert caught.value.partial == framing.encode(b"three")[:-1]
    assert decoder.next_frame() is None
    assert decoder.at_boundary


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_iterating_after_close_input_yields_every_frame_then_raises(framing: Framing) -> None:
    decoder = framing.decoder()
    decoder.feed(framing.encode(b"a") + framing.encode(b"b") + framing.encode(b"c")[:1])
    decoder.close_input()
    received: list[bytes] = []
    with pytest.raises(IncompleteRead):
        received.extend(decoder)
    assert received == [b"a", b"b"]


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_whole_stream_then_close_input(framing: Framing) -> None:
    decoder = framing.decoder()
    decoder.feed(b"".join(framing.encode(frame) for frame in FRAMES))
    decoder.close_input()
    assert list(decoder) == FRAMES


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_feed_after_close_input_is_an_error(framing: Framing) -> None:
    decoder = framing.decoder()
    decoder.close_input()
    decoder.close_input()  # idempotent
    with pytest.raises(RuntimeError, match="close_input"):
        decoder.feed(b"x")


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
def test_empty_feed_is_not_eof(framing: Framing) -> None:
    decoder = framing.decoder()
    decoder.feed(b"")
    assert decoder.next_frame() is None
    decoder.feed(framing.encode(b"data"))
    assert decoder.next_frame() == b"data"


@pytest.mark.parametrize("framing", framing_cases(), ids=repr)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_and_encode_accept_every_buffer_type(
    framing: Framing, kind: Callable[[bytes], bytes]
) -> None:
    encoded = framing.encode(kind(b"payload"))
    assert type(encoded) is bytes
    assert encoded == framing.encode(b"payload")
    decoder = framing.decoder()
    decoder.feed(kind(encoded))
    frame = decoder.next_frame()
    assert type(frame) is bytes
    assert frame == b"payload"


def test_framing_objects_make_fresh_decoders() -> None:
    framing = LengthPrefixed(2)
    first = framing.decoder()
    first.feed(b"\x00\x05ab")
    second = framing.decoder()
    assert second.buffered == 0
    assert first.buffered == 4


# --- lines ------------------------------------------------------------------------


def test_line_decoder_keeps_carriage_return() -> None:
    decoder = LineDecoder()
    decoder.feed(b"crlf\r\nlf\n\r\n")
    assert list(decoder) == [b"crlf\r", b"lf", b"\r"]


def test_line_decoder_default_limit() -> None:
    assert LineDecoder().max_line == DEFAULT_MAX_LINE == 65536
    assert Lines().max_line == DEFAULT_MAX_LINE


def test_line_of_exactly_max_line_at_every_split() -> None:
    stream = b"x" * 10 + b"\nnext\n"
    for pieces in splits(stream):
        assert decode(LineDecoder(10), pieces) == [b"x" * 10, b"next"]


def test_line_over_max_line_raises_as_soon_as_certain_and_keeps_bytes() -> None:
    decoder = LineDecoder(10)
    decoder.feed(b"ok\n" + b"x" * 10)
    assert decoder.next_frame() == b"ok"
    assert decoder.next_frame() is None  # 10 bytes: the newline may still come
    decoder.feed(b"x")
    with pytest.raises(LimitExceeded):
        decoder.next_frame()
    assert decoder.buffered == 11
    with pytest.raises(LimitExceeded):  # repeatable: nothing was consumed
        decoder.next_frame()
    with pytest.raises(LimitExceeded):
        decoder.close_input()


def test_line_over_max_line_with_its_newline_already_buffered() -> None:
    decoder = LineDecoder(3)
    decoder.feed(b"abc\nabcd\nab\n")
    assert decoder.next_frame() == b"abc"
    with pytest.raises(LimitExceeded):
        decoder.next_frame()
    assert decoder.buffered == 8


def test_line_decoder_zero_max_line_accepts_only_empty_lines() -> None:
    decoder = LineDecoder(0)
    decoder.feed(b"\n\n")
    assert list(decoder) == [b"", b""]
    decoder.feed(b"a")
    with pytest.raises(LimitExceeded):
        decoder.next_frame()


# --- delimiters -------------------------------------------------------------------


def test_delimiter_decoder_properties() -> None:
    decoder = DelimiterDecoder(b"\r\n", 100)
    assert decoder.delimiter == b"\r\n"
    assert decoder.max_bytes == 100


def test_delimited_frame_of_exactly_max_bytes_at_every_split() -> None:
    stream = b"y" * 8 + b"<>" + b"z<>"
    for pieces in splits(stream):
        assert decode(DelimiterDecoder(b"<>", 8), pieces) == [b"y" * 8, b"z"]


def test_delimited_frame_over_max_bytes_raises_when_certain() -> None:
    decoder = DelimiterDecoder(b"<>", 8)
    decoder.feed(b"y" * 9)
    # The contract decides once max_bytes + len(delimiter) bytes are buffered.
    assert decoder.next_frame() is None
    decoder.feed(b"y")
    with pytest.raises(LimitExceeded):
        decoder.next_frame()
    assert decoder.buffered == 10


def test_delimited_partial_delimiter_at_eof() -> None:
    decoder = DelimiterDecoder(b"\r\n", 100)
    decoder.feed(b"done\r\nhalf\r")
    assert decoder.next_frame() == b"done"
    with pytest.raises(IncompleteRead) as caught:
        decoder.close_input()
    assert caught.value.partial == b"half\r"
    assert caught.value.expected is None


def test_delimited_and_lines_with_the_same_delimiter_agree() -> None:
    stream = b"a\n\nbb\nccc\n"
    lines = LineDecoder(10)
    lines.feed(stream)
    delimited = DelimiterDecoder(b"\n", 10)
    delimited.feed(stream)
    assert list(lines) == list(delimited) == [b"a", b"", b"bb", b"ccc"]


# --- length prefixes --------------------------------------------------------------


def test_length_prefix_defaults() -> None:
    decoder = LengthPrefixDecoder()
    assert decoder.prefix_size == 4
    assert decoder.max_size == DEFAULT_MAX_FRAME_SIZE == 4 * 1024 * 1024
    assert LengthPrefixed() == LengthPrefixed(4, max_size=DEFAULT_MAX_FRAME_SIZE)


@pytest.mark.parametrize("prefix_size", PREFIX_SIZES)
def test_length_prefix_is_big_endian(prefix_size: PrefixSize) -> None:
    encoded = encode_length_prefixed(b"x" * 0x102 if prefix_size > 1 else b"x" * 3, prefix_size)
    header = encoded[:prefix_size]
    expected_length = 0x102 if prefix_size > 1 else 3
    assert header == expected_length.to_bytes(prefix_size, "big")
    if prefix_size > 1:
        assert header.endswith(b"\x01\x02")


@pytest.mark.parametrize("prefix_size", PREFIX_SIZES)
def test_zero_length_frames(prefix_size: PrefixSize) -> None:
    decoder = LengthPrefixDecoder(prefix_size, 10)
    decoder.feed(bytes(prefix_size) * 3)
    assert list(decoder) == [b"", b"", b""]
    assert decoder.at_boundary


@pytest.mark.parametrize("prefix_size", PREFIX_SIZES)
def test_frame_of_exactly_max_size(prefix_size: PrefixSize) -> None:
    stream = encode_length_prefixed(b"m" * 200, prefix_size) + bytes(prefix_size)
    for pieces in splits(stream):
        assert decode(LengthPrefixDecoder(prefix_size, 200), pieces) == [b"m" * 200, b""]


@pytest.mark.parametrize("prefix_size", PREFIX_SIZES)
def test_prefix_over_max_size_raises_before_the_body(prefix_size: PrefixSize) -> None:
    header = (201).to_bytes(prefix_size, "big")
    decoder = LengthPrefixDecoder(prefix_size, 200)
    decoder.feed(header[:-1])
    assert decoder.next_frame() is None
    decoder.feed(header[-1:])  # no body byte fed: the announcement alone is enough
    with pytest.raises(LimitExceeded, match="201"):
        decoder.next_frame()
    assert decoder.buffered == prefix_size
    assert not decoder.at_boundary
    with pytest.raises(LimitExceeded):  # repeatable: the prefix stays buffered
        decoder.next_frame()


def test_eight_byte_prefix_with_high_bytes_set() -> None:
    decoder = LengthPrefixDecoder(8)
    decoder.feed((1 << 56 | 5).to_bytes(8, "big"))
    with pytest.raises(LimitExceeded):
        decoder.next_frame()
    decoder = LengthPrefixDecoder(8, max_size=1 << 62)
    decoder.feed(b"\xff" * 8)  # 2**64 - 1: over any limit an int can hold here
    with pytest.raises(LimitExceeded):
        decoder.next_frame()


def test_eight_byte_prefix_round_trip_at_every_split() -> None:
    frames = [b"", b"\x00" * 300, b"eight"]
    stream = b"".join(encode_length_prefixed(frame, 8) for frame in frames)
    assert stream[:8] == bytes(8)
    assert stream[8:16] == b"\x00\x00\x00\x00\x00\x00\x01\x2c"
    for pieces in splits(stream):
        assert decode(LengthPrefixDecoder(8), pieces) == frames


def test_prefix_cut_by_eof() -> None:
    decoder = LengthPrefixDecoder(4)
    decoder.feed(b"\x00\x00")
    assert not decoder.at_boundary
    with pytest.raises(IncompleteRead) as caught:
        decoder.close_input()
    assert caught.value.partial == b"\x00\x00"
    assert caught.value.expected == 4


def test_body_cut_by_eof() -> None:
    decoder = LengthPrefixDecoder(2)
    decoder.feed(b"\x00\x05abc")
    assert decoder.next_frame() is None
    assert decoder.buffered == 5
    with pytest.raises(IncompleteRead) as caught:
        decoder.close_input()
    assert caught.value.partial == b"\x00\x05abc"
    assert caught.value.expected == 7
    assert "5 bytes" in str(caught.value)


def test_one_byte_prefix_frames_up_to_255_bytes() -> None:
    decoder = LengthPrefixDecoder(1, max_size=1000)
    decoder.feed(encode_length_prefixed(b"z" * 255, 1))
    assert decoder.next_frame() == b"z" * 255


# --- encoders ---------------------------------------------------------------------


def test_encode_line() -> None:
    assert encode_line(b"hello") == b"hello\n"
    assert encode_line(b"") == b"\n"
    assert encode_line(b"cr\r") == b"cr\r\n"
    with pytest.raises(ValueError, match="delimiter"):
        encode_line(b"two\nlines")
    assert encode_line(b"x" * 5, max_line=5) == b"xxxxx\n"
    with pytest.raises(ValueError, match="max_bytes=5"):
        encode_line(b"x" * 6, max_line=5)


def test_encode_delimited() -> None:
    assert encode_delimited(b"abc", b"\0") == b"abc\0"
    with pytest.raises(ValueError, match="delimiter"):
        encode_delimited(b"a\0c", b"\0")
    with pytest.raises(ValueError, match="empty"):
        encode_delimited(b"abc", b"")


@pytest.mark.parametrize(
    ("frame", "delimiter"),
    [
        (b"xa", b"aa"),  # "xaaa": a decoder would cut after "x"
        (b"ab", b"aba"),  # "ababa"
        (b"xab", b"abab"),  # "xababab"
    ],
)
def test_encode_delimited_refuses_a_tail_that_completes_the_delimiter_early(
    frame: bytes, delimiter: bytes
) -> None:
    with pytest.raises(ValueError, match="delimiter"):
        encode_delimited(frame, delimiter)
    # Proof that it had to: the decoder would not give the frame back.
    decoder = DelimiterDecoder(delimiter, 100)
    decoder.feed(frame + delimiter)
    assert decoder.next_frame() != frame


def test_encode_delimited_accepts_a_tail_that_does_not_complete_the_delimiter() -> None:
    assert encode_delimited(b"a\r", b"\r\n") == b"a\r\r\n"
    decoder = DelimiterDecoder(b"\r\n", 100)
    decoder.feed(b"a\r\r\n")
    assert decoder.next_frame() == b"a\r"


def test_encode_length_prefixed_limits_of_each_prefix() -> None:
    assert encode_length_prefixed(b"x" * 255, 1)[:1] == b"\xff"
    with pytest.raises(ValueError, match="1-byte prefix"):
        encode_length_prefixed(b"x" * 256, 1)
    assert encode_length_prefixed(b"x" * 65535, 2)[:2] == b"\xff\xff"
    with pytest.raises(ValueError, match="2-byte prefix"):
        encode_length_prefixed(b"x" * 65536, 2)
    with pytest.raises(ValueError, match="max_size=3"):
        encode_length_prefixed(b"x" * 4, 4, max_size=3)
    assert encode_length_prefixed(b"x" * 3, 4, max_size=3) == b"\0\0\0\3xxx"


def test_encode_length_prefixed_counts_bytes_of_any_buffer() -> None:
    view = memoryview(b"abcdef").cast("B", shape=[2, 3])
    assert encode_length_prefixed(view, 2) == b"\x00\x06abcdef"


def test_framing_objects_enforce_their_limit_when_encoding() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Lines(max_line=3).encode(b"abcd")
    with pytest.raises(ValueError, match="max_bytes"):
        Delimited(b"\0", max_bytes=3).encode(b"abcd")
    with pytest.raises(ValueError, match="max_size"):
        LengthPrefixed(4, max_size=3).encode(b"abcd")
    with pytest.raises(ValueError, match="prefix"):
        LengthPrefixed(1, max_size=1000).encode(b"x" * 256)


# --- argument checks ------------------------------------------------------------------


@pytest.mark.parametrize("prefix_size", [0, 3, 5, 16, True, -4])
def test_bad_prefix_sizes(prefix_size: int) -> None:
    with pytest.raises(ValueError, match="prefix_size"):
        LengthPrefixDecoder(prefix_size, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix_size"):
        LengthPrefixed(prefix_size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix_size"):
        encode_length_prefixed(b"", prefix_size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: LineDecoder(-1),
        lambda: Lines(max_line=-1),
        lambda: DelimiterDecoder(b"\0", -1),
        lambda: Delimited(b"\0", max_bytes=-1),
        lambda: LengthPrefixDecoder(4, -1),
        lambda: LengthPrefixed(4, max_size=-1),
        lambda: DelimiterDecoder(b"", 10),
        lambda: Delimited(b"", max_bytes=10),
    ],
)
def test_bad_limits_and_delimiters(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"max_line|max_bytes|max_size|delimiter"):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: LineDecoder(1.5),  # type: ignore[arg-type]
        lambda: LineDecoder(True),
        lambda: DelimiterDecoder("\n", 10),  # type: ignore[arg-type]
        lambda: Delimited(bytearray(b"\n"), max_bytes=10),  # type: ignore[arg-type]
    ],
)
def test_bad_argument_types(make: Callable[[], object]) -> None:
    with pytest.raises(TypeError):
        make()


def test_framings_are_immutable_values() -> None:
    assert Delimited(b"\0", max_bytes=5) == Delimited(b"\0", max_bytes=5)
    assert hash(Lines(10)) == hash(Lines(10))
    framing = LengthPrefixed(2, max_size=10)
    with pytest.raises(AttributeError):
        framing.max_size = 20  # type: ignore[misc]


def test_input_closed_property() -> None:
    decoder = LineDecoder()
    assert not decoder.input_closed
    decoder.close_input()
    assert decoder.input_closed
