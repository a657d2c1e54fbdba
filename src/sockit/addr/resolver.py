"""Name resolution: the Resolver interface and the standard-library implementation.

``socket.getaddrinfo`` blocks with no timeout of its own, and a thread blocked in it
cannot be interrupted. So :class:`StdlibResolver` runs lookups of *names* in a small pool
of worker threads and waits for the answer in the calling thread, which can then give
up after a timeout or be interrupted by Ctrl-C. IP literals and the wildcard need no
lookup and are answered synchronously with ``AI_NUMERICHOST``, without a thread.

This module must never contact anything but the system resolver (``getaddrinfo``),
never send an IP literal or the wildcard to a thread, and never make a caller wait
longer than the ``timeout`` it gave.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import socket
import threading
import weakref
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from sockit.addr._address import AddrInfo
from sockit.addr.hosts import check_host, is_ip_literal
from sockit.addr.ports import parse_port
from sockit.errors import ResolutionError

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "RESOLVER_THREAD_NAME_PREFIX",
    "Resolver",
    "StdlibResolver",
    "close_default_resolver",
    "default_resolver",
]

RESOLVER_THREAD_NAME_PREFIX = "sockit-resolver"
"""Worker threads are named ``sockit-resolver_N`` (leak checks may allow-list them)."""

# Lookups in flight at once. Each blocked getaddrinfo holds a thread, so the bound caps
# threads when a DNS server is dead; 4 is what a client needs (a couple of names at a
# time, Happy Eyeballs resolves both families in one call) without starving others.
DEFAULT_MAX_WORKERS = 4

# Avoid a services(5) lookup for the port we always pass as a number.
_AI_NUMERICSERV: int = getattr(socket, "AI_NUMERICSERV", 0)


class Resolver(Protocol):
    """Turns a checked host and a port into addresses (``getaddrinfo`` semantics)."""

    def getaddrinfo(
        self,
        host: str | None,
        port: int,
        *,
        family: int = 0,
        type: int = socket.SOCK_STREAM,
        flags: int = 0,
        timeout: float | None = None,
    ) -> list[AddrInfo]:
        """Resolve ``host`` (``None`` = wildcard/loopback per ``AI_PASSIVE``) and ``port``.

        ``host`` must already have been through :func:`~sockit.addr.check_host`;
        ``port`` is an ``int`` 0..65535. ``timeout`` is in seconds, ``None`` or
        ``math.inf`` to wait as long as the system resolver takes. Answers come in the
        resolver's order (RFC 6724), never empty.

        Raises:
            ResolutionError: the name does not resolve; the ``socket.gaierror`` is the
                ``__cause__`` and the message names the host and the reason.
            TimeoutError: no answer within ``timeout``; the message names the host.
            AddressError: ``port`` is out of range (checked before any lookup).
        """


class StdlibResolver:
    """A :class:`Resolver` using ``socket.getaddrinfo`` in a bounded pool of threads.

    * At most ``max_workers`` lookups run at once; more wait their turn (their wait
      counts against their timeout).
    * Threads are created lazily, on the first lookup of a name, are daemon threads
      (a stuck lookup never keeps the process alive at exit or after Ctrl-C) and are
      named ``sockit-resolver_N``. They stay until :meth:`close`.
    * A timed-out lookup keeps running in its worker until the system gives up (glibc:
      ``timeout`` x ``attempts`` of resolv.conf(5)); its answer is dropped.
    * Safe to use from several threads at once, and after ``fork()`` in the child.

    ``check_host`` is applied to every host (it is idempotent and cheap), so a host
    that bypassed it cannot slip IPv4 shorthand to ``inet_aton``.
    """

    def __init__(self, *, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._pool: _DaemonPool | None = None
        _live_resolvers.add(self)

    def getaddrinfo(
        self,
        host: str | None,
        port: int,
        *,
        family: int = 0,
        type: int = socket.SOCK_STREAM,
        flags: int = 0,
        timeout: float | None = None,
    ) -> list[AddrInfo]:
        """See :meth:`Resolver.getaddrinfo`. Literals and ``None`` use no thread."""
        if isinstance(port, bool) or not isinstance(port, int):
            # (the parameter named "type" hides the builtin here)
            raise TypeError(f"port must be an int, not {port.__class__.__name__}")
        parse_port(port)
        wait = _check_timeout(timeout)
        if host is None:
            return _lookup(None, port, family, type, flags, display_host="the wildcard address")
        checked = check_host(host)
        if is_ip_literal(checked):
            flags |= socket.AI_NUMERICHOST
            return _lookup(checked, port, family, type, flags, display_host=checked)
        with self._lock:
            if self._pool is None:
                self._pool = _DaemonPool(self._max_workers, RESOLVER_THREAD_NAME_PREFIX)
            future = self._pool.submit(
                functools.partial(_lookup, checked, port, family, type, flags, display_host=host)
            )
        # Imported here: concurrent.futures (with logging) costs more at start-up than
        # the rest of sockit.addr, and only lookups of names need it.
        from concurrent.futures import wait as wait_for  # noqa: PLC0415

        # The wait happens in the calling thread, in a lock acquire. On POSIX, lock
        # acquires are interrupted by signals (Python 3.2+), so Ctrl-C raises
        # KeyboardInterrupt here at once, while the worker, which cannot be
        # interrupted inside getaddrinfo, finishes on its own and is ignored.
        try:
            done, _ = wait_for((future,), timeout=wait)
        finally:
            # A lookup still queued (all workers busy) is dropped, never started.
            future.cancel()
        if not done:
            raise TimeoutError(f"resolving {host!r} timed out after {timeout:g} seconds")
        return future.result()

    def close(self) -> None:
        """Stop the worker threads, waiting for the lookups they are running.

        Lookups already submitted still complete. Idempotent. The resolver stays
        usable: a later lookup of a name starts new threads. The wait is bounded by
        the system resolver's own timeouts.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    def _forget_after_fork(self) -> None:
        # The child has only the forking thread: the workers and whoever held the lock
        # do not exist there. Start again from nothing.
        self._lock = threading.Lock()
        self._pool = None


