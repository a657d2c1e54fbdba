r"""The PROXY protocol, versions 1 (text) and 2 (binary): a sans-I/O codec.

A proxy (HAProxy, stunnel, nginx, AWS/GCP load balancers, ``sockit relay``) that relays
a TCP connection prepends one header saying who the original client and server were,
so the receiver can log, filter and answer as if the client had connected directly.
The reference is HAProxy's ``doc/proxy-protocol.txt`` (2020/03/05 revision); section
numbers below refer to it.

* :func:`parse_proxy_header` reads a header from the first bytes of a connection:
  it returns ``None`` while more bytes are needed and raises
  :class:`~sockit.errors.ProxyProtocolError` **as soon as** the bytes cannot be the
  start of a valid header (the spec: "abort the connection as soon as possible so that
  the sender gets a chance to notice the anomaly"), so a client that speaks no PROXY
  protocol is refused after its first bytes, not after a timeout.
* :func:`encode_proxy_v1` and :func:`encode_proxy_v2` build headers for a proxy to send.

Validation is strict, because the header decides which address a server trusts:
v1 tokens, single spaces, canonical addresses (no IPv4 leading zeros, no IPv6 scope),
decimal ports 0..65535 without leading zeros, and a CRLF within 107 bytes (a bare CR or
LF is refused, section 2.1); v2 signature, version nibble 2, command LOCAL or PROXY, one
of the seven family/protocol bytes the spec lists, an address block that fits the
announced length, well-formed TLVs (no duplicates) and, when a ``PP2_TYPE_CRC32C`` TLV
is present, a matching checksum (section 2.2.3).

Addresses are reported the way :meth:`SocketAddress.from_sockaddr
<sockit.addr.SocketAddress.from_sockaddr>` reports a peer: an IPv4-mapped IPv6 address
(``::ffff:a.b.c.d``, which a dual-stack proxy sends for IPv4 clients) becomes IPv4, so
allow/deny lists and logs see one form for one client. :attr:`ProxyHeader.family` keeps
the family the header announced.

The server side (reading until a header is complete, with a deadline, and replacing the
stream's addresses) lives in :mod:`sockit.serve`. This module must never do I/O: no
socket, selector, thread, asyncio or sleep; it is bytes in, a header or an error out.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from sockit.addr import SocketAddress, UnixEndpoint
from sockit.errors import AddressError, ProxyProtocolError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sockit.abc import Buffer

__all__ = [
    "TLV_ALPN",
    "TLV_AUTHORITY",
    "TLV_CRC32C",
    "TLV_NETNS",
    "TLV_NOOP",
    "TLV_SSL",
    "TLV_UNIQUE_ID",
    "V1_MAX_LENGTH",
    "V1_PREFIX",
    "V2_FIXED_LENGTH",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyHeader",
    "encode_proxy_v1",
    "encode_proxy_v2",
    "parse_proxy_header",
]

# --- constants from the specification ---------------------------------------------------

V1_PREFIX: Final = b"PROXY "
V1_MAX_LENGTH: Final = 107
"""Longest v1 line including CRLF: ``PROXY UNKNOWN`` + two full IPv6 addresses + ports
(section 2.1); a line without CRLF in its first 107 bytes is invalid."""

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes that start every v2 header (section 2.2); chosen to be rejected by
HTTP, TLS, SMTP and friends if sent to them by mistake."""
V2_FIXED_LENGTH: Final = 16
V2_MAX_LENGTH: Final = V2_FIXED_LENGTH + 0xFFFF
"""Longest v2 header: 16 fixed bytes plus the largest 16-bit length (65551 bytes)."""

# Registered TLV types (section 2.2).
TLV_ALPN: Final = 0x01
TLV_AUTHORITY: Final = 0x02
TLV_CRC32C: Final = 0x03
TLV_NOOP: Final = 0x04
TLV_UNIQUE_ID: Final = 0x05
TLV_SSL: Final = 0x20
TLV_NETNS: Final = 0x30

