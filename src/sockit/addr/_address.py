"""SocketAddress and AddrInfo: where a socket is, printable the way people write it.

Must never do I/O (no lookups): it converts between kernel ``sockaddr`` tuples and
the values, nothing more.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["AddrInfo", "SocketAddress", "format_host_port"]

_MAPPED_PREFIX = "::ffff:"


def format_host_port(host: str, port: int) -> str:
    """``127.0.0.1:80``, ``[::1]:80``; a host containing ``:`` is bracketed."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True, repr=False)
class SocketAddress:
    """The address of one end of a socket: IPv4, IPv6 or UNIX.

    * IPv4: ``family=AF_INET``, ``host="127.0.0.1"``, ``port``.
    * IPv6: ``family=AF_INET6``, ``host="::1"`` (scope in ``scope_id``), ``port``.
      IPv4-mapped addresses (``::ffff:a.b.c.d``) are reported as IPv4 by
      :meth:`from_sockaddr`, so the same peer looks the same on every listener.
    * UNIX: ``family=AF_UNIX``, ``path`` as ``str`` (filesystem), or a name starting with
      ``"@"`` for the Linux abstract namespace, or ``""`` for an unnamed socket.

    ``str()`` gives ``127.0.0.1:8080``, ``[::1]:8080``, ``[fe80::1%lo]:8080``,
    ``unix:/run/x.sock``, ``@name`` or ``unix:(unnamed)``.
    """

    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    scope_id: int = 0
    flowinfo: int = 0
    path: str | None = None

    @classmethod
    def from_sockaddr(cls, family: int, sockaddr: object) -> SocketAddress:
        """Build from what ``getsockname()``/``accept()``/``recvfrom()`` return."""
        if family == socket.AF_INET and isinstance(sockaddr, tuple):
            return cls(socket.AF_INET, str(sockaddr[0]), int(sockaddr[1]))
        if family == socket.AF_INET6 and isinstance(sockaddr, tuple):
            host = str(sockaddr[0])
            port = int(sockaddr[1])
            if host.startswith(_MAPPED_PREFIX) and "." in host:
                return cls(socket.AF_INET, host[len(_MAPPED_PREFIX) :], port)
            flowinfo = int(sockaddr[2]) if len(sockaddr) > 2 else 0
            scope_id = int(sockaddr[3]) if len(sockaddr) > 3 else 0
            # getnameinfo-style "fe80::1%lo" may already carry the scope in the host.
            if "%" in host:
                host = host.split("%", 1)[0]
            return cls(socket.AF_INET6, host, port, scope_id, flowinfo)
        if family == socket.AF_UNIX:
            return cls(socket.AF_UNIX, path=_unix_path(sockaddr))
        raise ValueError(f"unsupported address family {family!r} for {sockaddr!r}")

    def to_sockaddr(self) -> tuple[str, int] | tuple[str, int, int, int] | str | bytes:
        """The tuple/path to pass to ``bind``/``connect``/``sendto``."""
        if self.family == socket.AF_INET:
            return (self.host, self.port)
        if self.family == socket.AF_INET6:
            return (self.host, self.port, self.flowinfo, self.scope_id)
        path = self.path or ""
        if path.startswith("@"):
            return b"\0" + path[1:].encode("utf-8", "surrogateescape")
        return path

    @property
    def is_unix(self) -> bool:
        """True for AF_UNIX addresses."""
        return self.family == socket.AF_UNIX

    @property
    def is_abstract(self) -> bool:
        """True for a Linux abstract-namespace UNIX address (``@name``)."""
        return self.family == socket.AF_UNIX and (self.path or "").startswith("@")

    def __repr__(self) -> str:
        return f"SocketAddress({str(self)!r})"

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            if not self.path:
                return "unix:(unnamed)"
            if self.path.startswith("@"):
                return self.path
            return f"unix:{self.path}"
        host = self.host
        if self.family == socket.AF_INET6 and self.scope_id:
            host = f"{host}%{_scope_name(self.scope_id)}"
        return format_host_port(host, self.port)


def _unix_path(sockaddr: object) -> str:
    if isinstance(sockaddr, bytes):
        if sockaddr.startswith(b"\0"):
            return "@" + sockaddr[1:].decode("utf-8", "surrogateescape")
        return sockaddr.decode("utf-8", "surrogateescape")
    if isinstance(sockaddr, str):
        # CPython returns abstract names as bytes on Linux; keep a "\0" str safe too.
        if sockaddr.startswith("\0"):
            return "@" + sockaddr[1:]
        return sockaddr
    return ""


def _scope_name(scope_id: int) -> str:
    try:
        return socket.if_indextoname(scope_id)
    except OSError:
        return str(scope_id)


class AddrInfo(NamedTuple):
    """One answer of ``getaddrinfo``: the five fields it returns, with names.

    ``sockaddr`` is exactly what the system returned and is what to pass to
    ``connect``/``bind`` on a socket of ``family``. :attr:`address` is for display and
    comparison: note that it reports an IPv4-mapped IPv6 answer (``::ffff:a.b.c.d``) as
    IPv4, so ``address.to_sockaddr()`` does not always suit a socket of ``family``.
    """

    family: socket.AddressFamily
    type: socket.SocketKind
    proto: int
    canonname: str
    sockaddr: tuple[Any, ...]

    @property
    def address(self) -> SocketAddress:
        """The answer as a :class:`SocketAddress` (for printing and comparing)."""
        return SocketAddress.from_sockaddr(self.family, self.sockaddr)
