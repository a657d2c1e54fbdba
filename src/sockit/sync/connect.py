"""connect(): an active open with Happy Eyeballs (RFC 8305), and connect_unix().

The algorithm, as DESIGN.md fixes it:

1. Resolve the name (the resolver's order is respected: it already applied RFC 6724
   destination address selection and the system's gai.conf).
2. Interleave address families (RFC 8305 section 4), starting with the family of the
   first answer.
3. Start the first attempt; start the next one ``happy_eyeballs_delay`` seconds later,
   or at once when the previous attempt fails, whichever comes first.
4. The first attempt to complete wins; every other attempt is closed.
5. If all fail, raise one exception that names the host, the port and every attempt
   (address, error, elapsed time); a refusal anywhere makes it a
   ``ConnectionRefusedError`` (see :func:`sockit.errors.connect_error_from_attempts`).

Steps 3 to 5 are the schedule of :class:`sockit.proto.happy_eyeballs.HappyEyeballs`,
which the async twin drives too; this module only creates the sockets (through the
:class:`~sockit.sync.SocketFactory`), waits for them and reads the factory's clock.
The 250 ms default delay is RFC 8305 section 5's recommended "Connection Attempt Delay"
(also what Chrome and trio use). TCP_NODELAY is on for every stream: sockit's users send
whole messages with ``sendall`` and gain nothing from Nagle's algorithm delaying them
(Go, Node and trio make the same choice).

Must never block without a deadline it can honour or leave a losing socket open.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sockit.addr import (
    AddrInfo,
    Resolver,
    SocketAddress,
    check_host,
    default_resolver,
    order_addresses,
    parse_local_address,
    parse_port,
)
from sockit.addr.binding import set_nodelay, start_connect
from sockit.errors import ConnectError, connect_error_from_attempts
from sockit.proto.happy_eyeballs import (
    DEFAULT_HAPPY_EYEBALLS_DELAY,
    GiveUp,
    HappyEyeballs,
    StartAttempt,
    check_happy_eyeballs_delay,
)
from sockit.proto.timeouts import resolve_timeout
from sockit.sync.factory import SYSTEM_SOCKET_FACTORY, SocketFactory
from sockit.sync.stream import SocketStream

__all__ = ["DEFAULT_HAPPY_EYEBALLS_DELAY", "connect", "connect_unix"]


@dataclass
class _Attempt:
    index: int
    info: AddrInfo
    sock: socket.socket


def connect(
    host: str,
    port: int | str,
    *,
    timeout: float | None = None,
    happy_eyeballs_delay: float | None = DEFAULT_HAPPY_EYEBALLS_DELAY,
    family: int | None = None,
    local_address: tuple[str, int] | str | None = None,
    resolver: Resolver | None = None,
    socket_factory: SocketFactory | None = None,
) -> SocketStream:
    """Open a TCP connection to ``host``:``port`` and return a :class:`SocketStream`.

    ``host`` is a name, an IPv4 or IPv6 literal (``"fe80::1%eth0"`` for a scope); it
    is checked (:func:`sockit.addr.check_host`) and ``port`` validated
    (:func:`sockit.addr.parse_port`) before anything is looked up, so bad input raises
    :class:`~sockit.AddressError` at once.

    ``timeout`` bounds the whole call (resolution and every attempt); when it expires
    :class:`~sockit.ConnectTimeoutError` (a ``TimeoutError``) is raised. It does not
    become the stream's default timeout. ``happy_eyeballs_delay`` is the time between
    attempt starts (``None``: one attempt at a time, each to completion). ``family``
    restricts to ``socket.AF_INET`` or ``AF_INET6``. ``local_address`` binds the
    client side first (``"192.0.2.1"`` or ``(host, port)``) and restricts the attempts
    to its family.

    Raises :class:`~sockit.ResolutionError` if the name does not resolve and
    :class:`~sockit.ConnectError` (a ``ConnectionRefusedError`` when refused) if no
    attempt succeeds. ``resolver`` and ``socket_factory`` replace the system ones
    (tests use the fakes of :mod:`sockit.testing`).
    """
    factory = socket_factory or SYSTEM_SOCKET_FACTORY
    ascii_host = check_host(host)
    port_number = parse_port(port)
    local = parse_local_address(local_address, family=family)
    if local is not None:
        family = local.family
    delay = check_happy_eyeballs_delay(happy_eyeballs_delay)
    seconds = resolve_timeout(timeout, None)
    start = factory.monotonic()

    infos = (resolver or default_resolver()).getaddrinfo(
        ascii_host, port_number, family=family or 0, type=socket.SOCK_STREAM, timeout=seconds
    )
    ordered = order_addresses(infos)
    if not ordered:
        raise ConnectError(host, port_number, [], reason="the name has no usable address")
    schedule = HappyEyeballs(
        [str(info.address) for info in ordered], delay=delay, start=start, timeout=seconds
    )
    pending: list[_Attempt] = []
    try:
        while True:
            now = factory.monotonic()
            step = schedule.next_step(now)
            if isinstance(step, StartAttempt):
                info = ordered[step.index]
                try:
                    sock = start_connect(factory.socket, info, local)
                except OSError as error:
                    schedule.attempt_failed(step.index, error, now)
                    continue
                pending.append(_Attempt(step.index, info, sock))
                schedule.attempt_started(step.index, now)
                continue
            if isinstance(step, GiveUp):
                raise connect_error_from_attempts(
                    host, port_number, schedule.failures, timed_out=step.timed_out
                ) from schedule.last_error
            ready = factory.wait_writable([attempt.sock for attempt in pending], step.timeout)
            for attempt in [a for a in pending if a.sock in ready]:
                code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                pending.remove(attempt)
                if code == 0:
                    return _make_stream(attempt)
                attempt.sock.close()
                failure = OSError(code, os.strerror(code))
                schedule.attempt_failed(attempt.index, failure, factory.monotonic())
    finally:
        for attempt in pending:
            attempt.sock.close()


def _make_stream(attempt: _Attempt) -> SocketStream:
    sock = attempt.sock
    try:
        sock.setblocking(True)
        set_nodelay(sock)
    except BaseException:
        sock.close()
        raise
    return SocketStream(sock, remote_address=attempt.info.address)


def connect_unix(
    path: str, *, timeout: float | None = None, socket_factory: SocketFactory | None = None
) -> SocketStream:
    """Connect to the UNIX stream socket at ``path`` (``"@name"`` for the abstract
    namespace) and return a :class:`SocketStream`.

    Raises ``FileNotFoundError`` if nothing is at the path, ``ConnectionRefusedError``
    if a socket file is there but nobody listens (a stale file), ``TimeoutError`` if the
    listener's backlog stays full for ``timeout`` seconds.
    """
    factory = socket_factory or SYSTEM_SOCKET_FACTORY
    address = SocketAddress(socket.AF_UNIX, path=path)
    sock = factory.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(resolve_timeout(timeout, None))
        try:
            sock.connect(address.to_sockaddr())
        except TimeoutError as error:
            raise TimeoutError(f"connect to {address} timed out") from error
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return SocketStream(sock, remote_address=address)
