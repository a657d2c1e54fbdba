"""Waiting for socket readiness on the running event loop, with deadlines.

The readiness primitives every sockit.aio object that is *not* a stream transport
needs (listeners, datagram sockets, connect attempts): ``loop.add_reader`` /
``add_writer`` on non-blocking sockets, one future per waiting task, a deadline as a
``loop.call_at`` timer instead of a Task per call, and registrations dropped once
readiness finds nobody waiting (the loops are level-triggered: a registration nobody
consumes would wake the loop on every iteration).

Why not ``loop.sock_accept``/``sock_recvfrom``: uvloop does not implement
``sock_recvfrom`` at all, neither loop can report ``MSG_TRUNC``, and racing several
``sock_accept`` calls means cancelling the losers, where a cancellation that lands
after the kernel handed over a connection loses that connection.

Must never perform the I/O itself (the callers retry their non-blocking call after a
wake-up), never keep a registration that readiness found unused, and never keep one
after ``close()``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sockit.errors import ClosedResourceError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EXPIRED", "FdWatch", "expire", "wait_ready", "wait_writable"]

EXPIRED = object()
"""The result a waiter future gets when its deadline passed first."""


def expire(waiter: asyncio.Future[object]) -> None:
    """Timer callback: end ``waiter`` with :data:`EXPIRED` unless something else did."""
    if not waiter.done():
        waiter.set_result(EXPIRED)


class FdWatch:
    """Wakes the tasks waiting for one kind of readiness of a fixed set of fds.

    Several tasks may wait at once (concurrent ``accept`` or ``recvfrom`` calls); a
    readiness event wakes all of them and each retries its non-blocking call, the
    losers wait again. Readiness is a hint, never a promise.

    The fds are registered with the loop when the first task waits and stay registered
    while the socket is busy, so a server that waits again right after each call costs
    no ``epoll_ctl`` per call; they are unregistered the first time readiness finds
    nobody waiting (the loops are level-triggered: a registration nobody consumes would
    wake the loop on every iteration), and by :meth:`close`, which must be called
    before the sockets are closed (it also wakes every waiter, which then raises
    :class:`~sockit.ClosedResourceError`).
    """

    __slots__ = ("_closed", "_fds", "_loop", "_registered", "_waiters", "_writable")

    def __init__(self, fds: Sequence[int], *, writable: bool) -> None:
        self._fds = list(fds)
        self._writable = writable
        self._waiters: list[asyncio.Future[object]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._registered = False
        self._closed = False

    async def wait(self, deadline: float | None, operation: str) -> None:
        """Wait until one of the fds is ready, or raise.

        ``deadline`` is an absolute ``loop.time()``, or ``None`` for no limit. Raises
        ``TimeoutError`` once the deadline passed (at once if it already has) and
        :class:`~sockit.ClosedResourceError` if :meth:`close` was called.
        """
        if self._closed:
            raise ClosedResourceError(f"{operation} on a closed socket")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._waiters:
                raise RuntimeError(f"{operation}: the socket is in use by another event loop")
            self._unregister()  # from a previous loop, if it is still open
            self._loop = loop
        if deadline is not None and deadline <= loop.time():
            raise TimeoutError(f"{operation} timed out")
        waiter: asyncio.Future[object] = loop.create_future()
        self._waiters.append(waiter)
        timer = None
        try:
            if not self._registered:
                self._register(loop)
            if deadline is not None:
                timer = loop.call_at(deadline, expire, waiter)
            result = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if result is EXPIRED:
            raise TimeoutError(f"{operation} timed out")
        if self._closed:
            raise ClosedResourceError(f"{operation} interrupted: the socket was closed")

    def _register(self, loop: asyncio.AbstractEventLoop) -> None:
        add = loop.add_writer if self._writable else loop.add_reader
        registered: list[int] = []
        try:
            for fd in self._fds:
                add(fd, self._ready)
                registered.append(fd)
        except BaseException:
            remove = loop.remove_writer if self._writable else loop.remove_reader
            for fd in registered:
                remove(fd)
            raise
        self._registered = True

    def _unregister(self) -> None:
        if not self._registered or self._loop is None:
            return
        self._registered = False
        if self._loop.is_closed():
            return  # a closed loop dropped its registrations with it
        remove = self._loop.remove_writer if self._writable else self._loop.remove_reader
        for fd in self._fds:
            remove(fd)

    def _ready(self) -> None:
        waiters = self._waiters
        if not waiters:
            # Ready, and nobody waits: stop watching until somebody does.
            self._unregister()
            return
        self._waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Unregister the fds and wake every waiter (which then raises
        :class:`~sockit.ClosedResourceError`). Idempotent. Call before closing the
        sockets."""
        self._closed = True
        self._unregister()
        waiters = self._waiters
        self._waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def wait_writable(fds: Sequence[int], timeout: float | None) -> list[int]:
    """Wait until at least one of ``fds`` is writable (a non-blocking connect finished,
    successfully or not) or ``timeout`` seconds passed; return the ready fds in the
    order given (empty on timeout). ``timeout=None`` waits without limit.

    One waiter for all the fds; every writer is removed again before this returns,
    also when the waiting task is cancelled.
    """
    loop = asyncio.get_running_loop()
    if timeout is not None and timeout <= 0:
        return []
    ready: set[int] = set()
    waiter: asyncio.Future[object] = loop.create_future()

    def on_writable(fd: int) -> None:
        ready.add(fd)
        if not waiter.done():
            waiter.set_result(None)

    registered: list[int] = []
    timer = None
    try:
        for fd in fds:
            loop.add_writer(fd, on_writable, fd)
            registered.append(fd)
        if timeout is not None:
            timer = loop.call_later(timeout, expire, waiter)
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for fd in registered:
            loop.remove_writer(fd)
    return [fd for fd in fds if fd in ready]


async def wait_ready(fd: int, *, writable: bool = False, deadline: float | None = None) -> bool:
    """Wait once until ``fd`` is readable (``writable=True``: writable); ``True`` then,
    ``False`` if the loop's clock reached ``deadline`` (an absolute ``loop.time()``;
    ``None``: no limit) first.

    For code that drives one raw fd itself (the relay's handshakes and header reads);
    readiness is a hint: the caller retries its non-blocking call. The registration is
    removed before this returns, also when the waiting task is cancelled.
    """
    loop = asyncio.get_running_loop()
    if deadline is not None and deadline <= loop.time():
        return False
    waiter: asyncio.Future[object] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    add, remove = (
        (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    )
    add(fd, wake)
    timer = None if deadline is None else loop.call_at(deadline, expire, waiter)
    try:
        return await waiter is not EXPIRED
    finally:
        if timer is not None:
            timer.cancel()
        remove(fd)
