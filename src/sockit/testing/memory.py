"""In-memory stream pairs that behave like a connected pair of stream sockets.

:func:`memory_stream_pair` returns two connected :class:`MemoryStream` objects: what one
sends the other receives, with the contracts of :class:`sockit.abc.HalfCloseableStream`
(they pass :func:`sockit.testing.conformance.check_half_closeable_stream`). Use them to
test protocol code, wrappers and relays without the kernel: no ports, no file
descriptors, and faults a real socket only shows under load made easy to reproduce
(a full buffer, a reset, a half-close).

The message helpers (``recv_exactly``, ``recv_until``, ``recv_line``) come from the same
:class:`~sockit.sync._buffered.BufferedStream` base as :class:`sockit.SocketStream`, so
code tested against a memory stream meets exactly the same behaviour on a socket.

This module must never touch a socket, a file descriptor or the network, and never
sleep: every wait is on a condition variable that the other side notifies.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING

from sockit.errors import ClosedResourceError, ConnectionResetByPeer, PeerClosedError
from sockit.sync._buffered import BufferedStream
from sockit.sync._errors import Deadline, resolve_timeout

if TYPE_CHECKING:
    from sockit.abc import Buffer

__all__ = ["DEFAULT_MAX_BUFFER", "MemoryStream", "memory_stream_pair"]

DEFAULT_MAX_BUFFER = 65536
"""Bytes one direction holds before ``sendall`` blocks.

