"""L0 addresses: parse, check and format endpoints; order and resolve addresses.

Everything here is usable without a socket: parsing and checking never do I/O, and the
only module that looks anything up is :mod:`sockit.addr.resolver` (the system resolver,
in worker threads) plus ``getservbyname`` for service names in
:func:`~sockit.addr.parse_port`.

This package must never import from sockit layers above it (proto/, sync/, aio/, ...)
and never open a socket, with three documented exceptions, the socket set-up that sync
and async share so the twins cannot drift: :mod:`sockit.addr.unixpath` (UNIX
socket-file rules) probes and binds the path it is given, :mod:`sockit.addr.binding`
(listening and connecting TCP sockets) and :mod:`sockit.addr.datagram` (UDP sockets)
create, bind and connect sockets through a factory the caller passes. None of them
waits or accepts, and none is imported here, so ``import sockit.addr`` stays free of
them.
"""

from __future__ import annotations

from sockit.addr._address import AddrInfo, SocketAddress, format_host_port
from sockit.addr.endpoint import InetEndpoint, UnixEndpoint, parse_endpoint, parse_local_address
from sockit.addr.hosts import check_host, is_ip_literal
from sockit.addr.ordering import order_addresses
from sockit.addr.ports import parse_port
from sockit.addr.resolver import (
    Resolver,
    StdlibResolver,
    close_default_resolver,
    default_resolver,
)

__all__ = [
    "AddrInfo",
    "InetEndpoint",
    "Resolver",
    "SocketAddress",
    "StdlibResolver",
    "UnixEndpoint",
    "check_host",
    "close_default_resolver",
    "default_resolver",
    "format_host_port",
    "is_ip_literal",
    "order_addresses",
    "parse_endpoint",
    "parse_local_address",
    "parse_port",
]
