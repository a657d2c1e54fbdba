"""Table tests of the PROXY protocol codec (sockit.proto.proxy) against the HAProxy spec.

Headers are written out byte by byte here (not made by the encoder) so parser and
encoder are each checked against the specification, not against each other. For every
malformed header the table names the shortest prefix that must already be refused:
the parser must return None for every shorter prefix and raise from that one on.
"""

from __future__ import annotations

import socket
import struct
from typing import Literal

import pytest

from sockit.addr import SocketAddress
from sockit.errors import AddressError, ProxyProtocolError, SockitError
from sockit.proto.proxy import (
    TLV_ALPN,
    TLV_AUTHORITY,
    TLV_CRC32C,
    TLV_NOOP,
    TLV_UNIQUE_ID,
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    _crc32c,
    encode_proxy_v1,
    encode_proxy_v2,
    parse_proxy_header,
)

PAYLOAD = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


def v4(host: str, port: int) -> SocketAddress:
    return SocketAddress(socket.AF_INET, host, port)


def v6(host: str, port: int) -> SocketAddress:
    return SocketAddress(socket.AF_INET6, host, port)


def unix(path: str) -> SocketAddress:
    return SocketAddress(socket.AF_UNIX, path=path)


def v2(command: int, family_protocol: int, body: bytes, *, length: int | None = None) -> bytes:
    """A v2 header from its fields (section 2.2), length defaulting to len(body)."""
    announced = len(body) if length is None else length
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family_protocol])
        + struct.pack("!H", announced)
        + body
    )


def ipv4_block(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        socket.inet_pton(socket.AF_INET, source)
        + socket.inet_pton(socket.AF_INET, destination)
        + struct.pack("!HH", source_port, destination_port)
    )