The order of magnitude of a loopback socket's buffers without autotuning (Linux starts
``net.ipv4.tcp_wmem`` and ``tcp_rmem`` at 16 KiB and 128 KiB); small enough that a test
sending a few hundred KiB without reading meets backpressure as it would on a socket.
"""


class _Direction:
    """The state of one direction of a pair: the bytes in flight and how it ended.

    Every field is guarded by the pair's shared condition variable.
    """

    __slots__ = ("data", "reader_closed", "writer_done")

    def __init__(self) -> None:
        self.data = bytearray()
        # The writing end sent EOF (send_eof or close): the reader gets b"" once the
        # data is drained.
        self.writer_done = False
        # The reading end was closed: nobody will ever read, so sending is an error
        # (EPIPE on a socket).
        self.reader_closed = False


class _Connection:
    """What the two ends share: one lock, both directions, and whether it was reset."""

    __slots__ = ("condition", "max_buffer", "reset")

    def __init__(self, max_buffer: int) -> None:
        # One condition for both directions: every state change is rare next to the
        # data copies, and a single lock makes close/abort atomic for both directions.
        self.condition = threading.Condition(threading.Lock())
        self.max_buffer = max_buffer
        # Set by abort(): the surviving end's operations raise ConnectionResetByPeer.
        self.reset = False


class MemoryStream(BufferedStream):
    """One end of an in-memory connection; create pairs with :func:`memory_stream_pair`.

    Behaves like a connected stream socket (see :mod:`sockit.abc` for the contracts):

    * ``sendall`` copies the data into the peer's receive buffer, blocking while that
      buffer holds ``max_buffer`` bytes (backpressure, as a full socket buffer). On
      timeout it raises ``TimeoutError``, and the bytes copied so far stay sent.
    * ``recv`` returns 1..``max_bytes`` bytes, or ``b""`` once the peer called
      :meth:`send_eof` or :meth:`close` and every byte sent before was received; later
      calls return ``b""`` again. A timeout raises ``TimeoutError`` and loses nothing.
    * :meth:`send_eof` is idempotent; afterwards ``sendall`` raises
      :class:`~sockit.ClosedResourceError` while receiving keeps working.
    * :meth:`close` is idempotent and acts like closing a socket: the peer drains what
      was sent and then sees EOF; the peer's ``sendall`` raises
      :class:`~sockit.PeerClosedError` (``EPIPE``, a :class:`~sockit.BrokenResourceError`).
      Every later call on this end raises :class:`~sockit.ClosedResourceError`, also a
      call blocked in another thread, which is woken. Unlike TCP, closing with unread
      data does not turn into a reset: use :meth:`abort` for that.
    * :meth:`abort` simulates a reset (a TCP RST): the peer's receives and sends raise
      :class:`~sockit.ConnectionResetByPeer` at once, losing whatever was in flight,
      and keep raising it.

    ``timeout`` (default ``None``: wait forever) is the default for every call; each
    call also takes ``timeout=`` (``math.inf`` waits forever whatever the default).
    Each end may be used by one receiving thread and one sending thread at a time, like
    a socket.
    """

    __slots__ = ("_closed", "_connection", "_incoming", "_outgoing", "_sent_eof")

    def __init__(
        self,
        connection: _Connection,
        incoming: _Direction,
        outgoing: _Direction,
        *,
        timeout: float | None = None,
    ) -> None:
        """Internal: use :func:`memory_stream_pair`."""
        super().__init__(timeout=timeout)
        self._connection = connection
        self._incoming = incoming
        self._outgoing = outgoing
        self._closed = False
        self._sent_eof = False

    @property
    def max_buffer(self) -> int:
        """Bytes each direction holds before ``sendall`` blocks."""
        return self._connection.max_buffer

    @property
    def pending_send(self) -> int:
        """Bytes this end sent that the peer has not received yet (at most :attr:`max_buffer`).

        Bytes the peer received but holds in its own message buffer (left over from
        ``recv_line`` and friends) are not counted.
        """
        with self._connection.condition:
            return len(self._outgoing.data)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or :meth:`abort`) was called on this end."""
        return self._closed

    # --- receiving ----------------------------------------------------------------

    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        connection = self._connection
        incoming = self._incoming
        deadline = Deadline(timeout)
        with connection.condition:
            while True:
                if self._closed:
                    raise ClosedResourceError("recv on a closed stream")
                if connection.reset:
                    raise ConnectionResetByPeer(
                        errno.ECONNRESET, "recv failed: connection reset by peer"
                    )
                data = incoming.data
                if data:
                    if len(data) <= max_bytes:
                        chunk = bytes(data)
                        data.clear()
                    else:
                        chunk = bytes(data[:max_bytes])
                        del data[:max_bytes]
                    # A sender may be waiting for room.
                    connection.condition.notify_all()
                    return chunk
                if incoming.writer_done:
                    return b""
                remaining = deadline.remaining()
                if remaining == 0.0:
                    raise TimeoutError("recv timed out")
                connection.condition.wait(remaining)

    # --- sending ------------------------------------------------------------------

    def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        """See :meth:`sockit.abc.Stream.sendall`.

        Raises :class:`~sockit.ClosedResourceError` after :meth:`close` or
        :meth:`send_eof` (even for empty data), :class:`~sockit.PeerClosedError` if the
        peer closed, :class:`~sockit.ConnectionResetByPeer` if it aborted, and
        ``TimeoutError`` if the peer's buffer stayed full (part of the data may have
        been sent).
        """
        self._check_can_send()
        deadline = Deadline(resolve_timeout(timeout, self.timeout))
        connection = self._connection
        outgoing = self._outgoing
        with memoryview(data) as view, view.cast("B") as octets:
            position = 0
            total = len(octets)
            with connection.condition:
                while position < total:
                    self._check_can_send()
                    if connection.reset:
                        raise ConnectionResetByPeer(
                            errno.ECONNRESET, "send failed: connection reset by peer"
                        )
                    if outgoing.reader_closed:
                        raise PeerClosedError(
                            errno.EPIPE, "send failed: the peer closed the connection"
                        )
                    room = connection.max_buffer - len(outgoing.data)
                    if room > 0:
                        end = min(total, position + room)
                        outgoing.data += octets[position:end]
                        position = end
                        connection.condition.notify_all()
                        continue
                    remaining = deadline.remaining()
                    if remaining == 0.0:
                        raise TimeoutError(
                            f"sendall timed out after sending {position} of {total} bytes"
                        )
                    connection.condition.wait(remaining)

    def _check_can_send(self) -> None:
        if self._closed:
            raise ClosedResourceError("sendall on a closed stream")
        if self._sent_eof:
            raise ClosedResourceError("sendall after send_eof()")

    def send_eof(self) -> None:
        """See :meth:`sockit.abc.HalfCloseableStream.send_eof`.

        The peer receives everything sent so far, then ``b""``. Idempotent while the
        stream is open; raises :class:`~sockit.ClosedResourceError` once it is closed.
        """
        if self._closed:
            raise ClosedResourceError("send_eof on a closed stream")
        if self._sent_eof:
            return
        with self._connection.condition:
            self._sent_eof = True
            self._outgoing.writer_done = True
            self._connection.condition.notify_all()

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """See :meth:`sockit.abc.Stream.close`. Idempotent.

        The peer still receives what was sent, then EOF; its later sends raise
        :class:`~sockit.PeerClosedError`. Calls blocked on this end in other threads
        wake up and raise :class:`~sockit.ClosedResourceError`.
        """
        with self._connection.condition:
            if self._closed:
                return
            self._closed = True
            self._outgoing.writer_done = True
            self._incoming.reader_closed = True
            # Nobody will read these; drop them so a blocked peer sender wakes up to
            # its PeerClosedError instead of waiting for room.
            self._incoming.data.clear()
            self._connection.condition.notify_all()
        self._lines.clear()
        self._buffer.take_all()

    def abort(self) -> None:
        """Close with a reset, like :meth:`sockit.SocketStream.abort` (``SO_LINGER`` 0).

        The peer's receives and sends raise :class:`~sockit.ConnectionResetByPeer` at
        once, even if data was still in flight (it is lost). Idempotent; does nothing on
        an already closed stream.
        """
        with self._connection.condition:
            if self._closed:
                return
            self._connection.reset = True
            self._outgoing.data.clear()
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryStream {state} max_buffer={self.max_buffer}>"


def memory_stream_pair(
    *, max_buffer: int = DEFAULT_MAX_BUFFER
) -> tuple[MemoryStream, MemoryStream]:
    """Return two connected :class:`MemoryStream` ends.

    Each direction buffers at most ``max_buffer`` bytes (>= 1); a ``sendall`` of more
    blocks until the other end receives, as on a socket whose buffers are full. Close
    both ends when done (they hold no operating system resources, but closing wakes any
    thread still blocked on them).
    """
    if max_buffer < 1:
        raise ValueError(f"max_buffer must be >= 1, not {max_buffer}")
    connection = _Connection(max_buffer)
    a_to_b = _Direction()
    b_to_a = _Direction()
    first = MemoryStream(connection, incoming=b_to_a, outgoing=a_to_b)
    second = MemoryStream(connection, incoming=a_to_b, outgoing=b_to_a)
    return first, second
