"""The UDP side of the relay: ``udp-listen:[HOST:]PORT`` to ``udp:HOST:PORT`` or
``unix-dgram:PATH``, one upstream socket (a *session*) per client address.

UDP has no connections, so the relay makes its own: the first datagram from a client
address ``(host, port)`` it has not seen (or no longer remembers) opens a session, a
new socket *connected* to the target, so the target sees one distinct source address
per client and the kernel filters out datagrams from anyone but the target. Datagrams
from the client go out on that socket; datagrams arriving on it go back to that client
from the listening socket (``sendto``). :class:`UDPSessionRelay` does this on the
running event loop (asyncio's or uvloop) with ``add_reader`` on raw non-blocking
sockets: one callback per readiness, draining up to :data:`DEFAULT_BATCH` datagrams.

The contract:

* **Boundaries are kept**: one datagram in, one datagram out, byte-exact; a zero-length
  datagram is data and is relayed like any other (UDP has no EOF). Every receive has
  room for 65,536 bytes, so no UDP datagram is ever cut; a larger ``unix-dgram`` reply
  (which no UDP client could receive anyway) is dropped, never truncated.
* **Sessions expire**: a session with no datagram in either direction for
  ``idle_timeout`` seconds is closed, on time (one timer for the whole table, armed for
  the least recently active session; nothing is rescheduled per datagram).
* **The table is bounded**: at most ``max_sessions`` sessions (one fd each). A new
  client beyond that evicts the least recently active session. So does running out of
  file descriptors (``EMFILE``), once, before that client's datagram is dropped.
* **Per-datagram errors are never fatal**: an ICMP error from the target (port
  unreachable: ``ECONNREFUSED``), ``EMSGSIZE``, ``ENOBUFS``, a full socket buffer
  (``EAGAIN``; UDP may drop, it never waits) drop that one datagram and are counted in
  :attr:`UDPRelayStats.errors`. A session whose socket is broken for good (a
  ``unix-dgram`` target that went away disconnects it) is closed; the client's next
  datagram opens a new one.
* **Observable**: :attr:`UDPSessionRelay.stats`, and one debug line per session opened
  and closed (client address, counts, reason ``expired``/``evicted``/``closed``/
  ``error``) with ``extra={"event": ...}``; at most one line per second about a full
  table or dropped datagrams.

On uvloop, libuv stops watching an fd whose poll reports ``POLLERR`` (a connected UDP
socket does after an ICMP error) and calls the reader one last time; every socket
whose error we consume is therefore registered again on the next loop iteration, or
its session would silently stop delivering replies. Both loops run that same code.

This module must never block or wait for a datagram to be accepted (a send that would
block drops the datagram), never let one datagram or one client end the relay or
another session, never hold more than ``max_sessions`` sessions, and never leave a
socket open or registered with the loop after :meth:`UDPSessionRelay.aclose`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from sockit.addr import AddrInfo, SocketAddress, check_host, order_addresses
from sockit.addr.datagram import (
    DEFAULT_MAX_BYTES,
    MSG_TRUNC,
    bind_every_address,
    bind_wildcard,
    connect_first,
)
from sockit.addr.unixpath import unix_sockaddr
from sockit.aio._resolve import resolve
from sockit.errors import AddressError

if TYPE_CHECKING:
    from types import TracebackType

    from sockit.relay.grammar import EndpointSpec

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_SESSIONS",
    "UDPRelayStats",
    "UDPSessionRelay",
]

DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds a session may be idle in both directions before it is closed. Longer than
the 30 s keep-alive interval that UDP applications use to keep middlebox state (RFC
9000 section 10.1.2 reports that interval as what most middleboxes need), shorter than
the 2 minutes RFC 4787 (REQ-5) asks of NATs: each session holds a socket, and a scan
of many source ports should give its sockets back within a minute."""

DEFAULT_MAX_SESSIONS = 1024
"""Sessions at most (one fd each), unless the listen endpoint's ``max-conns`` says
otherwise: a flood of spoofed or scanning source addresses costs at most this many
fds; the least recently active session makes room for a new client."""

DEFAULT_BATCH = 64
"""Datagrams received from one socket per wake-up before the loop polls again (as
:data:`sockit.serve.udp.DEFAULT_BATCH`): a busy socket costs one poll per 64
datagrams, and a flood on one socket delays the others by one batch at most."""

