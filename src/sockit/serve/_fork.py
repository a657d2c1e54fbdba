"""Fork mode: one child process per connection, every child reaped, a clean slate in each.

**The parent** accepts (the shared loop of :mod:`sockit.serve._accept`), forks, records
the child and closes its own copy of the connection at once, so the connection ends
when the child ends and the parent's fd count does not grow. ``max_connections``
counts live children.

**Reaping, and why this way.** A ``SIGCHLD`` handler can only be installed from the
main thread and is process-wide (it would fight with the program's own, and with
``subprocess``); ``waitpid(-1)`` reaps children that are not ours (a ``subprocess.Popen``
elsewhere in the program would lose its exit status, and ``multiprocessing``'s helpers
theirs). So the parent only ever waits for pids it forked, in a reaper thread:

* each child writes its pid to a pipe just before it exits; the reaper reads it and
  reaps that pid with ``waitpid(pid, WNOHANG)``; a child that announced its exit but
  is still tearing down is checked again every :data:`EXITING_POLL` seconds (never
  waited for one by one: a child slow to exit must not keep the dead ones behind it
  zombies), so a normal exit is reaped within milliseconds;
* a child killed before it could write (``SIGKILL``, a crash) is found by a sweep of
  ``waitpid(pid, WNOHANG)`` over the live children every :data:`SWEEP_INTERVAL`
  seconds, so no zombie outlives it by more than that.

Forking and recording the pid happen under the lock the reaper holds while it reaps,
and every signal the parent sends goes out under that lock too: a pid is never
signalled after it was reaped (when it could already belong to another process).

**The child** (:meth:`ForkMode._child`) blocks nothing the parent needed: it freezes the
garbage collector (objects inherited from the parent must not be finalized in the
child: a socket's finalizer would close an fd number the child may reuse), resets the
parent's signal handlers (``SIGTERM`` becomes "abort this connection with an RST and
exit"; ``SIGINT`` is ignored, the parent decides), closes every inherited fd except
0, 1, 2, the connection, the exit-notification pipe and the fds of the logging
handlers (so the handler can still log; ``os.closerange`` around the kept ones), runs
the connection, and leaves with ``os._exit`` (never through the parent's code, its
``atexit`` handlers or its buffers). Its exit status tells the parent what happened
(:data:`EXIT_HANDLER_FAILED` is counted in ``stats.errors``).

**Forking a threaded process** (the server accepts in a thread, and the program may
have others) copies only the forking thread; a lock another thread held at that moment
stays locked in the child. The child therefore runs nothing but the connection: the
logging module re-creates its locks after a fork, the server's own locks are never
touched in the child, and a handler must not wait on locks of the parent's other
threads. Python 3.12 warns about every such fork (a ``DeprecationWarning``); this mode
forks on purpose, with those precautions, so :func:`fork` silences that one warning.

Must never wait for a pid it did not fork, signal a pid it already reaped, or let a
child return into the parent's code.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import math
import os
import select
import signal
import struct
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, NoReturn

from sockit.addr.binding import set_linger_zero
from sockit.serve._accept import (
    Connection,
    Stat,
    SyncAcceptRunner,
    run_connection,
)
from sockit.serve._signals import SHUTDOWN_SIGNALS, reset_child_signals, signal_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import FrameType

    from sockit.serve.server import ServeContext

__all__ = [
    "EXITING_POLL",
    "EXIT_ABORTED",
    "EXIT_HANDLER_FAILED",
    "EXIT_OK",
    "EXIT_SETUP_FAILED",
    "FORK_ABORT_GRACE",
    "SWEEP_INTERVAL",
    "ForkMode",
    "block_shutdown_signals",
    "close_foreign_fds",
    "describe_exit",
    "fork",
    "logging_fds",
]

SWEEP_INTERVAL = 0.5
EXITING_POLL = 0.005
"""How often a child that announced its exit is checked again until it is gone."""
"""How often the reaper looks for children that died without telling (killed)."""
FORK_ABORT_GRACE = 1.0
"""Seconds between the ``SIGTERM`` that aborts a child's connection and ``SIGKILL``."""

EXIT_OK = 0
EXIT_HANDLER_FAILED = 1
"""The handler raised (the child logged it)."""
EXIT_SETUP_FAILED = 2
"""The child could not even start the handler."""
EXIT_ABORTED = 3
"""The child's connection was aborted by ``SIGTERM`` (server shutdown)."""

