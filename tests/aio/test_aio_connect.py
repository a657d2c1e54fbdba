"""aio.connect(): Happy Eyeballs (RFC 8305) on real loopback addresses with a fake
resolver, including the black hole (a full accept queue on 127.0.0.2 drops our SYN);
aio.connect_unix(). Every test runs on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

import sockit
from sockit import aio
from sockit.testing.fakes import FakeResolver

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")


@contextlib.contextmanager
def black_holes(*hosts: str, port: int = 0) -> Iterator[int]:
    """Listening sockets on ``hosts`` (one port) whose accept queues are full, so the
    kernel drops further SYNs (tcp_abort_on_overflow=0, the default); yields the port."""
    sockets: list[socket.socket] = []
    try:
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(listener)
            listener.bind((host, port))
            port = listener.getsockname()[1]
            listener.listen(0)
            _fill_accept_queue(listener, sockets)
        yield port
    finally:
        for sock in sockets:
            sock.close()


def _fill_accept_queue(listener: socket.socket, clients: list[socket.socket]) -> None:
    address = listener.getsockname()
    for _ in range(64):
        client = socket.socket(listener.family, socket.SOCK_STREAM)
        clients.append(client)
        client.setblocking(False)
        client.connect_ex(address)
        poller = select.poll()
        poller.register(client, select.POLLOUT)
        if not poller.poll(200):
            return
    pytest.fail("could not fill the accept queue")


async def _exchange(stream: aio.AsyncSocketStream, listener: aio.AsyncSocketListener) -> None:
    async with await listener.accept(timeout=5) as accepted:
        await stream.sendall(b"ping")
        assert await accepted.recv_exactly(4, timeout=5) == b"ping"


def test_black_hole_first_address_connects_within_half_a_second(run: Callable[..., Any]) -> None:
    with black_holes("127.0.0.2") as port:

        async def main() -> float:
            async with await aio.listen(port, "127.0.0.1") as good:
                resolver = FakeResolver({"dual.test": ["127.0.0.2", "127.0.0.1"]})
                started = time.monotonic()
                async with await aio.connect("dual.test", port, resolver=resolver) as stream:
                    elapsed = time.monotonic() - started
                    assert str(stream.remote_address) == f"127.0.0.1:{port}"
                    await _exchange(stream, good)
                return elapsed

        elapsed = run(main)
    assert elapsed < 0.5, f"connect took {elapsed:.3f} s"
    assert elapsed >= 0.2, "the second attempt must wait for the delay"


def test_custom_delay(run: Callable[..., Any]) -> None:
    with black_holes("127.0.0.2") as port:

        async def main() -> float:
            async with await aio.listen(port, "127.0.0.1") as good:
                resolver = FakeResolver({"dual.test": ["127.0.0.2", "127.0.0.1"]})
                started = time.monotonic()
                async with await aio.connect(
                    "dual.test", port, resolver=resolver, happy_eyeballs_delay=0.05
                ) as stream:
                    elapsed = time.monotonic() - started
                    await _exchange(stream, good)
                return elapsed

        elapsed = run(main)
    assert 0.04 <= elapsed < 0.2, f"connect took {elapsed:.3f} s"


def test_refused_first_address_starts_the_next_at_once(run: Callable[..., Any]) -> None:
    async def main() -> float:
        async with await aio.listen(0, "127.0.0.1") as good:
            # Nothing listens on 127.0.0.3 at that port: refused at once.
            resolver = FakeResolver({"dual.test": ["127.0.0.3", "127.0.0.1"]})
            started = time.monotonic()
            async with await aio.connect("dual.test", good.port, resolver=resolver) as stream:
                elapsed = time.monotonic() - started
                assert stream.remote_address.host == "127.0.0.1"
                await _exchange(stream, good)
            return elapsed

    elapsed = run(main)
    assert elapsed < 0.2, f"the next attempt waited for the delay ({elapsed:.3f} s)"


@needs_ipv6
def test_families_are_interleaved(run: Callable[..., Any]) -> None:
    # Resolver order 127.0.0.2, 127.0.0.3, ::1 is tried as 127.0.0.2, ::1, 127.0.0.3
    # (RFC 8305 section 4): ::1 is the second attempt, at 0.25 s, not the third at 0.5 s.
    with black_holes("127.0.0.2", "127.0.0.3") as port:

        async def main() -> float:
            async with await aio.listen(port, "::1") as good:
                resolver = FakeResolver({"mixed.test": ["127.0.0.2", "127.0.0.3", "::1"]})
                started = time.monotonic()
                async with await aio.connect("mixed.test", port, resolver=resolver) as stream:
                    elapsed = time.monotonic() - started
                    assert stream.remote_address.family == socket.AF_INET6
                    await _exchange(stream, good)
                return elapsed

        elapsed = run(main)
    assert 0.2 <= elapsed < 0.45, f"connect took {elapsed:.3f} s"


def test_all_refused_is_connection_refused_naming_every_attempt(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]  # bound, never listening: refused
            resolver = FakeResolver({"example.test": ["127.0.0.1", "127.0.0.4"]})
            with pytest.raises(ConnectionRefusedError) as caught:
                await aio.connect("example.test", port, resolver=resolver)
        error = caught.value
        assert isinstance(error, sockit.ConnectRefusedError)
        assert error.errno == errno.ECONNREFUSED
        assert error.host == "example.test"
        assert error.port == port
        assert [attempt.address for attempt in error.attempts] == [
            f"127.0.0.1:{port}",
            f"127.0.0.4:{port}",
        ]
        assert all(attempt.elapsed < 0.2 for attempt in error.attempts)
        assert f"example.test:{port}" in str(error)
        assert isinstance(error.__cause__, ConnectionRefusedError)

    run(main)


def test_timeout_is_connect_timeout_error(run: Callable[..., Any]) -> None:
    with black_holes("127.0.0.2", "127.0.0.3") as port:

        async def main() -> float:
            resolver = FakeResolver({"holes.test": ["127.0.0.2", "127.0.0.3"]})
            started = time.monotonic()
            with pytest.raises(TimeoutError) as caught:
                await aio.connect("holes.test", port, resolver=resolver, timeout=0.4)
            assert isinstance(caught.value, sockit.ConnectTimeoutError)
            return time.monotonic() - started

        elapsed = run(main)
    assert 0.35 <= elapsed < 1.0


def test_cancelling_connect_closes_every_attempt(run: Callable[..., Any]) -> None:
    with black_holes("127.0.0.2", "127.0.0.3") as port:

        async def main() -> None:
            resolver = FakeResolver({"holes.test": ["127.0.0.2", "127.0.0.3"]})
            task = asyncio.create_task(aio.connect("holes.test", port, resolver=resolver))
            await asyncio.sleep(0.3)  # both attempts are in flight by now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        # The leak check of tests/conftest.py fails this test if an attempt stayed open.
        run(main)


@needs_ipv6
def test_family_restriction_and_dual_stack_listener(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0) as listener:
            resolver = FakeResolver({"both.test": ["::1", "127.0.0.1"]})
            async with await aio.connect(
                "both.test", listener.port, resolver=resolver, family=socket.AF_INET
            ) as stream:
                assert stream.remote_address.family == socket.AF_INET
                await _exchange(stream, listener)
            assert resolver.calls == [("both.test", listener.port, socket.AF_INET)]

    run(main)


def test_local_address_is_bound(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with await aio.listen(0, "127.0.0.1") as listener:
            async with await aio.connect(
                "127.0.0.1", listener.port, local_address="127.0.0.5"
            ) as stream:
                assert stream.local_address.host == "127.0.0.5"
                async with await listener.accept(timeout=5) as accepted:
                    assert accepted.remote_address.host == "127.0.0.5"
            with pytest.raises(ValueError, match="disagree"):
                await aio.connect(
                    "127.0.0.1",
                    listener.port,
                    local_address=("127.0.0.5", 0),
                    family=socket.AF_INET6,
                )
            with pytest.raises(ValueError, match="IP address"):
                await aio.connect("127.0.0.1", listener.port, local_address="localhost")

    run(main)


def test_a_name_through_the_system_resolver(run: Callable[..., Any]) -> None:
    async def main() -> None:
        # "localhost" is answered from /etc/hosts (no network), in a worker of the loop.
        async with await aio.listen(0, "localhost") as listener:
            async with await aio.connect("localhost", listener.port, timeout=10) as stream:
                await _exchange(stream, listener)

    run(main)


def test_bad_input_is_rejected_before_any_lookup(run: Callable[..., Any]) -> None:
    async def main() -> None:
        resolver = FakeResolver({"example.test": ["127.0.0.1"]})
        for port in (65536, -1, "99999"):
            with pytest.raises(sockit.AddressError):
                await aio.connect("example.test", port, resolver=resolver)
        with pytest.raises(sockit.AddressError):
            await aio.connect("010.1.1.1", 80, resolver=resolver)
        with pytest.raises(ValueError, match="happy_eyeballs_delay"):
            await aio.connect("example.test", 80, resolver=resolver, happy_eyeballs_delay=-1)
        assert resolver.calls == []

    run(main)


def test_unknown_name_is_a_resolution_error(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with pytest.raises(sockit.ResolutionError) as caught:
            await aio.connect("nope.test", 80, resolver=FakeResolver())
        assert "nope.test" in str(caught.value)
        with pytest.raises(sockit.ResolutionError):
            # .invalid never resolves (RFC 6761); the system resolver says so locally.
            await aio.connect("name.invalid", 80, timeout=10)

    run(main)


# --- UNIX ---------------------------------------------------------------------------


def test_connect_unix_missing_and_refused(run: Callable[..., Any], tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(FileNotFoundError):
            await aio.connect_unix(str(tmp_path / "missing.sock"))
        stale = str(tmp_path / "stale.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
            bound.bind(stale)  # bound but not listening: refused
            with pytest.raises(ConnectionRefusedError):
                await aio.connect_unix(stale)
        with pytest.raises(sockit.AddressError):
            await aio.connect_unix("")

    run(main)


def test_connect_unix_waits_for_a_full_accept_queue(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    path = str(tmp_path / "full.sock")

    async def main() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(0)
            waiting: list[socket.socket] = []
            try:
                for _ in range(8):  # fill the queue: connects fail with EAGAIN
                    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    waiting.append(client)
                    client.setblocking(False)
                    if client.connect_ex(path) == errno.EAGAIN:
                        break
                else:
                    pytest.fail("could not fill the UNIX accept queue")
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await aio.connect_unix(path, timeout=0.2)
                assert time.monotonic() - started >= 0.15
                # Once the listener accepts, a waiting connect gets through.
                connecting = asyncio.create_task(aio.connect_unix(path, timeout=5))
                await asyncio.sleep(0.02)
                accepted, _ = listener.accept()
                accepted.close()
                async with await connecting as stream:
                    assert stream.remote_address.path == path
            finally:
                for client in waiting:
                    client.close()

    run(main)


def test_connect_unix_abstract_name(run: Callable[..., Any]) -> None:
    async def main() -> None:
        name = f"@sockit-aio-test-{time.monotonic_ns()}"
        async with await aio.listen_unix(name) as listener:
            async with await aio.connect_unix(name, timeout=5) as stream:
                async with await listener.accept(timeout=5) as accepted:
                    await stream.sendall(b"abstract")
                    assert await accepted.recv_exactly(8, timeout=5) == b"abstract"
                assert str(stream.remote_address) == name

    run(main)
