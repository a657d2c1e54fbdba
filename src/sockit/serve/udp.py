"""serve_udp(): a datagram server, one handler call per datagram.

``serve_udp(handler, port)`` binds and returns a :class:`UDPServer`; ``serve_forever()``
(or ``start()`` for a background thread) then calls ``handler(data, sender, sock)`` for
every datagram, where ``sock`` is the :class:`~sockit.UDPSocket` it arrived on (reply
with ``sock.sendto(reply, sender)``). The lifecycle is that of
:class:`sockit.serve.Server`: ``addresses``, ``port``, ``start()``, ``serve_forever()``,
``shutdown()``, context manager.

What it promises:

* **Drains every ready datagram per wake-up.** After ``poll`` says a socket is readable
  it receives without blocking until the kernel has nothing more (``EAGAIN``), up to a
  batch of :data:`DEFAULT_BATCH` so several sockets (and shutdown) are served fairly,
  then polls again. A busy server makes one ``poll`` per batch, not per datagram.
* **Survives every datagram.** A handler exception is logged (at most one line per
  second, with a count of the ones left out) and the next datagram is served; ICMP
  errors the kernel reports for earlier sends (``ECONNREFUSED``...) are ignored per
  datagram, since UDP has no connection they could end.
* **Single thread.** The handler runs in the serving thread; a slow handler delays the
  next datagram (the kernel queues them, up to ``SO_RCVBUF``).
* **Graceful stop.** In the main thread, ``serve_forever`` turns the first SIGINT or
  SIGTERM into a stop after the current datagram and the second into
  ``KeyboardInterrupt``. ``shutdown()`` stops it from another thread.

Must never block in a receive (every receive is non-blocking after a poll), nor stop
serving because of one datagram or one handler call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, TypeAlias

from sockit.addr import SocketAddress, check_host, default_resolver, parse_port
from sockit.addr.datagram import bind_every_address
from sockit.errors import ClosedResourceError
from sockit.proto.access import AccessPolicy
from sockit.serve._signals import install_shutdown_handlers, signal_name
from sockit.serve.services import udp_echo
from sockit.sync import UDPSocket, open_udp
from sockit.sync.factory import SYSTEM_SOCKET_FACTORY

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType

__all__ = ["DEFAULT_BATCH", "DatagramHandler", "UDPServer", "UDPServerStats", "serve_udp"]

DatagramHandler: TypeAlias = Callable[[bytes, SocketAddress, UDPSocket], None]
"""The handler's type: ``handler(data, sender, sock) -> None``."""

DEFAULT_BATCH = 64
"""Datagrams received from one socket per wake-up before polling again. Large enough
that a busy socket costs one poll per 64 datagrams (recvmmsg(2) servers batch 32-64),
small enough that another socket or a shutdown waits at most one batch."""

# Largest UDP payload (65507 over IPv4, 65527 over IPv6) fits: nothing is ever cut.
_RECEIVE_SIZE = 65536
# Senders remembered with their SocketAddress, so a busy peer's address is converted
# once, not per datagram. Cleared when full: a scan of many peers costs a conversion
# each, never unbounded memory.
_SENDER_CACHE_SIZE = 4096
# Errors a receive on an unconnected UDP socket can report that concern one earlier
# datagram or peer (ICMP errors queued by the kernel), never the socket itself.
_PER_DATAGRAM_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EMSGSIZE,
        errno.ETIMEDOUT,
        errno.EPROTO,
    }
)
# One line per second at most about failing handlers (a flood of bad datagrams must not
# become a flood of log lines).
_LOG_INTERVAL = 1.0


@dataclasses.dataclass
class UDPServerStats:
    """Counters of a :class:`UDPServer` (updated by the serving thread)."""

    received: int = 0
    """Datagrams received and handed to the handler."""
    errors: int = 0
    """Handler calls that raised (ICMP errors included)."""
    refused: int = 0
    """Datagrams dropped because the access policy (``allow``/``deny``) refused the
    sender."""


