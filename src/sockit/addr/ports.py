"""Port numbers and service names, checked by us before anything is looked up.

Why we check ports ourselves: glibc's ``getaddrinfo`` parses a numeric service with
``strtoul`` and stores it with ``htons``, silently wrapping out-of-range values:
``65536`` becomes port 0 (bind to a random port!) and ``"99999"`` becomes 34463. So
every port is range-checked here, before any resolver call.

This module must never resolve host names, open sockets or start threads. The only
lookup it does is ``getservbyname`` for a service *name* (a local services(5) table).
"""

from __future__ import annotations

import re
import socket
import threading

from sockit.errors import AddressError

__all__ = ["MAX_PORT", "parse_port"]

MAX_PORT = 65535
"""Ports are 16-bit unsigned integers (RFC 793 section 3.1, RFC 768)."""

# A numeric attempt, sign included, so "-1" gets the "out of range" message rather than
# "unknown service". Only ASCII digits: str.isdigit() would accept "٣" or "²".
_NUMERIC = re.compile(r"[+-]?[0-9]+", re.ASCII)

# Service names: RFC 6335 section 5.1 allows letters, digits and hyphens, up to 15
# characters, starting with a letter or digit. Older services(5) entries also use
# ".", "_", "+", "*" and "/" (e.g. "sql*net"), so accept those too; everything else
# (spaces, NUL, non-ASCII) cannot be a service name and is rejected without a lookup.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+*/-]{0,62}", re.ASCII)

# Longest decimal text worth converting: int() on huge strings is slow (and limited).
_MAX_DIGITS = 16

_PROTOCOLS = frozenset({"tcp", "udp"})

# getservbyname(3) returns a pointer to static storage and is not thread-safe; CPython
# calls it with the GIL released, so concurrent callers could read each other's answer.
_SERVICE_LOCK = threading.Lock()


def parse_port(port: int | str, *, protocol: str = "tcp") -> int:
    """Return ``port`` as an int in 0..65535.

    Accepts an ``int``, a decimal string (``"8080"``) or a service name (``"http"``,
    looked up with ``getservbyname`` for ``protocol``, ``"tcp"`` or ``"udp"``).

    Raises:
        TypeError: ``port`` is a ``bool`` or not an ``int``/``str``.
        ValueError: ``protocol`` is not ``"tcp"`` or ``"udp"``.
        AddressError: out of range (``65536``, ``-1``, ``"99999"``), malformed, or an
            unknown service name. Numbers are checked before any lookup is made.
    """
    if protocol not in _PROTOCOLS:
        raise ValueError(f"protocol must be 'tcp' or 'udp', not {protocol!r}")
    # bool is an int subclass; True as a port is always a bug in the caller.
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise TypeError(f"port must be an int or a str, not {type(port).__name__}")
    if isinstance(port, int):
        return _check_range(port, port)
    if _NUMERIC.fullmatch(port):
        # No sign: "+80" is not how anyone writes a port, "-1" is out of range.
        if port[0] in "+-" or len(port.lstrip("0")) > _MAX_DIGITS:
            raise _out_of_range(port)
        return _check_range(int(port), port)
    if not port:
        raise AddressError("invalid port '': empty port")
    if not _SERVICE_NAME.fullmatch(port) or not any(c.isalpha() for c in port):
        raise AddressError(f"invalid port {port!r}: not a number 0-{MAX_PORT} or a service name")
    return _lookup_service(port, protocol)


def _check_range(value: int, original: int | str) -> int:
    if not 0 <= value <= MAX_PORT:
        raise _out_of_range(original)
    return value


def _out_of_range(original: int | str) -> AddressError:
    return AddressError(f"invalid port {original!r}: a port is a number 0-{MAX_PORT}")


def _lookup_service(name: str, protocol: str) -> int:
    try:
        with _SERVICE_LOCK:
            number = socket.getservbyname(name, protocol)
    except OSError as exc:
        raise AddressError(
            f"invalid port {name!r}: unknown {protocol} service name (see /etc/services)"
        ) from exc
    return number
