"""Raising sync socket errors as sockit's exception tree, and deadlines for the sync layer.

A raw ``OSError`` from the kernel becomes "closed by you"
(:class:`~sockit.ClosedResourceError`) or "broken by the peer or network"
(:class:`~sockit.BrokenResourceError` and its reset / broken-pipe subclasses, which keep
the built-in ``ConnectionResetError``/``BrokenPipeError`` bases) by
:func:`sockit.errors.translate_os_error`, the translation the async twin uses too; this
module only raises its answer, chaining the original. Timeouts stay ``TimeoutError``.

Must never create, connect or close sockets itself.
"""

from __future__ import annotations

import time
from typing import NoReturn

from sockit.errors import translate_os_error

# Re-exported for sockit.testing.memory, which takes the sync layer's timeout rule here.
from sockit.proto.timeouts import resolve_timeout

__all__ = ["Deadline", "raise_translated", "resolve_timeout"]


def raise_translated(error: OSError, *, closed: bool, operation: str) -> NoReturn:
    """Re-raise ``error`` as the sockit class that says who is at fault.

    ``closed`` tells whether this program closed the socket (then EBADF and friends
    are :class:`ClosedResourceError`). ``operation`` names the call for the message.
    An errno outside the known sets is re-raised as it is.
    """
    translated = translate_os_error(error, closed=closed, operation=operation)
    if translated is error:
        raise error
    raise translated from error


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
