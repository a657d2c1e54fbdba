"""The "async" serving mode, and the PROXY protocol behind a real HAProxy in every mode."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest
from haproxy import HAProxyFactory, haproxy_fixture  # noqa: F401 - registers the fixture
from test_serve_load import MIB, echo_concurrently

import sockit
from sockit.serve import serve
from sockit.serve.services import async_echo as service_echo
from sockit.testing.faults import FaultySocketFactory

if TYPE_CHECKING:
    from sockit.aio import AsyncSocketStream

pytestmark = pytest.mark.timeout(120)


async def async_echo(stream: AsyncSocketStream) -> None:
    while data := await stream.recv(262144):
        await stream.sendall(data)
    await stream.send_eof()


def echo_once(port: int, payload: bytes = b"ping", timeout: float = 5.0) -> bytes:
    with sockit.connect("127.0.0.1", port, timeout=timeout) as client:
        client.sendall(payload)
        client.send_eof()
        return client.recv_exactly(len(payload))


@pytest.mark.parametrize("workers", [1, 2], ids=["async", "async-workers=2"])
def test_200_concurrent_clients_each_echo_1_mib(workers: int) -> None:
    with serve(async_echo, 0, "127.0.0.1", mode="async", workers=workers) as server:
        assert echo_concurrently(server.port, clients=200, size=MIB, timeout=60) == []
        deadline = time.monotonic() + 5
        while server.stats.accepted < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
    stats = server.stats
    assert stats.accepted == 200
    assert (stats.refused, stats.errors) == (0, 0)


def test_a_handler_exception_ends_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(stream: AsyncSocketStream) -> None:
        line = await stream.recv_line(timeout=5)
        if line == b"boom":
            raise RuntimeError("handler bug")
        await stream.sendall(line.upper() + b"\n")

    with caplog.at_level(logging.ERROR, logger="sockit.serve"):
        with serve(handler, 0, "127.0.0.1", mode="async") as server:
            with sockit.connect("127.0.0.1", server.port, timeout=5) as bad:
                bad.sendall(b"boom\n")
                assert bad.recv(timeout=5) == b""  # closed by the server, not reset
            with sockit.connect("127.0.0.1", server.port, timeout=5) as good:
                good.sendall(b"fine\n")
                assert good.recv_line(timeout=5) == b"FINE"
    assert server.stats.errors == 1
    assert any("handler failed" in record.message for record in caplog.records)
    assert any("RuntimeError: handler bug" in (record.exc_text or "") for record in caplog.records)


@pytest.mark.parametrize(
    "code",
    [
        errno.ECONNABORTED,
        errno.EPERM,
        errno.EPROTO,
        errno.ENOBUFS,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
    ],
    ids=errno.errorcode.get,
)
def test_accept_errors_leave_the_async_server_serving(code: int) -> None:
    faults = FaultySocketFactory()
    with serve(async_echo, 0, "127.0.0.1", mode="async", socket_factory=faults) as server:
        faults.fail_accepts(code)
        assert echo_once(server.port) == b"ping"
        assert faults.raised == [code]
        assert echo_once(server.port) == b"ping"


def test_max_connections_refuses_cleanly() -> None:
    async def hold(stream: AsyncSocketStream) -> None:
        await stream.sendall(b"in\n")
        await stream.recv(timeout=10)

    with serve(hold, 0, "127.0.0.1", mode="async", max_connections=2) as server:
        held = [sockit.connect("127.0.0.1", server.port, timeout=5) for _ in range(2)]
        try:
            for stream in held:
                assert stream.recv_line(timeout=5) == b"in"
            with sockit.connect("127.0.0.1", server.port, timeout=5) as refused:
                assert refused.recv(timeout=5) == b""  # a clean close, no data
        finally:
            for stream in held:
                stream.close()
        deadline = time.monotonic() + 5
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        with sockit.connect("127.0.0.1", server.port, timeout=5) as again:
            assert again.recv_line(timeout=5) == b"in"  # capacity is back
    assert server.stats.refused == 1


def test_allow_and_deny() -> None:
    with serve(async_echo, 0, "127.0.0.1", mode="async", deny=["127.0.0.0/8"]) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            assert client.recv(timeout=5) == b""
    assert server.stats.denied == 1
    with serve(async_echo, 0, "127.0.0.1", mode="async", allow=["127.0.0.1/32"]) as server:
        assert echo_once(server.port) == b"ping"


def test_idle_timeout_ends_a_silent_connection() -> None:
    with serve(async_echo, 0, "127.0.0.1", mode="async", idle_timeout=0.2) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            started = time.monotonic()
            assert client.recv(timeout=5) == b""
            assert 0.15 < time.monotonic() - started < 3
    assert server.stats.errors == 0


def test_shutdown_refuses_new_connects_and_drains_transfers_in_flight() -> None:
    size = 8 * MIB  # more than the socket buffers hold: the handlers stay mid-send

    async def big_reply(stream: AsyncSocketStream) -> None:
        line = await stream.recv_line(timeout=10)
        await stream.sendall((line + b"\n") * (size // 1024))

    server = serve(big_reply, 0, "127.0.0.1", mode="async", drain_timeout=20)
    server.start()
    go = threading.Event()
    results: list[bytes] = []
    lock = threading.Lock()

    def client() -> None:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as stream:
            stream.sendall(b"x" * 1023 + b"\n")
            go.wait(10)  # read only once the shutdown has begun
            data = stream.recv_exactly(size, timeout=20)
            with lock:
                results.append(data)

    threads = [threading.Thread(target=client) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while server.active_connections < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.active_connections == 5
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    # New connects are refused at once, while the five transfers are still running.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sockit.connect("127.0.0.1", server.port, timeout=5).close()
        except sockit.ConnectError:
            # Refused, or reset when the connect raced the listener's shutdown: either way
            # it was not accepted.
            break
        time.sleep(0.005)
    else:
        pytest.fail("the listener still accepted connections after shutdown()")
    assert server.active_connections == 5
    go.set()
    for thread in threads:
        thread.join(30)
    stopper.join(30)
    assert not stopper.is_alive()
    assert results == [(b"x" * 1023 + b"\n") * (size // 1024)] * 5


def test_listener_handed_in_unix() -> None:
    listener = sockit.listen_unix(f"@sockit-async-{time.monotonic_ns()}")
    name = str(listener.addresses[0])
    with serve(async_echo, mode="async", listener=listener):
        with sockit.connect_unix(name) as client:
            client.sendall(b"unix")
            client.send_eof()
            assert client.recv_exactly(4, timeout=5) == b"unix"


# --- PROXY protocol v2 from a real HAProxy ---------------------------------------------


def _haproxy_config(frontend_port: int, backend_port: int) -> str:
    return f"""
