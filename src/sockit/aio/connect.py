"""connect(): an active open with Happy Eyeballs (RFC 8305), and connect_unix(), awaited.

The async twin of ``sockit/sync/connect.py``, with exactly its algorithm:

1. Resolve the name (the resolver's order is respected: it already applied RFC 6724
   destination address selection and the system's gai.conf).
2. Interleave address families (RFC 8305 section 4), starting with the family of the
   first answer (:func:`sockit.addr.order_addresses`, shared with the sync layer).
3. Start the first attempt; start the next one ``happy_eyeballs_delay`` seconds later,
   or at once when the previous attempt fails, whichever comes first.
4. The first attempt to complete wins; every other attempt is closed.
5. If all fail, raise one exception that names the host, the port and every attempt
   (address, error, elapsed time); a refusal anywhere makes it a
   ``ConnectionRefusedError`` (:func:`sockit.errors.connect_error_from_attempts`).

Steps 3 to 5 are the schedule of :class:`sockit.proto.happy_eyeballs.HappyEyeballs`,
the one the sync layer drives, and the attempts are started by
:func:`sockit.addr.binding.start_connect`, as there. They are non-blocking sockets
whose completion is awaited with ``loop.add_writer`` on all of them at once (one
waiter, no Task per attempt), and cancelling the caller closes every attempt. The
250 ms default delay is RFC 8305 section 5's "Connection Attempt Delay"; TCP_NODELAY is
on for every stream (see :func:`sockit.addr.binding.set_nodelay` for why).

Must never block the loop on a name lookup or a connect, and never leave a losing
socket open.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from dataclasses import dataclass

from sockit.addr import (
    AddrInfo,
    Resolver,
    SocketAddress,
    check_host,
    order_addresses,
    parse_local_address,
    parse_port,
)
from sockit.addr.binding import set_nodelay, start_connect
from sockit.addr.unixpath import unix_sockaddr
from sockit.aio._resolve import resolve
from sockit.aio._wait import wait_writable
from sockit.aio.stream import AsyncSocketStream, attach_stream
from sockit.errors import ConnectError, connect_error_from_attempts
from sockit.proto.happy_eyeballs import (
    DEFAULT_HAPPY_EYEBALLS_DELAY,
    GiveUp,
    HappyEyeballs,
    StartAttempt,
    check_happy_eyeballs_delay,
)
from sockit.proto.timeouts import resolve_timeout

__all__ = [
    "DEFAULT_HAPPY_EYEBALLS_DELAY",
    "connect",
    "connect_socket",
    "connect_unix",
    "connect_unix_socket",
]

# A non-blocking connect to a UNIX socket whose accept queue is full fails with EAGAIN
# and, unlike TCP, is not left in progress: nothing will ever report it writable, and
# Linux has no event for "the listener accepted, there is room now" (a blocking connect
# sleeps on the listener's peer_wait queue, which poll does not expose). So it is
# retried with a bounded exponential backoff, the same schedule the sync layer uses
# for full UNIX datagram queues.
# ``--trace`` (DESIGN.md: getaddrinfo answers and each connect attempt, as they happen);
# a disabled logger costs one isEnabledFor call per connect.
_tracer = logging.getLogger("sockit.trace")
_TRACE = {"event": "trace"}

_UNIX_RETRY_FIRST = 0.001
_UNIX_RETRY_MAX = 0.05


@dataclass
class _Attempt:
    index: int
    info: AddrInfo
    sock: socket.socket
    fd: int


async def connect(
    host: str,
    port: int | str,
    *,
    timeout: float | None = None,
    happy_eyeballs_delay: float | None = DEFAULT_HAPPY_EYEBALLS_DELAY,
    family: int | None = None,
    local_address: tuple[str, int] | str | None = None,
    resolver: Resolver | None = None,
) -> AsyncSocketStream:
    """Open a TCP connection to ``host``:``port`` and return an :class:`AsyncSocketStream`.

    The same contract as :func:`sockit.connect`: ``host`` is checked
    (:func:`sockit.addr.check_host`) and ``port`` validated
    (:func:`sockit.addr.parse_port`) before anything is looked up, so bad input raises
    :class:`~sockit.AddressError` at once. ``timeout`` bounds the whole call
    (resolution and every attempt) and raises :class:`~sockit.ConnectTimeoutError` (a
    ``TimeoutError``); it does not become the stream's default timeout.
    ``happy_eyeballs_delay`` is the time between attempt starts (``None``: one attempt
    at a time, each to completion). ``family`` restricts to ``socket.AF_INET`` or
    ``AF_INET6``; ``local_address`` (``"192.0.2.1"`` or ``(host, port)``) binds the
    client side first and restricts the attempts to its family.

    Raises :class:`~sockit.ResolutionError` if the name does not resolve and
    :class:`~sockit.ConnectError` (a ``ConnectionRefusedError`` when refused) if no
    attempt succeeds. ``resolver`` replaces the system resolver; it is called on the
    loop's thread and must answer at once (see :mod:`sockit.aio._resolve`). Cancelling
    the call closes every attempt.
    """
    sock, address = await connect_socket(
        host,
        port,
        timeout=timeout,
        happy_eyeballs_delay=happy_eyeballs_delay,
        family=family,
        local_address=local_address,
        resolver=resolver,
    )
    return await attach_stream(sock, remote_address=address)


async def connect_socket(
    host: str,
    port: int | str,
    *,
    timeout: float | None = None,
    happy_eyeballs_delay: float | None = DEFAULT_HAPPY_EYEBALLS_DELAY,
    family: int | None = None,
    local_address: tuple[str, int] | str | None = None,
    resolver: Resolver | None = None,
) -> tuple[socket.socket, SocketAddress]:
    """:func:`connect` without the stream: the connected, non-blocking socket (with
    ``TCP_NODELAY``) and the address it reached, for code that drives the file
    descriptor itself (the relay's pump). Same arguments, checks and errors; the caller
    owns (and must close) the socket.
    """
    ascii_host = check_host(host)
    port_number = parse_port(port)
    local = parse_local_address(local_address, family=family)
    if local is not None:
        family = local.family
    delay = check_happy_eyeballs_delay(happy_eyeballs_delay)
    seconds = resolve_timeout(timeout, None)
    loop = asyncio.get_running_loop()
    start = loop.time()

    infos = await resolve(
        resolver,
        ascii_host,
        port_number,
        family=family or 0,
        type=socket.SOCK_STREAM,
        timeout=seconds,
        display_host=host,
    )
    ordered = order_addresses(infos)
    trace = _tracer.isEnabledFor(logging.DEBUG)
    if trace:
        answers = ", ".join(str(info.address) for info in ordered) or "no usable address"
        _tracer.debug("getaddrinfo %s port %d: %s", host, port_number, answers, extra=_TRACE)
    if not ordered:
        raise ConnectError(host, port_number, [], reason="the name has no usable address")
    schedule = HappyEyeballs(
        [str(info.address) for info in ordered], delay=delay, start=start, timeout=seconds
    )
    pending: list[_Attempt] = []
    try:
        while True:
            now = loop.time()
            step = schedule.next_step(now)
            if isinstance(step, StartAttempt):
                info = ordered[step.index]
                if trace:
                    _tracer.debug(
                        "connect %s (attempt %d)", info.address, step.index + 1, extra=_TRACE
                    )
                try:
                    sock = start_connect(socket.socket, info, local)
                except OSError as error:
                    if trace:
                        _tracer.debug(
                            "connect %s failed: %s", info.address, error.strerror, extra=_TRACE
                        )
                    schedule.attempt_failed(step.index, error, now)
                    continue
                pending.append(_Attempt(step.index, info, sock, sock.fileno()))
                schedule.attempt_started(step.index, now)
                continue
            if isinstance(step, GiveUp):
                raise connect_error_from_attempts(
                    host, port_number, schedule.failures, timed_out=step.timed_out
                ) from schedule.last_error
            ready = set(await wait_writable([attempt.fd for attempt in pending], step.timeout))
            for attempt in [a for a in pending if a.fd in ready]:
                code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                pending.remove(attempt)
                if code == 0:
                    # Exactly one winner: the first completed attempt in attempt order;
                    # any other that completed in the same wake-up is closed below.
                    if trace:
                        local_end = SocketAddress.from_sockaddr(
                            attempt.sock.family, attempt.sock.getsockname()
                        )
                        _tracer.debug(
                            "connected %s -> %s", local_end, attempt.info.address, extra=_TRACE
                        )
                    return _winner(attempt)
                attempt.sock.close()
                failure = OSError(code, os.strerror(code))
                if trace:
                    _tracer.debug(
                        "connect %s failed: %s",
                        attempt.info.address,
                        failure.strerror,
                        extra=_TRACE,
                    )
                schedule.attempt_failed(attempt.index, failure, loop.time())
    finally:
        for attempt in pending:
            attempt.sock.close()


def _winner(attempt: _Attempt) -> tuple[socket.socket, SocketAddress]:
    sock = attempt.sock
    try:
        set_nodelay(sock)
    except BaseException:
        sock.close()
        raise
    return sock, attempt.info.address


async def connect_unix(path: str, *, timeout: float | None = None) -> AsyncSocketStream:
    """Connect to the UNIX stream socket at ``path`` (``"@name"`` for the abstract
    namespace) and return an :class:`AsyncSocketStream`.

    Raises :class:`~sockit.AddressError` for an empty or too long path,
    ``FileNotFoundError`` if nothing is at the path, ``ConnectionRefusedError`` if a
    socket file is there but nobody listens (a stale file), ``TimeoutError`` if the
    listener's accept queue stays full for ``timeout`` seconds (the connect is retried
    with a short backoff meanwhile, see the module's comments).
    """
    sock, address = await connect_unix_socket(path, timeout=timeout)
    return await attach_stream(sock, remote_address=address)


async def connect_unix_socket(
    path: str, *, timeout: float | None = None
) -> tuple[socket.socket, SocketAddress]:
    """:func:`connect_unix` without the stream: the connected, non-blocking socket and
    its peer address, owned (and to be closed) by the caller. Same checks and errors.
    """
    sockaddr = unix_sockaddr(path)
    address = SocketAddress(socket.AF_UNIX, path=path)
    seconds = resolve_timeout(timeout, None)
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        backoff = _UNIX_RETRY_FIRST
        while True:
            code = sock.connect_ex(sockaddr)
            if code == 0:
                break
            if code == errno.EINPROGRESS:
                # Not what Linux does for UNIX sockets, but POSIX allows it: then the
                # result is reported like a TCP connect's.
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                if not await wait_writable([sock.fileno()], remaining):
                    raise TimeoutError(f"connect to {address} timed out")
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    break
            if code != errno.EAGAIN:
                raise OSError(code, os.strerror(code), path)
            now = loop.time()
            if deadline is not None and now >= deadline:
                raise TimeoutError(
                    f"connect to {address} timed out (the listener's accept queue is full)"
                )
            pause = backoff if deadline is None else min(backoff, deadline - now)
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, _UNIX_RETRY_MAX)
    except BaseException:
        sock.close()
        raise
    return sock, address