class UDPServer:
    """Bound UDP socket(s) and a handler; see the module docstring.

    Returned bound by :func:`serve_udp` (``addresses`` known) and not yet serving.
    Owns its sockets: ``shutdown()`` (or leaving the ``with`` block) closes them.
    """

    def __init__(
        self,
        handler: DatagramHandler,
        sockets: Sequence[UDPSocket],
        *,
        logger: logging.Logger | None = None,
        batch: int = DEFAULT_BATCH,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] | None = None,
    ) -> None:
        if not sockets:
            raise ValueError("a UDP server needs at least one socket")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, not {batch}")
        self._policy = (
            None if allow is None and deny is None else AccessPolicy(allow=allow, deny=deny)
        )
        self._handler = handler
        self._sockets = list(sockets)
        self._logger = logger or logging.getLogger("sockit.serve")
        self._batch = batch
        self.stats = UDPServerStats()
        self._stopping = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._finished = threading.Event()
        self._signals_received: list[int] = []
        # raw sockaddr -> (SocketAddress, permitted by the access policy)
        self._senders: dict[Any, tuple[SocketAddress, bool]] = {}
        self._suppressed = 0
        self._last_log = -_LOG_INTERVAL
        # A pipe whose read end is polled with the sockets: shutdown() and signal
        # handlers write a byte to end the wait at once.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    # --- what it is bound to -------------------------------------------------------------

    @property
    def sockets(self) -> list[UDPSocket]:
        """The UDP sockets served (do not close them; shut the server down)."""
        return list(self._sockets)

    @property
    def addresses(self) -> list[SocketAddress]:
        """The real bound address of every socket (port 0 already resolved)."""
        return [sock.local_address for sock in self._sockets]

    @property
    def port(self) -> int:
        """The port the sockets are bound to."""
        return self._sockets[0].local_address.port

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<UDPServer {', '.join(map(str, self.addresses))} {state}>"

    # --- running -------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve datagrams until :meth:`shutdown` or a stop signal; then close.

        In the main thread, SIGINT/SIGTERM handlers are installed for the duration:
        the first signal stops after the current datagram, the second raises
        ``KeyboardInterrupt`` at once. Raises ``RuntimeError`` if already serving.
        """
        with self._lock:
            if self._serving:
                raise RuntimeError("this UDP server is already serving")
            if self._closed:
                raise RuntimeError("this UDP server was shut down")
            self._serving = True
        restore = None
        if threading.current_thread() is threading.main_thread():
            restore = install_shutdown_handlers(self._on_signal)
        try:
            self._loop()
            if self._signals_received:
                self._logger.info(
                    "%s: the UDP server stops",
                    signal_name(self._signals_received[0]),
                    extra={"event": "stop"},
                )
        finally:
            if restore is not None:
                restore()
            self._finished.set()
            self._close()

    def start(self) -> None:
        """Run :meth:`serve_forever` in a background thread (for tests and embedding)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("this UDP server was already started")
            self._thread = threading.Thread(
                target=self.serve_forever, name="sockit-udp-server", daemon=True
            )
        self._thread.start()

    def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop serving and close the sockets. Idempotent.

        The datagram being handled is allowed to finish for up to ``drain_timeout``
        seconds (default 10); after that the sockets are closed under the handler
        (its next send raises ``ClosedResourceError``). Joins the background thread
        of :meth:`start`.
        """
        self._request_stop()
        with self._lock:
            serving = self._serving
        if serving and threading.current_thread() is not self._thread:
            if not self._finished.wait(10.0 if drain_timeout is None else drain_timeout):
                # The handler is stuck: closing the sockets makes its next send or
                # receive raise ClosedResourceError, which ends the loop.
                for sock in self._sockets:
                    sock.close()
                self._finished.wait(10.0)
            if self._thread is not None:
                self._thread.join(10.0)
        if not serving or self._finished.is_set():
            self._close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    # --- internals -------------------------------------------------------------------------

    def _request_stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in self._sockets:
            sock.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _loop(self) -> None:
        poller = select.poll()
        by_fd: dict[int, UDPSocket] = {}
        for sock in self._sockets:
            by_fd[sock.fileno()] = sock
            poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        stopping = self._stopping
        while not stopping.is_set():
            for fd, _ in poller.poll():
                ready = by_fd.get(fd)
                if ready is not None:
                    self._drain(ready)
                if stopping.is_set():
                    return

    def _drain(self, sock: UDPSocket) -> None:
        """Receive and handle every ready datagram, at most one batch."""
        raw = sock.socket
        recvfrom = raw.recvfrom
        handler = self._handler
        senders = self._senders
        family = raw.family
        stats = self.stats
        stopping = self._stopping
        echo = handler is udp_echo
        sendto = raw.sendto
        for _ in range(self._batch):
            try:
                data, raw_sender = recvfrom(_RECEIVE_SIZE)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in _PER_DATAGRAM_ERRNOS:
                    continue
                if sock.fileno() < 0 or stopping.is_set():
                    return
                raise
            known = senders.get(raw_sender)
            if known is None:
                if len(senders) >= _SENDER_CACHE_SIZE:
                    senders.clear()
                known = senders[raw_sender] = self._classify(family, raw_sender, sock)
            sender, permitted = known
            if not permitted:
                stats.refused += 1
                continue
            stats.received += 1
            if echo:
                # The built-in echo: the reply goes back to the address exactly as the
                # kernel gave it, without the generic send path's conversions.
                try:
                    sendto(data, raw_sender)
                except OSError as error:
                    if error.errno not in _PER_DATAGRAM_ERRNOS:  # not an old ICMP error
                        stats.errors += 1
                        self._log_failure(error, sender)
                continue
            try:
                handler(data, sender, sock)
            except Exception as error:  # noqa: BLE001 (one datagram must not stop the server)
                stats.errors += 1
                if not (stopping.is_set() and isinstance(error, ClosedResourceError)):
                    self._log_failure(error, sender)
            if stopping.is_set():
                return

    def _classify(
        self, family: int, raw_sender: Any, sock: UDPSocket
    ) -> tuple[SocketAddress, bool]:
        """A new sender (first datagram, or first since the cache was cleared): its
        address, whether the policy permits it, and one debug line (``sockit serve -v``
        shows each peer once, as it shows each TCP connection)."""
        sender = SocketAddress.from_sockaddr(family, raw_sender)
        policy = self._policy
        permitted = policy is None or policy.permits(sender.host)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(
                "%s datagrams from %s -> %s",
                "serving" if permitted else "refused (access policy):",
                sender,
                sock.local_address,
                extra={"event": "udp_peer", "peer": str(sender), "permitted": permitted},
            )
        return sender, permitted

    def _log_failure(self, error: Exception, sender: SocketAddress) -> None:
        if isinstance(error, OSError) and error.errno in _PER_DATAGRAM_ERRNOS:
            self._logger.debug("UDP reply to %s failed: %s", sender, error)
            return
        now = time.monotonic()
        if now - self._last_log < _LOG_INTERVAL:
            self._suppressed += 1
            return
        suppressed, self._suppressed = self._suppressed, 0
        self._last_log = now
        more = f" ({suppressed} more failures not logged)" if suppressed else ""
        self._logger.error(
            "UDP handler failed for a datagram from %s%s",
            sender,
            more,
            exc_info=error,
            extra={"event": "handler_error", "peer": str(sender)},
        )

    def _on_signal(self, signum: int) -> None:
        # Runs in the main thread between two bytecodes: record and wake, nothing else
        # (no lock, no logging; see sockit.serve._signals).
        self._signals_received.append(signum)
        if len(self._signals_received) > 1:
            raise KeyboardInterrupt(signal_name(signum))
        self._request_stop()


def serve_udp(
    handler: DatagramHandler,
    port: int | str = 0,
    host: str | None = None,
    *,
    family: int | None = None,
    reuse_port: bool = False,
    sock: UDPSocket | None = None,
    allow: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
    logger: logging.Logger | None = None,
    batch: int = DEFAULT_BATCH,
) -> UDPServer:
    """Bind UDP socket(s) and return a :class:`UDPServer` that is not yet serving.

    With no ``host``: one dual-stack socket for IPv4 and IPv6 on ``port`` (IPv4 peers
    reported as IPv4), as :func:`sockit.open_udp` does. With a ``host``: a socket per
    address it resolves to (``localhost``: ``127.0.0.1`` and ``::1``), on one port.
    ``sock=`` serves an existing :class:`~sockit.UDPSocket` instead of binding (the
    server then owns it). ``family`` limits the addresses (``AF_INET``/``AF_INET6``);
    ``reuse_port`` sets ``SO_REUSEPORT`` for several server processes on one port.
    ``allow``/``deny`` are address/CIDR lists (:class:`sockit.proto.access.AccessPolicy`
    rules: deny wins, an allow list admits only its members); datagrams from other
    senders are dropped unanswered and counted in ``stats.refused``.

    Raises what binding raises (``OSError`` with ``EADDRINUSE``...,
    :class:`~sockit.errors.AddressError`, :class:`~sockit.errors.ResolutionError`);
    nothing stays open then.
    """
    if sock is not None:
        return UDPServer(handler, [sock], logger=logger, batch=batch, allow=allow, deny=deny)
    port_number = parse_port(port, protocol="udp")
    if host is None:
        sockets = [open_udp(None, port_number, family=family, reuse_port=reuse_port)]
    else:
        sockets = _bind_every_address(host, port_number, family, reuse_port=reuse_port)
    try:
        return UDPServer(handler, sockets, logger=logger, batch=batch, allow=allow, deny=deny)
    except BaseException:
        for opened in sockets:
            opened.close()
        raise


def _bind_every_address(
    host: str, port: int, family: int | None, *, reuse_port: bool
) -> list[UDPSocket]:
    infos = default_resolver().getaddrinfo(
        check_host(host),
        port,
        family=family or 0,
        type=socket.SOCK_DGRAM,
        flags=socket.AI_PASSIVE,
    )
    return bind_every_address(
        SYSTEM_SOCKET_FACTORY.socket, UDPSocket, host, infos, port, reuse_port=reuse_port
    )
