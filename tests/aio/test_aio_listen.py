"""aio.listen() / aio.listen_unix() and AsyncSocketListener: dual stack on one port, real
addresses, fair accept over several sockets, accept-error policy, wrapping existing
sockets, UNIX file rules. Every test runs on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import sockit
from sockit import aio

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")


@needs_ipv6
def test_no_host_listens_on_both_families_on_one_port(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0) as listener:
            addresses = listener.addresses
            assert {address.family for address in addresses} == {socket.AF_INET, socket.AF_INET6}
            assert {address.port for address in addresses} == {listener.port}
            assert listener.port != 0
            assert {address.host for address in addresses} == {"0.0.0.0", "::"}

    run(main)


@needs_ipv6
def test_ipv4_client_appears_as_ipv4_and_ipv6_as_ipv6(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0) as listener:
            async with await aio.connect("127.0.0.1", listener.port) as client4:
                async with await listener.accept(timeout=5) as server4:
                    assert server4.remote_address.family == socket.AF_INET
                    assert server4.remote_address == client4.local_address
                    assert str(server4.local_address) == f"127.0.0.1:{listener.port}"
            async with await aio.connect("::1", listener.port) as client6:
                async with await listener.accept(timeout=5) as server6:
                    assert server6.remote_address.family == socket.AF_INET6
                    assert server6.remote_address == client6.local_address

    run(main)


@needs_ipv6
def test_accept_serves_both_sockets_fairly(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0) as listener:
            clients = []
            try:
                # Both families have connections waiting at once: accept must alternate
                # instead of draining one socket first.
                clients.extend(
                    [
                        await aio.connect(host, listener.port, timeout=5)
                        for host in ("127.0.0.1", "127.0.0.1", "::1", "::1")
                    ]
                )
                families = []
                for _ in range(4):
                    async with await listener.accept(timeout=5) as accepted:
                        families.append(accepted.remote_address.family)
                assert families[0] != families[1]
                assert families[2] != families[3]
            finally:
                for client in clients:
                    await client.aclose()

    run(main)


def test_listen_on_host_reports_the_real_port(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0, "127.0.0.1") as listener:
            (address,) = listener.addresses
            assert address.host == "127.0.0.1"
            assert address.port == listener.port > 0
            assert repr(listener) == f"<AsyncSocketListener 127.0.0.1:{listener.port}>"
        assert repr(listener) == "<AsyncSocketListener closed>"

    run(main)


def test_port_in_use_names_the_address(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0, "127.0.0.1") as first:
            with pytest.raises(OSError) as caught:
                await aio.listen(first.port, "127.0.0.1")
            assert caught.value.errno == errno.EADDRINUSE
            assert f"127.0.0.1:{first.port}" in str(caught.value)

    run(main)


def test_bad_port_is_rejected_before_any_lookup(run: Callable[..., Any]) -> None:
    async def main() -> None:
        for port in (65536, -1, "99999", "nope-not-a-service"):
            with pytest.raises(sockit.AddressError):
                await aio.listen(port)

    run(main)


def test_default_backlog_is_not_five(run: Callable[..., Any]) -> None:
    async def main() -> None:
        # 600 connects without accepting: a backlog of 5 would drop SYNs and stall them.
        async with await aio.listen(0, "127.0.0.1") as listener:
            clients = []
            try:
                clients.extend(
                    [await aio.connect("127.0.0.1", listener.port, timeout=5) for _ in range(600)]
                )
            finally:
                for client in clients:
                    client.abort()

    run(main)


def test_accept_timeout_and_close(run: Callable[..., Any]) -> None:
    async def main() -> None:
        listener = await aio.listen(0, "127.0.0.1")
        with pytest.raises(TimeoutError):
            await listener.accept(timeout=0.05)
        with pytest.raises(TimeoutError):
            await listener.accept(timeout=0)
        listener.timeout = 0.05
        with pytest.raises(TimeoutError):
            await listener.accept()
        await listener.aclose()
        await listener.aclose()  # idempotent
        assert listener.closed
        with pytest.raises(sockit.ClosedResourceError):
            await listener.accept(timeout=0.05)

    run(main)


def test_closing_wakes_every_waiting_accept(run: Callable[..., Any]) -> None:
    async def main() -> None:
        listener = await aio.listen(0, "127.0.0.1")
        waiting = [asyncio.create_task(listener.accept(timeout=5)) for _ in range(3)]
        await asyncio.sleep(0)  # let them all start waiting
        await listener.aclose()
        for task in waiting:
            with pytest.raises(sockit.ClosedResourceError):
                await task

    run(main)


def test_many_concurrent_accepts(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0, "127.0.0.1") as listener:

            async def serve_one() -> bytes:
                async with await listener.accept(timeout=5) as stream:
                    return await stream.recv_line(timeout=5)

            servers = [asyncio.create_task(serve_one()) for _ in range(20)]

            async def client(index: int) -> None:
                async with await aio.connect("127.0.0.1", listener.port, timeout=5) as stream:
                    await stream.sendall(b"%d\n" % index)

            await asyncio.gather(*(client(index) for index in range(20)))
            received = await asyncio.gather(*servers)
            assert sorted(received, key=int) == [b"%d" % index for index in range(20)]

    run(main)


def test_accepted_and_connected_streams_have_nodelay(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0, "127.0.0.1") as listener:
            async with await aio.connect("127.0.0.1", listener.port) as client:
                async with await listener.accept(timeout=5) as server:
                    for stream in (client, server):
                        option = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                        assert option

    run(main)


def test_wrapping_already_listening_sockets(run: Callable[..., Any]) -> None:
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    raw.listen()
    port = raw.getsockname()[1]

    async def main() -> None:
        async with aio.AsyncSocketListener([raw], timeout=5) as listener:
            assert listener.port == port
            assert listener.fileno() == raw.fileno()
            assert listener.sockets == [raw]
            async with await aio.connect("127.0.0.1", port) as client:
                async with await listener.accept() as server:
                    await client.sendall(b"activated")
                    assert await server.recv_exactly(9, timeout=5) == b"activated"
        assert raw.fileno() == -1  # the listener owned it

    run(main)


def test_wrapping_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="at least one"):
        aio.AsyncSocketListener([])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            aio.AsyncSocketListener([datagram])


class _FlakySocket(socket.socket):
    """A real listening socket whose accept fails with scripted errnos first."""

    errors: list[int]

    def accept(self) -> tuple[socket.socket, Any]:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, os.strerror(code))
        return super().accept()


def _flaky_listener(errors: list[int]) -> _FlakySocket:
    sock = _FlakySocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.errors = errors
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_transient_accept_errors_are_retried(run: Callable[..., Any]) -> None:
    errors = [errno.ECONNABORTED, errno.EPROTO, errno.EPERM]
    raw = _flaky_listener(errors)

    async def main() -> None:
        async with aio.AsyncSocketListener([raw]) as listener:
            async with await aio.connect("127.0.0.1", listener.port) as client:
                async with await listener.accept(timeout=5) as server:
                    await client.sendall(b"ok")
                    assert await server.recv_exactly(2, timeout=5) == b"ok"
        assert errors == []

    run(main)


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_resource_errors_are_raised_to_the_caller(run: Callable[..., Any], code: int) -> None:
    raw = _flaky_listener([code])

    async def main() -> None:
        async with aio.AsyncSocketListener([raw]) as listener:
            async with await aio.connect("127.0.0.1", listener.port):
                with pytest.raises(OSError) as caught:
                    await listener.accept(timeout=5)
                assert caught.value.errno == code
                # The connection is still queued: the next accept (after the caller's
                # back-off) takes it.
                async with await listener.accept(timeout=5):
                    pass

    run(main)


# --- UNIX ---------------------------------------------------------------------------


def test_unix_listen_connect_and_cleanup(run: Callable[..., Any], tmp_path: Path) -> None:
    path = str(tmp_path / "server.sock")

    async def main() -> None:
        async with await aio.listen_unix(path) as listener:
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            assert str(listener.addresses[0]) == f"unix:{path}"
            with pytest.raises(AttributeError):
                _ = listener.port
            async with await aio.connect_unix(path) as client:
                async with await listener.accept(timeout=5) as server:
                    await client.sendall(b"hi")
                    await client.send_eof()
                    assert await server.recv_exactly(2, timeout=5) == b"hi"
                    assert await server.recv(timeout=5) == b""
                    assert str(client.remote_address) == f"unix:{path}"
        assert not os.path.exists(path)

    run(main)


def test_unix_stale_socket_file_is_replaced(run: Callable[..., Any], tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays behind: nobody listens on it any more

    async def main() -> None:
        async with await aio.listen_unix(path) as listener:
            async with await aio.connect_unix(path) as client:
                async with await listener.accept(timeout=5) as server:
                    await client.sendall(b"x")
                    assert await server.recv(timeout=5) == b"x"
        assert not os.path.exists(path)

    run(main)


def test_unix_live_socket_is_not_replaced(run: Callable[..., Any], tmp_path: Path) -> None:
    path = str(tmp_path / "live.sock")

    async def main() -> None:
        async with await aio.listen_unix(path):
            with pytest.raises(OSError) as caught:
                await aio.listen_unix(path)
            assert caught.value.errno == errno.EADDRINUSE
            assert os.path.exists(path)

    run(main)


def test_unix_regular_file_is_never_deleted(run: Callable[..., Any], tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_bytes(b"keep me")

    async def main() -> None:
        with pytest.raises(OSError, match="not a socket"):
            await aio.listen_unix(str(path))

    run(main)
    assert path.read_bytes() == b"keep me"


def test_unix_mode_is_applied(run: Callable[..., Any], tmp_path: Path) -> None:
    path = str(tmp_path / "private.sock")

    async def main() -> None:
        async with await aio.listen_unix(path, mode=0o600):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    run(main)


def test_unix_abstract_name(run: Callable[..., Any]) -> None:
    name = f"@sockit-aio-test-{os.getpid()}-{uuid.uuid4().hex}"

    async def main() -> None:
        async with await aio.listen_unix(name) as listener:
            assert str(listener.addresses[0]) == name
            async with await aio.connect_unix(name) as client:
                async with await listener.accept(timeout=5) as server:
                    await server.sendall(b"abstract")
                    await server.send_eof()
                    assert await client.recv_until(b"t", max_bytes=100, timeout=5) == b"abs"
                    assert await client.recv(timeout=5) == b"ract"

    run(main)


def test_a_listener_moves_from_one_loop_to_the_next(run: Callable[..., Any]) -> None:
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    raw.listen()
    listener = aio.AsyncSocketListener([raw])

    async def time_out() -> None:
        with pytest.raises(TimeoutError):
            await listener.accept(timeout=0.01)

    async def accept_one() -> None:
        async with await aio.connect("127.0.0.1", listener.port) as client:
            async with await listener.accept(timeout=5) as server:
                await client.sendall(b"next loop")
                assert await server.recv_exactly(9, timeout=5) == b"next loop"
        await listener.aclose()

    try:
        run(time_out)  # leaves the readers registered on a loop that is then closed
        run(accept_one)
    finally:
        raw.close()


def test_readiness_nobody_waits_for_unregisters(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0, "127.0.0.1") as listener:
            with pytest.raises(TimeoutError):
                await listener.accept(timeout=0.01)

            def registered() -> bool:
                return listener._watch._registered

            assert registered()  # kept for the next accept, which often follows
            # A connection arrives while nobody accepts: the level-triggered readiness
            # must not keep waking the loop, so the registration goes.
            async with await aio.connect("127.0.0.1", listener.port):
                for _ in range(100):
                    if not registered():
                        break
                    await asyncio.sleep(0.001)
                assert not registered()
                async with await listener.accept(timeout=5):
                    pass

    run(main)
