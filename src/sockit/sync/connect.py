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

The 250 ms default delay is RFC 8305 section 5's recommended "Connection Attempt Delay"
(also what Chrome and trio use). TCP_NODELAY is on for every stream: sockit's users send
whole messages with ``sendall`` and gain nothing from Nagle's algorithm delaying them
(Go, Node and trio make the same choice).

Must never block without a deadline it can honour or leave a losing socket open.
"""

from __future__ import annotations

import errno
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
    parse_port,
)
from sockit.errors import (
    ConnectAttempt,
    ConnectError,
    connect_error_from_attempts,
)
from sockit.sync._errors import resolve_timeout
from sockit.sync.factory import SYSTEM_SOCKET_FACTORY, SocketFactory
from sockit.sync.stream import SocketStream

__all__ = ["DEFAULT_HAPPY_EYEBALLS_DELAY", "connect", "connect_unix"]

DEFAULT_HAPPY_EYEBALLS_DELAY = 0.25
"""RFC 8305 section 5: "a reasonable default is 250 ms"."""


@dataclass
class _Attempt:
    info: AddrInfo
    sock: socket.socket
    started: float


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
    local = _parse_local_address(local_address)
    if local is not None:
        if family is not None and family != local.family:
            raise ValueError("local_address and family disagree")
        family = local.family
    seconds = resolve_timeout(timeout, None)
    start = factory.monotonic()
    deadline = None if seconds is None else start + seconds

    infos = (resolver or default_resolver()).getaddrinfo(
        ascii_host, port_number, family=family or 0, type=socket.SOCK_STREAM, timeout=seconds
    )
    ordered = order_addresses(infos)
    if not ordered:
        raise ConnectError(host, port_number, [], reason="the name has no usable address")
    delay = happy_eyeballs_delay
    if delay is not None and delay < 0:
        raise ValueError(f"happy_eyeballs_delay must be >= 0 or None, not {delay}")

    failures: list[ConnectAttempt] = []
    pending: list[_Attempt] = []
    next_index = 0
    next_start = start
    last_error: OSError | None = None
    try:
        while True:
            now = factory.monotonic()
            if deadline is not None and now >= deadline:
                raise connect_error_from_attempts(
                    host, port_number, failures, timed_out=True
                ) from last_error
            # Start the next attempt when its time has come, or at once when nothing
            # is in flight (the previous attempt failed).
            if next_index < len(ordered) and (not pending or now >= next_start):
                info = ordered[next_index]
                next_index += 1
                try:
                    pending.append(_start_attempt(factory, info, local, now))
                except OSError as error:
                    last_error = error
                    failures.append(ConnectAttempt(str(info.address), error, now - start))
                    continue
                next_start = now + delay if delay is not None else float("inf")
                continue
            if not pending:
                raise connect_error_from_attempts(host, port_number, failures) from last_error
            wait_until = next_start if next_index < len(ordered) else None
            if deadline is not None:
                wait_until = deadline if wait_until is None else min(wait_until, deadline)
            wait = None if wait_until is None else max(0.0, wait_until - now)
            ready = factory.wait_writable([attempt.sock for attempt in pending], wait)
            for attempt in [a for a in pending if a.sock in ready]:
                code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    pending.remove(attempt)
                    return _make_stream(attempt)
                pending.remove(attempt)
                attempt.sock.close()
                last_error = OSError(code, os.strerror(code))
                failed_at = factory.monotonic()
                failures.append(
                    ConnectAttempt(str(attempt.info.address), last_error, failed_at - start)
                )
                # RFC 8305 section 5: a failure starts the next attempt immediately.
                next_start = failed_at
    finally:
        for attempt in pending:
            attempt.sock.close()


def _start_attempt(
    factory: SocketFactory, info: AddrInfo, local: SocketAddress | None, now: float
) -> _Attempt:
    sock = factory.socket(info.family, socket.SOCK_STREAM, info.proto)
    try:
        sock.setblocking(False)
        if local is not None:
            sock.bind(local.to_sockaddr())
        code = sock.connect_ex(info.sockaddr)
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return _Attempt(info, sock, now)


def _make_stream(attempt: _Attempt) -> SocketStream:
    sock = attempt.sock
    try:
        sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return SocketStream(sock, remote_address=attempt.info.address)


def _parse_local_address(value: tuple[str, int] | str | None) -> SocketAddress | None:
    if value is None:
        return None
    host, port = (value, 0) if isinstance(value, str) else value
    port_number = parse_port(port)
    # A local address must be a literal: binding to "whatever a name resolves to" is
    # ambiguous and would need a lookup of its own.
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        packed = b""
    if packed:
        return SocketAddress(socket.AF_INET, host, port_number)
    literal = check_host(host)
    scope = 0
    if "%" in literal:
        literal, scope_name = literal.split("%", 1)
        scope = int(scope_name) if scope_name.isdigit() else socket.if_nametoindex(scope_name)
    try:
        socket.inet_pton(socket.AF_INET6, literal)
    except OSError:
        raise ValueError(f"local_address must be an IP address, not {host!r}") from None
    return SocketAddress(socket.AF_INET6, literal, port_number, scope)


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