def ipv6_block(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        socket.inet_pton(socket.AF_INET6, source)
        + socket.inet_pton(socket.AF_INET6, destination)
        + struct.pack("!HH", source_port, destination_port)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def with_checksum(header: bytes, at: int) -> bytes:
    """Fill the 4 zero bytes at ``at`` with the header's CRC32C (section 2.2.3)."""
    return header[:at] + struct.pack("!I", _crc32c(header)) + header[at + 4 :]


def assert_prefixes_need_more(data: bytes) -> None:
    for length in range(len(data)):
        assert parse_proxy_header(data[:length]) is None, data[:length]


# --- version 1 ------------------------------------------------------------------------

V1_VALID = [
    pytest.param(
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyHeader(
            1, "PROXY", socket.AF_INET, v4("192.168.0.1", 56324), v4("192.168.0.11", 443), 47
        ),
        id="spec-example",
    ),
    pytest.param(
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ProxyHeader(
            1,
            "PROXY",
            socket.AF_INET,
            v4("255.255.255.255", 65535),
            v4("255.255.255.255", 65535),
            56,
        ),
        id="tcp4-longest",
    ),
    pytest.param(
        b"PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n",
        ProxyHeader(1, "PROXY", socket.AF_INET, v4("0.0.0.0", 0), v4("10.0.0.1", 0), 33),
        id="tcp4-zeros",
    ),
    pytest.param(
        b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8::2 1 65535\r\n",
        ProxyHeader(
            1, "PROXY", socket.AF_INET6, v6("2001:db8::1", 1), v6("2001:db8::2", 65535), 53
        ),
        id="tcp6-normalised",
    ),
    pytest.param(
        b"PROXY TCP6 ::ffff:192.0.2.1 ::1 4000 80\r\n",
        ProxyHeader(1, "PROXY", socket.AF_INET6, v4("192.0.2.1", 4000), v6("::1", 80), 41),
        id="tcp6-mapped-is-ipv4",
    ),
    pytest.param(
        b"PROXY UNKNOWN\r\n",
        ProxyHeader(1, "PROXY", None, None, None, 15),
        id="unknown-short",
    ),
    pytest.param(
        b"PROXY UNKNOWN ffff:f::1 whatever \xff 1 2\r\n",
        ProxyHeader(1, "PROXY", None, None, None, 40),
        id="unknown-rest-ignored",
    ),
    pytest.param(
        b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n",
        ProxyHeader(1, "PROXY", None, None, None, V1_MAX_LENGTH),
        id="unknown-107-bytes",
    ),
]


@pytest.mark.parametrize(("data", "expected"), V1_VALID)
def test_v1_valid(data: bytes, expected: ProxyHeader) -> None:
    expected_transport: Literal["STREAM"] | None = None if expected.family is None else "STREAM"
    header = parse_proxy_header(data + PAYLOAD)
    assert header == ProxyHeader(
        expected.version,
        expected.command,
        expected.family,
        expected.source,
        expected.destination,
        expected.consumed,
        transport=expected_transport,
    )
    assert header.consumed == len(data)
    assert_prefixes_need_more(data)


V1_INVALID = [
    # (whole input, the shortest prefix that must already be refused)
    pytest.param(b"GET / HTTP/1.1\r\n", b"G", id="http"),
    pytest.param(b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", b"p", id="lowercase"),
    pytest.param(b"PROXY\tTCP4 1.2.3.4 1.2.3.4 1 2\r\n", b"PROXY\t", id="tab"),
    pytest.param(b"PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n", b"PROXY  ", id="two-spaces"),
    pytest.param(b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", b"PROXY TCP5", id="tcp5"),
    pytest.param(b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", b"PROXY UD", id="udp4"),
    pytest.param(b"PROXY UNKNOWNX\r\n", b"PROXY UNKNOWNX", id="unknownx"),
    pytest.param(b"PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n", b"PROXY t", id="lowercase-tcp"),
    pytest.param(b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", b"PROXY TCP4 01", id="octal-ish"),
    pytest.param(b"PROXY TCP4 256.2.3.4 1.2.3.4 1 2\r\n", b"PROXY TCP4 256", id="octet-256"),
    pytest.param(b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", b"PROXY TCP4 1.2.3 ", id="three-octets"),
    pytest.param(b"PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n", b"PROXY TCP4 1.2.3.4.", id="5-octets"),
    pytest.param(b"PROXY TCP4 1..3.4 1.2.3.4 1 2\r\n", b"PROXY TCP4 1..", id="empty-octet"),
    pytest.param(b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", b"PROXY TCP4 :", id="v6-in-tcp4"),
    pytest.param(b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", b"PROXY TCP6 1.2.3.4 ", id="v4-in-tcp6"),
    pytest.param(b"PROXY TCP6 fe80::1%lo ::1 1 2\r\n", b"PROXY TCP6 fe80::1%", id="scope"),
    pytest.param(b"PROXY TCP6 ::1::2 ::1 1 2\r\n", b"PROXY TCP6 ::1::2 ", id="two-double-colons"),
    pytest.param(b"PROXY TCP6 g::1 ::1 1 2\r\n", b"PROXY TCP6 g", id="not-hex"),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 080 2\r\n", b"PROXY TCP4 1.2.3.4 1.2.3.4 08", id="port-0"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 65536",
        id="port-big",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", b"PROXY TCP4 1.2.3.4 1.2.3.4 +", id="port-sign"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 ", id="six-fields"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 ",
        id="trailing-space",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r", id="5-fields"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", id="bare-lf"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX", b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX", id="bare-cr"
    ),
    pytest.param(b"PROXY UNKNOWN \n\r\n", b"PROXY UNKNOWN \n", id="unknown-bare-lf"),
    pytest.param(b"PROXY UNKNOWN \r\r\n", b"PROXY UNKNOWN \r\r", id="unknown-bare-cr"),
    pytest.param(b"PROXY TCP4 \xd9\xa1.2.3.4 1.2.3.4 1 2\r\n", b"PROXY TCP4 \xd9", id="non-ascii"),
    pytest.param(
        b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n",
        b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r",
        id="108-bytes",
    ),
    pytest.param(b"PROXY \r\n", b"PROXY \r", id="empty"),
]


@pytest.mark.parametrize(("data", "refused_from"), V1_INVALID)
def test_v1_invalid_is_refused_as_early_as_possible(data: bytes, refused_from: bytes) -> None:
    assert data.startswith(refused_from)
    assert_prefixes_need_more(refused_from[:-1])
    for length in range(len(refused_from), len(data) + 1):
        with pytest.raises(ProxyProtocolError):
            parse_proxy_header(data[:length])


def test_v1_line_without_crlf_in_107_bytes_is_refused_even_if_valid_so_far() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 200
    assert parse_proxy_header(line[: V1_MAX_LENGTH - 1]) is None
    with pytest.raises(ProxyProtocolError, match="107"):
        parse_proxy_header(line)


# --- version 2 ------------------------------------------------------------------------

V2_TCP4 = v2(0x1, 0x11, ipv4_block("192.0.2.1", "198.51.100.2", 56324, 443))
V2_TCP6 = v2(0x1, 0x21, ipv6_block("2001:db8::1", "2001:db8::2", 1, 65535))
V2_UNIX = v2(
    0x1,
    0x31,
    b"/run/client.sock".ljust(108, b"\0") + b"\0abstract".ljust(108, b"\0"),
)

V2_VALID = [
    pytest.param(
        V2_TCP4,
        ProxyHeader(
            2,
            "PROXY",
            socket.AF_INET,
            v4("192.0.2.1", 56324),
            v4("198.51.100.2", 443),
            28,
            transport="STREAM",
        ),
        id="tcp4",
    ),
    pytest.param(
        v2(0x1, 0x12, ipv4_block("192.0.2.1", "198.51.100.2", 53, 5353)),
        ProxyHeader(
            2,
            "PROXY",
            socket.AF_INET,
            v4("192.0.2.1", 53),
            v4("198.51.100.2", 5353),
            28,
            transport="DGRAM",
        ),
        id="udp4",
    ),
    pytest.param(
        V2_TCP6,
        ProxyHeader(
            2,
            "PROXY",
            socket.AF_INET6,
            v6("2001:db8::1", 1),
            v6("2001:db8::2", 65535),
            52,
            transport="STREAM",
        ),
        id="tcp6",
    ),
    pytest.param(
        v2(0x1, 0x21, ipv6_block("::ffff:192.0.2.1", "::1", 9, 10)),
        ProxyHeader(
            2, "PROXY", socket.AF_INET6, v4("192.0.2.1", 9), v6("::1", 10), 52, transport="STREAM"
        ),
        id="tcp6-mapped-is-ipv4",
    ),
    pytest.param(
        V2_UNIX,
        ProxyHeader(
            2,
            "PROXY",
            socket.AF_UNIX,
            unix("/run/client.sock"),
            unix("@abstract"),
            232,
            transport="STREAM",
        ),
        id="unix-stream",
    ),
    pytest.param(
        v2(0x1, 0x32, bytes(216)),
        ProxyHeader(2, "PROXY", socket.AF_UNIX, unix(""), unix(""), 232, transport="DGRAM"),
        id="unix-unnamed",
    ),
    pytest.param(
        v2(0x1, 0x31, b"/" * 108 + b"/x\0garbage".ljust(108, b"\0")),
        ProxyHeader(
            2, "PROXY", socket.AF_UNIX, unix("/" * 108), unix("/x"), 232, transport="STREAM"
        ),
        id="unix-108-bytes-and-after-nul",
    ),
    pytest.param(
        v2(0x0, 0x00, b""),
        ProxyHeader(2, "LOCAL", None, None, None, 16),
        id="local",
    ),
    pytest.param(
        v2(0x0, 0x11, ipv4_block("192.0.2.1", "198.51.100.2", 1, 2)),
        ProxyHeader(2, "LOCAL", None, None, None, 28),
        id="local-addresses-ignored",
    ),
    pytest.param(
        v2(0x1, 0x00, b""),
        ProxyHeader(2, "PROXY", None, None, None, 16),
        id="proxy-unspec",
    ),
    pytest.param(
        v2(
            0x1,
            0x11,
            ipv4_block("192.0.2.1", "198.51.100.2", 1, 2)
            + tlv(TLV_ALPN, b"h2")
            + tlv(TLV_NOOP, b"")
            + tlv(TLV_AUTHORITY, b"example.com")
            + tlv(TLV_NOOP, b"\0\0\0")
            + tlv(0xE0, b"")
            + tlv(TLV_UNIQUE_ID, b"x" * 128),
        ),
        ProxyHeader(
            2,
            "PROXY",
            socket.AF_INET,
            v4("192.0.2.1", 1),
            v4("198.51.100.2", 2),
            28 + 5 + 3 + 14 + 6 + 3 + 131,
            tlvs={
                TLV_ALPN: b"h2",
                TLV_AUTHORITY: b"example.com",
                0xE0: b"",
                TLV_UNIQUE_ID: b"x" * 128,
            },
            transport="STREAM",
        ),
        id="tlvs",
    ),
    pytest.param(
        v2(0x0, 0x00, tlv(TLV_UNIQUE_ID, b"abc")),
        ProxyHeader(2, "LOCAL", None, None, None, 22, tlvs={TLV_UNIQUE_ID: b"abc"}),
        id="local-tlvs",
    ),
]


@pytest.mark.parametrize(("data", "expected"), V2_VALID)
def test_v2_valid(data: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(data + PAYLOAD) == expected
    assert parse_proxy_header(bytearray(data)) == expected
    assert parse_proxy_header(memoryview(data + PAYLOAD)) == expected
    assert_prefixes_need_more(data)


def test_v2_checksum_is_verified() -> None:
    unchecked = v2(
        0x1, 0x11, ipv4_block("192.0.2.1", "198.51.100.2", 1, 2) + tlv(TLV_CRC32C, bytes(4))
    )
    checked = with_checksum(unchecked, len(unchecked) - 4)
    header = parse_proxy_header(checked)
    assert header is not None
    assert header.tlvs == {TLV_CRC32C: checked[-4:]}
    with pytest.raises(ProxyProtocolError, match="CRC32C"):
        parse_proxy_header(unchecked)
    for index in range(len(checked)):
        if index in (12, 13, 14, 15, 28):
            # The fixed fields fail other checks first; a changed type byte at 28 turns
            # the checksum TLV into an unknown one: a valid header without a checksum.
            continue
        corrupted = bytearray(checked)
        corrupted[index] ^= 0x40
        with pytest.raises(ProxyProtocolError):
            parse_proxy_header(bytes(corrupted))


def test_crc32c_known_answers() -> None:
    # RFC 3720 appendix B.4 check value, and iSCSI test vectors (32 zero / 0xff bytes).
    assert _crc32c(b"123456789") == 0xE3069283
    assert _crc32c(bytes(32)) == 0x8A9136AA
    assert _crc32c(b"\xff" * 32) == 0x62A8AB43
    assert _crc32c(b"") == 0


ADDRESS4 = ipv4_block("192.0.2.1", "198.51.100.2", 1, 2)

V2_INVALID = [
    pytest.param(V2_SIGNATURE[:5] + b"\x01" + V2_SIGNATURE[6:], 6, id="signature"),
    pytest.param(V2_SIGNATURE + b"\x11\x11\x00\x0c" + ADDRESS4, 13, id="version-1"),
    pytest.param(V2_SIGNATURE + b"\x31\x11\x00\x0c" + ADDRESS4, 13, id="version-3"),
    pytest.param(V2_SIGNATURE + b"\x22\x11\x00\x0c" + ADDRESS4, 13, id="command-2"),
    pytest.param(V2_SIGNATURE + b"\x2f\x11\x00\x0c" + ADDRESS4, 13, id="command-f"),
    pytest.param(v2(0x1, 0x41, ADDRESS4), 14, id="family-4"),
    pytest.param(v2(0x1, 0x13, ADDRESS4), 14, id="protocol-3"),
    pytest.param(v2(0x1, 0x10, ADDRESS4), 14, id="inet-unspec-protocol"),
    pytest.param(v2(0x1, 0x01, ADDRESS4), 14, id="unspec-stream"),
    pytest.param(v2(0x0, 0x51, b""), 14, id="local-family-5"),
    pytest.param(v2(0x1, 0x11, ADDRESS4[:11]), 16, id="tcp4-short"),
    pytest.param(v2(0x1, 0x21, ADDRESS4 * 2), 16, id="tcp6-short"),
    pytest.param(v2(0x1, 0x31, bytes(215)), 16, id="unix-short"),
    pytest.param(v2(0x0, 0x11, b""), 16, id="local-family-without-addresses"),
    pytest.param(v2(0x1, 0x11, ADDRESS4 + b"\x01"), 29, id="stray-byte"),
    pytest.param(v2(0x1, 0x11, ADDRESS4 + b"\x01\x00"), 30, id="stray-bytes"),
    pytest.param(v2(0x1, 0x11, ADDRESS4 + b"\x01\x00\x02x"), 32, id="tlv-overrun"),
    pytest.param(v2(0x0, 0x00, b"\x01\xff\xff"), 19, id="tlv-overrun-max"),
    pytest.param(
        v2(0x1, 0x11, ADDRESS4 + tlv(TLV_ALPN, b"a") + tlv(TLV_ALPN, b"a")), 36, id="duplicate"
    ),
    pytest.param(v2(0x1, 0x11, ADDRESS4 + tlv(TLV_CRC32C, b"abc")), 34, id="crc-3-bytes"),
    pytest.param(v2(0x1, 0x11, ADDRESS4 + tlv(TLV_CRC32C, b"abcde")), 36, id="crc-5-bytes"),
]


@pytest.mark.parametrize(("data", "refused_from"), V2_INVALID)
def test_v2_invalid_is_refused_as_early_as_possible(data: bytes, refused_from: int) -> None:
    assert_prefixes_need_more(data[: refused_from - 1])
    for length in range(refused_from, len(data) + 1):
        with pytest.raises(ProxyProtocolError):
            parse_proxy_header(data[:length])


def test_v2_max_size_is_enforced_from_the_fixed_header() -> None:
    header = v2(0x1, 0x11, ADDRESS4 + tlv(TLV_NOOP, bytes(500)))
    assert parse_proxy_header(header, max_size=len(header)) is not None
    with pytest.raises(ProxyProtocolError, match="max_size"):
        parse_proxy_header(header[:16], max_size=len(header) - 1)


def test_v2_largest_header() -> None:
    body = ADDRESS4 + tlv(0xEE, bytes(0xFFFF - len(ADDRESS4) - 3))
    header = v2(0x1, 0x11, body)
    assert len(header) == V2_MAX_LENGTH
    parsed = parse_proxy_header(header + PAYLOAD)
    assert parsed is not None
    assert parsed.consumed == V2_MAX_LENGTH
    assert len(parsed.tlvs[0xEE]) == 0xFFFF - len(ADDRESS4) - 3


def test_max_size_below_the_fixed_header_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="max_size"):
        parse_proxy_header(V2_TCP4, max_size=15)


def test_empty_input_needs_more() -> None:
    assert parse_proxy_header(b"") is None


def test_proxy_protocol_error_is_a_value_error_and_a_sockit_error() -> None:
    with pytest.raises(ValueError, match="not a PROXY protocol header") as caught:
        parse_proxy_header(b"\x16\x03\x01")  # a TLS ClientHello
    assert isinstance(caught.value, SockitError)


# --- encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "destination", "expected"),
    [
        pytest.param(
            v4("192.168.0.1", 56324),
            v4("192.168.0.11", 443),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            id="tcp4",
        ),
        pytest.param(
            v6("2001:DB8:0::1", 1),
            v6("::1", 0),
            b"PROXY TCP6 2001:db8::1 ::1 1 0\r\n",
            id="tcp6",
        ),
        pytest.param(
            v4("192.0.2.1", 1),
            v6("2001:db8::2", 2),
            b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n",
            id="mixed-source-mapped",
        ),
        pytest.param(
            v6("2001:db8::2", 2),
            v4("192.0.2.1", 1),
            b"PROXY TCP6 2001:db8::2 ::ffff:192.0.2.1 2 1\r\n",
            id="mixed-destination-mapped",
        ),
        pytest.param(
            SocketAddress(socket.AF_INET6, "fe80::1", 5, scope_id=1),
            v6("fe80::2%2", 6),
            b"PROXY TCP6 fe80::1 fe80::2 5 6\r\n",
            id="scope-dropped",
        ),
        pytest.param(None, None, b"PROXY UNKNOWN\r\n", id="none"),
        pytest.param(v4("192.0.2.1", 1), None, b"PROXY UNKNOWN\r\n", id="one-none"),
        pytest.param(unix("/a"), unix("/b"), b"PROXY UNKNOWN\r\n", id="unix"),
    ],
)
def test_encode_v1(
    source: SocketAddress | None, destination: SocketAddress | None, expected: bytes
) -> None:
    assert encode_proxy_v1(source, destination) == expected


@pytest.mark.parametrize(
    ("source", "destination", "expected"),
    [
        pytest.param(v4("192.0.2.1", 56324), v4("198.51.100.2", 443), V2_TCP4, id="tcp4"),
        pytest.param(v6("2001:db8::1", 1), v6("2001:db8::2", 65535), V2_TCP6, id="tcp6"),
        pytest.param(
            v4("192.0.2.1", 9),
            v6("::1", 10),
            v2(0x1, 0x21, ipv6_block("::ffff:192.0.2.1", "::1", 9, 10)),
            id="mixed",
        ),
        pytest.param(unix("/run/client.sock"), unix("@abstract"), V2_UNIX, id="unix"),
        pytest.param(
            unix(""), unix("/" * 108), v2(0x1, 0x31, bytes(108) + b"/" * 108), id="unix-edges"
        ),
        pytest.param(None, None, v2(0x1, 0x00, b""), id="unspec"),
        pytest.param(unix("/a"), v4("192.0.2.1", 1), v2(0x1, 0x00, b""), id="unix-inet-mix"),
    ],
)
def test_encode_v2(
    source: SocketAddress | None, destination: SocketAddress | None, expected: bytes
) -> None:
    assert encode_proxy_v2(source, destination) == expected


def test_encode_v2_local() -> None:
    assert encode_proxy_v2(None, None, command="LOCAL") == V2_SIGNATURE + b"\x20\x00\x00\x00"
    with pytest.raises(ProxyProtocolError, match="LOCAL"):
        encode_proxy_v2(v4("192.0.2.1", 1), v4("192.0.2.2", 2), command="LOCAL")


def test_encode_v2_tlvs_in_order_with_checksum() -> None:
    header = encode_proxy_v2(
        v4("192.0.2.1", 1),
        v4("198.51.100.2", 2),
        tlvs={TLV_AUTHORITY: b"example.com", TLV_CRC32C: b"ignored", TLV_NOOP: bytearray(2)},
    )
    unchecked = v2(
        0x1,
        0x11,
        ipv4_block("192.0.2.1", "198.51.100.2", 1, 2)
        + tlv(TLV_AUTHORITY, b"example.com")
        + tlv(TLV_CRC32C, bytes(4))
        + tlv(TLV_NOOP, bytes(2)),
    )
    assert header == with_checksum(unchecked, 28 + 14 + 3)
    parsed = parse_proxy_header(header)
    assert parsed is not None
    assert parsed.tlvs[TLV_AUTHORITY] == b"example.com"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(
            lambda: encode_proxy_v1(v4("192.0.2.1", 65536), v4("192.0.2.2", 1)),
            AddressError,
            "65536",
            id="v1-port",
        ),
        pytest.param(
            lambda: encode_proxy_v2(v4("192.0.2.1", -1), v4("192.0.2.2", 1)),
            AddressError,
            "-1",
            id="v2-port",
        ),
        pytest.param(
            lambda: encode_proxy_v1(v4("localhost", 1), v4("192.0.2.2", 1)),
            AddressError,
            "localhost",
            id="v1-name",
        ),
        pytest.param(
            lambda: encode_proxy_v2(v4("010.0.0.1", 1), v4("192.0.2.2", 1)),
            AddressError,
            "010.0.0.1",
            id="v2-leading-zero",
        ),
        pytest.param(
            lambda: encode_proxy_v2(v6("192.0.2.1", 1), v6("::1", 1)),
            AddressError,
            "IPv6",
            id="v4-host-as-v6",
        ),
        pytest.param(
            lambda: encode_proxy_v2(unix("/" * 109), unix("/b")),
            AddressError,
            "108",
            id="unix-too-long",
        ),
        pytest.param(
            lambda: encode_proxy_v2(unix("@" + "a" * 108), unix("/b")),
            AddressError,
            "108",
            id="abstract-too-long",
        ),
        pytest.param(
            lambda: encode_proxy_v2(unix("/a\0b"), unix("/b")),
            AddressError,
            "NUL",
            id="unix-nul",
        ),
        pytest.param(
            lambda: encode_proxy_v2(None, None, command="HEALTH"),  # type: ignore[arg-type]
            ProxyProtocolError,
            "HEALTH",
            id="command",
        ),
        pytest.param(
            lambda: encode_proxy_v2(None, None, tlvs={256: b""}),
            ProxyProtocolError,
            "256",
            id="tlv-type",
        ),
        pytest.param(
            lambda: encode_proxy_v2(None, None, tlvs={1: "text"}),  # type: ignore[dict-item]
            TypeError,
            "bytes",
            id="tlv-str",
        ),
        pytest.param(
            lambda: encode_proxy_v2(None, None, tlvs={1: bytes(0x10000)}),
            ProxyProtocolError,
            "too long",
            id="tlv-too-long",
        ),
        pytest.param(
            lambda: encode_proxy_v2(None, None, tlvs={1: bytes(0x8000), 2: bytes(0x8000)}),
            ProxyProtocolError,
            "65535",
            id="header-too-long",
        ),
    ],
)
def test_encode_refuses(call: object, error: type[Exception], match: str) -> None:
    assert callable(call)
    with pytest.raises(error, match=match):
        call()
