"""The built-in services as async stream handlers, over real TCP on uvloop and asyncio.

Each test accepts one connection with ``sockit.aio.listen`` and awaits the handler on
it while an async client checks what arrives: the same behaviour as the blocking forms.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING

import pytest

from sockit import aio
from sockit.serve import services
from sockit.serve.services import chargen_pattern

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from typing import Any

    from sockit.abc import AsyncHalfCloseableStream

TIMEOUT = 10.0


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    kind: str = request.param
    monkeypatch.setenv("SOCKIT_LOOP", kind)
    return kind


async def with_served_connection(
    handler: Callable[[AsyncHalfCloseableStream], Awaitable[None]],
    client_side: Callable[[aio.AsyncSocketStream], Coroutine[Any, Any, None]],
) -> BaseException | None:
    """Serve one connection with ``handler`` while ``client_side`` runs; return the
    handler's exception (None if it returned)."""
    listener = await aio.listen(0, "127.0.0.1")
    outcome: list[BaseException | None] = []

    async def server() -> None:
        try:
            stream = await listener.accept(timeout=TIMEOUT)
            async with stream:
                await handler(stream)
            outcome.append(None)
        except Exception as error:
            outcome.append(error)

    async with listener:
        task = asyncio.ensure_future(server())
        client = await aio.connect("127.0.0.1", listener.port, timeout=TIMEOUT)
        async with client:
            await client_side(client)
        await asyncio.wait_for(task, TIMEOUT)
    return outcome[0]


async def receive_all(stream: aio.AsyncSocketStream) -> bytes:
    out = bytearray()
    while chunk := await stream.recv(1 << 20, timeout=TIMEOUT):
        out += chunk
    return bytes(out)


def test_async_echo_returns_everything_then_eof(loop_kind: str) -> None:
    data = os.urandom(3 << 20)
    received: list[bytes] = []

    async def client_side(client: aio.AsyncSocketStream) -> None:
        async def send() -> None:
            await client.sendall(data, timeout=TIMEOUT)
            await client.send_eof()

        sender = asyncio.ensure_future(send())
        received.append(await receive_all(client))
        await sender

    assert aio.run(with_served_connection(services.async_echo, client_side)) is None
    assert received == [data]


def test_async_echo_ends_quietly_on_a_reset(loop_kind: str) -> None:
    async def client_side(client: aio.AsyncSocketStream) -> None:
        await client.sendall(b"ping")
        assert await client.recv_exactly(4, timeout=TIMEOUT) == b"ping"
        await client.sendall(b"more")
        client.abort()

    assert aio.run(with_served_connection(services.async_echo, client_side)) is None


def test_async_discard(loop_kind: str) -> None:
    async def client_side(client: aio.AsyncSocketStream) -> None:
        await client.sendall(os.urandom(1 << 20), timeout=TIMEOUT)
        await client.send_eof()
        assert await client.recv(timeout=TIMEOUT) == b""

    assert aio.run(with_served_connection(services.async_discard, client_side)) is None


def test_async_chargen_streams_the_pattern(loop_kind: str) -> None:
    size = 300_000

    async def client_side(client: aio.AsyncSocketStream) -> None:
        received = await client.recv_exactly(size, timeout=TIMEOUT)
        period = chargen_pattern()
        assert received == (period * (size // len(period) + 1))[:size]

    assert aio.run(with_served_connection(services.async_chargen, client_side)) is None


def test_async_daytime_one_line_then_eof(loop_kind: str) -> None:
    async def client_side(client: aio.AsyncSocketStream) -> None:
        reply = await receive_all(client)
        assert re.fullmatch(rb"\w+day, \w+ \d{1,2}, \d{4} \d\d:\d\d:\d\d-\S+\r\n", reply)

    assert aio.run(with_served_connection(services.async_daytime, client_side)) is None
