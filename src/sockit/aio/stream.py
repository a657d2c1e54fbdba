"""AsyncSocketStream: a connected TCP or UNIX stream socket on the event loop.

The async twin of :class:`sockit.SocketStream`, with the same contracts (see
:mod:`sockit.abc`): ``recv`` that distinguishes EOF, message helpers with limits,
timeouts that keep buffered data, idempotent ``send_eof``/``aclose``, errors that say
who is at fault, and the 4-tuple kept for reporting after the peer is gone.

How it sits on the loop (the same on uvloop and asyncio): one :class:`asyncio.Protocol`
per stream, attached to the socket with ``loop.connect_accepted_socket``; not the
StreamReader/StreamWriter pair, whose ``write()`` without ``drain()`` grows without
bound behind a slow reader (STYLE.md).

* Receiving: the transport hands over chunks (up to 256 KiB, what both loops read at
  once); they are queued as they are and ``recv`` returns a queued chunk without
  copying it when it fits ``max_bytes``. When more than :data:`RECEIVE_BUFFER_LIMIT`
  bytes are queued the transport stops reading (``pause_reading``), so a peer that
  sends faster than the program receives fills the kernel's buffers and then its own,
  never our memory; reading resumes once the queue drained below a quarter of it.
* Waiting: a receive that finds nothing queued awaits one future, which the protocol
  completes; a deadline is a ``loop.call_at`` timer on that future. No Task is created
  per call, and none of this happens when data is already queued.
* Sending: ``transport.write`` in pieces of at most :data:`SEND_CHUNK` bytes, waiting
  whenever the transport asks the protocol to pause (its buffer passed the high-water
  mark, 64 KiB on both loops) until it resumes. ``sendall`` returns once every byte was
  handed to the transport and its buffer is below the high-water mark; the rest is
  flushed in the background. Mutable buffers (``bytearray``, writable views) are copied
  piece by piece before they are handed over, because uvloop keeps a reference to
  unsent data and the caller may reuse its buffer as soon as ``sendall`` returned.
* EOF: ``eof_received`` returns True, so the transport stays half-open and sending
  keeps working after the peer's EOF; ``send_eof`` is ``transport.write_eof()``
  (``shutdown(SHUT_WR)`` once the buffer is flushed).
* Errors: a transport that died (``connection_lost(exc)``) makes the next receive (after
  the data queued before the error) and every send raise the translated error
  (:class:`~sockit.ConnectionResetByPeer`, :class:`~sockit.PeerClosedError`, ...), and
  keep raising it: a reset is never laundered into EOF.

Must never resolve names or create sockets: it wraps one that is already connected.
Must never hold more than about :data:`RECEIVE_BUFFER_LIMIT` plus one transport read of
received-but-unread bytes, or buffer a caller's whole ``sendall`` in user space.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import IO, TYPE_CHECKING, NoReturn, cast

from sockit.addr import SocketAddress
from sockit.addr.binding import set_linger_zero
from sockit.aio._buffered import AsyncBufferedStream
from sockit.aio._wait import EXPIRED, expire
from sockit.errors import ClosedResourceError, PeerClosedError, translate_os_error

if TYPE_CHECKING:
    from sockit.abc import Buffer

__all__ = ["RECEIVE_BUFFER_LIMIT", "SEND_CHUNK", "AsyncSocketStream", "attach_stream"]

RECEIVE_BUFFER_LIMIT = 256 * 1024
"""Received bytes queued in user space before the transport stops reading.

256 KiB: one full read of either loop (asyncio's ``max_size`` and uvloop's read buffer
are both 256 KiB), so a reader that keeps up never pauses, while a reader that does not
costs at most this plus one read. The kernel's socket buffers (several MiB with Linux
autotuning) hold the rest and then TCP flow control stops the sender.
"""

SEND_CHUNK = 256 * 1024
"""The largest piece ``sendall`` hands to the transport at once.

