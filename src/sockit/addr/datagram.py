"""UDP addressing and socket set-up, shared by the sync and async UDP sockets.

What ``sockit.sync.udp`` and ``sockit.aio.udp`` must agree on is written once here:
the datagram size limits, which destinations a socket of a family can reach (an IPv4
peer of a dual-stack IPv6 socket is sent to as ``::ffff:a.b.c.d``), the checks of
``open_udp``'s arguments, and how its sockets are created, bound and connected. Every
socket comes from a ``new_socket(family, type, proto)`` callable and is wrapped by the
caller's ``wrap(sock)`` (``UDPSocket`` or ``AsyncUDPSocket``), which then owns it.

This module must never wait, send or receive, or resolve a name: the twins resolve
(each its own way) and hand the answers in.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any, TypeVar

from sockit.addr._address import AddrInfo, SocketAddress, format_host_port
from sockit.addr.endpoint import InetEndpoint, parse_endpoint
from sockit.addr.hosts import check_host
from sockit.addr.ports import parse_port
from sockit.errors import (
    AddressError,
    ConnectAttempt,
    ResolutionError,
    connect_error_from_attempts,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sockit.addr.binding import SocketMaker

__all__ = [
    "DEFAULT_MAX_BYTES",
    "IPV4_MAX_DATAGRAM",
    "IPV6_MAX_DATAGRAM",
    "MSG_TRUNC",
    "bind_every_address",
    "bind_first",
    "bind_wildcard",
    "check_family",
    "connect_first",
    "datagram_limit",
    "destination_sockaddr",
    "is_dual_stack",
    "parse_remote",
    "peer_address",
]

IPV4_MAX_DATAGRAM = 65507
"""Largest UDP payload over IPv4: 65535 (the IPv4 total-length field, RFC 791) minus a
20-byte IPv4 header minus the 8-byte UDP header (RFC 768)."""

IPV6_MAX_DATAGRAM = 65527
"""Largest UDP payload over IPv6 without jumbograms: 65535 (the IPv6 payload-length
field, which unlike IPv4's excludes the 40-byte fixed header, RFC 8200 section 3) minus
the 8-byte UDP header. Jumbograms (RFC 2675) are not supported."""

DEFAULT_MAX_BYTES = 65536
"""Default receive size: the largest UDP datagram fits, so nothing is truncated by
default."""

MSG_TRUNC = int(getattr(socket, "MSG_TRUNC", 0))
"""``socket.MSG_TRUNC`` as a plain int (0 where it does not exist): "flags & MSG_TRUNC"
on the enum would go through ``enum.Flag.__and__`` per datagram."""

# A 65,507-byte datagram must fit in the socket's send buffer to be sent at all and in
# its receive buffer to be queued. Linux's defaults (net.core.wmem_default and
# rmem_default, 208 KiB as getsockopt reports them) are ample; other systems are not
# (macOS caps a UDP send at SO_SNDBUF, 9216 bytes by default, and queues ~42 KiB).
# 2 x 64 KiB leaves room for the kernel's per-packet bookkeeping, which Linux counts
# against the buffer. Buffers are only ever raised, never lowered.
_MIN_DATAGRAM_BUFFER = 2 * 65536

# Errors that mean "this address family or address does not exist here" (IPv6 disabled,
# no such local address): the next candidate address is worth trying.
_FAMILY_UNAVAILABLE = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})

_IPV4_MAPPED_PREFIX = "::ffff:"

# Port 0 on several addresses: the port the first socket got may be taken on another
# address; each retry binds the whole set again on a new random port.
_PORT_ZERO_TRIES = 20

_T = TypeVar("_T")


# --- limits and destinations ------------------------------------------------------------


def datagram_limit(address: SocketAddress) -> int:
    """The largest UDP payload that can be sent to ``address`` in one datagram: the
    IPv4 limit for IPv4 and IPv4-mapped IPv6 addresses, the IPv6 limit otherwise."""
    if address.family == socket.AF_INET:
        return IPV4_MAX_DATAGRAM
    if address.host.startswith(_IPV4_MAPPED_PREFIX) and "." in address.host:
        return IPV4_MAX_DATAGRAM
    return IPV6_MAX_DATAGRAM


def is_dual_stack(sock: socket.socket) -> bool:
    """Whether ``sock`` is an IPv6 socket that also talks to IPv4 (``IPV6_V6ONLY=0``)."""
    return (
        sock.family == socket.AF_INET6
        and sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    )


def destination_sockaddr(
    address: SocketAddress, *, family: int, dual_stack: bool, local_address: SocketAddress
) -> tuple[Any, int]:
    """The sockaddr to pass to ``sendto`` for ``address`` from a UDP socket of
    ``family`` (``dual_stack``: see :func:`is_dual_stack`), and the datagram size limit.

    An IPv4 address on a dual-stack socket becomes ``::ffff:a.b.c.d``, which the kernel
    sends as IPv4 (RFC 4291 section 2.5.5.2). Raises
    :class:`~sockit.errors.AddressError` (naming ``local_address``) for an address the
    socket cannot reach: IPv6 from IPv4, IPv4 from IPv6-only, UNIX from either.
    """
    if address.family == socket.AF_INET:
        if family == socket.AF_INET:
            return (address.host, address.port), IPV4_MAX_DATAGRAM
        if dual_stack:
            mapped = (_IPV4_MAPPED_PREFIX + address.host, address.port, 0, 0)
            return mapped, IPV4_MAX_DATAGRAM
    elif address.family == socket.AF_INET6 and family == socket.AF_INET6:
        return address.to_sockaddr(), datagram_limit(address)
    if family == socket.AF_INET:
        kind = "an IPv4"
    else:
        kind = "a dual-stack IPv6" if dual_stack else "an IPv6-only"
    raise AddressError(
        f"cannot send to {address} from {kind} socket {local_address}; "
        f"open the socket for that address family"
    )


def peer_address(sock: socket.socket) -> SocketAddress | None:
    """The peer of a connected datagram socket, ``None`` if it is not connected."""
    try:
        peer = sock.getpeername()
    except OSError as error:
        if error.errno != errno.ENOTCONN:
            raise
        return None
    return SocketAddress.from_sockaddr(sock.family, peer)


# --- open_udp's arguments ---------------------------------------------------------------


def check_family(family: int | None) -> int:
    """``open_udp``'s ``family`` as a ``getaddrinfo`` family: 0 (both), ``AF_INET`` or
    ``AF_INET6``; anything else is a ``ValueError``."""
    if family is None or family == 0:
        return 0
    if family in (socket.AF_INET, socket.AF_INET6):
        return family
    raise ValueError(f"family must be None, AF_INET or AF_INET6, not {family!r}")


def parse_remote(remote: tuple[str, int | str] | str) -> tuple[str, int]:
    """``open_udp``'s ``remote`` (``(host, port)`` or ``"host:port"``) as a checked
    host and a port number, before any lookup.

    Raises :class:`~sockit.errors.AddressError` for a malformed host or port (or a
    UNIX endpoint), ``TypeError`` for anything but a str or a pair.
    """
    if isinstance(remote, str):
        endpoint = parse_endpoint(remote)
        if not isinstance(endpoint, InetEndpoint) or endpoint.host is None:
            raise AddressError(f"remote must be host:port, not {remote!r}")
        return endpoint.host, endpoint.port
    if isinstance(remote, tuple) and len(remote) == 2:
        host, port = remote
        if not isinstance(host, str):
            raise TypeError(f"remote host must be a str, not {type(host).__name__}")
        return check_host(host), parse_port(port, protocol="udp")
    raise TypeError(f"remote must be (host, port) or 'host:port', not {remote!r}")


# --- creating, binding and connecting ---------------------------------------------------


def _new_socket(new_socket: SocketMaker, family: int, *, reuse_port: bool) -> socket.socket:
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
    sock = new_socket(family, socket.SOCK_DGRAM, 0)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _ensure_buffer_sizes(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _ensure_buffer_sizes(sock: socket.socket) -> None:
    """Make sure a maximal datagram fits (see _MIN_DATAGRAM_BUFFER); best effort."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < _MIN_DATAGRAM_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, option, _MIN_DATAGRAM_BUFFER)
        except OSError:
            # A system that refuses keeps its default; an oversized datagram then
            # still fails clearly, as DatagramTooLarge from the kernel's EMSGSIZE.
            pass


def _bind(sock: socket.socket, sockaddr: Any) -> None:
    try:
        sock.bind(sockaddr)
    except OSError as error:
        described = format_host_port(str(sockaddr[0]), int(sockaddr[1]))
        message = f"cannot bind UDP socket to {described}: {error.strerror}"
        raise OSError(error.errno, message) from error


def bind_wildcard(
    new_socket: SocketMaker,
    wrap: Callable[[socket.socket], _T],
    port: int,
    family: int,
    *,
    reuse_port: bool,
) -> _T:
    """A UDP socket bound to every local address on ``port``, wrapped.

    ``family`` 0: one dual-stack IPv6 socket (``IPV6_V6ONLY=0``, RFC 3493 section
    5.3), or IPv4 only where IPv6 is unavailable; ``AF_INET6``: IPv6 only;
    ``AF_INET``: IPv4 only. Raises ``OSError`` naming the address if binding fails.
    """
    if family in (0, socket.AF_INET6):
        try:
            sock = _new_socket(new_socket, socket.AF_INET6, reuse_port=reuse_port)
        except OSError as error:
            if family == socket.AF_INET6 or error.errno not in _FAMILY_UNAVAILABLE:
                raise
        else:
            try:
                # Dual-stack unless IPv6 was asked for explicitly: one socket, one port,
                # both families; the system default varies (net.ipv6.bindv6only), so
                # it is always set.
                v6only = 1 if family == socket.AF_INET6 else 0
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
                _bind(sock, ("::", port))
                return wrap(sock)
            except OSError as error:
                sock.close()
                if family == socket.AF_INET6 or error.errno not in _FAMILY_UNAVAILABLE:
                    raise
            except BaseException:
                sock.close()
                raise
    sock = _new_socket(new_socket, socket.AF_INET, reuse_port=reuse_port)
    try:
        _bind(sock, ("0.0.0.0", port))
        return wrap(sock)
    except BaseException:
        sock.close()
        raise


def bind_first(
    new_socket: SocketMaker,
    wrap: Callable[[socket.socket], _T],
    host: str,
    infos: Sequence[AddrInfo],
    family: int,
    *,
    reuse_port: bool,
) -> _T:
    """A UDP socket bound to the first of ``infos`` (``host``'s passive answers) that
    can be bound, wrapped. A wildcard IPv6 answer is dual-stack unless ``family`` is
    ``AF_INET6``.

    Answers of a family or address this system lacks are skipped; if none is left the
    first such error is raised (:class:`~sockit.errors.ResolutionError` when there were
    no answers at all). Other errors (``EADDRINUSE``...) are raised at once.
    """
    first_error: OSError | None = None
    for info in infos:
        try:
            sock = _new_socket(new_socket, info.family, reuse_port=reuse_port)
        except OSError as error:
            if error.errno not in _FAMILY_UNAVAILABLE:
                raise
            first_error = first_error or error
            continue
        try:
            if info.family == socket.AF_INET6 and info.sockaddr[0] == "::":
                sock.setsockopt(
                    socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if family == socket.AF_INET6 else 0
                )
            _bind(sock, info.sockaddr)
            return wrap(sock)
        except OSError as error:
            sock.close()
            if error.errno not in _FAMILY_UNAVAILABLE:
                raise
            first_error = first_error or error
        except BaseException:
            sock.close()
            raise
    if first_error is None:
        raise ResolutionError(host, "no addresses to bind to")
    raise first_error


def bind_every_address(
    new_socket: SocketMaker,
    wrap: Callable[[socket.socket], _T],
    host: str,
    infos: Sequence[AddrInfo],
    port: int,
    *,
    reuse_port: bool,
) -> list[_T]:
    """One UDP socket per distinct address of ``infos`` (``host``'s passive answers;
    one address answered twice is bound once), all on ``port``, each wrapped.

    For ``port`` 0 every socket after the first takes the port the first one got; when
    that port is taken on another address the whole set is bound again on a new port,
    up to 20 times. Each address is bound as :func:`bind_first` binds it. Raises what
    binding raises (``OSError`` naming the address, ``EADDRINUSE``...); nothing stays
    open then.
    """
    unique: list[AddrInfo] = []
    for info in infos:
        if all(
            (info.family, info.sockaddr[0]) != (seen.family, seen.sockaddr[0]) for seen in unique
        ):
            unique.append(info)
    tries = _PORT_ZERO_TRIES if port == 0 and len(unique) > 1 else 1
    for attempt in range(tries):
        sockets: list[socket.socket] = []
        try:
            for info in unique:
                chosen = port or (sockets[0].getsockname()[1] if sockets else 0)
                sockaddr = (info.sockaddr[0], chosen, *info.sockaddr[2:])
                one = [info._replace(sockaddr=sockaddr)]
                sockets.append(bind_first(new_socket, _raw, host, one, 0, reuse_port=reuse_port))
            wrapped = [wrap(sock) for sock in sockets]
        except OSError as error:
            for sock in sockets:
                sock.close()
            if error.errno == errno.EADDRINUSE and attempt + 1 < tries:
                continue
            raise
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return wrapped
    raise AssertionError("unreachable")  # pragma: no cover


def _raw(sock: socket.socket) -> socket.socket:
    return sock


def connect_first(
    new_socket: SocketMaker,
    wrap: Callable[[socket.socket], _T],
    remote_host: str,
    remote_port: int,
    remote_infos: Sequence[AddrInfo],
    *,
    local_infos: Sequence[AddrInfo] | None,
    local_port: int,
    reuse_port: bool,
    clock: Callable[[], float],
) -> _T:
    """A UDP socket connected to the first of ``remote_infos`` (in the order given)
    for which a socket can be created, bound and connected, wrapped.

    The socket is bound to the ``local_infos`` answer of the remote's family if given
    (none of that family: that remote fails with ``EAFNOSUPPORT``), else to
    ``local_port`` on the wildcard address if it is not 0. ``clock`` measures each
    failed attempt's time for the error. Raises ``EADDRINUSE`` at once (no other
    remote address frees the local port), else
    :class:`~sockit.errors.ConnectError` naming every address tried.
    """
    started = clock()
    attempts: list[ConnectAttempt] = []
    last_error: OSError | None = None
    for info in remote_infos:
        try:
            return _connect_one(
                new_socket, wrap, info, local_infos, local_port=local_port, reuse_port=reuse_port
            )
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise  # the local port is taken: no other remote address changes that
            attempts.append(ConnectAttempt(str(info.address), error, clock() - started))
            last_error = error
    raise connect_error_from_attempts(remote_host, remote_port, attempts) from last_error


def _connect_one(
    new_socket: SocketMaker,
    wrap: Callable[[socket.socket], _T],
    remote: AddrInfo,
    local_infos: Sequence[AddrInfo] | None,
    *,
    local_port: int,
    reuse_port: bool,
) -> _T:
    local: AddrInfo | None = None
    if local_infos is not None:
        local = next((info for info in local_infos if info.family == remote.family), None)
        if local is None:
            raise OSError(errno.EAFNOSUPPORT, "the local host has no address of this family")
    sock = _new_socket(new_socket, remote.family, reuse_port=reuse_port)
    try:
        if local is not None:
            _bind(sock, local.sockaddr)
        elif local_port:
            wildcard = "::" if remote.family == socket.AF_INET6 else "0.0.0.0"
            _bind(sock, (wildcard, local_port))
        # A UDP connect only records the default peer: it never blocks.
        sock.connect(remote.sockaddr)
        return wrap(sock)
    except BaseException:
        sock.close()
        raise
