"""ReceiveBuffer.feed_and_take_line is exactly feed() + take_line(), limits included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.errors import LimitExceeded
from sockit.proto.buffer import ReceiveBuffer


def _drain(buffer: ReceiveBuffer, max_bytes: int, first: bytes | None) -> list[object]:
    """Every result take_line gives until it needs more data (LimitExceeded recorded)."""
    results: list[object] = []
    line = first
    while line is not None:
        results.append(line)
        try:
            line = buffer.take_line(max_bytes)
        except LimitExceeded:
            results.append("limit")
            break
    return results


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"\n")), max_size=12),
    max_bytes=st.integers(min_value=0, max_value=20),
)
def test_same_lines_and_limits_as_feed_then_take_line(chunks: list[bytes], max_bytes: int) -> None:
    fast, slow = ReceiveBuffer(), ReceiveBuffer()
    for chunk in chunks:
        try:
            got_fast: list[object] = _drain(
                fast, max_bytes, fast.feed_and_take_line(chunk, max_bytes)
            )
        except LimitExceeded:
            got_fast = ["limit"]
        slow.feed(chunk)
        try:
            got_slow: list[object] = _drain(slow, max_bytes, slow.take_line(max_bytes))
        except LimitExceeded:
            got_slow = ["limit"]
        assert got_fast == got_slow
        if "limit" in got_fast:
            # Nothing was lost: both buffers still hold the same bytes.
            assert fast.take_all() == slow.take_all()
    assert fast.take_all() == slow.take_all()


def test_partial_line_is_joined_with_the_next_chunk() -> None:
    buffer = ReceiveBuffer()
    assert buffer.feed_and_take_line(b"hel", 100) is None
    assert buffer.feed_and_take_line(b"lo\nworld\npart", 100) == b"hello"
    assert buffer.take_line(100) == b"world"
    assert buffer.take_line(100) is None
    assert buffer.take_all() == b"part"


def test_over_limit_keeps_every_byte_in_order() -> None:
    buffer = ReceiveBuffer()
    assert buffer.feed_and_take_line(b"abc", 4) is None
    try:
        buffer.feed_and_take_line(b"defgh\nok\ntail", 4)
    except LimitExceeded:
        pass
    else:
        raise AssertionError("expected LimitExceeded")
    assert buffer.take_all() == b"abcdefgh\nok\ntail"
