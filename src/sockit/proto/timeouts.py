"""Timeout arguments: the one rule for what ``timeout=`` means, shared by sync and aio.

Every blocking or awaited call takes ``timeout=`` (seconds) and every object has a
default ``timeout``; both twins turn the pair into "seconds, or no limit" here, so a
value one twin accepts the other cannot refuse.

This module must never read a clock, wait or do I/O: it only checks numbers.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "resolve_timeout"]

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)?\s*", re.ASCII)
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


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


def parse_duration(text: str) -> float:
    """Seconds from a duration as people write it: ``"2"``, ``"0.5"``, ``"500ms"``,
    ``"2s"``, ``"1m"``, ``"1h"`` (ncat's units; a bare number is seconds).

    Raises ``ValueError`` naming the text for anything else (negative, empty, ``inf``,
    an unknown unit).
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r} (use e.g. 2, 0.5, 500ms, 2s, 1m, 1h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
