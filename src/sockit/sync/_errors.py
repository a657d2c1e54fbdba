"""The one place where sync socket errors are translated to sockit's exception tree.

Like trio's ``_translate_socket_errors_to_stream_errors``: a raw ``OSError`` from the
kernel becomes "closed by you" (:class:`~sockit.ClosedResourceError`) or "broken by
the peer or network" (:class:`~sockit.BrokenResourceError` and its reset / broken-pipe
subclasses, which keep the built-in ``ConnectionResetError``/``BrokenPipeError``
bases). The original error is always chained. Timeouts stay ``TimeoutError``.

Must never create, connect or close sockets itself.
"""

from __future__ import annotations

import errno
import math
import time
from typing import NoReturn

from sockit.errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConnectionResetByPeer,
    PeerClosedError,
)

__all__ = ["Deadline", "raise_translated", "resolve_timeout"]

# errnos that mean the connection is dead through no fault of the caller.
_BROKEN_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNABORTED,
        errno.ENOTCONN,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ESHUTDOWN,
    }
)
# errnos that mean "this fd is gone": after our own close() that is our fault.
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


def raise_translated(error: OSError, *, closed: bool, operation: str) -> NoReturn:
    """Re-raise ``error`` as the sockit class that says who is at fault.

    ``closed`` tells whether this program closed the socket (then EBADF and friends
    are :class:`ClosedResourceError`). ``operation`` names the call for the message.
    """
    if isinstance(error, TimeoutError) and error.errno is None:
        raise TimeoutError(f"{operation} timed out") from error
    if isinstance(error, BlockingIOError):
        # timeout=0 puts the socket in non-blocking mode, where "nothing yet" is EAGAIN;
        # to the caller it is a deadline of zero that expired.
        raise TimeoutError(f"{operation} timed out (timeout=0)") from error
    code = error.errno
    if closed or code in _CLOSED_ERRNOS:
        raise ClosedResourceError(f"{operation} on a closed socket") from error
    message = f"{operation} failed: {error.strerror or error}"
    if code == errno.ECONNRESET:
        raise ConnectionResetByPeer(code, f"{operation} failed: connection reset by peer") from (
            error
        )
    if code == errno.EPIPE:
        raise PeerClosedError(code, f"{operation} failed: the peer closed the connection") from (
            error
        )
    if code in _BROKEN_ERRNOS:
        raise BrokenResourceError(code, message) from error
    raise error


def resolve_timeout(timeout: float | None, default: float | None) -> float | None:
    """Turn a per-call ``timeout`` into seconds, or ``None`` for "wait forever".

    ``None`` means "use the object's default"; ``math.inf`` means "forever" even when a
    default is set. Negative values are a ``ValueError``.
    """
    if timeout is None:
        timeout = default
    if timeout is None or timeout == math.inf:
        return None
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return float(timeout)


class Deadline:
    """An absolute deadline on the monotonic clock, for calls made of several waits."""

    __slots__ = ("_at",)

    def __init__(self, seconds: float | None) -> None:
        self._at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        if self._at is None:
            return None
        return max(0.0, self._at - time.monotonic())
