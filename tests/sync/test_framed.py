"""FramedStream over real sockets: a socketpair and TCP loopback connections.

Frames of 0 B to 3 MiB in every framing, EOF at a boundary and mid-frame, limits,
timeouts that keep the partial frame, half-close, and a wrapped stream that only
offers recv/sendall.
"""

from __future__ import annotations

import contextlib
import math
import random
import select
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from sockit.abc import Stream
from sockit.errors import ClosedResourceError, EndOfStream, IncompleteRead, LimitExceeded
from sockit.proto.framing import Delimited, LengthPrefixed, Lines
from sockit.sync import connect, listen
from sockit.sync.framed import FramedStream
from sockit.sync.stream import SocketStream

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sockit.abc import Buffer
    from sockit.proto.framing import Framing

# Generous per-call default so a bug shows up as a TimeoutError, not a hung test.
TIMEOUT = 10.0
MIB = 1024 * 1024
SIZES = [0, 1, 64 * 1024, 3 * MIB]

FRAMINGS: list[Framing] = [
    Lines(max_line=4 * MIB),
    Delimited(b"\0", max_bytes=4 * MIB),
    Delimited(b"\r\n", max_bytes=4 * MIB),
    LengthPrefixed(4),
    LengthPrefixed(8, max_size=4 * MIB),
]


def payload(size: int, seed: int = 0) -> bytes:
    """Random bytes with no b"\\n", b"\\r" or b"\\0", so every framing can carry them."""
    data = random.Random(seed).randbytes(size)
    return data.translate(bytes.maketrans(b"\n\r\0", b"xyz"))


# --- connected pairs ----------------------------------------------------------------


def socketpair_streams() -> tuple[SocketStream, SocketStream]:
    left, right = socket.socketpair()
    return SocketStream(left, timeout=TIMEOUT), SocketStream(right, timeout=TIMEOUT)


def plain_tcp_streams() -> tuple[SocketStream, SocketStream]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=TIMEOUT)
        accepted, _ = server.accept()
    return SocketStream(client, timeout=TIMEOUT), SocketStream(accepted, timeout=TIMEOUT)


def sockit_tcp_streams() -> tuple[SocketStream, SocketStream]:
    with listen(0, "127.0.0.1") as listener:
        client = connect("127.0.0.1", listener.port, timeout=TIMEOUT)
        server = listener.accept(timeout=TIMEOUT)
    client.timeout = TIMEOUT
    server.timeout = TIMEOUT
    return client, server


PAIRS: dict[str, Callable[[], tuple[SocketStream, SocketStream]]] = {
    "socketpair": socketpair_streams,
    "tcp-socket": plain_tcp_streams,
    "tcp-sockit": sockit_tcp_streams,
}


@pytest.fixture(params=list(PAIRS))
def streams(request: pytest.FixtureRequest) -> Iterator[tuple[SocketStream, SocketStream]]:
    left, right = PAIRS[request.param]()
    with left, right:
        yield left, right


@pytest.fixture
def tcp() -> Iterator[tuple[SocketStream, SocketStream]]:
    left, right = sockit_tcp_streams()
    with left, right:
        yield left, right


