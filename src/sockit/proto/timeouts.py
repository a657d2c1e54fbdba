"""Timeout arguments: the one rule for what ``timeout=`` means, shared by sync and aio.

Every blocking or awaited call takes ``timeout=`` (seconds) and every object has a
default ``timeout``; both twins turn the pair into "seconds, or no limit" here, so a
value one twin accepts the other cannot refuse.

This module must never read a clock, wait or do I/O: it only checks numbers.
"""

from __future__ import annotations

import math

__all__ = ["resolve_timeout"]


def resolve_timeout(timeout: float | None, default: float | None) -> float | None:
    """Turn a per-call ``timeout`` into seconds, or ``None`` for "wait forever".

    ``None`` means "use the object's default"; ``math.inf`` means "forever" even when a
    default is set. Negative values and NaN are a ``ValueError``.
    """
    if timeout is None:
        timeout = default
    if timeout is None or timeout == math.inf:
        return None
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return float(timeout)