_RECEIVE_SIZE = DEFAULT_MAX_BYTES
# Linux reports a datagram's real length with MSG_TRUNC even when the buffer is
# shorter (udp(7), unix(7)), so an oversized unix-dgram reply is recognised and
# dropped instead of being relayed cut. Elsewhere the flag means something else.
_RECEIVE_FLAGS = MSG_TRUNC if sys.platform.startswith("linux") else 0
# Linux gives an AF_UNIX socket bound to "" a unique abstract name (autobind,
# unix(7)): the target can then reply to a unix-dgram session without a file on disk.
# Elsewhere an unbound datagram socket cannot be replied to.
_AUTOBIND = sys.platform.startswith("linux")
# Notices about a full table or dropped datagrams: one line per second at most, so a
# flood of new clients or errors is not also a flood of log lines.
_NOTICE_INTERVAL = 1.0
# A sweep that finds the oldest session not quite due (a timer that fired a little
# early: uvloop rounds to milliseconds) waits at least this long before looking again.
_MIN_SWEEP_DELAY = 0.001
# Errors that concern one datagram, or the path to one peer, never the socket itself:
# ICMP errors the kernel queues on a connected socket (udp(7): reported by the next
# call), a datagram too large for the path, a full queue or device buffer.
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
        errno.ENOBUFS,
        errno.ENOMEM,
        errno.EPERM,  # a firewall rule refused this send (iptables REJECT/DROP output)
    }
)
_NO_FDS = frozenset({errno.EMFILE, errno.ENFILE})


@dataclass
class UDPRelayStats:
    """Counters of a :class:`UDPSessionRelay`, updated as datagrams are relayed."""

    sessions_opened: int = 0
    """Sessions opened (one per new client address)."""
    sessions_expired: int = 0
    """Sessions closed after ``idle_timeout`` without a datagram either way."""
    sessions_evicted: int = 0
    """Sessions closed to make room for a new client (table full, or no fds left)."""
    datagrams_in: int = 0
    """Datagrams from clients sent on to the target."""
    datagrams_out: int = 0
    """Datagrams from the target sent back to clients."""
    bytes_in: int = 0
    """Bytes of ``datagrams_in``."""
    bytes_out: int = 0
    """Bytes of ``datagrams_out``."""
    errors: int = 0
    """Datagrams dropped (ICMP errors reported, ``EMSGSIZE``, ``ENOBUFS``, a full
    buffer, a session that could not be opened, an oversized reply)."""
    active: int = 0
    """Sessions open now."""
    peak_active: int = 0
    """The most sessions ever open at once (never above ``max_sessions``)."""


class _Listener:
    """One bound listening socket."""

    __slots__ = ("address", "fd", "index", "sock")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.index = index
        self.address = SocketAddress.from_sockaddr(sock.family, sock.getsockname())


class _Session:
    """One client address and the upstream socket that relays for it."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "closed",
        "datagrams_in",
        "datagrams_out",
        "errors",
        "fd",
        "key",
        "last",
        "listener",
        "opened",
        "peer",
        "sock",
    )

    def __init__(
        self, key: object, peer: Any, listener: _Listener, sock: socket.socket, now: float
    ) -> None:
        self.key = key
        self.peer = peer  # the raw sockaddr, exactly as recvfrom gave it: sendto takes it
        self.listener = listener
        self.sock = sock
        self.fd = sock.fileno()
        self.opened = now
        self.last = now
        self.closed = False
        self.datagrams_in = self.datagrams_out = 0
        self.bytes_in = self.bytes_out = 0
        self.errors = 0

    def client(self) -> SocketAddress:
        """The client's address (IPv4-mapped addresses shown as IPv4), for messages."""
        return SocketAddress.from_sockaddr(self.listener.sock.family, self.peer)


def _own(sock: socket.socket) -> socket.socket:
    """The ``wrap`` for the shared datagram helpers: we keep the raw socket."""
    return sock


