"""Fault injection for server tests: real sockets whose ``accept()`` fails on demand.

``FaultySocketFactory`` is a :class:`sockit.sync.SocketFactory` that hands out real
sockets and waits with the real ``poll``, so a server built on it binds, listens and
serves over real loopback connections. Its sockets' ``accept()`` raises the errors a
test scripted with :meth:`FaultySocketFactory.fail_accepts`, one per call, the way
accept(2) would:

* only when a connection is really queued (an empty queue gives ``EAGAIN``, as the
  kernel does; otherwise a server's spurious wake-ups would use up the script);
* with ``consume=True`` the queued connection is taken and reset first, as when the
  kernel reports ``ECONNABORTED``/``EPROTO``/``EPERM`` for a connection that died in
  the queue or that a firewall refused; with ``consume=False`` (resource errors:
  ``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) it stays queued, as it does when the
  process cannot get an fd for it.

Every error raised is recorded in :attr:`FaultySocketFactory.raised`, so a test can
prove the fault really happened.

Must never touch any address but the ones the test binds: it adds failures, nothing
else.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
from dataclasses import dataclass
from typing import Any, TypeAlias

from sockit.addr.binding import set_linger_zero
from sockit.sync import SYSTEM_SOCKET_FACTORY

SocketObject: TypeAlias = socket.socket
"""``socket.socket``, named so a method called ``socket`` does not shadow it."""

__all__ = ["AcceptFault", "FaultySocket", "FaultySocketFactory"]


@dataclass(frozen=True)
class AcceptFault:
    """One scripted ``accept()`` failure."""

    errno: int
    consume: bool = False


class FaultySocket(socket.socket):
    """A real socket whose ``accept()`` fails as its factory's script says."""

    _faults: FaultySocketFactory

    def accept(self) -> tuple[socket.socket, Any]:
        """``socket.accept``, unless a fault is scheduled and a connection is queued."""
        fault = self._faults._take_fault(self)
        if fault is None:
            return super().accept()
        # Recorded first: a test that sees the reset must also see the record.
        self._faults._record(fault.errno)
        if fault.consume:
            conn, _ = super().accept()
            set_linger_zero(conn)  # the close is a reset, as in the kernel
            conn.close()
        raise OSError(fault.errno, os.strerror(fault.errno))


class FaultySocketFactory:
    """A real socket factory with scripted ``accept()`` failures (module docstring).

    Thread-safe: the server accepts in its own thread while the test scripts faults.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raised_changed = threading.Condition(self._lock)
        self._faults: collections.deque[AcceptFault] = collections.deque()
        self.raised: list[int] = []
        """The errno of every failure raised so far, in order."""

    def fail_accepts(self, *codes: int, consume: bool = False) -> None:
        """Make the next ``len(codes)`` accepts of a queued connection fail with these
        errnos, in order (``consume``: the connection is reset and dropped first)."""
        with self._lock:
            self._faults.extend(AcceptFault(code, consume) for code in codes)

    @property
    def pending(self) -> int:
        """Scripted failures not raised yet."""
        with self._lock:
            return len(self._faults)

    def _take_fault(self, sock: socket.socket) -> AcceptFault | None:
        with self._lock:
            if not self._faults:
                return None
            if not _has_queued_connection(sock):
                return None
            return self._faults.popleft()

    def wait_for_raised(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` failures were raised; False on timeout."""
        with self._raised_changed:
            return self._raised_changed.wait_for(lambda: len(self.raised) >= count, timeout)

    def _record(self, code: int) -> None:
        with self._raised_changed:
            self.raised.append(code)
            self._raised_changed.notify_all()

    # --- SocketFactory ---------------------------------------------------------------

    def socket(self, family: int, type: int, proto: int = 0) -> SocketObject:
        """A real :class:`FaultySocket`."""
        sock = FaultySocket(family, type, proto)
        sock._faults = self
        return sock

    def wait_writable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """The real ``poll``."""
        return SYSTEM_SOCKET_FACTORY.wait_writable(sockets, timeout)

    def wait_readable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """The real ``poll``."""
        return SYSTEM_SOCKET_FACTORY.wait_readable(sockets, timeout)

    def monotonic(self) -> float:
        """The real clock."""
        return SYSTEM_SOCKET_FACTORY.monotonic()


def _has_queued_connection(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
