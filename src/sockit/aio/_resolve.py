"""Name resolution for sockit.aio without blocking the event loop.

:class:`sockit.addr.Resolver` is a blocking interface (the sync layer waits in the
calling thread). On the loop:

* IP literals and the wildcard never need a lookup: the resolver answers them at once
  (``AI_NUMERICHOST``, no thread), so they are asked directly.
* Names with the default resolver go to ``loop.getaddrinfo``: a worker of the loop
  (libuv's thread pool on uvloop, the default executor on asyncio) runs
  ``getaddrinfo``, and the loop keeps serving other tasks meanwhile. The answers come
  in the system's order (RFC 6724, gai.conf), as with the sync resolver.
* A resolver passed in explicitly is called on the loop's thread: it must answer at
  once, like :class:`sockit.testing.fakes.FakeResolver` (a blocking resolver would
  stall every task of the loop while it looks up).

Must never send an IP literal to a thread, and never wait longer than the timeout given.
"""

from __future__ import annotations

import asyncio
import socket

from sockit.addr import AddrInfo, Resolver, default_resolver, is_ip_literal
from sockit.errors import ResolutionError

__all__ = ["resolve"]

# The port is always passed as a number: no services(5) lookup for it.
_AI_NUMERICSERV: int = getattr(socket, "AI_NUMERICSERV", 0)


async def resolve(
    resolver: Resolver | None,
    host: str | None,
    port: int,
    *,
    family: int = 0,
    type: int = socket.SOCK_STREAM,
    flags: int = 0,
    timeout: float | None = None,
    display_host: str | None = None,
) -> list[AddrInfo]:
    """``getaddrinfo`` for a host already checked by :func:`sockit.addr.check_host`.

    Raises :class:`~sockit.ResolutionError` (chaining the ``gaierror``) if the name does
    not resolve, ``TimeoutError`` naming the host if ``timeout`` seconds pass first.
    ``display_host`` is the name as the caller wrote it, for messages.
    """
    if resolver is not None or host is None or is_ip_literal(host):
        return (resolver or default_resolver()).getaddrinfo(
            host, port, family=family, type=type, flags=flags, timeout=timeout
        )
    loop = asyncio.get_running_loop()
    shown = display_host or host
    try:
        async with asyncio.timeout(timeout):
            # bytes, not str: a str would go through Python's IDNA 2003 codec, and the
            # host is already in its final ASCII form (check_host applied IDNA 2008).
            answers = await loop.getaddrinfo(
                host.encode("ascii"),
                port,
                family=family,
                type=type,
                flags=flags | _AI_NUMERICSERV,
            )
    except socket.gaierror as error:
        raise ResolutionError(shown, error.strerror or str(error), gai_errno=error.errno) from error
    except TimeoutError as error:
        after = "" if timeout is None else f" after {timeout:g} seconds"
        raise TimeoutError(f"resolving {shown!r} timed out{after}") from error
    if not answers:
        raise ResolutionError(shown, "no addresses")
    return [
        AddrInfo(
            socket.AddressFamily(answer[0]),
            socket.SocketKind(answer[1]),
            answer[2],
            answer[3],
            tuple(answer[4]),
        )
        for answer in answers
    ]