class UDPSessionRelay:
    """``udp-listen`` -> datagram target: one upstream socket per client address.

    ``listen`` must be a ``udp-listen`` endpoint, ``target`` a ``udp`` or
    ``unix-dgram`` one (``ValueError`` otherwise). ``idle_timeout`` defaults to the
    listen endpoint's ``idle-timeout``, else :data:`DEFAULT_IDLE_TIMEOUT`;
    ``max_sessions`` to its ``max-conns``, else :data:`DEFAULT_MAX_SESSIONS`. A
    target's ``bind=`` sets every session's local address; with a port it allows only
    one session, so it needs ``max_sessions=1`` (``AddressError`` otherwise).

    Lifecycle: :meth:`start` binds and returns the real addresses; the relay then
    serves from the loop's callbacks, and :meth:`serve_forever` waits until it is
    cancelled (or :meth:`aclose` is called); either way every socket is closed. Also an
    async context manager (``start``/``aclose``). One event loop, one relay object:
    not thread-safe.
    """

    def __init__(
        self,
        listen: EndpointSpec,
        target: EndpointSpec,
        *,
        idle_timeout: float | None = None,
        max_sessions: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if listen.kind != "udp-listen" or listen.port is None:
            raise ValueError(f"a UDP session relay listens on udp-listen:, not {listen}")
        if target.kind not in {"udp", "unix-dgram"}:
            raise ValueError(f"a UDP session relay sends to udp: or unix-dgram:, not {target}")
        if idle_timeout is None:
            idle_timeout = listen.options.idle_timeout
        if idle_timeout is None:
            idle_timeout = DEFAULT_IDLE_TIMEOUT
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, not {idle_timeout!r}")
        if max_sessions is None:
            max_sessions = listen.options.max_conns
        if max_sessions is None:
            max_sessions = DEFAULT_MAX_SESSIONS
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be an int >= 1, not {max_sessions!r}")
        bind = target.options.bind
        if bind is not None and bind.port != 0 and max_sessions != 1:
            raise AddressError(
                f"{target}: bind={bind} gives every session the same source port, so only "
                f"one session can exist; bind to port 0, or allow one session (max-conns=1)"
            )
        self.listen = listen
        """The listen endpoint."""
        self.target = target
        """The target endpoint."""
        self.idle_timeout: float = idle_timeout
        """Seconds without a datagram either way after which a session is closed."""
        self.max_sessions: int = max_sessions
        """Sessions at most; a new client beyond that evicts the least recently active."""
        self._logger = logger or logging.getLogger("sockit.relay")
        self._stats = UDPRelayStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[_Listener] = []
        # Least recently active first: activity moves a session to the end, so the
        # sweep and eviction only ever look at the front.
        self._sessions: OrderedDict[object, _Session] = OrderedDict()
        self._single_listener = True
        self._buffer = bytearray(_RECEIVE_SIZE)
        self._view = memoryview(self._buffer)
        self._target_infos: list[AddrInfo] = []
        self._local_infos: list[AddrInfo] | None = None
        self._target_unix: str | bytes | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._started = False
        self._closed = False
        self._stopped = asyncio.Event()
        self._last_notice: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    # --- public ----------------------------------------------------------------------

    @property
    def stats(self) -> UDPRelayStats:
        """The live counters (the same object throughout)."""
        return self._stats

    @property
    def addresses(self) -> list[SocketAddress]:
        """The real bound addresses (empty before :meth:`start`)."""
        return [listener.address for listener in self._listeners]

    async def start(self) -> list[SocketAddress]:
        """Resolve the target once, bind the listening socket(s), start relaying.

        No host: one dual-stack socket for IPv4 and IPv6 on the port (IPv4 only where
        the system has no IPv6). A host: a socket per address it resolves to, all on
        one port. Returns the bound addresses (the real port when 0 was asked).

        Raises ``RuntimeError`` if already started or closed; what resolving and
        binding raise (:class:`~sockit.errors.ResolutionError`,
        :class:`~sockit.errors.ConnectError` if no socket can be created for any
        target address, ``OSError`` with ``EADDRINUSE``...); nothing stays open then.
        """
        if self._closed:
            raise RuntimeError("this UDP relay was closed")
        if self._started:
            raise RuntimeError("this UDP relay was already started")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        try:
            await self._resolve_target(loop)
            sockets = await self._bind()
        except BaseException:
            self._closed = True
            self._stopped.set()
            raise
        self._listeners = [_Listener(sock, index) for index, sock in enumerate(sockets)]
        self._single_listener = len(self._listeners) == 1
        for listener in self._listeners:
            listener.sock.setblocking(False)
            loop.add_reader(listener.fd, self._on_client_datagrams, listener)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(
                "relaying UDP from %s to %s",
                ", ".join(map(str, self.addresses)),
                self.target,
                extra={"event": "udp_relay_start"},
            )
        return self.addresses

    async def serve_forever(self) -> None:
        """Relay until cancelled or :meth:`aclose`; then every socket is closed.

        Starts the relay first if :meth:`start` was not called.
        """
        if not self._started:
            await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the listening socket(s) and every session (reason ``closed``).

        Idempotent; also ends :meth:`serve_forever`.
        """
        if self._closed:
            return
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        loop = self._loop
        live = loop is not None and not loop.is_closed()
        for listener in self._listeners:
            if live and loop is not None:
                loop.remove_reader(listener.fd)
            listener.sock.close()
        for session in list(self._sessions.values()):
            self._close_session(session, "closed")
        self._stopped.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = ", ".join(map(str, self.addresses)) or self.listen.text
        state = "closed" if self._closed else f"{len(self._sessions)} sessions"
        return f"<UDPSessionRelay {where} -> {self.target} {state}>"

    # --- set-up ----------------------------------------------------------------------

    async def _resolve_target(self, loop: asyncio.AbstractEventLoop) -> None:
        target = self.target
        if target.kind == "unix-dgram":
            assert target.path is not None  # noqa: S101 (the grammar sets it)
            self._target_unix = unix_sockaddr(target.path)
            return
        assert target.host is not None  # noqa: S101 (the grammar requires it)
        assert target.port is not None  # noqa: S101
        host = check_host(target.host)
        infos = order_addresses(
            await resolve(None, host, target.port, type=socket.SOCK_DGRAM, display_host=target.host)
        )
        bind = target.options.bind
        if bind is not None:
            self._local_infos = [
                AddrInfo(bind.family, socket.SOCK_DGRAM, 0, "", tuple(bind.to_sockaddr()))
            ]
        # The first address a socket can be created and connected for is the target
        # for every session: resolved once, probed once (a UDP connect sends nothing).
        for info in infos:
            try:
                self._connect_ip([info], loop).close()
            except OSError:
                continue
            self._target_infos = [info]
            return
        # Every address failed: once more with all of them, for the error naming each.
        self._connect_ip(infos, loop).close()  # pragma: no cover (it failed just now)
        self._target_infos = infos  # pragma: no cover

    def _connect_ip(self, infos: list[AddrInfo], loop: asyncio.AbstractEventLoop) -> socket.socket:
        assert self.target.host is not None  # noqa: S101
        assert self.target.port is not None  # noqa: S101
        return connect_first(
            socket.socket,
            _own,
            self.target.host,
            self.target.port,
            infos,
            local_infos=self._local_infos,
            local_port=0,
            reuse_port=False,
            clock=loop.time,
        )

    async def _bind(self) -> list[socket.socket]:
        listen = self.listen
        assert listen.port is not None  # noqa: S101 (checked in __init__)
        if listen.host is None:
            return [bind_wildcard(socket.socket, _own, listen.port, 0, reuse_port=False)]
        infos = await resolve(
            None,
            check_host(listen.host),
            listen.port,
            type=socket.SOCK_DGRAM,
            flags=socket.AI_PASSIVE,
            display_host=listen.host,
        )
        return bind_every_address(
            socket.socket, _own, listen.host, infos, listen.port, reuse_port=False
        )

    # --- client -> target --------------------------------------------------------------

    def _on_client_datagrams(self, listener: _Listener) -> None:
        """A listening socket is readable: relay up to one batch of client datagrams."""
        if self._closed:
            return
        loop = self._loop
        assert loop is not None  # noqa: S101
        recvfrom_into = listener.sock.recvfrom_into
        view = self._view
        sessions = self._sessions
        stats = self._stats
        single = self._single_listener
        now = loop.time()
        for _ in range(DEFAULT_BATCH):
            try:
                size, sender = recvfrom_into(view, _RECEIVE_SIZE, _RECEIVE_FLAGS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # An unconnected socket has no ICMP errors to report unless something
                # else went wrong; either way it concerns a datagram, not the relay.
                stats.errors += 1
                self._notice("receive", "receiving a client datagram failed: %s", error)
                self._rearm(listener.fd, self._on_client_datagrams, listener)
                return
            key = sender if single else (listener.index, sender)
            session = sessions.get(key)
            if session is None:
                session = self._open_session(key, sender, listener, now)
                if session is None:
                    stats.errors += 1
                    continue
            else:
                sessions.move_to_end(key)
                session.last = now
            try:
                session.sock.send(view[:size])
            except (BlockingIOError, InterruptedError):
                # The socket's send buffer (or a unix-dgram target's queue) is full:
                # UDP drops rather than waits.
                stats.errors += 1
                session.errors += 1
                continue
            except OSError as error:
                stats.errors += 1
                session.errors += 1
                self._upstream_failed(session, error, "sending to the target")
                continue
            session.datagrams_in += 1
            session.bytes_in += size
            stats.datagrams_in += 1
            stats.bytes_in += size

    def _open_session(
        self, key: object, sender: Any, listener: _Listener, now: float
    ) -> _Session | None:
        """A new client: make room if the table is full, open its upstream socket.
        ``None`` (the datagram is dropped) if no socket can be opened."""
        loop = self._loop
        assert loop is not None  # noqa: S101
        sessions = self._sessions
        if len(sessions) >= self.max_sessions:
            self._evict("the session table is full")
        try:
            sock = self._new_upstream(loop)
        except OSError as error:
            if error.errno not in _NO_FDS or not sessions:
                self._notice("open", "cannot open a UDP session for a client: %s", error)
                return None
            # Out of fds: the least recently active session gives its socket up, once.
            self._evict("no file descriptors left")
            try:
                sock = self._new_upstream(loop)
            except OSError as again:
                self._notice("open", "cannot open a UDP session for a client: %s", again)
                return None
        session = _Session(key, sender, listener, sock, now)
        try:
            loop.add_reader(session.fd, self._on_target_datagrams, session)
        except BaseException:
            sock.close()
            raise
        sessions[key] = session
        stats = self._stats
        stats.sessions_opened += 1
        stats.active = len(sessions)
        stats.peak_active = max(stats.peak_active, stats.active)
        if self._sweep is None:
            self._sweep = loop.call_at(now + self.idle_timeout, self._on_sweep)
        if self._logger.isEnabledFor(logging.DEBUG):
            client = session.client()
            self._logger.debug(
                "UDP session for %s opened: %s -> %s (%d active)",
                client,
                _local_address(sock),
                self.target,
                stats.active,
                extra={"event": "udp_session_open", "peer": str(client)},
            )
        return session

    def _new_upstream(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        if self._target_unix is None:
            sock = self._connect_ip(self._target_infos, loop)
            try:
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if _AUTOBIND:
                sock.bind("")
            sock.connect(self._target_unix)
        except BaseException:
            sock.close()
            raise
        return sock

    def _evict(self, why: str) -> None:
        oldest = next(iter(self._sessions.values()))
        self._stats.sessions_evicted += 1
        self._notice(
            "evict",
            "UDP relay: %s (%d sessions): evicting the least recently active",
            why,
            len(self._sessions),
        )
        self._close_session(oldest, "evicted")

    # --- target -> client --------------------------------------------------------------

    def _on_target_datagrams(self, session: _Session) -> None:
        """A session's socket is readable: relay up to one batch back to its client."""
        if session.closed:
            return
        recv_into = session.sock.recv_into
        sendto = session.listener.sock.sendto
        peer = session.peer
        view = self._view
        stats = self._stats
        received = False
        for _ in range(DEFAULT_BATCH):
            try:
                size = recv_into(view, _RECEIVE_SIZE, _RECEIVE_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                stats.errors += 1
                session.errors += 1
                if self._upstream_failed(session, error, "receiving from the target"):
                    return
                continue
            received = True
            if size > _RECEIVE_SIZE:
                # Only a unix-dgram target can send this much; no UDP client could
                # receive it, and a cut datagram would be a lie.
                stats.errors += 1
                session.errors += 1
                self._notice("reply", "dropped a %d-byte reply: larger than UDP allows", size)
                continue
            try:
                sendto(view[:size], peer)
            except OSError as error:
                # EAGAIN (a full send buffer), EMSGSIZE (over 65,507 bytes for an
                # IPv4 client): this reply is lost, like any UDP datagram can be.
                stats.errors += 1
                session.errors += 1
                if not isinstance(error, BlockingIOError | InterruptedError):
                    self._notice("reply", "sending a reply to a client failed: %s", error)
                continue
            session.datagrams_out += 1
            session.bytes_out += size
            stats.datagrams_out += 1
            stats.bytes_out += size
        if received and not session.closed:
            loop = self._loop
            assert loop is not None  # noqa: S101
            session.last = loop.time()
            self._sessions.move_to_end(session.key)

    def _upstream_failed(self, session: _Session, error: OSError, doing: str) -> bool:
        """An error on a session's socket: drop the datagram, or end a broken session
        (then True)."""
        broken = error.errno not in _PER_DATAGRAM_ERRNOS or (
            # A unix-dgram socket whose peer is gone was disconnected by the kernel
            # (unix(7)): every later send fails; a new session connects afresh.
            error.errno == errno.ECONNREFUSED and self._target_unix is not None
        )
        if broken:
            self._notice("session", f"UDP session ended: {doing} failed: %s", error)
            self._close_session(session, "error")
            return True
        self._notice("datagram", f"dropped a datagram: {doing} failed: %s", error)
        # Consuming a socket error may have been uvloop's last call to our reader (see
        # the module docstring): register it again once this callback has returned.
        self._rearm(session.fd, self._on_target_datagrams, session)
        return False

    def _rearm(self, fd: int, callback: Any, owner: _Session | _Listener) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101
        loop.call_soon(self._register_again, fd, callback, owner)

    def _register_again(self, fd: int, callback: Any, owner: _Session | _Listener) -> None:
        if self._closed or (isinstance(owner, _Session) and owner.closed):
            return
        loop = self._loop
        assert loop is not None  # noqa: S101
        loop.remove_reader(fd)
        loop.add_reader(fd, callback, owner)

    # --- expiry and closing ------------------------------------------------------------

    def _on_sweep(self) -> None:
        """Close every session idle for ``idle_timeout``; re-arm for the next one due.

        The table is ordered by last activity, so only its front is looked at: the
        cost is one step per expired session, and nothing is done per datagram.
        """
        self._sweep = None
        if self._closed:
            return
        loop = self._loop
        assert loop is not None  # noqa: S101
        now = loop.time()
        idle = self.idle_timeout
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if oldest.last + idle > now:
                self._sweep = loop.call_at(
                    max(oldest.last + idle, now + _MIN_SWEEP_DELAY), self._on_sweep
                )
                return
            self._stats.sessions_expired += 1
            self._close_session(oldest, "expired")

    def _close_session(self, session: _Session, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.key, None)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(session.fd)
        session.sock.close()
        stats = self._stats
        stats.active = len(self._sessions)
        if self._logger.isEnabledFor(logging.DEBUG):
            client = session.client()
            duration = (loop.time() if loop is not None else session.last) - session.opened
            self._logger.debug(
                "UDP session for %s closed (%s) after %.3f s: %d datagrams (%d bytes) in, "
                "%d datagrams (%d bytes) out, %d dropped",
                client,
                reason,
                duration,
                session.datagrams_in,
                session.bytes_in,
                session.datagrams_out,
                session.bytes_out,
                session.errors,
                extra={
                    "event": "udp_session_close",
                    "peer": str(client),
                    "reason": reason,
                    "datagrams_in": session.datagrams_in,
                    "datagrams_out": session.datagrams_out,
                    "bytes_in": session.bytes_in,
                    "bytes_out": session.bytes_out,
                    "dropped": session.errors,
                    "duration": duration,
                },
            )

    def _notice(self, kind: str, message: str, *args: object) -> None:
        """A debug line about ``kind``, at most one per second per kind, saying how
        many were left out since the last one."""
        if not self._logger.isEnabledFor(logging.DEBUG):
            return
        loop = self._loop
        now = loop.time() if loop is not None else 0.0
        if now - self._last_notice.get(kind, -_NOTICE_INTERVAL) < _NOTICE_INTERVAL:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_notice[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        more = f" ({suppressed} more like this not logged)" if suppressed else ""
        self._logger.debug(
            message + more, *args, extra={"event": f"udp_relay_{kind}", "suppressed": suppressed}
        )


def _local_address(sock: socket.socket) -> str:
    try:
        return str(SocketAddress.from_sockaddr(sock.family, sock.getsockname()))
    except (OSError, ValueError):
        return "?"
