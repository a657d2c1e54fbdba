"""AsyncSocketStream beyond the conformance suite: resets, RST on abort, interrupted sends,
cancellation, buffer reuse, sendfile, backpressure and many connections on one loop.
Every test runs on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

import pytest

import sockit
from sockit import aio

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

StreamPair = tuple[aio.AsyncSocketStream, aio.AsyncSocketStream]


async def tcp_pair() -> StreamPair:
    async with await aio.listen(0, "127.0.0.1") as listener:
        client = await aio.connect("127.0.0.1", listener.port, timeout=10)
        try:
            server = await listener.accept(timeout=10)
        except BaseException:
            client.abort()
            raise
    return client, server


def test_recv_returns_empty_only_at_eof(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            await client.sendall(b"data")
            assert await server.recv_exactly(4, timeout=5) == b"data"
            with pytest.raises(TimeoutError):
                await server.recv(timeout=0.05)
            await client.send_eof()
            assert await server.recv(timeout=5) == b""
            assert await server.recv(timeout=5) == b""  # EOF repeats
            # The other direction still works after the peer's EOF.
            await server.sendall(b"reply")
            assert await client.recv_exactly(5, timeout=5) == b"reply"

    run(main)


def test_peer_reset_is_reported_as_reset_not_eof(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with server:
            await server.sendall(b"before the reset")
            # The client never read what was sent: abort() resets (SO_LINGER 0).
            client.abort()
            with pytest.raises(sockit.ConnectionResetByPeer) as caught:
                for _ in range(100):
                    await server.recv(timeout=5)
            assert isinstance(caught.value, ConnectionResetError)
            assert isinstance(caught.value.__cause__, OSError)
            # Never laundered into EOF: the next receive says the same.
            with pytest.raises(sockit.ConnectionResetByPeer):
                await server.recv(timeout=5)
            with pytest.raises(sockit.BrokenResourceError):
                await server.sendall(b"x", timeout=5)

    run(main)


def test_data_before_a_reset_is_delivered_first(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with server:
            await client.sendall(b"last words")
            # Wait until the bytes reached the server's queue, then reset.
            for _ in range(500):
                if server.buffered_bytes or server._protocol is None or server._protocol.queued:
                    break
                await asyncio.sleep(0.001)
            client.abort()
            assert await server.recv_exactly(10, timeout=5) == b"last words"
            with pytest.raises(sockit.ConnectionResetByPeer):
                await server.recv(timeout=5)

    run(main)


def test_abort_sends_rst_and_is_idempotent(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with server:
            server.abort()
            server.abort()
            assert server.closed
            with pytest.raises(sockit.ClosedResourceError):
                await server.recv()
            with pytest.raises(ConnectionResetError):
                await client.recv(timeout=5)
        await client.aclose()

    run(main)


def test_close_wakes_a_blocked_receiver(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        receiver = asyncio.create_task(server.recv(timeout=5))
        await asyncio.sleep(0)  # let it start waiting
        await server.aclose()
        with pytest.raises(sockit.ClosedResourceError):
            await receiver
        await client.aclose()

    run(main)


def test_cancelled_receive_loses_nothing(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            await client.sendall(b"par")
            receiver = asyncio.create_task(server.recv_exactly(6))
            for _ in range(1000):
                if server.buffered_bytes == 3:
                    break
                await asyncio.sleep(0.001)
            receiver.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receiver
            await client.sendall(b"tial")
            assert await server.recv_exactly(7, timeout=5) == b"partial"

    run(main)


def test_concurrent_receives_are_refused(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            first = asyncio.create_task(server.recv(timeout=5))
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="already receiving"):
                await server.recv(timeout=5)
            await client.sendall(b"x")
            assert await first == b"x"

    run(main)


def test_one_task_receives_while_another_sends(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            data = os.urandom(3 << 20)

            async def echo() -> None:
                while chunk := await server.recv(65536, timeout=10):
                    await server.sendall(chunk, timeout=10)
                await server.send_eof()

            echoer = asyncio.create_task(echo())
            reader = asyncio.create_task(client.recv_exactly(len(data), timeout=10))
            await client.sendall(data, timeout=10)
            await client.send_eof()
            assert await reader == data
            await echoer
            assert await client.recv(timeout=5) == b""

    run(main)


def test_mutable_buffer_may_be_reused_after_sendall(run: Callable[..., Any]) -> None:
    async def main() -> None:
        first, second = socket.socketpair()
        # A tiny send buffer and a peer that does not read yet: most of what sendall
        # hands over stays queued in the transport after sendall returned.
        first.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a, b = aio.AsyncSocketStream(first), aio.AsyncSocketStream(second)
        async with a, b:
            buffer = bytearray(b"A" * 40_000)
            await a.sendall(buffer, timeout=5)
            assert a._protocol is not None
            assert a._protocol.transport is not None
            assert a._protocol.transport.get_write_buffer_size() > 0, "test needs queued data"
            buffer[:] = b"B" * len(buffer)  # the caller reuses its buffer at once
            view = memoryview(bytearray(b"C" * 1000))
            await a.sendall(view, timeout=5)
            view[:] = b"D" * 1000
            received = await b.recv_exactly(41_000, timeout=5)
            assert received == b"A" * 40_000 + b"C" * 1000

    run(main)


def test_sendall_accepts_non_byte_formats(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            numbers = memoryview(struct.pack("=4i", 1, 2, 3, 4)).cast("i")
            await client.sendall(numbers, timeout=5)
            assert await server.recv_exactly(16, timeout=5) == struct.pack("=4i", 1, 2, 3, 4)

    run(main)


def test_sendall_timeout_then_aclose_resets(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with server:
            with pytest.raises(TimeoutError):
                await client.sendall(bytes(32 << 20), timeout=0.05)
            await client.aclose()
            # The peer must not take a cut-off stream for a complete one.
            with pytest.raises(sockit.ConnectionResetByPeer):
                for _ in range(10_000):
                    if not await server.recv(1 << 20, timeout=5):
                        pytest.fail("a cut-off stream ended with a clean EOF")

    run(main)


def test_send_eof_is_idempotent_and_forbids_sending(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            await client.send_eof()
            await client.send_eof()
            with pytest.raises(sockit.ClosedResourceError):
                await client.sendall(b"x")
            assert await server.recv(timeout=5) == b""

    run(main)


def test_send_eof_after_a_reset_does_not_raise(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with server:
            client.abort()
            with pytest.raises(sockit.ConnectionResetByPeer):
                await server.recv(timeout=5)
            await server.send_eof()

    run(main)


def test_addresses_survive_the_peer(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with server:
            assert server.remote_address == client.local_address
            assert client.remote_address == server.local_address
            assert client.remote_address.host == "127.0.0.1"
            assert "AsyncSocketStream 127.0.0.1:" in repr(client)
            client.abort()
            with pytest.raises(ConnectionResetError):
                await server.recv(timeout=5)
            assert server.remote_address.host == "127.0.0.1"
        assert repr(client) == "<AsyncSocketStream closed>"
        # Remembered addresses stay available after close.
        assert client.local_address == server.remote_address

    run(main)


def test_sendfile(run: Callable[..., Any], tmp_path: Path) -> None:
    data = os.urandom(700_000)
    path = tmp_path / "file.bin"
    path.write_bytes(data)

    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            with path.open("rb") as file:
                sent = await client.sendfile(file, 1000, 500_000, timeout=10)
                assert sent == 500_000
                assert file.tell() == 501_000
                assert await server.recv_exactly(sent, timeout=10) == data[1000:501_000]
                rest = await client.sendfile(file, 600_000, timeout=10)
                assert rest == len(data) - 600_000
                assert await server.recv_exactly(rest, timeout=10) == data[600_000:]

    run(main)


def test_wrapping_a_socketpair_and_rejecting_datagram_sockets(run: Callable[..., Any]) -> None:
    async def main() -> None:
        first, second = socket.socketpair()
        a, b = aio.AsyncSocketStream(first), aio.AsyncSocketStream(second, timeout=5)
        async with a, b:
            # Two tasks use each unattached stream at once: each is attached once.
            reader = asyncio.create_task(b.recv_exactly(2))
            writer = asyncio.create_task(b.sendall(b"back"))
            await a.sendall(b"hi")
            assert await reader == b"hi"
            await writer
            assert await a.recv_exactly(4) == b"back"
            assert a.remote_address.family == socket.AF_UNIX
        datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                aio.AsyncSocketStream(datagram)
        finally:
            datagram.close()

    run(main)


def test_closing_an_unattached_stream_closes_the_socket(run: Callable[..., Any]) -> None:
    async def main() -> None:
        first, second = socket.socketpair()
        a, b = aio.AsyncSocketStream(first), aio.AsyncSocketStream(second)
        await a.aclose()
        assert first.fileno() == -1
        assert await b.recv(timeout=5) == b""
        b.abort()  # attached: the loop releases the socket on its next iterations
        for _ in range(10):
            if second.fileno() == -1:
                break
            await asyncio.sleep(0)
        assert second.fileno() == -1

    run(main)


def test_bad_arguments(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            with pytest.raises(ValueError, match="max_bytes"):
                await client.recv(0)
            with pytest.raises(ValueError, match="timeout"):
                await client.recv(timeout=-1)
            with pytest.raises(ValueError, match="n must be"):
                await client.recv_exactly(-1)
        first, second = socket.socketpair()
        try:
            with pytest.raises(ValueError, match="timeout"):
                aio.AsyncSocketStream(first, timeout=float("nan"))
        finally:
            first.close()
            second.close()

    run(main)


# --- backpressure -------------------------------------------------------------------


def test_a_reader_that_does_not_read_holds_bounded_memory(run: Callable[..., Any]) -> None:
    total = 64 << 20
    chunk = bytes(1 << 20)

    async def main() -> None:
        client, server = await tcp_pair()
        async with client, server:
            sent = 0
            # The server reads nothing: the client's sends must stall once the kernel's
            # buffers and the server's queue are full, long before 64 MiB.
            while sent < total:
                try:
                    await client.sendall(chunk, timeout=0.5)
                except TimeoutError:
                    break
                sent += len(chunk)
            assert sent < total, "the sender never felt backpressure"
            # Let the loop deliver whatever the kernel still holds to the server.
            for _ in range(20):
                await asyncio.sleep(0.01)
            limit = aio.RECEIVE_BUFFER_LIMIT + 256 * 1024  # plus one transport read
            assert 0 < server.buffered_bytes <= limit
            assert server._protocol is not None
            assert server._protocol.reading_paused
            # Draining resumes reading: everything the client sent arrives, in order.
            received = 0
            while received < sent:
                piece = await server.recv(1 << 20, timeout=5)
                assert not piece.strip(b"\0")
                received += len(piece)
                assert server.buffered_bytes <= limit

    run(main)


# --- many connections on one loop ---------------------------------------------------


def test_two_hundred_connections_echo_a_mebibyte_each(run: Callable[..., Any]) -> None:
    connections = 200
    size = 1 << 20

    async def main() -> None:
        async with await aio.listen(0, "127.0.0.1") as listener:

            async def serve_one(stream: aio.AsyncSocketStream) -> None:
                async with stream:
                    while chunk := await stream.recv(65536, timeout=30):
                        await stream.sendall(chunk, timeout=30)

            async def accept_all() -> None:
                async with asyncio.TaskGroup() as group:
                    for _ in range(connections):
                        group.create_task(serve_one(await listener.accept(timeout=30)))

            async def client(index: int) -> None:
                payload = hashlib.sha256(b"%d" % index).digest() * (size // 32)
                async with await aio.connect("127.0.0.1", listener.port, timeout=30) as stream:

                    async def send() -> None:
                        await stream.sendall(payload, timeout=30)
                        await stream.send_eof()

                    async with asyncio.TaskGroup() as group:
                        group.create_task(send())
                        received = group.create_task(stream.recv_exactly(size, timeout=30))
                    assert received.result() == payload
                    assert await stream.recv(timeout=30) == b""

            async with asyncio.TaskGroup() as group:
                group.create_task(accept_all())
                for index in range(connections):
                    group.create_task(client(index))

    run(main)


def test_econnreset_errno_is_kept(run: Callable[..., Any]) -> None:
    async def main() -> None:
        client, server = await tcp_pair()
        async with server:
            client.abort()
            with pytest.raises(sockit.ConnectionResetByPeer) as caught:
                await server.recv(timeout=5)
            assert caught.value.errno == errno.ECONNRESET

    run(main)
