"""sockit: the socket model every networking course teaches, made correct and pleasant.

The blocking API lives here (``sockit.connect``, ``sockit.listen`` ...); the async twin
is ``sockit.aio``. Importing sockit must stay fast (the CLI's start-up time is a
measured goal): optional dependencies are imported lazily where they are used.
"""

from sockit._version import __version__
from sockit.addr import (
    InetEndpoint,
    SocketAddress,
    UnixEndpoint,
    parse_endpoint,
    parse_port,
)
from sockit.errors import (
    AddressError,
    BrokenResourceError,
    ClosedResourceError,
    ConnectAttempt,
    ConnectError,
    ConnectionResetByPeer,
    ConnectRefusedError,
    ConnectTimeoutError,
    DatagramTooLarge,
    DatagramTruncated,
    EndOfStream,
    IncompleteRead,
    LimitExceeded,
    PeerClosedError,
    ResolutionError,
    SockitError,
)
from sockit.sync import (
    SocketListener,
    SocketStream,
    UDPSocket,
    UnixDatagramSocket,
    connect,
    connect_unix,
    listen,
    listen_unix,
    open_udp,
    open_unix_datagram,
)

__all__ = [
    "AddressError",
    "BrokenResourceError",
    "ClosedResourceError",
    "ConnectAttempt",
    "ConnectError",
    "ConnectRefusedError",
    "ConnectTimeoutError",
    "ConnectionResetByPeer",
    "DatagramTooLarge",
    "DatagramTruncated",
    "EndOfStream",
    "IncompleteRead",
    "InetEndpoint",
    "LimitExceeded",
    "PeerClosedError",
    "ResolutionError",
    "SocketAddress",
    "SocketListener",
    "SocketStream",
    "SockitError",
    "UDPSocket",
    "UnixDatagramSocket",
    "UnixEndpoint",
    "__version__",
    "connect",
    "connect_unix",
    "listen",
    "listen_unix",
    "open_udp",
    "open_unix_datagram",
    "parse_endpoint",
    "parse_port",
]
