"""Accepting on the event loop: the one accept loop of every listening relay shape
(the relay runner, the ``-lk`` hub, the HTTP proxy server).

:class:`AcceptLoop` polls a listener's sockets with ``loop.add_reader`` and accepts up
to :data:`ACCEPT_BATCH` connections per wake-up, under the servers' errno policy
(:func:`sockit.proto.accept.classify_accept_error`): transient errors are skipped, fd
exhaustion stops accepting for a back-off that doubles up to :data:`BACKOFF_MAX`
(one log line per pause, no spinning), anything else is fatal and reported once.
An ``admit(address)`` predicate (the peer's allow/deny policy) is asked about every
connection before its owner sees it; one it refuses is reset at once (``SO_LINGER``
0: the client learns now, with a reset, not a clean end it could take for a reply).
Its owner may also hold it (stop accepting while at capacity: new clients wait in the
kernel's queue instead of being accepted and reset). It polls exactly while started,
not held, not backing off and not closed.

Must never block, and never leave a reader registered after :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from sockit.addr import SocketAddress
from sockit.addr.binding import set_linger_zero
from sockit.proto.accept import AcceptAction, classify_accept_error

if TYPE_CHECKING:
    import logging
    import socket
    from collections.abc import Callable

    from sockit.sync import SocketListener

__all__ = ["ACCEPT_BATCH", "BACKOFF_FIRST", "BACKOFF_MAX", "AcceptLoop"]

ACCEPT_BATCH = 64
"""Connections accepted per wake-up of a listening socket before the loop serves others."""

BACKOFF_FIRST = 0.05
"""Seconds accepting pauses after fd exhaustion (EMFILE...), doubling per repeat."""

BACKOFF_MAX = 1.0


class AcceptLoop:
    """Accept from ``listener`` on the running loop; ``on_accept(conn, sockaddr)`` gets
    each connection ``admit`` (if given) lets through, ``on_fatal(error)`` an error that
    ends accepting (it has been logged). ``denied`` counts the connections refused."""

    def __init__(
        self,
        listener: SocketListener,
        on_accept: Callable[[socket.socket, object], None],
        on_fatal: Callable[[OSError], None],
        *,
        logger: logging.Logger,
        admit: Callable[[SocketAddress], bool] | None = None,
    ) -> None:
        self.listener = listener
        self.admit = admit
        self.denied = 0
        self.on_accept = on_accept
        self.on_fatal = on_fatal
        self.logger = logger
        self._loop = asyncio.get_running_loop()
        self._started = False
        self._held = False
        self._backing_off = False
        self._closed = False
        self._watching = False
        self._backoff = BACKOFF_FIRST

    def start(self) -> None:
        """Start accepting."""
        self._started = True
        self._update()

    def hold(self, *, held: bool) -> None:
        """Stop (``held=True``) or resume accepting for the owner's own reason."""
        self._held = held
        self._update()

    def back_off(self, error: OSError) -> None:
        """Pause after fd exhaustion (also when the owner met it, e.g. in a connect)."""
        if self._backing_off or self._closed:
            return
        self.logger.warning(
            "accept: %s; pausing accepts for %.2f s",
            error.strerror,
            self._backoff,
            extra={"event": "accept_back_off"},
        )
        self._backing_off = True
        self._update()
        self._loop.call_later(self._backoff, self._back_off_over)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def close(self) -> None:
        """Stop accepting for good (the listener itself is the owner's to close)."""
        self._closed = True
        self._update()

    def _back_off_over(self) -> None:
        self._backing_off = False
        self._update()

    def _update(self) -> None:
        want = (
            self._started
            and not self._held
            and not self._backing_off
            and not self._closed
            and not self.listener.closed
        )
        if want == self._watching:
            return
        self._watching = want
        for sock in self.listener.sockets:
            if sock.fileno() < 0:
                continue
            if want:
                sock.setblocking(False)
                self._loop.add_reader(sock.fileno(), self._on_acceptable, sock)
            else:
                self._loop.remove_reader(sock.fileno())

    def _on_acceptable(self, lsock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._watching:
                return  # the owner held or closed it from on_accept
            try:
                conn, sockaddr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                action = classify_accept_error(error.errno)
                if action is AcceptAction.RETRY:
                    continue
                if action is AcceptAction.BACK_OFF:
                    self.back_off(error)
                    return
                self.logger.error(  # noqa: TRY400 (one line, not a traceback)
                    "accept failed: %s", error, extra={"event": "accept_failed"}
                )
                self.close()
                self.on_fatal(error)
                return
            self._backoff = BACKOFF_FIRST
            if self.admit is not None and not self.admit(
                SocketAddress.from_sockaddr(conn.family, sockaddr)
            ):
                self.denied += 1
                with contextlib.suppress(OSError):
                    set_linger_zero(conn)
                conn.close()
                continue
            self.on_accept(conn, sockaddr)
