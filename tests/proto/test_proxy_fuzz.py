"""Property tests of the PROXY protocol codec: hostile input and round trips.

* Whatever bytes arrive (random, a valid header cut anywhere, a valid header with bytes
  flipped, inserted or removed), :func:`parse_proxy_header` returns ``None``, a header,
  or raises :class:`ProxyProtocolError`: never another exception.
* A truncated header is never taken for a complete one.
* ``parse(encode(addresses))`` gives the addresses back, for v1 and v2, IPv4, IPv6
  and UNIX, with any payload after the header left alone.
* The parser is stateless: once it has answered (header or error) for some bytes, more
  bytes never change that answer.
"""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sockit.addr import SocketAddress
from sockit.errors import ProxyProtocolError
from sockit.proto.proxy import (
    TLV_CRC32C,
    TLV_NOOP,
    V1_PREFIX,
    V2_SIGNATURE,
    ProxyHeader,
    encode_proxy_v1,
    encode_proxy_v2,
    parse_proxy_header,
)

EXAMPLES = settings(max_examples=300, deadline=None)
FEWER_EXAMPLES = settings(max_examples=100, deadline=None)

ports = st.integers(min_value=0, max_value=0xFFFF)


def inet_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> SocketAddress:
    if address.version == 4:
        return SocketAddress(socket.AF_INET, str(address), port)
    return SocketAddress(socket.AF_INET6, address.compressed, port)


inet_addresses = st.builds(inet_address, st.ip_addresses(v=4) | st.ip_addresses(v=6), ports)


def _fits_sun_path(path: str) -> bool:
    name = path[1:] if path.startswith("@") else path
    size = len(name.encode("utf-8", "surrogateescape")) + (1 if path.startswith("@") else 0)
    return size <= 108


# Any text without NUL (which a PROXY v2 UNIX address cannot carry unambiguously) and
# without surrogates other than those surrogateescape makes of undecodable bytes.
path_text = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=120)
unix_addresses = st.builds(
    lambda path: SocketAddress(socket.AF_UNIX, path=path),
    (path_text | path_text.map(lambda name: "@" + name)).filter(
        lambda path: path != "@" and _fits_sun_path(path)
    ),
)

tlv_maps = st.dictionaries(
    st.integers(0, 255).filter(lambda kind: kind not in (TLV_NOOP, TLV_CRC32C)),
    st.binary(max_size=40),
    max_size=5,
)


def as_reported(address: SocketAddress) -> SocketAddress:
    """What the parser reports for an address: IPv4-mapped IPv6 becomes IPv4."""
    if address.family == socket.AF_INET6:
        mapped = ipaddress.IPv6Address(address.host).ipv4_mapped
        if mapped is not None:
            return SocketAddress(socket.AF_INET, str(mapped), address.port)
    return address


@st.composite
def valid_headers(draw: st.DrawFn) -> bytes:
    """A valid header of any kind the encoder makes."""
    kind = draw(st.sampled_from(["v1", "v2", "v2-unix", "v2-local", "v1-unknown"]))
    if kind == "v1":
        return encode_proxy_v1(draw(inet_addresses), draw(inet_addresses))
    if kind == "v1-unknown":
        return encode_proxy_v1(None, None)
    tlvs = draw(tlv_maps)
    if draw(st.booleans()):
        tlvs[TLV_CRC32C] = b""
    if kind == "v2-local":
        return encode_proxy_v2(None, None, command="LOCAL", tlvs=tlvs)
    addresses = unix_addresses if kind == "v2-unix" else inet_addresses
    return encode_proxy_v2(draw(addresses), draw(addresses), tlvs=tlvs)


def parse_or_error(data: bytes) -> ProxyHeader | ProxyProtocolError | None:
    """The parser's answer; only ProxyProtocolError may escape it."""
    try:
        return parse_proxy_header(data)
    except ProxyProtocolError as exc:
        return exc


def check_consistent(data: bytes) -> None:
    answer = parse_or_error(data)
    if isinstance(answer, ProxyHeader):
        assert 0 < answer.consumed <= len(data)
        # The header alone parses to the same; what follows it is payload.
        assert parse_proxy_header(data[: answer.consumed]) == answer
        assert (answer.source is None) == (answer.family is None)
        assert (answer.destination is None) == (answer.family is None)


# --- hostile input --------------------------------------------------------------------


@EXAMPLES
@given(st.binary(max_size=300))
@example(b"")
@example(V2_SIGNATURE)
@example(V1_PREFIX)
def test_random_bytes_only_raise_proxy_protocol_error(data: bytes) -> None:
    check_consistent(data)


@EXAMPLES
@given(st.sampled_from([V1_PREFIX, V2_SIGNATURE + b"\x21", V2_SIGNATURE]), st.binary(max_size=300))
def test_random_bytes_after_a_signature_only_raise_proxy_protocol_error(
    prefix: bytes, rest: bytes
) -> None:
    check_consistent(prefix + rest)


