"""The blocking accept loop shared by the sequential, thread and fork modes, and its parts.

What every connection goes through, in this order (DESIGN.md, "Servers"):

1. **accept**, through :meth:`SocketListener.accept` with ``timeout=0`` after a
   ``poll`` says a listening socket is readable. The listener already retries the
   transient errnos (``ECONNABORTED``, ``EPERM``, ``EPROTO``, the network errnos of
   accept(2)); what reaches this loop is classified by
   :func:`sockit.proto.accept.classify_accept_error`. Resource exhaustion (``EMFILE``,
   ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) backs off: 10 ms, doubling to 1 s, reset by the
   next successful accept; the wait ends early when one of our connections closes
   (an fd came back), and it waits on a self-pipe, not on the listener, which stays
   readable while the connection that failed is queued (polling it would spin). At
   most one log line per second says so. Anything else is fatal for the listener.
2. **access policy** (allow/deny; IPv4-mapped peers are matched as IPv4): a refused
   peer is closed at once and logged at debug level.
3. **max_connections**: one accepted over the limit is closed at once (a FIN, not an
   RST) and counted in ``stats.refused``; a warning at most once per second.
4. **dispatch** by the mode: inline (sequential), a thread (thread), a child process
   (fork, :mod:`sockit.serve._fork`).
5. the connection's **lifecycle** (:func:`run_connection`): ``stream.timeout`` is the
   idle timeout, the PROXY header is read if enabled, the handler runs; an exception
   is logged with the 4-tuple and ends only that connection; the stream is closed.

Shutdown (:meth:`SyncAcceptRunner.abort`) first shuts the reading side of every live
connection with ``SO_LINGER`` 0 (a blocked ``recv`` returns, nothing goes on the wire),
then, for handlers still running after a short grace, shuts the writing side when data
is stuck in the send queue (a blocked ``sendall`` fails; the FIN queued behind the
unsent data never leaves before the RST) and closes: the peer sees an RST, never a
clean EOF.

This module must never run a handler in the accepting thread except in sequential
mode, spin on a listener it cannot accept from, or log more than one line per second
about the same resource problem.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import itertools
import logging
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockit.addr.binding import set_linger_zero
from sockit.errors import ClosedResourceError, EndOfStream, IncompleteRead, ProxyProtocolError
from sockit.proto.accept import AcceptAction, classify_accept_error
from sockit.proto.proxy import parse_proxy_header

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockit.addr import SocketAddress
    from sockit.proto.proxy import ProxyHeader
    from sockit.serve.server import ServeContext
    from sockit.sync import SocketStream

__all__ = [
    "ABORT_READER_GRACE",
    "ACCEPT_BATCH",
    "BACKOFF_INITIAL",
    "BACKOFF_MAXIMUM",
    "LOG_INTERVAL",
    "PROXY_HEADER_TIMEOUT",
    "Backoff",
    "Connection",
    "Counters",
    "RateLimitedLog",
    "SequentialMode",
    "ServerStats",
    "Stat",
    "SyncAcceptRunner",
    "ThreadMode",
    "Waker",
    "in_handler",
    "log_accept_back_off",
    "read_proxy_header",
    "refuse_reason",
    "run_connection",
]

BACKOFF_INITIAL = 0.01
"""First wait after a resource error from accept: long enough that a retry is not a
spin, short enough that one closed connection makes service resume at once."""
BACKOFF_MAXIMUM = 1.0
"""The longest wait: a server out of fds retries once a second (Go's net/http and
Tornado cap their accept back-off at 1 s as well)."""
LOG_INTERVAL = 1.0
"""At most one log line per this many seconds about the same recurring problem."""
ACCEPT_BATCH = 64
"""Connections accepted per wake-up before polling again, so a burst costs few polls
but a stop request is still seen promptly."""
PROXY_HEADER_TIMEOUT = 10.0
"""How long a PROXY protocol header may take to arrive (a proxy sends it with the
connection's first bytes; HAProxy's own ``timeout client`` examples are 10 s and up)."""
ABORT_READER_GRACE = 0.2
"""After shutting the reading side on abort, how long handlers get to notice before
the writing side is shut and the stream closed under them."""


_local = threading.local()


def in_handler() -> bool:
    """Whether the calling thread is running a connection handler right now (so a
    ``shutdown()`` from inside one must not wait for itself)."""
    return bool(getattr(_local, "in_handler", False))


# --- small parts ---------------------------------------------------------------------------


class Waker:
    """A self-pipe (a socket pair, so it can be polled with the listener's sockets).

    :meth:`poke` may be called from any thread and from a signal handler: it never
    blocks and never raises (a full pipe already means "wake up"; a closed one means
    nobody waits any more).
    """

    __slots__ = ("_reader", "_writer")

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    @property
    def socket(self) -> socket.socket:
        """The end to wait on for readability."""
        return self._reader

    def write_fileno(self) -> int:
        """The writing end's fd (for :func:`signal.set_wakeup_fd`)."""
        return self._writer.fileno()

    def poke(self) -> None:
        """Make the reading end readable."""
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def drain(self) -> None:
        """Consume every pending poke (bounded: the pipe holds a finite number)."""
        with contextlib.suppress(OSError):
            for _ in range(1024):
                if not self._reader.recv(4096):
                    return

    def close(self) -> None:
        """Close both ends. Idempotent."""
        self._reader.close()
        self._writer.close()


class Backoff:
    """Exponential back-off: ``initial``, doubling, capped at ``maximum``."""

    __slots__ = ("_delay", "_initial", "_maximum")

    def __init__(self, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAXIMUM) -> None:
        self._initial = initial
        self._maximum = maximum
        self._delay = initial

    def next_delay(self) -> float:
        """The wait to apply now; the following one will be twice as long (capped)."""
        delay = self._delay
        self._delay = min(delay * 2, self._maximum)
        return delay

    def reset(self) -> None:
        """Back to ``initial`` (call after a success)."""
        self._delay = self._initial


class RateLimitedLog:
    """Log a recurring message at most once per ``interval`` seconds, thread-safe.

    The line after a quiet period says how many similar messages were suppressed.
    """

    __slots__ = ("_clock", "_interval", "_last", "_lock", "_logger", "_suppressed")

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0
        self._lock = threading.Lock()

    def log(self, level: int, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line was logged less than ``interval`` ago;
        return whether it was logged."""
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self._interval:
                self._suppressed += 1
                return False
            self._last = now
            suppressed = self._suppressed
            self._suppressed = 0
        if suppressed:
            message += " (%d similar message(s) suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args)
        return True


class Stat(enum.IntEnum):
    """The counters a server keeps; indices into :class:`Counters`."""

    ACCEPTED = 0
    REFUSED = 1
    DENIED = 2
    ERRORS = 3
    ACCEPT_ERRORS = 4
    ACTIVE = 5
    RESTARTS = 6


@dataclass(frozen=True)
class ServerStats:
    """A snapshot of a server's counters (summed over its worker processes).

    * ``accepted``: connections admitted (past the access policy and
      ``max_connections``) and handed to the mode to run.
    * ``refused``: connections accepted and closed at once without running the handler:
      over ``max_connections``, denied by the access policy, or no thread/process could
      be started for them.
    * ``denied``: the part of ``refused`` the access policy turned away.
    * ``errors``: admitted connections that failed: the handler raised, or (with
      ``proxy_protocol``) no valid PROXY header came.
    * ``accept_errors``: resource errors from accept (``EMFILE``...) the server backed
      off from (transient ones are retried inside the listener and not counted).
    * ``active``: connections being handled now.
    * ``restarts``: worker processes restarted after they died.
    """

    accepted: int = 0
    refused: int = 0
    denied: int = 0
    errors: int = 0
    accept_errors: int = 0
    active: int = 0
    restarts: int = 0

    def __add__(self, other: ServerStats) -> ServerStats:
        return ServerStats(
            self.accepted + other.accepted,
            self.refused + other.refused,
            self.denied + other.denied,
            self.errors + other.errors,
            self.accept_errors + other.accept_errors,
            self.active + other.active,
            self.restarts + other.restarts,
        )


class Counters:
    """A server's counters: one signed 64-bit cell per :class:`Stat`.

    The cells are private memory, or a slice of a shared anonymous mapping so a worker
    process's counters can be read by its parent (each worker writes only its own
    slice). Updates take a per-process lock (``+=`` is not atomic across threads).
    """

    __slots__ = ("_cells", "_lock")

    SIZE = len(Stat)
    """Cells per set of counters."""

    def __init__(self, cells: memoryview | None = None) -> None:
        if cells is None:
            cells = memoryview(bytearray(8 * self.SIZE)).cast("q")
        if len(cells) != self.SIZE or cells.format != "q":
            raise ValueError("Counters needs a memoryview of format 'q' with one cell per Stat")
        self._cells = cells
        self._lock = threading.Lock()

    def add(self, stat: Stat, delta: int = 1) -> None:
        """Add ``delta`` (may be negative) to one counter."""
        with self._lock:
            self._cells[stat] += delta

    def set(self, stat: Stat, value: int) -> None:
        """Overwrite one counter (a restarted worker starts with no active connection)."""
        with self._lock:
            self._cells[stat] = value

    def get(self, stat: Stat) -> int:
        """One counter's current value."""
        return int(self._cells[stat])

    def snapshot(self) -> ServerStats:
        """All counters at once."""
        cells = self._cells.tolist()
        return ServerStats(*cells)


# --- one connection --------------------------------------------------------------------


def describe(stream: SocketStream) -> str:
    """The connection's 4-tuple as ``peer -> local`` (``?`` for what cannot be read)."""
    try:
        remote = str(stream.remote_address)
    except OSError:
        remote = "?"
    try:
        local = str(stream.local_address)
    except OSError:
        local = "?"
    return f"{remote} -> {local}"


class Connection:
    """One accepted connection as the server tracks it."""

    __slots__ = ("aborting", "label", "stream", "thread")

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        # Read once, now: after the handler closed the stream it can no longer be asked.
        self.label = describe(stream)
        self.aborting = False
        self.thread: threading.Thread | None = None

    def shut_reading(self) -> None:
        """First step of an abort: RST on close, and wake a blocked receive (it returns
        EOF). Sends nothing to the peer. Safe from any thread."""
        self.aborting = True
        sock = self.stream.socket
        set_linger_zero(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)

    def close_under_handler(self) -> None:
        """Last step of an abort: wake a blocked send and close the stream (RST)."""
        sock = self.stream.socket
        # Only with unsent data queued: then a sender may be blocked, and the FIN that
        # SHUT_WR queues behind that data never leaves before the RST. With an empty
        # queue no send can be blocked, and a FIN would tell the peer "clean end".
        if _unsent_bytes(sock) > 0:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        self.stream.abort()


def _unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's send queue (``SIOCOUTQ``, the same number as ``TIOCOUTQ``)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


def read_proxy_header(stream: SocketStream, timeout: float) -> ProxyHeader:
    """Read a PROXY protocol v1/v2 header from ``stream`` and apply it.

    The bytes after the header stay in the stream's buffer for the handler. With a
    ``PROXY`` command the stream's ``remote_address``/``local_address`` become the
    original client's and server's; ``LOCAL`` (a proxy's health check) and
    ``UNKNOWN`` keep the real ones.

    Raises :class:`~sockit.ProxyProtocolError` as soon as the bytes cannot be a
    header, ``TimeoutError`` if none is complete within ``timeout`` seconds,
    :class:`~sockit.IncompleteRead`/:class:`~sockit.EndOfStream` on EOF first.
    """
    deadline = time.monotonic() + timeout
    data = bytearray()
    # Bounded: every round adds at least one byte, and parse_proxy_header raises once
    # more bytes than the largest header (16 + 65535) failed to make one.
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete PROXY protocol header within {timeout:g} s")
        chunk = stream.recv(65536, timeout=remaining)
        if not chunk:
            if data:
                raise IncompleteRead(bytes(data), None)
            raise EndOfStream("EOF before a PROXY protocol header")
        data += chunk
        header = parse_proxy_header(data)
        if header is not None:
            break
    leftover = bytes(data[header.consumed :])
    if leftover:
        # Back into the stream: the handler reads these bytes first.
        stream.unread(leftover)
    if header.source is not None and header.destination is not None:
        stream.set_addresses(local=header.destination, remote=header.source)
    return header


def run_connection(
    context: ServeContext, connection: Connection, counters: Counters | None
) -> bool:
    """Run one connection to its end: timeouts, PROXY header, handler, close.

    Returns False if the handler raised (logged here with the 4-tuple and a traceback)
    or the PROXY header was missing or invalid (logged, connection aborted); that is
    counted in ``counters`` when given (a fork-mode child passes ``None``, since its
    parent's counters are not its to touch, and reports through its exit status). A
    ``TimeoutError`` while an ``idle_timeout`` is set is the idle limit at work: one
    info line, not an error. Never raises an ``Exception``; a ``BaseException``
    (``SystemExit``, ``KeyboardInterrupt``) passes through after the stream is closed.
    """
    stream = connection.stream
    logger = context.logger
    stream.timeout = context.idle_timeout
    _local.in_handler = True
    try:
        if context.proxy_protocol and not _apply_proxy_header(context, connection):
            if counters is not None:
                counters.add(Stat.ERRORS)
            return False
        context.handler(stream)
    except Exception as error:
        if connection.aborting:
            logger.debug("connection %s ended by the abort", connection.label, exc_info=True)
            return True
        if isinstance(error, TimeoutError) and context.idle_timeout is not None:
            # The idle limit doing its job: worth a line, not a traceback or an error.
            logger.info(
                "connection %s timed out (idle_timeout=%g s): %s",
                connection.label,
                context.idle_timeout,
                error,
            )
            return True
        if counters is not None:
            counters.add(Stat.ERRORS)
        logger.exception("handler failed on connection %s", connection.label)
        return False
    finally:
        _local.in_handler = False
        if connection.aborting:
            stream.abort()
        else:
            stream.close()
    return True


def _apply_proxy_header(context: ServeContext, connection: Connection) -> bool:
    """Read the PROXY header; False (connection aborted, logged) if there is none."""
    stream = connection.stream
    timeout = PROXY_HEADER_TIMEOUT
    if context.idle_timeout is not None:
        timeout = min(timeout, context.idle_timeout)
    try:
        header = read_proxy_header(stream, timeout)
    except (ProxyProtocolError, TimeoutError, EOFError, OSError) as error:
        context.logger.warning(
            "no valid PROXY protocol header on connection %s: %s", connection.label, error
        )
        # The specification asks for an abort, so a misconfigured sender notices.
        connection.aborting = True
        return False
    if header.source is not None:
        connection.label = f"{describe(stream)} (via proxy {connection.label.split(' ')[0]})"
    return True


# --- the accept loop -------------------------------------------------------------------


def refuse_reason(
    context: ServeContext,
    counters: Counters,
    remote: SocketAddress | None,
    limit_log: RateLimitedLog,
) -> str | None:
    """The server-wide admission rules, shared by every mode: the access policy, then
    ``max_connections``. Returns ``None`` to admit, or why the connection is refused
    (already counted in ``counters`` and logged: a denial at debug level, the limit at
    most once a second)."""
    policy = context.access_policy
    if (
        policy is not None
        and remote is not None
        and not remote.is_unix
        and not _permits(policy.permits, remote.host)
    ):
        counters.add(Stat.REFUSED)
        counters.add(Stat.DENIED)
        context.logger.debug("refused %s: not permitted by the access policy", remote)
        return "denied"
    if counters.get(Stat.ACTIVE) >= context.max_connections:
        counters.add(Stat.REFUSED)
        limit_log.log(
            logging.WARNING,
            "connection limit reached (max_connections=%d): closing %s",
            context.max_connections,
            remote,
        )
        return "limit"
    return None


def log_accept_back_off(
    counters: Counters, resource_log: RateLimitedLog, error: OSError, delay: float
) -> None:
    """Count a resource error of ``accept`` and log it (at most once a second)."""
    counters.add(Stat.ACCEPT_ERRORS)
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    resource_log.log(
        logging.WARNING,
        "accept failed: %s (%s); %d connection(s) open, retrying in %.2f s",
        name,
        error.strerror or error,
        counters.get(Stat.ACTIVE),
        delay,
    )


class SyncAcceptRunner:
    """The accept loop of the blocking modes; subclasses say how a connection runs.

    Implements :class:`sockit.serve.server.ModeRunner`. Subclasses implement
    :meth:`_dispatch` (start handling an admitted stream) and keep
    ``context.counters[ACTIVE]`` and ``self._connections`` up to date.
    """

    def __init__(self, context: ServeContext) -> None:
        self._context = context
        self._logger = context.logger
        self._counters = context.counters
        self._waker = Waker()
        self._stopping = False
        self._stop_lock = threading.Lock()
        self._backoff = Backoff()
        self._resource_log = RateLimitedLog(context.logger)
        self._limit_log = RateLimitedLog(context.logger)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connections: dict[int, Connection] = {}
        self._numbers = itertools.count(1)
        # Connection ends so far, and whether the loop is backing off: a connection
        # that ends while it is pokes the waker (an fd came back: try accept again).
        self._closes = 0
        self._waiting_for_close = False

    # --- ModeRunner ----------------------------------------------------------------

    def serve(self) -> None:
        """Accept until :meth:`stop_accepting`; raise the listener's fatal error."""
        try:
            self._accept_loop()
        finally:
            self._waker.drain()

    def stop_accepting(self) -> None:
        """Stop listening now (new connects are refused) and end :meth:`serve`.

        Idempotent and safe from any thread. Closing is not enough on its own: a thread
        blocked in ``poll`` on the listener holds a reference to the socket (Linux's
        ``__pollwait`` takes one), so it keeps listening until that poll returns. A
        listener only this process uses is therefore shut down first
        (``shutdown(SHUT_RD)`` on a listening socket stops it at once, whoever holds
        it); a shared one (a worker's, systemd's) is only closed, and the waker makes
        the poll return."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
            listener = self._context.listener
            if not self._context.listener_shared:
                for sock in listener.sockets:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RD)
            listener.close()
        self._waker.poke()

    def wait_closed(self) -> None:
        """Block until every connection has ended (call after :meth:`serve`)."""
        with self._changed:
            threads = [c.thread for c in self._connections.values() if c.thread is not None]
        for thread in threads:
            thread.join()
        with self._changed:
            # Bounded by the abort that the server sends after the drain timeout.
            while self._connections:
                self._changed.wait()
        self._waker.close()

    def abort(self) -> None:
        """End every live connection with an RST (see the module docstring)."""
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            connection.shut_reading()
        deadline = time.monotonic() + ABORT_READER_GRACE
        with self._changed:
            while self._connections:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            connections = list(self._connections.values())
        for connection in connections:
            connection.close_under_handler()

    # --- the loop ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._context.listener
        factory = self._context.socket_factory
        waker = self._waker.socket
        try:
            sockets = [*listener.sockets, waker]
        except (OSError, ValueError):
            if self._stopping:
                return
            raise
        while not self._stopping:
            try:
                factory.wait_readable(sockets, None)
            except (OSError, ValueError) as error:
                # A listener closed by stop_accepting() in another thread (fd -1).
                if self._is_stopping():
                    return
                raise ClosedResourceError("the listener was closed under the server") from error
            self._waker.drain()
            self._accept_ready()

    def _accept_ready(self) -> None:
        listener = self._context.listener
        for _ in range(ACCEPT_BATCH):
            if self._stopping:
                return
            closes_before = self._closes
            try:
                stream = listener.accept(timeout=0)
            except TimeoutError:
                return
            except ClosedResourceError:
                if self._is_stopping():
                    return
                raise
            except OSError as error:
                if self._is_stopping():
                    return  # EINVAL from a listener shut down by stop_accepting()
                action = classify_accept_error(error.errno)
                if action is AcceptAction.RETRY:
                    continue
                if action is AcceptAction.BACK_OFF:
                    self._back_off(error, closes_before)
                    return
                raise
            self._backoff.reset()
            self._admit(stream)

    def _back_off(self, error: OSError, closes_before: int) -> None:
        delay = self._backoff.next_delay()
        log_accept_back_off(self._counters, self._resource_log, error, delay)
        self._waiting_for_close = True
        try:
            # A connection that ended since the failed accept gave an fd back: retry now.
            if not self._stopping and self._closes == closes_before:
                self._context.socket_factory.wait_readable([self._waker.socket], delay)
            self._waker.drain()
        finally:
            self._waiting_for_close = False

    def _admit(self, stream: SocketStream) -> None:
        counters = self._counters
        if refuse_reason(self._context, counters, stream.remote_address, self._limit_log):
            close_refused(stream)
            return
        try:
            connection = Connection(stream)
            if self._logger.isEnabledFor(logging.DEBUG):
                self._logger.debug("accepted %s", connection.label)
            self._dispatch(connection)
        except Exception as error:  # noqa: BLE001 - no thread/process: refuse this one only
            counters.add(Stat.REFUSED)
            self._limit_log.log(
                logging.ERROR, "cannot handle connection from %s: %s", stream.remote_address, error
            )
            stream.close()
            return
        counters.add(Stat.ACCEPTED)

    def _dispatch(self, connection: Connection) -> None:
        raise NotImplementedError

    def _is_stopping(self) -> bool:
        # A method, not the attribute: another thread sets it while this one runs.
        return self._stopping

    def _register(self, connection: Connection) -> int:
        number = next(self._numbers)
        with self._lock:
            self._connections[number] = connection
        self._counters.add(Stat.ACTIVE)
        return number

    def _unregister(self, number: int) -> None:
        with self._changed:
            self._connections.pop(number, None)
            self._closes += 1
            self._changed.notify_all()
        self._counters.add(Stat.ACTIVE, -1)
        if self._waiting_for_close:
            self._waker.poke()


def close_refused(stream: SocketStream) -> None:
    """Close a connection the server will not handle, with a FIN where possible.

    Closing a TCP socket with unread input makes Linux send an RST instead of a FIN
    (RFC 2525, section 2.17), so what the peer already sent (a request that raced the
    refusal) is read and dropped first, without waiting for more.
    """
    with contextlib.suppress(OSError):
        stream.socket.recv(65536, socket.MSG_DONTWAIT)
    stream.close()


def _permits(check: Callable[[str], bool], host: str) -> bool:
    try:
        return check(host)
    except ValueError:
        return False  # not an IP literal: nothing a policy could allow


class SequentialMode(SyncAcceptRunner):
    """One connection at a time, handled in the accepting thread (the textbook
    iterative server; the next client waits in the listen backlog)."""

    def _dispatch(self, connection: Connection) -> None:
        number = self._register(connection)
        try:
            run_connection(self._context, connection, self._counters)
        finally:
            self._unregister(number)


class ThreadMode(SyncAcceptRunner):
    """A thread per connection, named ``sockit-conn-N``, non-daemon and tracked, so
    shutdown can drain, abort and join every one of them."""

    def _dispatch(self, connection: Connection) -> None:
        number = self._register(connection)
        thread = threading.Thread(
            target=self._run, args=(connection, number), name=f"sockit-conn-{number}"
        )
        connection.thread = thread
        try:
            thread.start()
        except BaseException:
            connection.thread = None
            self._unregister(number)
            raise

    def _run(self, connection: Connection, number: int) -> None:
        try:
            run_connection(self._context, connection, self._counters)
        finally:
            self._unregister(number)
