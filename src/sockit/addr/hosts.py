"""Host checking: turn what a person typed into the ASCII form handed to getaddrinfo.

What is checked, and why it is not left to the system:

* **IPv4 shorthand** (``010.1.1.1``, ``0x7f.1``, ``127.1``, ``2130706433``) is accepted by
  ``inet_aton`` and therefore by ``getaddrinfo`` (RFC 3493 section 6.1 leaves the
  IPv4 text form to ``inet_aton``, which allows octal, hex and fewer than four parts).
  So ``010.1.1.1`` silently means ``8.1.1.1``. We reject it, using the WHATWG URL
  Standard's rule (host parser, "ends in a number" checker): a host whose last label is
  numeric or ``0x``-hex is an IPv4 attempt and must then be a canonical dotted quad.
* **Name length**: RFC 1035 section 2.3.4 limits a label to 63 octets and a name to
  255 octets on the wire, which is 253 characters in text (RFC 2181 section 11). The
  standard library raises ``UnicodeError`` for these (from its IDNA 2003 codec); we raise
  :class:`~sockit.errors.ResolutionError` (an ``OSError``) like any other bad name.
* **International names** are encoded with IDNA 2008 (RFC 5891) plus the UTS #46
  mapping that browsers use, via the ``idna`` package, imported only when a name is not
  ASCII. The stdlib codec implements the obsolete IDNA 2003 (``"faß.de"`` becomes
  ``"fass.de"``, a different domain).

This module must never resolve names, open sockets or start threads.
"""

from __future__ import annotations

import re

from sockit.errors import AddressError, ResolutionError

__all__ = ["MAX_LABEL_LENGTH", "MAX_NAME_LENGTH", "check_host", "is_ip_literal"]

MAX_NAME_LENGTH = 253
"""Longest host name in text form, without a trailing dot (RFC 1035 2.3.4, RFC 2181 11)."""

MAX_LABEL_LENGTH = 63
"""Longest label of a host name (RFC 1035 section 2.3.4)."""

# Past this, do not even try IDNA: the answer is "too long" whatever the mapping does.
_HOPELESS_LENGTH = 4 * MAX_NAME_LENGTH

# WHATWG URL "ends in a number": all ASCII digits, or "0x"/"0X" plus hex digits (the
# IPv4 number parser accepts a bare "0x" as zero).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*", re.ASCII)

# One octet of a canonical dotted quad: 0-255 in decimal without leading zeros.
_CANONICAL_OCTET = re.compile(r"25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]", re.ASCII)

# WHATWG URL "forbidden domain code points" (C0 controls, space, DEL and the URL
# delimiters): none of them can be part of a host name, and most of them mean the
# caller pasted a URL or an endpoint where a host was wanted. ":" is handled apart
# (it means IPv6).
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f#%/<>?@\[\\\]^|]")

# An IPv6 zone (RFC 4007 section 11): an interface name or index. Linux interface
# names are at most 15 bytes (IFNAMSIZ - 1) and cannot hold "/", ":" or white space.
_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,15}", re.ASCII)

_MAPPED_PREFIX = "::ffff:"


