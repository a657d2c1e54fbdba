"""BufferedStream: the receive helpers of :class:`sockit.abc.Stream`, written once.

A concrete blocking stream (TCP/UNIX socket, memory pair, TLS, ...) implements only
``_receive_some`` (one raw receive) plus sending and closing; this base class turns that
into ``recv``, ``recv_exactly``, ``recv_until`` and ``recv_line`` with the contracts of
:mod:`sockit.abc`: EOF vs. message errors, limits, and timeouts that keep data.

Must never touch a socket itself: all I/O goes through ``_receive_some``.
"""

from __future__ import annotations

import abc

from sockit.abc import HalfCloseableStream
from sockit.errors import ClosedResourceError, EndOfStream, IncompleteRead
from sockit.proto.buffer import ReceiveBuffer
from sockit.proto.timeouts import resolve_timeout
from sockit.sync._errors import Deadline

__all__ = ["RECEIVE_CHUNK", "BufferedStream"]

# Size of the reads made on behalf of message helpers. 64 KiB matches the largest
# loopback/TSO segment batches Linux hands out in one recv and keeps the per-line cost
# of recv_line dominated by one bytes.split per chunk rather than by syscalls.
RECEIVE_CHUNK = 65536
# Upper bound of one read for recv_exactly(n) with a large n: big enough to need few
# syscalls, small enough that a 1 GiB request does not allocate 1 GiB per recv call.
_MAX_EXACT_CHUNK = 1 << 20


class BufferedStream(HalfCloseableStream):
    """Receive helpers over a raw ``_receive_some``; see :mod:`sockit.abc` for contracts.

    ``timeout`` is the default for every call (``None``: wait forever).
    """

    __slots__ = ("_buffer", "_lines", "timeout")

    def __init__(self, *, timeout: float | None = None) -> None:
        self.timeout = timeout
        self._buffer = ReceiveBuffer()
        # The buffer's list of pre-split lines, held directly so recv_line's hot path
        # is one list pop (see benchmarks/bench_recv.py).
        self._lines = self._buffer.lines

    @abc.abstractmethod
    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        """One raw receive of 1..max_bytes bytes, ``b""`` at EOF.

        ``timeout`` is already resolved: seconds, or ``None`` for no limit. Raises
        ``TimeoutError`` if nothing arrived in time.
        """

    @property
    def buffered_bytes(self) -> int:
        """Bytes already received that no receive call has returned yet (what a message
        helper read ahead, or :meth:`unread` put back)."""
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """Remove and return every byte already received but not yet read (``b""`` if
        none), without waiting.

        For handing a connection over to something that reads the socket directly (a
        child process given the socket as stdin, a relay): bytes a message helper read
        ahead must go first, or they would be lost.
        """
        return self._buffer.take_all()

    def unread(self, data: bytes) -> None:
        """Put ``data`` back at the front of the stream: the next receive calls return
        it before anything else, in order, without waiting.

        For a caller that read more than it consumed, e.g. a PROXY protocol header and
        the first bytes of the payload behind it. The bytes count as buffered (see
        :attr:`buffered_bytes`); no limit applies to them, so put back only what was
        read. Raises :class:`~sockit.ClosedResourceError` on a closed stream.
        """
        # Every sockit stream has ``closed``; a minimal subclass (a test's adapter)
        # need not, and then cannot be closed as far as this base class can tell.
        if getattr(self, "closed", False) is True:
            raise ClosedResourceError("unread on a closed stream")
        self._buffer.unread(data)

    def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """See :meth:`sockit.abc.Stream.recv`."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        if self._buffer:
            return self._buffer.take_some(max_bytes)
        return self._receive_some(max_bytes, resolve_timeout(timeout, self.timeout))

    def recv_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """See :meth:`sockit.abc.Stream.recv_exactly`."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        buffer = self._buffer
        data = buffer.take_exactly(n)
        if data is not None:
            return data
        deadline = Deadline(resolve_timeout(timeout, self.timeout))
        while True:
            missing = n - len(buffer)
            want = min(max(missing, RECEIVE_CHUNK), _MAX_EXACT_CHUNK)
            chunk = self._receive_some(want, deadline.remaining())
            if not chunk:
                partial = buffer.take_all()
                if partial:
                    raise IncompleteRead(partial, n)
                raise EndOfStream(f"EOF while waiting for {n} bytes")
            buffer.feed(chunk)
            data = buffer.take_exactly(n)
            if data is not None:
                return data

    def recv_until(
        self, delimiter: bytes, *, max_bytes: int, timeout: float | None = None
    ) -> bytes:
        """See :meth:`sockit.abc.Stream.recv_until`."""
        message = self._buffer.take_until(delimiter, max_bytes)
        if message is not None:
            return message
        return self._recv_delimited(delimiter, max_bytes, timeout)

    def recv_line(self, *, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """See :meth:`sockit.abc.Stream.recv_line`."""
        lines = self._lines
        if lines:
            line = lines.pop()
            if len(line) <= max_bytes:
                return line
            lines.append(line)  # let take_line raise LimitExceeded, keeping the line
        return self._recv_delimited(b"\n", max_bytes, timeout)

    def _recv_delimited(self, delimiter: bytes, max_bytes: int, timeout: float | None) -> bytes:
        buffer = self._buffer
        lines = delimiter == b"\n"
        message = buffer.take_until(delimiter, max_bytes)
        deadline = Deadline(resolve_timeout(timeout, self.timeout))
        while message is None:
            chunk = self._receive_some(RECEIVE_CHUNK, deadline.remaining())
            if not chunk:
                partial = buffer.take_all()
                if partial:
                    raise IncompleteRead(partial, None)
                raise EndOfStream(f"EOF while waiting for {delimiter!r}")
            if lines:
                message = buffer.feed_and_take_line(chunk, max_bytes)
            else:
                buffer.feed(chunk)
                message = buffer.take_until(delimiter, max_bytes)
        return message
