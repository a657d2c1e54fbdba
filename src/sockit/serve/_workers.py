"""``workers=N``: N processes serving one port, supervised by the parent.

**One pre-bound listener, inherited; not SO_REUSEPORT per worker.** The parent binds
once (the dual-stack pair, port 0 resolved to one port, a UNIX path, or sockets handed
over by systemd) and forks N workers that inherit the same listening sockets; the
kernel hands each queued connection to whichever worker accepts first. Why:

* the addresses are known before any worker starts, and ``port=0`` means one port;
* UNIX sockets and socket activation work the same way (``SO_REUSEPORT`` does not
  apply to a path, and systemd hands over one socket);
* a worker that dies loses nothing: connections queued on the shared socket wait for
  the others, whereas with ``SO_REUSEPORT`` each socket has its own queue, and the
  connections queued on a dying worker's socket are reset.

The price is a mild thundering herd (every idle worker's ``poll`` wakes for a new
connection, one ``accept`` wins, the rest see ``EAGAIN`` and wait again): negligible
with one worker per CPU, which is what ``workers`` is for.

**Supervision.** The parent waits on a pidfd per worker (Linux 5.3+; elsewhere it
checks every :data:`FALLBACK_POLL` seconds), so a crash is noticed at once. A worker
that dies while the server runs is logged and restarted in the same slot. A worker
that dies within :data:`CRASH_LOOP_WINDOW` seconds of its start waits longer before
each restart (0.1 s doubling to :data:`RESTART_DELAY_MAXIMUM`), so a crash loop costs
neither CPU nor a flood of log lines; one that ran longer is restarted at once.

**Shutdown.** ``stop_accepting`` closes the parent's copy of the listener and sends
``SIGTERM`` to every worker (each drains, see :meth:`sockit.serve.Server.serve_forever`);
``abort`` sends a second ``SIGTERM`` (each aborts its connections) and, after
:data:`WORKER_KILL_GRACE` seconds, ``SIGKILL``. Every worker is reaped. Signals go out
under the lock that reaping holds, so a reaped pid is never signalled.

**In the worker** (forked with ``SIGTERM``/``SIGINT`` blocked): the parent's Python
signal handlers are reset, the garbage collector frozen (inherited objects must not
be finalized: a socket's finalizer would close an fd number the worker reuses), and
every inherited *socket* is closed except the listening ones and the logging
handlers' (a restarted worker would otherwise hold the parent's connections open).
Other fds (log files, pipes such as libuv's signal pipe) are left alone: they cannot
keep a connection alive, and an event loop may need them. Counters live in a shared
anonymous mapping, one slice per worker, so the parent's ``stats`` and
``active_connections`` cover every worker.

Must never signal a pid it already reaped, leave a worker unreaped, or let a worker
return into the parent's code.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import mmap
import os
import select
import signal
import stat
import threading
import time
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sockit.serve._accept import Counters, ServerStats, Stat, Waker
from sockit.serve._fork import (
    block_shutdown_signals,
    describe_exit,
    flush_standard_streams,
    fork,
    logging_fds,
)
from sockit.serve._signals import SHUTDOWN_SIGNALS, reset_child_signals
from sockit.serve.exec import death_signal_setter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sockit.sync import SocketListener

__all__ = [
    "CRASH_LOOP_WINDOW",
    "FALLBACK_POLL",
    "RESTART_DELAY_INITIAL",
    "RESTART_DELAY_MAXIMUM",
    "WORKER_KILL_GRACE",
    "SharedCounters",
    "WorkersRunner",
    "close_inherited_sockets",
]

WORKER_KILL_GRACE = 2.0
"""Seconds between the second ``SIGTERM`` (abort) and ``SIGKILL`` for a worker."""
CRASH_LOOP_WINDOW = 1.0
"""A worker that dies sooner than this after its start is crash-looping."""
RESTART_DELAY_INITIAL = 0.1
RESTART_DELAY_MAXIMUM = 10.0
"""The longest wait before restarting a crash-looping worker (one log line per wait)."""
FALLBACK_POLL = 0.1
"""Without pidfds, how often the parent checks whether a worker died."""


class SharedCounters:
    """One :class:`Counters` slice per process in an anonymous shared mapping.

    Slot 0 is the parent's; worker ``i`` writes only slot ``i + 1``. The mapping has no
    fd; it is freed with this object.
    """

    def __init__(self, slots: int) -> None:
        self._slots = slots
        # MAP_SHARED | MAP_ANONYMOUS: forked children see the same pages.
        self._map = mmap.mmap(-1, 8 * Counters.SIZE * slots)
        self._cells = memoryview(self._map).cast("q")

    def slot(self, index: int) -> Counters:
        """The counters of slot ``index``."""
        start = index * Counters.SIZE
        return Counters(self._cells[start : start + Counters.SIZE])

    def total(self) -> ServerStats:
        """Every slot's counters, summed."""
        return reduce(
            lambda left, right: left + right,
            (self.slot(index).snapshot() for index in range(self._slots)),
            ServerStats(),
        )