_default_lock = threading.Lock()
_default: StdlibResolver | None = None
_live_resolvers: weakref.WeakSet[StdlibResolver] = weakref.WeakSet()


def default_resolver() -> Resolver:
    """The process-wide :class:`StdlibResolver`, created on first use.

    Its worker threads are daemon threads that live for the process (or until
    :func:`close_default_resolver`); they are named ``sockit-resolver_N``.
    """
    global _default  # noqa: PLW0603 - one lazily created resolver per process
    with _default_lock:
        if _default is None:
            _default = StdlibResolver()
        return _default


def close_default_resolver() -> None:
    """Stop the default resolver's threads, if it has any (see :meth:`StdlibResolver.close`).

    Does not create the default resolver. Idempotent; later lookups restart threads.
    """
    with _default_lock:
        resolver = _default
    if resolver is not None:
        resolver.close()


def _after_fork_in_child() -> None:
    global _default_lock  # noqa: PLW0603 - a lock held at fork time stays held in the child
    _default_lock = threading.Lock()
    for resolver in list(_live_resolvers):
        resolver._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None or timeout == math.inf:
        # Event.wait(math.inf) raises OverflowError; None is "forever".
        return None
    if not timeout >= 0:  # also catches NaN
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return float(timeout)


def _lookup(
    host: str | None, port: int, family: int, type_: int, flags: int, *, display_host: str
) -> list[AddrInfo]:
    """``socket.getaddrinfo`` with errors translated; runs in a worker or inline."""
    try:
        # bytes, not str: CPython would run a str through its IDNA 2003 codec, and the
        # host is already in its final ASCII form.
        answers = socket.getaddrinfo(
            None if host is None else host.encode("ascii"),
            port,
            family,
            type_,
            0,
            flags | _AI_NUMERICSERV,
        )
    except socket.gaierror as exc:
        raise ResolutionError(display_host, exc.strerror or str(exc), gai_errno=exc.errno) from exc
    return [AddrInfo(*answer) for answer in answers]


_T = TypeVar("_T")
_WorkItem: TypeAlias = "tuple[Future[Any], Callable[[], Any]]"


class _DaemonPool:
    """At most ``max_workers`` daemon threads running submitted calls, FIFO.

    Not ``concurrent.futures.ThreadPoolExecutor``: since Python 3.9 its workers are
    non-daemon threads joined at interpreter exit, so one getaddrinfo stuck on a dead
    DNS server would keep the process alive after a timeout or a Ctrl-C. Threads start
    on demand, like the executor's (a new one only when none is idle).
    """

    def __init__(self, max_workers: int, name_prefix: str) -> None:
        self._max_workers = max_workers
        self._name_prefix = name_prefix
        self._work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []

    def submit(self, function: Callable[[], _T]) -> Future[_T]:
        """Queue ``function()``; the caller serialises submit() and shutdown()."""
        from concurrent.futures import Future  # noqa: PLC0415 - see getaddrinfo()

        future: Future[_T] = Future()
        self._work.put((future, function))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
            thread = threading.Thread(
                target=_work_loop,
                args=(self._work, self._idle),
                name=f"{self._name_prefix}_{len(self._threads)}",
                daemon=True,
            )
            # Recorded before start(): a KeyboardInterrupt raised while start() waits
            # for the thread to run must not leave a worker that shutdown() misses.
            self._threads.append(thread)
            thread.start()
        return future

    def shutdown(self) -> None:
        """Let queued work finish, then stop and join every thread. Call once."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            if thread.ident is not None:  # never started if start() itself was interrupted
                thread.join()


def _work_loop(work: queue.SimpleQueue[_WorkItem | None], idle: threading.Semaphore) -> None:
    # Bounded by shutdown(): it queues one None per thread after all real work.
    while (item := work.get()) is not None:
        future, function = item
        if future.set_running_or_notify_cancel():
            try:
                result = function()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)
            else:
                future.set_result(result)
        # Drop references while idle, so no answer or traceback is kept alive by us.
        del future, function, item
        idle.release()
