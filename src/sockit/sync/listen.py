"""listen() and listen_unix(): a passive open that reports what it really bound.

Decisions (reasons in docs/design.md):

* No host means IPv4 *and* IPv6, on the same port, also for port 0: two sockets, the
  IPv6 one with ``IPV6_V6ONLY`` so each family has its own socket and an IPv4 peer is
  reported as IPv4 (as ncat does). If the kernel has no IPv6, IPv4 alone is used.
* The default backlog is the system maximum: we ask for 65535 and Linux clamps it to
  ``net.core.somaxconn`` (4096 since 5.4). A backlog of 5, the textbook value, drops
  SYNs under any burst of connects.
* ``SO_REUSEADDR`` is set so a restarted server can bind while old connections sit in
  TIME_WAIT (every production server does this on POSIX; it does not allow two live
  listeners on one port, ``SO_REUSEPORT`` does, and only when asked).

Must never accept on behalf of a caller who did not call accept().
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from sockit.abc import Listener
from sockit.addr import (
    AddrInfo,
    Resolver,
    SocketAddress,
    check_host,
    default_resolver,
    parse_port,
)
from sockit.addr.unixpath import UnixPathOwner, bind_unix
from sockit.errors import ClosedResourceError
from sockit.proto.accept import AcceptAction, classify_accept_error
from sockit.sync._errors import Deadline, resolve_timeout
from sockit.sync.factory import SYSTEM_SOCKET_FACTORY, SocketFactory
from sockit.sync.stream import SocketStream

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DEFAULT_BACKLOG", "SocketListener", "listen", "listen_unix"]

DEFAULT_BACKLOG = 65535
"""Ask for the most; the kernel clamps to net.core.somaxconn (trio does the same)."""

# How many times listen(port=0) with several addresses retries when the port the
# first socket got is taken on another address. Each try is a new random ephemeral
# port, so a handful of tries makes failure vanishingly unlikely.
_PORT_ZERO_TRIES = 20


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
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            # Linux does not carry TCP_NODELAY over from the listener on every
            # kernel version, so set it on each connection (see sync/connect.py).
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    if backlog is None:
        backlog = DEFAULT_BACKLOG
    if host is None:
        infos = _wildcard_infos(port_number)
    else:
        infos = (resolver or default_resolver()).getaddrinfo(
            check_host(host),
            port_number,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
        infos = _unique(infos)
    tries = _PORT_ZERO_TRIES if port_number == 0 and len(infos) > 1 else 1
    for attempt in range(tries):
        try:
            sockets = _bind_all(factory, infos, port_number, backlog, reuse_port=reuse_port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE and attempt + 1 < tries:
                continue
            raise
        return SocketListener(sockets, socket_factory=factory)
    raise AssertionError("unreachable")  # pragma: no cover


def _wildcard_infos(port: int) -> list[AddrInfo]:
    infos = [AddrInfo(socket.AF_INET6, socket.SOCK_STREAM, 0, "", ("::", port, 0, 0))]
    infos.append(AddrInfo(socket.AF_INET, socket.SOCK_STREAM, 0, "", ("0.0.0.0", port)))
    return infos


def _unique(infos: list[AddrInfo]) -> list[AddrInfo]:
    seen: set[tuple[int, object]] = set()
    result = []
    for info in infos:
        key = (info.family, info.sockaddr)
        if key not in seen:
            seen.add(key)
            result.append(info)
    return result


def _bind_all(
    factory: SocketFactory,
    infos: list[AddrInfo],
    port: int,
    backlog: int,
    *,
    reuse_port: bool,
) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for info in infos:
            try:
                sock = factory.socket(info.family, socket.SOCK_STREAM, info.proto)
            except OSError as error:
                # No IPv6 in this kernel (or no IPv4): the wildcard listener uses the
                # family that exists, as long as one does.
                if error.errno == errno.EAFNOSUPPORT and len(infos) > 1:
                    continue
                raise
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if info.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sockaddr = list(info.sockaddr)
            if port == 0 and len(sockets) > 1:
                # Every socket after the first binds the port the first one got.
                sockaddr[1] = sockets[0].getsockname()[1]
            try:
                sock.bind(tuple(sockaddr))
            except OSError as error:
                if (
                    error.errno == errno.EADDRNOTAVAIL
                    and info.family == socket.AF_INET6
                    and len(infos) > 1
                ):
                    # IPv6 compiled in but disabled (no ::1/:: usable): use the rest.
                    sockets.pop().close()
                    continue
                raise OSError(
                    error.errno,
                    f"cannot bind {SocketAddress.from_sockaddr(info.family, tuple(sockaddr))}: "
                    f"{error.strerror}",
                ) from error
            sock.listen(backlog)
        if not sockets:
            raise OSError(errno.EAFNOSUPPORT, "no address family available to listen on")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


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
