"""The full-duplex pump: bytes both ways between two legs, on the event loop.

A :class:`Leg` is one side of a relayed connection as file descriptors: one to read,
one to write (the same socket for a socket; two pipes for a child process; fds 0 and 1
for stdio). :class:`Pump` moves bytes between two legs in both directions at once,
driven by readiness callbacks (``loop.add_reader``/``add_writer``), so one thread
relays any number of connections.

The contract, for each direction on its own:

* **Bounded**: at most one pipe (``PIPE_SIZE``) or one buffer (``COPY_BUFFER``) of data
  is held per direction. While the destination cannot take more, the source is not
  read: a slow reader slows the writer, memory never grows.
* **EOF is propagated, not invented**: the source's EOF becomes ``send_eof()``
  (``shutdown(SHUT_WR)`` for a socket, closing the pipe for a child) on the
  destination once every byte before it was written; the other direction keeps
  flowing until its own EOF. No timer runs after EOF unless ``close_wait`` asks.
* **Resets are never laundered**: a read or write error on either leg (a reset, a
  broken pipe from a socket) aborts both legs (a socket is closed with ``SO_LINGER``
  0, so its peer sees a reset too) and the result says which leg failed. A transfer
  that did not end with both EOFs is never reported as clean.
* **Zero copy when possible**: between sockets and pipes the bytes go through a pipe
  with ``splice(2)`` and never enter Python; elsewhere (a terminal, datagram sockets,
  a file opened for appending) ``recv_into``/``send`` on a ``COPY_BUFFER`` buffer. The
  choice is made per direction; a ``splice`` refused with ``EINVAL`` on first use falls
  back to copying. Both paths are driven by the same tests.

This module must never block: every fd it polls is non-blocking, and the fds it cannot
poll (regular files) are read and written in bounded steps scheduled with
``call_soon``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockit.addr.binding import set_linger_zero

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockit.addr import SocketAddress

__all__ = [
    "COPY_BUFFER",
    "PIPE_SIZE",
    "DirectionOptions",
    "Leg",
    "Pump",
    "PumpResult",
    "SocketLeg",
]

PIPE_SIZE = 1 << 20
"""Bytes a splice pipe holds (``F_SETPIPE_SZ``; the default ``pipe-max-size``). One
wake-up moves up to this much, so the per-byte Python cost is tiny."""

COPY_BUFFER = 256 * 1024
"""The copy path's buffer per direction (allocated on first data, not per connection)."""

_READ_BUDGET = 16 << 20
"""Bytes one wake-up may read from a source before yielding to other connections (more
than a socket's largest receive queue, so a trailing error is always reached)."""

_READ_ROUNDS = 64
"""Reads per wake-up at most (also bounds a flood of empty datagrams)."""

_DATAGRAM_MAX = 65507
"""Largest chunk sent as one datagram to a datagram leg: the IPv4 UDP payload limit
(a larger write would fail with EMSGSIZE)."""

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE = getattr(os, "splice", None)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# Errors that say "not now": try again on the next readiness event.
_AGAIN = (BlockingIOError, InterruptedError)
# splice() refusing this pair of fds (a terminal, a file opened O_APPEND, an old kernel):
# the direction copies instead.
_NO_SPLICE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF})
# Datagram sockets report a peer's ICMP error (port unreachable, message too long) on
# the next call; that concerns one datagram, never the whole session.
_DATAGRAM_SOFT = frozenset(
    {errno.ECONNREFUSED, errno.EMSGSIZE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOBUFS}
)