_PID = struct.Struct("=i")
# A pid of 0 on the notification pipe means "look again" (a new child, or stop).
_WAKE = _PID.pack(0)


def logging_fds() -> set[int]:
    """The fds the logging handlers of this process write to (streams and sockets), so
    a child that closes inherited fds can keep logging."""
    fds: set[int] = set()
    loggers: list[logging.Logger] = [logging.getLogger()]
    known = logging.Logger.manager.loggerDict.values()
    loggers.extend(item for item in known if isinstance(item, logging.Logger))
    for logger in loggers:
        for handler in logger.handlers:
            for attribute in ("stream", "sock", "socket"):
                target = getattr(handler, attribute, None)
                fileno = getattr(target, "fileno", None)
                if not callable(fileno):
                    continue
                try:
                    fd = fileno()
                except (OSError, ValueError, io.UnsupportedOperation):
                    continue
                if isinstance(fd, int) and fd >= 0:
                    fds.add(fd)
    return fds


def _max_fd() -> int:
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        limit = -1
    return limit if limit > 0 else 65536


def close_foreign_fds(keep: Iterable[int]) -> None:
    """Close every fd but 0, 1, 2 and ``keep`` (``os.closerange`` around the kept ones,
    which is one ``close_range(2)`` call per gap on Linux)."""
    kept = sorted({0, 1, 2, *(fd for fd in keep if fd >= 0)})
    low = 0
    for fd in kept:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(_max_fd(), low))


@contextlib.contextmanager
def block_shutdown_signals() -> Iterator[None]:
    """Block ``SIGTERM``/``SIGINT`` in this thread around a fork: the child then starts
    with them blocked, and receives a pending one only after it installed its own
    handlers (never the parent's, which act on the parent's objects)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def fork() -> int:
    """``os.fork()`` without Python 3.12's warning about forking a threaded process
    (see the module docstring for why serve may)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning
        )
        return os.fork()


def describe_exit(status: int) -> str:
    """``exited with status 1`` / ``killed by SIGKILL`` from a ``waitpid`` status."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal_name(-code)}"
    return f"exited with status {code}"


def flush_standard_streams() -> None:
    """Flush Python's stdout/stderr buffers before ``os._exit`` (which would drop them)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


