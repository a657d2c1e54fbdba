"""sockit.addr.binding: the listening and connecting sockets both twins make, on real
loopback sockets (with socket subclasses where a kernel error has to be staged)."""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING

import pytest

from sockit.addr import AddrInfo, SocketAddress
from sockit.addr.binding import (
    DEFAULT_BACKLOG,
    bind_listening_sockets,
    set_nodelay,
    start_connect,
    unique_infos,
    wildcard_infos,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")

V4 = AddrInfo(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))
V6 = AddrInfo(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0))


def v4(host: str = "127.0.0.1", port: int = 0) -> AddrInfo:
    return AddrInfo(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))


class Maker:
    """A ``new_socket`` that records every socket it made (real ones by default)."""

    def __init__(self, kind: type[socket.socket] = socket.socket) -> None:
        self.kind = kind
        self.made: list[socket.socket] = []

    def __call__(self, family: int, type: int, proto: int) -> socket.socket:
        sock = self.kind(family, type, proto)
        self.made.append(sock)
        return sock

    def all_closed(self) -> bool:
        return all(sock.fileno() == -1 for sock in self.made)


@pytest.fixture
def maker() -> Iterator[Maker]:
    made = Maker()
    yield made
    for sock in made.made:
        sock.close()


def test_default_backlog_asks_for_the_most() -> None:
    assert DEFAULT_BACKLOG == 65535


def test_wildcard_infos_are_ipv6_then_ipv4_on_one_port() -> None:
    infos = wildcard_infos(8080)
    assert [(info.family, info.sockaddr) for info in infos] == [
        (socket.AF_INET6, ("::", 8080, 0, 0)),
        (socket.AF_INET, ("0.0.0.0", 8080)),
    ]
    assert all(info.type == socket.SOCK_STREAM for info in infos)


def test_unique_infos_drops_repeats_and_keeps_order() -> None:
    other = v4("127.0.0.2")
    assert unique_infos([V4, V6, V4, other, V6]) == [V4, V6, other]
    assert unique_infos([]) == []


def test_one_address_listens_there(maker: Maker) -> None:
    [sock] = bind_listening_sockets(maker, [V4], 0, backlog=5, reuse_port=False)
    host, port = sock.getsockname()
    assert host == "127.0.0.1"
    assert port != 0
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_reuse_port_when_asked(maker: Maker) -> None:
    [first] = bind_listening_sockets(maker, [V4], 0, backlog=5, reuse_port=True)
    assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    port = first.getsockname()[1]
    [second] = bind_listening_sockets(maker, [v4(port=port)], port, backlog=5, reuse_port=True)
    assert second.getsockname()[1] == port