class Leg:
    """One side of a relayed connection, as file descriptors.

    ``read_fd`` is where this leg's incoming bytes are read (``-1``: nothing ever
    arrives, EOF at once); ``write_fd`` is where bytes for this leg are written
    (``-1``: they are counted and dropped). The leg owns its fds: :meth:`close`
    releases them, :meth:`abort` too but as a failure (a socket sends a reset).
    Subclasses say how EOF is sent and what the addresses are.
    """

    datagram = False
    """True if every read is one message and every write must stay one (UDP)."""

    def __init__(self, read_fd: int, write_fd: int, name: str) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.name = name
        self.closed = False
        self.read_pollable = read_fd < 0 or _pollable(read_fd)
        self.write_pollable = write_fd < 0 or _pollable(write_fd)

    @property
    def local_address(self) -> SocketAddress | None:
        """This side's local socket address, if it is a socket."""
        return None

    @property
    def remote_address(self) -> SocketAddress | None:
        """This side's peer address, if it is a socket."""
        return None

    def describe(self) -> str:
        """``local -> remote`` (the 4-tuple) for a connected socket, else the name."""
        local, remote = self.local_address, self.remote_address
        if remote is None:
            return self.name
        return f"{local} -> {remote}" if local is not None else str(remote)

    def read_into(self, view: memoryview) -> int:
        """Read into ``view``; 0 means EOF (for a datagram leg: an empty datagram)."""
        return os.readv(self.read_fd, [view])

    def write(self, view: memoryview) -> int:
        """Write from ``view``; the number of bytes taken (may be fewer)."""
        return os.write(self.write_fd, view)

    def send_eof(self) -> None:
        """Tell this leg's peer no more bytes are coming (idempotent)."""
        if self.write_fd >= 0 and self.write_fd != self.read_fd:
            fd, self.write_fd = self.write_fd, -1
            os.close(fd)

    def abort(self) -> None:
        """End this leg as a failure; for a socket the peer sees a reset."""
        self.close()

    def close(self) -> None:
        """Release every fd of this leg (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for fd in {self.read_fd, self.write_fd} - {-1}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.read_fd = self.write_fd = -1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class SocketLeg(Leg):
    """A connected socket (stream or datagram), made non-blocking; owned from now on."""

    def __init__(self, sock: socket.socket, name: str | None = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.datagram = sock.type == socket.SOCK_DGRAM
        self._local: SocketAddress | None = None
        self._remote: SocketAddress | None = None
        super().__init__(sock.fileno(), sock.fileno(), name or "socket")
        self.read_pollable = self.write_pollable = True
        self._eof_sent = False

    def set_addresses(self, local: SocketAddress | None, remote: SocketAddress | None) -> None:
        """Record the 4-tuple (the accept or connect knew it; no syscall needed)."""
        self._local, self._remote = local, remote

    @property
    def local_address(self) -> SocketAddress | None:
        """The socket's local address (from the accept or connect, else getsockname)."""
        if self._local is None and not self.closed:
            from sockit.addr import SocketAddress  # noqa: PLC0415 (rarely needed)

            with contextlib.suppress(OSError, ValueError):
                self._local = SocketAddress.from_sockaddr(self.sock.family, self.sock.getsockname())
        return self._local

    @property
    def remote_address(self) -> SocketAddress | None:
        """The socket's peer address (from the accept or connect, else getpeername)."""
        if self._remote is None and not self.closed:
            from sockit.addr import SocketAddress  # noqa: PLC0415 (rarely needed)

            with contextlib.suppress(OSError, ValueError):
                self._remote = SocketAddress.from_sockaddr(
                    self.sock.family, self.sock.getpeername()
                )
        return self._remote

    def read_into(self, view: memoryview) -> int:
        """``recv_into``: one datagram for a datagram socket."""
        return self.sock.recv_into(view)

    def write(self, view: memoryview) -> int:
        """``send``: one datagram for a datagram socket."""
        return self.sock.send(view)

    def send_eof(self) -> None:
        """``shutdown(SHUT_WR)`` once; nothing for a datagram socket (UDP has no EOF)."""
        if self._eof_sent or self.closed or self.datagram:
            return
        self._eof_sent = True
        with contextlib.suppress(OSError):  # ENOTCONN: the peer is gone; the read says so
            self.sock.shutdown(socket.SHUT_WR)

    def abort(self) -> None:
        """Close with ``SO_LINGER`` 0: the peer gets a reset, not a FIN."""
        if not self.closed and not self.datagram:
            with contextlib.suppress(OSError):
                set_linger_zero(self.sock)
        self.close()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.read_fd = self.write_fd = -1
        self.sock.close()


