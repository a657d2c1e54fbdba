"""SocketFactory: where the sync layer gets sockets, waits for them and reads the clock.

Everything in ``sync/`` that creates a socket or waits for several at once goes through
a factory, so tests can substitute a deterministic one (:mod:`sockit.testing` ships a
fake with a virtual clock that records the start time of every connect attempt, and
injects ``accept`` errors for server tests). Production code uses
:data:`SYSTEM_SOCKET_FACTORY`.

Must never hold state about any particular connection.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Protocol, TypeAlias

SocketObject: TypeAlias = socket.socket
"""``socket.socket``, named so a method called ``socket`` does not shadow it."""

__all__ = ["SYSTEM_SOCKET_FACTORY", "SocketFactory", "SystemSocketFactory"]


class SocketFactory(Protocol):
    """What the sync layer needs from the operating system, as one replaceable object."""

    def socket(self, family: int, type: int, proto: int = 0) -> SocketObject:
        """Create a socket (``socket.socket(family, type, proto)``)."""
        ...

    def wait_writable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """Wait until at least one socket is writable (a non-blocking connect finished,
        successfully or not) or ``timeout`` seconds passed; return the ready ones
        (empty on timeout). ``timeout=None`` waits without limit."""
        ...

    def wait_readable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """Like :meth:`wait_writable`, for readability (a listener with a connection)."""
        ...

    def monotonic(self) -> float:
        """The clock deadlines are measured on (``time.monotonic``)."""
        ...


class SystemSocketFactory:
    """The real thing: ``socket.socket``, ``poll(2)`` and ``time.monotonic``.

    ``poll`` rather than ``select`` so file descriptors above 1023 work (FD_SETSIZE).
    """

    def socket(self, family: int, type: int, proto: int = 0) -> SocketObject:
        """See :meth:`SocketFactory.socket`."""
        return socket.socket(family, type, proto)

    def wait_writable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """See :meth:`SocketFactory.wait_writable`."""
        return _poll(sockets, select.POLLOUT, timeout)

    def wait_readable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """See :meth:`SocketFactory.wait_readable`."""
        return _poll(sockets, select.POLLIN, timeout)

    def monotonic(self) -> float:
        """See :meth:`SocketFactory.monotonic`."""
        return time.monotonic()


def _poll(sockets: list[SocketObject], events: int, timeout: float | None) -> list[SocketObject]:
    poller = select.poll()
    by_fd: dict[int, socket.socket] = {}
    for sock in sockets:
        fd = sock.fileno()
        by_fd[fd] = sock
        poller.register(fd, events)
    # poll() takes milliseconds; round up so a 0.1 ms remainder does not busy-loop.
    milliseconds = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    # ERR/HUP also end the wait: a failed connect reports POLLERR (and the caller reads
    # SO_ERROR), a closed listener POLLHUP.
    return [by_fd[fd] for fd, _ in poller.poll(milliseconds)]


SYSTEM_SOCKET_FACTORY: SocketFactory = SystemSocketFactory()
"""The factory every sync function uses unless given another one."""
