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

The size limits, which destinations a socket can reach, the checks of ``open_udp``'s
arguments and how its sockets are created, bound and connected are
:mod:`sockit.addr.datagram`'s, shared with the async twin; this module receives, sends
and waits.

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
    SocketAddress,
    check_host,
    default_resolver,
    order_addresses,
    parse_port,
)
from sockit.addr.datagram import (
    DEFAULT_MAX_BYTES,
    IPV4_MAX_DATAGRAM,
    IPV6_MAX_DATAGRAM,
    MSG_TRUNC,
    bind_first,
    bind_wildcard,
    check_family,
    connect_first,
    datagram_limit,
    destination_sockaddr,
    is_dual_stack,
    parse_remote,
    peer_address,
)
from sockit.addr.unixpath import UnixPathOwner, bind_unix, check_unix_path, unix_sockaddr
from sockit.errors import (
    AddressError,
    ClosedResourceError,
    DatagramTooLarge,
    DatagramTruncated,
)
from sockit.proto.timeouts import resolve_timeout
from sockit.sync._errors import raise_translated
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

# poll(2) takes an int of milliseconds; a very long wait is done in pieces of a day.
_MAX_POLL_MILLISECONDS = 86_400_000

# An unconnected AF_UNIX datagram sender whose receiver's queue is full gets EAGAIN
# although poll() says "writable" (Linux only tracks the receiver of a *connected*
# socket, see unix_dgram_poll in net/unix/af_unix.c), so no event says when to retry.
# Retry with a bounded exponential backoff instead of spinning.
_SEND_BACKOFF_FIRST = 0.001
_SEND_BACKOFF_MAX = 0.05


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
        self._remote_address = remote_address if remote_address is not None else peer_address(sock)

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
                    size, _, flags, address = self._socket.recvmsg_into((target,), 0, MSG_TRUNC)
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
        if flags & MSG_TRUNC:
            # Where the kernel does not report the real length, ``size`` is what fit:
            # the best lower bound there is.
            raise DatagramTruncated(data, max(size, len(data)), self._sender(address))
        return data, address

    def _take_buffer(self, max_bytes: int) -> bytearray:
        try:
            buffer = self._buffers.pop()
        except IndexError:
            return bytearray(max(max_bytes, DEFAULT_MAX_BYTES))
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

    def recv(self, max_bytes: int = DEFAULT_MAX_BYTES, *, timeout: float | None = None) -> bytes:
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
        self._dual_stack = is_dual_stack(sock)
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
            sockaddr, limit = destination_sockaddr(
                destination,
                family=self._family,
                dual_stack=self._dual_stack,
                local_address=self._local_address,
            )
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
        self, max_bytes: int = DEFAULT_MAX_BYTES, *, timeout: float | None = None
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

    def _connected_limit(self) -> int | None:
        remote = self._remote_address
        return IPV4_MAX_DATAGRAM if remote is None else datagram_limit(remote)


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
        self, max_bytes: int = DEFAULT_MAX_BYTES, *, timeout: float | None = None
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
    lookup_family = check_family(family)
    if remote is not None:
        remote_host, remote_port = parse_remote(remote)
        return _open_connected(
            remote_host,
            remote_port,
            local_host=local,
            local_port=local_port_number,
            family=lookup_family,
            reuse_port=reuse_port,
        )
    if local is None:
        return bind_wildcard(
            _new_socket, UDPSocket, local_port_number, lookup_family, reuse_port=reuse_port
        )
    return _open_bound(local, local_port_number, lookup_family, reuse_port=reuse_port)


def _new_socket(family: int, type: int, proto: int) -> socket.socket:
    return SYSTEM_SOCKET_FACTORY.socket(family, type, proto)


def _open_bound(host: str, port: int, family: int, *, reuse_port: bool) -> UDPSocket:
    infos = default_resolver().getaddrinfo(
        host, port, family=family, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    return bind_first(_new_socket, UDPSocket, host, infos, family, reuse_port=reuse_port)


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
    return connect_first(
        _new_socket,
        UDPSocket,
        remote_host,
        remote_port,
        remote_infos,
        local_infos=local_infos,
        local_port=local_port,
        reuse_port=reuse_port,
        clock=time.monotonic,
    )


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
