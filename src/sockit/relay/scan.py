"""The TCP connect scanner behind ``sockit -z HOST PORTS``: which ports accept a connection.

:func:`parse_port_spec` turns what a person typed (``"20-25,80,443"``, ``"http"``)
into a sorted list of ports; :func:`scan_ports` tries a full TCP connect to each port
of one host and reports every port as open or closed, with the reason, in a
:class:`PortResult`.

How a scan runs (the contract, each point tested over loopback):

* **One lookup.** The host is resolved once, through the same path as
  :func:`sockit.aio.connect` (IP literals without a lookup, names on the loop's
  resolver thread), before any connect: a name that does not resolve raises
  :class:`~sockit.ResolutionError` and nothing is connected.
* **Every address, in order.** The answers are ordered as RFC 8305 section 4 says
  (families interleaved, :func:`sockit.addr.order_addresses`) and each port is tried on
  them one after the other until one accepts: ``localhost`` answering ``::1`` and
  ``127.0.0.1`` finds a server listening on IPv4 only, as ncat does when it falls back
  from one family to the other. A port is open if any address accepts.
* **Bounded.** At most ``concurrency`` connects are in flight at once (one fd each),
  and with ``rate`` at most that many connects start per second: a token bucket that
  holds :data:`RATE_BURST_SECONDS` worth of tokens, woken by a loop timer (no polling).
  Each attempt has ``timeout`` seconds; a port's time is at most that times the number
  of addresses.
* **Nothing sent, nothing left.** An open port's connection is closed at once, with no
  data sent, and with ``SO_LINGER`` 0: the close is a reset (RST) instead of the
  four-way FIN exchange, so a scan of thousands of open ports leaves no TIME_WAIT
  entries behind on our side, exactly what nmap's connect scan does (``init_socket``
  in its ``scan_engine_connect.cc``). The scanned server may therefore log a reset
  connection. Every socket is closed on every path: success, failure, timeout, an
  exception from ``on_result``, cancellation.
* **Closed means not open.** Refused, timed out (filtered: a firewall dropping the
  SYN), unreachable, all are reported as closed, with the reason in
  :attr:`PortResult.error`.

It is written directly on ``loop.add_writer`` with raw non-blocking sockets: one task,
one readiness callback per attempt and one timer for the earliest deadline (or the next
token), rather than a task per port, so a scan of all 65,535 ports costs no more than
the connects themselves.

This module must never send data to a scanned port, never have more than
``concurrency`` sockets of its own open, never start connects faster than ``rate``
(beyond one burst of :data:`RATE_BURST_SECONDS`), never look the host up more than
once, and never leave a socket open or registered with the loop when it returns or
raises.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import re
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sockit.addr import SocketAddress, check_host, order_addresses, parse_port
from sockit.addr.binding import set_linger_zero, start_connect, unique_infos
from sockit.addr.ports import MAX_PORT
from sockit.aio._resolve import resolve
from sockit.errors import AddressError, ResolutionError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sockit.addr import AddrInfo, Resolver

__all__ = [
    "DEFAULT_SCAN_CONCURRENCY",
    "DEFAULT_SCAN_TIMEOUT",
    "MAX_PORT_SPEC_ITEMS",
    "MAX_PORT_SPEC_LENGTH",
    "RATE_BURST_SECONDS",
    "PortResult",
    "parse_port_spec",
    "scan_ports",
]

DEFAULT_SCAN_TIMEOUT = 2.0
"""Seconds per connect attempt. A lost SYN is sent again after the initial
retransmission timeout of 1 s (RFC 6298 section 2.1, Linux's TCP_TIMEOUT_INIT), so 2 s
gives one retransmission its chance before a port is called filtered."""

DEFAULT_SCAN_CONCURRENCY = 100
"""Connects in flight at once. One fd each: 100 stays far below the 1,024 descriptors
of the usual default RLIMIT_NOFILE soft limit, leaving the rest to the program around
the scan, and still scans 1,000 loopback or LAN ports in well under a second."""

RATE_BURST_SECONDS = 0.01
"""How far a rate-limited scan may catch up after the loop woke it late: the bucket
holds ``max(1, rate * RATE_BURST_SECONDS)`` tokens. Timers fire a little late under
load; with room for a single token the achieved rate would fall short of the one asked
for at high rates, and 10 ms worth is too little to matter to whoever is scanned."""

MAX_PORT_SPEC_LENGTH = 1 << 20
"""Longest port list :func:`parse_port_spec` reads, in characters: room for every port
from 1 to 65535 written out one by one (about 380,000 characters), with spaces."""

MAX_PORT_SPEC_ITEMS = 65535
"""Most comma-separated items in a port list: one per port there is."""

# Errors of ours, not of the port: scanning on would only report every remaining port
# closed for a reason that has nothing to do with it.
_LOCAL_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Short reasons people recognise from ncat and nmap; anything else gets strerror(3).
_REASONS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "reset",
}
_TIMED_OUT = "timed out"

# A part worth trying as one service name before splitting it at "-" ("http-alt").
_HAS_LETTER = re.compile(r"[A-Za-z]", re.ASCII)

# Longer than any port (parse_port accepts up to 16 digits) or service name (up to 63
# characters): refused without quoting it whole in parse_port's message.
_LONGEST_PORT = 64

# How much of a bad part an error message quotes: enough to find it, never megabytes.
_SHOWN_CHARACTERS = 40


@dataclass(frozen=True, slots=True)
class PortResult:
    """The verdict on one port of a scan.

    ``open`` is true if a TCP connection to the port was established; ``address`` is
    then the address it was established with (one of the host's addresses, with this
    port) and ``error`` is ``None``. A closed port has ``address`` ``None`` and an
    ``error`` saying why: ``"refused"``, ``"timed out"``, ``"host unreachable"``,
    ``"network unreachable"``, or the system's text for anything rarer; when the host's
    addresses failed for different reasons, each is listed as ``ADDRESS: REASON``,
    separated by ``"; "``.
    """

    port: int
    open: bool
    address: SocketAddress | None = None
    error: str | None = None


# --- port lists -------------------------------------------------------------------------


def parse_port_spec(text: str) -> list[int]:
    """The ports a port list names, sorted ascending, each once.

    A list is comma-separated items, each a port (``"80"``), a service name from
    services(5) (``"http"``) or an inclusive range ``FIRST-LAST`` of either
    (``"20-25"``, ``"ftp-ssh"``); white space around items and around ``-`` is ignored.
    A name containing ``-`` (``"http-alt"``) is taken as one name when the system
    knows it, as a range otherwise. Overlaps and repeats are merged:
    ``"20-25, 22, 80"`` is ``[20, 21, 22, 23, 24, 25, 80]``; ``"1-65535"`` is every
    port.

    Raises:
        TypeError: ``text`` is not a ``str``.
        AddressError: naming the bad item, for an empty list or item (``""``,
            ``"80,"``), port 0 (nothing can be scanned there), a port past 65535, a
            range backwards (``"25-20"``) or of more than two ends (``"1-2-3"``), an
            unknown service name (``"x-y"``), or a list longer than
            :data:`MAX_PORT_SPEC_LENGTH` characters or :data:`MAX_PORT_SPEC_ITEMS`
            items.
    """
    if not isinstance(text, str):
        raise TypeError(f"a port list must be a str, not {type(text).__name__}")
    if len(text) > MAX_PORT_SPEC_LENGTH:
        raise AddressError(
            f"invalid port list: {len(text)} characters, at most {MAX_PORT_SPEC_LENGTH}"
        )
    if not text.strip():
        raise AddressError("invalid port list '': no port given")
    items = text.split(",")
    if len(items) > MAX_PORT_SPEC_ITEMS:
        raise AddressError(f"invalid port list: {len(items)} items, at most {MAX_PORT_SPEC_ITEMS}")
    services: dict[str, int] = {}  # services(5) is read once per distinct name
    ranges = []
    for position, item in enumerate(items, start=1):
        part = item.strip()
        if not part:
            raise AddressError(f"invalid port list {_show(text)}: item {position} is empty")
        ranges.append(_parse_item(part, services))
    return _merge(ranges)


def _parse_item(part: str, services: dict[str, int]) -> tuple[int, int]:
    if "-" in part:
        if _HAS_LETTER.search(part):
            try:
                number = _parse_one(part, part, services)
            except AddressError:
                pass  # not a name the system knows: a range of two
            else:
                return number, number
        ends = [end.strip() for end in part.split("-")]
        if len(ends) != 2:
            raise AddressError(
                f"invalid port range {_show(part)}: a range is FIRST-LAST, e.g. 20-25"
            )
        first, last = (_parse_one(end, part, services) for end in ends)
        if first > last:
            raise AddressError(
                f"invalid port range {_show(part)}: the first port ({first}) is greater "
                f"than the last ({last})"
            )
        return first, last
    number = _parse_one(part, part, services)
    return number, number


def _parse_one(text: str, part: str, services: dict[str, int]) -> int:
    if not text:
        raise AddressError(f"invalid port range {_show(part)}: a range is FIRST-LAST, e.g. 20-25")
    number = services.get(text)
    if number is None:
        if len(text) > _LONGEST_PORT:
            raise AddressError(
                f"invalid port {_show(text)}: not a number 1-{MAX_PORT} or a service name"
            )
        try:
            number = parse_port(text)
        except AddressError as error:
            if text == part:
                raise
            raise AddressError(f"invalid port range {_show(part)}: {error}") from error
        if not text.isdigit():
            services[text] = number
    if number == 0:
        where = "" if text == part else f" in {_show(part)}"
        raise AddressError(
            f"invalid port {_show(text)}{where}: port 0 cannot be connected to (scan ports 1-65535)"
        )
    return number


def _merge(ranges: list[tuple[int, int]]) -> list[int]:
    # Merged as ranges before expanding, so "1-65535,1-65535,..." costs no more than
    # one copy of every port.
    ranges.sort()
    merged: list[list[int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [port for first, last in merged for port in range(first, last + 1)]


def _show(text: str) -> str:
    if len(text) > _SHOWN_CHARACTERS:
        return repr(text[:_SHOWN_CHARACTERS] + "...")
    return repr(text)


# --- scanning ---------------------------------------------------------------------------


async def scan_ports(
    host: str,
    ports: Sequence[int],
    *,
    timeout: float = DEFAULT_SCAN_TIMEOUT,
    concurrency: int = DEFAULT_SCAN_CONCURRENCY,
    rate: float | None = None,
    family: int | None = None,
    on_result: Callable[[PortResult], None] | None = None,
    resolver: Resolver | None = None,
) -> list[PortResult]:
    """TCP-connect to every port of ``ports`` on ``host``; one :class:`PortResult` per
    distinct port, in ascending port order.

    ``timeout`` is the seconds each connect attempt may take (an attempt still pending
    then counts as closed, ``"timed out"``); ``concurrency`` the most attempts in
    flight at once; ``rate`` the most attempts started per second (``None``: as fast as
    ``concurrency`` allows), with bursts of at most :data:`RATE_BURST_SECONDS` worth;
    ``family`` restricts the host's addresses to ``socket.AF_INET`` or ``AF_INET6``.
    ``on_result`` is called with each port's result as soon as it is known, so in the
    order ports finish, not in port order; an exception it raises ends the scan and
    propagates. ``resolver`` replaces the system resolver, as for
    :func:`sockit.aio.connect` (it is called once, on the loop's thread).

    The host is resolved once, before any connect, with no time limit of its own
    (cancel the call to give up). Each port is tried on the host's addresses in
    RFC 8305 order until one accepts; an open port's connection is closed at once with
    a reset (``SO_LINGER`` 0, see the module's documentation), nothing is sent.
    Cancelling the call closes every socket it opened.

    Raises:
        AddressError: ``host`` is malformed, or a port is not in 1..65535 (before any
            lookup).
        TypeError: a port is not an ``int``, ``timeout`` or ``rate`` not a number.
        ValueError: ``timeout`` or ``rate`` is not a positive finite number,
            ``concurrency`` is not a positive ``int``, or ``family`` is not IPv4 or
            IPv6.
        ResolutionError: the name does not resolve; no connect was made.
        OSError: this process ran out of file descriptors or kernel memory
            (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``): a failure of ours, not
            of a port, so the scan stops instead of calling the rest closed.
    """
    targets = _check_ports(ports)
    seconds = _check_positive("timeout", timeout)
    per_second = None if rate is None else _check_positive("rate", rate)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")
    if family not in (None, 0, socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"family must be AF_INET, AF_INET6 or None, not {family!r}")
    ascii_host = check_host(host)
    loop = asyncio.get_running_loop()
    infos = await resolve(
        resolver,
        ascii_host,
        0,
        family=family or 0,
        type=socket.SOCK_STREAM,
        timeout=None,
        display_host=host,
    )
    addresses = [
        info
        for info in unique_infos(order_addresses(infos))
        if info.family in (socket.AF_INET, socket.AF_INET6)
    ]
    if not addresses:  # only a replaced resolver could answer like this
        raise ResolutionError(host, "no IPv4 or IPv6 address")
    bucket = None if per_second is None else _TokenBucket(per_second, loop.time())
    scan = _Scan(
        loop,
        addresses=addresses,
        ports=targets,
        timeout=seconds,
        concurrency=concurrency,
        bucket=bucket,
        on_result=on_result,
    )
    return await scan.run()


def _check_ports(ports: Sequence[int]) -> list[int]:
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"ports must be ints, not {type(port).__name__} ({port!r})")
        if not 1 <= port <= MAX_PORT:
            raise AddressError(f"invalid port {port}: only ports 1-{MAX_PORT} can be scanned")
    return sorted(set(ports))


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)


class _TokenBucket:
    """Connect starts allowed: ``rate`` tokens a second, at most ``capacity`` saved."""

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    # Float rounding must not make a timer armed for "exactly one token" find 0.9999999
    # and arm itself again for a nanosecond.
    _EPSILON = 1e-9

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate * RATE_BURST_SECONDS)
        self._tokens = self._capacity
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated = now
        if self._tokens >= 1.0 - self._EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def next_token_at(self) -> float:
        """The loop time at which :meth:`take` will next succeed."""
        return self._updated + max(0.0, 1.0 - self._tokens) / self._rate


@dataclass(eq=False, slots=True)
class _Port:
    number: int
    next_address: int = 0
    failures: list[tuple[SocketAddress, str]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Attempt:
    port: _Port
    target: AddrInfo
    sock: socket.socket
    fd: int
    deadline: float
    done: bool = False


class _Scan:
    """One scan's state, driven by :meth:`run` on a single task."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        addresses: list[AddrInfo],
        ports: list[int],
        timeout: float,
        concurrency: int,
        bucket: _TokenBucket | None,
        on_result: Callable[[PortResult], None] | None,
    ) -> None:
        self._loop = loop
        self._addresses = addresses
        self._ports = ports
        self._timeout = timeout
        self._concurrency = concurrency
        self._bucket = bucket
        self._on_result = on_result
        self._queue: deque[_Port] = deque(_Port(port) for port in ports)
        self._in_flight: dict[int, _Attempt] = {}
        # Attempts in start order, which is deadline order (one timeout for all);
        # finished ones are dropped lazily when they reach the front.
        self._deadlines: deque[_Attempt] = deque()
        self._ready: list[int] = []
        self._waiter: asyncio.Future[None] | None = None
        self._results: dict[int, PortResult] = {}

    async def run(self) -> list[PortResult]:
        try:
            while self._queue or self._in_flight:
                more_now = self._start_attempts()
                if not self._queue and not self._in_flight:
                    break  # the last ports failed at once
                await self._wait(more_now=more_now)
                self._collect_ready()
                self._expire(self._loop.time())
        finally:
            self._abort_all()
        return [self._results[port] for port in self._ports]

    # -- starting ---------------------------------------------------------------------

    def _start_attempts(self) -> bool:
        """Start what the bounds allow; True if more could start without waiting."""
        # At most `concurrency` starts per pass, counting connects that failed at once,
        # so a host that is unreachable on every port still lets the loop breathe.
        for _ in range(self._concurrency):
            if not self._queue or len(self._in_flight) >= self._concurrency:
                return False
            if self._bucket is not None and not self._bucket.take(self._loop.time()):
                return False
            self._start(self._queue.popleft())
        return bool(self._queue) and len(self._in_flight) < self._concurrency

    def _start(self, port: _Port) -> None:
        info = self._addresses[port.next_address]
        port.next_address += 1
        target = info._replace(sockaddr=(info.sockaddr[0], port.number, *info.sockaddr[2:]))
        try:
            sock = start_connect(socket.socket, target, None)
        except OSError as error:
            if error.errno in _LOCAL_RESOURCE_ERRNOS:
                raise
            self._failed(port, target, _reason(error.errno))
            return
        attempt = _Attempt(port, target, sock, sock.fileno(), self._loop.time() + self._timeout)
        # Registered for cleanup before the loop knows the fd, so nothing can escape.
        self._in_flight[attempt.fd] = attempt
        self._deadlines.append(attempt)
        self._loop.add_writer(attempt.fd, self._on_writable, attempt.fd)

    def _on_writable(self, fd: int) -> None:
        # Level-triggered loops: unregister at once, or the finished connect would wake
        # the loop on every iteration until it is collected.
        self._loop.remove_writer(fd)
        self._ready.append(fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- waiting ----------------------------------------------------------------------

    async def _wait(self, *, more_now: bool) -> None:
        if self._ready:
            return
        wake: float | None = None
        if more_now:
            wake = self._loop.time()  # just let the loop run once
        elif self._bucket is not None and self._queue and len(self._in_flight) < self._concurrency:
            wake = self._bucket.next_token_at()
        first = self._first_pending()
        if first is not None and (wake is None or first.deadline < wake):
            wake = first.deadline
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiter = waiter
        timer = None if wake is None else self._loop.call_at(wake, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _first_pending(self) -> _Attempt | None:
        while self._deadlines and self._deadlines[0].done:
            self._deadlines.popleft()
        return self._deadlines[0] if self._deadlines else None

    # -- finishing --------------------------------------------------------------------

    def _collect_ready(self) -> None:
        ready, self._ready = self._ready, []
        for fd in ready:
            attempt = self._in_flight.pop(fd, None)
            if attempt is None:
                continue
            attempt.done = True
            sock = attempt.sock
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                self_connected = _is_self_connect(sock)
                set_linger_zero(sock)
                sock.close()
                if self_connected:
                    # Connecting to a free local port from the same port (the kernel
                    # may pick it as the ephemeral source) connects the socket to
                    # itself: nobody listens there. nmap checks for this too.
                    self._failed(attempt.port, attempt.target, "refused (self-connect)")
                else:
                    self._finish(PortResult(attempt.port.number, True, attempt.target.address))
            else:
                sock.close()
                self._failed(attempt.port, attempt.target, _reason(code))

    def _expire(self, now: float) -> None:
        while (first := self._first_pending()) is not None and first.deadline <= now:
            self._deadlines.popleft()
            first.done = True
            del self._in_flight[first.fd]
            self._loop.remove_writer(first.fd)
            # A SYN_SENT socket closes without a packet; the reset matters only if the
            # handshake completed in the instant since we last looked.
            set_linger_zero(first.sock)
            first.sock.close()
            self._failed(first.port, first.target, _TIMED_OUT)

    def _failed(self, port: _Port, target: AddrInfo, reason: str) -> None:
        port.failures.append((target.address, reason))
        if port.next_address < len(self._addresses):
            # The port's next address goes first, so a started port finishes soon.
            self._queue.appendleft(port)
            return
        self._finish(PortResult(port.number, False, None, _summarise(port.failures)))

    def _finish(self, result: PortResult) -> None:
        self._results[result.port] = result
        if self._on_result is not None:
            self._on_result(result)

    def _abort_all(self) -> None:
        attempts = list(self._in_flight.values())
        self._in_flight.clear()
        self._deadlines.clear()
        for attempt in attempts:
            attempt.done = True
            if not self._loop.is_closed():
                self._loop.remove_writer(attempt.fd)
            set_linger_zero(attempt.sock)
            attempt.sock.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _is_self_connect(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockname() == sock.getpeername())
    except OSError:
        return False  # reset already: somebody was there to reset it


def _reason(code: int | None) -> str:
    if code is None:
        return "failed"
    reason = _REASONS.get(code)
    if reason is not None:
        return reason
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def _summarise(failures: list[tuple[SocketAddress, str]]) -> str:
    reasons = {reason for _, reason in failures}
    if len(reasons) == 1:
        return reasons.pop()
    return "; ".join(f"{address}: {reason}" for address, reason in failures)
