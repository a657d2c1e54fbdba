"""Endpoints: the parsed, checked form of "where to connect or listen".

One parsed value serves both for checking and for connecting: the host inside an
:class:`InetEndpoint` has already been through :func:`~sockit.addr.hosts.check_host` and
its port through :func:`~sockit.addr.ports.parse_port`, so what was validated is exactly
what is later resolved.

This module must never resolve names, open sockets or start threads.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass

from sockit.addr._address import SocketAddress, format_host_port
from sockit.addr.hosts import check_host
from sockit.addr.ports import parse_port
from sockit.errors import AddressError

__all__ = ["InetEndpoint", "UnixEndpoint", "parse_endpoint", "parse_local_address"]

_UNIX_PREFIX = "unix:"

# sun_path is 108 bytes on Linux and 104 on the BSDs and macOS (unix(7), unix(4)). A
# filesystem path needs a terminating NUL; an abstract name (Linux only) is preceded
# by one. Either way at most size - 1 bytes of name fit.
_SUN_PATH_SIZE = 108 if sys.platform.startswith("linux") else 104

_PORT_ONLY = re.compile(r"[+-]?[0-9]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class InetEndpoint:
    """An IPv4/IPv6 endpoint: a host (or ``None`` for "every local address") and a port.

    Construction checks and normalises: ``host`` goes through
    :func:`~sockit.addr.check_host` (so it is ASCII, IDNA encoded, IPv6 compressed) and
    ``port`` must be an ``int`` in 0..65535. ``str()`` gives ``host:port``,
    ``[v6]:port`` or ``:port`` for no host, which :func:`parse_endpoint` reads back to
    an equal value.

    Raises (from the constructor): ``TypeError`` for a non-``int`` port or non-``str``
    host, :class:`~sockit.errors.AddressError` or
    :class:`~sockit.errors.ResolutionError` as :func:`~sockit.addr.check_host` does.
    """

    host: str | None
    port: int

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, not {type(self.port).__name__}")
        parse_port(self.port)
        if self.host is not None:
            object.__setattr__(self, "host", check_host(self.host))

    def __str__(self) -> str:
        if self.host is None:
            return f":{self.port}"
        return format_host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class UnixEndpoint:
    """A UNIX-domain socket endpoint: a filesystem path, or ``"@name"`` (Linux abstract).

    Construction checks the path: not empty, no NUL byte, short enough for
    ``sun_path`` (107 bytes on Linux), and abstract names only on Linux. ``str()`` gives
    ``unix:/path`` (``unix:`` plus the path as given, relative or absolute) or
    ``@name``; :func:`parse_endpoint` reads it back to an equal value.

    Raises (from the constructor): ``TypeError`` for a non-``str`` path,
    :class:`~sockit.errors.AddressError` for an unusable one.
    """

    path: str

    def __post_init__(self) -> None:
        _check_unix_path(self.path)

    @property
    def is_abstract(self) -> bool:
        """True for a Linux abstract-namespace name (``@name``)."""
        return self.path.startswith("@")

    @property
    def address(self) -> SocketAddress:
        """The endpoint as a :class:`SocketAddress`; ``.to_sockaddr()`` is bind-ready."""
        return SocketAddress(socket.AF_UNIX, path=self.path)

    def __str__(self) -> str:
        if self.is_abstract:
            return self.path
        return f"{_UNIX_PREFIX}{self.path}"


def parse_endpoint(text: str, *, default_port: int | None = None) -> InetEndpoint | UnixEndpoint:
    """Parse an endpoint as people write it.

    ===========================  ==========================================
    ``host:port``                ``InetEndpoint(host, port)``
    ``host:http``                service name, looked up in services(5)
    ``[v6]:port``                IPv6 literal, may carry ``%scope``
    ``:8080`` or ``8080``        ``InetEndpoint(None, 8080)`` (no host)
    ``host`` / ``[v6]``          only with ``default_port``
    ``unix:path``                ``UnixEndpoint(path)`` (relative allowed)
    ``/abs/path``                ``UnixEndpoint("/abs/path")``
    ``@name``                    ``UnixEndpoint("@name")`` (Linux abstract)
    ===========================  ==========================================

    A bare IPv6 address (``::1``) is accepted only when ``default_port`` is given, since
    ``::1:80`` could be either; otherwise write ``[::1]:80``. Nothing is resolved.

    Raises:
        TypeError: ``text`` is not a ``str``.
        AddressError: the text, host or port is malformed, or a port is missing; the
            message names the endpoint and the bad part.
        ResolutionError: the host name cannot exist (too long, bad IDNA), as raised by
            :func:`~sockit.addr.check_host`.
    """
    if not isinstance(text, str):
        raise TypeError(f"endpoint must be a str, not {type(text).__name__}")
    try:
        return _parse(text, default_port)
    except AddressError as exc:
        raise AddressError(f"invalid endpoint {text!r}: {exc}") from exc


def parse_local_address(
    value: tuple[str, int] | str | None, *, family: int | None = None
) -> SocketAddress | None:
    """The ``local_address`` of a connect (what the client side binds to first) as a
    :class:`SocketAddress`, or ``None`` for none.

    ``value`` is an IP literal (``"192.0.2.1"``, ``"fe80::1%eth0"``) or a
    ``(literal, port)`` pair; the port defaults to 0 (any). A name is refused: binding
    to "whatever a name resolves to" is ambiguous and would need a lookup of its own.
    ``family`` is the connect's ``family`` argument, which must then agree.

    Raises :class:`~sockit.errors.AddressError` for a malformed host or port (as
    :func:`~sockit.addr.check_host` and :func:`~sockit.addr.parse_port` do),
    ``ValueError`` for a name or a family that disagrees.
    """
    if value is None:
        return None
    host, port = (value, 0) if isinstance(value, str) else value
    port_number = parse_port(port)
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        packed = b""
    if packed:
        local = SocketAddress(socket.AF_INET, host, port_number)
    else:
        literal = check_host(host)
        scope = 0
        if "%" in literal:
            literal, scope_name = literal.split("%", 1)
            scope = int(scope_name) if scope_name.isdigit() else socket.if_nametoindex(scope_name)
        try:
            socket.inet_pton(socket.AF_INET6, literal)
        except OSError:
            raise ValueError(f"local_address must be an IP address, not {host!r}") from None
        local = SocketAddress(socket.AF_INET6, literal, port_number, scope)
    if family is not None and family != local.family:
        raise ValueError("local_address and family disagree")
    return local


def _parse(text: str, default_port: int | None) -> InetEndpoint | UnixEndpoint:
    if not text:
        raise AddressError("empty endpoint")
    if text != text.strip():
        raise AddressError("leading or trailing white space")
    if text.startswith(_UNIX_PREFIX):
        return UnixEndpoint(text[len(_UNIX_PREFIX) :])
    if text.startswith(("/", "@")):
        return UnixEndpoint(text)
    if text.startswith("["):
        return _parse_bracketed(text, default_port)
    if text.count(":") > 1:
        if default_port is None:
            raise AddressError(
                "an IPv6 address with a port needs brackets, e.g. [::1]:80 or [fe80::1%eth0]:80"
            )
        return InetEndpoint(text, parse_port(default_port))
    host, colon, port_text = text.rpartition(":")
    if not colon:
        if _PORT_ONLY.fullmatch(text):
            return InetEndpoint(None, parse_port(text))
        return InetEndpoint(text, _default(default_port))
    port = parse_port(port_text) if port_text else _default(default_port)
    return InetEndpoint(host or None, port)


def _parse_bracketed(text: str, default_port: int | None) -> InetEndpoint:
    close = text.find("]")
    if close == -1:
        raise AddressError("missing ']' after the IPv6 address")
    host = text[1:close]
    rest = text[close + 1 :]
    if ":" not in host:
        raise AddressError(f"brackets are only for IPv6 addresses (RFC 3986), not {host!r}")
    if not rest:
        return InetEndpoint(host, _default(default_port))
    if not rest.startswith(":"):
        raise AddressError(f"expected ':port' after ']', found {rest!r}")
    port_text = rest[1:]
    return InetEndpoint(host, parse_port(port_text) if port_text else _default(default_port))


def _default(default_port: int | None) -> int:
    if default_port is None:
        raise AddressError("no port given (write host:port)")
    return parse_port(default_port)


def _check_unix_path(path: str) -> None:
    if not isinstance(path, str):
        raise TypeError(f"UNIX socket path must be a str, not {type(path).__name__}")
    if not path:
        raise AddressError("empty UNIX socket path")
    if "\0" in path:
        raise AddressError(f"UNIX socket path {path!r} contains a NUL character")
    if path.startswith("@"):
        if not sys.platform.startswith("linux"):
            raise AddressError(f"abstract UNIX socket names ({path!r}) exist only on Linux")
        if len(path) == 1:
            raise AddressError("empty abstract UNIX socket name '@'")
        size = len(path[1:].encode("utf-8", "surrogateescape"))
    else:
        size = len(os.fsencode(path))
    if size > _SUN_PATH_SIZE - 1:
        raise AddressError(
            f"UNIX socket path {path!r} is {size} bytes long; at most "
            f"{_SUN_PATH_SIZE - 1} fit in sun_path (see unix(7))"
        )
