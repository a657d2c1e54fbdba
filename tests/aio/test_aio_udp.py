"""AsyncUDPSocket over real loopback sockets: zero-length datagrams, truncation, size
limits, timeouts, ICMP errors, dual stack, concurrent receivers and close. Every test
runs on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from typing import TYPE_CHECKING, Any

import pytest

from sockit import aio
from sockit.addr import SocketAddress, format_host_port
from sockit.errors import (
    AddressError,
    ClosedResourceError,
    ConnectError,
    DatagramTooLarge,
    DatagramTruncated,
    ResolutionError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

PATIENCE = 5.0


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback")

LOOPBACKS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6", marks=needs_ipv6),
]


@pytest.fixture(params=LOOPBACKS)
def loopback(request: pytest.FixtureRequest) -> str:
    host: str = request.param
    return host


def _closed_port(host: str) -> int:
    """A UDP port on ``host`` where nothing is bound (it was, a moment ago)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


class Sockets:
    """Opens AsyncUDPSockets that are all closed when the test's block ends."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self._stack = stack

    async def __call__(self, *args: Any, **kwargs: Any) -> aio.AsyncUDPSocket:
        sock = await aio.open_udp(*args, **kwargs)
        return await self._stack.enter_async_context(sock)


@contextlib.asynccontextmanager
async def udp_sockets() -> AsyncIterator[Sockets]:
    async with contextlib.AsyncExitStack() as stack:
        yield Sockets(stack)


def test_round_trip_reports_the_sender(run: Callable[..., Any], loopback: str) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets(loopback)
            client = await sockets(loopback)
            await client.sendto(b"ping", server.local_address)
            data, sender = await server.recvfrom(timeout=PATIENCE)
            assert (data, sender) == (b"ping", client.local_address)
            await server.sendto(b"pong", sender)
            assert await client.recvfrom(timeout=PATIENCE) == (b"pong", server.local_address)
            # A (host, port) tuple works as well as a SocketAddress.
            port = server.local_address.port
            await client.sendto(bytearray(b"tuple"), (loopback, port))
            assert (await server.recvfrom(timeout=PATIENCE))[0] == b"tuple"

    run(main)


def test_zero_length_datagram_is_data(run: Callable[..., Any], loopback: str) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets(loopback)
            client = await sockets(loopback)
            await client.sendto(b"", server.local_address)
            await client.sendto(b"after", server.local_address)
            assert await server.recvfrom(timeout=PATIENCE) == (b"", client.local_address)
            assert await server.recvfrom(timeout=PATIENCE) == (b"after", client.local_address)
            with pytest.raises(TimeoutError):
                await server.recvfrom(timeout=0.02)

    run(main)


def test_message_boundaries_are_kept(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets("127.0.0.1")
            client = await sockets("127.0.0.1")
            for size in (1, 2, 1000, 3):
                await client.sendto(b"m" * size, server.local_address)
            for size in (1, 2, 1000, 3):
                assert (await server.recvfrom(timeout=PATIENCE))[0] == b"m" * size

    run(main)


def test_truncated_datagram_raises_with_real_size(run: Callable[..., Any], loopback: str) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets(loopback)
            client = await sockets(loopback)
            payload = (bytes(range(256)) * 8)[:2000]
            await client.sendto(payload, server.local_address)
            await client.sendto(b"next", server.local_address)
            with pytest.raises(DatagramTruncated) as caught:
                await server.recvfrom(max_bytes=100, timeout=PATIENCE)
            assert caught.value.size == 2000
            assert caught.value.data == payload[:100]
            assert caught.value.address == client.local_address
            # The truncated datagram is consumed; the next one arrives whole.
            assert await server.recvfrom(100, timeout=PATIENCE) == (b"next", client.local_address)
            await client.sendto(b"x" * 100, server.local_address)
            assert (await server.recvfrom(100, timeout=PATIENCE))[0] == b"x" * 100

    run(main)


def test_max_bytes_larger_than_the_default_buffer(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets("127.0.0.1")
            client = await sockets("127.0.0.1")
            await client.sendto(b"small", server.local_address)
            await client.sendto(b"z" * 3000, server.local_address)
            assert (await server.recvfrom(200_000, timeout=PATIENCE))[0] == b"small"
            with pytest.raises(DatagramTruncated) as caught:
                await server.recvfrom(1000, timeout=PATIENCE)
            assert caught.value.size == 3000
            with pytest.raises(ValueError, match="max_bytes"):
                await server.recvfrom(-1)

    run(main)


def test_largest_ipv4_datagram_and_one_byte_more(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets("127.0.0.1")
            client = await sockets("127.0.0.1")
            payload = bytes(range(256)) * 255 + b"t" * (aio.IPV4_MAX_DATAGRAM - 255 * 256)
            assert len(payload) == 65507
            await client.sendto(payload, server.local_address)
            assert await server.recvfrom(timeout=PATIENCE) == (payload, client.local_address)
            with pytest.raises(DatagramTooLarge) as caught:
                await client.sendto(b"x" * 65508, server.local_address)
            assert (caught.value.size, caught.value.limit) == (65508, 65507)
            assert caught.value.errno == errno.EMSGSIZE
            # Nothing was sent: the next datagram is the first one the server sees.
            await client.sendto(b"marker", server.local_address)
            assert (await server.recvfrom(timeout=PATIENCE))[0] == b"marker"

    run(main)


@needs_ipv6
def test_ipv6_limit_is_65527(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets("::1")
            client = await sockets("::1")
            payload = b"6" * aio.IPV6_MAX_DATAGRAM
            await client.sendto(payload, server.local_address)
            assert (await server.recvfrom(timeout=PATIENCE))[0] == payload
            with pytest.raises(DatagramTooLarge) as caught:
                await client.sendto(payload + b"!", server.local_address)
            assert (caught.value.size, caught.value.limit) == (65528, 65527)

    run(main)


@needs_ipv6
def test_ipv4_destination_on_a_dual_stack_socket_has_the_ipv4_limit(
    run: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            dual = await sockets()
            server = await sockets("127.0.0.1")
            with pytest.raises(DatagramTooLarge) as caught:
                await dual.sendto(b"x" * 65508, server.local_address)
            assert caught.value.limit == 65507
            await dual.sendto(b"via v4", server.local_address)
            data, sender = await server.recvfrom(timeout=PATIENCE)
            assert data == b"via v4"
            # The dual-stack socket sees the IPv4 peer as IPv4, not ::ffff:127.0.0.1.
            await server.sendto(b"back", sender)
            data, peer = await dual.recvfrom(timeout=PATIENCE)
            assert (data, peer) == (b"back", server.local_address)
            assert peer.family == socket.AF_INET

    run(main)


def test_connected_socket_checks_the_limit_and_filters(
    run: Callable[..., Any], loopback: str
) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets(loopback)
            stranger = await sockets(loopback)
            client = await sockets(remote=format_host_port(loopback, server.local_address.port))
            assert client.remote_address == server.local_address
            assert server.remote_address is None
            limit = 65507 if loopback == "127.0.0.1" else 65527
            with pytest.raises(DatagramTooLarge) as caught:
                await client.send(b"x" * (limit + 1))
            assert caught.value.limit == limit
            # The kernel only delivers datagrams from the peer to a connected socket.
            await stranger.sendto(b"not for you", client.local_address)
            await server.sendto(b"for you", client.local_address)
            assert await client.recvfrom(timeout=PATIENCE) == (b"for you", server.local_address)
            await client.send(b"y" * 50)
            assert (await server.recvfrom(timeout=PATIENCE))[0] == b"y" * 50
            await server.sendto(b"z" * 50, client.local_address)
            with pytest.raises(DatagramTruncated) as truncated:
                await client.recv(10, timeout=PATIENCE)
            assert (truncated.value.size, truncated.value.data) == (50, b"z" * 10)

    run(main)


def test_connected_socket_reports_icmp_port_unreachable(
    run: Callable[..., Any], loopback: str
) -> None:
    port = _closed_port(loopback)

    async def main() -> None:
        async with udp_sockets() as sockets:
            client = await sockets(remote=(loopback, port))
            await client.send(b"anyone there?")
            with pytest.raises(ConnectionRefusedError):
                await client.recv(timeout=PATIENCE)
            # Reported once; the socket is alive and keeps working.
            with pytest.raises(TimeoutError):
                await client.recv(timeout=0.01)
            await client.send(b"again")
            with pytest.raises(ConnectionRefusedError):
                await client.recv(timeout=PATIENCE)

    run(main)


def test_send_on_an_unconnected_socket_is_refused(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            sock = await sockets("127.0.0.1")
            with pytest.raises(OSError) as caught:
                await sock.send(b"where to?")
            assert caught.value.errno == errno.EDESTADDRREQ

    run(main)


def test_timeouts_raise_and_lose_nothing(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets("127.0.0.1")
            client = await sockets("127.0.0.1")
            with pytest.raises(TimeoutError):
                await server.recvfrom(timeout=0.05)
            with pytest.raises(TimeoutError):
                await server.recvfrom(timeout=0)
            server.timeout = 0.05
            with pytest.raises(TimeoutError):
                await server.recv()
            await client.sendto(b"kept", server.local_address)
            assert (await server.recvfrom(timeout=PATIENCE))[0] == b"kept"
            with pytest.raises(ValueError, match="timeout"):
                await server.recvfrom(timeout=-1)

    run(main)


def test_a_waiting_receiver_gets_a_datagram_sent_later(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets("127.0.0.1")
            client = await sockets("127.0.0.1")
            receivers = [asyncio.create_task(server.recvfrom(timeout=PATIENCE)) for _ in range(3)]
            await asyncio.sleep(0)  # all three wait on the one socket
            for index in range(3):
                await client.sendto(b"%d" % index, server.local_address)
            received = sorted([(await task)[0] for task in receivers])
            assert received == [b"0", b"1", b"2"]

    run(main)


def test_close_wakes_a_blocked_receiver_and_is_idempotent(run: Callable[..., Any]) -> None:
    async def main() -> None:
        sock = await aio.open_udp("127.0.0.1")
        receiver = asyncio.create_task(sock.recvfrom(timeout=PATIENCE))
        await asyncio.sleep(0)
        await sock.aclose()
        with pytest.raises(ClosedResourceError):
            await receiver
        await sock.aclose()
        assert sock.closed
        assert sock.fileno() == -1
        with pytest.raises(ClosedResourceError):
            await sock.recvfrom()
        with pytest.raises(ClosedResourceError):
            await sock.sendto(b"x", ("127.0.0.1", 9))
        assert "closed" in repr(sock)

    run(main)


@needs_ipv6
def test_default_socket_is_dual_stack_and_families_can_be_chosen(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            dual = await sockets()
            assert dual.local_address.family == socket.AF_INET6
            assert dual.local_address.host == "::"
            v4 = await sockets(family=socket.AF_INET)
            assert v4.local_address.host == "0.0.0.0"
            v6 = await sockets(family=socket.AF_INET6)
            assert v6.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            with pytest.raises(AddressError):
                await v6.sendto(b"x", SocketAddress(socket.AF_INET, "127.0.0.1", 9))
            with pytest.raises(ValueError, match="family"):
                await aio.open_udp(family=socket.AF_UNIX)

    run(main)


def test_remote_with_a_chosen_local_port(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            server = await sockets("127.0.0.1")
            port = _closed_port("127.0.0.1")
            client = await sockets(
                "127.0.0.1", port, remote=("127.0.0.1", server.local_address.port)
            )
            assert client.local_address == SocketAddress(socket.AF_INET, "127.0.0.1", port)
            await client.send(b"from a chosen port")
            assert await server.recvfrom(timeout=PATIENCE) == (
                b"from a chosen port",
                client.local_address,
            )

    run(main)


def test_reuse_port_lets_two_sockets_share_a_port(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with udp_sockets() as sockets:
            first = await sockets("127.0.0.1", reuse_port=True)
            second = await sockets("127.0.0.1", first.local_address.port, reuse_port=True)
            assert first.local_address == second.local_address
            with pytest.raises(OSError) as caught:
                await aio.open_udp("127.0.0.1", first.local_address.port)
            assert caught.value.errno == errno.EADDRINUSE

    run(main)


def test_input_is_checked_before_any_lookup(run: Callable[..., Any]) -> None:
    async def main() -> None:
        for port in (65536, -1, "99999"):
            with pytest.raises(AddressError):
                await aio.open_udp("127.0.0.1", port)
        with pytest.raises(AddressError):
            await aio.open_udp(remote="010.1.1.1:53")
        with pytest.raises(AddressError):
            await aio.open_udp(remote="unix:/tmp/x")
        with pytest.raises(ResolutionError):
            await aio.open_udp(remote=("name.invalid", 53))
        with pytest.raises(TypeError):
            await aio.open_udp(remote=("127.0.0.1",))  # type: ignore[arg-type]
        async with udp_sockets() as sockets:
            sock = await sockets("127.0.0.1")
            with pytest.raises(TypeError):
                await sock.sendto(b"x", "127.0.0.1:9")
            with pytest.raises(AddressError):
                await sock.sendto(b"x", ("127.0.0.1", 70000))

    run(main)


def test_connect_error_names_every_attempt(run: Callable[..., Any]) -> None:
    async def main() -> None:
        # A local IPv4 address cannot reach an IPv6 peer: the one attempt fails.
        with pytest.raises(ConnectError) as caught:
            await aio.open_udp("127.0.0.1", remote=("::1", 9))
        assert not isinstance(caught.value, ConnectionRefusedError)
        assert [attempt.address for attempt in caught.value.attempts] == ["[::1]:9"]
        assert caught.value.attempts[0].error.errno == errno.EAFNOSUPPORT
        assert "[::1]:9" in str(caught.value)

    run(main)


def test_wrapping_an_existing_socket(run: Callable[..., Any]) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))

    async def main() -> None:
        async with aio.AsyncUDPSocket(raw, timeout=1) as sock:
            assert sock.socket is raw
            assert sock.timeout == 1
            assert sock.local_address.host == "127.0.0.1"
            assert sock.remote_address is None
        assert raw.fileno() == -1

    run(main)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream_socket:
        with pytest.raises(ValueError, match="SOCK_DGRAM"):
            aio.AsyncUDPSocket(stream_socket)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix_socket:
        with pytest.raises(ValueError, match="AF_INET"):
            aio.AsyncUDPSocket(unix_socket)
