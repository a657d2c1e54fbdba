"""The conformance suites on every stream sockit ships, and on streams broken on purpose.

The positive runs prove each transport keeps the :mod:`sockit.abc` contracts; the
negative runs prove the suite notices when a contract is broken (a suite that passes
everything would be a test that cannot fail).
"""

from __future__ import annotations

import math
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from sockit.errors import ClosedResourceError
from sockit.proto.timeouts import resolve_timeout
from sockit.sync import SocketStream, connect, connect_unix, listen, listen_unix
from sockit.sync._buffered import BufferedStream
from sockit.testing.conformance import (
    MIN_BUFFER,
    check_half_closeable_stream,
    check_stream,
)
from sockit.testing.memory import MemoryStream, memory_stream_pair

if TYPE_CHECKING:
    from pathlib import Path

    from sockit.abc import Buffer, HalfCloseableStream

StreamPair = tuple[SocketStream, SocketStream]

# --- the streams sockit ships -------------------------------------------------------


def _socketpair_streams() -> StreamPair:
    first, second = socket.socketpair()
    return SocketStream(first), SocketStream(second)


def _tcp_streams(host: str) -> StreamPair:
    with listen(0, host) as listener:
        client = connect(host, listener.port, timeout=10)
        try:
            server = listener.accept(timeout=10)
        except BaseException:
            client.close()
            raise
    return client, server


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_memory_streams() -> None:
    check_half_closeable_stream(memory_stream_pair)


def test_memory_streams_with_the_smallest_buffer_the_suite_allows() -> None:
    # Every bulk transfer then crosses the buffer-full/wake-up path thousands of times.
    check_half_closeable_stream(lambda: memory_stream_pair(max_buffer=MIN_BUFFER))


def test_memory_streams_as_plain_streams() -> None:
    check_stream(memory_stream_pair)


def test_socketpair_streams() -> None:
    check_half_closeable_stream(_socketpair_streams)


def test_tcp_ipv4_loopback_streams() -> None:
    check_half_closeable_stream(lambda: _tcp_streams("127.0.0.1"))


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback (::1) here")
def test_tcp_ipv6_loopback_streams() -> None:
    check_half_closeable_stream(lambda: _tcp_streams("::1"))


def test_unix_streams(tmp_path: Path) -> None:
    path = str(tmp_path / "s")

    def make_pair() -> StreamPair:
        with listen_unix(path) as listener:
            client = connect_unix(path, timeout=10)
            try:
                server = listener.accept(timeout=10)
            except BaseException:
                client.close()
                raise
        return client, server

    check_half_closeable_stream(make_pair)


def test_socket_stream_zero_timeout_is_a_timeout() -> None:
    """Timeouts are TimeoutError and nothing else is; timeout=0 is a valid timeout.

    Regression: a socket in non-blocking mode (timeout=0) raised BlockingIOError, and
    so did a message helper whose deadline expired between two reads.
    """
    first, second = _socketpair_streams()
    with first, second:
        with pytest.raises(TimeoutError):
            first.recv(timeout=0)
        with pytest.raises(TimeoutError):
            first.recv_exactly(1, timeout=0)
        with pytest.raises(TimeoutError):
            first.recv_line(timeout=0)
        with pytest.raises(TimeoutError):
            first.sendall(bytes(32 << 20), timeout=0)


# --- streams broken on purpose --------------------------------------------------------


class AdaptedStream(BufferedStream):
    """A correct stream built on a MemoryStream's plain recv/sendall.

    The subclasses below each plant one defect seen in real libraries; the suite must
    reject every one of them, and accept this class itself.
    """

    def __init__(self, inner: MemoryStream) -> None:
        super().__init__()
        self.inner = inner

    @classmethod
    def pair(cls) -> tuple[HalfCloseableStream, HalfCloseableStream]:
        first, second = memory_stream_pair()
        return cls(first), cls(second)

    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        return self.inner.recv(max_bytes, timeout=math.inf if timeout is None else timeout)

    def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        seconds = resolve_timeout(timeout, self.timeout)
        self.inner.sendall(data, timeout=math.inf if seconds is None else seconds)

    def send_eof(self) -> None:
        self.inner.send_eof()

    def close(self) -> None:
        self._lines.clear()
        self._buffer.take_all()
        self.inner.close()


class EmptyOnTimeout(AdaptedStream):
    """pwntools: a receive that times out returns b"" instead of raising."""

    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        try:
            return super()._receive_some(max_bytes, timeout)
        except TimeoutError:
            return b""


