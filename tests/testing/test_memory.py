"""What memory streams do beyond the shared contract (that is test_conformance.py's job):
backpressure, resets, wake-ups of blocked threads, and the pair's own parameters."""

from __future__ import annotations

import array
import errno
import threading
from typing import TYPE_CHECKING, Generic, TypeVar

import pytest

from sockit.errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConnectionResetByPeer,
    PeerClosedError,
)
from sockit.testing.memory import DEFAULT_MAX_BUFFER, MemoryStream, memory_stream_pair

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T = TypeVar("T")

# Long enough for any call that should succeed; only a failing test ever waits this long.
PATIENCE = 10.0
# How long a thread must stay inside a call before the test calls it blocked. This is an
# observation window, not synchronisation: a wrong implementation returns early and the
# test sees it; a right one stays blocked however long the window is.
BLOCKED_WINDOW = 0.1


class Background(Generic[T]):
    """Run a function in a thread; result() joins it and returns or re-raises."""

    def __init__(self, function: Callable[[], T]) -> None:
        self._function = function
        self._value: T | None = None
        self._error: BaseException | None = None
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.started.wait(PATIENCE)

    def _run(self) -> None:
        self.started.set()
        try:
            self._value = self._function()
        except BaseException as error:
            self._error = error

    def assert_blocked(self) -> None:
        self._thread.join(BLOCKED_WINDOW)
        assert self._thread.is_alive(), "the call returned instead of blocking"

    def result(self) -> T:
        self._thread.join(PATIENCE)
        assert not self._thread.is_alive(), "the call is still blocked"
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def error(self) -> BaseException:
        self._thread.join(PATIENCE)
        assert not self._thread.is_alive(), "the call is still blocked"
        assert self._error is not None, f"the call returned {self._value!r}"
        return self._error


@pytest.fixture
def pair() -> Iterator[tuple[MemoryStream, MemoryStream]]:
    first, second = memory_stream_pair(max_buffer=1024)
    with first, second:
        yield first, second


def test_default_buffer_size() -> None:
    first, second = memory_stream_pair()
    with first, second:
        assert first.max_buffer == second.max_buffer == DEFAULT_MAX_BUFFER


@pytest.mark.parametrize("max_buffer", [0, -1])
def test_max_buffer_must_be_positive(max_buffer: int) -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        memory_stream_pair(max_buffer=max_buffer)


def test_sendall_blocks_on_a_full_buffer_then_proceeds(
    pair: tuple[MemoryStream, MemoryStream],
) -> None:
    first, second = pair
    first.sendall(b"a" * 1024, timeout=0)  # exactly fits: no waiting needed
    assert first.pending_send == 1024
    with pytest.raises(TimeoutError):
        first.sendall(b"b", timeout=0.05)
    assert first.pending_send == 1024

    payload = bytes(range(256)) * 40  # 10 KiB: ten buffers' worth
    sender = Background(lambda: first.sendall(payload, timeout=PATIENCE))
    sender.assert_blocked()
    received = bytearray()
    for _ in range(len(payload) + 1024):
        if len(received) == len(payload) + 1024:
            break
        assert first.pending_send <= first.max_buffer
        received += second.recv(300, timeout=PATIENCE)
    sender.result()
    assert bytes(received) == b"a" * 1024 + payload
    assert first.pending_send == 0


def test_sendall_timeout_keeps_what_was_sent() -> None:
    first, second = memory_stream_pair(max_buffer=10)
    with first, second:
        with pytest.raises(TimeoutError, match="10 of 13 bytes"):
            first.sendall(b"0123456789abc", timeout=0.05)
        assert second.recv_exactly(10, timeout=PATIENCE) == b"0123456789"
        with pytest.raises(TimeoutError):
            second.recv(timeout=0)


def test_one_byte_buffer_carries_a_large_transfer() -> None:
    first, second = memory_stream_pair(max_buffer=1)
    with first, second:
        payload = bytes(range(256)) * 200
        sender = Background(lambda: first.sendall(payload, timeout=PATIENCE))
        assert second.recv_exactly(len(payload), timeout=PATIENCE) == payload
        sender.result()


