"""listen() and listen_unix(): a passive open that reports what it really bound.

Which sockets a listener gets (IPv4 *and* IPv6 on one port when there is no host, the
system's maximum backlog, ``SO_REUSEADDR``) is decided in :mod:`sockit.addr.binding`,
shared with the async twin; see there for the reasons. This module resolves the host,
creates the sockets through the :class:`~sockit.sync.SocketFactory` and accepts.

Must never accept on behalf of a caller who did not call accept().
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from sockit.abc import Listener
from sockit.addr import Resolver, SocketAddress, check_host, default_resolver, parse_port
from sockit.addr.binding import (
    DEFAULT_BACKLOG,
    bind_listening_sockets,
    set_nodelay,
    unique_infos,
    wildcard_infos,
)
from sockit.addr.unixpath import UnixPathOwner, bind_unix
from sockit.errors import ClosedResourceError
from sockit.proto.accept import AcceptAction, classify_accept_error
from sockit.proto.timeouts import resolve_timeout
from sockit.sync._errors import Deadline
from sockit.sync.factory import SYSTEM_SOCKET_FACTORY, SocketFactory
from sockit.sync.stream import SocketStream

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DEFAULT_BACKLOG", "SocketListener", "listen", "listen_unix"]


class SocketListener(Listener):
    """One or more listening sockets that share a port, accepted from as one.

    ``addresses`` are the real bound addresses (port 0 already replaced by the port
    the kernel chose); ``port`` is that port (IP listeners only).
    """

    __slots__ = ("_closed", "_factory", "_next", "_path_owner", "_sockets", "timeout")

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        socket_factory: SocketFactory | None = None,
        path_owner: UnixPathOwner | None = None,
        timeout: float | None = None,
    ) -> None:
        if not sockets:
            raise ValueError("a listener needs at least one socket")
        self._sockets = list(sockets)
        self._factory = socket_factory or SYSTEM_SOCKET_FACTORY
        self._path_owner = path_owner
        self._closed = False
        self._next = 0
        self.timeout = timeout
        for sock in self._sockets:
            # Non-blocking so accept() can try every socket and then wait on all.
            sock.setblocking(False)

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets (do not close them; close the listener)."""
        return list(self._sockets)

    @property
    def addresses(self) -> list[SocketAddress]:
        """The real bound address of every listening socket."""
        return [
            SocketAddress.from_sockaddr(sock.family, sock.getsockname()) for sock in self._sockets
        ]

    @property
    def port(self) -> int:
        """The port every socket of this listener is bound to."""
        first = self.addresses[0]
        if first.is_unix:
            raise AttributeError("a UNIX listener has no port")
        return first.port

    def fileno(self) -> int:
        """The first socket's file descriptor (for a single-socket listener)."""
        return self._sockets[0].fileno()

    def accept(self, *, timeout: float | None = None) -> SocketStream:
        """See :meth:`sockit.abc.Listener.accept`.

        Transient errors (a connection reset in the queue, a firewall refusal) are
        retried. Resource exhaustion (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``)
        is raised as the ``OSError`` it is, so the caller (a server) can back off.
        """
        deadline = Deadline(resolve_timeout(timeout, self.timeout))
        while True:
            if self._closed:
                raise ClosedResourceError("accept on a closed listener")
            count = len(self._sockets)
            for offset in range(count):
                # Round-robin start so one busy family cannot starve the other.
                index = (self._next + offset) % count
                sock = self._sockets[index]
                try:
                    conn, sockaddr = sock.accept()
                except BlockingIOError:
                    continue
                except OSError as error:
                    if self._closed:
                        raise ClosedResourceError("accept on a closed listener") from error
                    if classify_accept_error(error.errno) is AcceptAction.RETRY:
                        continue
                    raise
                self._next = index + 1
                return _stream_from_accept(conn, sockaddr)
            remaining = deadline.remaining()
            if remaining == 0.0:
                raise TimeoutError("accept timed out")
            try:
                self._factory.wait_readable(self._sockets, remaining)
            except ValueError as error:  # a socket was closed under us (fd -1)
                raise ClosedResourceError("accept on a closed listener") from error

    def close(self) -> None:
        """Stop listening, close every socket and remove a UNIX socket file we created.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Remove the file first: while our socket is bound its inode cannot be reused,
        # so the ownership check cannot mistake someone else's new file for ours.
        if self._path_owner is not None:
            self._path_owner.remove()
        for sock in self._sockets:
            sock.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        if self._closed:
            return "<SocketListener closed>"
        return f"<SocketListener {', '.join(map(str, self.addresses))}>"


def _stream_from_accept(conn: socket.socket, sockaddr: object) -> SocketStream:
    try:
        set_nodelay(conn)
        remote = SocketAddress.from_sockaddr(conn.family, sockaddr)
    except BaseException:
        conn.close()
        raise
    return SocketStream(conn, remote_address=remote)


def listen(
    port: int | str = 0,
    host: str | None = None,
    *,
    backlog: int | None = None,
    reuse_port: bool = False,
    resolver: Resolver | None = None,
    socket_factory: SocketFactory | None = None,
) -> SocketListener:
    """Listen for TCP connections and return a :class:`SocketListener`.

    With no ``host`` the listener accepts IPv4 and IPv6 on one port (for ``port=0``
    the kernel picks it and ``listener.port`` tells which). A ``host`` that resolves to
    several addresses (``"localhost"``) listens on each, on one port. The port is
    validated before any lookup. ``backlog`` defaults to the system maximum.
    ``reuse_port`` sets ``SO_REUSEPORT`` so several processes can share the port.

    Raises ``OSError`` (``EADDRINUSE``, ``EACCES``...) naming the address if binding
    fails; nothing stays open.
    """
    factory = socket_factory or SYSTEM_SOCKET_FACTORY
    port_number = parse_port(port)
    if host is None:
        infos = wildcard_infos(port_number)
    else:
        infos = unique_infos(
            (resolver or default_resolver()).getaddrinfo(
                check_host(host),
                port_number,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
        )
    sockets = bind_listening_sockets(
        factory.socket,
        infos,
        port_number,
        backlog=DEFAULT_BACKLOG if backlog is None else backlog,
        reuse_port=reuse_port,
    )
    return SocketListener(sockets, socket_factory=factory)


def listen_unix(
    path: str,
    *,
    mode: int | None = None,
    backlog: int | None = None,
    socket_factory: SocketFactory | None = None,
) -> SocketListener:
    """Listen on a UNIX stream socket at ``path`` (``"@name"``: abstract namespace).

    A stale socket file (a socket nobody listens on) is replaced; a live one raises
    ``OSError(EADDRINUSE)``; anything that is not a socket is never touched and raises.
    ``mode`` (e.g. ``0o600``) is applied before the socket is reachable. The socket
    file is removed when the listener is closed (only if it is still ours).
    """
    factory = socket_factory or SYSTEM_SOCKET_FACTORY
    sock = factory.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owner: UnixPathOwner | None = None
    try:
        owner = bind_unix(sock, path, mode=mode)
        sock.listen(DEFAULT_BACKLOG if backlog is None else backlog)
    except BaseException:
        if owner is not None:
            owner.remove()
        sock.close()
        raise
    return SocketListener([sock], socket_factory=factory, path_owner=owner)
