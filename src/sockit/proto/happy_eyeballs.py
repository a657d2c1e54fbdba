"""The Happy Eyeballs schedule (RFC 8305): which connect attempt starts when.

Both ``sockit.sync.connect`` and ``sockit.aio.connect`` drive one
:class:`HappyEyeballs` per call, so the twins cannot disagree on the algorithm; they
only create the sockets, wait for them and read their clock:

1. The addresses come already ordered (resolver order, families interleaved by
   :func:`sockit.addr.order_addresses`); they are tried in that order.
2. The first attempt starts at once; the next one ``delay`` seconds after the previous
   start, or at once when an attempt fails and nothing else is in flight (RFC 8305
   section 5: a failure starts the next attempt immediately), whichever comes first.
   ``delay=None`` runs one attempt at a time, each to completion.
3. When the overall deadline passes the connect has timed out; when every attempt
   failed and none is left, it has failed. Either way :attr:`HappyEyeballs.failures`
   names every attempt (address, error, seconds since the start) for
   :func:`sockit.errors.connect_error_from_attempts`.

The driver's loop is: ``step = schedule.next_step(now)``; on :class:`StartAttempt`
start attempt ``step.index`` and report :meth:`~HappyEyeballs.attempt_started` or, if it
failed at once, :meth:`~HappyEyeballs.attempt_failed`; on :class:`WaitForAttempts` wait
at most ``step.timeout`` seconds for an attempt in flight to complete and report each
failure (a success ends the connect); on :class:`GiveUp` raise.

This module must never create sockets, read a clock, wait or sleep: the caller passes
every time in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockit.errors import ConnectAttempt

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_HAPPY_EYEBALLS_DELAY",
    "GiveUp",
    "HappyEyeballs",
    "StartAttempt",
    "Step",
    "WaitForAttempts",
    "check_happy_eyeballs_delay",
]

DEFAULT_HAPPY_EYEBALLS_DELAY = 0.25
"""RFC 8305 section 5: "a reasonable default is 250 ms" (also what Chrome and trio use)."""


@dataclass(frozen=True, slots=True)
class StartAttempt:
    """Start the attempt to address number ``index`` now."""

    index: int


@dataclass(frozen=True, slots=True)
class WaitForAttempts:
    """Wait until an attempt in flight completes, for at most ``timeout`` seconds
    (``None``: no limit), then ask again."""

    timeout: float | None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop: every attempt failed, or (``timed_out``) the deadline passed. Attempts
    still in flight are the caller's to close."""

    timed_out: bool


Step = StartAttempt | WaitForAttempts | GiveUp


def check_happy_eyeballs_delay(delay: float | None) -> float | None:
    """Return ``delay`` if it is a valid delay between attempt starts, else raise
    ``ValueError``: seconds >= 0, or ``None`` for one attempt at a time."""
    if delay is not None and not delay >= 0:  # also catches NaN
        raise ValueError(f"happy_eyeballs_delay must be >= 0 or None, not {delay}")
    return delay


class HappyEyeballs:
    """The schedule of one Happy Eyeballs connect over ``addresses`` (their labels, in
    the order to try them, e.g. ``"[2001:db8::1]:80"``).

    ``start`` is when the connect began (on the caller's clock; failures are reported
    relative to it) and ``timeout`` the seconds it may take from then (``None``: no
    limit). Every method takes ``now`` on the same clock; it must never go backwards.
    """

    __slots__ = (
        "_deadline",
        "_delay",
        "_failures",
        "_in_flight",
        "_labels",
        "_last_error",
        "_next_index",
        "_next_start",
        "_start",
    )

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        delay: float | None,
        start: float,
        timeout: float | None = None,
    ) -> None:
        if timeout is not None and not timeout >= 0:  # also catches NaN
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        self._labels = list(addresses)
        self._delay = check_happy_eyeballs_delay(delay)
        self._start = start
        self._deadline = None if timeout is None else start + timeout
        self._next_index = 0
        # When the next attempt may start even though others are still in flight.
        self._next_start = start
        self._in_flight: set[int] = set()
        self._failures: list[ConnectAttempt] = []
        self._last_error: OSError | None = None

    def next_step(self, now: float) -> Step:
        """What to do at time ``now``; see the module documentation."""
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            return GiveUp(timed_out=True)
        more = self._next_index < len(self._labels)
        # Start the next attempt when its time has come, or at once when nothing is in
        # flight (the previous attempt failed).
        if more and (not self._in_flight or now >= self._next_start):
            index = self._next_index
            self._next_index += 1
            return StartAttempt(index)
        if not self._in_flight:
            return GiveUp(timed_out=False)
        # No next start to wake for (none left, or delay=None: only a failure starts
        # the next one) is "no limit", never an infinite number of seconds.
        wake_at = self._next_start if more and self._next_start < math.inf else None
        if deadline is not None:
            wake_at = deadline if wake_at is None else min(wake_at, deadline)
        return WaitForAttempts(None if wake_at is None else max(0.0, wake_at - now))

    def attempt_started(self, index: int, now: float) -> None:
        """Attempt ``index`` is in flight since ``now``: the next one is due ``delay``
        seconds later (never, while it is in flight, with ``delay=None``)."""
        self._in_flight.add(index)
        self._next_start = math.inf if self._delay is None else now + self._delay

    def attempt_failed(self, index: int, error: OSError, now: float) -> None:
        """Attempt ``index`` failed at ``now`` with ``error`` (at once, or after it was
        started): recorded, and the next attempt may start immediately."""
        self._in_flight.discard(index)
        self._last_error = error
        self._failures.append(ConnectAttempt(self._labels[index], error, now - self._start))
        self._next_start = now

    @property
    def in_flight(self) -> frozenset[int]:
        """The attempts started and not reported failed."""
        return frozenset(self._in_flight)

    @property
    def failures(self) -> list[ConnectAttempt]:
        """Every failed attempt so far, in the order they failed."""
        return list(self._failures)

    @property
    def last_error(self) -> OSError | None:
        """The error of the last failed attempt (to chain as ``__cause__``)."""
        return self._last_error
