"""SocketStream's hand-over API: unread(), take_buffered(), buffered_bytes and
set_addresses() (what a PROXY protocol reader and the exec handler use), over real
socket pairs; unread() also on the memory stream, which shares the receive helpers."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.addr import SocketAddress
from sockit.testing.memory import memory_stream_pair

if TYPE_CHECKING:
    from collections.abc import Iterator

PATIENCE = 5.0


@pytest.fixture
def pair() -> Iterator[tuple[sockit.SocketStream, sockit.SocketStream]]:
    left, right = socket.socketpair()
    with sockit.SocketStream(left) as client, sockit.SocketStream(right) as server:
        yield client, server


def test_unread_bytes_come_first_and_in_order(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b" world\nnext")
    server.unread(b"")
    server.unread(b"lo")
    server.unread(b"hel")
    assert server.buffered_bytes == 5
    assert server.recv_line(timeout=PATIENCE) == b"hello world"
    assert server.recv_exactly(4, timeout=PATIENCE) == b"next"
    assert server.buffered_bytes == 0


def test_unread_after_a_partial_read_of_lines(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"one\ntwo\nthree\n")
    assert server.recv_line(timeout=PATIENCE) == b"one"
    server.unread(b"one\n")
    assert [server.recv_line(timeout=PATIENCE) for _ in range(3)] == [b"one", b"two", b"three"]


def test_unread_is_returned_without_waiting(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    _, server = pair
    server.unread(b"ready")
    assert server.recv(timeout=0) == b"ready"
    with pytest.raises(TimeoutError):
        server.recv(timeout=0)


def test_unread_on_a_closed_stream_is_an_error(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    _, server = pair
    server.close()
    with pytest.raises(sockit.ClosedResourceError):
        server.unread(b"late")
    assert server.take_buffered() == b""


def test_take_buffered_takes_what_was_unread(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    _, server = pair
    server.unread(b"prefix")
    assert server.take_buffered() == b"prefix"
    assert server.buffered_bytes == 0
    assert server.take_buffered() == b""


def test_set_addresses_replaces_what_is_reported(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    _, server = pair
    real_local = server.local_address
    real_remote = server.remote_address
    client = SocketAddress(socket.AF_INET, "192.0.2.7", 40000)
    origin = SocketAddress(socket.AF_INET6, "2001:db8::1", 443)
    server.set_addresses()
    assert (server.local_address, server.remote_address) == (real_local, real_remote)
    server.set_addresses(remote=client)
    assert (server.local_address, server.remote_address) == (real_local, client)
    server.set_addresses(local=origin)
    assert (server.local_address, server.remote_address) == (origin, client)


def test_addresses_given_to_the_constructor_are_reported() -> None:
    left, right = socket.socketpair()
    local = SocketAddress(socket.AF_INET, "192.0.2.1", 80)
    remote = SocketAddress(socket.AF_INET, "192.0.2.2", 1234)
    with (
        sockit.SocketStream(left, local_address=local, remote_address=remote) as stream,
        sockit.SocketStream(right) as other,
    ):
        assert stream.local_address == local
        assert stream.remote_address == remote
        assert other.remote_address.is_unix


def test_the_memory_stream_shares_unread() -> None:
    left, right = memory_stream_pair()
    with left, right:
        left.sendall(b"tail")
        right.unread(b"head ")
        assert right.recv_exactly(9, timeout=PATIENCE) == b"head tail"
        right.close()
        with pytest.raises(sockit.ClosedResourceError):
            right.unread(b"x")
