"""Async UDP sockets: :func:`open_udp` gives an :class:`AsyncUDPSocket`.

The async twin of ``sockit/sync/udp.py``'s UDP half, with the same promises, and the
same limits, destination rules, argument checks and socket set-up: those are
:mod:`sockit.addr.datagram`'s, written once for both:

* one send is one datagram and one receive returns one datagram; a zero-length
  datagram is data (``b""``), never EOF;
* a datagram larger than ``max_bytes`` raises :class:`~sockit.errors.DatagramTruncated`
  carrying the part that fit and the real size: it is never cut silently;
* a datagram too large to send raises :class:`~sockit.errors.DatagramTooLarge` with the
  limit (65,507 bytes over IPv4, 65,527 over IPv6), checked before sending;
* timeouts raise :class:`TimeoutError`; use after ``aclose()`` raises
  :class:`~sockit.errors.ClosedResourceError`; ICMP errors the kernel reports on a
  connected socket keep their built-in class (``ConnectionRefusedError``).

No datagram transport: ``loop.create_datagram_endpoint`` and ``loop.sock_recvfrom``
cannot report ``MSG_TRUNC`` (and uvloop has no ``sock_recvfrom`` at all). Each receive
is a non-blocking ``recvmsg_into(..., MSG_TRUNC)`` first; only when it would block does
the task wait for readability (``loop.add_reader``, removed as soon as nobody waits).
A busy socket is therefore served without touching the loop at all.

This module must never hand back a truncated datagram as if it were whole, treat an
empty datagram as EOF, block the loop on a name lookup, or wait longer than the timeout
it was given.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import TYPE_CHECKING, Any, NoReturn

from sockit.abc import AsyncDatagramSocket
from sockit.addr import AddrInfo, SocketAddress, check_host, order_addresses, parse_port
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
from sockit.aio._resolve import resolve
from sockit.aio._wait import FdWatch
from sockit.errors import (
    ClosedResourceError,
    DatagramTooLarge,
    DatagramTruncated,
    translate_os_error,
)
from sockit.proto.timeouts import resolve_timeout

if TYPE_CHECKING:
    from sockit.abc import Buffer

__all__ = ["IPV4_MAX_DATAGRAM", "IPV6_MAX_DATAGRAM", "AsyncUDPSocket", "open_udp"]


class AsyncUDPSocket(AsyncDatagramSocket):
    """A UDP socket over IPv4 or IPv6 on the running loop; see :func:`open_udp`.

    ``AsyncUDPSocket(sock)`` wraps an already created ``AF_INET``/``AF_INET6``
    ``SOCK_DGRAM`` socket, which it then owns (and makes non-blocking).

    Addresses are :class:`~sockit.addr.SocketAddress` values; IPv4 peers of a
    dual-stack IPv6 socket are reported as IPv4 (not ``::ffff:a.b.c.d``), and IPv4
    destinations may be given to it directly. ``timeout`` is the default of every call
    (``None``: wait forever). Several tasks may send and receive at once.
    """

    __slots__ = (
        "_closed",
        "_destination_cache",
        "_dual_stack",
        "_family",
        "_local_address",
        "_read_watch",
        "_receive_buffer",
        "_remote_address",
        "_sender_cache",
        "_socket",
        "_write_watch",
        "timeout",
    )

    def __init__(self, sock: socket.socket, *, timeout: float | None = None) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"AsyncUDPSocket needs a SOCK_DGRAM socket, not {sock.type!r}")
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(
                f"AsyncUDPSocket needs an AF_INET or AF_INET6 socket, not {sock.family!r}"
            )
        resolve_timeout(timeout, None)  # validate early
        self.timeout: float | None = timeout
        """Default timeout in seconds of every call (``None``: wait forever)."""
        self._socket = sock
        self._family = socket.AddressFamily(sock.family)
        self._closed = False
        sock.setblocking(False)
        self._read_watch = FdWatch([sock.fileno()], writable=False)
        self._write_watch = FdWatch([sock.fileno()], writable=True)
        # One receive buffer, reused: between the recvmsg_into and the copy out of it
        # nothing awaits, so concurrent receivers never share it at the same time.
        self._receive_buffer = bytearray(DEFAULT_MAX_BYTES)
        # (raw sockaddr, SocketAddress) of the last sender: a peer usually sends many
        # datagrams, and building the value costs more than the receive itself.
        self._sender_cache: tuple[Any, SocketAddress] | None = None
        # (SocketAddress, sockaddr, limit) of the last destination, keyed by identity.
        self._destination_cache: tuple[SocketAddress, Any, int] | None = None
        self._local_address = SocketAddress.from_sockaddr(self._family, sock.getsockname())
        self._dual_stack = is_dual_stack(sock)
        self._remote_address = peer_address(sock)

    # --- addresses and raw access ---------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options sockit does not wrap. It is non-blocking
        and must stay so; do not close it directly."""
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        peer = f" -> {self._remote_address}" if self._remote_address is not None else ""
        return f"<AsyncUDPSocket {self._local_address}{peer}{state}>"

    # --- receiving ------------------------------------------------------------------

    async def recvfrom(
        self, max_bytes: int = DEFAULT_MAX_BYTES, *, timeout: float | None = None
    ) -> tuple[bytes, SocketAddress]:
        """Receive one datagram and its sender.

        Returns ``(data, sender)``; ``data`` is ``b""`` for a zero-length datagram,
        which is data like any other (UDP has no EOF). A datagram longer than
        ``max_bytes`` is consumed and raises :class:`~sockit.errors.DatagramTruncated`
        with the first ``max_bytes`` bytes, the real size and the sender. The default
        ``max_bytes`` holds any UDP datagram. ``TimeoutError`` if none arrives in time;
        ``ConnectionRefusedError`` on a connected socket after an ICMP "port
        unreachable".
        """
        data, address = await self._recvfrom_raw(max_bytes, timeout, "recvfrom")
        return data, self._sender(address)

    async def recv(
        self, max_bytes: int = DEFAULT_MAX_BYTES, *, timeout: float | None = None
    ) -> bytes:
        """Receive one datagram's payload (``b""`` for a zero-length datagram, not EOF).

        Meant for connected sockets (the kernel then only delivers datagrams from the
        peer); on an unconnected socket it returns the next datagram from anyone.
        Errors as :meth:`recvfrom`.
        """
        data, _ = await self._recvfrom_raw(max_bytes, timeout, "recv")
        return data

    async def _recvfrom_raw(
        self, max_bytes: int, timeout: float | None, operation: str
    ) -> tuple[bytes, Any]:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        if self._closed:
            raise ClosedResourceError(f"{operation} on a closed socket")
        seconds = resolve_timeout(timeout, self.timeout)
        deadline: float | None = None
        deadline_known = False
        if len(self._receive_buffer) < max_bytes:
            self._receive_buffer = bytearray(max_bytes)
        while True:
            buffer = self._receive_buffer
            try:
                with memoryview(buffer) as view, view[:max_bytes] as target:
                    # MSG_TRUNC in *flags* makes Linux return the datagram's real length
                    # even when it was longer than the buffer (recv(2), udp(7)); in the
                    # returned msg_flags it says the datagram was cut.
                    size, _, flags, address = self._socket.recvmsg_into((target,), 0, MSG_TRUNC)
                    data = bytes(target[: min(size, max_bytes)])
                break
            except BlockingIOError:
                if not deadline_known:
                    deadline_known = True
                    if seconds is not None:
                        deadline = asyncio.get_running_loop().time() + seconds
                await self._read_watch.wait(deadline, operation)
                if self._closed:
                    raise ClosedResourceError(
                        f"{operation} interrupted: the socket was closed"
                    ) from None
            except OSError as error:
                self._raise(error, operation)
        if flags & MSG_TRUNC:
            # Where the kernel does not report the real length, ``size`` is what fit:
            # the best lower bound there is.
            raise DatagramTruncated(data, max(size, len(data)), self._sender(address))
        return data, address

    def _sender(self, address: Any) -> SocketAddress:
        cached = self._sender_cache
        if cached is not None and cached[0] == address:
            return cached[1]
        if address is None:
            # Only a shut-down socket returns no sender (IP always has one).
            raise ClosedResourceError("recvfrom on a socket that was shut down")
        sender = SocketAddress.from_sockaddr(self._family, address)
        self._sender_cache = (address, sender)
        return sender

    # --- sending --------------------------------------------------------------------

    async def sendto(self, data: Buffer, address: object, *, timeout: float | None = None) -> None:
        """Send one datagram to ``address``.

        ``address`` is a :class:`~sockit.addr.SocketAddress` (what :meth:`recvfrom`
        returns: no lookup) or a ``(host, port)`` tuple, where a name is resolved on
        every call without blocking the loop (the lookup counts against ``timeout``; IP
        literals need no lookup) and the first answer is used. An IPv4 address works on
        a dual-stack IPv6 socket.

        Raises :class:`~sockit.errors.DatagramTooLarge` (size and limit) if the datagram
        cannot be sent in one piece, :class:`~sockit.errors.AddressError` for an address
        of a family this socket cannot reach (and for malformed hosts and ports),
        :class:`~sockit.errors.ResolutionError` for names that do not resolve,
        ``TimeoutError`` if the lookup or a full send buffer outlasts the timeout.
        Sending to a port where nobody listens is not an error (UDP has no handshake).
        """
        if self._closed:
            raise ClosedResourceError("sendto on a closed socket")
        seconds = resolve_timeout(timeout, self.timeout)
        cached = self._destination_cache
        if cached is not None and cached[0] is address:
            _, sockaddr, limit = cached
        else:
            destination = await self._destination(address, seconds)
            sockaddr, limit = destination_sockaddr(
                destination,
                family=self._family,
                dual_stack=self._dual_stack,
                local_address=self._local_address,
            )
            if destination is address:
                self._destination_cache = (destination, sockaddr, limit)
        await self._send_raw(data, sockaddr, limit, seconds, "sendto")

    async def send(self, data: Buffer, *, timeout: float | None = None) -> None:
        """Send one datagram to the peer of a connected socket.

        Raises ``OSError(EDESTADDRREQ)`` on an unconnected socket (use :meth:`sendto`),
        :class:`~sockit.errors.DatagramTooLarge` if it cannot be sent in one piece,
        ``ConnectionRefusedError`` if an ICMP error for an earlier send is pending,
        ``TimeoutError`` if the send buffer stays full.
        """
        if self._closed:
            raise ClosedResourceError("send on a closed socket")
        remote = self._remote_address
        if remote is None:
            raise OSError(
                errno.EDESTADDRREQ,
                "send() needs a connected socket: use sendto(data, address), or open "
                "the socket with remote=",
            )
        limit = datagram_limit(remote)
        await self._send_raw(data, None, limit, resolve_timeout(timeout, self.timeout), "send")

    async def _send_raw(
        self, data: Buffer, sockaddr: Any, limit: int, seconds: float | None, operation: str
    ) -> None:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > limit:
            raise DatagramTooLarge(size, limit)
        deadline: float | None = None
        deadline_known = False
        while True:
            if self._closed:
                raise ClosedResourceError(f"{operation} on a closed socket")
            try:
                if sockaddr is None:
                    self._socket.send(data)
                else:
                    self._socket.sendto(data, sockaddr)
            except BlockingIOError:
                if not deadline_known:
                    deadline_known = True
                    if seconds is not None:
                        deadline = asyncio.get_running_loop().time() + seconds
                await self._write_watch.wait(deadline, operation)
            except OSError as error:
                if error.errno == errno.EMSGSIZE and not self._closed:
                    # Past our own check: the kernel's limit is lower (a send buffer
                    # smaller than the datagram); its exact value is not known here.
                    raise DatagramTooLarge(size, None) from error
                self._raise(error, operation)
            else:
                return

    async def _destination(self, address: object, seconds: float | None) -> SocketAddress:
        if isinstance(address, SocketAddress):
            return address
        if isinstance(address, tuple) and len(address) == 2:
            host, port = address
            if not isinstance(host, str):
                raise TypeError(f"host must be a str, not {type(host).__name__}")
            port_number = parse_port(port, protocol="udp")
            checked = check_host(host)
            family = 0 if self._dual_stack else self._family
            infos = await resolve(
                None,
                checked,
                port_number,
                family=family,
                type=socket.SOCK_DGRAM,
                timeout=seconds,
                display_host=host,
            )
            return infos[0].address
        raise TypeError(f"address must be a SocketAddress or a (host, port) tuple, not {address!r}")

    # --- closing --------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the socket. Idempotent, never raises for a closed socket.

        Tasks waiting on this socket wake up and raise
        :class:`~sockit.errors.ClosedResourceError`; so does every later call.
        """
        self.close_now()

    def close_now(self) -> None:
        """What :meth:`aclose` does, without awaiting (for synchronous callbacks on
        the loop's thread). Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Unregister from the loop before the fd goes away.
        self._read_watch.close()
        self._write_watch.close()
        self._socket.close()

    def _raise(self, error: OSError, operation: str) -> NoReturn:
        translated = translate_os_error(error, closed=self._closed, operation=operation)
        if translated is error:
            raise error
        raise translated from error


# --- opening --------------------------------------------------------------------------


async def open_udp(
    local_host: str | None = None,
    local_port: int | str = 0,
    *,
    remote: tuple[str, int | str] | str | None = None,
    family: int | None = None,
    reuse_port: bool = False,
) -> AsyncUDPSocket:
    """Open a UDP socket; the contract of :func:`sockit.open_udp`, awaited.

    * ``open_udp()`` / ``open_udp(local_port=P)``: bound to every local address on
      port ``P`` (0: any free port): one dual-stack IPv6 socket (``IPV6_V6ONLY=0``),
      or IPv4 only where IPv6 is unavailable. ``family=AF_INET6`` makes it IPv6 only,
      ``family=AF_INET`` IPv4 only.
    * ``open_udp(host, port)``: bound to ``host`` (resolved with ``AI_PASSIVE``; the
      first answer that can be bound).
    * ``remote=(host, port)`` or ``remote="host:port"``: connected to that peer. The
      answers are tried in RFC 8305 order until a socket of that family can be
      created, bound (to ``local_host``/``local_port`` if given) and connected.

    Hosts and ports are checked before anything is looked up; names are resolved
    without blocking the loop. Raises :class:`~sockit.errors.AddressError` for
    malformed input, :class:`~sockit.errors.ResolutionError` for names that do not
    resolve, ``OSError`` from ``bind`` (``EADDRINUSE``...), and
    :class:`~sockit.errors.ConnectError` naming every address tried if none could be
    connected.
    """
    local_port_number = parse_port(local_port, protocol="udp")
    local = None if local_host is None else check_host(local_host)
    lookup_family = check_family(family)
    if remote is not None:
        remote_host, remote_port = parse_remote(remote)
        return await _open_connected(
            remote_host,
            remote_port,
            local_host=local,
            local_port=local_port_number,
            family=lookup_family,
            reuse_port=reuse_port,
        )
    if local is None:
        return bind_wildcard(
            socket.socket, AsyncUDPSocket, local_port_number, lookup_family, reuse_port=reuse_port
        )
    return await _open_bound(local, local_port_number, lookup_family, reuse_port=reuse_port)


async def _open_bound(host: str, port: int, family: int, *, reuse_port: bool) -> AsyncUDPSocket:
    infos = await resolve(
        None, host, port, family=family, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    return bind_first(socket.socket, AsyncUDPSocket, host, infos, family, reuse_port=reuse_port)


async def _open_connected(
    remote_host: str,
    remote_port: int,
    *,
    local_host: str | None,
    local_port: int,
    family: int,
    reuse_port: bool,
) -> AsyncUDPSocket:
    remote_infos = order_addresses(
        await resolve(None, remote_host, remote_port, family=family, type=socket.SOCK_DGRAM)
    )
    local_infos: list[AddrInfo] | None = None
    if local_host is not None:
        local_infos = await resolve(
            None,
            local_host,
            local_port,
            family=family,
            type=socket.SOCK_DGRAM,
            flags=socket.AI_PASSIVE,
        )
    return connect_first(
        socket.socket,
        AsyncUDPSocket,
        remote_host,
        remote_port,
        remote_infos,
        local_infos=local_infos,
        local_port=local_port,
        reuse_port=reuse_port,
        clock=asyncio.get_running_loop().time,
    )
