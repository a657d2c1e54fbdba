"""AsyncExecHandler: a real child per real connection on the event loop (uvloop and
asyncio), with the same guarantees as the blocking exec handler."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from sockit import aio
from sockit.serve.exec import AsyncExecHandler, async_exec_handler, async_sh_exec_handler

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from pathlib import Path
    from typing import Any

TIMEOUT = 10.0


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    kind: str = request.param
    monkeypatch.setenv("SOCKIT_LOOP", kind)
    return kind


def serve_one(
    handler: Callable[[aio.AsyncSocketStream], Awaitable[None]],
    client_side: Callable[[aio.AsyncSocketStream], Coroutine[Any, Any, None]],
) -> None:
    """Serve one connection with ``handler`` while ``client_side`` runs; the handler
    must return (not raise)."""

    async def main() -> None:
        listener = await aio.listen(0, "127.0.0.1")

        async def server() -> None:
            stream = await listener.accept(timeout=TIMEOUT)
            async with stream:
                await handler(stream)

        async with listener:
            task = asyncio.ensure_future(server())
            client = await aio.connect("127.0.0.1", listener.port, timeout=TIMEOUT)
            async with client:
                await client_side(client)
            await asyncio.wait_for(task, TIMEOUT)

    aio.run(main())


async def receive_all(stream: aio.AsyncSocketStream) -> bytes:
    out = bytearray()
    while chunk := await stream.recv(1 << 20, timeout=TIMEOUT):
        out += chunk
    return bytes(out)


def test_sha256_of_5_mib_after_a_half_close(loop_kind: str) -> None:
    data = os.urandom(5 << 20)

    async def client_side(client: aio.AsyncSocketStream) -> None:
        await client.sendall(data, timeout=TIMEOUT)
        await client.send_eof()
        assert await receive_all(client) == f"{hashlib.sha256(data).hexdigest()}  -\n".encode()

    serve_one(async_exec_handler(["sha256sum"]), client_side)


def test_cat_both_directions_at_once(loop_kind: str) -> None:
    data = os.urandom(4 << 20)

    async def client_side(client: aio.AsyncSocketStream) -> None:
        async def send() -> None:
            await client.sendall(data, timeout=TIMEOUT)
            await client.send_eof()

        sender = asyncio.ensure_future(send())
        assert await receive_all(client) == data
        await sender

    serve_one(async_exec_handler(["cat"]), client_side)


def test_environment_and_signals(loop_kind: str) -> None:
    script = (
        'echo "$SOCKIT_REMOTE_PORT $NCAT_PROTO"; '
        "grep -E '^Sig(Ign|Blk):' /proc/self/status; ls /proc/self/fd"
    )

    async def client_side(client: aio.AsyncSocketStream) -> None:
        lines = (await receive_all(client)).decode().split("\n")
        assert lines[0] == f"{client.local_address.port} TCP"
        assert lines[1].split() == ["SigBlk:", "0000000000000000"]
        assert lines[2].split() == ["SigIgn:", "0000000000000000"]
        # ls lists 0, 1, 2 and its own directory fd (3): nothing inherited.
        assert lines[3:-1] == ["0", "1", "2", "3"]

    serve_one(async_sh_exec_handler(script), client_side)


def test_child_closing_stdout_sends_eof_while_it_reads_on(loop_kind: str, tmp_path: Path) -> None:
    out = tmp_path / "rest"

    async def client_side(client: aio.AsyncSocketStream) -> None:
        assert await client.recv_line(timeout=TIMEOUT) == b"ready"
        assert await client.recv(timeout=TIMEOUT) == b""
        await client.sendall(b"after the child's EOF")
        await client.send_eof()

    serve_one(async_sh_exec_handler(f"echo ready; exec 1>&-; cat > {out}"), client_side)
    assert out.read_bytes() == b"after the child's EOF"


def test_child_exit_ends_the_connection_without_client_eof(loop_kind: str) -> None:
    async def client_side(client: aio.AsyncSocketStream) -> None:
        assert await receive_all(client) == b"hello\n"

    serve_one(async_exec_handler(["echo", "hello"]), client_side)


def test_aborted_stream_kills_the_child(loop_kind: str) -> None:
    async def main() -> None:
        listener = await aio.listen(0, "127.0.0.1")
        async with listener:
            client = await aio.connect("127.0.0.1", listener.port, timeout=TIMEOUT)
            async with client:
                stream = await listener.accept(timeout=TIMEOUT)
                async with stream:
                    handler = async_sh_exec_handler("echo up; exec sleep 60", kill_grace=1.0)
                    task = asyncio.ensure_future(handler(stream))
                    assert await client.recv_line(timeout=TIMEOUT) == b"up"
                    stream.abort()  # what an async server's shutdown does after its drain
                    await asyncio.wait_for(task, TIMEOUT)  # returns: the abort is not a bug
                with pytest.raises(ConnectionResetError):
                    await receive_all(client)

    aio.run(main())


def test_cancelled_handler_kills_the_child(loop_kind: str) -> None:
    async def main() -> None:
        listener = await aio.listen(0, "127.0.0.1")
        async with listener:
            client = await aio.connect("127.0.0.1", listener.port, timeout=TIMEOUT)
            async with client:
                stream = await listener.accept(timeout=TIMEOUT)
                async with stream:
                    handler = async_sh_exec_handler("echo up; exec sleep 60", kill_grace=1.0)
                    task = asyncio.ensure_future(handler(stream))
                    assert await client.recv_line(timeout=TIMEOUT) == b"up"
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await asyncio.wait_for(task, TIMEOUT)

    aio.run(main())
    # tests/conftest.py fails this test if the sleep child was not reaped.


def test_missing_program_closes_the_connection(loop_kind: str) -> None:
    async def client_side(client: aio.AsyncSocketStream) -> None:
        assert await receive_all(client) == b""

    serve_one(async_exec_handler(["/nonexistent/program"]), client_side)


def test_api() -> None:
    handler = async_exec_handler(["cat"], env={"A": "1"})
    assert isinstance(handler, AsyncExecHandler)
    assert handler.argv == ("cat",)
    assert "cat" in repr(handler)
    assert async_sh_exec_handler("true").argv == ("/bin/sh", "-c", "true")
    with pytest.raises(TypeError):
        async_sh_exec_handler(["true"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        async_exec_handler("cat")
