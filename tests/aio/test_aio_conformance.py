"""The async conformance suite on every aio stream, on asyncio and on uvloop.

TCP over IPv4 and IPv6, UNIX sockets and a wrapped socketpair must all keep the
:mod:`sockit.abc` contracts; the negative runs prove the async suite notices a broken
contract (a suite that passes everything would be a test that cannot fail).
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING, Any

import pytest

from sockit import aio
from sockit.testing.aio_conformance import (
    check_async_half_closeable_stream,
    check_async_stream,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

StreamPair = tuple[aio.AsyncSocketStream, aio.AsyncSocketStream]


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback")


async def _tcp_pair(host: str) -> StreamPair:
    async with await aio.listen(0, host) as listener:
        client = await aio.connect(host, listener.port, timeout=10)
        try:
            server = await listener.accept(timeout=10)
        except BaseException:
            client.abort()
            raise
    return client, server


async def _ipv4_pair() -> StreamPair:
    return await _tcp_pair("127.0.0.1")


async def _ipv6_pair() -> StreamPair:
    return await _tcp_pair("::1")


async def _socketpair_streams() -> StreamPair:
    first, second = socket.socketpair()
    return aio.AsyncSocketStream(first), aio.AsyncSocketStream(second)


def _unix_pair_maker(directory: Path) -> Callable[[], Awaitable[StreamPair]]:
    counter = iter(range(1_000_000))

    async def make() -> StreamPair:
        path = str(directory / f"s{next(counter)}.sock")
        async with await aio.listen_unix(path) as listener:
            client = await aio.connect_unix(path, timeout=10)
            try:
                server = await listener.accept(timeout=10)
            except BaseException:
                client.abort()
                raise
        return client, server

    return make


def test_tcp_ipv4(run: Callable[..., Any]) -> None:
    run(check_async_half_closeable_stream, _ipv4_pair)


@needs_ipv6
def test_tcp_ipv6(run: Callable[..., Any]) -> None:
    run(check_async_half_closeable_stream, _ipv6_pair)


def test_unix(run: Callable[..., Any], tmp_path: Path) -> None:
    run(check_async_half_closeable_stream, _unix_pair_maker(tmp_path))


def test_socketpair_wrapped(run: Callable[..., Any]) -> None:
    run(check_async_half_closeable_stream, _socketpair_streams)


# --- the suite catches broken streams -----------------------------------------------


class _LaunderingTimeouts(aio.AsyncSocketStream):
    """Broken on purpose: a receive that times out returns b"" (looks like EOF)."""

    __slots__ = ()

    async def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        try:
            return await super().recv(max_bytes, timeout=timeout)
        except TimeoutError:
            return b""


class _DroppingBufferOnTimeout(aio.AsyncSocketStream):
    """Broken on purpose: a timed-out recv_exactly forgets what it had received."""

    __slots__ = ()

    async def recv_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        try:
            return await super().recv_exactly(n, timeout=timeout)
        except TimeoutError:
            self._buffer.take_all()
            raise


async def _broken_pair(kind: type[aio.AsyncSocketStream]) -> StreamPair:
    first, second = socket.socketpair()
    return kind(first), kind(second)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (_LaunderingTimeouts, "expected TimeoutError"),
        (_DroppingBufferOnTimeout, "recv_exactly(5) after a timeout"),
    ],
)
def test_suite_catches_broken_streams(
    run: Callable[..., Any], kind: type[aio.AsyncSocketStream], expected: str
) -> None:
    async def make() -> StreamPair:
        return await _broken_pair(kind)

    with pytest.raises(AssertionError, match=re.escape(expected)):
        run(check_async_stream, make)
