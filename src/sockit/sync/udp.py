"""Blocking datagram sockets: UDP over IPv4/IPv6 and UNIX datagram sockets.

:func:`open_udp` gives a :class:`UDPSocket`, :func:`open_unix_datagram` a
:class:`UnixDatagramSocket`. On top of the stdlib socket they promise:

* one send is one datagram and one receive returns one datagram; a zero-length
  datagram is data (``b""``), never EOF;
* a datagram larger than ``max_bytes`` raises :class:`~sockit.errors.DatagramTruncated`
  carrying the part that fit and the real size: it is never cut silently;
* a datagram too large to send raises :class:`~sockit.errors.DatagramTooLarge` with
  the limit, checked before sending where the limit is known;
* timeouts raise :class:`TimeoutError`; use after ``close()`` raises
  :class:`~sockit.errors.ClosedResourceError`; ICMP errors that the kernel reports on a
  connected socket keep their built-in class (``ConnectionRefusedError``).

This module must never hand back a truncated datagram as if it were whole, treat an
empty datagram as EOF, resolve a name other than through :mod:`sockit.addr`, or wait
longer than the timeout it was given.
"""

from __future__ import annotations

import errno
import math
import select
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from sockit.abc import DatagramSocket
from sockit.addr import (
    AddrInfo,
    InetEndpoint,
    SocketAddress,
    check_host,
    default_resolver,
    format_host_port,
    order_addresses,
    parse_endpoint,
    parse_port,
)
from sockit.addr.unixpath import UnixPathOwner, bind_unix, check_unix_path, unix_sockaddr
from sockit.errors import (
    AddressError,
    ClosedResourceError,
    ConnectAttempt,
    DatagramTooLarge,
    DatagramTruncated,
    ResolutionError,
    connect_error_from_attempts,
)
from sockit.sync._errors import raise_translated, resolve_timeout
from sockit.sync.factory import SYSTEM_SOCKET_FACTORY

if TYPE_CHECKING:
    from sockit.abc import Buffer

__all__ = [
    "IPV4_MAX_DATAGRAM",
    "IPV6_MAX_DATAGRAM",
    "UDPSocket",
    "UnixDatagramSocket",
    "open_udp",
    "open_unix_datagram",
]

IPV4_MAX_DATAGRAM = 65507
"""Largest UDP payload over IPv4: 65535 (the IPv4 total-length field, RFC 791) minus a
20-byte IPv4 header minus the 8-byte UDP header (RFC 768)."""

IPV6_MAX_DATAGRAM = 65527
"""Largest UDP payload over IPv6 without jumbograms: 65535 (the IPv6 payload-length
field, which unlike IPv4's excludes the 40-byte fixed header, RFC 8200 section 3) minus
the 8-byte UDP header. Jumbograms (RFC 2675) are not supported."""

# A 65,507-byte datagram must fit in the socket's send buffer to be sent at all and in
# its receive buffer to be queued. Linux's defaults (net.core.wmem_default and
# rmem_default, 208 KiB as getsockopt reports them) are ample; other systems are not
# (macOS caps a UDP send at SO_SNDBUF, 9216 bytes by default, and queues ~42 KiB).
# 2 x 64 KiB leaves room for the kernel's per-packet bookkeeping, which Linux counts
# against the buffer. Buffers are only ever raised, never lowered.
_MIN_DATAGRAM_BUFFER = 2 * 65536

# Default receive size: the largest UDP datagram fits, so nothing is truncated by default.
_DEFAULT_MAX_BYTES = 65536

# poll(2) takes an int of milliseconds; a very long wait is done in pieces of a day.
_MAX_POLL_MILLISECONDS = 86_400_000

# An unconnected AF_UNIX datagram sender whose receiver's queue is full gets EAGAIN
# although poll() says "writable" (Linux only tracks the receiver of a *connected*
# socket, see unix_dgram_poll in net/unix/af_unix.c), so no event says when to retry.
# Retry with a bounded exponential backoff instead of spinning.
_SEND_BACKOFF_FIRST = 0.001
_SEND_BACKOFF_MAX = 0.05

# Errors that mean "this address family or address does not exist here" (IPv6 disabled,
# no such local address): the next candidate address is worth trying.
_FAMILY_UNAVAILABLE = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})

