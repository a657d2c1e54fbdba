"""AsyncBufferedStream: the receive helpers of :class:`sockit.abc.AsyncStream`, written once.

The async twin of ``sockit/sync/_buffered.py``: a concrete async stream implements only
``_receive_some`` (one raw receive, awaited) plus sending and closing; this base class
turns that into ``recv``, ``recv_exactly``, ``recv_until`` and ``recv_line`` with the
contracts of :mod:`sockit.abc`: EOF vs. message errors, limits, and timeouts that keep
data. The message logic itself is :class:`sockit.proto.buffer.ReceiveBuffer`, shared
with the sync layer, so the twins cannot drift apart.

Deadlines are absolute times on the running loop's clock (``loop.time()``), computed
once per call, so a helper that needs several receives honours one deadline overall.

Must never touch a socket or a transport itself: all I/O goes through
``_receive_some``.
"""

from __future__ import annotations

import abc
import asyncio

from sockit.abc import AsyncHalfCloseableStream
from sockit.errors import ClosedResourceError, EndOfStream, IncompleteRead
from sockit.proto.buffer import ReceiveBuffer
from sockit.proto.timeouts import resolve_timeout

__all__ = ["RECEIVE_CHUNK", "AsyncBufferedStream"]

# Size of the reads made on behalf of message helpers: the sync layer's value (64 KiB,
# see sockit/sync/_buffered.py for the reasoning).
RECEIVE_CHUNK = 65536
# Upper bound of one read for recv_exactly(n) with a large n (as in the sync layer).
_MAX_EXACT_CHUNK = 1 << 20


class AsyncBufferedStream(AsyncHalfCloseableStream):
    """Receive helpers over a raw ``_receive_some``; see :mod:`sockit.abc` for contracts.

    ``timeout`` is the default for every call (``None``: wait forever). Subclasses set
    ``_closed`` and must raise :class:`~sockit.ClosedResourceError` from
    ``_receive_some`` once closed.
    """

    __slots__ = ("_buffer", "_closed", "_lines", "timeout")

    def __init__(self, *, timeout: float | None = None) -> None:
        resolve_timeout(timeout, None)  # validate early
        self.timeout = timeout
        self._closed = False
        self._buffer = ReceiveBuffer()
        # The buffer's list of pre-split lines, held directly so recv_line's hot path
        # is one list pop (as in the sync layer).
        self._lines = self._buffer.lines

    @abc.abstractmethod
    async def _receive_some(self, max_bytes: int, deadline: float | None) -> bytes:
        """One raw receive of 1..max_bytes bytes, ``b""`` at EOF.

        ``deadline`` is an absolute ``loop.time()`` or ``None`` for no limit. Raises
        ``TimeoutError`` if nothing arrived in time (at once if the deadline passed and
        nothing is there), :class:`~sockit.ClosedResourceError` once closed.
        """

    @property
    def buffered_bytes(self) -> int:
        """Bytes already received that no receive call has returned yet (what a message
        helper read ahead, or :meth:`unread` put back)."""
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """Remove and return every byte already received but not yet read (``b""`` if
        none), without waiting.

        For handing a connection over to something that reads the socket directly:
        bytes read ahead must go first, or they would be lost.
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
        if self._closed:
            raise ClosedResourceError("unread on a closed stream")
        self._buffer.unread(data)

    def _deadline(self, timeout: float | None) -> float | None:
        seconds = resolve_timeout(timeout, self.timeout)
        if seconds is None:
            return None
        return asyncio.get_running_loop().time() + seconds

    async def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """See :meth:`sockit.abc.Stream.recv`."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        if self._closed:
            raise ClosedResourceError("recv on a closed stream")
        if self._buffer:
            return self._buffer.take_some(max_bytes)
        return await self._receive_some(max_bytes, self._deadline(timeout))

    async def recv_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """See :meth:`sockit.abc.Stream.recv_exactly`."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        if self._closed:
            raise ClosedResourceError("recv_exactly on a closed stream")
        buffer = self._buffer
        data = buffer.take_exactly(n)
        if data is not None:
            return data
        deadline = self._deadline(timeout)
        while True:
            missing = n - len(buffer)
            want = min(max(missing, RECEIVE_CHUNK), _MAX_EXACT_CHUNK)
            chunk = await self._receive_some(want, deadline)
            if not chunk:
                partial = buffer.take_all()
                if partial:
                    raise IncompleteRead(partial, n)
                raise EndOfStream(f"EOF while waiting for {n} bytes")
            buffer.feed(chunk)
            data = buffer.take_exactly(n)
            if data is not None:
                return data

    async def recv_until(
        self, delimiter: bytes, *, max_bytes: int, timeout: float | None = None
    ) -> bytes:
        """See :meth:`sockit.abc.Stream.recv_until`."""
        if self._closed:
            raise ClosedResourceError("recv_until on a closed stream")
        message = self._buffer.take_until(delimiter, max_bytes)
        if message is not None:
            return message
        return await self._recv_delimited(delimiter, max_bytes, timeout)

    async def recv_line(self, *, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """See :meth:`sockit.abc.Stream.recv_line`."""
        if self._closed:
            raise ClosedResourceError("recv_line on a closed stream")
        lines = self._lines
        if lines:
            line = lines.pop()
            if len(line) <= max_bytes:
                return line
            lines.append(line)  # let take_line raise LimitExceeded, keeping the line
        return await self._recv_delimited(b"\n", max_bytes, timeout)

    async def _recv_delimited(
        self, delimiter: bytes, max_bytes: int, timeout: float | None
    ) -> bytes:
        buffer = self._buffer
        lines = delimiter == b"\n"
        message = buffer.take_until(delimiter, max_bytes)
        if message is not None:
            return message
        deadline = self._deadline(timeout)
        while message is None:
            chunk = await self._receive_some(RECEIVE_CHUNK, deadline)
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