The transport buffers what the kernel does not take; writing in pieces and waiting for
the transport to drain below its high-water mark in between bounds that buffer to the
high-water mark plus one piece, instead of the caller's whole (possibly huge) buffer.
"""

# Reading resumes when the queue has drained to this (a quarter of the limit, the
# ratio both loops use for their write buffers): far enough below the limit that a
# reader consuming small pieces does not toggle the transport on every call.
_RECEIVE_RESUME = RECEIVE_BUFFER_LIMIT // 4


class _StreamProtocol(asyncio.Protocol):
    """The transport's side of one stream: received chunks, flow control, waiters.

    Internal to :class:`AsyncSocketStream`. Received chunks are ``chunks[head:]``, the
    first of them already consumed up to ``offset``; ``queued`` counts the unread bytes.
    """

    __slots__ = (
        "chunks",
        "drain_waiter",
        "eof",
        "error",
        "head",
        "loop",
        "lost",
        "lost_waiters",
        "offset",
        "queued",
        "read_waiter",
        "reading_paused",
        "transport",
        "write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.head = 0
        self.offset = 0
        self.queued = 0
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.write_paused = False
        self.read_waiter: asyncio.Future[object] | None = None
        self.drain_waiter: asyncio.Future[object] | None = None
        self.lost_waiters: list[asyncio.Future[object]] = []

    # --- the transport's callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport (a stream socket transport, so it can write)."""
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        """Queue a received chunk; pause reading above :data:`RECEIVE_BUFFER_LIMIT`."""
        self.chunks.append(data)
        self.queued += len(data)
        if self.queued > RECEIVE_BUFFER_LIMIT and not self.reading_paused:
            self.reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        """Note the peer's EOF; True keeps the transport open for sending (half-close)."""
        self.eof = True
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is gone: remember why and wake everybody."""
        self.lost = True
        if exc is not None:
            self.error = exc
        self.wake_all()
        waiters = self.lost_waiters
        self.lost_waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark: senders must wait."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer drained below its low-water mark."""
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- used by the stream -----------------------------------------------------------

    def writing_paused(self) -> bool:
        """Whether the transport asked for a pause (a method: it changes under awaits
        and calls, where an attribute read would be narrowed by type checkers)."""
        return self.write_paused

    def take(self, max_bytes: int) -> bytes:
        """Remove and return 1..max_bytes queued bytes (``queued`` must be non-zero)."""
        chunks = self.chunks
        head = self.head
        chunk = chunks[head]
        offset = self.offset
        size = len(chunk) - offset
        if size <= max_bytes:
            data = chunk if offset == 0 else chunk[offset:]
            head += 1
            if head == len(chunks):
                chunks.clear()
                head = 0
            self.head = head
            self.offset = 0
        else:
            data = chunk[offset : offset + max_bytes]
            self.offset = offset + max_bytes
            size = max_bytes
        self.queued -= size
        if self.reading_paused and self.queued <= _RECEIVE_RESUME:
            self.reading_paused = False
            # Never after EOF or loss: both loops would start reading again and report
            # the EOF a second time.
            if not (self.eof or self.lost) and self.transport is not None:
                self.transport.resume_reading()
        return data

    def discard(self) -> None:
        """Drop every queued byte (the stream was closed)."""
        self.chunks.clear()
        self.head = 0
        self.offset = 0
        self.queued = 0

    def wake_all(self) -> None:
        """Wake a waiting receiver and a waiting sender (they re-check the state)."""
        for waiter in (self.read_waiter, self.drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait_readable(self, deadline: float | None) -> None:
        """Wait until data, EOF or an error arrives; TimeoutError after ``deadline``."""
        if self.read_waiter is not None:
            raise RuntimeError("another task is already receiving on this stream")
        loop = self.loop
        timer = None
        if deadline is not None and deadline <= loop.time():
            raise TimeoutError("recv timed out")
        waiter: asyncio.Future[object] = loop.create_future()
        self.read_waiter = waiter
        if deadline is not None:
            timer = loop.call_at(deadline, expire, waiter)
        try:
            result = await waiter
        finally:
            self.read_waiter = None
            if timer is not None:
                timer.cancel()
        if result is EXPIRED:
            raise TimeoutError("recv timed out")

    async def wait_drained(self, deadline: float | None) -> None:
        """Wait until the transport resumes writing (or dies); TimeoutError after
        ``deadline``."""
        loop = self.loop
        timer = None
        if deadline is not None and deadline <= loop.time():
            raise TimeoutError("sendall timed out")
        waiter: asyncio.Future[object] = loop.create_future()
        self.drain_waiter = waiter
        if deadline is not None:
            timer = loop.call_at(deadline, expire, waiter)
        try:
            result = await waiter
        finally:
            self.drain_waiter = None
            if timer is not None:
                timer.cancel()
        if result is EXPIRED:
            raise TimeoutError("sendall timed out")

    async def wait_lost(self) -> None:
        """Wait for ``connection_lost`` (returns at once if it already happened)."""
        if self.lost:
            return
        waiter: asyncio.Future[object] = self.loop.create_future()
        self.lost_waiters.append(waiter)
        await waiter


class AsyncSocketStream(AsyncBufferedStream):
    """A connected stream socket (TCP over IPv4/IPv6, or UNIX) on the running loop.

    Create one with :func:`sockit.aio.connect`, :func:`sockit.aio.connect_unix`,
    :meth:`AsyncSocketListener.accept`, or wrap an already connected ``socket.socket``
    (``AsyncSocketStream(sock)``: the stream then owns it, sets it non-blocking and
    attaches it to the loop that runs its first call; it must stay on that loop).
    ``remote_address``/``local_address``, when given, are reported instead of asking
    the socket (see also :meth:`set_addresses`).

    ``timeout`` is the default for every call (``None``: wait forever); every method
    also takes ``timeout=`` for that call only. See :mod:`sockit.abc` for the EOF, error
    and timeout contracts, and the module docs for buffering. One task may receive and
    another send at the same time; two concurrent receives (or two concurrent sends)
    raise ``RuntimeError``, as their data would interleave unpredictably.
    """

    __slots__ = (
        "_attaching",
        "_local_address",
        "_protocol",
        "_remote_address",
        "_send_interrupted",
        "_sending",
        "_sent_eof",
        "_socket",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = None,
        remote_address: SocketAddress | None = None,
        local_address: SocketAddress | None = None,
    ) -> None:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"AsyncSocketStream needs a SOCK_STREAM socket, not {sock.type!r}")
        super().__init__(timeout=timeout)
        self._socket = sock
        self._protocol: _StreamProtocol | None = None
        self._attaching: asyncio.Future[_StreamProtocol] | None = None
        self._sent_eof = False
        self._sending = False
        self._send_interrupted = False
        self._local_address = local_address
        self._remote_address = remote_address

    # --- attaching to the loop ------------------------------------------------------

    async def _attach(self) -> _StreamProtocol:
        """Hand the socket to the running loop's transport machinery (once)."""
        if self._closed:
            raise ClosedResourceError("the stream is closed")
        pending = self._attaching
        if pending is not None:
            # Another task is attaching right now: share its outcome. Shielded, so that
            # cancelling this task does not cancel the shared future.
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        pending = loop.create_future()
        self._attaching = pending
        protocol = _StreamProtocol(loop)
        try:
            self._socket.setblocking(False)
            await loop.connect_accepted_socket(lambda: protocol, self._socket)
        except BaseException as error:
            # Both loops close the socket when attaching fails or is cancelled.
            self._closed = True
            self._socket.close()
            failure = ClosedResourceError("attaching the socket to the event loop failed")
            failure.__cause__ = error
            pending.set_exception(failure)
            pending.exception()  # retrieved: nobody else may be waiting for it
            raise
        self._protocol = protocol
        pending.set_result(protocol)
        if self._closed_meanwhile():  # aclose() or abort() ran while we were attaching
            if protocol.transport is not None:
                protocol.transport.abort()
            raise ClosedResourceError("the stream was closed while it was being attached")
        return protocol

    def _closed_meanwhile(self) -> bool:
        # A method, not an attribute read: _closed changes while a call awaits.
        return self._closed

    # --- addresses ------------------------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options sockit does not wrap. It belongs to the
        event loop's transport: do not read, write, close or make it blocking."""
        return self._socket

    @property
    def local_address(self) -> SocketAddress:
        """This end's address (``getsockname``), remembered after the first call."""
        if self._local_address is None:
            self._local_address = SocketAddress.from_sockaddr(
                self._socket.family, self._sockname("getsockname", peer=False)
            )
        return self._local_address

    @property
    def remote_address(self) -> SocketAddress:
        """The peer's address (``getpeername``), remembered so it is still available
        after the peer reset or closed the connection."""
        if self._remote_address is None:
            self._remote_address = SocketAddress.from_sockaddr(
                self._socket.family, self._sockname("getpeername", peer=True)
            )
        return self._remote_address

    def _sockname(self, operation: str, *, peer: bool) -> object:
        if self._closed:
            raise ClosedResourceError(f"{operation} on a closed stream")
        try:
            return self._socket.getpeername() if peer else self._socket.getsockname()
        except OSError as error:
            self._raise(error, operation)

    def fileno(self) -> int:
        """The socket's file descriptor (``-1`` once closed)."""
        return self._socket.fileno()

    def set_addresses(
        self, *, local: SocketAddress | None = None, remote: SocketAddress | None = None
    ) -> None:
        """Report ``local``/``remote`` as this stream's addresses from now on (``None``
        keeps the current one); nothing changes on the socket.

        For a stream that reached us through a proxy: after a PROXY protocol header,
        the original client's and server's addresses.
        """
        if local is not None:
            self._local_address = local
        if remote is not None:
            self._remote_address = remote

    @property
    def buffered_bytes(self) -> int:
        """Bytes received from the kernel that no receive call has returned yet.

        At most about :data:`RECEIVE_BUFFER_LIMIT` plus one transport read, plus what
        a message helper was asked to collect (``recv_exactly(n)`` holds up to ``n``)
        and what :meth:`unread` put back.
        """
        queued = 0 if self._protocol is None else self._protocol.queued
        return queued + len(self._buffer)

    def take_buffered(self) -> bytes:
        """Remove and return every byte already received but not yet read (``b""`` if
        none), without waiting: what a message helper read ahead and what the
        transport queued.

        Unlike the sync stream's, the socket belongs to the event loop's transport,
        which keeps reading it: bytes that arrive later are queued again and returned
        by the next receive (or the next call of this).
        """
        data = self._buffer.take_all()
        protocol = self._protocol
        if protocol is None or not protocol.queued:
            return data
        pieces = [data]
        # Bounded: every take removes at least one queued byte.
        while protocol.queued:
            pieces.append(protocol.take(protocol.queued))
        return b"".join(pieces)

    # --- receiving ------------------------------------------------------------------

    async def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """See :meth:`sockit.abc.Stream.recv`.

        Returns a queued chunk as it is (no copy) when it fits ``max_bytes``.
        """
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        if self._closed:
            raise ClosedResourceError("recv on a closed stream")
        if self._buffer:
            return self._buffer.take_some(max_bytes)
        protocol = self._protocol
        if protocol is not None and protocol.queued:
            return protocol.take(max_bytes)
        if timeout is None and self.timeout is None:
            return await self._receive_some(max_bytes, None)
        return await self._receive_some(max_bytes, self._deadline(timeout))

    async def _receive_some(self, max_bytes: int, deadline: float | None) -> bytes:
        protocol = self._protocol
        if protocol is None:
            protocol = await self._attach()
        while True:
            if self._closed:
                raise ClosedResourceError("recv on a closed stream")
            if protocol.queued:
                return protocol.take(max_bytes)
            if protocol.error is not None:
                self._raise(protocol.error, "recv")
            if protocol.eof or protocol.lost:
                return b""
            if deadline is not None:
                await protocol.wait_readable(deadline)
                continue
            # The hot path of a server waiting for its next request, inlined: one
            # future, completed by data_received, eof_received or connection_lost.
            if protocol.read_waiter is not None:
                raise RuntimeError("another task is already receiving on this stream")
            waiter: asyncio.Future[object] = protocol.loop.create_future()
            protocol.read_waiter = waiter
            try:
                await waiter
            finally:
                protocol.read_waiter = None

    # --- sending --------------------------------------------------------------------

    async def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        """See :meth:`sockit.abc.Stream.sendall`.

        Returns when every byte was handed to the transport and its buffer is below
        the high-water mark (see the module docs). On timeout or cancellation some, all
        or none of the data was sent, and :meth:`aclose` then resets the connection
        instead of flushing a stream whose content the peer cannot know.
        """
        if self._closed:
            raise ClosedResourceError("sendall on a closed stream")
        if self._sent_eof:
            raise ClosedResourceError("sendall after send_eof()")
        if self._sending:
            raise RuntimeError("another task is already sending on this stream")
        protocol = self._protocol
        if protocol is None:
            protocol = await self._attach()
        transport = protocol.transport
        if transport is None:  # pragma: no cover - attach completes connection_made
            raise ClosedResourceError("the stream is not attached")
        if protocol.lost:
            await self._raise_broken(protocol, "send")
        if type(data) is bytes and len(data) <= SEND_CHUNK and not protocol.write_paused:
            # The common case: one small immutable piece, nothing to wait for.
            transport.write(data)
            if transport.is_closing():
                await self._raise_broken(protocol, "send")
            if not protocol.writing_paused():
                return
            data = b""  # sent; what is left is waiting for the transport to drain
        self._sending = True
        try:
            await self._send_pieces(protocol, transport, data, timeout)
        except BaseException:
            self._send_interrupted = True
            raise
        finally:
            self._sending = False

    async def _send_pieces(
        self,
        protocol: _StreamProtocol,
        transport: asyncio.Transport,
        data: Buffer,
        timeout: float | None,
    ) -> None:
        if type(data) is bytes:
            view = memoryview(data)
            copy = False
        else:
            view = memoryview(data)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            # A read-only view of bytes cannot change under us; anything else might.
            copy = not (view.readonly and isinstance(view.obj, bytes))
        deadline: float | None = None
        deadline_known = False
        position = 0
        total = view.nbytes
        with view:
            # position == total with paused writing: the last piece (or the fast path)
            # left the buffer above the high-water mark; wait for it like any other.
            while position < total or protocol.write_paused:
                if protocol.write_paused:
                    if not deadline_known:
                        deadline = self._deadline(timeout)
                        deadline_known = True
                    await protocol.wait_drained(deadline)
                    self._check_can_send()
                    if protocol.lost or transport.is_closing():
                        await self._raise_broken(protocol, "send")
                    continue
                end = min(total, position + SEND_CHUNK)
                piece = view[position:end]
                transport.write(bytes(piece) if copy else piece)
                position = end
                if transport.is_closing():
                    await self._raise_broken(protocol, "send")

    def _check_can_send(self) -> None:
        if self._closed:
            raise ClosedResourceError("sendall interrupted: the stream was closed")
        if self._sent_eof:
            raise ClosedResourceError("sendall interrupted: send_eof() was called")

    async def _raise_broken(self, protocol: _StreamProtocol, operation: str) -> NoReturn:
        """The transport is closing although we did not close it: report why."""
        self._check_can_send()
        # The loop closes a transport whose write failed and reports the error to
        # connection_lost on its next iteration; wait for it so the caller gets the
        # real error (reset, broken pipe) rather than a guess.
        await protocol.wait_lost()
        self._check_can_send()
        if protocol.error is not None:
            self._raise(protocol.error, operation)
        raise PeerClosedError(errno.EPIPE, f"{operation} failed: the connection was closed")

    async def sendfile(
        self,
        file: IO[bytes],
        offset: int = 0,
        count: int | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Send ``count`` bytes (default: to the end) of ``file`` from ``offset``;
        return the bytes sent.

        The file is read in :data:`SEND_CHUNK` pieces on the loop's thread and sent with
        :meth:`sendall` (the transport owns the socket, so there is no zero-copy path;
        reads of a regular file do not block for long). ``timeout`` bounds the whole
        call. Same errors as :meth:`sendall`; the file position is left after the last
        byte sent.
        """
        if self._closed:
            raise ClosedResourceError("sendfile on a closed stream")
        if self._sent_eof:
            raise ClosedResourceError("sendfile after send_eof()")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 or None, not {count}")
        deadline = self._deadline(timeout)
        loop = asyncio.get_running_loop()
        file.seek(offset)
        sent = 0
        while count is None or sent < count:
            want = SEND_CHUNK if count is None else min(SEND_CHUNK, count - sent)
            piece = file.read(want)
            if not piece:
                break
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await self.sendall(piece, timeout=remaining)
            except BaseException:
                file.seek(offset + sent)
                raise
            sent += len(piece)
        return sent

    async def send_eof(self) -> None:
        """See :meth:`sockit.abc.HalfCloseableStream.send_eof` (``shutdown(SHUT_WR)``
        once the bytes already handed to the transport are flushed)."""
        if self._closed:
            raise ClosedResourceError("send_eof on a closed stream")
        if self._sent_eof:
            return
        protocol = self._protocol
        if protocol is None:
            protocol = await self._attach()
        self._sent_eof = True
        transport = protocol.transport
        if transport is None or protocol.lost or transport.is_closing():
            # The connection is already gone (a reset): there is nobody left to tell,
            # and the next receive reports what happened.
            return
        try:
            transport.write_eof()
        except OSError as error:
            # ENOTCONN: the peer reset the connection just now (as in the sync layer).
            if error.errno != errno.ENOTCONN:
                self._raise(error, "shutdown")

    # --- closing --------------------------------------------------------------------

    async def aclose(self) -> None:
        """See :meth:`sockit.abc.Stream.close`. Idempotent.

        Bytes already handed over by a completed ``sendall`` are flushed, then the
        peer gets a FIN; when nothing is left to flush this waits until the socket is
        closed (one loop iteration). If a ``sendall`` was interrupted (timeout or
        cancellation) with data still unsent, the connection is reset instead: the
        peer must not mistake a cut-off stream for a complete one. Calls waiting on
        this stream in other tasks raise :class:`~sockit.ClosedResourceError`.
        """
        if self._closed:
            return
        protocol = self._close_locally()
        if protocol is None or protocol.transport is None or protocol.lost:
            return
        transport = protocol.transport
        if self._send_interrupted and transport.get_write_buffer_size():
            self._set_linger_zero()
            transport.abort()
        else:
            transport.close()
            if transport.get_write_buffer_size():
                # The transport flushes and then closes the socket by itself; waiting
                # here would wait for a peer that may never read.
                return
        await protocol.wait_lost()

    def abort(self) -> None:
        """Close with a reset (RST) instead of a FIN: ``SO_LINGER`` with a zero timeout.

        Unsent data is dropped. Use it to pass a failure on (a relay whose other leg
        was reset) so the peer cannot mistake it for a clean end. Idempotent, like
        :meth:`aclose`; not a coroutine, so it can be called from anywhere (the socket
        is released on the loop's next iteration).
        """
        if self._closed:
            return
        self._set_linger_zero()
        protocol = self._close_locally()
        if protocol is not None and protocol.transport is not None and not protocol.lost:
            protocol.transport.abort()

    def _close_locally(self) -> _StreamProtocol | None:
        """Mark closed, drop buffered data, wake waiters; close an unattached socket."""
        self._closed = True
        self._lines.clear()
        self._buffer.take_all()
        protocol = self._protocol
        if protocol is None:
            if self._attaching is None:
                self._socket.close()
            # else: _attach closes the transport once the loop handed it over.
            return None
        protocol.discard()
        protocol.wake_all()
        return protocol

    def _set_linger_zero(self) -> None:
        set_linger_zero(self._socket)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` (or :meth:`abort`) was called."""
        return self._closed

    def __repr__(self) -> str:
        if self._closed:
            return "<AsyncSocketStream closed>"
        try:
            return f"<AsyncSocketStream {self.local_address} -> {self.remote_address}>"
        except OSError:
            return f"<AsyncSocketStream fd={self.fileno()}>"

    def _raise(self, error: BaseException, operation: str) -> NoReturn:
        translated = translate_os_error(error, closed=self._closed, operation=operation)
        if translated is error and isinstance(error, OSError):
            # A fresh exception per raise: re-raising the stored one would grow its
            # traceback every time.
            raise OSError(error.errno, f"{operation} failed: {error.strerror or error}") from error
        raise translated from error


async def attach_stream(
    sock: socket.socket, *, remote_address: SocketAddress | None = None
) -> AsyncSocketStream:
    """An :class:`AsyncSocketStream` owning the connected ``sock``, already attached to
    the running loop (so a failure to attach is raised here, not by the first call).
    If attaching fails the socket is closed (with a reset)."""
    stream = AsyncSocketStream(sock, remote_address=remote_address)
    try:
        await stream._attach()
    except BaseException:
        stream.abort()
        raise
    return stream
