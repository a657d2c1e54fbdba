"""L2a: the blocking socket API on the stdlib socket module.

Everything here blocks the calling thread (with optional timeouts). It must never import
``sockit.aio``: the async twin keeps its own I/O and shares only ``addr/`` and ``proto/``.
"""

from sockit.sync.connect import DEFAULT_HAPPY_EYEBALLS_DELAY, connect, connect_unix
from sockit.sync.factory import SYSTEM_SOCKET_FACTORY, SocketFactory, SystemSocketFactory
from sockit.sync.framed import FramedStream
from sockit.sync.listen import DEFAULT_BACKLOG, SocketListener, listen, listen_unix
from sockit.sync.stream import SocketStream
from sockit.sync.udp import (
    IPV4_MAX_DATAGRAM,
    IPV6_MAX_DATAGRAM,
    UDPSocket,
    UnixDatagramSocket,
    open_udp,
    open_unix_datagram,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_HAPPY_EYEBALLS_DELAY",
    "IPV4_MAX_DATAGRAM",
    "IPV6_MAX_DATAGRAM",
    "SYSTEM_SOCKET_FACTORY",
    "FramedStream",
    "SocketFactory",
    "SocketListener",
    "SocketStream",
    "SystemSocketFactory",
    "UDPSocket",
    "UnixDatagramSocket",
    "connect",
    "connect_unix",
    "listen",
    "listen_unix",
    "open_udp",
    "open_unix_datagram",
]