def close_inherited_sockets(keep: Iterable[int]) -> None:
    """Close every socket fd of this process that is not in ``keep``."""
    kept = set(keep)
    try:
        candidates = [int(entry.name) for entry in Path("/proc/self/fd").iterdir()]
    except OSError:
        limit = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024
        candidates = list(range(3, max(limit, 3)))
    for fd in candidates:
        if fd in kept or fd < 3:
            continue
        try:
            is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            continue  # the fd used to list the directory, closed meanwhile
        if is_socket:
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class _Worker:
    slot: int
    pid: int
    started: float
    pidfd: int


def _pidfd_open(pid: int) -> int:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return -1
    try:
        return int(opener(pid))
    except OSError:
        return -1  # kernel older than 5.3, or seccomp says no: poll instead


class WorkersRunner:
    """The parent of ``workers=N``: a :class:`sockit.serve.server.ModeRunner` whose
    "connections" are worker processes (see the module docstring).

    ``run_worker(counters)`` runs in each worker, in its main thread, and serves until
    the worker is told to stop; it must not return before that.
    """

    def __init__(
        self,
        *,
        count: int,
        listener: SocketListener,
        logger: logging.Logger,
        shared: SharedCounters,
        run_worker: Callable[[Counters], None],
    ) -> None:
        self._count = count
        self._listener = listener
        self._logger = logger
        self._shared = shared
        self._counters = shared.slot(0)
        self._run_worker = run_worker
        self._lock = threading.Lock()
        self._waker = Waker()
        self._workers: dict[int, _Worker] = {}
        self._restart_at: dict[int, float] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False
        self._aborting = False
        self._kill_at = math.inf
        self._killed = False
        self._parent = os.getpid()

    @property
    def pids(self) -> list[int]:
        """The pids of the live workers."""
        with self._lock:
            return sorted(self._workers)

    # --- ModeRunner ------------------------------------------------------------------

    def serve(self) -> None:
        """Start the workers and keep them running until :meth:`stop_accepting`."""
        for slot in range(self._count):
            self._start(slot)
        self._supervise(until_stopping=True)

    def stop_accepting(self) -> None:
        """Close the parent's listener and tell every worker to drain (``SIGTERM``)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._restart_at.clear()
            self._listener.close()
            self._signal_workers(signal.SIGTERM)
        self._waker.poke()

    def abort(self) -> None:
        """Tell every worker to abort (a second ``SIGTERM``); ``SIGKILL`` after
        :data:`WORKER_KILL_GRACE` seconds."""
        with self._lock:
            if self._aborting:
                return
            self._aborting = True
            self._signal_workers(signal.SIGTERM)
            self._kill_at = time.monotonic() + WORKER_KILL_GRACE
        self._waker.poke()

    def wait_closed(self) -> None:
        """Block until every worker has exited and been reaped."""
        try:
            self._supervise(until_stopping=False)
        finally:
            self._waker.close()

    # --- supervision -----------------------------------------------------------------

    def _signal_workers(self, signum: int) -> None:
        # With the lock held: a pid in _workers is not reaped, so it is still ours.
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _supervise(self, *, until_stopping: bool) -> None:
        # Each round waits for an event (a worker died, a stop or abort request) or the
        # next timer (a restart or the SIGKILL deadline): no polling with pidfds.
        while True:
            with self._lock:
                if until_stopping and self._stopping:
                    return
                if not until_stopping and not self._workers:
                    return
                pidfds = [worker.pidfd for worker in self._workers.values()]
                next_restart = min(self._restart_at.values(), default=math.inf)
                kill_at = math.inf if self._killed else self._kill_at
            now = time.monotonic()
            if now >= kill_at:
                with self._lock:
                    self._killed = True
                    self._signal_workers(signal.SIGKILL)
                continue
            if now >= next_restart:
                self._restart_due(now)
                continue
            timeout = min(next_restart, kill_at) - now
            if any(fd < 0 for fd in pidfds):
                timeout = min(timeout, FALLBACK_POLL)
            self._wait(pidfds, timeout)
            self._reap()

    def _wait(self, pidfds: list[int], timeout: float) -> None:
        poller = select.poll()
        poller.register(self._waker.socket, select.POLLIN)
        for fd in pidfds:
            if fd >= 0:
                poller.register(fd, select.POLLIN)
        poller.poll(None if math.isinf(timeout) else math.ceil(timeout * 1000))
        self._waker.drain()

    def _reap(self) -> None:
        exited: list[tuple[_Worker, int]] = []
        with self._lock:
            for pid, worker in list(self._workers.items()):
                try:
                    reaped, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    reaped, status = pid, 0
                if reaped == 0:
                    continue
                del self._workers[pid]
                if worker.pidfd >= 0:
                    os.close(worker.pidfd)
                exited.append((worker, status))
            stopping = self._stopping
        for worker, status in exited:
            self._after_exit(worker, status, stopping=stopping)

    def _after_exit(self, worker: _Worker, status: int, *, stopping: bool) -> None:
        lived = time.monotonic() - worker.started
        how = describe_exit(status)
        if stopping:
            level = logging.DEBUG if os.waitstatus_to_exitcode(status) == 0 else logging.WARNING
            self._logger.log(level, "worker %d (pid %d) %s", worker.slot, worker.pid, how)
            return
        # Its connections died with it; a new worker starts with none.
        self._shared.slot(worker.slot + 1).set(Stat.ACTIVE, 0)
        delay = 0.0
        if lived < CRASH_LOOP_WINDOW:
            previous = self._delays.get(worker.slot, 0.0)
            delay = min(max(previous * 2, RESTART_DELAY_INITIAL), RESTART_DELAY_MAXIMUM)
        self._delays[worker.slot] = delay
        self._logger.warning(
            "worker %d (pid %d) %s after %.1f s; restarting it%s",
            worker.slot,
            worker.pid,
            how,
            lived,
            f" in {delay:.1f} s" if delay else "",
        )
        with self._lock:
            if not self._stopping:
                self._restart_at[worker.slot] = time.monotonic() + delay

    def _restart_due(self, now: float) -> None:
        with self._lock:
            due = [slot for slot, at in self._restart_at.items() if at <= now]
            for slot in due:
                del self._restart_at[slot]
        for slot in due:
            self._counters.add(Stat.RESTARTS)
            self._start(slot)

    def _start(self, slot: int) -> None:
        with block_shutdown_signals(), self._lock:
            if self._stopping:
                return
            pid = fork()
            if pid == 0:
                self._child(slot)
            self._workers[pid] = _Worker(slot, pid, time.monotonic(), _pidfd_open(pid))
        self._logger.debug("worker %d started (pid %d)", slot, pid)

    # --- in the worker -----------------------------------------------------------------

    def _child(self, slot: int) -> NoReturn:
        code = 1
        try:
            gc.freeze()
            reset_child_signals(terminate=None)
            # A parent killed outright (SIGKILL) cannot stop its workers: the kernel
            # sends each one SIGTERM instead (PR_SET_PDEATHSIG), so none is orphaned.
            set_death_signal = death_signal_setter()
            if set_death_signal is not None:
                set_death_signal()
                if os.getppid() != self._parent:  # the parent died before that line
                    os.kill(os.getpid(), signal.SIGTERM)
            keep = {sock.fileno() for sock in self._listener.sockets} | logging_fds()
            close_inherited_sockets(keep)
            counters = self._shared.slot(slot + 1)
            counters.set(Stat.ACTIVE, 0)
            # SIGTERM may be pending (the parent is stopping): with the default action
            # it ends this worker, which has no connection yet; after the server below
            # installed its handlers, it drains.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SHUTDOWN_SIGNALS)
            self._run_worker(counters)
            code = 0
        except BaseException:
            with contextlib.suppress(BaseException):
                self._logger.exception("worker %d failed", slot)
        finally:
            flush_standard_streams()
            os._exit(code)