_TLV_HEADER_LENGTH: Final = 3
_CRC32C_LENGTH: Final = 4
_UNIX_PATH_SIZE: Final = 108
_PORT_MAX: Final = 0xFFFF
_V2_VERSION: Final = 2
_COMMAND_LOCAL: Final = 0x0
_COMMAND_PROXY: Final = 0x1

# proto/ may not import `socket` (tests/test_layering.py keeps it sans-I/O), so the
# AddressFamily enum is taken from the layer that owns the socket vocabulary, addr/.
_AddressFamily = type(UnixEndpoint("proxy").address.family)
_AF_INET: Final = _AddressFamily.AF_INET
_AF_INET6: Final = _AddressFamily.AF_INET6
_AF_UNIX: Final = _AddressFamily.AF_UNIX

# Family/protocol byte (section 2.2: "In practice, the following protocol bytes are
# expected") -> address block length. Every other value, including combinations of
# valid nibbles such as 0x10 (AF_INET, UNSPEC protocol), is refused: its address layout
# is unspecified, so the TLVs after it could not be found.
_V2_ADDRESS_LENGTHS: Final = {
    0x00: 0,
    0x11: 12,
    0x12: 12,
    0x21: 36,
    0x22: 36,
    0x31: 2 * _UNIX_PATH_SIZE,
    0x32: 2 * _UNIX_PATH_SIZE,
}
_V2_FAMILIES: Final = {0x1: _AF_INET, 0x2: _AF_INET6, 0x3: _AF_UNIX}
_V2_TRANSPORTS: Final[dict[int, Literal["STREAM", "DGRAM"]]] = {0x1: "STREAM", 0x2: "DGRAM"}