def check_host(host: str) -> str:
    """Return the ASCII form of ``host`` to hand to ``getaddrinfo``.

    * IPv6 literals (optionally in ``[]``, optionally with ``%scope``) come back
      compressed, e.g. ``"FE80:0::1%lo"`` -> ``"fe80::1%lo"``, ``"[::1]"`` -> ``"::1"``.
    * IPv4 literals must be canonical dotted quads and come back unchanged.
    * Names come back unchanged if ASCII, IDNA 2008 encoded otherwise
      (``"bücher.example"`` -> ``"xn--bcher-kva.example"``). One trailing dot (a fully
      qualified name) is kept.

    The function is idempotent: ``check_host(check_host(h)) == check_host(h)``. It does
    no I/O.

    Raises:
        TypeError: ``host`` is not a ``str``.
        AddressError: empty host, forbidden characters (white space, ``/``, ``@``, ...),
            a malformed IPv6 literal, or an IPv4 address that is not a canonical dotted
            quad (``010.1.1.1``, ``0x7f.1``, ``127.1``, ``2130706433``, ``1.2.3.4.``).
        ResolutionError: a name that cannot exist in the DNS: longer than 253
            characters, a label empty or longer than 63, or invalid under IDNA 2008.
            Never ``UnicodeError``.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if not host:
        raise AddressError("invalid host '': empty host")
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        if ":" not in inner:
            raise AddressError(
                f"invalid host {host!r}: brackets are only for IPv6 addresses (RFC 3986)"
            )
        return _check_ipv6(inner)
    if ":" in host:
        return _check_ipv6(host)
    _check_forbidden(host)
    if len(host) > _HOPELESS_LENGTH:
        raise _name_too_long(host)
    ascii_host = host if host.isascii() else _idna_encode(host)
    # UTS #46 maps full-width forms to ASCII (U+FF0F to "/", U+FF1A to ":"): check again;
    # a ":" here would make the result look like an IPv6 literal.
    _check_forbidden(ascii_host, also=":")
    if _is_ipv4_attempt(ascii_host):
        if not _is_canonical_ipv4(ascii_host):
            raise AddressError(
                f"invalid host {host!r}: an IPv4 address must be four decimal numbers "
                f"0-255 without leading zeros, e.g. 127.0.0.1 (shorthand such as 127.1, "
                f"010.1.1.1 or 0x7f.0.0.1 is ambiguous and not accepted)"
            )
        return ascii_host
    _check_name_lengths(host, ascii_host)
    return ascii_host


def is_ip_literal(host: str) -> bool:
    """True if ``host`` (as returned by :func:`check_host`) is an IPv4 or IPv6 address.

    Such hosts need no name lookup (``AI_NUMERICHOST``). Does no I/O and never raises
    for a ``str``.
    """
    if ":" in host:
        return True
    return _is_canonical_ipv4(host)


def _check_ipv6(text: str) -> str:
    address_text, has_scope, scope = text.partition("%")
    _check_forbidden(address_text)
    if text.count(":") == 1:
        raise AddressError(
            f"invalid host {text!r}: looks like host:port; pass the host and the port "
            f"separately (or use parse_endpoint)"
        )
    if has_scope and not _SCOPE.fullmatch(scope):
        raise AddressError(
            f"invalid host {text!r}: bad IPv6 scope {scope!r} "
            f"(expected an interface name or index, e.g. fe80::1%eth0)"
        )
    import ipaddress  # noqa: PLC0415 - start-up time: only IPv6 literals need it

    try:
        address = ipaddress.IPv6Address(address_text)
    except ValueError as exc:
        raise AddressError(f"invalid host {text!r}: not an IPv6 address ({exc})") from exc
    mapped = address.ipv4_mapped
    # Python 3.11 prints mapped addresses as "::ffff:102:304"; people write the dotted
    # form, and SocketAddress reports these peers as IPv4 anyway.
    normal = f"{_MAPPED_PREFIX}{mapped}" if mapped is not None else address.compressed
    return f"{normal}%{scope}" if has_scope else normal


def _check_forbidden(host: str, *, also: str = "") -> None:
    match = _FORBIDDEN.search(host)
    if match is None and also:
        match = re.search(f"[{re.escape(also)}]", host)
    if match is not None:
        raise AddressError(
            f"invalid host {host!r}: character {match.group()!r} cannot appear in a "
            f"host name (pass only the host, not a URL or host:port)"
        )


def _labels(name: str) -> list[str]:
    """The labels of ``name``, ignoring one trailing dot (the DNS root)."""
    if name.endswith(".") and len(name) > 1:
        name = name[:-1]
    return name.split(".")


def _is_ipv4_attempt(name: str) -> bool:
    return _NUMERIC_LABEL.fullmatch(_labels(name)[-1]) is not None


def _is_canonical_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(_CANONICAL_OCTET.fullmatch(part) for part in parts)


def _check_name_lengths(host: str, ascii_host: str) -> None:
    if ascii_host == ".":
        raise AddressError(f"invalid host {host!r}: the DNS root is not a host")
    labels = _labels(ascii_host)
    length = len(ascii_host) - ascii_host.endswith(".")
    if length > MAX_NAME_LENGTH:
        raise _name_too_long(host)
    for label in labels:
        if not label:
            raise ResolutionError(host, "empty label (two dots in a row, or a leading dot)")
        if len(label) > MAX_LABEL_LENGTH:
            raise ResolutionError(
                host,
                f"label {label[:20]!r}... is {len(label)} characters long; the limit is "
                f"{MAX_LABEL_LENGTH} (RFC 1035 section 2.3.4)",
            )


def _name_too_long(host: str) -> ResolutionError:
    return ResolutionError(
        host,
        f"name is {len(host)} characters long; the limit is {MAX_NAME_LENGTH} "
        f"(RFC 1035 section 2.3.4)",
    )


def _idna_encode(host: str) -> str:
    """IDNA 2008 (RFC 5891) with UTS #46 mapping, label by label.

    The UTS #46 mapping (non-transitional, as browsers do) lower-cases and folds
    full-width dots and letters. Labels that are ASCII after the mapping are passed on
    untouched, so names such as ``_dmarc.bücher.example`` keep their ASCII labels; the
    others become A-labels (``xn--...``).
    """
    import idna  # noqa: PLC0415 - lazy: only non-ASCII names pay for the import

    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = _labels(mapped)
        encoded = [
            label if label.isascii() else idna.alabel(label).decode("ascii") for label in labels
        ]
    except (idna.IDNAError, UnicodeError) as exc:
        raise ResolutionError(host, f"invalid international name (IDNA 2008): {exc}") from exc
    trailing_dot = "." if mapped.endswith(".") and len(mapped) > 1 else ""
    return ".".join(encoded) + trailing_dot