def test_sendall_copies_the_data(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, second = pair
    data = bytearray(b"original")
    first.sendall(data)
    data[:] = b"CHANGED!"
    assert second.recv_exactly(8, timeout=PATIENCE) == b"original"


def test_sendall_counts_bytes_not_items(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, second = pair
    words = array.array("H", [1, 2, 3])
    first.sendall(memoryview(words))
    assert second.recv_exactly(6, timeout=PATIENCE) == words.tobytes()


def test_pending_send_counts_only_what_the_peer_has_not_received(
    pair: tuple[MemoryStream, MemoryStream],
) -> None:
    first, second = pair
    first.sendall(b"a\nb\n")
    assert first.pending_send == 4
    assert second.recv_line(timeout=PATIENCE) == b"a"
    # "b\n" now sits in the peer's message buffer: received, so no longer pending.
    assert first.pending_send == 0
    assert second.recv_line(timeout=PATIENCE) == b"b"


def test_abort_is_a_reset_for_the_peer(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, second = pair
    first.sendall(b"in flight")
    first.abort()
    assert first.closed
    for _ in range(2):  # stays broken
        with pytest.raises(ConnectionResetByPeer) as caught:
            second.recv(timeout=PATIENCE)
        assert caught.value.errno == errno.ECONNRESET
        assert isinstance(caught.value, ConnectionResetError)
        assert isinstance(caught.value, BrokenResourceError)
    with pytest.raises(ConnectionResetByPeer):
        second.recv_line(timeout=PATIENCE)
    with pytest.raises(ConnectionResetByPeer):
        second.sendall(b"reply", timeout=PATIENCE)
    with pytest.raises(ClosedResourceError):
        first.recv(timeout=PATIENCE)
    first.abort()  # idempotent
    first.close()


def test_abort_wakes_a_peer_blocked_in_recv(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, second = pair
    receiver = Background(lambda: second.recv(timeout=PATIENCE))
    receiver.assert_blocked()
    first.abort()
    assert isinstance(receiver.error(), ConnectionResetByPeer)


def test_abort_after_close_does_nothing(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, second = pair
    first.sendall(b"bye")
    first.close()
    first.abort()
    assert second.recv(timeout=PATIENCE) == b"bye"
    assert second.recv(timeout=PATIENCE) == b""


def test_close_wakes_a_peer_blocked_in_recv_with_eof(
    pair: tuple[MemoryStream, MemoryStream],
) -> None:
    first, second = pair
    receiver = Background(lambda: second.recv(timeout=PATIENCE))
    receiver.assert_blocked()
    first.close()
    assert receiver.result() == b""


def test_send_eof_wakes_a_peer_blocked_in_recv_line(
    pair: tuple[MemoryStream, MemoryStream],
) -> None:
    first, second = pair
    first.sendall(b"no newline")
    receiver = Background(lambda: second.recv_line(timeout=PATIENCE))
    receiver.assert_blocked()
    first.send_eof()
    error = receiver.error()
    assert getattr(error, "partial", None) == b"no newline"


def test_close_wakes_our_own_blocked_recv(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, _ = pair
    receiver = Background(lambda: first.recv(timeout=PATIENCE))
    receiver.assert_blocked()
    first.close()
    assert isinstance(receiver.error(), ClosedResourceError)


def test_close_wakes_our_own_blocked_sendall(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, _ = pair
    sender = Background(lambda: first.sendall(b"x" * 4096, timeout=PATIENCE))
    sender.assert_blocked()
    first.close()
    assert isinstance(sender.error(), ClosedResourceError)


def test_peer_close_wakes_a_blocked_sendall_with_broken_pipe(
    pair: tuple[MemoryStream, MemoryStream],
) -> None:
    first, second = pair
    sender = Background(lambda: first.sendall(b"x" * 4096, timeout=PATIENCE))
    sender.assert_blocked()
    second.close()
    error = sender.error()
    assert isinstance(error, PeerClosedError)
    assert isinstance(error, BrokenPipeError)
    assert error.errno == errno.EPIPE


def test_peer_close_then_sendall_is_broken_pipe(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, second = pair
    second.close()
    with pytest.raises(PeerClosedError):
        first.sendall(b"x")
    # Still allowed: nothing to send, nothing to fail (a socket's send(b"") is the same).
    first.sendall(b"")
    assert first.recv(timeout=PATIENCE) == b""


def test_send_eof_on_a_closed_stream(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, second = pair
    first.close()
    with pytest.raises(ClosedResourceError):
        first.send_eof()
    second.send_eof()
    second.close()
    with pytest.raises(ClosedResourceError):  # closed wins over idempotence
        second.send_eof()


def test_default_timeout_applies_to_sendall(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, _ = pair
    first.timeout = 0.05
    with pytest.raises(TimeoutError):
        first.sendall(b"x" * 2048)


def test_repr_and_closed(pair: tuple[MemoryStream, MemoryStream]) -> None:
    first, _ = pair
    assert repr(first) == "<MemoryStream open max_buffer=1024>"
    states = [first.closed]
    first.close()
    states.append(first.closed)
    assert states == [False, True]
    assert repr(first) == "<MemoryStream closed max_buffer=1024>"