# A plain int: "flags & socket.MSG_TRUNC" would go through enum.Flag.__and__ per datagram.
_MSG_TRUNC = int(getattr(socket, "MSG_TRUNC", 0))
_IPV4_MAPPED_PREFIX = "::ffff:"


class _DatagramSocketBase(DatagramSocket):
    """What UDP and UNIX datagram sockets share: receiving, sending, waiting, closing.

    The socket is kept non-blocking for its whole life and every wait is a ``poll(2)``
    with the call's own deadline, so a per-call ``timeout`` costs no syscall to set up
    and several threads may send and receive on one socket at once, each with its own
    timeout.
    """

    __slots__ = (
        "_buffers",
        "_closed",
        "_family",
        "_fd",
        "_local_address",
        "_remote_address",
        "_sender_cache",
        "_socket",
        "_waiting",
        "timeout",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = None,
        local_address: SocketAddress | None = None,
        remote_address: SocketAddress | None = None,
    ) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"{type(self).__name__} needs a SOCK_DGRAM socket, not {sock.type!r}")
        resolve_timeout(timeout, None)  # validate early
        self._socket = sock
        self._family = socket.AddressFamily(sock.family)
        self._fd = sock.fileno()
        self._closed = False
        self.timeout: float | None = timeout
        """Default timeout in seconds of every call (``None``: wait forever)."""
        # Receive buffers for reuse, so a receive does not allocate 64 KiB each time.
        # A list rather than one attribute: list.pop/append are atomic, so concurrent
        # receivers on one socket each get their own buffer (at most one is kept).
        self._buffers: list[bytearray] = []
        # Threads blocked in poll() on this socket; close() wakes them (see close()).
        self._waiting: set[int] = set()
        # (raw sockaddr, SocketAddress) of the last sender: a peer usually sends many
        # datagrams, and building the value costs more than the receive itself. One
        # tuple, replaced whole, so concurrent receivers never see a torn pair.
        self._sender_cache: tuple[Any, SocketAddress] | None = None
        sock.setblocking(False)
        self._local_address = (
            local_address
            if local_address is not None
            else SocketAddress.from_sockaddr(self._family, sock.getsockname())
        )
        if remote_address is None:
            try:
                peer = sock.getpeername()
            except OSError as error:
                if error.errno != errno.ENOTCONN:
                    raise
            else:
                remote_address = SocketAddress.from_sockaddr(self._family, peer)
        self._remote_address = remote_address

    # --- addresses and raw access -------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options sockit does not wrap.

        It is in non-blocking mode and must stay so; do not close it directly.
        """
        return self._socket

    @property
    def local_address(self) -> SocketAddress:
        """The address this socket is bound to (still available after close)."""
        return self._local_address

    @property
    def remote_address(self) -> SocketAddress | None:
        """The default peer of a connected socket, ``None`` if unconnected."""
        return self._remote_address

    def fileno(self) -> int:
        """The socket's file descriptor (``-1`` once closed)."""
        return self._socket.fileno()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        peer = f" -> {self._remote_address}" if self._remote_address is not None else ""
        return f"<{type(self).__name__} {self._local_address}{peer}{state}>"

    # --- receiving ----------------------------------------------------------------

    def _recvfrom_raw(
        self, max_bytes: int, timeout: float | None, operation: str
    ) -> tuple[bytes, Any]:
        """One datagram and the raw sender address; raises DatagramTruncated."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        if self._closed:
            raise ClosedResourceError(f"{operation} on a closed socket")
        seconds = resolve_timeout(timeout, self.timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        buffer = self._take_buffer(max_bytes)
        try:
            target = memoryview(buffer)[:max_bytes]
            while True:
                try:
                    # MSG_TRUNC in *flags* makes Linux return the datagram's real length
                    # even when it was longer than the buffer (recv(2), udp(7), unix(7));
                    # MSG_TRUNC in the returned msg_flags says it was cut.
                    size, _, flags, address = self._socket.recvmsg_into((target,), 0, _MSG_TRUNC)
                    break
                except BlockingIOError:
                    self._wait(select.POLLIN, deadline, seconds, operation)
                except OSError as error:
                    raise_translated(error, closed=self._closed, operation=operation)
            if self._closed:
                # close() from another thread shut the socket down to wake us; the
                # "datagram" that woke us is that shutdown, not data.
                raise ClosedResourceError(f"{operation} interrupted: the socket was closed")
            data = bytes(target[: min(size, max_bytes)])
        finally:
            self._buffers.append(buffer)
            del self._buffers[1:]
        if flags & _MSG_TRUNC:
            # Where the kernel does not report the real length, ``size`` is what fit:
            # the best lower bound there is.
            raise DatagramTruncated(data, max(size, len(data)), self._sender(address))
        return data, address

    def _take_buffer(self, max_bytes: int) -> bytearray:
        try:
            buffer = self._buffers.pop()
        except IndexError:
            return bytearray(max(max_bytes, _DEFAULT_MAX_BYTES))
        if len(buffer) < max_bytes:
            return bytearray(max_bytes)
        return buffer

    def _sender(self, address: Any) -> SocketAddress:
        cached = self._sender_cache
        if cached is not None and cached[0] == address:
            return cached[1]
        sender = self._make_sender(address)
        self._sender_cache = (address, sender)
        return sender

    def _make_sender(self, address: Any) -> SocketAddress:
        return SocketAddress.from_sockaddr(self._family, address)

    def recv(self, max_bytes: int = _DEFAULT_MAX_BYTES, *, timeout: float | None = None) -> bytes:
        """Receive one datagram's payload (``b""`` for a zero-length datagram, not EOF).

        Meant for connected sockets (the kernel then only delivers datagrams from the
        peer); on an unconnected socket it returns the next datagram from anyone.
        Errors as :meth:`recvfrom`; on a connected UDP socket an ICMP "port
        unreachable" for an earlier send raises ``ConnectionRefusedError`` here (the
        socket stays usable).
        """
        data, _ = self._recvfrom_raw(max_bytes, timeout, "recv")
        return data

    # --- sending ------------------------------------------------------------------

    def _send_raw(
        self,
        data: Buffer,
        *,
        sockaddr: Any,
        limit: int | None,
        deadline: float | None,
        seconds: float | None,
        operation: str,
    ) -> None:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if limit is not None and size > limit:
            raise DatagramTooLarge(size, limit)
        backoff = _SEND_BACKOFF_FIRST
        writable = False
        while True:
            if self._closed:
                raise ClosedResourceError(f"{operation} on a closed socket")
            try:
                if sockaddr is None:
                    self._socket.send(data)
                else:
                    self._socket.sendto(data, sockaddr)
            except BlockingIOError:
                if writable:
                    self._sleep_until_retry(backoff, deadline, seconds, operation)
                    backoff = min(backoff * 2, _SEND_BACKOFF_MAX)
                writable = self._wait(select.POLLOUT, deadline, seconds, operation)
            except OSError as error:
                if error.errno == errno.EMSGSIZE and not self._closed:
                    # Past our own check: the kernel's limit is lower (a send buffer
                    # smaller than the datagram, or a UNIX socket's SO_SNDBUF); its
                    # exact value is not known here.
                    raise DatagramTooLarge(
                        size, limit if limit is not None and size > limit else None
                    ) from error
                raise_translated(error, closed=self._closed, operation=operation)
            else:
                return

    def _checked_deadline(self, timeout: float | None) -> tuple[float | None, float | None]:
        seconds = resolve_timeout(timeout, self.timeout)
        return seconds, None if seconds is None else time.monotonic() + seconds

    def send(self, data: Buffer, *, timeout: float | None = None) -> None:
        """Send one datagram to the peer of a connected socket.

        Raises ``OSError(EDESTADDRREQ)`` on an unconnected socket (use
        :meth:`sendto`), :class:`~sockit.errors.DatagramTooLarge` if it cannot be sent
        in one piece, ``ConnectionRefusedError`` if an ICMP error for an earlier send
        is pending (UDP), ``TimeoutError`` if the send buffer stays full.
        """
        if self._closed:
            raise ClosedResourceError("send on a closed socket")
        if self._remote_address is None:
            raise OSError(
                errno.EDESTADDRREQ,
                "send() needs a connected socket: use sendto(data, address), or open "
                "the socket with remote=",
            )
        seconds, deadline = self._checked_deadline(timeout)
        self._send_raw(
            data,
            sockaddr=None,
            limit=self._connected_limit(),
            deadline=deadline,
            seconds=seconds,
            operation="send",
        )

    def _connected_limit(self) -> int | None:
        return None

    # --- waiting and closing ------------------------------------------------------

    def _wait(
        self, events: int, deadline: float | None, seconds: float | None, operation: str
    ) -> bool:
        """Wait until the socket is ready for ``events``; True if poll said it is.

        Raises TimeoutError once the deadline has passed, ClosedResourceError if the
        socket was closed.
        """
        thread = threading.get_ident()
        # Register before looking at _closed; close() sets _closed before it looks at
        # _waiting. Whichever runs second sees the other (the GIL orders them).
        self._waiting.add(thread)
        try:
            if self._closed:
                raise ClosedResourceError(f"{operation} interrupted: the socket was closed")
            milliseconds: int | None = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{operation} timed out after {seconds:g} s")
                # Round up: a 0.1 ms remainder must not become a busy 0 ms poll.
                milliseconds = min(math.ceil(remaining * 1000), _MAX_POLL_MILLISECONDS)
            poller = select.poll()
            poller.register(self._fd, events)
            return bool(poller.poll(milliseconds))
        finally:
            self._waiting.discard(thread)

    def _sleep_until_retry(
        self, delay: float, deadline: float | None, seconds: float | None, operation: str
    ) -> None:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{operation} timed out after {seconds:g} s")
            delay = min(delay, remaining)
        time.sleep(delay)

    def close(self) -> None:
        """Close the socket. Idempotent, never raises for a closed socket.

        Calls blocked in another thread on this socket wake up and raise
        :class:`~sockit.errors.ClosedResourceError`; so does every later call.
        """
        if self._closed:
            return
        self._closed = True
        if self._waiting:
            # Closing an fd does not wake a poll() blocked on it in another thread
            # (Linux), and the fd number could be reused under it. shutdown() does
            # wake it (sk_state_change), even on an unconnected socket, which then
            # returns ENOTCONN after doing so. Only done when someone is waiting:
            # shutdown acts on the socket, not the fd, so it would also cut off a
            # forked process sharing this socket.
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self._release_name()
        finally:
            self._socket.close()

    def _release_name(self) -> None:
        """Hook for subclasses: release what the socket owns besides its fd.

        Runs while the fd is still open (see UnixDatagramSocket._release_name).
        """


class UDPSocket(_DatagramSocketBase):
    """A UDP socket over IPv4 or IPv6; see :func:`open_udp` to create one.

    Addresses are :class:`~sockit.addr.SocketAddress` values; IPv4 peers of a
    dual-stack IPv6 socket are reported as IPv4 (not ``::ffff:a.b.c.d``), and IPv4
    destinations may be given to it directly.

    Errors: :class:`~sockit.errors.DatagramTruncated` (receive buffer too small),
    :class:`~sockit.errors.DatagramTooLarge` (more than :data:`IPV4_MAX_DATAGRAM` or
    :data:`IPV6_MAX_DATAGRAM` bytes, or more than the kernel takes), ``TimeoutError``,
    :class:`~sockit.errors.ClosedResourceError`. On a *connected* socket the kernel
    reports ICMP errors for earlier sends on a later call: "port unreachable" raises
    ``ConnectionRefusedError`` and the socket stays usable. Unconnected sockets never
    see them (Linux reports them only with IP_RECVERR).

    ``UDPSocket(sock)`` wraps an already created ``AF_INET``/``AF_INET6``
    ``SOCK_DGRAM`` socket, which it then owns.
    """

    __slots__ = ("_destination_cache", "_dual_stack")

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = None,
    ) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"UDPSocket needs an AF_INET or AF_INET6 socket, not {sock.family!r}")
        super().__init__(sock, timeout=timeout)
        self._dual_stack = (
            sock.family == socket.AF_INET6
            and sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        )
        # (SocketAddress, sockaddr, limit) of the last destination, keyed by identity:
        # replying to the sender recvfrom returned (cached there too) converts nothing.
        self._destination_cache: tuple[SocketAddress, Any, int] | None = None

    def sendto(self, data: Buffer, address: object, *, timeout: float | None = None) -> None:
        """Send one datagram to ``address``.

        ``address`` is a :class:`~sockit.addr.SocketAddress` (what :meth:`recvfrom`
        returns: no lookup) or a ``(host, port)`` tuple, where a name is resolved
        through :func:`sockit.addr.default_resolver` on every call (the lookup counts
        against ``timeout``; IP literals need no lookup thread) and the first answer is
        used. An IPv4 address works on a dual-stack IPv6 socket.

        Raises :class:`~sockit.errors.DatagramTooLarge` (size and limit) if the datagram
        cannot be sent in one piece, :class:`~sockit.errors.AddressError` for an address
        of a family this socket cannot reach (and for malformed hosts and ports),
        :class:`~sockit.errors.ResolutionError` for names that do not resolve,
        ``TimeoutError`` if the lookup or a full send buffer outlasts the timeout.
        Sending to a port where nobody listens is not an error (UDP has no handshake).
        """
        if self._closed:
            raise ClosedResourceError("sendto on a closed socket")
        seconds, deadline = self._checked_deadline(timeout)
        cached = self._destination_cache
        if cached is not None and cached[0] is address:
            _, sockaddr, limit = cached
        else:
            destination = self._destination(address, deadline)
            sockaddr, limit = self._sockaddr_for(destination)
            if destination is address:
                self._destination_cache = (destination, sockaddr, limit)
        self._send_raw(
            data,
            sockaddr=sockaddr,
            limit=limit,
            deadline=deadline,
            seconds=seconds,
            operation="sendto",
        )

    def recvfrom(
        self, max_bytes: int = _DEFAULT_MAX_BYTES, *, timeout: float | None = None
    ) -> tuple[bytes, SocketAddress]:
        """Receive one datagram and its sender.

        Returns ``(data, sender)``; ``data`` is ``b""`` for a zero-length datagram,
        which is data like any other (UDP has no EOF). A datagram longer than
        ``max_bytes`` is consumed and raises :class:`~sockit.errors.DatagramTruncated`
        with the first ``max_bytes`` bytes, the real size and the sender. The default
        ``max_bytes`` holds any UDP datagram. ``TimeoutError`` if none arrives in
        time; ``ConnectionRefusedError`` on a connected socket after an ICMP "port
        unreachable".
        """
        data, address = self._recvfrom_raw(max_bytes, timeout, "recvfrom")
        return data, self._sender(address)

    def _make_sender(self, address: Any) -> SocketAddress:
        if address is None:
            # Only a shut-down socket returns no sender (IP always has one).
            raise ClosedResourceError("recvfrom on a socket that was shut down")
        return SocketAddress.from_sockaddr(self._family, address)

    def _destination(self, address: object, deadline: float | None) -> SocketAddress:
        if isinstance(address, SocketAddress):
            return address
        if isinstance(address, tuple) and len(address) == 2:
            host, port = address
            if not isinstance(host, str):
                raise TypeError(f"host must be a str, not {type(host).__name__}")
            port_number = parse_port(port, protocol="udp")
            checked = check_host(host)
            family = 0 if self._dual_stack else self._family
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            infos = default_resolver().getaddrinfo(
                checked, port_number, family=family, type=socket.SOCK_DGRAM, timeout=remaining
            )
            return infos[0].address
        raise TypeError(f"address must be a SocketAddress or a (host, port) tuple, not {address!r}")

    def _sockaddr_for(self, address: SocketAddress) -> tuple[Any, int]:
        if address.family == socket.AF_INET:
            if self._family == socket.AF_INET:
                return (address.host, address.port), IPV4_MAX_DATAGRAM
            if self._dual_stack:
                # The kernel sends to ::ffff:a.b.c.d as IPv4 (RFC 4291 section 2.5.5.2).
                mapped = (_IPV4_MAPPED_PREFIX + address.host, address.port, 0, 0)
                return mapped, IPV4_MAX_DATAGRAM
        elif address.family == socket.AF_INET6 and self._family == socket.AF_INET6:
            return address.to_sockaddr(), _limit_for_ipv6(address)
        raise AddressError(
            f"cannot send to {address} from {_family_name(self)} socket "
            f"{self._local_address}; open the socket for that address family"
        )

    def _connected_limit(self) -> int | None:
        remote = self._remote_address
        if remote is None or remote.family == socket.AF_INET:
            return IPV4_MAX_DATAGRAM
        return _limit_for_ipv6(remote)


def _limit_for_ipv6(address: SocketAddress) -> int:
    if address.host.startswith(_IPV4_MAPPED_PREFIX) and "." in address.host:
        return IPV4_MAX_DATAGRAM
    return IPV6_MAX_DATAGRAM


def _family_name(udp: UDPSocket) -> str:
    if udp._family == socket.AF_INET:
        return "an IPv4"
    return "a dual-stack IPv6" if udp._dual_stack else "an IPv6-only"


class UnixDatagramSocket(_DatagramSocketBase):
    """A UNIX-domain datagram socket; see :func:`open_unix_datagram` to create one.

    Addresses are :class:`~sockit.addr.SocketAddress` values with ``path`` set: a
    filesystem path, ``"@name"`` for the Linux abstract namespace, or ``""`` for an
    unnamed sender (which cannot be replied to). Datagrams are reliable and ordered
    (the kernel blocks the sender, or times it out, while the receiver's queue is full,
    instead of dropping); a datagram larger than the kernel takes (about the send
    buffer size) raises :class:`~sockit.errors.DatagramTooLarge`.

    If the socket created its file (``open_unix_datagram(path)``), ``close()`` removes
    it, unless another file has taken its place since.
    """

    __slots__ = ("_path_owner",)

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = None,
        path_owner: UnixPathOwner | None = None,
        remote_address: SocketAddress | None = None,
    ) -> None:
        if sock.family != socket.AF_UNIX:
            raise ValueError(f"UnixDatagramSocket needs an AF_UNIX socket, not {sock.family!r}")
        # Off Linux, mode= binds to a temporary name first and the kernel remembers
        # that one; report the path the socket really has.
        local = None if path_owner is None else SocketAddress(socket.AF_UNIX, path=path_owner.path)
        super().__init__(sock, timeout=timeout, local_address=local, remote_address=remote_address)
        self._path_owner = path_owner

    def sendto(self, data: Buffer, address: object, *, timeout: float | None = None) -> None:
        """Send one datagram to ``address``.

        ``address`` is a path, ``"@name"`` or a :class:`~sockit.addr.SocketAddress` of
        a UNIX socket (what :meth:`recvfrom` returns). Raises ``FileNotFoundError`` if
        nothing exists at the path, ``ConnectionRefusedError`` if no socket is bound there,
        :class:`~sockit.errors.DatagramTooLarge`, ``TimeoutError`` while the
        receiver's queue stays full, :class:`~sockit.errors.AddressError` for an
        unnamed peer or an unusable path.
        """
        if self._closed:
            raise ClosedResourceError("sendto on a closed socket")
        seconds, deadline = self._checked_deadline(timeout)
        self._send_raw(
            data,
            sockaddr=_unix_destination(address),
            limit=None,
            deadline=deadline,
            seconds=seconds,
            operation="sendto",
        )

    def recvfrom(
        self, max_bytes: int = _DEFAULT_MAX_BYTES, *, timeout: float | None = None
    ) -> tuple[bytes, SocketAddress]:
        """Receive one datagram and its sender.

        The contract of :meth:`UDPSocket.recvfrom`: empty datagrams are data, a
        datagram longer than ``max_bytes`` raises
        :class:`~sockit.errors.DatagramTruncated`. Unnamed senders have ``path == ""``.
        """
        data, address = self._recvfrom_raw(max_bytes, timeout, "recvfrom")
        return data, self._sender(address)

    @property
    def path_owner(self) -> UnixPathOwner | None:
        """Who removes the socket file on close (``None``: no file of ours)."""
        return self._path_owner

    def _release_name(self) -> None:
        # Before the socket is closed: while it is bound, the socket pins the file's
        # inode, so its number cannot have been reused by a file someone else made.
        if self._path_owner is not None:
            self._path_owner.remove()


def _unix_destination(address: object) -> str | bytes:
    if isinstance(address, SocketAddress):
        if address.family != socket.AF_UNIX:
            raise AddressError(f"cannot send to {address} from a UNIX socket")
        if not address.path:
            raise AddressError(
                "the peer is unnamed (it never bound an address), so it cannot be sent to"
            )
        return unix_sockaddr(address.path)
    if isinstance(address, str):
        return unix_sockaddr(address)
    raise TypeError(f"address must be a path, '@name' or a SocketAddress, not {address!r}")


# --- opening --------------------------------------------------------------------------


def open_udp(
    local_host: str | None = None,
    local_port: int | str = 0,
    *,
    remote: tuple[str, int | str] | str | None = None,
    family: int | None = None,
    reuse_port: bool = False,
) -> UDPSocket:
    """Open a UDP socket.

    * ``open_udp()`` / ``open_udp(local_port=P)``: bound to every local address on
      port ``P`` (0: any free port): one dual-stack IPv6 socket (``IPV6_V6ONLY=0``)
      that talks to IPv4 and IPv6 peers, or IPv4 only where IPv6 is unavailable.
      ``family=AF_INET6`` makes it IPv6 only, ``family=AF_INET`` IPv4 only.
    * ``open_udp(host, port)``: bound to ``host`` (resolved with ``AI_PASSIVE``; the
      first answer that can be bound).
    * ``remote=(host, port)`` or ``remote="host:port"``: connected to that peer (UDP
      ``connect`` only sets the default destination and filters what is received).
      The answers are tried in RFC 8305 order until a socket of that family can be
      created, bound (to ``local_host``/``local_port`` if given) and connected.

    Hosts and ports are checked (:func:`~sockit.addr.check_host`,
    :func:`~sockit.addr.parse_port`) before anything is looked up. ``reuse_port``
    sets ``SO_REUSEPORT`` so several sockets (processes) can share the port.

    Raises :class:`~sockit.errors.AddressError` for malformed input,
    :class:`~sockit.errors.ResolutionError` for names that do not resolve,
    ``OSError`` from ``bind`` (``EADDRINUSE``...), and
    :class:`~sockit.errors.ConnectError` naming every address tried if none could be
    connected.
    """
    local_port_number = parse_port(local_port, protocol="udp")
    local = None if local_host is None else check_host(local_host)
    lookup_family = _check_family(family)
    if remote is not None:
        remote_host, remote_port = _parse_remote(remote)
        return _open_connected(
            remote_host,
            remote_port,
            local_host=local,
            local_port=local_port_number,
            family=lookup_family,
            reuse_port=reuse_port,
        )
    if local is None:
        return _open_wildcard(local_port_number, lookup_family, reuse_port=reuse_port)
    return _open_bound(local, local_port_number, lookup_family, reuse_port=reuse_port)


def _check_family(family: int | None) -> int:
    if family is None or family == 0:
        return 0
    if family in (socket.AF_INET, socket.AF_INET6):
        return family
    raise ValueError(f"family must be None, AF_INET or AF_INET6, not {family!r}")


def _parse_remote(remote: tuple[str, int | str] | str) -> tuple[str, int]:
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


def _new_socket(family: int, *, reuse_port: bool) -> socket.socket:
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
    sock = SYSTEM_SOCKET_FACTORY.socket(family, socket.SOCK_DGRAM)
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


def _open_wildcard(port: int, family: int, *, reuse_port: bool) -> UDPSocket:
    if family in (0, socket.AF_INET6):
        try:
            sock = _new_socket(socket.AF_INET6, reuse_port=reuse_port)
        except OSError as error:
            if family == socket.AF_INET6 or error.errno not in _FAMILY_UNAVAILABLE:
                raise
        else:
            try:
                # Dual-stack unless IPv6 was asked for explicitly: one socket, one port,
                # both families (RFC 3493 section 5.3); the system default varies
                # (net.ipv6.bindv6only), so it is always set.
                v6only = 1 if family == socket.AF_INET6 else 0
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
                _bind(sock, ("::", port))
                return UDPSocket(sock)
            except OSError as error:
                sock.close()
                if family == socket.AF_INET6 or error.errno not in _FAMILY_UNAVAILABLE:
                    raise
            except BaseException:
                sock.close()
                raise
    sock = _new_socket(socket.AF_INET, reuse_port=reuse_port)
    try:
        _bind(sock, ("0.0.0.0", port))
        return UDPSocket(sock)
    except BaseException:
        sock.close()
        raise


def _open_bound(host: str, port: int, family: int, *, reuse_port: bool) -> UDPSocket:
    infos = default_resolver().getaddrinfo(
        host, port, family=family, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    first_error: OSError | None = None
    for info in infos:
        try:
            sock = _new_socket(info.family, reuse_port=reuse_port)
        except OSError as error:
            if error.errno not in _FAMILY_UNAVAILABLE:
                raise
            first_error = first_error or error
            continue
        try:
            if info.family == socket.AF_INET6 and info.sockaddr[0] == "::":
                sock.setsockopt(
                    socket.IPPROTO_IPV6,
                    socket.IPV6_V6ONLY,
                    1 if family == socket.AF_INET6 else 0,
                )
            _bind(sock, info.sockaddr)
            return UDPSocket(sock)
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


def _open_connected(
    remote_host: str,
    remote_port: int,
    *,
    local_host: str | None,
    local_port: int,
    family: int,
    reuse_port: bool,
) -> UDPSocket:
    resolver = default_resolver()
    remote_infos = order_addresses(
        resolver.getaddrinfo(remote_host, remote_port, family=family, type=socket.SOCK_DGRAM)
    )
    local_infos: list[AddrInfo] | None = None
    if local_host is not None:
        local_infos = resolver.getaddrinfo(
            local_host, local_port, family=family, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    started = time.monotonic()
    attempts: list[ConnectAttempt] = []
    last_error: OSError | None = None
    for info in remote_infos:
        try:
            return _connect_one(info, local_infos, local_port=local_port, reuse_port=reuse_port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise  # the local port is taken: no other remote address changes that
            attempts.append(ConnectAttempt(str(info.address), error, time.monotonic() - started))
            last_error = error
    raise connect_error_from_attempts(remote_host, remote_port, attempts) from last_error


def _connect_one(
    remote: AddrInfo,
    local_infos: list[AddrInfo] | None,
    *,
    local_port: int,
    reuse_port: bool,
) -> UDPSocket:
    local: AddrInfo | None = None
    if local_infos is not None:
        local = next((info for info in local_infos if info.family == remote.family), None)
        if local is None:
            raise OSError(errno.EAFNOSUPPORT, "the local host has no address of this family")
    sock = _new_socket(remote.family, reuse_port=reuse_port)
    try:
        if local is not None:
            _bind(sock, local.sockaddr)
        elif local_port:
            wildcard = "::" if remote.family == socket.AF_INET6 else "0.0.0.0"
            _bind(sock, (wildcard, local_port))
        sock.connect(remote.sockaddr)
        return UDPSocket(sock)
    except BaseException:
        sock.close()
        raise


def open_unix_datagram(
    path: str | None = None,
    *,
    remote: str | None = None,
    mode: int | None = None,
) -> UnixDatagramSocket:
    """Open a UNIX datagram socket.

    * ``path``: bind there under the UNIX socket file rules (a stale socket file is
      replaced, a live one or a non-socket refused with ``EADDRINUSE``; ``"@name"`` is
      the Linux abstract namespace; ``mode`` sets the file's permissions atomically),
      see :func:`sockit.addr.unixpath.bind_unix`. ``close()`` removes the file.
    * no ``path``: on Linux the socket is bound to an automatic abstract name (unix(7)
      "autobind"), so peers can reply to it; elsewhere it stays unnamed.
    * ``remote``: connect to that path or ``"@name"``, making it the default peer for
      :meth:`~UnixDatagramSocket.send` and the only sender
      :meth:`~UnixDatagramSocket.recv` hears from.

    Raises :class:`~sockit.errors.AddressError` for empty or too long paths (before any
    file is touched), ``OSError(EADDRINUSE)`` for a path in use, ``FileNotFoundError``
    / ``ConnectionRefusedError`` if ``remote`` does not exist or nobody is bound there.
    """
    if path is not None:
        check_unix_path(path)
    remote_sockaddr = None if remote is None else unix_sockaddr(remote)
    if mode is not None and (path is None or path.startswith("@")):
        raise ValueError("mode= needs a filesystem path to apply to")
    sock = SYSTEM_SOCKET_FACTORY.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    owner: UnixPathOwner | None = None
    try:
        if path is not None:
            owner = bind_unix(sock, path, mode=mode)
        elif sys.platform.startswith("linux"):
            # An empty address makes Linux pick a unique abstract name (5 hex digits).
            sock.bind("")
        remote_address = None
        if remote is not None and remote_sockaddr is not None:
            sock.connect(remote_sockaddr)
            remote_address = SocketAddress(socket.AF_UNIX, path=remote)
        return UnixDatagramSocket(sock, path_owner=owner, remote_address=remote_address)
    except BaseException:
        if owner is not None:
            owner.remove()  # before close: the bound socket pins the file's inode
        sock.close()
        raise
