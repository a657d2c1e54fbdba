"""SocketStream: a connected TCP or UNIX stream socket with sockit's contracts.

What the stdlib socket leaves to every caller is done here once: ``recv`` that
distinguishes EOF, message helpers with limits, timeouts that keep buffered data,
idempotent ``send_eof``/``close``, errors that say who is at fault, and the 4-tuple kept
for reporting even after the peer is gone.

Must never resolve names or create sockets: it wraps one that is already connected.
"""

from __future__ import annotations

import errno
import socket
from typing import IO, TYPE_CHECKING, TypeVar

from sockit.addr import SocketAddress
from sockit.addr.binding import set_linger_zero
from sockit.errors import ClosedResourceError
from sockit.proto.timeouts import resolve_timeout
from sockit.sync._buffered import BufferedStream
from sockit.sync._errors import raise_translated

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockit.abc import Buffer

_T = TypeVar("_T")

__all__ = ["SocketStream"]


class SocketStream(BufferedStream):
    """A connected stream socket (TCP over IPv4/IPv6, or UNIX).

    Create one with :func:`sockit.connect`, :func:`sockit.connect_unix`,
    :meth:`Listener.accept`, or wrap an already connected ``socket.socket``
    (``SocketStream(sock)``; the stream then owns it and closes it).
    ``remote_address``/``local_address``, when given, are reported instead of asking
    the socket (see also :meth:`set_addresses`).

    ``timeout`` is the default for every call (``None``: wait forever); every method
    also takes ``timeout=`` for that call only. See :mod:`sockit.abc` for the EOF, error
    and timeout contracts of each method.
    """

    __slots__ = (
        "_closed",
        "_local_address",
        "_remote_address",
        "_sent_eof",
        "_socket",
        "_socket_timeout",
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
            raise ValueError(f"SocketStream needs a SOCK_STREAM socket, not {sock.type!r}")
        super().__init__(timeout=timeout)
        self._socket = sock
        self._closed = False
        self._sent_eof = False
        self._local_address = local_address
        self._remote_address = remote_address
        # The timeout the socket object currently has. Changing it costs a syscall
        # (fcntl O_NONBLOCK), so it is only changed when a call needs another value.
        self._socket_timeout = sock.gettimeout()

    # --- addresses ----------------------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options sockit does not wrap. Do not close it or
        read from it directly while buffered data may be pending."""
        return self._socket

    @property
    def local_address(self) -> SocketAddress:
        """This end's address (``getsockname``), remembered after the first call."""
        if self._local_address is None:
            self._local_address = SocketAddress.from_sockaddr(
                self._socket.family, self._call("getsockname", self._socket.getsockname)
            )
        return self._local_address

    @property
    def remote_address(self) -> SocketAddress:
        """The peer's address (``getpeername``), remembered so it is still available
        after the peer reset or closed the connection."""
        if self._remote_address is None:
            self._remote_address = SocketAddress.from_sockaddr(
                self._socket.family, self._call("getpeername", self._socket.getpeername)
            )
        return self._remote_address

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

    def fileno(self) -> int:
        """The socket's file descriptor (``-1`` once closed)."""
        return self._socket.fileno()

    # --- receiving ----------------------------------------------------------------

    def _set_socket_timeout(self, timeout: float | None) -> None:
        if timeout != self._socket_timeout:
            self._socket.settimeout(timeout)
            self._socket_timeout = timeout

    def _receive_some(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._closed:
            raise ClosedResourceError("recv on a closed stream")
        if timeout != self._socket_timeout:
            self._set_socket_timeout(timeout)
        try:
            return self._socket.recv(max_bytes)
        except OSError as error:
            raise_translated(error, closed=self._closed, operation="recv")

    # --- sending ------------------------------------------------------------------

    def sendall(self, data: Buffer, *, timeout: float | None = None) -> None:
        """See :meth:`sockit.abc.Stream.sendall`."""
        if self._closed:
            raise ClosedResourceError("sendall on a closed stream")
        if self._sent_eof:
            raise ClosedResourceError("sendall after send_eof()")
        seconds = resolve_timeout(timeout, self.timeout)
        if seconds != self._socket_timeout:
            self._set_socket_timeout(seconds)
        try:
            self._socket.sendall(data)
        except OSError as error:
            raise_translated(error, closed=self._closed, operation="send")

    def sendfile(
        self,
        file: IO[bytes],
        offset: int = 0,
        count: int | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Send ``count`` bytes (default: to the end) of a regular file from ``offset``
        with ``os.sendfile`` (no copy through Python); return the bytes sent.

        Falls back to read/send when the file cannot be used with sendfile. Same errors
        as :meth:`sendall`; the file position is left after the last byte sent.
        """
        if self._closed:
            raise ClosedResourceError("sendfile on a closed stream")
        if self._sent_eof:
            raise ClosedResourceError("sendfile after send_eof()")
        seconds = resolve_timeout(timeout, self.timeout)
        if seconds != self._socket_timeout:
            self._set_socket_timeout(seconds)
        try:
            return self._socket.sendfile(file, offset, count)
        except OSError as error:
            raise_translated(error, closed=self._closed, operation="sendfile")

    def send_eof(self) -> None:
        """See :meth:`sockit.abc.HalfCloseableStream.send_eof` (``shutdown(SHUT_WR)``)."""
        if self._closed:
            raise ClosedResourceError("send_eof on a closed stream")
        if self._sent_eof:
            return
        self._sent_eof = True
        try:
            self._socket.shutdown(socket.SHUT_WR)
        except OSError as error:
            # ENOTCONN: the peer already reset the connection; there is nobody left to
            # tell, and the next receive reports the reset.
            if error.errno != _ENOTCONN:
                raise_translated(error, closed=self._closed, operation="shutdown")

    def shutdown(self, how: int) -> None:
        """``shutdown(2)``: ``socket.SHUT_RD``, ``SHUT_WR`` (same as :meth:`send_eof`)
        or ``SHUT_RDWR``. Shutting down the receiving side of a TCP socket makes later
        receives return EOF locally; it sends nothing to the peer."""
        if how == socket.SHUT_WR:
            self.send_eof()
            return
        if self._closed:
            raise ClosedResourceError("shutdown on a closed stream")
        if how == socket.SHUT_RDWR:
            self._sent_eof = True
        try:
            self._socket.shutdown(how)
        except OSError as error:
            if error.errno != _ENOTCONN:
                raise_translated(error, closed=self._closed, operation="shutdown")

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """See :meth:`sockit.abc.Stream.close`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._lines.clear()
        self._buffer.take_all()
        self._socket.close()

    def abort(self) -> None:
        """Close with a reset (RST) instead of a FIN: ``SO_LINGER`` with a zero timeout.

        Use it to pass a failure on (a relay whose other leg was reset) so the peer
        cannot mistake it for a clean end. Idempotent, like :meth:`close`.
        """
        if self._closed:
            return
        set_linger_zero(self._socket)
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        if self._closed:
            return "<SocketStream closed>"
        try:
            return f"<SocketStream {self.local_address} -> {self.remote_address}>"
        except OSError:
            return f"<SocketStream fd={self.fileno()}>"

    def _call(self, operation: str, function: Callable[[], _T]) -> _T:
        if self._closed:
            raise ClosedResourceError(f"{operation} on a closed stream")
        try:
            return function()
        except OSError as error:
            raise_translated(error, closed=self._closed, operation=operation)


_ENOTCONN = errno.ENOTCONN