@needs_ipv6
def test_several_addresses_share_the_port_the_first_got(maker: Maker) -> None:
    sockets = bind_listening_sockets(maker, [V6, V4], 0, backlog=5, reuse_port=False)
    assert [sock.family for sock in sockets] == [socket.AF_INET6, socket.AF_INET]
    ports = {sock.getsockname()[1] for sock in sockets}
    assert len(ports) == 1
    assert sockets[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_a_taken_port_is_an_error_naming_the_address_and_nothing_stays_open(
    maker: Maker,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            bind_listening_sockets(maker, [v4(port=port)], port, backlog=5, reuse_port=False)
    assert caught.value.errno == errno.EADDRINUSE
    assert f"cannot bind 127.0.0.1:{port}" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    assert maker.made
    assert maker.all_closed()


class _NoIPv6Socket(socket.socket):
    """A kernel without IPv6: creating an AF_INET6 socket fails."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1) -> None:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        super().__init__(family, type, proto)


class _DisabledIPv6Socket(socket.socket):
    """IPv6 compiled in but disabled: binding an IPv6 address fails."""

    def bind(self, address: object, /) -> None:
        if self.family == socket.AF_INET6:
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
        super().bind(address)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [_NoIPv6Socket, _DisabledIPv6Socket])
def test_a_missing_family_is_skipped_when_another_is_left(kind: type[socket.socket]) -> None:
    maker = Maker(kind)
    try:
        sockets = bind_listening_sockets(maker, [V6, V4], 0, backlog=5, reuse_port=False)
        assert [sock.family for sock in sockets] == [socket.AF_INET]
        assert all(sock.fileno() == -1 for sock in maker.made if sock not in sockets)
    finally:
        for sock in maker.made:
            sock.close()


@pytest.mark.parametrize("kind", [_NoIPv6Socket, _DisabledIPv6Socket])
def test_a_missing_family_is_an_error_when_it_is_the_only_one(kind: type[socket.socket]) -> None:
    maker = Maker(kind)
    try:
        with pytest.raises(OSError) as caught:
            bind_listening_sockets(maker, [V6], 0, backlog=5, reuse_port=False)
        assert caught.value.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
        assert maker.all_closed()
    finally:
        for sock in maker.made:
            sock.close()


def test_no_family_at_all_is_an_error() -> None:
    class NoInet(socket.socket):
        def __init__(self, family: int = -1, type: int = -1, proto: int = -1) -> None:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))

    with pytest.raises(OSError, match="no address family available") as caught:
        bind_listening_sockets(Maker(NoInet), [V6, V4], 0, backlog=5, reuse_port=False)
    assert caught.value.errno == errno.EAFNOSUPPORT


class _SecondBindTakenOnce(socket.socket):
    """The port the first socket got is taken on the second address, the first time."""

    rounds = 0

    def bind(self, address: object, /) -> None:
        assert isinstance(address, tuple)
        if address[0] == "127.0.0.2":
            type(self).rounds += 1
            if type(self).rounds == 1:
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        super().bind(address)


def test_port_zero_with_several_addresses_retries_a_taken_port() -> None:
    _SecondBindTakenOnce.rounds = 0
    maker = Maker(_SecondBindTakenOnce)
    try:
        sockets = bind_listening_sockets(
            maker, [V4, v4("127.0.0.2")], 0, backlog=5, reuse_port=False
        )
        assert _SecondBindTakenOnce.rounds == 2
        assert len(maker.made) == 4  # two sockets per round
        assert all(sock.fileno() == -1 for sock in maker.made[:2])
        assert len({sock.getsockname()[1] for sock in sockets}) == 1
    finally:
        for sock in maker.made:
            sock.close()


def test_a_fixed_port_is_not_retried() -> None:
    _SecondBindTakenOnce.rounds = 0
    maker = Maker(_SecondBindTakenOnce)
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        fixed = [v4(port=port), v4("127.0.0.2", port)]
        with pytest.raises(OSError) as caught:
            bind_listening_sockets(maker, fixed, port, backlog=5, reuse_port=False)
        assert caught.value.errno == errno.EADDRINUSE
        assert _SecondBindTakenOnce.rounds == 1
        assert maker.all_closed()
    finally:
        for sock in maker.made:
            sock.close()


def test_start_connect_is_under_way_and_non_blocking(maker: Maker) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        info = AddrInfo(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))
        local = SocketAddress(socket.AF_INET, "127.0.0.1", 0)
        sock = start_connect(maker, info, local)
        assert not sock.getblocking()
        conn, peer = listener.accept()
        with conn:
            assert peer == sock.getsockname()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


class _UnreachableSocket(socket.socket):
    def connect_ex(self, address: object, /) -> int:
        return errno.ENETUNREACH


def test_start_connect_failing_at_once_raises_and_closes() -> None:
    maker = Maker(_UnreachableSocket)
    with pytest.raises(OSError) as caught:
        start_connect(maker, V4, None)
    assert caught.value.errno == errno.ENETUNREACH
    assert maker.all_closed()


def test_start_connect_failing_to_bind_closes(maker: Maker) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        local = SocketAddress(socket.AF_INET, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError) as caught:
            start_connect(maker, V4, local)
    assert caught.value.errno == errno.EADDRINUSE
    assert maker.all_closed()


def test_set_nodelay_on_tcp_and_not_on_unix() -> None:
    with socket.socket() as tcp:
        set_nodelay(tcp)
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    left, right = socket.socketpair()
    with left, right:
        set_nodelay(left)  # a UNIX socket has no Nagle: nothing to do, nothing raised
