"""sockit: the socket model every networking course teaches, made correct and pleasant.

The blocking API lives here (``sockit.connect``, ``sockit.listen`` ...); the async twin
is ``sockit.aio``. Importing sockit must stay fast (``sockit --version`` has a start-up
goal), so the names below are loaded on first use (PEP 562): ``import sockit`` reads no
socket code until a program touches ``sockit.connect`` or another name.
"""

from __future__ import annotations

from sockit._version import __version__

# typing.TYPE_CHECKING without importing typing (13 ms of start-up): type checkers treat
# this name as True, the interpreter sees False.
TYPE_CHECKING = False

if TYPE_CHECKING:
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
        ProxyAuthError,
        ProxyError,
        ResolutionError,
        SockitError,
    )
    from sockit.proto.framing import Delimited, LengthPrefixed, Lines
    from sockit.serve.server import serve
    from sockit.sync import (
        FramedStream,
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

# Where each public name lives; loaded by __getattr__ on first access.
_LAZY = {
    "AddressError": "sockit.errors",
    "BrokenResourceError": "sockit.errors",
    "ClosedResourceError": "sockit.errors",
    "ConnectAttempt": "sockit.errors",
    "ConnectError": "sockit.errors",
    "ConnectRefusedError": "sockit.errors",
    "ConnectTimeoutError": "sockit.errors",
    "ConnectionResetByPeer": "sockit.errors",
    "DatagramTooLarge": "sockit.errors",
    "DatagramTruncated": "sockit.errors",
    "Delimited": "sockit.proto.framing",
    "EndOfStream": "sockit.errors",
    "FramedStream": "sockit.sync",
    "IncompleteRead": "sockit.errors",
    "InetEndpoint": "sockit.addr",
    "LengthPrefixed": "sockit.proto.framing",
    "LimitExceeded": "sockit.errors",
    "Lines": "sockit.proto.framing",
    "PeerClosedError": "sockit.errors",
    "ProxyAuthError": "sockit.errors",
    "ProxyError": "sockit.errors",
    "ResolutionError": "sockit.errors",
    "SocketAddress": "sockit.addr",
    "SocketListener": "sockit.sync",
    "SocketStream": "sockit.sync",
    "SockitError": "sockit.errors",
    "UDPSocket": "sockit.sync",
    "UnixDatagramSocket": "sockit.sync",
    "UnixEndpoint": "sockit.addr",
    "connect": "sockit.sync",
    "connect_unix": "sockit.sync",
    "listen": "sockit.sync",
    "listen_unix": "sockit.sync",
    "open_udp": "sockit.sync",
    "open_unix_datagram": "sockit.sync",
    "parse_endpoint": "sockit.addr",
    "parse_port": "sockit.addr",
}

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
    "Delimited",
    "EndOfStream",
    "FramedStream",
    "IncompleteRead",
    "InetEndpoint",
    "LengthPrefixed",
    "LimitExceeded",
    "Lines",
    "PeerClosedError",
    "ProxyAuthError",
    "ProxyError",
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
    "serve",
]


if not TYPE_CHECKING:
    # Defined for the interpreter only: type checkers see the imports above, so a typo
    # such as ``sockit.conect`` is still a type error for users.

    def __getattr__(name: str) -> object:
        if name == "serve":
            # The package sockit.serve is callable (it forwards to serve()), and
            # importing it binds it here, as any submodule import would.
            import sockit.serve  # noqa: PLC0415

            return sockit.serve
        module_name = _LAZY.get(name)
        if module_name is None:
            raise AttributeError(f"module 'sockit' has no attribute {name!r}")
        import importlib  # noqa: PLC0415 (only when a lazy name is first used)

        value = getattr(importlib.import_module(module_name), name)
        globals()[name] = value  # later accesses skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