class SendEofNotIdempotent(AdaptedStream):
    """A second send_eof fails (a raw shutdown(SHUT_WR) on some systems: ENOTCONN)."""

    def __init__(self, inner: MemoryStream) -> None:
        super().__init__(inner)
        self.sent_eof = False

    def send_eof(self) -> None:
        if self.sent_eof:
            raise OSError(107, "Transport endpoint is not connected")
        self.sent_eof = True
        super().send_eof()


class SendEofClosesEverything(AdaptedStream):
    """send_eof implemented as close: the reply of the peer can no longer be read."""

    def send_eof(self) -> None:
        self.close()


class LosesDataOnTimeout(AdaptedStream):
    """A message helper that throws away what it received when it times out."""

    def recv_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        try:
            return super().recv_exactly(n, timeout=timeout)
        except TimeoutError:
            self._buffer.take_all()
            raise


class EmptyAfterClose(AdaptedStream):
    """Receiving on a closed stream returns b"" (looks like EOF) instead of raising."""

    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        try:
            return super()._receive_some(max_bytes, timeout)
        except ClosedResourceError:
            return b""


class ReturnsMoreThanMaxBytes(AdaptedStream):
    """recv(max_bytes) hands out a whole chunk, whatever max_bytes says."""

    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        return super()._receive_some(65536, timeout)


class NoLineLimit(AdaptedStream):
    """recv_line reads without bound (asyncio's readline before its limit existed)."""

    def recv_line(self, *, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        return super().recv_line(max_bytes=1 << 30, timeout=timeout)


class IgnoresDefaultTimeout(AdaptedStream):
    """The timeout attribute exists but receives wait forever without a per-call one."""

    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        return super()._receive_some(max_bytes, None if timeout == self.timeout else timeout)


class CloseNotIdempotent(AdaptedStream):
    """A second close raises (a double close of a raw file descriptor: EBADF)."""

    def close(self) -> None:
        if self.inner.closed:
            raise OSError(9, "Bad file descriptor")
        super().close()


class SendAfterPeerCloseSucceeds(AdaptedStream):
    """Data sent to a closed peer vanishes silently instead of raising."""

    def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        try:
            super().sendall(data, timeout=timeout)
        except BrokenPipeError:
            pass


def test_the_adapter_itself_conforms() -> None:
    # Otherwise the failures below could come from the adapter, not the planted defect.
    check_half_closeable_stream(AdaptedStream.pair)


@pytest.mark.parametrize(
    ("stream_class", "message"),
    [
        pytest.param(
            EmptyOnTimeout, r"expected TimeoutError, but it returned b''", id="EmptyOnTimeout"
        ),
        pytest.param(
            SendEofNotIdempotent, r"\[send_eof is idempotent.*OSError", id="SendEofNotIdempotent"
        ),
        pytest.param(
            SendEofClosesEverything,
            r"\[send_eof is idempotent.*ClosedResourceError",
            id="SendEofClosesEverything",
        ),
        pytest.param(LosesDataOnTimeout, r"must be kept", id="LosesDataOnTimeout"),
        pytest.param(
            EmptyAfterClose,
            r"after close\(\): expected ClosedResourceError, but it returned b''",
            id="EmptyAfterClose",
        ),
        pytest.param(
            ReturnsMoreThanMaxBytes, r"recv\(1\) returned \d+ bytes", id="ReturnsMoreThanMaxBytes"
        ),
        pytest.param(NoLineLimit, r"expected LimitExceeded", id="NoLineLimit"),
        pytest.param(
            IgnoresDefaultTimeout,
            r"with the default timeout.*ignored its timeout",
            id="IgnoresDefaultTimeout",
        ),
        pytest.param(CloseNotIdempotent, r"close\(\) raised OSError", id="CloseNotIdempotent"),
        pytest.param(
            SendAfterPeerCloseSucceeds,
            r"sendall kept succeeding after the peer closed",
            id="SendAfterPeerCloseSucceeds",
        ),
    ],
)
def test_the_suite_rejects_a_broken_stream(stream_class: type[AdaptedStream], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_half_closeable_stream(stream_class.pair)


def test_the_suite_rejects_a_stream_that_is_not_half_closeable() -> None:
    def make_pair() -> tuple[HalfCloseableStream, HalfCloseableStream]:
        return ("not a stream", "either")  # type: ignore[return-value]

    with pytest.raises(AssertionError, match="is a str, not a Stream"):
        check_half_closeable_stream(make_pair)


def test_a_failing_check_leaves_no_thread_behind() -> None:
    # The conftest's autouse leak guard fails this test if a thread of the suite
    # outlives it; the planted defect makes the suite fail half way through a check.
    before = set(threading.enumerate())
    with pytest.raises(AssertionError):
        check_half_closeable_stream(LosesDataOnTimeout.pair)
    assert set(threading.enumerate()) <= before