class ForkMode(SyncAcceptRunner):
    """A child process per connection; see the module docstring."""

    def __init__(self, context: ServeContext) -> None:
        super().__init__(context)
        # pid -> when it was forked (for the log when one dies oddly).
        self._children: dict[int, float] = {}
        self._aborting = False
        self._reaper: threading.Thread | None = None
        self._reaper_stop = False
        self._notify_read, self._notify_write = os.pipe()
        # Non-blocking both ways: a child never blocks on a full pipe (the sweep finds
        # it anyway), and the reaper reads only what is there.
        os.set_blocking(self._notify_read, False)
        os.set_blocking(self._notify_write, False)

    # --- ModeRunner ------------------------------------------------------------------

    def serve(self) -> None:
        """See :meth:`SyncAcceptRunner.serve`; also runs the reaper thread."""
        self._reaper = threading.Thread(target=self._reap_loop, name="sockit-reaper")
        self._reaper.start()
        super().serve()

    def wait_closed(self) -> None:
        """Block until every child has been reaped, then stop the reaper."""
        # Bounded by the abort (SIGTERM, then SIGKILL) the server sends after the drain
        # timeout; the timeout only re-checks, in case the reaper thread died.
        while True:
            with self._changed:
                if not self._children:
                    break
                self._changed.wait(SWEEP_INTERVAL)
            if self._reaper is None or not self._reaper.is_alive():
                self._sweep()
        super().wait_closed()
        with self._lock:
            self._reaper_stop = True
        self._wake_reaper()
        if self._reaper is not None:
            self._reaper.join()
        os.close(self._notify_read)
        os.close(self._notify_write)

    def abort(self) -> None:
        """``SIGTERM`` every child (it aborts its connection with an RST and exits);
        ``SIGKILL`` the ones still there after :data:`FORK_ABORT_GRACE` seconds."""
        with self._lock:
            self._aborting = True
            self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + FORK_ABORT_GRACE
        with self._changed:
            while self._children:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            self._signal_children(signal.SIGKILL)

    def _signal_children(self, signum: int) -> None:
        # Called with the lock held: a pid in _children is not reaped yet, so it is
        # still our child (alive or a zombie) and cannot have been reused.
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # --- the parent's side -----------------------------------------------------------

    def _dispatch(self, connection: Connection) -> None:
        stream = connection.stream
        with block_shutdown_signals(), self._lock:
            pid = fork()
            if pid == 0:
                self._child(connection)
            was_idle = not self._children
            self._children[pid] = time.monotonic()
            self._counters.add(Stat.ACTIVE)
        # The child has its own copy; ours would keep the connection open after the
        # child is done (and count against our fds).
        stream.close()
        if was_idle:
            # The reaper sleeps without a timeout while there are no children; make it
            # start sweeping (a child killed with SIGKILL never writes its pid).
            self._wake_reaper()

    def _wake_reaper(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._notify_write, _WAKE)

    def _reap_loop(self) -> None:
        poller = select.poll()
        poller.register(self._notify_read, select.POLLIN)
        pending = bytearray()
        # Children that said they are exiting but were still running when last checked.
        # They are re-checked every EXITING_POLL rather than waited for one by one: a
        # child slow to exit (a loaded machine, a large process tearing down) must not
        # hold up the reaping of the ones already dead behind it.
        exiting: set[int] = set()
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while True:
            with self._lock:
                if self._reaper_stop and not self._children:
                    return
                live = bool(self._children)
            timeout: float | None = None
            if live:
                timeout = max(0.0, next_sweep - time.monotonic())
                if exiting:
                    timeout = min(timeout, EXITING_POLL)
            events = poller.poll(None if timeout is None else math.ceil(timeout * 1000))
            if events:
                try:
                    pending += os.read(self._notify_read, 4096)
                except BlockingIOError:
                    pass
                whole = len(pending) - len(pending) % _PID.size
                exiting.update(pid for (pid,) in _PID.iter_unpack(pending[:whole]) if pid > 0)
                del pending[:whole]
            for pid in list(exiting):
                if not self._collect(pid):
                    continue
                exiting.discard(pid)
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep()
                next_sweep = now + SWEEP_INTERVAL

    def _sweep(self) -> None:
        with self._lock:
            pids = list(self._children)
        for pid in pids:
            self._collect(pid)

    def _collect(self, pid: int) -> bool:
        """Reap ``pid`` if it is our child and has exited. Returns False only for a
        child of ours that is still running (so the caller checks it again)."""
        with self._changed:
            started = self._children.get(pid)
            if started is None:
                # Not ours (a grandchild the handler forked wrote its own pid) or
                # already reaped by the sweep.
                return True
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                # Someone else's waitpid(-1) took it; it is gone either way.
                reaped, status = pid, 0
            if reaped == 0:
                return False
            del self._children[pid]
            self._closes += 1
            self._changed.notify_all()
            aborting = self._aborting
        self._counters.add(Stat.ACTIVE, -1)
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_HANDLER_FAILED:
            self._counters.add(Stat.ERRORS)
        elif code not in (EXIT_OK, EXIT_ABORTED) and not aborting:
            self._logger.warning(
                "connection process %d %s after %.1f s",
                pid,
                describe_exit(status),
                time.monotonic() - started,
            )
        if self._waiting_for_close:
            self._waker.poke()
        return True

    # --- the child's side -------------------------------------------------------------

    def _child(self, connection: Connection) -> NoReturn:
        code = EXIT_SETUP_FAILED
        notify = self._notify_write
        try:
            gc.freeze()
            sock = connection.stream.socket

            def terminate(signum: int, frame: FrameType | None) -> None:
                del signum, frame  # part of the signal handler signature
                set_linger_zero(sock)  # the kernel sends RST when the child exits
                _exit_child(notify, EXIT_ABORTED)

            reset_child_signals(terminate=terminate)
            close_foreign_fds({connection.stream.fileno(), notify, *logging_fds()})
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SHUTDOWN_SIGNALS)
            succeeded = run_connection(self._context, connection, None)
            code = EXIT_OK if succeeded else EXIT_HANDLER_FAILED
        except BaseException:
            with contextlib.suppress(BaseException):
                self._logger.exception("connection process for %s failed", connection.label)
        finally:
            _exit_child(notify, code)


def _exit_child(notify: int, code: int) -> NoReturn:
    """Tell the parent's reaper, flush what Python buffered, and leave at once."""
    with contextlib.suppress(OSError):
        os.write(notify, _PID.pack(os.getpid()))
    flush_standard_streams()
    os._exit(code)