def _pollable(fd: int) -> bool:
    """Whether epoll accepts ``fd``: not regular files, directories or ``/dev/null``
    (epoll refuses files whose reads never block, with ``EPERM``)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return False
    if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
        return True
    import select  # noqa: PLC0415 (character devices only: a terminal, /dev/null)

    if not hasattr(select, "epoll"):
        return True
    with select.epoll() as probe:
        try:
            probe.register(fd, select.EPOLLIN)
        except OSError:
            return False
    return True


# Empty splice pipes shared by every direction of this process: taking one is a list pop,
# not two syscalls, and idle connections hold none. Bounded; the excess is closed.
_PIPE_POOL: list[tuple[int, int]] = []
_PIPE_POOL_MAX = 64


def _take_pipe() -> tuple[int, int]:
    try:
        return _PIPE_POOL.pop()
    except IndexError:
        pass
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # over pipe-max-size: keep the default size
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
    return read_end, write_end


_active_pumps = 0
_active_lock = threading.Lock()  # relays may run in several threads' loops


def _release_pool() -> None:
    """Close every pooled pipe (when no pump runs: an idle process holds none)."""
    while _PIPE_POOL:
        try:
            read_end, write_end = _PIPE_POOL.pop()
        except IndexError:  # another thread took the last one
            return
        os.close(read_end)
        os.close(write_end)


def _give_pipe(read_end: int, write_end: int) -> None:
    if len(_PIPE_POOL) < _PIPE_POOL_MAX:
        _PIPE_POOL.append((read_end, write_end))
    else:
        os.close(read_end)
        os.close(write_end)


def _is_regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _splice_capable(fd: int, *, writing: bool) -> bool:
    """Whether ``splice`` may work on ``fd``: sockets, pipes, and regular files (not
    written in append mode, which splice refuses)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
        return True
    if stat.S_ISREG(mode):
        return not (writing and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
    return False


@dataclass(frozen=True, slots=True)
class PumpResult:
    """How a relayed connection ended.

    ``outcome`` is ``"eof"`` (both directions ended with EOF: a clean transfer),
    ``"reset"`` (``failed_leg`` was reset or broke; both legs were aborted),
    ``"idle"`` (idle timeout), ``"close-wait"`` (the close-wait timer after one EOF),
    ``"output-closed"`` (a pipe or terminal we wrote to stopped reading) or
    ``"cancelled"``. ``error`` is the ``OSError`` behind a reset.
    """

    sent_a_to_b: int
    sent_b_to_a: int
    duration: float
    outcome: str
    failed_leg: str | None = None
    error: OSError | None = None

    @property
    def clean(self) -> bool:
        """True only if both directions ended with EOF and nothing failed."""
        return self.outcome == "eof"


@dataclass(frozen=True, slots=True)
class DirectionOptions:
    """How one direction of a :class:`Pump` behaves (the defaults are the relay's).

    * ``eof``: what the source's EOF does once every byte before it was written:
      ``"shutdown"`` sends EOF to the destination and lets the other direction run on;
      ``"keep"`` leaves the destination open (ncat's ``--no-shutdown``); ``"end"``
      sends EOF and ends the whole connection (ncat's connect mode on socket EOF).
    * ``quit_after_eof``: end the connection this many seconds after the source's EOF
      (ncat's ``-q``).
    * ``enabled=False``: never read the source (``--recv-only`` for stdin); the
      destination is left open.
    * ``discard``: read the source and drop the bytes (``--send-only`` for the socket).
    * ``transform``: bytes in, bytes to write out (``-C``, ``-t``); forces the copy path.
    * ``read_size``: read at most this many bytes at a time (``--buffer-size``; a
      datagram source always reads whole datagrams).
    * ``delay``: after each chunk is written, wait this many seconds before reading the
      next (ncat's ``-d``); the idle timeout does not count the wait.
    """

    eof: str = "shutdown"
    quit_after_eof: float | None = None
    enabled: bool = True
    discard: bool = False
    transform: Callable[[bytes], bytes] | None = None
    read_size: int | None = None
    delay: float | None = None


_DEFAULT_DIRECTION = DirectionOptions()


class _Direction:
    """Bytes from ``src`` to ``dst``: read, hold at most one pipe or buffer, write."""

    def __init__(
        self,
        pump: Pump,
        src: Leg,
        dst: Leg,
        *,
        allow_splice: bool,
        options: DirectionOptions = _DEFAULT_DIRECTION,
        index: int = 0,
    ) -> None:
        self.pump = pump
        self.loop = pump.loop
        self.src = src
        self.dst = dst
        self.options = options
        self.index = index
        self.out: memoryview | None = None
        # Seeing or changing the bytes needs them in Python: no splice, no sendfile.
        allow_splice = allow_splice and not (
            options.discard or options.transform is not None or pump.tap is not None
        )
        self.count = 0
        self.pending = 0
        self.eof = False
        self.done = False
        self.reading = False
        self.writing = False
        self.pipe_r = self.pipe_w = -1
        self.buffer: bytearray | None = None
        self.view: memoryview | None = None
        self.start = 0
        self.limit = _DATAGRAM_MAX if dst.datagram and not src.datagram else COPY_BUFFER
        if src.datagram:
            self.limit = 65536  # one datagram (UDP's largest payload fits)
        elif options.read_size is not None:
            self.limit = max(1, min(self.limit, options.read_size))
        self.splice_size = PIPE_SIZE if options.read_size is None else self.limit
        self.delayed: asyncio.TimerHandle | None = None
        # A regular file into a stream socket: sendfile(2), one syscall per chunk and
        # no pipe (what splice through a pipe would do in two).
        self.sendfile = (
            allow_splice
            and not src.read_pollable
            and isinstance(dst, SocketLeg)
            and not dst.datagram
            and src.read_fd >= 0
            and _is_regular(src.read_fd)
        )
        self.splice = (
            allow_splice
            and _SPLICE is not None
            and not src.datagram
            and not dst.datagram
            and src.read_fd >= 0
            and dst.write_fd >= 0
            and _splice_capable(src.read_fd, writing=False)
            and _splice_capable(dst.write_fd, writing=True)
        )

    # --- registration -----------------------------------------------------------------

    def begin(self) -> None:
        if not self.options.enabled:
            self.done = True
            self.pump.direction_done(self, eof_sent=False)
            return
        if self.src.read_fd < 0:
            self._finish_eof()
            return
        self._want_read(True)

    def _want_read(self, on: bool) -> None:  # noqa: FBT001
        if on == self.reading:
            return
        self.reading = on
        if not self.src.read_pollable:
            if on:
                self.loop.call_soon(self.on_readable)
            return
        if on:
            self.loop.add_reader(self.src.read_fd, self.on_readable)
        else:
            self.loop.remove_reader(self.src.read_fd)

    def _want_write(self, on: bool) -> None:  # noqa: FBT001
        if on == self.writing:
            return
        self.writing = on
        if not self.dst.write_pollable:
            if on:
                self.loop.call_soon(self.on_writable)
            return
        if on:
            self.loop.add_writer(self.dst.write_fd, self.on_writable)
        else:
            self.loop.remove_writer(self.dst.write_fd)

    def stop(self) -> None:
        """Unregister and release the pipe or buffer (the legs are the pump's)."""
        if self.delayed is not None:
            self.delayed.cancel()
            self.delayed = None
        if self.reading:
            self.reading = False
            if self.src.read_pollable and self.src.read_fd >= 0:
                self.loop.remove_reader(self.src.read_fd)
        if self.writing:
            self.writing = False
            if self.dst.write_pollable and self.dst.write_fd >= 0:
                self.loop.remove_writer(self.dst.write_fd)
        self._close_pipe()
        self.buffer = self.view = None
        self.done = True

    def _close_pipe(self) -> None:
        if self.pipe_r < 0:
            return
        if self.pending == 0 and self.splice:
            _give_pipe(self.pipe_r, self.pipe_w)  # empty: reusable
        else:
            os.close(self.pipe_r)
            os.close(self.pipe_w)
        self.pipe_r = self.pipe_w = -1

    # --- events -------------------------------------------------------------------------

    def on_readable(self) -> None:
        if not self.reading or self.done:
            return
        if not self.src.read_pollable:
            self.reading = False  # one step per call_soon; re-armed when wanted
            self._read_once()
            return
        # Read until the source has nothing more (EAGAIN), EOF or an error, or until the
        # destination is full. uvloop (libuv) calls a reader once more after an error
        # event and then stops polling the fd for good, so a reset queued behind data
        # must be read in that call or never. The budget bounds one wake-up (a socket
        # queues at most its receive buffer, a few MiB) so other connections get a turn.
        budget = _READ_BUDGET
        for _ in range(_READ_ROUNDS):
            if budget <= 0 or not self.reading or self.done:
                return
            moved = self._read_once()
            if moved < 0:
                return
            budget -= moved

    def _read_once(self) -> int:
        """One read (and the writes it allows); the bytes read, or -1 to stop for now."""
        try:
            if self.sendfile:
                n = self._send_file()
            else:
                n = self._splice_in() if self.splice else self._copy_in()
        except _AGAIN:
            if not self.src.read_pollable:
                self._want_read(True)
            return -1
        except OSError as error:
            if self.src.datagram and error.errno in _DATAGRAM_SOFT:
                self.pump.note_soft_error(self.src, error)
                if not self.src.read_pollable:
                    self._want_read(True)
                return -1
            self.pump.fail(self.src, error)
            return -1
        if n is None:
            return -1  # handled already (a datagram sent), or the pipe is full: flushing
        if n == 0 and not self.src.datagram:
            self.eof = True
            self._want_read(False)
            self.pump.saw_eof(self)
            if self.pending == 0:
                self._finish_eof()
            return -1
        self.pump.last_activity = self.loop.time()
        self._flush()
        return n

    def on_writable(self) -> None:
        if not self.writing or self.done:
            return
        if not self.dst.write_pollable:
            self.writing = False
        self._flush()

    # --- the two paths ------------------------------------------------------------------

    def _send_file(self) -> int | None:
        try:
            n = os.sendfile(self.dst.write_fd, self.src.read_fd, None, self.splice_size)
        except BlockingIOError:
            self._want_read(False)
            self._want_write(True)
            return None
        except OSError as error:
            if error.errno in _NO_SPLICE and self.count == 0:
                self.sendfile = False
                return self._splice_in() if self.splice else self._copy_in()
            self._write_failed(error)
            return None
        self.count += n
        return n

    def _splice_in(self) -> int | None:
        if self.pipe_w < 0:
            try:
                self.pipe_r, self.pipe_w = _take_pipe()
            except OSError as error:
                if error.errno not in {errno.EMFILE, errno.ENFILE}:
                    raise
                # No fd for a pipe: this direction copies instead (no fd needed).
                self._use_copy()
                return self._copy_in()
        assert _SPLICE is not None  # noqa: S101 (self.splice is False otherwise)
        try:
            n: int = _SPLICE(self.src.read_fd, self.pipe_w, self.splice_size, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            if self.pending:
                # The pipe is full (its page slots, even if not PIPE_SIZE bytes): the
                # source stays readable, so stop polling it until the pipe drains.
                self._want_read(False)
                self._want_write(True)
                return None
            self._close_pipe()  # nothing to read: the empty pipe goes back to the pool
            raise
        except OSError as error:
            if error.errno in _NO_SPLICE and self.count == 0 and self.pending == 0:
                self._use_copy()
                return self._copy_in()
            raise
        self.pending += n
        self.count += n
        return n

    def _copy_in(self) -> int | None:
        # Reading happens only when everything read before was written (pending == 0),
        # so the whole buffer is free and a datagram lands whole at its start.
        if self.view is None:
            self.buffer = bytearray(self.limit)
            self.view = memoryview(self.buffer)
        n = self.src.read_into(self.view[: self.limit])
        self.count += n
        if n and self.pump.tap is not None:
            self.pump.tap(self.index, bytes(self.view[:n]))
        if n and self.options.transform is not None:
            self.out = memoryview(self.options.transform(bytes(self.view[:n])))
            self.pending = len(self.out)
            if not self.pending:
                self.out = None
            return n
        if self.dst.datagram and (n or self.src.datagram):
            # One read, one datagram; a stream's EOF (0) is no datagram: it is EOF.
            self._write_datagram(n)
            return None
        self.pending = n
        return n

    def _use_copy(self) -> None:
        self.splice = False
        self._close_pipe()

    def _flush(self) -> None:
        """Write what is held; on a full destination stop reading and wait for it."""
        if self.dst.write_fd < 0 or self.options.discard:
            # Nowhere to write (a file being read), or asked to drop: counted, dropped.
            self.pending = 0
            self.out = None
        while self.pending:
            try:
                if self.splice:
                    assert _SPLICE is not None  # noqa: S101
                    n = _SPLICE(self.pipe_r, self.dst.write_fd, self.pending, flags=_SPLICE_FLAGS)
                else:
                    source = self.out if self.out is not None else self.view
                    assert source is not None  # noqa: S101
                    n = self.dst.write(source[self.start : self.start + self.pending])
            except _AGAIN:
                self._want_read(False)
                self._want_write(True)
                return
            except OSError as error:
                if self.splice and error.errno in _NO_SPLICE:
                    self._drain_pipe_into_buffer()
                    continue
                self._write_failed(error)
                return
            self.pending -= n
            self.start += n
        self.start = 0
        self.out = None
        if self.pipe_r >= 0:
            # Empty: back to the pool, so an idle connection holds no pipe (2 fds, not 6).
            self._close_pipe()
        self._want_write(False)
        if self.eof:
            self._finish_eof()
        elif self.options.delay is not None and not self.done:
            # -d: the next read waits; the read loop of on_readable sees reading off.
            self._want_read(False)
            if self.delayed is None:
                self.delayed = self.loop.call_later(self.options.delay, self._after_delay)
        elif not self.done:
            self._want_read(True)

    def _after_delay(self) -> None:
        self.delayed = None
        if not self.done:
            self.pump.last_activity = self.loop.time()
            self._want_read(True)

    def _drain_pipe_into_buffer(self) -> None:
        """splice() refused the destination mid-stream: move the pipe's bytes into a
        buffer and copy from now on."""
        data = b""
        while len(data) < self.pending:
            data += os.read(self.pipe_r, self.pending - len(data))
        self._use_copy()
        self.buffer = bytearray(max(self.limit, len(data)))
        self.buffer[: len(data)] = data
        self.view = memoryview(self.buffer)
        self.limit = len(self.buffer)
        self.start = 0

    def _write_datagram(self, n: int) -> None:
        """Send the ``n`` bytes just read as one datagram. A full send queue or an ICMP
        error drops this datagram only (UDP may lose datagrams; it never blocks)."""
        assert self.view is not None  # noqa: S101
        self.pump.last_activity = self.loop.time()
        try:
            if self.dst.write_fd >= 0:
                self.dst.write(self.view[:n])
        except _AGAIN:
            self.pump.note_soft_error(self.dst, OSError(errno.ENOBUFS, "send queue full"))
        except OSError as error:
            if error.errno not in _DATAGRAM_SOFT:
                self._write_failed(error)
                return
            self.pump.note_soft_error(self.dst, error)
        if self.options.delay is not None and not self.done:
            self._want_read(False)
            if self.delayed is None:
                self.delayed = self.loop.call_later(self.options.delay, self._after_delay)
        elif not self.src.read_pollable and not self.done:
            self._want_read(True)

    def _write_failed(self, error: OSError) -> None:
        if error.errno == errno.EPIPE and not isinstance(self.dst, SocketLeg):
            # A pipe or terminal we write to was closed by its reader (``| head -c1``,
            # a child that exited): nothing more can be delivered this way.
            self.pump.output_closed(self)
            return
        self.pump.fail(self.dst, error)

    def _finish_eof(self) -> None:
        if self.done:
            return
        self.stop()
        rule = self.options.eof
        if rule != "keep":
            try:
                self.dst.send_eof()
            except OSError as error:
                self.pump.fail(self.dst, error)
                return
        if rule == "end":
            self.pump.end_after_eof(self)
            return
        self.pump.direction_done(self, eof_sent=rule != "keep")


class Pump:
    """Relay between legs ``a`` and ``b`` until both directions end or one fails.

    ``await pump.run()`` returns a :class:`PumpResult` and leaves both legs closed.
    ``idle_timeout`` ends a connection with no bytes either way for that long;
    ``close_wait`` ends it that long after the first EOF (``None``: never, the other
    direction runs to its own EOF). ``splice=False`` forces the copy path.
    ``on_event(name, leg)`` is told ``"eof"``, ``"shutdown"``, ``"reset"``, ``"close"``
    as they happen (for ``--trace``).
    """

    def __init__(
        self,
        a: Leg,
        b: Leg,
        *,
        idle_timeout: float | None = None,
        close_wait: float | None = None,
        splice: bool = True,
        on_event: Callable[[str, Leg, str], None] | None = None,
        forward: DirectionOptions = _DEFAULT_DIRECTION,
        backward: DirectionOptions = _DEFAULT_DIRECTION,
        tap: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.a, self.b = a, b
        self.tap = tap
        self.loop = asyncio.get_running_loop()
        self.idle_timeout = idle_timeout
        self.close_wait = close_wait
        self.on_event = on_event
        self.forward = _Direction(self, a, b, allow_splice=splice, options=forward, index=0)
        self.backward = _Direction(self, b, a, allow_splice=splice, options=backward, index=1)
        self.last_activity = self.loop.time()
        self._finished: asyncio.Future[None] = self.loop.create_future()
        self._outcome = "eof"
        self._failed: Leg | None = None
        self._error: OSError | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._done_count = 0
        self._eofs = 0
        self.soft_errors = 0

    async def run(self) -> PumpResult:
        """Pump until the end; always closes both legs (also when cancelled)."""
        global _active_pumps  # noqa: PLW0603 (the pool's users, process-wide)
        started = time.monotonic()
        with _active_lock:
            _active_pumps += 1
        try:
            self.forward.begin()
            self.backward.begin()
            if self.idle_timeout is not None and not self._finished.done():
                self._timers.append(self.loop.call_later(self.idle_timeout, self._check_idle))
            await self._finished
        except asyncio.CancelledError:
            self._outcome = "cancelled"
            raise
        finally:
            # Only failures are aborted (a reset for socket peers); timeouts and EOFs
            # close normally, so the peers see FIN.
            self._end(abort=self._outcome in {"reset", "cancelled"})
            with _active_lock:
                _active_pumps -= 1
                if _active_pumps == 0:
                    _release_pool()
        return PumpResult(
            self.forward.count,
            self.backward.count,
            time.monotonic() - started,
            self._outcome,
            None if self._failed is None else self._failed.name,
            self._error,
        )

    # --- called by the directions -----------------------------------------------------------

    def direction_done(self, direction: _Direction, *, eof_sent: bool = True) -> None:
        """``direction`` delivered its EOF; the pump ends when both have."""
        if eof_sent:
            self._event("shutdown", direction.dst)
        self._done_count += 1
        if self._done_count == 2:
            self._set_finished()

    def saw_eof(self, direction: _Direction) -> None:
        """``direction``'s source sent EOF (the close-wait timer starts at the first)."""
        self._event("eof", direction.src)
        self._eofs += 1
        quit_after = direction.options.quit_after_eof
        if quit_after is not None:
            self._timers.append(self.loop.call_later(quit_after, self._quit_after_eof))
        if self._eofs == 1 and self.close_wait is not None:
            self._timers.append(self.loop.call_later(self.close_wait, self._close_wait_over))

    def fail(self, leg: Leg, error: OSError) -> None:
        """``leg`` broke (reset, broken pipe): end now and abort both legs."""
        if self._finished.done():
            return
        self._outcome = "reset"
        self._failed = leg
        self._error = error
        self._event("reset", leg)
        self._set_finished()

    def output_closed(self, direction: _Direction) -> None:
        """The reader of ``direction``'s destination went away: nothing more can be
        delivered there. The connection ends (without aborting the source: the data
        it still sends was refused, not lost in transit)."""
        if self._finished.done():
            return
        self._outcome = "output-closed"
        self._failed = direction.dst
        self._set_finished()

    def note_soft_error(self, leg: Leg, error: OSError) -> None:
        """A per-datagram error (ICMP unreachable, too large): counted, not fatal."""
        self.soft_errors += 1
        self._event("datagram-error", leg, os.strerror(error.errno or 0))
        # uvloop (libuv) stops polling a socket once it reported an error (the ICMP
        # error's EPOLLERR), silently: register it again after this callback.
        self.loop.call_soon(self._rearm, leg)

    def _rearm(self, leg: Leg) -> None:
        for direction in (self.forward, self.backward):
            if direction.src is leg and direction.reading and not direction.done:
                fd = leg.read_fd
                if fd >= 0 and leg.read_pollable:
                    self.loop.remove_reader(fd)
                    self.loop.add_reader(fd, direction.on_readable)

    # --- timers ---------------------------------------------------------------------------

    def _check_idle(self) -> None:
        assert self.idle_timeout is not None  # noqa: S101
        remaining = self.last_activity + self.idle_timeout - self.loop.time()
        if remaining > 0:
            self._timers.append(self.loop.call_later(remaining, self._check_idle))
            return
        if not self._finished.done():
            self._outcome = "idle"
            self._set_finished()

    def end_after_eof(self, direction: _Direction) -> None:
        """``direction``'s EOF ends the connection (its rule is ``"end"``): clean."""
        self._event("shutdown", direction.dst)
        self._set_finished()

    def _quit_after_eof(self) -> None:
        self._set_finished()  # a clean end the caller asked for (-q)

    def _close_wait_over(self) -> None:
        if not self._finished.done():
            self._outcome = "close-wait"
            self._set_finished()

    # --- the end ------------------------------------------------------------------------

    def _set_finished(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    def _end(self, *, abort: bool) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.forward.stop()
        self.backward.stop()
        for leg in (self.a, self.b):
            if leg.closed:
                continue
            if abort:
                leg.abort()
            else:
                leg.close()
            self._event("abort" if abort else "close", leg)

    def _event(self, name: str, leg: Leg, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(name, leg, detail)
