"""listen() and listen_unix(), awaited: a passive open that reports what it really bound.

The async twin of ``sockit/sync/listen.py``, with the same sockets, made by the same
code (reasons in docs/design.md and there):

* :mod:`sockit.addr.binding`: no host means IPv4 *and* IPv6, on the same port, also for
  port 0 (two sockets, the IPv6 one with ``IPV6_V6ONLY``, so an IPv4 peer is reported
  as IPv4; IPv4 alone if the kernel has no IPv6); the default backlog is the system
  maximum (65535, clamped by the kernel to ``net.core.somaxconn``), not the textbook
  5; ``SO_REUSEADDR`` is set, ``SO_REUSEPORT`` only when asked.
* UNIX socket files follow :mod:`sockit.addr.unixpath` (stale files replaced only when
  provably stale, ``mode=`` applied atomically, our file removed on close).

Accepting: the listening sockets are non-blocking; :meth:`AsyncSocketListener.accept`
tries each once, starting after the one that served last (so a busy family cannot
starve the other), and only when none has a connection waits for any of them to become
readable (:class:`sockit.aio._wait.FdWatch`: one registration for all, none while
nobody waits). Transient accept errors are retried per
:func:`sockit.proto.accept.classify_accept_error`; running out of descriptors or memory
is raised to the caller, who backs off.

Must never accept on behalf of a caller who did not call accept(), and never block the
loop (the one exception: the staleness probe of an existing UNIX socket file in
:func:`listen_unix`, a local connect that answers at once unless a live server's
accept queue is full, bounded to 1 s).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from sockit.abc import AsyncListener
from sockit.addr import SocketAddress, check_host, parse_port
from sockit.addr.binding import (
    DEFAULT_BACKLOG,
    bind_listening_sockets,
    set_nodelay,
    unique_infos,
    wildcard_infos,
)
from sockit.addr.unixpath import UnixPathOwner, bind_unix
from sockit.aio._resolve import resolve
from sockit.aio._wait import FdWatch
from sockit.aio.stream import AsyncSocketStream, attach_stream
from sockit.errors import ClosedResourceError
from sockit.proto.accept import AcceptAction, classify_accept_error
from sockit.proto.timeouts import resolve_timeout

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DEFAULT_BACKLOG", "AsyncSocketListener", "listen", "listen_unix"]


class AsyncSocketListener(AsyncListener):
    """One or more listening sockets that share a port, accepted from as one.

    ``AsyncSocketListener(sockets)`` wraps sockets that are already bound and
    listening (socket activation, a socket inherited by a worker process); the listener
    owns them from then on and makes them non-blocking. ``path_owner`` (from
    :func:`sockit.addr.unixpath.bind_unix`) makes :meth:`aclose` remove the UNIX socket
    file. ``timeout`` is the default of :meth:`accept` (``None``: wait forever).
    """

    __slots__ = ("_closed", "_next", "_path_owner", "_sockets", "_watch", "timeout")

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        path_owner: UnixPathOwner | None = None,
        timeout: float | None = None,
    ) -> None:
        if not sockets:
            raise ValueError("a listener needs at least one socket")
        resolve_timeout(timeout, None)  # validate early
        for sock in sockets:
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"a listener needs SOCK_STREAM sockets, not {sock.type!r}")
        self._sockets = list(sockets)
        self._path_owner = path_owner
        self._closed = False
        self._next = 0
        self.timeout = timeout
        for sock in self._sockets:
            # Non-blocking so accept() can try every socket and then wait on all.
            sock.setblocking(False)
        self._watch = FdWatch([sock.fileno() for sock in self._sockets], writable=False)

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

    async def accept(self, *, timeout: float | None = None) -> AsyncSocketStream:
        """See :meth:`sockit.abc.Listener.accept`.

        Returns the connection as an :class:`AsyncSocketStream` with TCP_NODELAY set
        (IP) and its remote address known. Transient errors (a connection reset in the
        queue, a firewall refusal) are retried. Resource exhaustion (``EMFILE``,
        ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) is raised as the ``OSError`` it is, so the
        caller (a server) can back off. Several tasks may accept at once.
        """
        seconds = resolve_timeout(timeout, self.timeout)
        deadline: float | None = None
        deadline_known = False
        while True:
            if self._closed:
                raise ClosedResourceError("accept on a closed listener")
            count = len(self._sockets)
            for offset in range(count):
                # Round-robin start so one busy family cannot starve the other.
                index = (self._next + offset) % count
                try:
                    conn, sockaddr = self._sockets[index].accept()
                except BlockingIOError:
                    continue
                except OSError as error:
                    if self._closed:
                        raise ClosedResourceError("accept on a closed listener") from error
                    if classify_accept_error(error.errno) is AcceptAction.RETRY:
                        continue
                    raise
                self._next = index + 1
                return await _stream_from_accept(conn, sockaddr)
            if not deadline_known:
                deadline_known = True
                if seconds is not None:
                    deadline = asyncio.get_running_loop().time() + seconds
            await self._watch.wait(deadline, "accept")

    async def aclose(self) -> None:
        """Stop listening, close every socket and remove a UNIX socket file we created.
        Idempotent. Tasks waiting in :meth:`accept` raise
        :class:`~sockit.ClosedResourceError`."""
        self.close_now()

    def close_now(self) -> None:
        """What :meth:`aclose` does, callable without awaiting (from a signal handler
        or a synchronous callback on the loop's thread). Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Remove the file first: while our socket is bound its inode cannot be reused,
        # so the ownership check cannot mistake someone else's new file for ours.
        if self._path_owner is not None:
            self._path_owner.remove()
        # Unregister from the loop before the fds go away (a closed fd left registered
        # would be reused by the next socket with that number).
        self._watch.close()
        for sock in self._sockets:
            sock.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        if self._closed:
            return "<AsyncSocketListener closed>"
        return f"<AsyncSocketListener {', '.join(map(str, self.addresses))}>"


async def _stream_from_accept(conn: socket.socket, sockaddr: object) -> AsyncSocketStream:
    try:
        set_nodelay(conn)
        remote = SocketAddress.from_sockaddr(conn.family, sockaddr)
    except BaseException:
        conn.close()
        raise
    return await attach_stream(conn, remote_address=remote)


async def listen(
    port: int | str = 0,
    host: str | None = None,
    *,
    backlog: int | None = None,
    reuse_port: bool = False,
) -> AsyncSocketListener:
    """Listen for TCP connections and return an :class:`AsyncSocketListener`.

    The contract of :func:`sockit.listen`: with no ``host`` the listener accepts IPv4
    and IPv6 on one port (for ``port=0`` the kernel picks it and ``listener.port`` tells
    which); a ``host`` that resolves to several addresses (``"localhost"``) listens on
    each, on one port. The port is validated before any lookup. ``backlog`` defaults to
    the system maximum; ``reuse_port`` sets ``SO_REUSEPORT``.

    Raises ``OSError`` (``EADDRINUSE``, ``EACCES``...) naming the address if binding
    fails; nothing stays open.
    """
    port_number = parse_port(port)
    if host is None:
        infos = wildcard_infos(port_number)
    else:
        infos = unique_infos(
            await resolve(
                None,
                check_host(host),
                port_number,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
                display_host=host,
            )
        )
    sockets = bind_listening_sockets(
        socket.socket,
        infos,
        port_number,
        backlog=DEFAULT_BACKLOG if backlog is None else backlog,
        reuse_port=reuse_port,
    )
    return AsyncSocketListener(sockets)


async def listen_unix(
    path: str, *, mode: int | None = None, backlog: int | None = None
) -> AsyncSocketListener:
    """Listen on a UNIX stream socket at ``path`` (``"@name"``: abstract namespace).

    The contract of :func:`sockit.listen_unix`: a stale socket file (a socket nobody
    listens on) is replaced; a live one raises ``OSError(EADDRINUSE)``; anything that
    is not a socket is never touched and raises. ``mode`` (e.g. ``0o600``) is applied
    before the socket is reachable. The socket file is removed by :meth:`aclose` (only
    if it is still ours).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owner: UnixPathOwner | None = None
    try:
        owner = bind_unix(sock, path, mode=mode)
        sock.listen(DEFAULT_BACKLOG if backlog is None else backlog)
        return AsyncSocketListener([sock], path_owner=owner)
    except BaseException:
        if owner is not None:
            owner.remove()  # before close: the bound socket pins the file's inode
        sock.close()
        raise
