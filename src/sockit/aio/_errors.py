"""The one place where aio socket errors are translated to sockit's exception tree.

It mirrors ``sockit/sync/_errors.py`` (which aio may not import): a raw ``OSError`` from
the kernel or from an asyncio transport becomes "closed by you"
(:class:`~sockit.ClosedResourceError`) or "broken by the peer or network"
(:class:`~sockit.BrokenResourceError` and its reset / broken-pipe subclasses, which keep
the built-in ``ConnectionResetError``/``BrokenPipeError`` bases). The original error is
always chained as ``__cause__``. Timeouts stay ``TimeoutError``.

Must never create, connect or close sockets, and never wait.
"""

from __future__ import annotations

import errno
import math

from sockit.errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConnectionResetByPeer,
    PeerClosedError,
)

__all__ = ["resolve_timeout", "translate"]

# errnos that mean the connection is dead through no fault of the caller (the same set
# as the sync layer's).
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


def translate(error: BaseException, *, closed: bool, operation: str) -> BaseException:
    """Return the exception to raise (``from error``) for ``error`` seen by ``operation``.

    ``closed`` tells whether this program closed the socket (then EBADF and friends,
    and any error at all, are :class:`ClosedResourceError`). An error that is not an
    ``OSError`` (a transport may report anything) is :class:`BrokenResourceError`. An
    ``OSError`` with an errno outside the known sets is returned unchanged.
    """
    if closed:
        return ClosedResourceError(f"{operation} on a closed socket")
    if not isinstance(error, OSError):
        return BrokenResourceError(None, f"{operation} failed: {error!r}")
    if isinstance(error, TimeoutError) and error.errno is None:
        return TimeoutError(f"{operation} timed out")
    code = error.errno
    if code in _CLOSED_ERRNOS:
        return ClosedResourceError(f"{operation} on a closed socket")
    if code == errno.ECONNRESET or (code is None and isinstance(error, ConnectionResetError)):
        return ConnectionResetByPeer(
            errno.ECONNRESET, f"{operation} failed: connection reset by peer"
        )
    if code == errno.EPIPE or (code is None and isinstance(error, BrokenPipeError)):
        return PeerClosedError(errno.EPIPE, f"{operation} failed: the peer closed the connection")
    if code in _BROKEN_ERRNOS:
        return BrokenResourceError(code, f"{operation} failed: {error.strerror or error}")
    return error


def resolve_timeout(timeout: float | None, default: float | None) -> float | None:
    """Turn a per-call ``timeout`` into seconds, or ``None`` for "wait forever".

    ``None`` means "use the object's default"; ``math.inf`` means "forever" even when a
    default is set. Negative values and NaN are a ``ValueError``. (The same rule as the
    sync layer's ``resolve_timeout``.)
    """
    if timeout is None:
        timeout = default
    if timeout is None or timeout == math.inf:
        return None
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return float(timeout)
