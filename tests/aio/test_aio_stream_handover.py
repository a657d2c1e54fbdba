"""AsyncSocketStream's hand-over API, the twin of tests/sync/test_stream_handover.py:
unread(), take_buffered() (which also empties the transport's queue), buffered_bytes
and set_addresses(). Every test runs on asyncio and on uvloop."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest

import sockit
from sockit import aio
from sockit.addr import SocketAddress

if TYPE_CHECKING:
    from collections.abc import Callable

PATIENCE = 5.0

StreamPair = tuple[aio.AsyncSocketStream, aio.AsyncSocketStream]


def _pair() -> StreamPair:
    left, right = socket.socketpair()
    return aio.AsyncSocketStream(left), aio.AsyncSocketStream(right)


def test_unread_bytes_come_first_and_in_order(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = _pair()
        async with client, server:
            await client.sendall(b" world\nnext")
            server.unread(b"")
            server.unread(b"lo")
            server.unread(b"hel")
            assert server.buffered_bytes == 5
            assert await server.recv_line(timeout=PATIENCE) == b"hello world"
            assert await server.recv_exactly(4, timeout=PATIENCE) == b"next"
            assert server.buffered_bytes == 0

    run(main)


def test_unread_is_returned_without_waiting(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = _pair()
        async with client, server:
            server.unread(b"ready")
            assert await server.recv(timeout=0) == b"ready"
            with pytest.raises(TimeoutError):
                await server.recv(timeout=0)

    run(main)


def test_unread_on_a_closed_stream_is_an_error(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = _pair()
        async with client:
            await server.aclose()
            with pytest.raises(sockit.ClosedResourceError):
                server.unread(b"late")
            assert server.take_buffered() == b""

    run(main)


def test_take_buffered_empties_the_transport_queue_too(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = _pair()
        async with client, server:
            await client.sendall(b"header\nbody bytes")
            await client.send_eof()
            assert await server.recv_line(timeout=PATIENCE) == b"header"
            server.unread(b"<")
            rest = server.take_buffered()
            assert server.buffered_bytes == 0
            while chunk := await server.recv(timeout=PATIENCE):
                rest += chunk
            assert rest == b"<body bytes"
            assert server.take_buffered() == b""

    run(main)


def test_take_buffered_hands_over_queued_chunks(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = _pair()
        async with client, server:
            await client.sendall(b"abcdef")
            await client.send_eof()
            assert await server.recv(1, timeout=PATIENCE) == b"a"
            rest = server.take_buffered()
            assert server.buffered_bytes == 0
            while chunk := await server.recv(timeout=PATIENCE):
                rest += chunk
            assert rest == b"bcdef"

    run(main)


def test_set_addresses_replaces_what_is_reported(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = _pair()
        async with client, server:
            real_local = server.local_address
            real_remote = server.remote_address
            peer = SocketAddress(socket.AF_INET, "192.0.2.7", 40000)
            origin = SocketAddress(socket.AF_INET6, "2001:db8::1", 443)
            server.set_addresses()
            assert (server.local_address, server.remote_address) == (real_local, real_remote)
            server.set_addresses(remote=peer)
            assert (server.local_address, server.remote_address) == (real_local, peer)
            server.set_addresses(local=origin)
            assert (server.local_address, server.remote_address) == (origin, peer)

    run(main)