@contextlib.contextmanager
def in_thread(function: Callable[[], None], name: str) -> Iterator[None]:
    """Run ``function`` in a thread for the duration of the block; join it and re-raise
    its exception."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            function()
        except BaseException as error:  # re-raised in the test's thread below
            errors.append(error)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=3 * TIMEOUT)
        assert not thread.is_alive(), f"{name} did not finish"
    if errors:
        raise errors[0]


# --- frames of every size -----------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_frames_of_every_size(streams: tuple[SocketStream, SocketStream], framing: Framing) -> None:
    sender = FramedStream(streams[0], framing)
    receiver = FramedStream(streams[1], framing)
    frames = [payload(size, seed) for seed, size in enumerate(SIZES * 2)]

    def send_all() -> None:
        for frame in frames:
            sender.send_frame(frame)
        sender.send_eof()

    # A 3 MiB frame does not fit the socket buffers: the sender needs its own thread.
    with in_thread(send_all, "framed-sender"):
        for frame in frames:
            received = receiver.recv_frame()
            assert len(received) == len(frame)
            assert received == frame
        with pytest.raises(EndOfStream):
            receiver.recv_frame()


def test_one_thread_sends_while_another_receives(
    tcp: tuple[SocketStream, SocketStream],
) -> None:
    framing = LengthPrefixed(4)
    client = FramedStream(tcp[0], framing)
    echo = FramedStream(tcp[1], framing)
    frames = [payload(size, seed) for seed, size in enumerate([3 * MIB, 0, 1, 3 * MIB, 777])]

    def echo_until_eof() -> None:
        for frame in echo:
            echo.send_frame(frame)
        echo.send_eof()

    def send_all() -> None:
        for frame in frames:
            client.send_frame(frame)
        client.send_eof()

    # Both directions carry 3 MiB frames at once: neither side may wait for the other
    # to finish sending before receiving.
    with in_thread(echo_until_eof, "framed-echo"), in_thread(send_all, "framed-sender"):
        assert list(client) == frames


def test_frames_already_received_are_returned_without_reading(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    framing = Lines()
    streams[0].sendall(b"one\ntwo\nthree\n")
    receiver = FramedStream(streams[1], framing)
    assert receiver.recv_frame() == b"one"
    # The rest arrived with the first chunk; no wait is needed, not even a zero one.
    assert receiver.recv_frame(timeout=0) == b"two"
    assert receiver.recv_frame(timeout=0) == b"three"


def test_bytes_buffered_by_the_inner_stream_are_used(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    # A line-based handshake, then frames, all in one segment: what the inner stream
    # read ahead during recv_line belongs to the first frames.
    framing = LengthPrefixed(2)
    streams[0].sendall(b"HELLO\n" + framing.encode(b"first") + framing.encode(b"second"))
    assert streams[1].recv_line() == b"HELLO"
    receiver = FramedStream(streams[1], framing)
    assert receiver.recv_frame() == b"first"
    assert receiver.recv_frame() == b"second"


# --- EOF ------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_eof_at_a_boundary_is_end_of_stream(
    streams: tuple[SocketStream, SocketStream], framing: Framing
) -> None:
    sender = FramedStream(streams[0], framing)
    receiver = FramedStream(streams[1], framing)
    sender.send_frame(b"a")
    sender.send_frame(b"")
    sender.send_eof()
    assert receiver.recv_frame() == b"a"
    assert receiver.recv_frame() == b""
    with pytest.raises(EndOfStream):
        receiver.recv_frame()
    with pytest.raises(EndOfStream):  # and again, without touching the socket
        receiver.recv_frame()


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_eof_mid_frame_is_incomplete_read(
    streams: tuple[SocketStream, SocketStream], framing: Framing
) -> None:
    encoded = framing.encode(b"complete") + framing.encode(b"cut short")
    streams[0].sendall(encoded[:-1])
    streams[0].send_eof()
    receiver = FramedStream(streams[1], framing)
    assert receiver.recv_frame() == b"complete"
    with pytest.raises(IncompleteRead) as caught:
        receiver.recv_frame()
    assert caught.value.partial == framing.encode(b"cut short")[:-1]
    with pytest.raises(EndOfStream):
        receiver.recv_frame()


def test_iteration_stops_at_eof_at_a_boundary(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    framing = Delimited(b"\0", max_bytes=100)
    streams[0].sendall(b"a\0bb\0\0")
    streams[0].send_eof()
    assert list(FramedStream(streams[1], framing)) == [b"a", b"bb", b""]


def test_iteration_raises_on_eof_mid_frame(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    streams[0].sendall(b"a\nb")
    streams[0].send_eof()
    received: list[bytes] = []
    with pytest.raises(IncompleteRead) as caught:
        received.extend(FramedStream(streams[1], Lines()))
    assert received == [b"a"]
    assert caught.value.partial == b"b"
    assert caught.value.expected is None


def test_reset_mid_frame_is_not_reported_as_eof(tcp: tuple[SocketStream, SocketStream]) -> None:
    tcp[0].sendall(LengthPrefixed(4).encode(b"whole frame")[:-3])
    tcp[0].abort()  # SO_LINGER 0: an RST, not a FIN
    receiver = FramedStream(tcp[1], LengthPrefixed(4))
    with pytest.raises(ConnectionResetError):
        receiver.recv_frame()


# --- limits ---------------------------------------------------------------------------


def test_length_prefix_over_the_limit_raises_without_waiting_for_the_body(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    # Only the prefix is sent: the receiver must not wait for 5 MiB that never come.
    streams[0].sendall((5 * MIB).to_bytes(4, "big"))
    receiver = FramedStream(streams[1], LengthPrefixed(4))
    with pytest.raises(LimitExceeded):
        receiver.recv_frame(timeout=TIMEOUT)
    with pytest.raises(LimitExceeded):  # the stream cannot be resynchronised
        receiver.recv_frame(timeout=TIMEOUT)


def test_line_over_the_limit(streams: tuple[SocketStream, SocketStream]) -> None:
    streams[0].sendall(b"ok\n" + b"x" * 101)
    receiver = FramedStream(streams[1], Lines(max_line=100))
    assert receiver.recv_frame() == b"ok"
    with pytest.raises(LimitExceeded):
        receiver.recv_frame()


def test_bad_frames_are_refused_before_anything_is_sent(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    lines = FramedStream(streams[0], Lines(max_line=10))
    with pytest.raises(ValueError, match="delimiter"):
        lines.send_frame(b"two\nlines")
    with pytest.raises(ValueError, match="max_bytes"):
        lines.send_frame(b"x" * 11)
    lines.send_frame(b"fine")
    one_byte = FramedStream(streams[0], LengthPrefixed(1, max_size=1000))
    with pytest.raises(ValueError, match="1-byte prefix"):
        one_byte.send_frame(b"x" * 256)
    streams[0].send_eof()
    # The peer sees exactly the good frame: nothing of the refused ones was sent.
    assert streams[1].recv_exactly(5) == b"fine\n"
    assert streams[1].recv() == b""


# --- timeouts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "cut"),
    [
        (LengthPrefixed(4), 2),  # inside the prefix
        (LengthPrefixed(4), 4),  # exactly after the prefix
        (LengthPrefixed(4), 1000),  # inside the body
        (Lines(), 1000),
        (Delimited(b"\r\n", max_bytes=10000), 2001),  # between "\r" and "\n"
    ],
    ids=repr,
)
def test_timeout_keeps_the_partial_frame(
    streams: tuple[SocketStream, SocketStream], framing: Framing, cut: int
) -> None:
    frame = payload(2000, seed=7)
    encoded = framing.encode(frame)
    receiver = FramedStream(streams[1], framing)
    streams[0].sendall(encoded[:cut])
    with pytest.raises(TimeoutError):
        receiver.recv_frame(timeout=0.2)
    with pytest.raises(TimeoutError):
        receiver.recv_frame(timeout=0.05)
    streams[0].sendall(encoded[cut:])
    assert receiver.recv_frame() == frame


def test_default_timeout_is_the_inner_streams(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    streams[1].timeout = 0.1
    receiver = FramedStream(streams[1], Lines())
    assert receiver.timeout == 0.1
    streams[0].sendall(b"partial")
    with pytest.raises(TimeoutError):
        receiver.recv_frame()
    streams[0].sendall(b" line\n")
    assert receiver.recv_frame(timeout=math.inf) == b"partial line"


def test_zero_timeout_polls(streams: tuple[SocketStream, SocketStream]) -> None:
    receiver = FramedStream(streams[1], Lines())
    with pytest.raises(TimeoutError):
        receiver.recv_frame(timeout=0)
    streams[0].sendall(b"ready\n")
    # Once the kernel has the line, a zero timeout must return it, not time out.
    readable, _, _ = select.select([streams[1].socket], [], [], TIMEOUT)
    assert readable
    assert receiver.recv_frame(timeout=0) == b"ready"


# --- half-close, close, any stream ----------------------------------------------------------


def test_send_eof_keeps_the_other_direction_open(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    framing = Lines()
    left = FramedStream(streams[0], framing)
    right = FramedStream(streams[1], framing)
    left.send_frame(b"request")
    left.send_eof()
    left.send_eof()  # idempotent
    with pytest.raises(ClosedResourceError):
        left.send_frame(b"too late")
    assert list(right) == [b"request"]
    right.send_frame(b"reply")
    right.send_eof()
    assert list(left) == [b"reply"]


def test_close_closes_the_inner_stream_and_is_idempotent(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    with FramedStream(streams[0], Lines()) as framed:
        assert framed.stream is streams[0]
        assert repr(framed).startswith("<FramedStream Lines(")
    assert framed.closed
    assert streams[0].closed
    framed.close()
    with pytest.raises(ClosedResourceError):
        framed.recv_frame()
    with pytest.raises(ClosedResourceError):
        framed.send_frame(b"x")
    with pytest.raises(ClosedResourceError):
        framed.send_eof()
    # The peer sees the close as EOF at a boundary.
    with pytest.raises(EndOfStream):
        FramedStream(streams[1], Lines()).recv_frame()


def test_close_discards_frames_already_received(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    streams[0].sendall(b"one\ntwo\n")
    framed = FramedStream(streams[1], Lines())
    assert framed.recv_frame() == b"one"
    framed.close()
    with pytest.raises(ClosedResourceError):
        framed.recv_frame()


class RecvSendallOnly(Stream):
    """A Stream that is not half-closeable and refuses every helper but recv/sendall."""

    def __init__(self, inner: SocketStream) -> None:
        self.inner = inner
        self.calls: set[str] = set()

    def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        self.calls.add("sendall")
        self.inner.sendall(data, timeout=timeout)

    def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        self.calls.add("recv")
        return self.inner.recv(max_bytes, timeout=timeout)

    def recv_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        raise AssertionError("FramedStream must only use recv")

    def recv_until(
        self, delimiter: bytes, *, max_bytes: int, timeout: float | None = None
    ) -> bytes:
        raise AssertionError("FramedStream must only use recv")

    def recv_line(self, *, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        raise AssertionError("FramedStream must only use recv")

    def close(self) -> None:
        self.calls.add("close")
        self.inner.close()


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_works_on_any_stream(streams: tuple[SocketStream, SocketStream], framing: Framing) -> None:
    left = RecvSendallOnly(streams[0])
    right = RecvSendallOnly(streams[1])
    sender = FramedStream(left, framing)
    receiver = FramedStream(right, framing)
    frames = [payload(size, seed) for seed, size in enumerate([5, 0, 70000, 1])]

    def send_all() -> None:
        for frame in frames:
            sender.send_frame(frame)
        sender.close()  # no send_eof on this stream: close ends it

    with in_thread(send_all, "framed-sender"):
        assert list(receiver) == frames
    assert left.calls == {"sendall", "close"}
    assert right.calls == {"recv"}
    # No timeout attribute on this stream: calls wait without a default limit.
    assert receiver.timeout is None


def test_send_eof_needs_a_half_closeable_stream(
    streams: tuple[SocketStream, SocketStream],
) -> None:
    framed = FramedStream(RecvSendallOnly(streams[0]), Lines())
    with pytest.raises(TypeError, match="half-close"):
        framed.send_eof()


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_works_on_memory_streams(framing: Framing) -> None:
    # Imported here so a change in the testing package fails only this test.
    from sockit.testing.memory import memory_stream_pair  # noqa: PLC0415

    left, right = memory_stream_pair(max_buffer=1000)
    with FramedStream(left, framing) as sender, FramedStream(right, framing) as receiver:
        frames = [payload(size, seed) for seed, size in enumerate([0, 1, 64 * 1024, 999])]

        def send_all() -> None:
            for frame in frames:
                sender.send_frame(frame)
            sender.send_eof()

        # Each direction holds 1000 bytes: the 64 KiB frame goes through in pieces.
        with in_thread(send_all, "framed-sender"):
            assert list(receiver) == frames