# Section 2.1: "exactly 4 integers in the range [0..255] ... Heading zeroes are not
# permitted". The same rule as sockit.addr.check_host, so a header cannot smuggle in an
# address that check_host would refuse.
_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}", re.ASCII)
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}", re.ASCII)
_V1_FAMILIES: Final = {b"TCP4": _AF_INET, b"TCP6": _AF_INET6}
_V1_UNKNOWN: Final = b"UNKNOWN"
# What a partial v1 address token may contain, and how long it may get: 15 characters
# for IPv4 (255.255.255.255), 45 for IPv6 with an embedded IPv4 (INET6_ADDRSTRLEN - 1).
_V1_ADDRESS_CHARACTERS: Final = {
    b"TCP4": (frozenset(b"0123456789."), 15),
    b"TCP6": (frozenset(b"0123456789abcdefABCDEF:."), 45),
}
_V1_FIELDS: Final = 5  # family, source, destination, source port, destination port
_V1_PORT_DIGITS: Final = 5
_MAPPED_PREFIX: Final = "::ffff:"


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    * ``version``: 1 (text) or 2 (binary).
    * ``command``: ``"PROXY"`` (the addresses are the original connection's) or
      ``"LOCAL"`` (v2 only: the proxy opened this connection itself, e.g. a health
      check). Version 1 has no command and always says ``"PROXY"``.
    * ``family``: the family the header announced (``socket.AF_INET``, ``AF_INET6``,
      ``AF_UNIX``), or ``None`` for v1 ``UNKNOWN``, v2 ``AF_UNSPEC`` and v2 ``LOCAL``
      (whose address block the spec says to ignore).
    * ``source``/``destination``: the original client and server, or ``None`` exactly
      when ``family`` is ``None``: the receiver must then use the real connection's
      addresses (section 2.1, "UNKNOWN"; section 2.2, "LOCAL"). IPv4-mapped IPv6
      addresses are reported as IPv4 (see the module docstring).
    * ``consumed``: the header's length in bytes; ``data[consumed:]`` is the first
      payload, which must be handed to the application.
    * ``tlvs``: v2 type-length-value extensions, type -> value (``PP2_TYPE_NOOP``
      padding left out); empty for v1.
    * ``transport``: ``"STREAM"`` (TCP, UNIX stream) or ``"DGRAM"`` (UDP, UNIX
      datagram) as announced, ``None`` when ``family`` is ``None``.
    """

    version: Literal[1, 2]
    command: Literal["PROXY", "LOCAL"]
    # Values are socket.AddressFamily members; typed as int because proto/ may not
    # import socket (see _AddressFamily above).
    family: int | None
    source: SocketAddress | None
    destination: SocketAddress | None
    consumed: int
    tlvs: dict[int, bytes] = field(default_factory=dict)
    transport: Literal["STREAM", "DGRAM"] | None = None


# --- parsing ---------------------------------------------------------------------------


def parse_proxy_header(data: Buffer, *, max_size: int = V2_MAX_LENGTH) -> ProxyHeader | None:
    """Parse the PROXY header (v1 or v2) at the start of ``data``.

    ``data`` is everything received so far on the connection (it may extend past the
    header; :attr:`ProxyHeader.consumed` says where the payload starts). Call again with
    more bytes after ``None``; the function keeps no state.

    Returns:
        The header once it is complete and valid, or ``None`` while ``data`` is a
        proper prefix of what could still become a valid header.

    Raises:
        ProxyProtocolError: ``data`` is not, and cannot become, a valid header: its
            first bytes match neither signature, a v1 line has a bad token or no CRLF
            within 107 bytes, a v2 header has a bad version, command, family, length
            or TLV, or announces more than ``max_size`` bytes. Raised at the first byte
            no valid header can have there (signatures, v1 tokens, IPv4 octets and
            ports, v2 fixed fields and announced length; an IPv6 address and the TLVs
            are checked once complete). The connection should then be closed.
        ValueError: ``max_size`` is below 16 (no v2 header would fit).

    ``max_size`` bounds v2 headers (default: the protocol's own maximum, 16 + 65535
    bytes); a server may lower it, e.g. to 536 bytes (the smallest MSS every host must
    accept, which the spec says every header fits in unless it carries large TLVs). A
    v1 line is always bounded by 107 bytes.
    """
    if max_size < V2_FIXED_LENGTH:
        raise ValueError(f"max_size must be at least {V2_FIXED_LENGTH}, not {max_size}")
    # Only the bytes that can belong to a header are ever copied.
    head = bytes(data[: max(max_size, V1_MAX_LENGTH)])
    if not head:
        return None
    length = min(len(head), len(V2_SIGNATURE))
    if head[:length] == V2_SIGNATURE[:length]:
        return _parse_v2(head, max_size)
    length = min(len(head), len(V1_PREFIX))
    if head[:length] == V1_PREFIX[:length]:
        return _parse_v1(head)
    raise ProxyProtocolError(
        f"not a PROXY protocol header: starts with {head[:16]!r} "
        f"(expected {V1_PREFIX!r} or the version 2 signature)"
    )


def _parse_v1(head: bytes) -> ProxyHeader | None:
    window = head[:V1_MAX_LENGTH]
    end = window.find(b"\r\n")
    if end < 0:
        if len(window) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(
                f"PROXY v1 line has no CRLF within {V1_MAX_LENGTH} bytes: {window[:40]!r}..."
            )
        _check_v1_line_characters(window.removesuffix(b"\r"))
        if window.endswith(b"\r"):
            # Only the LF is missing: what is there must already be a complete line.
            _parse_v1_line(window[:-1])
        else:
            _check_v1_partial_line(window)
        return None
    line = window[:end]
    _check_v1_line_characters(line)
    family, source, destination = _parse_v1_line(line)
    return ProxyHeader(
        version=1,
        command="PROXY",
        family=family,
        source=source,
        destination=destination,
        consumed=end + 2,
        transport=None if family is None else "STREAM",
    )


def _check_v1_line_characters(line: bytes) -> None:
    """Section 2.1: a single CR or LF must never be taken for the end of the line."""
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError(f"PROXY v1 line contains a bare CR or LF: {line!r}")


def _parse_v1_line(
    line: bytes,
) -> tuple[int | None, SocketAddress | None, SocketAddress | None]:
    """Parse a complete v1 line (without its CRLF) into family and addresses."""
    rest = line[len(V1_PREFIX) :]
    if rest == _V1_UNKNOWN or rest.startswith(_V1_UNKNOWN + b" "):
        # "the receiver must ignore anything presented before the CRLF is found"
        return None, None, None
    fields = rest.split(b" ")
    if len(fields) != _V1_FIELDS or fields[0] not in _V1_FAMILIES:
        raise ProxyProtocolError(
            f"malformed PROXY v1 line {line!r}: expected 'PROXY TCP4|TCP6 <source> "
            f"<destination> <source port> <destination port>' or 'PROXY UNKNOWN'"
        )
    family = _V1_FAMILIES[fields[0]]
    source_host = _parse_v1_address(fields[0], fields[1])
    destination_host = _parse_v1_address(fields[0], fields[2])
    source_port = _parse_v1_port(fields[3])
    destination_port = _parse_v1_port(fields[4])
    return (
        family,
        _inet_address(family, source_host, source_port),
        _inet_address(family, destination_host, destination_port),
    )


def _check_v1_partial_line(line: bytes) -> None:
    """Raise if the incomplete ``line`` (no CR/LF in it) cannot start a valid v1 line."""
    if len(line) <= len(V1_PREFIX):
        return  # a prefix of "PROXY ", checked by the caller
    rest = line[len(V1_PREFIX) :]
    if rest.startswith(_V1_UNKNOWN):
        if len(rest) > len(_V1_UNKNOWN) and rest[len(_V1_UNKNOWN)] != ord(" "):
            raise ProxyProtocolError(f"malformed PROXY v1 line: {line!r}")
        return
    if _V1_UNKNOWN.startswith(rest):
        return
    fields = rest.split(b" ")
    if len(fields) == 1:
        if not any(token.startswith(rest) for token in _V1_FAMILIES):
            raise ProxyProtocolError(
                f"malformed PROXY v1 line {line!r}: the protocol must be TCP4, TCP6 or UNKNOWN"
            )
        return
    token = fields[0]
    if token not in _V1_FAMILIES:
        raise ProxyProtocolError(
            f"malformed PROXY v1 line {line!r}: the protocol must be TCP4, TCP6 or UNKNOWN"
        )
    if len(fields) > _V1_FIELDS:
        raise ProxyProtocolError(f"malformed PROXY v1 line {line!r}: too many fields")
    # Every field but the last is complete (a space followed it): check it fully.
    for index, complete in enumerate(fields[1:-1], start=1):
        if index <= 2:
            _parse_v1_address(token, complete)
        else:
            _parse_v1_port(complete)
    last_index = len(fields) - 1
    partial = fields[-1]
    if last_index <= 2:
        allowed, longest = _V1_ADDRESS_CHARACTERS[token]
        if (
            len(partial) > longest
            or not allowed.issuperset(partial)
            or (token == b"TCP4" and not _could_start_ipv4(partial))
        ):
            raise ProxyProtocolError(
                f"malformed PROXY v1 line {line!r}: bad {token.decode()} address {partial!r}"
            )
    elif partial and (
        not partial.isdigit()
        or (len(partial) > 1 and partial.startswith(b"0"))
        or len(partial) > _V1_PORT_DIGITS
        or int(partial) > _PORT_MAX
    ):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line!r}: bad port {partial!r}")


def _could_start_ipv4(text: bytes) -> bool:
    """Whether ``text`` (digits and dots) can still grow into a canonical dotted quad."""
    octets = text.split(b".")
    if len(octets) > 4 or any(not octet for octet in octets[:-1]):
        return False
    return all(
        len(octet) <= 3 and not (len(octet) > 1 and octet.startswith(b"0")) and int(octet) <= 255
        for octet in octets
        if octet
    )


def _parse_v1_address(token: bytes, text: bytes) -> str:
    """A v1 address in the canonical form the family token demands, as ``str``."""
    allowed, longest = _V1_ADDRESS_CHARACTERS[token]
    if text and len(text) <= longest and allowed.issuperset(text):
        host = text.decode("ascii")
        if token == b"TCP4":
            if _IPV4.fullmatch(host):
                return host
        else:
            parsed = _parse_ipv6(host)
            if parsed is not None:
                return parsed
    raise ProxyProtocolError(f"bad {token.decode()} address in PROXY v1 line: {text!r}")


def _parse_v1_port(text: bytes) -> int:
    # Section 2.1: decimal, 0..65535, "Heading zeroes are not permitted".
    if _PORT.fullmatch(text) and int(text) <= _PORT_MAX:
        return int(text)
    raise ProxyProtocolError(f"bad port in PROXY v1 line: {text!r}")


def _parse_ipv6(text: str) -> str | None:
    """The compressed form of an IPv6 literal (no scope allowed), or None if invalid."""
    import ipaddress  # noqa: PLC0415 - start-up time: only IPv6 headers need it

    if "%" in text:
        return None
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


def _inet_address(family: int, host: str, port: int) -> SocketAddress:
    """A SocketAddress as from_sockaddr would report it (mapped IPv6 -> IPv4)."""
    if family == _AF_INET6 and host.startswith(_MAPPED_PREFIX):
        import ipaddress  # noqa: PLC0415 - start-up time, as above

        mapped = ipaddress.IPv6Address(host).ipv4_mapped
        if mapped is not None:
            return SocketAddress(_AF_INET, str(mapped), port)
    return SocketAddress(_AF_INET6 if family == _AF_INET6 else _AF_INET, host, port)


def _parse_v2(head: bytes, max_size: int) -> ProxyHeader | None:
    # Every fixed field is checked as soon as it arrives, so garbage after a correct
    # signature is refused at the first wrong byte.
    if len(head) <= len(V2_SIGNATURE):
        return None
    version_command = head[12]
    if version_command >> 4 != _V2_VERSION:
        raise ProxyProtocolError(
            f"PROXY v2 header has version {version_command >> 4}, only 2 exists"
        )
    command = version_command & 0x0F
    if command not in (_COMMAND_LOCAL, _COMMAND_PROXY):
        raise ProxyProtocolError(f"PROXY v2 header has unassigned command {command:#x}")
    if len(head) < 14:
        return None
    family_protocol = head[13]
    address_length = _V2_ADDRESS_LENGTHS.get(family_protocol)
    if address_length is None:
        raise ProxyProtocolError(
            f"PROXY v2 header has unsupported family/protocol byte {family_protocol:#04x}"
        )
    if len(head) < V2_FIXED_LENGTH:
        return None
    length = int.from_bytes(head[14:16], "big")
    if length < address_length:
        raise ProxyProtocolError(
            f"PROXY v2 header announces {length} bytes, too few for its "
            f"{address_length}-byte address block (family/protocol {family_protocol:#04x})"
        )
    total = V2_FIXED_LENGTH + length
    if total > max_size:
        raise ProxyProtocolError(
            f"PROXY v2 header of {total} bytes is larger than max_size={max_size}"
        )
    if len(head) < total:
        return None
    header = head[:total]
    tlvs = _parse_tlvs(header, V2_FIXED_LENGTH + address_length)
    if command == _COMMAND_LOCAL or family_protocol == 0x00:
        # LOCAL: "discard the protocol block including the family"; UNSPEC: "the
        # receiver should ignore address information".
        return ProxyHeader(
            version=2,
            command="LOCAL" if command == _COMMAND_LOCAL else "PROXY",
            family=None,
            source=None,
            destination=None,
            consumed=total,
            tlvs=tlvs,
        )
    family = _V2_FAMILIES[family_protocol >> 4]
    block = header[V2_FIXED_LENGTH : V2_FIXED_LENGTH + address_length]
    source, destination = _decode_v2_addresses(family, block)
    return ProxyHeader(
        version=2,
        command="PROXY",
        family=family,
        source=source,
        destination=destination,
        consumed=total,
        tlvs=tlvs,
        transport=_V2_TRANSPORTS[family_protocol & 0x0F],
    )


def _decode_v2_addresses(family: int, block: bytes) -> tuple[SocketAddress, SocketAddress]:
    import ipaddress  # noqa: PLC0415 - start-up time, as above

    if family == _AF_UNIX:
        return (
            SocketAddress(_AF_UNIX, path=_decode_unix_path(block[:_UNIX_PATH_SIZE])),
            SocketAddress(_AF_UNIX, path=_decode_unix_path(block[_UNIX_PATH_SIZE:])),
        )
    size = 4 if family == _AF_INET else 16
    source_port = int.from_bytes(block[2 * size : 2 * size + 2], "big")
    destination_port = int.from_bytes(block[2 * size + 2 : 2 * size + 4], "big")
    if family == _AF_INET:
        source_host = str(ipaddress.IPv4Address(block[:size]))
        destination_host = str(ipaddress.IPv4Address(block[size : 2 * size]))
    else:
        source_host = ipaddress.IPv6Address(block[:size]).compressed
        destination_host = ipaddress.IPv6Address(block[size : 2 * size]).compressed
    return (
        _inet_address(family, source_host, source_port),
        _inet_address(family, destination_host, destination_port),
    )


def _decode_unix_path(raw: bytes) -> str:
    """A 108-byte ``sun_path`` as SocketAddress spells it: path, ``@abstract`` or ``""``.

    The header does not carry the address length, so an abstract name is taken to end
    before its trailing NUL padding (how HAProxy and socat pad it).
    """
    if raw.startswith(b"\0"):
        name = raw[1:].rstrip(b"\0")
        return "@" + name.decode("utf-8", "surrogateescape") if name else ""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_tlvs(header: bytes, offset: int) -> dict[int, bytes]:
    """Type -> value of the TLVs from ``offset`` to the end of ``header``, checked.

    A TLV that runs past the header, a stray byte too short to be a TLV, or a type that
    appears twice (which value would count?) makes the header malformed. ``NOOP``
    padding may repeat and is dropped. A ``CRC32C`` TLV must verify.
    """
    tlvs: dict[int, bytes] = {}
    checksum_at: int | None = None
    end = len(header)
    # Each round consumes at least three bytes, so this ends within len(header) / 3.
    while offset < end:
        if end - offset < _TLV_HEADER_LENGTH:
            raise ProxyProtocolError(
                f"PROXY v2 header ends with {end - offset} stray byte(s) after its TLVs"
            )
        kind = header[offset]
        length = int.from_bytes(header[offset + 1 : offset + 3], "big")
        start = offset + _TLV_HEADER_LENGTH
        if start + length > end:
            raise ProxyProtocolError(
                f"PROXY v2 TLV of type {kind:#04x} announces {length} bytes, "
                f"only {end - start} are left in the header"
            )
        offset = start + length
        if kind == TLV_NOOP:
            continue
        if kind in tlvs:
            raise ProxyProtocolError(f"PROXY v2 header repeats TLV type {kind:#04x}")
        tlvs[kind] = header[start:offset]
        if kind == TLV_CRC32C:
            if length != _CRC32C_LENGTH:
                raise ProxyProtocolError(f"PROXY v2 CRC32C TLV must hold 4 bytes, not {length}")
            checksum_at = start
    if checksum_at is not None:
        zeroed = _zero_checksum(header, checksum_at)
        received = int.from_bytes(tlvs[TLV_CRC32C], "big")
        if _crc32c(zeroed) != received:
            raise ProxyProtocolError("PROXY v2 header fails its CRC32C checksum")
    return tlvs


def _zero_checksum(header: bytes, at: int) -> bytes:
    return header[:at] + bytes(_CRC32C_LENGTH) + header[at + _CRC32C_LENGTH :]


# --- CRC32C (Castagnoli), RFC 4960 appendix B ------------------------------------------

_CRC32C_POLYNOMIAL: Final = 0x82F63B78  # reflected form of 0x1EDC6F41


@functools.cache
def _crc32c_table() -> tuple[int, ...]:
    """The byte-at-a-time lookup table, built on first use (not at import)."""
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ _CRC32C_POLYNOMIAL if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


def _crc32c(data: bytes) -> int:
    """CRC-32C of ``data``: the checksum of PROXY v2 (section 2.2.3).

    Pure Python (a few MB/s): only headers that carry the TLV pay for it, and a header
    is at most 64 KiB. ``_crc32c(b"123456789") == 0xE3069283`` (RFC 3720 B.4 check).
    """
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- encoding --------------------------------------------------------------------------


def encode_proxy_v1(source: SocketAddress | None, destination: SocketAddress | None) -> bytes:
    """The v1 line (with CRLF) announcing a TCP connection from ``source`` to ``destination``.

    Both must be IPv4 or IPv6 addresses (host as an IP literal, port 0..65535). If one
    is IPv4 and the other IPv6, the IPv4 one is sent IPv4-mapped (``::ffff:a.b.c.d``)
    under ``TCP6``, as HAProxy does. An IPv6 scope cannot be carried and is dropped.

    If either address is ``None`` or not IP (AF_UNIX), the line is ``PROXY UNKNOWN``:
    version 1 can express nothing else (section 2.1), and the receiver then uses the
    real connection's addresses.

    Raises:
        AddressError: a host is not an IP literal of its family, or a port is out of
            range.
    """
    if source is None or destination is None or source.is_unix or destination.is_unix:
        return V1_PREFIX + _V1_UNKNOWN + b"\r\n"
    family, source_host, destination_host = _common_inet_family(source, destination)
    token = b"TCP4" if family == _AF_INET else b"TCP6"
    line = b" ".join(
        [
            V1_PREFIX.rstrip(),
            token,
            source_host.encode("ascii"),
            destination_host.encode("ascii"),
            str(_check_port(source.port)).encode("ascii"),
            str(_check_port(destination.port)).encode("ascii"),
        ]
    )
    return line + b"\r\n"


def encode_proxy_v2(
    source: SocketAddress | None,
    destination: SocketAddress | None,
    *,
    command: Literal["PROXY", "LOCAL"] = "PROXY",
    tlvs: Mapping[int, Buffer] | None = None,
) -> bytes:
    """The v2 binary header announcing a connection from ``source`` to ``destination``.

    * Two IP addresses: TCP over IPv4 (``0x11``) or IPv6 (``0x21``); a mixed pair is
      sent as IPv6 with the IPv4 address mapped, as in :func:`encode_proxy_v1`. An IPv6
      scope cannot be carried and is dropped.
    * Two UNIX addresses: UNIX stream (``0x31``), each path in a 108-byte field
      (``@name`` is sent as an abstract address, a NUL then the name).
    * ``None`` for either, or a UNIX/IP mix: ``AF_UNSPEC`` (the spec's advice for
      "unsupported protocol families"); the receiver uses the real addresses.
    * ``command="LOCAL"`` (a connection the proxy made itself, e.g. a health check):
      both addresses must be ``None``; the family is ``AF_UNSPEC``.

    ``tlvs`` (type 0..255 -> value) are appended in the mapping's order. A value given
    for :data:`TLV_CRC32C` is ignored: that TLV is filled with the header's checksum.

    Raises:
        AddressError: a host is not an IP literal of its family, a port is out of range,
            or a UNIX path is too long for 108 bytes or contains a NUL.
        ProxyProtocolError: ``command`` is not PROXY/LOCAL, LOCAL with addresses, a bad
            TLV type, or more than 65535 bytes after the fixed 16.
        TypeError: a TLV value is not bytes-like.
    """
    if command == "LOCAL":
        if source is not None or destination is not None:
            raise ProxyProtocolError("a LOCAL PROXY v2 header carries no addresses; pass None")
        command_bits, family_protocol, block = _COMMAND_LOCAL, 0x00, b""
    elif command == "PROXY":
        command_bits = _COMMAND_PROXY
        family_protocol, block = _encode_v2_addresses(source, destination)
    else:
        raise ProxyProtocolError(f"command must be 'PROXY' or 'LOCAL', not {command!r}")
    body = bytearray(block)
    checksum_at: int | None = None
    for kind, value in (tlvs or {}).items():
        if isinstance(kind, bool) or not isinstance(kind, int) or not 0 <= kind <= 0xFF:
            raise ProxyProtocolError(f"TLV type must be an int 0..255, not {kind!r}")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"TLV {kind:#04x} value must be bytes, not {type(value).__name__}")
        data = bytes(_CRC32C_LENGTH) if kind == TLV_CRC32C else bytes(value)
        if len(data) > 0xFFFF:
            raise ProxyProtocolError(f"TLV {kind:#04x} value of {len(data)} bytes is too long")
        body += bytes([kind]) + len(data).to_bytes(2, "big")
        if kind == TLV_CRC32C:
            checksum_at = V2_FIXED_LENGTH + len(body)
        body += data
    if len(body) > 0xFFFF:
        raise ProxyProtocolError(
            f"PROXY v2 header would carry {len(body)} bytes after the fixed 16; at most 65535 fit"
        )
    header = (
        V2_SIGNATURE
        + bytes([_V2_VERSION << 4 | command_bits, family_protocol])
        + len(body).to_bytes(2, "big")
        + bytes(body)
    )
    if checksum_at is not None:
        checksum = _crc32c(header).to_bytes(_CRC32C_LENGTH, "big")
        header = header[:checksum_at] + checksum + header[checksum_at + _CRC32C_LENGTH :]
    return header


def _encode_v2_addresses(
    source: SocketAddress | None, destination: SocketAddress | None
) -> tuple[int, bytes]:
    if source is None or destination is None or source.is_unix != destination.is_unix:
        return 0x00, b""
    if source.is_unix:
        return 0x31, _encode_unix_path(source) + _encode_unix_path(destination)
    import ipaddress  # noqa: PLC0415 - start-up time, as above

    family, source_host, destination_host = _common_inet_family(source, destination)
    ports = _check_port(source.port).to_bytes(2, "big") + _check_port(destination.port).to_bytes(
        2, "big"
    )
    if family == _AF_INET:
        packed = (
            ipaddress.IPv4Address(source_host).packed
            + ipaddress.IPv4Address(destination_host).packed
        )
        return 0x11, packed + ports
    packed = (
        ipaddress.IPv6Address(source_host).packed + ipaddress.IPv6Address(destination_host).packed
    )
    return 0x21, packed + ports


def _encode_unix_path(address: SocketAddress) -> bytes:
    path = address.path or ""
    if "\0" in path:
        raise AddressError(f"UNIX address {path!r} contains a NUL; PROXY v2 cannot carry it")
    raw = (
        b"\0" + path[1:].encode("utf-8", "surrogateescape")
        if path.startswith("@")
        else path.encode("utf-8", "surrogateescape")
    )
    if len(raw) > _UNIX_PATH_SIZE:
        raise AddressError(
            f"UNIX address {path!r} is {len(raw)} bytes; PROXY v2 carries at most {_UNIX_PATH_SIZE}"
        )
    return raw.ljust(_UNIX_PATH_SIZE, b"\0")


def _common_inet_family(source: SocketAddress, destination: SocketAddress) -> tuple[int, str, str]:
    """The family both addresses are sent in, and their hosts in that family's form."""
    source_family, source_host = _checked_host(source)
    destination_family, destination_host = _checked_host(destination)
    if source_family == destination_family:
        return source_family, source_host, destination_host
    # One IPv4, one IPv6: HAProxy's make_proxy_line sends the IPv4 one mapped.
    if source_family == _AF_INET:
        source_host = _MAPPED_PREFIX + source_host
    else:
        destination_host = _MAPPED_PREFIX + destination_host
    return _AF_INET6, source_host, destination_host


def _checked_host(address: SocketAddress) -> tuple[int, str]:
    host = address.host
    if address.family == _AF_INET:
        if _IPV4.fullmatch(host):
            return _AF_INET, host
        raise AddressError(f"{host!r} is not an IPv4 address (in {address!r})")
    if address.family == _AF_INET6:
        # The protocol has no room for a scope (fe80::1%eth0): the receiver cannot
        # use it anyway, it names an interface of the proxy.
        parsed = _parse_ipv6(host.split("%", 1)[0])
        if parsed is not None:
            return _AF_INET6, parsed
        raise AddressError(f"{host!r} is not an IPv6 address (in {address!r})")
    raise AddressError(f"PROXY protocol cannot carry {address!r}: not an IP address")


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _PORT_MAX:
        raise AddressError(f"port must be an int 0..65535, not {port!r}")
    return port
