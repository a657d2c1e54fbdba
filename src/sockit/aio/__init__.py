"""L2b: sockit's async API, the twin of the blocking one in :mod:`sockit.sync`.

The same nouns, names and contracts, awaited; ``aclose()`` instead of ``close()``:

* :func:`connect` (Happy Eyeballs, RFC 8305) and :func:`connect_unix` give an
  :class:`AsyncSocketStream`;
* :func:`listen` (IPv4 and IPv6 on one port) and :func:`listen_unix` give an
  :class:`AsyncSocketListener`;
* :func:`open_udp` gives an :class:`AsyncUDPSocket`;
* :func:`run` runs a coroutine on a new loop from :func:`new_event_loop`: uvloop when it
  is installed (a default dependency on Linux), the stdlib loop otherwise or when
  ``SOCKIT_LOOP=asyncio``.

Everything works the same on uvloop and on asyncio's own loop, built on non-blocking
sockets and the loop's protocol/transport and readiness primitives.

This package must never import ``sockit.sync`` (the twins share only ``sockit.addr``
and ``sockit.proto``), and never import uvloop at import time.
"""

from sockit.aio._loop import loop_name, new_event_loop, run
from sockit.aio.connect import DEFAULT_HAPPY_EYEBALLS_DELAY, connect, connect_unix
from sockit.aio.listen import DEFAULT_BACKLOG, AsyncSocketListener, listen, listen_unix
from sockit.aio.stream import RECEIVE_BUFFER_LIMIT, SEND_CHUNK, AsyncSocketStream
from sockit.aio.udp import IPV4_MAX_DATAGRAM, IPV6_MAX_DATAGRAM, AsyncUDPSocket, open_udp

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_HAPPY_EYEBALLS_DELAY",
    "IPV4_MAX_DATAGRAM",
    "IPV6_MAX_DATAGRAM",
    "RECEIVE_BUFFER_LIMIT",
    "SEND_CHUNK",
    "AsyncSocketListener",
    "AsyncSocketStream",
    "AsyncUDPSocket",
    "connect",
    "connect_unix",
    "listen",
    "listen_unix",
    "loop_name",
    "new_event_loop",
    "open_udp",
    "run",
]
