"""sockit.addr.datagram: the UDP rules and socket set-up both twins share.

Pure tables for limits, destinations and argument checks; real loopback UDP sockets
for creating, binding and connecting (socket subclasses stage the kernel errors).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
from typing import TYPE_CHECKING, Any

import pytest

from sockit.addr import AddrInfo, SocketAddress
from sockit.addr.datagram import (
    DEFAULT_MAX_BYTES,
    IPV4_MAX_DATAGRAM,
    IPV6_MAX_DATAGRAM,
    MSG_TRUNC,
    bind_first,
    bind_wildcard,
    check_family,
    connect_first,
    datagram_limit,
    destination_sockaddr,
    is_dual_stack,
    parse_remote,
    peer_address,
)
from sockit.errors import AddressError, ConnectError, ResolutionError

if TYPE_CHECKING:
    from collections.abc import Iterator


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")

V4 = SocketAddress(socket.AF_INET, "192.0.2.1", 53)
V6 = SocketAddress(socket.AF_INET6, "2001:db8::1", 53)
MAPPED = SocketAddress(socket.AF_INET6, "::ffff:192.0.2.1", 53)
UNIX = SocketAddress(socket.AF_UNIX, path="/tmp/x")
LOCAL = SocketAddress(socket.AF_INET6, "::", 4000)


def test_limits_and_defaults() -> None:
    assert IPV4_MAX_DATAGRAM == 65535 - 20 - 8
    assert IPV6_MAX_DATAGRAM == 65535 - 8
    assert DEFAULT_MAX_BYTES >= IPV6_MAX_DATAGRAM
    assert int(getattr(socket, "MSG_TRUNC", 0)) == MSG_TRUNC
    assert type(MSG_TRUNC) is int


@pytest.mark.parametrize(
    ("address", "limit"),
    [
        (V4, IPV4_MAX_DATAGRAM),
        (V6, IPV6_MAX_DATAGRAM),
        (MAPPED, IPV4_MAX_DATAGRAM),
        # ::ffff:0:1 is the same mapped address written without a dot: not recognised.
        (SocketAddress(socket.AF_INET6, "::ffff:0:1", 53), IPV6_MAX_DATAGRAM),
    ],
)
def test_datagram_limit(address: SocketAddress, limit: int) -> None:
    assert datagram_limit(address) == limit


@pytest.mark.parametrize(
    ("address", "family", "dual_stack", "sockaddr", "limit"),
    [
        (V4, socket.AF_INET, False, ("192.0.2.1", 53), IPV4_MAX_DATAGRAM),
        (V4, socket.AF_INET6, True, ("::ffff:192.0.2.1", 53, 0, 0), IPV4_MAX_DATAGRAM),
        (V6, socket.AF_INET6, True, ("2001:db8::1", 53, 0, 0), IPV6_MAX_DATAGRAM),
        (V6, socket.AF_INET6, False, ("2001:db8::1", 53, 0, 0), IPV6_MAX_DATAGRAM),
        (MAPPED, socket.AF_INET6, False, ("::ffff:192.0.2.1", 53, 0, 0), IPV4_MAX_DATAGRAM),
    ],
)
def test_reachable_destinations(
    address: SocketAddress, family: int, dual_stack: bool, sockaddr: object, limit: int
) -> None:
    assert destination_sockaddr(
        address, family=family, dual_stack=dual_stack, local_address=LOCAL
    ) == (sockaddr, limit)


@pytest.mark.parametrize(
    ("address", "family", "dual_stack", "kind"),
    [
        (V6, socket.AF_INET, False, "an IPv4"),
        (V4, socket.AF_INET6, False, "an IPv6-only"),
        (UNIX, socket.AF_INET6, True, "a dual-stack IPv6"),
        (UNIX, socket.AF_INET, False, "an IPv4"),
    ],
)
def test_unreachable_destinations(
    address: SocketAddress, family: int, dual_stack: bool, kind: str
) -> None:
    with pytest.raises(AddressError) as caught:
        destination_sockaddr(address, family=family, dual_stack=dual_stack, local_address=LOCAL)
    message = str(caught.value)
    assert f"cannot send to {address} from {kind} socket {LOCAL}" in message
    assert "open the socket for that address family" in message


@pytest.mark.parametrize(
    ("family", "expected"),
    [(None, 0), (0, 0), (socket.AF_INET, socket.AF_INET), (socket.AF_INET6, socket.AF_INET6)],
)
def test_check_family(family: int | None, expected: int) -> None:
    assert check_family(family) == expected


@pytest.mark.parametrize("family", [socket.AF_UNIX, -1, 99])
def test_check_family_refuses_others(family: int) -> None:
    with pytest.raises(ValueError, match="family must be None, AF_INET or AF_INET6"):
        check_family(family)


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("127.0.0.1:53", ("127.0.0.1", 53)),
        ("[::1]:53", ("::1", 53)),
        ("example.test:domain", ("example.test", 53)),
        (("127.0.0.1", 53), ("127.0.0.1", 53)),
        (("127.0.0.1", "53"), ("127.0.0.1", 53)),
        (("EXAMPLE.test", 9), ("EXAMPLE.test", 9)),
    ],
)
def test_parse_remote(remote: tuple[str, int | str] | str, expected: tuple[str, int]) -> None:
    assert parse_remote(remote) == expected


@pytest.mark.parametrize(
    ("remote", "error"),
    [
        ("no-port-here", AddressError),
        (":53", AddressError),
        ("unix:/tmp/x", AddressError),
        ("@abstract", AddressError),
        (("127.0.0.1", 70000), AddressError),
        (("010.0.0.1", 53), AddressError),
        ((b"127.0.0.1", 53), TypeError),
        (("127.0.0.1", 53, 0), TypeError),
        (53, TypeError),
    ],
)
def test_parse_remote_refuses(remote: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_remote(remote)  # type: ignore[arg-type]


# --- real sockets ---------------------------------------------------------------------


class Maker:
    """A ``new_socket`` that records what it made; ``kind`` may stage kernel errors."""

    def __init__(self, kind: type[socket.socket] = socket.socket) -> None:
        self.kind = kind
        self.made: list[socket.socket] = []

    def __call__(self, family: int, type: int, proto: int) -> socket.socket:
        sock = self.kind(family, type, proto)
        self.made.append(sock)
        return sock

    def open(self) -> list[socket.socket]:
        return [sock for sock in self.made if sock.fileno() != -1]

    def close_all(self) -> None:
        for sock in self.made:
            sock.close()


@pytest.fixture
def maker() -> Iterator[Maker]:
    made = Maker()
    yield made
    made.close_all()


def _keep(sock: socket.socket) -> socket.socket:
    return sock


def test_peer_address_and_dual_stack_on_ipv4(maker: Maker) -> None:
    sock = maker(socket.AF_INET, socket.SOCK_DGRAM, 0)
    assert peer_address(sock) is None
    assert not is_dual_stack(sock)
    sock.connect(("127.0.0.1", 9))
    assert peer_address(sock) == SocketAddress(socket.AF_INET, "127.0.0.1", 9)


def test_peer_address_of_a_closed_socket_is_an_error(maker: Maker) -> None:
    sock = maker(socket.AF_INET, socket.SOCK_DGRAM, 0)
    sock.close()
    with pytest.raises(OSError) as caught:
        peer_address(sock)
    assert caught.value.errno == errno.EBADF


@needs_ipv6
@pytest.mark.parametrize(("family", "dual"), [(0, True), (socket.AF_INET6, False)])
def test_bind_wildcard_ipv6(maker: Maker, family: int, dual: bool) -> None:
    sock = bind_wildcard(maker, _keep, 0, family, reuse_port=False)
    assert sock.family == socket.AF_INET6
    assert sock.getsockname()[0] == "::"
    assert is_dual_stack(sock) is dual
    # Buffers hold a maximal datagram (Linux reports twice the size set).
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 2 * 65536
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * 65536


def test_bind_wildcard_ipv4_with_reuse_port(maker: Maker) -> None:
    sock = bind_wildcard(maker, _keep, 0, socket.AF_INET, reuse_port=True)
    assert sock.family == socket.AF_INET
    assert sock.getsockname()[0] == "0.0.0.0"
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    assert maker.open() == [sock]


class _NoIPv6(socket.socket):
    def __init__(self, family: int = -1, type: int = -1, proto: int = -1) -> None:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        super().__init__(family, type, proto)


class _IPv6Disabled(socket.socket):
    def bind(self, address: Any, /) -> None:
        if self.family == socket.AF_INET6:
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
        super().bind(address)


@pytest.mark.parametrize("kind", [_NoIPv6, _IPv6Disabled])
def test_bind_wildcard_falls_back_to_ipv4(kind: type[socket.socket]) -> None:
    maker = Maker(kind)
    try:
        sock = bind_wildcard(maker, _keep, 0, 0, reuse_port=False)
        assert sock.family == socket.AF_INET
        assert maker.open() == [sock]
        with pytest.raises(OSError):
            bind_wildcard(maker, _keep, 0, socket.AF_INET6, reuse_port=False)
        assert maker.open() == [sock]
    finally:
        maker.close_all()


def test_bind_wildcard_names_the_address_it_could_not_bind(maker: Maker) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            bind_wildcard(maker, _keep, port, socket.AF_INET, reuse_port=False)
    assert caught.value.errno == errno.EADDRINUSE
    assert f"cannot bind UDP socket to 0.0.0.0:{port}" in str(caught.value)
    assert maker.open() == []


def test_a_wrapper_that_fails_leaves_nothing_open(maker: Maker) -> None:
    def refuse(sock: socket.socket) -> socket.socket:
        raise RuntimeError("no thanks")

    with pytest.raises(RuntimeError):
        bind_wildcard(maker, refuse, 0, socket.AF_INET, reuse_port=False)
    infos = [AddrInfo(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", 0))]
    with pytest.raises(RuntimeError):
        bind_first(maker, refuse, "127.0.0.1", infos, 0, reuse_port=False)
    with pytest.raises(RuntimeError):
        connect_first(
            maker,
            refuse,
            "127.0.0.1",
            9,
            [AddrInfo(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", 9))],
            local_infos=None,
            local_port=0,
            reuse_port=False,
            clock=lambda: 0.0,
        )
    assert maker.made
    assert maker.open() == []


def _dgram(host: str, port: int = 0) -> AddrInfo:
    if ":" in host:
        return AddrInfo(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", (host, port, 0, 0))
    return AddrInfo(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (host, port))


def test_bind_first_skips_what_the_system_lacks() -> None:
    maker = Maker(_NoIPv6)
    try:
        sock = bind_first(
            maker, _keep, "localhost", [_dgram("::1"), _dgram("127.0.0.1")], 0, reuse_port=False
        )
        assert sock.getsockname()[0] == "127.0.0.1"
        with pytest.raises(OSError) as caught:
            bind_first(maker, _keep, "localhost", [_dgram("::1")], 0, reuse_port=False)
        assert caught.value.errno == errno.EAFNOSUPPORT
        assert maker.open() == [sock]
    finally:
        maker.close_all()


def test_bind_first_with_no_answers_is_a_resolution_error(maker: Maker) -> None:
    with pytest.raises(ResolutionError, match="no addresses to bind to"):
        bind_first(maker, _keep, "nothing.test", [], 0, reuse_port=False)


def test_bind_first_raises_other_errors_at_once(maker: Maker) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        infos = [_dgram("127.0.0.1", port), _dgram("127.0.0.2", port)]
        with pytest.raises(OSError) as caught:
            bind_first(maker, _keep, "host.test", infos, 0, reuse_port=False)
    assert caught.value.errno == errno.EADDRINUSE
    assert len(maker.made) == 1
    assert maker.open() == []


@needs_ipv6
@pytest.mark.parametrize(("family", "dual"), [(0, True), (socket.AF_INET6, False)])
def test_bind_first_ipv6_wildcard_answer(maker: Maker, family: int, dual: bool) -> None:
    sock = bind_first(maker, _keep, "::", [_dgram("::")], family, reuse_port=False)
    assert is_dual_stack(sock) is dual


def test_connect_first_connects_to_the_first_that_works(maker: Maker) -> None:
    sock = connect_first(
        maker,
        _keep,
        "127.0.0.1",
        9,
        [_dgram("127.0.0.1", 9)],
        local_infos=None,
        local_port=0,
        reuse_port=False,
        clock=lambda: 0.0,
    )
    assert peer_address(sock) == SocketAddress(socket.AF_INET, "127.0.0.1", 9)


def test_connect_first_binds_the_local_side(maker: Maker) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock = connect_first(
        maker,
        _keep,
        "127.0.0.1",
        9,
        [_dgram("127.0.0.1", 9)],
        local_infos=[_dgram("127.0.0.1", port)],
        local_port=port,
        reuse_port=False,
        clock=lambda: 0.0,
    )
    assert sock.getsockname() == ("127.0.0.1", port)


def test_connect_first_binds_a_local_port_on_the_wildcard(maker: Maker) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    sock = connect_first(
        maker,
        _keep,
        "127.0.0.1",
        9,
        [_dgram("127.0.0.1", 9)],
        local_infos=None,
        local_port=port,
        reuse_port=False,
        clock=lambda: 0.0,
    )
    assert sock.getsockname()[1] == port


def test_connect_first_fails_naming_every_address(maker: Maker) -> None:
    ticks = itertools.count()
    with pytest.raises(ConnectError) as caught:
        connect_first(
            maker,
            _keep,
            "two.test",
            9,
            [_dgram("127.0.0.1", 9), _dgram("127.0.0.2", 9)],
            # The local host has IPv6 only: no remote of another family can be used.
            local_infos=[_dgram("::1")],
            local_port=0,
            reuse_port=False,
            clock=lambda: float(next(ticks)),
        )
    error = caught.value
    assert [attempt.address for attempt in error.attempts] == ["127.0.0.1:9", "127.0.0.2:9"]
    assert [attempt.elapsed for attempt in error.attempts] == [1.0, 2.0]
    assert error.errno == errno.EAFNOSUPPORT
    assert "two.test:9" in str(error)
    assert isinstance(error.__cause__, OSError)


def test_connect_first_stops_at_a_taken_local_port(maker: Maker) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            connect_first(
                maker,
                _keep,
                "two.test",
                9,
                [_dgram("127.0.0.1", 9), _dgram("127.0.0.2", 9)],
                local_infos=[_dgram("127.0.0.1", port)],
                local_port=port,
                reuse_port=False,
                clock=lambda: 0.0,
            )
    assert caught.value.errno == errno.EADDRINUSE
    assert not isinstance(caught.value, ConnectError)
    assert len(maker.made) == 1
    assert maker.open() == []