@EXAMPLES
@given(
    st.sampled_from([b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"UNKNOWN "]),
    st.lists(
        st.sampled_from(
            [b"1", b"0", b".", b":", b" ", b"\r", b"\n", b"\r\n", b"f", b"25", b"65535"]
        ),
        max_size=60,
    ),
)
def test_random_v1_lines_only_raise_proxy_protocol_error(token: bytes, pieces: list[bytes]) -> None:
    check_consistent(V1_PREFIX + token + b"".join(pieces))


@FEWER_EXAMPLES
@given(valid_headers(), st.binary(max_size=20))
def test_truncated_headers_need_more_bytes(header: bytes, payload: bytes) -> None:
    for length in range(len(header)):
        assert parse_proxy_header(header[:length]) is None
    parsed = parse_proxy_header(header + payload)
    assert parsed is not None
    assert parsed.consumed == len(header)


def mutate(header: bytes, data: st.DataObject) -> bytes:
    """``header`` with one to four bytes flipped, replaced, inserted or deleted."""
    mutated = bytearray(header)
    for _ in range(data.draw(st.integers(1, 4))):
        operation = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        index = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if operation == "flip" and mutated:
            mutated[index] ^= 1 << data.draw(st.integers(0, 7))
        elif operation == "set" and mutated:
            mutated[index] = data.draw(st.integers(0, 255))
        elif operation == "insert":
            mutated.insert(index, data.draw(st.integers(0, 255)))
        elif mutated:
            del mutated[index]
    return bytes(mutated)


@EXAMPLES
@given(valid_headers(), st.data())
def test_mutated_headers_only_raise_proxy_protocol_error(
    header: bytes, data: st.DataObject
) -> None:
    check_consistent(mutate(header, data))


@FEWER_EXAMPLES
@given(valid_headers(), st.data())
def test_the_first_answer_is_final_for_every_prefix(header: bytes, data: st.DataObject) -> None:
    # Early refusal must be consistent: once some prefix gets a header or an error,
    # every longer prefix gets the same answer (a parser that refuses a prefix it would
    # later accept, or the reverse, disagrees with itself depending on packet sizes).
    mutated = mutate(header, data) if data.draw(st.booleans()) else header
    first: ProxyHeader | ProxyProtocolError | None = None
    for length in range(len(mutated) + 1):
        answer = parse_or_error(mutated[:length])
        if first is None:
            first = answer
        elif isinstance(first, ProxyProtocolError):
            assert isinstance(answer, ProxyProtocolError), (mutated[:length], answer)
        else:
            assert answer == first, mutated[:length]


@EXAMPLES
@given(st.binary(max_size=200), st.binary(min_size=1, max_size=50))
def test_more_bytes_never_change_an_answer(data: bytes, more: bytes) -> None:
    answer = parse_or_error(data)
    if answer is None:
        return
    later = parse_or_error(data + more)
    if isinstance(answer, ProxyProtocolError):
        assert isinstance(later, ProxyProtocolError)
    else:
        assert later == answer


# --- round trips ----------------------------------------------------------------------


@EXAMPLES
@given(inet_addresses, inet_addresses, st.binary(max_size=20))
def test_v1_round_trip(source: SocketAddress, destination: SocketAddress, payload: bytes) -> None:
    header = encode_proxy_v1(source, destination)
    assert len(header) <= 107
    parsed = parse_proxy_header(header + payload)
    assert parsed is not None
    assert parsed.version == 1
    assert parsed.consumed == len(header)
    assert parsed.source == as_reported(source)
    assert parsed.destination == as_reported(destination)
    both_ipv4 = source.family == destination.family == socket.AF_INET
    assert parsed.family == (socket.AF_INET if both_ipv4 else socket.AF_INET6)


@EXAMPLES
@given(inet_addresses | unix_addresses, inet_addresses | unix_addresses, tlv_maps, st.booleans())
def test_v2_round_trip(
    source: SocketAddress,
    destination: SocketAddress,
    tlvs: dict[int, bytes],
    checksum: bool,
) -> None:
    sent_tlvs = {**tlvs, TLV_CRC32C: b""} if checksum else tlvs
    header = encode_proxy_v2(source, destination, tlvs=sent_tlvs)
    parsed = parse_proxy_header(header + b"payload")
    assert parsed is not None
    assert parsed.version == 2
    assert parsed.command == "PROXY"
    assert parsed.consumed == len(header)
    assert {kind: value for kind, value in parsed.tlvs.items() if kind != TLV_CRC32C} == tlvs
    assert (TLV_CRC32C in parsed.tlvs) == checksum
    if source.is_unix != destination.is_unix:
        # No family describes a UNIX/IP pair: sent as AF_UNSPEC.
        assert parsed.family is None
        assert parsed.source is None
        assert parsed.destination is None
        return
    if source.is_unix:
        assert parsed.family == socket.AF_UNIX
        assert parsed.source == source
        assert parsed.destination == destination
    else:
        assert parsed.source == as_reported(source)
        assert parsed.destination == as_reported(destination)


@EXAMPLES
@given(tlv_maps)
def test_v2_local_round_trip(tlvs: dict[int, bytes]) -> None:
    header = encode_proxy_v2(None, None, command="LOCAL", tlvs=tlvs)
    assert parse_proxy_header(header) == ProxyHeader(
        2, "LOCAL", None, None, None, len(header), tlvs=tlvs
    )
