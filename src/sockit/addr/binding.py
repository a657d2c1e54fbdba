"""Creating, binding and connecting IP sockets for addresses: shared by sync and aio.

The twins differ in how they wait, never in which sockets they make: every socket
here comes from a ``new_socket(family, type, proto)`` callable (the sync layer passes
its replaceable :class:`~sockit.sync.SocketFactory`'s ``socket``, the async layer
``socket.socket``), is set up the same way and is handed to the caller, who owns it
from then on. Decisions for listeners (reasons in docs/design.md):

* No host means IPv4 *and* IPv6, on the same port, also for port 0: two sockets, the
  IPv6 one with ``IPV6_V6ONLY`` so each family has its own socket and an IPv4 peer is
  reported as IPv4 (as ncat does). If the kernel has no IPv6, IPv4 alone is used.
* The default backlog is the system maximum: we ask for 65535 and Linux clamps it to
  ``net.core.somaxconn`` (4096 since 5.4). A backlog of 5, the textbook value, drops
  SYNs under any burst of connects.
* ``SO_REUSEADDR`` is set so a restarted server can bind while old connections sit in
  TIME_WAIT (every production server does this on POSIX; it does not allow two live
  listeners on one port, ``SO_REUSEPORT`` does, and only when asked).

This module must never wait, resolve a name or accept: a connect is only started here
(non-blocking) and completed by the caller. On any error every socket it created is
closed before the error propagates.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from sockit.addr._address import AddrInfo, SocketAddress

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_BACKLOG",
    "SocketMaker",
    "bind_listening_sockets",
    "set_linger_zero",
    "set_nodelay",
    "start_connect",
    "unique_infos",
    "wildcard_infos",
]

SocketMaker: TypeAlias = Callable[[int, int, int], socket.socket]
"""``new_socket(family, type, proto)``: where the sockets come from."""

DEFAULT_BACKLOG = 65535
"""Ask for the most; the kernel clamps to net.core.somaxconn (trio does the same)."""

# How many times a listener with several addresses and port 0 retries when the port the
# first socket got is taken on another address. Each try is a new random ephemeral
# port, so a handful of tries makes failure vanishingly unlikely.
_PORT_ZERO_TRIES = 20


# --- listening --------------------------------------------------------------------------


def wildcard_infos(port: int) -> list[AddrInfo]:
    """The addresses of a listener with no host: IPv6 ``::`` and IPv4 ``0.0.0.0``."""
    return [
        AddrInfo(socket.AF_INET6, socket.SOCK_STREAM, 0, "", ("::", port, 0, 0)),
        AddrInfo(socket.AF_INET, socket.SOCK_STREAM, 0, "", ("0.0.0.0", port)),
    ]


def unique_infos(infos: Sequence[AddrInfo]) -> list[AddrInfo]:
    """``infos`` without repeats of one (family, address), first occurrence kept: a
    resolver may answer with one address twice (``/etc/hosts`` listing it on two
    lines), and it can be bound only once."""
    seen: set[tuple[int, object]] = set()
    result = []
    for info in infos:
        key = (info.family, info.sockaddr)
        if key not in seen:
            seen.add(key)
            result.append(info)
    return result


def bind_listening_sockets(
    new_socket: SocketMaker,
    infos: Sequence[AddrInfo],
    port: int,
    *,
    backlog: int,
    reuse_port: bool,
) -> list[socket.socket]:
    """One bound, listening ``SOCK_STREAM`` socket per address of ``infos``, all on
    one port (for ``port=0`` the one the kernel gave the first socket).

    An address family the kernel lacks (``EAFNOSUPPORT``, or IPv6 disabled:
    ``EADDRNOTAVAIL`` on an IPv6 address) is skipped while another address is left.
    With port 0 and several addresses the whole set is bound again (with a new port)
    when the first socket's port is taken on another address, up to 20 times.

    Raises ``OSError`` (``EADDRINUSE``, ``EACCES``...) naming the address if binding
    fails; nothing stays open.
    """
    tries = _PORT_ZERO_TRIES if port == 0 and len(infos) > 1 else 1
    for attempt in range(tries):
        try:
            return _bind_all(new_socket, infos, port, backlog, reuse_port=reuse_port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE and attempt + 1 < tries:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _bind_all(
    new_socket: SocketMaker,
    infos: Sequence[AddrInfo],
    port: int,
    backlog: int,
    *,
    reuse_port: bool,
) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for info in infos:
            try:
                sock = new_socket(info.family, socket.SOCK_STREAM, info.proto)
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


# --- connecting -------------------------------------------------------------------------


def start_connect(
    new_socket: SocketMaker, info: AddrInfo, local: SocketAddress | None
) -> socket.socket:
    """A non-blocking ``SOCK_STREAM`` socket whose connect to ``info`` is under way
    (bound to ``local`` first, if given); the caller waits until it is writable and
    reads ``SO_ERROR``.

    Raises ``OSError`` if the connect failed at once (``ENETUNREACH``...); the socket
    is closed then.
    """
    sock = new_socket(info.family, socket.SOCK_STREAM, info.proto)
    try:
        sock.setblocking(False)
        if local is not None:
            sock.bind(local.to_sockaddr())
        code = sock.connect_ex(info.sockaddr)
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock


# struct linger {l_onoff = 1, l_linger = 0}: close() sends RST and drops unsent data.
_LINGER_ZERO = struct.pack("ii", 1, 0)


def set_linger_zero(sock: socket.socket) -> None:
    """Make the next ``close()`` of ``sock`` a reset (RST) that drops unsent data.

    How a failure is passed on (a relay's reset leg, a server's abort) so the peer cannot
    mistake a cut-off connection for a complete one. Errors are ignored: the socket may
    already be gone, and the close that follows releases it either way.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on a TCP socket (a UNIX socket is left alone).

    sockit's users send whole messages with ``sendall`` and gain nothing from Nagle
    delaying them (Go, Node and trio make the same choice). Set on every connection,
    accepted ones too: Linux does not carry TCP_NODELAY over from the listener on every
    kernel version.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
