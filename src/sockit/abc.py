"""The small interfaces every sockit stream, listener and datagram socket implements.

Each docstring here is the whole contract; implementations (TCP, UNIX, socketpair,
memory pairs, TLS, framed wrappers, and the async twins) must not promise less, and
:mod:`sockit.testing` checks them against it. Shared rules:

* **EOF.** ``recv()`` returns ``b""`` if and only if the peer sent EOF. Message helpers
  raise :class:`~sockit.IncompleteRead` on EOF mid-message and
  :class:`~sockit.EndOfStream` at a clean boundary.
* **Timeouts** raise :class:`TimeoutError` and lose nothing: bytes already received
  stay buffered for the next call. ``timeout=None`` on a call means "use the object's
  default timeout" (its ``timeout`` attribute, itself ``None`` for "wait forever");
  ``math.inf`` waits forever whatever the default.
* **Limits.** Every delimiter read takes ``max_bytes``; going over it raises
  :class:`~sockit.LimitExceeded` and keeps the buffered bytes.
* **Close** is idempotent. Using an object after closing it raises
  :class:`~sockit.ClosedResourceError`; a connection broken by the peer raises
  :class:`~sockit.BrokenResourceError` (or a built-in ``ConnectionError``) with the
  ``OSError`` as ``__cause__``.
* A cancelled or timed-out send may have sent some, all or none of its data; the stream
  should then be closed, since the peer's view of the byte stream is unknown.

This module must never do I/O.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Self, TypeAlias

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "AsyncDatagramSocket",
    "AsyncHalfCloseableStream",
    "AsyncListener",
    "AsyncStream",
    "Buffer",
    "DatagramSocket",
    "HalfCloseableStream",
    "Listener",
    "Stream",
]

Buffer: TypeAlias = bytes | bytearray | memoryview
"""What the send methods accept (``collections.abc.Buffer`` needs Python 3.12)."""


class Stream(abc.ABC):
    """A reliable, ordered, bidirectional byte stream (blocking)."""

    __slots__ = ()

    @abc.abstractmethod
    def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        """Send all of ``data``, blocking until the kernel (or peer) took every byte.

        Raises :class:`~sockit.BrokenResourceError` (or ``BrokenPipeError`` /
        ``ConnectionResetError``) if the peer is gone, ``ClosedResourceError`` if this
        stream was closed or ``send_eof()`` was called, ``TimeoutError`` on timeout
        (after which some, all or none of the data may have been sent).
        """

    @abc.abstractmethod
    def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Return between 1 and ``max_bytes`` bytes, or ``b""`` if and only if EOF.

        Buffered bytes (left over from a message helper) are returned first, without
        waiting. Once EOF was returned, later calls return ``b""`` again.
        """

    @abc.abstractmethod
    def recv_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """Return exactly ``n`` bytes.

        Raises :class:`~sockit.EndOfStream` on EOF before the first byte,
        :class:`~sockit.IncompleteRead` (carrying the partial bytes) on EOF after it.
        On timeout the bytes received so far stay buffered.
        """

    @abc.abstractmethod
    def recv_until(
        self, delimiter: bytes, *, max_bytes: int, timeout: float | None = None
    ) -> bytes:
        """Return the bytes before the next ``delimiter``; the delimiter is consumed.

        Raises :class:`~sockit.LimitExceeded` if ``max_bytes`` bytes are buffered and
        the delimiter does not start within them (the bytes stay buffered);
        :class:`~sockit.EndOfStream` on EOF with nothing buffered;
        :class:`~sockit.IncompleteRead` on EOF with a partial message.
        """

    @abc.abstractmethod
    def recv_line(self, *, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Return the next line without its ``b"\\n"``: ``recv_until(b"\\n", ...)``.

        A ``b"\\r"`` before the newline is kept (use ``recv_until(b"\\r\\n", ...)`` for
        CRLF protocols), so no byte of the stream is ever dropped silently. Same errors
        as :meth:`recv_until`.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the stream, releasing its resources. Idempotent; never raises for a
        stream that is already closed. Unread buffered data is discarded."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class HalfCloseableStream(Stream):
    """A :class:`Stream` whose sending half can be closed on its own."""

    __slots__ = ()

    @abc.abstractmethod
    def send_eof(self) -> None:
        """Tell the peer no more data is coming (TCP: ``shutdown(SHUT_WR)``, a FIN).

        Receiving keeps working until the peer's own EOF. Idempotent: a second call does
        nothing. After it, ``sendall`` raises :class:`~sockit.ClosedResourceError`, and
        so does ``send_eof`` itself once the stream is closed (closed wins: using a
        closed stream is always an error).
        """


class Listener(abc.ABC):
    """A passive (listening) endpoint that hands out a :class:`Stream` per connection."""

    __slots__ = ()

    @abc.abstractmethod
    def accept(self, *, timeout: float | None = None) -> HalfCloseableStream:
        """Wait for and return the next connection.

        Raises :class:`~sockit.ClosedResourceError` if the listener was closed, and
        ``TimeoutError`` on timeout. Transient per-connection errors of the kernel
        (a connection reset before accept, for example) are retried, not raised.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening and release the socket(s). Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class DatagramSocket(abc.ABC):
    """A datagram endpoint: each send is one message, each receive returns one message.

    Message boundaries are preserved, zero-length datagrams are data (never EOF), and a
    datagram larger than the receive buffer raises :class:`~sockit.DatagramTruncated`
    instead of being cut silently.
    """

    __slots__ = ()

    @abc.abstractmethod
    def sendto(self, data: Buffer, address: object, *, timeout: float | None = None) -> None:
        """Send one datagram to ``address``. Raises :class:`~sockit.DatagramTooLarge`
        if the datagram cannot be sent in one piece."""

    @abc.abstractmethod
    def recvfrom(
        self, max_bytes: int = 65536, *, timeout: float | None = None
    ) -> tuple[bytes, object]:
        """Receive one datagram and its sender's address."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the socket. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- async twins: same names and contracts, awaited; aclose() instead of close() ------


class AsyncStream(abc.ABC):
    """Async twin of :class:`Stream`: the same methods and contracts, awaited.

    Cancellation is a timeout without a deadline: a cancelled receive loses nothing,
    a cancelled send may have sent some, all or none of its data.
    """

    __slots__ = ()

    @abc.abstractmethod
    async def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        """See :meth:`Stream.sendall`."""

    @abc.abstractmethod
    async def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """See :meth:`Stream.recv`."""

    @abc.abstractmethod
    async def recv_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """See :meth:`Stream.recv_exactly`."""

    @abc.abstractmethod
    async def recv_until(
        self, delimiter: bytes, *, max_bytes: int, timeout: float | None = None
    ) -> bytes:
        """See :meth:`Stream.recv_until`."""

    @abc.abstractmethod
    async def recv_line(self, *, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """See :meth:`Stream.recv_line`."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """See :meth:`Stream.close`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncHalfCloseableStream(AsyncStream):
    """Async twin of :class:`HalfCloseableStream`."""

    __slots__ = ()

    @abc.abstractmethod
    async def send_eof(self) -> None:
        """See :meth:`HalfCloseableStream.send_eof`."""


class AsyncListener(abc.ABC):
    """Async twin of :class:`Listener`."""

    __slots__ = ()

    @abc.abstractmethod
    async def accept(self, *, timeout: float | None = None) -> AsyncHalfCloseableStream:
        """See :meth:`Listener.accept`."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """See :meth:`Listener.close`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncDatagramSocket(abc.ABC):
    """Async twin of :class:`DatagramSocket`."""

    __slots__ = ()

    @abc.abstractmethod
    async def sendto(self, data: Buffer, address: object, *, timeout: float | None = None) -> None:
        """See :meth:`DatagramSocket.sendto`."""

    @abc.abstractmethod
    async def recvfrom(
        self, max_bytes: int = 65536, *, timeout: float | None = None
    ) -> tuple[bytes, object]:
        """See :meth:`DatagramSocket.recvfrom`."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """See :meth:`DatagramSocket.close`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