global
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 10s
    timeout server 10s

frontend front
    bind 127.0.0.1:{frontend_port}
    default_backend back

backend back
    server app 127.0.0.1:{backend_port} send-proxy-v2
"""


@pytest.mark.parametrize("mode", ["thread", "async", "fork", "sequential"])
def test_haproxy_send_proxy_v2_gives_the_handler_the_original_client(
    haproxy: HAProxyFactory, mode: str
) -> None:
    def report(stream: sockit.SocketStream) -> None:
        stream.recv_line(timeout=5)
        stream.sendall(f"{stream.remote_address} {stream.local_address}\n".encode())

    async def async_report(stream: AsyncSocketStream) -> None:
        await stream.recv_line(timeout=5)
        await stream.sendall(f"{stream.remote_address} {stream.local_address}\n".encode())

    handler = async_report if mode == "async" else report
    with serve(handler, 0, "127.0.0.1", mode=mode, proxy_protocol=True) as server:  # type: ignore[call-overload]
        frontend_port = haproxy.free_port()
        haproxy(_haproxy_config(frontend_port, server.port))
        with socket.create_connection(("127.0.0.1", frontend_port), timeout=5) as client:
            client.sendall(b"who am I?\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = client.recv(4096)
                assert chunk, "HAProxy closed the connection"
                reply += chunk
            host, port = client.getsockname()[:2]
            client_address = f"{host}:{port}"
    # The handler saw the client HAProxy accepted, not HAProxy's own connection.
    assert reply.decode().split() == [client_address, f"127.0.0.1:{frontend_port}"]


def test_missing_proxy_header_aborts_the_connection() -> None:
    with serve(async_echo, 0, "127.0.0.1", mode="async", proxy_protocol=True) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            with pytest.raises(ConnectionResetError):
                while client.recv(timeout=5):
                    pass
    assert server.stats.errors == 1


# --- the built-in services' faster path (the loop accepts, a bare protocol serves) ----


def test_builtin_echo_fast_path_200_clients_1_mib_with_backpressure() -> None:
    with serve(service_echo, 0, "127.0.0.1", mode="async") as server:
        assert echo_concurrently(server.port, clients=200, size=MIB, timeout=60) == []
        deadline = time.monotonic() + 5
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.active_connections == 0
    assert (server.stats.accepted, server.stats.refused, server.stats.errors) == (200, 0, 0)


def test_builtin_echo_fast_path_half_close_and_limits() -> None:
    with serve(service_echo, 0, "127.0.0.1", mode="async", max_connections=1) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as first:
            first.sendall(b"abc")
            assert first.recv_exactly(3, timeout=5) == b"abc"
            with sockit.connect("127.0.0.1", server.port, timeout=5) as refused:
                assert refused.recv(timeout=5) == b""  # over the limit: closed at once
            first.sendall(b"tail")
            first.send_eof()  # half-close: everything echoed, then EOF
            assert first.recv_exactly(4, timeout=5) == b"tail"
            assert first.recv(timeout=5) == b""
        assert server.stats.refused == 1
    with serve(service_echo, 0, "127.0.0.1", mode="async", deny=["127.0.0.1"]) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as denied:
            assert denied.recv(timeout=5) == b""
    assert server.stats.denied == 1


def test_builtin_echo_fast_path_drain_refuses_new_and_abort_resets() -> None:
    server = serve(service_echo, 0, "127.0.0.1", mode="async", drain_timeout=0.3)
    server.start()
    with sockit.connect("127.0.0.1", server.port, timeout=5) as idle:
        idle.sendall(b"x")
        assert idle.recv_exactly(1, timeout=5) == b"x"
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                sockit.connect("127.0.0.1", server.port, timeout=5).close()
            except sockit.ConnectError:
                # Refused, or reset when the connect raced the listener's shutdown: either
                # way it was not accepted.
                break
            time.sleep(0.005)
        else:
            pytest.fail("still accepting after shutdown()")
        # The idle connection outlives the drain timeout: it is reset, not closed.
        with pytest.raises(ConnectionResetError):
            idle.recv(timeout=5)
        stopper.join(10)
    assert not stopper.is_alive()
    assert server.active_connections == 0
